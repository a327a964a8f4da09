//! The install manifests render with kustomize (through the real kubectl) and say what the README
//! promises: least-privilege RBAC, a hardened two-replica Deployment, DNS on UDP and TCP 53.

use std::process::Command;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::Service,
    rbac::v1::{ClusterRole, PolicyRule, Role},
};
use serde::Deserialize;

fn rendered() -> Vec<serde_json::Value> {
    mcsd_test_tools::require(&["kubectl"]);
    let root = mcsd_tests::repo_root();
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(root.join("manifests"))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_json::Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn find<T: serde::de::DeserializeOwned>(docs: &[serde_json::Value], kind: &str, name: &str) -> T {
    let doc = docs
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"));
    serde_json::from_value(doc.clone()).unwrap()
}

fn rules_of(rules: &Option<Vec<PolicyRule>>) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for rule in rules.iter().flatten() {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                out.push((group.clone(), resource.clone(), rule.verbs.clone()));
            }
        }
    }
    out
}

#[test]
fn kustomize_renders_the_crds_namespace_rbac_deployment_and_services() {
    let docs = rendered();
    let mut kinds: Vec<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    kinds.dedup();
    for kind in [
        "CustomResourceDefinition",
        "Namespace",
        "ClusterRole",
        "Role",
        "Deployment",
        "Service",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} missing from {kinds:?}");
    }
    let crds: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect();
    assert_eq!(crds.len(), 3);
    for crd in mcsd_crds::generate::crds().unwrap() {
        let rendered = crds
            .iter()
            .find(|d| d["metadata"]["name"] == crd.crd.metadata.name.clone().unwrap().as_str())
            .expect("every generated CRD is installed by the kustomization");
        let rendered: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_json::from_value((*rendered).clone()).unwrap();
        assert!(
            rendered == crd.crd,
            "the kustomization installs {} as generated",
            crd.file_name
        );
    }
}

#[test]
fn no_rbac_rule_uses_a_wildcard() {
    for doc in rendered()
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        let rules: Vec<PolicyRule> = serde_json::from_value(doc["rules"].clone()).unwrap();
        for rule in rules {
            let all = rule
                .verbs
                .iter()
                .chain(rule.resources.iter().flatten())
                .chain(rule.api_groups.iter().flatten());
            for word in all {
                assert_ne!(word, "*", "{}: {rule:?}", doc["metadata"]["name"]);
            }
        }
    }
}

#[test]
fn peers_may_only_read_the_exchange_namespace_and_this_clusters_identity() {
    let docs = rendered();
    let role: Role = find(&docs, "Role", "mcsd-peer");
    assert_eq!(role.metadata.namespace.as_deref(), Some("mcsd-system"));
    for (group, resource, verbs) in rules_of(&role.rules) {
        assert!(
            verbs
                .iter()
                .all(|v| ["get", "list", "watch"].contains(&v.as_str())),
            "{group}/{resource}: {verbs:?}"
        );
    }
    let identity: ClusterRole = find(&docs, "ClusterRole", "mcsd-peer-identity");
    let rules = identity.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].verbs, ["get"]);
    assert_eq!(
        rules[0].resource_names.as_deref(),
        Some(
            &[
                "cluster.clusterset.k8s.io".to_string(),
                "clusterset.k8s.io".to_string()
            ][..]
        )
    );
}

#[test]
fn the_daemon_cannot_write_exports_or_secrets() {
    let docs = rendered();
    let cluster_role: ClusterRole = find(&docs, "ClusterRole", "mcsd");
    for (group, resource, verbs) in rules_of(&cluster_role.rules) {
        if resource == "serviceexports" {
            assert_eq!(verbs, ["get", "list", "watch"], "exports belong to users");
        }
        assert_ne!(resource, "secrets", "no cluster-wide secret access ({group})");
    }
    let role: Role = find(&docs, "Role", "mcsd");
    for (_, resource, verbs) in rules_of(&role.rules) {
        if resource == "secrets" {
            assert_eq!(verbs, ["get", "list", "watch"]);
        }
    }
}

#[test]
fn the_deployment_is_hardened_and_highly_available() {
    let docs = rendered();
    let deployment: Deployment = find(&docs, "Deployment", "mcsd");
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    let container = &pod.containers[0];
    assert!(container.liveness_probe.is_some() && container.readiness_probe.is_some());
    let resources = container.resources.as_ref().unwrap();
    assert!(resources.requests.is_some() && resources.limits.is_some());
    let sc = container.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
}

#[test]
fn dns_is_served_on_udp_and_tcp_port_53() {
    let service: Service = find(&rendered(), "Service", "mcsd-dns");
    let ports = service.spec.unwrap().ports.unwrap();
    let mut seen: Vec<_> = ports
        .iter()
        .map(|p| (p.port, p.protocol.clone().unwrap()))
        .collect();
    seen.sort();
    assert_eq!(seen, [(53, "TCP".to_string()), (53, "UDP".to_string())]);
}

/// RBAC cannot narrow a cluster-wide write by name or label, so every core resource mcsd's
/// ClusterRole may write anywhere is confined by an admission policy that matches requests made
/// as mcsd's ServiceAccount and is bound to deny. The exceptions are mcsd's own kinds: imports
/// (mcsd's alone), export status (a subresource) and its ClusterProperty.
#[test]
fn every_cluster_wide_write_of_the_daemon_is_confined_by_an_admission_policy() {
    let docs = rendered();
    let role: ClusterRole = find(&docs, "ClusterRole", "mcsd");
    let writes = ["create", "update", "patch", "delete"];
    let own = [
        "serviceimports",
        "serviceimports/status",
        "serviceexports/status",
        "clusterproperties",
    ];
    let policies: Vec<&serde_json::Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .collect();
    for (group, resource, verbs) in rules_of(&role.rules) {
        if own.contains(&resource.as_str()) || !verbs.iter().any(|v| writes.contains(&v.as_str())) {
            continue;
        }
        let policy = policies
            .iter()
            .find(|p| {
                p["spec"]["matchConstraints"]["resourceRules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| {
                        r["apiGroups"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|g| g == group.as_str())
                            && r["resources"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .any(|x| x == resource.as_str())
                            && ["CREATE", "UPDATE", "DELETE"]
                                .iter()
                                .all(|op| r["operations"].as_array().unwrap().iter().any(|o| o == op))
                    })
            })
            .unwrap_or_else(|| panic!("no admission policy confines mcsd's writes to {group}/{resource}"));
        let name = policy["metadata"]["name"].as_str().unwrap();
        let conditions = policy["spec"]["matchConditions"].to_string();
        assert!(
            conditions.contains("system:serviceaccount:mcsd-system:mcsd"),
            "{name} matches mcsd's ServiceAccount: {conditions}"
        );
        assert_eq!(policy["spec"]["failurePolicy"], "Fail", "{name}");
        denies(&docs, name);
    }
}

/// Policy `name` of `docs` is bound, to deny.
fn denies(docs: &[serde_json::Value], name: &str) {
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicyBinding" && d["spec"]["policyName"] == name)
        .unwrap_or_else(|| panic!("{name} is bound"));
    assert_eq!(
        binding["spec"]["validationActions"],
        serde_json::json!(["Deny"]),
        "{name}"
    );
}

#[test]
fn a_hub_grants_members_their_records_and_the_members_list_and_nothing_more() {
    let text = std::fs::read_to_string(mcsd_tests::repo_root().join("manifests/hub.yaml")).unwrap();
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_json::Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRole",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ],
        "the hub holds the two roles and a bound policy per kind of record, nothing more"
    );
    // What members may write, the hub checks as they write it: a policy per kind, for members'
    // identities in members' namespaces, failing closed, denying.
    for (group, resource) in [("", "configmaps"), ("discovery.k8s.io", "endpointslices")] {
        let policy = docs
            .iter()
            .find(|d| {
                d["kind"] == "ValidatingAdmissionPolicy"
                    && d["spec"]["matchConstraints"]["resourceRules"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|r| {
                            r["apiGroups"] == serde_json::json!([group])
                                && r["resources"] == serde_json::json!([resource])
                                && r["operations"] == serde_json::json!(["CREATE", "UPDATE"])
                        })
            })
            .unwrap_or_else(|| panic!("no hub policy checks members' {resource}"));
        let name = policy["metadata"]["name"].as_str().unwrap();
        assert_eq!(policy["spec"]["failurePolicy"], "Fail", "{name}");
        assert_eq!(
            policy["spec"]["matchConstraints"]["namespaceSelector"]["matchExpressions"][0]["key"],
            "hub.mcsd.io/member",
            "{name} checks members' namespaces"
        );
        assert!(
            policy["spec"]["matchConditions"]
                .to_string()
                .contains("system:serviceaccount:mcsd-member-"),
            "{name} checks what members write"
        );
        denies(&docs, name);
    }
    let write: ClusterRole = find(&docs, "ClusterRole", "mcsd-hub-member-write");
    let records = |verbs: &[&str]| -> Vec<(String, String, Vec<String>)> {
        let verbs: Vec<String> = verbs.iter().map(|v| v.to_string()).collect();
        vec![
            (String::new(), "configmaps".into(), verbs.clone()),
            ("discovery.k8s.io".into(), "endpointslices".into(), verbs),
        ]
    };
    // Bound in the member's own namespace only (a RoleBinding there): its records.
    assert_eq!(
        rules_of(&write.rules),
        records(&["get", "list", "watch", "create", "patch", "delete"])
    );
    // Across the hub: read the records and the members' namespaces, nothing else.
    let read: ClusterRole = find(&docs, "ClusterRole", "mcsd-hub-member-read");
    let mut wanted = records(&["list", "watch"]);
    wanted.push((
        String::new(),
        "namespaces".into(),
        vec!["get".into(), "list".into(), "watch".into()],
    ));
    assert_eq!(rules_of(&read.rules), wanted);
}

/// One version everywhere an operator reads one: the workspace's (what `.ci/image` tags the image
/// with), the image the manifests run, and the chart's appVersion (its default image tag).
#[test]
fn the_manifests_the_chart_and_the_image_name_one_version() {
    let root = mcsd_tests::repo_root();
    let read = |file: &str| std::fs::read_to_string(root.join(file)).unwrap();
    // The workspace's version: the first `version = "…"` line of the root Cargo.toml.
    let cargo = read("Cargo.toml");
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"'))
        .expect("a version line in Cargo.toml");
    let docs = rendered();
    let deployment: Deployment = find(&docs, "Deployment", "mcsd");
    let image = deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert_eq!(
        image,
        format!("mcsd:{version}"),
        "manifests/kustomization.yaml's newTag"
    );
    let chart: serde_json::Value = serde_yaml::from_str(&read("manifests/chart/Chart.yaml")).unwrap();
    assert_eq!(
        chart["appVersion"], version,
        "manifests/chart/Chart.yaml's appVersion"
    );
}
