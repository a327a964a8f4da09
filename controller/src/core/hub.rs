//! Hub mode: the ClusterSet's exchange records on one Kubernetes API server, the hub, instead
//! of in every member (`docs/exchange.md`, "Hub mode").
//!
//! ```text
//!  member cluster-a                      hub API server
//!  mcsd-system (its own records) ──copy──▶ mcsd-member-cluster-a (written by cluster-a only)
//!                                        mcsd-member-cluster-b ─┐ one cluster-wide watch per kind,
//!  View ◀── records of the others ───────mcsd-member-cluster-c ─┘ selected by the service
//!                                                                namespaces cluster-a has
//! ```
//!
//! A record's cluster is the hub namespace it lives in, never what it says: only member
//! `<id>`'s credential may write `mcsd-member-<id>`. Everything here is names and rules; the
//! daemon's `hub` module does the I/O.

use std::collections::{BTreeMap, BTreeSet};

use mcsd_crds::ClusterId;
use serde_json::{Value, json};

use super::exchange::{FORMAT_VERSION, Kind, LABEL_EXCHANGE, LABEL_SERVICE_NAMESPACE};

/// The prefix of a member's namespace on the hub: `mcsd-member-<cluster id>`.
pub const MEMBER_NAMESPACE_PREFIX: &str = "mcsd-member-";
/// The Secret, in the member's exchange namespace, that holds its hub credential.
pub const SECRET: &str = "hub";
/// The Secret's key holding a kubeconfig for the hub.
pub const KEY_KUBECONFIG: &str = "kubeconfig";
/// Label on a member's hub namespace: the member's cluster id.
pub const LABEL_MEMBER: &str = "hub.mcsd.io/member";
/// Annotation on a member's hub namespace: the only ranges its endpoint addresses may be in
/// (`10.2.0.0/16,fd00:2::/64`), set by whoever enrolled it; readers hold its records to them.
pub const ANNOTATION_RANGES: &str = "hub.mcsd.io/ranges";
/// The ServiceAccount of a member in its hub namespace.
pub const MEMBER_SERVICE_ACCOUNT: &str = "mcsd-member";
/// The ClusterRole (`manifests/hub.yaml`) a member is bound to in its own hub namespace.
pub const WRITE_ROLE: &str = "mcsd-hub-member-write";
/// The ClusterRole (`manifests/hub.yaml`) a member is bound to across the hub.
pub const READ_ROLE: &str = "mcsd-hub-member-read";
/// What the hub needs before members are enrolled (`mcsd hub init`).
pub const MANIFEST: &str = include_str!("../../../manifests/hub.yaml");

/// What enrolling member `cluster` writes on the hub: its namespace (labelled with its id,
/// annotated with the `ranges` its endpoint addresses may be in, if any), its ServiceAccount,
/// the right to write its namespace and to read the hub's records, as JSON objects in the order
/// they are applied.
pub fn member_objects(cluster: &ClusterId, ranges: &[ipnet::IpNet]) -> Vec<Value> {
    let namespace = member_namespace(cluster);
    let labels = json!({"app.kubernetes.io/name": "mcsd", LABEL_MEMBER: cluster.as_str()});
    let mut ns = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": namespace, "labels": labels},
    });
    if !ranges.is_empty() {
        let text: Vec<String> = ranges.iter().map(ToString::to_string).collect();
        ns["metadata"]["annotations"] = json!({ANNOTATION_RANGES: text.join(",")});
    }
    let subject = json!([{"kind": "ServiceAccount", "name": MEMBER_SERVICE_ACCOUNT, "namespace": namespace}]);
    vec![
        ns,
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": MEMBER_SERVICE_ACCOUNT, "namespace": namespace, "labels": labels},
            "automountServiceAccountToken": false,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": MEMBER_SERVICE_ACCOUNT, "namespace": namespace, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": WRITE_ROLE},
            "subjects": subject,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("{READ_ROLE}-{cluster}"), "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": READ_ROLE},
            "subjects": subject,
        }),
        // So that one member cannot fill the hub's etcd for the others: as many records as a
        // reader takes from one member (guard::Limits), and twice as many slices.
        json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": MEMBER_SERVICE_ACCOUNT, "namespace": namespace, "labels": labels},
            "spec": {"hard": {
                // The records, and the kube-root-ca.crt ConfigMap every namespace gets.
                "count/configmaps": (QUOTA_RECORDS + 1).to_string(),
                "count/endpointslices.discovery.k8s.io": (2 * QUOTA_RECORDS).to_string(),
            }},
        }),
    ]
}

/// The export records one member may hold on the hub (its ResourceQuota): what a reader takes
/// from one peer.
pub const QUOTA_RECORDS: usize = super::guard::RECORDS;

/// Member `cluster`'s namespace on the hub.
pub fn member_namespace(cluster: &ClusterId) -> String {
    format!("{MEMBER_NAMESPACE_PREFIX}{cluster}")
}

/// The member whose hub namespace `namespace` is; `None` for any other namespace.
pub fn member_of(namespace: &str) -> Option<ClusterId> {
    ClusterId::new(namespace.strip_prefix(MEMBER_NAMESPACE_PREFIX)?).ok()
}

/// The longest label selector a member sends the hub. Past it (a member with a few hundred
/// namespaces) the URL of every list and watch would grow past what proxies in front of API
/// servers accept (8 KiB is common), so the member selects every record and keeps its own.
pub const MAX_SELECTOR: usize = 4096;

/// What a member asks the hub for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Nothing: no namespace of the member may import.
    Nothing,
    /// Records of its namespaces, selected by the hub (this label selector).
    ByHub(String),
    /// Every record (this label selector), the member keeping those of these namespaces.
    ByMember(String, BTreeSet<String>),
}

/// What a member whose namespaces that may import are `interest` asks the hub for: records of
/// the format this build reads, of those namespaces, selected by the hub unless the selector
/// would be longer than [`MAX_SELECTOR`].
pub fn selection(interest: &BTreeSet<String>) -> Selection {
    if interest.is_empty() {
        return Selection::Nothing;
    }
    let namespaces: Vec<&str> = interest.iter().map(String::as_str).collect();
    let selector = format!(
        "{LABEL_EXCHANGE}={FORMAT_VERSION},{LABEL_SERVICE_NAMESPACE} in ({})",
        namespaces.join(",")
    );
    if selector.len() <= MAX_SELECTOR {
        Selection::ByHub(selector)
    } else {
        Selection::ByMember(format!("{LABEL_EXCHANGE}={FORMAT_VERSION}"), interest.clone())
    }
}

/// The ranges a member's hub namespace declares (its [`ANNOTATION_RANGES`]); what does not
/// parse is left out and named in the error.
pub fn declared_ranges(annotations: &BTreeMap<String, String>) -> (Vec<ipnet::IpNet>, Option<String>) {
    let Some(text) = annotations.get(ANNOTATION_RANGES) else {
        return (Vec::new(), None);
    };
    let mut ranges = Vec::new();
    let mut bad = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<ipnet::IpNet>() {
            Ok(r) => ranges.push(r),
            Err(_) => bad.push(part.to_string()),
        }
    }
    let error = (!bad.is_empty()).then(|| {
        format!(
            "annotation {ANNOTATION_RANGES} names what is not a CIDR range: {}",
            bad.join(", ")
        )
    });
    (ranges, error)
}

/// The hub's copy of one of the member's own exchange objects (a ConfigMap or an EndpointSlice,
/// as JSON): the same name, labels, annotations and content, in `namespace`. Everything the API
/// server sets (uid, resourceVersion, managedFields, timestamps) is left out, so the copy is a
/// server-side apply body, and the copy of what the hub holds equals it when nothing changed.
/// Its type is `kind`'s: a real API server's list leaves `apiVersion` and `kind` out of every
/// item, and an apply body without them is refused.
pub fn hub_copy(kind: Kind, object: &Value, namespace: &str) -> Value {
    let meta = &object["metadata"];
    let (api_version, type_name) = match kind {
        Kind::Record => ("v1", "ConfigMap"),
        Kind::Slice => ("discovery.k8s.io/v1", "EndpointSlice"),
    };
    let mut copy = json!({
        "apiVersion": api_version,
        "kind": type_name,
        "metadata": {
            "name": meta["name"],
            "namespace": namespace,
        },
    });
    for field in ["labels", "annotations"] {
        if let Some(map) = meta[field].as_object().filter(|m| !m.is_empty()) {
            copy["metadata"][field] = Value::Object(map.clone());
        }
    }
    let Some(fields) = object.as_object() else {
        return copy;
    };
    for (field, value) in fields {
        let content = !matches!(field.as_str(), "apiVersion" | "kind" | "metadata" | "status");
        if content && !value.is_null() {
            copy[field] = value.clone();
        }
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClusterId {
        ClusterId::new(s).unwrap()
    }

    #[test]
    fn a_records_cluster_is_the_hub_namespace_it_lives_in() {
        let ns = member_namespace(&id("cluster-b"));
        assert_eq!(ns, "mcsd-member-cluster-b");
        assert_eq!(member_of(&ns), Some(id("cluster-b")));
        assert_eq!(member_of("kube-system"), None);
        assert_eq!(member_of("mcsd-member-"), None, "no cluster id");
        assert_eq!(member_of("mcsd-member-Not_A_Label"), None);
    }

    #[test]
    fn a_member_asks_the_hub_only_for_its_own_service_namespaces() {
        assert_eq!(selection(&BTreeSet::new()), Selection::Nothing);
        let interest = BTreeSet::from(["demo".to_string(), "apps".to_string()]);
        assert_eq!(
            selection(&interest),
            Selection::ByHub("mcsd.io/exchange=v1,mcsd.io/service-namespace in (apps,demo)".into())
        );
        // Hundreds of namespaces: every record is asked for, and the member keeps its own.
        let many: BTreeSet<String> = (0..500).map(|i| format!("team-{i:04}")).collect();
        assert_eq!(
            selection(&many),
            Selection::ByMember("mcsd.io/exchange=v1".into(), many.clone())
        );
    }

    #[test]
    fn declared_ranges_name_what_does_not_parse() {
        let annotations = BTreeMap::from([(
            ANNOTATION_RANGES.to_string(),
            "10.2.0.0/16, fd00:2::/64,bogus".to_string(),
        )]);
        let (ranges, error) = declared_ranges(&annotations);
        assert_eq!(ranges.len(), 2);
        assert!(error.unwrap().contains("bogus"));
        assert_eq!(declared_ranges(&BTreeMap::new()), (Vec::new(), None));
    }

    #[test]
    fn the_hub_copy_keeps_content_and_drops_what_the_server_sets() {
        let local = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": "demo.web-x1", "namespace": "mcsd-system", "uid": "u", "resourceVersion": "7",
                "labels": {"mcsd.io/exchange": "v1"}, "annotations": {"mcsd.io/written-at": "t"},
                "managedFields": [{"manager": "mcsd"}], "creationTimestamp": "2026-12-07T00:00:00Z",
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.0.5"]}],
            "ports": null,
        });
        let copy = hub_copy(Kind::Slice, &local, "mcsd-member-cluster-a");
        assert_eq!(
            copy,
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "name": "demo.web-x1", "namespace": "mcsd-member-cluster-a",
                    "labels": {"mcsd.io/exchange": "v1"}, "annotations": {"mcsd.io/written-at": "t"},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.1.0.5"]}],
            })
        );
        // What the hub returns (its own metadata added) is the same copy; a changed address is not.
        let mut held = copy.clone();
        held["metadata"]["uid"] = json!("h");
        held["metadata"]["resourceVersion"] = json!("99");
        assert_eq!(hub_copy(Kind::Slice, &held, "mcsd-member-cluster-a"), copy);
        // As a list's item (no type): the same copy, its type named.
        let mut listed = local.clone();
        listed.as_object_mut().unwrap().remove("apiVersion");
        listed.as_object_mut().unwrap().remove("kind");
        assert_eq!(hub_copy(Kind::Slice, &listed, "mcsd-member-cluster-a"), copy);
        held["endpoints"][0]["addresses"][0] = json!("10.1.0.6");
        assert_ne!(hub_copy(Kind::Slice, &held, "mcsd-member-cluster-a"), copy);
    }
}
