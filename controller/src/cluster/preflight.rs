//! Start-up checks: can this process do its job with the credentials it was given?
//!
//! Each check is the cheapest request the real work will make (a `list` with `limit=1`), and each
//! failure becomes one line that names what is missing and how to fix it: a CRD that is not
//! installed, a right the ServiceAccount lacks, credentials the API server rejects, or an API
//! server that cannot be reached. Without this the watches would retry forever and the operator
//! would see only a stream of warnings.

use kube::{
    Api, Client, Resource,
    api::{ListParams, PartialObjectMeta},
};
use serde::de::DeserializeOwned;

/// One access a job needs.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    /// The resource, as `kubectl` names it (`serviceimports.multicluster.x-k8s.io`).
    pub resource: &'static str,
    /// Whether the resource is one of mcsd's CRDs (a 404 then means "not installed").
    pub crd: bool,
}

/// Why a check failed. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server cannot be reached at all.
    #[error(
        "cannot reach the API server of {cluster} ({url}): {reason}; check the kubeconfig's server address and that the cluster is up"
    )]
    Unreachable {
        /// Which cluster ("this cluster", "peer cluster-b").
        cluster: String,
        /// The server's URL.
        url: String,
        /// The transport error, in one line.
        reason: String,
    },
    /// The credentials were rejected (expired or revoked token, wrong client certificate).
    #[error(
        "the API server of {cluster} rejected the credentials (401 Unauthorized): the token or certificate in its kubeconfig has expired or been revoked; {renew}"
    )]
    Unauthorized {
        /// Which cluster.
        cluster: String,
        /// How to give it fresh credentials.
        renew: String,
    },
    /// A right is missing.
    #[error(
        "the credentials for {cluster} may not list {resource}{scope} (403 Forbidden): apply manifests/rbac.yaml{hint}"
    )]
    Forbidden {
        /// Which cluster.
        cluster: String,
        /// The resource.
        resource: &'static str,
        /// " in namespace X" or " in all namespaces".
        scope: String,
        /// Which binding the credentials need.
        hint: &'static str,
    },
    /// CRDs are not installed.
    #[error("{cluster} lacks the CRDs {resources}: run `kubectl apply -f crds/` there")]
    CrdMissing {
        /// Which cluster.
        cluster: String,
        /// The missing resources, comma-separated.
        resources: String,
    },
    /// Any other failure.
    #[error("listing {resource} in {cluster} failed: {reason}")]
    Other {
        /// Which cluster.
        cluster: String,
        /// The resource.
        resource: &'static str,
        /// Why, in one line.
        reason: String,
    },
}

/// Lists `api` (made for `namespace`, or for all) once (`limit=1`, metadata only) and turns a failure into an [`Error`]. `url` is the
/// API server's address, for the message when it cannot be reached.
pub async fn check<K>(
    api: Api<K>,
    url: &str,
    cluster: &str,
    namespace: Option<&str>,
    access: Access,
    hints: Hints<'_>,
) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let result: kube::Result<kube::core::ObjectList<PartialObjectMeta<K>>> =
        api.list_metadata(&ListParams::default().limit(1)).await;
    let Err(error) = result else { return Ok(()) };
    let cluster = cluster.to_string();
    Err(match error {
        kube::Error::Api(status) if status.code == 401 => Error::Unauthorized {
            cluster,
            renew: hints.renew.to_string(),
        },
        kube::Error::Api(status) if status.code == 403 => Error::Forbidden {
            cluster,
            resource: access.resource,
            scope: match namespace {
                Some(ns) => format!(" in namespace {ns}"),
                None => " in all namespaces".to_string(),
            },
            hint: hints.forbidden,
        },
        kube::Error::Api(status) if status.code == 404 && access.crd => Error::CrdMissing {
            cluster,
            resources: access.resource.to_string(),
        },
        kube::Error::Api(status) => Error::Other {
            cluster,
            resource: access.resource,
            reason: format!("{} ({})", status.message, status.code),
        },
        other => Error::Unreachable {
            cluster,
            url: url.to_string(),
            reason: one_line(&other),
        },
    })
}

/// An error and its sources on one line.
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let (text, whole) = text_of(e);
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        next = if whole { None } else { e.source() };
    }
    out.replace('\n', " ")
}

/// What one error says: an API server's refusal as its message with its code and reason
/// (`… cannot create resource "serviceaccounts/token" … (403 Forbidden)`), not kube's debug form
/// of the whole Status.
/// Also says whether that is the whole story (an API server's refusal has no cause worth adding).
fn text_of(error: &(dyn std::error::Error + 'static)) -> (String, bool) {
    match error.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(status)) if !status.message.is_empty() => (
            format!("{} ({} {})", status.message, status.code, status.reason),
            true,
        ),
        _ => (error.to_string(), false),
    }
}

/// How to fix what a check may find.
#[derive(Clone, Copy, Debug)]
pub struct Hints<'a> {
    /// Which binding the credentials need (for a 403).
    pub forbidden: &'static str,
    /// How to give the cluster fresh credentials (for a 401).
    pub renew: &'a str,
}

/// Checks against one cluster, with one set of hints for every failure.
struct Checker<'a> {
    client: &'a Client,
    url: &'a str,
    cluster: &'a str,
    hints: Hints<'a>,
}

impl Checker<'_> {
    /// Lists `K` in all namespaces.
    async fn all<K>(&self, access: Access) -> Result<(), Error>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api = Api::<K>::all(self.client.clone());
        check(api, self.url, self.cluster, None, access, self.hints).await
    }

    /// Lists `K` in `namespace`.
    async fn within<K>(&self, namespace: &str, access: Access) -> Result<(), Error>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api = Api::<K>::namespaced(self.client.clone(), namespace);
        check(api, self.url, self.cluster, Some(namespace), access, self.hints).await
    }
}

/// What `mcsd run` needs of its own cluster: every watch it opens.
pub async fn daemon(
    conn: &crate::cluster::kubeconfig::Connection,
    exchange_namespace: &str,
) -> Result<(), Error> {
    use k8s_openapi::api::{
        core::v1::{ConfigMap, Namespace, Secret, Service},
        discovery::v1::EndpointSlice,
    };
    use mcsd_crds::{
        about::v1beta1::ClusterProperty,
        mcs::v1beta1::{ServiceExport, ServiceImport},
    };
    let k = Checker {
        client: &conn.client,
        url: &conn.url,
        cluster: "this cluster",
        hints: Hints {
            forbidden: " (ClusterRole and Role `mcsd`, bound to mcsd's ServiceAccount)",
            renew: RENEW_OWN,
        },
    };
    gather([
        k.all::<ClusterProperty>(crd("clusterproperties.about.k8s.io"))
            .await,
        k.all::<ServiceExport>(crd("serviceexports.multicluster.x-k8s.io"))
            .await,
        k.all::<ServiceImport>(crd("serviceimports.multicluster.x-k8s.io"))
            .await,
    ])?;
    k.all::<Service>(builtin("services")).await?;
    k.all::<EndpointSlice>(builtin("endpointslices.discovery.k8s.io"))
        .await?;
    k.all::<Namespace>(builtin("namespaces")).await?;
    k.within::<ConfigMap>(exchange_namespace, builtin("configmaps"))
        .await?;
    k.within::<Secret>(exchange_namespace, builtin("secrets")).await
}

/// What `mcsd dns --kubeconfig` needs: the three watches that feed the zone.
pub async fn dns(conn: &crate::cluster::kubeconfig::Connection) -> Result<(), Error> {
    use k8s_openapi::api::{core::v1::Namespace, discovery::v1::EndpointSlice};
    use mcsd_crds::mcs::v1beta1::ServiceImport;
    let k = Checker {
        client: &conn.client,
        url: &conn.url,
        cluster: "this cluster",
        hints: Hints {
            forbidden: " (the `mcsd` ClusterRole, or any role that may list and watch these three kinds)",
            renew: RENEW_OWN,
        },
    };
    k.all::<ServiceImport>(crd("serviceimports.multicluster.x-k8s.io"))
        .await?;
    k.all::<EndpointSlice>(builtin("endpointslices.discovery.k8s.io"))
        .await?;
    k.all::<Namespace>(builtin("namespaces")).await
}

/// How to renew this cluster's own credentials.
const RENEW_OWN: &str = "issue a new one";

/// What mcsd needs of a peer: its exchange records. Used while running, not at start-up: a peer
/// that is down must not stop this cluster's mcsd. `renew` says how to give it fresh credentials.
pub async fn peer(
    client: &Client,
    url: &str,
    peer: &str,
    renew: &str,
    exchange_namespace: &str,
) -> Result<(), Error> {
    use k8s_openapi::api::{core::v1::ConfigMap, discovery::v1::EndpointSlice};
    let cluster = format!("peer {peer}");
    let k = Checker {
        client,
        url,
        cluster: &cluster,
        hints: Hints {
            forbidden: " in the peer (Role `mcsd-peer`, bound to the ServiceAccount whose token the peer kubeconfig holds)",
            renew,
        },
    };
    k.within::<ConfigMap>(exchange_namespace, builtin("configmaps"))
        .await?;
    k.within::<EndpointSlice>(exchange_namespace, builtin("endpointslices.discovery.k8s.io"))
        .await
}

/// The first failure, except that every missing CRD is named in one error (one fix for all).
fn gather<const N: usize>(results: [Result<(), Error>; N]) -> Result<(), Error> {
    let mut missing: Vec<String> = Vec::new();
    let mut cluster_of_missing = String::new();
    for result in results {
        match result {
            Ok(()) => {}
            Err(Error::CrdMissing { cluster, resources }) => {
                missing.push(resources);
                cluster_of_missing = cluster;
            }
            Err(other) => return Err(other),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::CrdMissing {
            cluster: cluster_of_missing,
            resources: missing.join(", "),
        })
    }
}

const fn crd(resource: &'static str) -> Access {
    Access { resource, crd: true }
}

const fn builtin(resource: &'static str) -> Access {
    Access { resource, crd: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_servers_refusal_reads_as_its_message_code_and_reason() {
        let status = kube::core::Status {
            code: 403,
            reason: "Forbidden".into(),
            message: "serviceaccounts \"a\" is forbidden: User \"u\" cannot create resource \"serviceaccounts/token\"".into(),
            ..Default::default()
        };
        let error = kube::Error::Api(Box::new(status));
        assert_eq!(
            one_line(&error),
            "serviceaccounts \"a\" is forbidden: User \"u\" cannot create resource \"serviceaccounts/token\" (403 Forbidden)"
        );
    }
}
