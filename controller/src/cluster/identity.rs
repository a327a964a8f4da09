//! Who this cluster is: the About API (KEP-2149) `ClusterProperty` objects
//! `cluster.clusterset.k8s.io` (the cluster id) and `clusterset.k8s.io` (the ClusterSet).
//!
//! [`decide`] is the pure rule; [`establish`] reads the properties, creates missing ones from the
//! flags, and turns every way this can go wrong into one line that says what to do.

use kube::{Api, Client, api::PostParams};
use mcsd_crds::{
    ClusterId, ClusterIdError,
    about::v1beta1::{ClusterProperty, ClusterPropertySpec},
    names::{PROPERTY_CLUSTER_ID, PROPERTY_CLUSTERSET},
};

/// This cluster's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The cluster id.
    pub cluster: ClusterId,
    /// The name of the ClusterSet the cluster is a member of.
    pub clusterset: String,
}

/// Why the identity could not be established. Each message is one line naming the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ClusterProperty CRD is not installed.
    #[error(
        "the ClusterProperty CRD (clusterproperties.about.k8s.io) is not installed in this cluster: run `kubectl apply -f crds/`"
    )]
    CrdMissing,
    /// A property is missing and no flag says what it should be.
    #[error(
        "this cluster has no ClusterProperty {property}; create it, or start mcsd with {flag} to have it created"
    )]
    Missing {
        /// The missing property.
        property: &'static str,
        /// The flag that creates it.
        flag: &'static str,
    },
    /// The property and the flag disagree.
    #[error(
        "ClusterProperty {property} says {found:?} but {flag} says {wanted:?}; a cluster's identity must not change while it is a member: fix the flag"
    )]
    Mismatch {
        /// The property.
        property: &'static str,
        /// Its value.
        found: String,
        /// The flag.
        flag: &'static str,
        /// The flag's value.
        wanted: String,
    },
    /// The cluster-id property does not hold a valid cluster id.
    #[error("ClusterProperty {PROPERTY_CLUSTER_ID} holds an invalid cluster id: {0}")]
    InvalidId(ClusterIdError),
    /// The API server refused or failed a request.
    #[error("reading ClusterProperty {property}: {source}")]
    Api {
        /// The property being read or created.
        property: &'static str,
        /// The client error.
        source: kube::Error,
    },
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to do about one property, given its current value and the flag.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The property is right: use this value.
    Use(String),
    /// The property is missing: create it with this value.
    Create(String),
}

/// The pure rule for one property.
pub fn decide(
    property: &'static str,
    flag: &'static str,
    existing: Option<&str>,
    wanted: Option<&str>,
) -> Result<Decision> {
    match (existing, wanted) {
        (Some(found), Some(wanted)) if found != wanted => Err(Error::Mismatch {
            property,
            found: found.to_string(),
            flag,
            wanted: wanted.to_string(),
        }),
        (Some(found), _) => Ok(Decision::Use(found.to_string())),
        (None, Some(wanted)) => Ok(Decision::Create(wanted.to_string())),
        (None, None) => Err(Error::Missing { property, flag }),
    }
}

/// Reads (and where the flags allow, creates) this cluster's identity.
pub async fn establish(
    client: &Client,
    cluster_id: Option<&ClusterId>,
    clusterset: Option<&str>,
) -> Result<Identity> {
    let api: Api<ClusterProperty> = Api::all(client.clone());
    // A missing CRD answers 404 to a list; a missing property only to a get.
    if let Err(error) = api
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
    {
        return Err(match error {
            kube::Error::Api(status) if status.is_not_found() => Error::CrdMissing,
            source => Error::Api {
                property: PROPERTY_CLUSTER_ID,
                source,
            },
        });
    }
    let cluster = property(
        &api,
        PROPERTY_CLUSTER_ID,
        "--cluster-id",
        cluster_id.map(ClusterId::as_str),
    )
    .await?;
    let cluster = ClusterId::new(cluster).map_err(Error::InvalidId)?;
    let clusterset = property(&api, PROPERTY_CLUSTERSET, "--clusterset", clusterset).await?;
    Ok(Identity { cluster, clusterset })
}

async fn property(
    api: &Api<ClusterProperty>,
    name: &'static str,
    flag: &'static str,
    wanted: Option<&str>,
) -> Result<String> {
    let existing = api.get_opt(name).await.map_err(|source| classify(name, source))?;
    match decide(
        name,
        flag,
        existing.as_ref().map(|p| p.spec.value.as_str()),
        wanted,
    )? {
        Decision::Use(value) => Ok(value),
        Decision::Create(value) => {
            let object = ClusterProperty::new(name, ClusterPropertySpec { value: value.clone() });
            match api.create(&PostParams::default(), &object).await {
                Ok(_) => Ok(value),
                // Another replica created it first: use what is there, if it agrees.
                Err(kube::Error::Api(status)) if status.is_already_exists() => {
                    let now = api.get(name).await.map_err(|source| classify(name, source))?;
                    match decide(name, flag, Some(&now.spec.value), wanted)? {
                        Decision::Use(value) | Decision::Create(value) => Ok(value),
                    }
                }
                Err(source) => Err(classify(name, source)),
            }
        }
    }
}

/// A 404 for the resource type (rather than for the object) means the CRD is missing.
fn classify(property: &'static str, source: kube::Error) -> Error {
    if let kube::Error::Api(status) = &source
        && status.is_not_found()
        && !status.message.contains(property)
    {
        return Error::CrdMissing;
    }
    Error::Api { property, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_property_is_used() {
        assert_eq!(
            decide(PROPERTY_CLUSTER_ID, "--cluster-id", Some("cluster-a"), None).unwrap(),
            Decision::Use("cluster-a".into())
        );
        assert_eq!(
            decide(
                PROPERTY_CLUSTER_ID,
                "--cluster-id",
                Some("cluster-a"),
                Some("cluster-a")
            )
            .unwrap(),
            Decision::Use("cluster-a".into())
        );
    }

    #[test]
    fn a_missing_property_is_created_from_the_flag() {
        assert_eq!(
            decide(PROPERTY_CLUSTERSET, "--clusterset", None, Some("prod")).unwrap(),
            Decision::Create("prod".into())
        );
    }

    #[test]
    fn a_missing_property_without_a_flag_names_both_fixes() {
        let msg = decide(PROPERTY_CLUSTER_ID, "--cluster-id", None, None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "this cluster has no ClusterProperty cluster.clusterset.k8s.io; create it, or start mcsd with --cluster-id to have it created"
        );
    }

    #[test]
    fn a_mismatch_is_refused_with_both_values() {
        let msg = decide(
            PROPERTY_CLUSTER_ID,
            "--cluster-id",
            Some("cluster-a"),
            Some("cluster-b"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("\"cluster-a\"") && msg.contains("\"cluster-b\"") && msg.contains("--cluster-id"),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 1);
    }
}
