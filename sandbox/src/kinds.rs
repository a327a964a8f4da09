//! The resource table: the built-in kinds, and the kinds CRDs add while the server runs.
//! Discovery, routing, RBAC names and the list semantics of server-side apply all read it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use crate::store::GroupResource;

/// One servable resource.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// API group (`""` for core).
    pub group: String,
    /// Served versions, preferred (storage) first.
    pub versions: Vec<String>,
    /// The version objects are stored at.
    pub storage_version: String,
    /// Plural name.
    pub resource: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// `kubectl` short names.
    pub short_names: Vec<String>,
    /// Categories (`kubectl get all`, `multicluster`).
    pub categories: Vec<String>,
    /// Whether a `status` subresource exists (status is then ignored on main-resource writes).
    pub status_subresource: bool,
    /// Extra subresources besides `status` (e.g. `token` of serviceaccounts).
    pub other_subresources: Vec<&'static str>,
    /// Built in (strategic merge patch supported) or defined by a CRD.
    pub builtin: bool,
    /// CRD only: `openAPIV3Schema` per served version.
    pub schemas: HashMap<String, Value>,
    /// CRD only: `additionalPrinterColumns` per served version.
    pub printer_columns: HashMap<String, Vec<Value>>,
}

impl ResourceInfo {
    /// The resource's group and plural.
    pub fn gr(&self) -> GroupResource {
        GroupResource::new(&self.group, &self.resource)
    }

    /// `group/version` (or `v1` for core).
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// Whether this version is served.
    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    /// Whether this is a review: a resource that is only ever created, answered and never stored
    /// (SelfSubjectAccessReview, SubjectAccessReview, SelfSubjectReview).
    pub fn is_review(&self) -> bool {
        self.builtin && self.kind.ends_with("Review")
    }

    /// The verbs discovery lists.
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.is_review() {
            return vec!["create"];
        }
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    resource: &str,
    singular: &str,
    kind: &str,
    namespaced: bool,
    short_names: &[&str],
    status: bool,
    categories: &[&str],
) -> ResourceInfo {
    ResourceInfo {
        group: group.to_string(),
        versions: vec!["v1".to_string()],
        storage_version: "v1".to_string(),
        resource: resource.to_string(),
        singular: singular.to_string(),
        kind: kind.to_string(),
        namespaced,
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
        categories: categories.iter().map(|s| s.to_string()).collect(),
        status_subresource: status,
        other_subresources: Vec::new(),
        builtin: true,
        schemas: HashMap::new(),
        printer_columns: HashMap::new(),
    }
}

/// The built-in kinds the sandbox serves.
pub fn builtins() -> Vec<ResourceInfo> {
    let mut sa = builtin(
        "",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        false,
        &[],
    );
    sa.other_subresources.push("token");
    let scalable = |resource: &str, singular: &str, kind: &str, short: &[&str]| {
        let mut info = builtin("apps", resource, singular, kind, true, short, true, &["all"]);
        info.other_subresources.push("scale");
        info
    };
    vec![
        scalable("deployments", "deployment", "Deployment", &["deploy"]),
        scalable("replicasets", "replicaset", "ReplicaSet", &["rs"]),
        scalable("statefulsets", "statefulset", "StatefulSet", &["sts"]),
        builtin("batch", "jobs", "job", "Job", true, &[], true, &["all"]),
        builtin("", "events", "event", "Event", true, &["ev"], false, &[]),
        builtin(
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "selfsubjectaccessreview",
            "SelfSubjectAccessReview",
            false,
            &[],
            false,
            &[],
        ),
        builtin(
            "authorization.k8s.io",
            "subjectaccessreviews",
            "subjectaccessreview",
            "SubjectAccessReview",
            false,
            &[],
            false,
            &[],
        ),
        builtin(
            "authentication.k8s.io",
            "selfsubjectreviews",
            "selfsubjectreview",
            "SelfSubjectReview",
            false,
            &[],
            false,
            &[],
        ),
        builtin(
            "",
            "namespaces",
            "namespace",
            "Namespace",
            false,
            &["ns"],
            true,
            &[],
        ),
        builtin(
            "",
            "services",
            "service",
            "Service",
            true,
            &["svc"],
            true,
            &["all"],
        ),
        builtin("", "pods", "pod", "Pod", true, &["po"], true, &["all"]),
        builtin("", "secrets", "secret", "Secret", true, &[], false, &[]),
        builtin(
            "",
            "configmaps",
            "configmap",
            "ConfigMap",
            true,
            &["cm"],
            false,
            &[],
        ),
        sa,
        builtin(
            "discovery.k8s.io",
            "endpointslices",
            "endpointslice",
            "EndpointSlice",
            true,
            &[],
            false,
            &[],
        ),
        builtin(
            "coordination.k8s.io",
            "leases",
            "lease",
            "Lease",
            true,
            &[],
            false,
            &[],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "roles",
            "role",
            "Role",
            true,
            &[],
            false,
            &[],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "rolebindings",
            "rolebinding",
            "RoleBinding",
            true,
            &[],
            false,
            &[],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "clusterroles",
            "clusterrole",
            "ClusterRole",
            false,
            &[],
            false,
            &[],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "clusterrolebinding",
            "ClusterRoleBinding",
            false,
            &[],
            false,
            &[],
        ),
        // Stored as a cluster with these admission plugins off stores them: the sandbox
        // enforces neither policies nor quotas (a real API server does; the real tier proves
        // mcsd's).
        builtin(
            "",
            "resourcequotas",
            "resourcequota",
            "ResourceQuota",
            true,
            &["quota"],
            true,
            &[],
        ),
        builtin(
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies",
            "validatingadmissionpolicy",
            "ValidatingAdmissionPolicy",
            false,
            &[],
            true,
            &["api-extensions"],
        ),
        builtin(
            "admissionregistration.k8s.io",
            "validatingadmissionpolicybindings",
            "validatingadmissionpolicybinding",
            "ValidatingAdmissionPolicyBinding",
            false,
            &[],
            false,
            &["api-extensions"],
        ),
        builtin(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
            &["api-extensions"],
        ),
    ]
}

/// The servable resources, keyed by group and plural.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    resources: BTreeMap<GroupResource, Arc<ResourceInfo>>,
}

impl Registry {
    /// The built-in kinds.
    pub fn with_builtins() -> Self {
        let mut r = Self::default();
        for info in builtins() {
            r.insert(info);
        }
        r
    }

    /// Adds or replaces a resource.
    pub fn insert(&mut self, info: ResourceInfo) {
        self.resources.insert(info.gr(), Arc::new(info));
    }

    /// Removes a resource.
    pub fn remove(&mut self, gr: &GroupResource) {
        self.resources.remove(gr);
    }

    /// A resource by group and plural.
    pub fn get(&self, gr: &GroupResource) -> Option<Arc<ResourceInfo>> {
        self.resources.get(gr).cloned()
    }

    /// A resource by group, version and plural; `None` when the version is not served.
    pub fn lookup(&self, group: &str, version: &str, resource: &str) -> Option<Arc<ResourceInfo>> {
        self.get(&GroupResource::new(group, resource))
            .filter(|i| i.serves(version))
    }

    /// A resource by group and kind.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        self.resources
            .values()
            .find(|i| i.group == group && i.kind == kind)
            .cloned()
    }

    /// Every resource.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceInfo>> {
        self.resources.values()
    }

    /// The groups with their served versions, core first, then in name order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for info in self.resources.values() {
            let versions = groups.entry(info.group.clone()).or_default();
            for v in &info.versions {
                if !versions.contains(v) {
                    versions.push(v.clone());
                }
            }
        }
        groups.into_iter().collect()
    }

    /// The resources served at a group and version.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceInfo>> {
        self.resources
            .values()
            .filter(|i| i.group == group && i.serves(version))
            .cloned()
            .collect()
    }
}

/// A [`ResourceInfo`] from a CRD object, or why it cannot serve.
pub fn from_crd(crd: &Value) -> Result<ResourceInfo, String> {
    let spec = crd.get("spec").ok_or("spec is required")?;
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
    let group = s(spec.get("group"));
    let names = spec.get("names").ok_or("spec.names is required")?;
    let plural = s(names.get("plural"));
    let kind = s(names.get("kind"));
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Err("spec.group, spec.names.plural and spec.names.kind are required".into());
    }
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let mut versions = Vec::new();
    let mut storage = String::new();
    let mut schemas = HashMap::new();
    let mut columns = HashMap::new();
    let mut status = false;
    for v in spec
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s(v.get("name"));
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            storage = name.clone();
        }
        if v.pointer("/subresources/status").is_some() {
            status = true;
        }
        if let Some(schema) = v.pointer("/schema/openAPIV3Schema") {
            schemas.insert(name.clone(), schema.clone());
        }
        if let Some(cols) = v.get("additionalPrinterColumns").and_then(Value::as_array) {
            columns.insert(name.clone(), cols.clone());
        }
        versions.push(name);
    }
    if storage.is_empty() {
        return Err("exactly one version must be the storage version".into());
    }
    // Discovery and kubectl prefer the storage version.
    versions.sort_by_key(|v| *v != storage);
    Ok(ResourceInfo {
        group,
        versions,
        storage_version: storage,
        singular: names
            .get("singular")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase()),
        resource: plural,
        kind,
        namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
        short_names: strings(names.get("shortNames")),
        categories: strings(names.get("categories")),
        status_subresource: status,
        other_subresources: Vec::new(),
        builtin: false,
        schemas,
        printer_columns: columns,
    })
}
