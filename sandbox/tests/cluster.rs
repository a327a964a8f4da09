//! What the sandbox's cluster does that MCS needs: clusterIPs, Pod addresses and readiness,
//! EndpointSlices; and RBAC with ServiceAccount tokens.

mod common;

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use mcsd_crds::mcs::v1beta1::ServiceImport;
use serde_json::json;
use std::time::Duration;

fn in_range(ip: &str, prefix: &str) -> bool {
    ip.starts_with(prefix)
}

#[tokio::test]
async fn services_get_cluster_ips_from_the_cluster_range_single_dual_and_headless() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let svcs: Api<Service> = Api::namespaced(client, "default");
    let mk = |name: &str, extra: serde_json::Value| {
        let mut spec = json!({"ports": [{"port": 80}]});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        from_json::<Service>(json!({"metadata": {"name": name}, "spec": spec}))
    };
    let single = svcs
        .create(&PostParams::default(), &mk("single", json!({})))
        .await
        .unwrap()
        .spec
        .unwrap();
    assert!(in_range(single.cluster_ip.as_deref().unwrap(), "10.96."));
    assert_eq!(single.ip_families.unwrap(), ["IPv4"]);
    assert_eq!(single.ip_family_policy.as_deref(), Some("SingleStack"));
    assert_eq!(single.ports.unwrap()[0].protocol.as_deref(), Some("TCP"));
    let dual = svcs
        .create(
            &PostParams::default(),
            &mk("dual", json!({"ipFamilyPolicy": "PreferDualStack"})),
        )
        .await
        .unwrap()
        .spec
        .unwrap();
    let ips = dual.cluster_ips.unwrap();
    assert_eq!(ips.len(), 2);
    assert!(in_range(&ips[0], "10.96.") && in_range(&ips[1], "fd00:10:96:1::"));
    assert_eq!(dual.ip_families.unwrap(), ["IPv4", "IPv6"]);
    let v6 = svcs
        .create(&PostParams::default(), &mk("v6", json!({"ipFamilies": ["IPv6"]})))
        .await
        .unwrap()
        .spec
        .unwrap();
    assert!(in_range(v6.cluster_ip.as_deref().unwrap(), "fd00:10:96:1::"));
    let headless = svcs
        .create(
            &PostParams::default(),
            &mk("headless", json!({"clusterIP": "None"})),
        )
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_ne!(single.cluster_ip, dual.cluster_ip, "addresses are not reused");
    let change = json!({"spec": {"clusterIP": "10.96.200.200", "clusterIPs": ["10.96.200.200"]}});
    let s = status(
        svcs.patch("single", &PatchParams::default(), &Patch::Merge(change))
            .await,
    );
    assert_eq!(s.code, 422);
    assert!(s.message.contains("may not change once set"), "{}", s.message);
    let taken = mk("taken", json!({"clusterIP": single.cluster_ip.clone().unwrap()}));
    assert_eq!(code(svcs.create(&PostParams::default(), &taken).await), 422);
    // A cluster's second range is different, so tests can tell clusters apart.
    let mut config = mcsd_sandbox::ClusterConfig::nth(1);
    config.install_crds = false;
    let b = mcsd_sandbox::Cluster::start(config).await.unwrap();
    let b_svcs: Api<Service> = Api::namespaced(b.admin_client().await.unwrap(), "default");
    let on_b = b_svcs
        .create(&PostParams::default(), &mk("single", json!({})))
        .await
        .unwrap()
        .spec
        .unwrap();
    assert!(in_range(on_b.cluster_ip.as_deref().unwrap(), "10.97."));
}

fn pod(name: &str, labels: serde_json::Value, extra: serde_json::Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "i", "ports": [{"name": "web", "containerPort": 8080}]}]});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    from_json(json!({"metadata": {"name": name, "labels": labels}, "spec": spec}))
}

async fn slices(api: &Api<EndpointSlice>, svc: &str) -> Vec<EndpointSlice> {
    api.list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
        .unwrap()
        .items
}

fn endpoint_state(slice: &EndpointSlice) -> Vec<(String, bool, bool, bool)> {
    let mut v: Vec<_> = slice
        .endpoints
        .iter()
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            (
                e.target_ref
                    .as_ref()
                    .and_then(|t| t.name.clone())
                    .unwrap_or_default(),
                c.ready.unwrap_or(false),
                c.serving.unwrap_or(false),
                c.terminating.unwrap_or(false),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn pods_become_ready_and_endpoint_slices_follow_readiness_and_deletion() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let eps: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let svc = from_json::<Service>(
        json!({"metadata": {"name": "web", "labels": {"team": "x"}}, "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}}),
    );
    svcs.create(&PostParams::default(), &svc).await.unwrap();
    let p0 = pods
        .create(
            &PostParams::default(),
            &pod("web-0", json!({"app": "web"}), json!({})),
        )
        .await
        .unwrap();
    let status = p0.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert!(status.pod_ip.as_deref().unwrap().starts_with("10.160."));
    assert!(
        status
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    pods.create(
        &PostParams::default(),
        &pod("web-1", json!({"app": "web"}), json!({})),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("other", json!({"app": "other"}), json!({})),
    )
    .await
    .unwrap();
    let slice = eventually("a slice with both pods", || async {
        slices(&eps, "web")
            .await
            .into_iter()
            .find(|s| s.endpoints.len() == 2)
    })
    .await;
    assert_eq!(slice.address_type, "IPv4");
    let labels = slice.metadata.labels.clone().unwrap();
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(labels["team"], "x");
    let port = &slice.ports.clone().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port),
        (Some("http"), Some(8080)),
        "ports resolve the named target port"
    );
    assert_eq!(
        slice.metadata.owner_references.clone().unwrap()[0].kind,
        "Service"
    );
    assert_eq!(
        endpoint_state(&slice),
        [
            ("web-0".into(), true, true, false),
            ("web-1".into(), true, true, false)
        ]
    );
    // Readiness flips through the status subresource.
    let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    pods.patch_status("web-1", &PatchParams::default(), &Patch::Strategic(not_ready))
        .await
        .unwrap();
    eventually("web-1 not ready", || async {
        let s = slices(&eps, "web").await.pop()?;
        (endpoint_state(&s)
            == [
                ("web-0".into(), true, true, false),
                ("web-1".into(), false, false, false),
            ])
        .then_some(())
    })
    .await;
    // A pod being deleted is terminating.
    pods.patch(
        "web-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold"]}})),
    )
    .await
    .unwrap();
    pods.delete("web-0", &DeleteParams::default()).await.unwrap();
    eventually("web-0 terminating", || async {
        let s = slices(&eps, "web").await.pop()?;
        (endpoint_state(&s)[0] == ("web-0".into(), false, true, true)).then_some(())
    })
    .await;
    pods.patch(
        "web-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    pods.delete("web-1", &DeleteParams::default()).await.unwrap();
    eventually("an empty slice", || async {
        let s = slices(&eps, "web").await.pop()?;
        s.endpoints.is_empty().then_some(())
    })
    .await;
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("the slice to be collected", || async {
        slices(&eps, "web").await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn headless_dual_stack_service_gets_a_slice_per_family_with_hostnames() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let eps: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let svc = from_json::<Service>(
        json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "ipFamilyPolicy": "RequireDualStack", "selector": {"app": "db"}, "ports": [{"port": 5432}]}}),
    );
    svcs.create(&PostParams::default(), &svc).await.unwrap();
    pods.create(
        &PostParams::default(),
        &pod(
            "db-0",
            json!({"app": "db"}),
            json!({"hostname": "db-0", "subdomain": "db"}),
        ),
    )
    .await
    .unwrap();
    let both = eventually("two slices with the pod", || async {
        let s = slices(&eps, "db").await;
        (s.len() == 2 && s.iter().all(|x| x.endpoints.len() == 1)).then_some(s)
    })
    .await;
    let mut families: Vec<_> = both.iter().map(|s| s.address_type.clone()).collect();
    families.sort();
    assert_eq!(families, ["IPv4", "IPv6"]);
    for s in &both {
        assert_eq!(s.endpoints[0].hostname.as_deref(), Some("db-0"));
        assert!(
            s.metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key("service.kubernetes.io/headless")
        );
    }
}

#[tokio::test]
async fn a_token_allowed_to_read_one_namespace_is_refused_everything_else() {
    let cluster = cluster().await;
    let admin = cluster.admin_client().await.unwrap();
    namespace(&admin, "demo").await;
    namespace(&admin, "other").await;
    let roles: Api<Role> = Api::namespaced(admin.clone(), "demo");
    roles.create(&PostParams::default(), &from_json(json!({"metadata": {"name": "reader"}, "rules": [{"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceimports"], "verbs": ["get", "list", "watch"]}]}))).await.unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "demo");
    bindings.create(&PostParams::default(), &from_json(json!({"metadata": {"name": "reader"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}, "subjects": [{"kind": "ServiceAccount", "name": "peer", "namespace": "mcsd-system"}]}))).await.unwrap();
    let peer = cluster
        .service_account_client("mcsd-system", "peer")
        .await
        .unwrap();
    let allowed: Api<ServiceImport> = Api::namespaced(peer.clone(), "demo");
    assert!(allowed.list(&ListParams::default()).await.is_ok());
    let elsewhere: Api<ServiceImport> = Api::namespaced(peer.clone(), "other");
    let s = status(elsewhere.list(&ListParams::default()).await);
    assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        s.message,
        "serviceimports.multicluster.x-k8s.io is forbidden: User \"system:serviceaccount:mcsd-system:peer\" cannot list resource \"serviceimports\" in API group \"multicluster.x-k8s.io\" in the namespace \"other\""
    );
    let import = from_json::<ServiceImport>(
        json!({"metadata": {"name": "x"}, "spec": {"type": "ClusterSetIP", "ports": []}}),
    );
    assert_eq!(code(allowed.create(&PostParams::default(), &import).await), 403);
    let cms: Api<ConfigMap> = Api::namespaced(peer.clone(), "demo");
    assert_eq!(code(cms.list(&ListParams::default()).await), 403);
    let all: Api<ServiceImport> = Api::all(peer);
    let s = status(all.list(&ListParams::default()).await);
    assert!(s.message.ends_with("at the cluster scope"), "{}", s.message);
    let nobody =
        mcsd_sandbox::Cluster::client_from_kubeconfig(&cluster.kubeconfig_for_token("x", "not-a-token"))
            .await
            .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(nobody, "demo");
    assert_eq!(code(cms.list(&ListParams::default()).await), 401);
}

/// Lists ConfigMaps in `default` with `token`: `Ok` or the API error.
async fn list_with(cluster: &mcsd_sandbox::Cluster, token: &str) -> kube::Result<()> {
    let client = mcsd_sandbox::Cluster::client_from_kubeconfig(&cluster.kubeconfig_for_token("u", token))
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.list(&ListParams::default()).await.map(|_| ())
}

/// A cluster where `system:serviceaccount:mcsd-system:peer` may list ConfigMaps in `default`,
/// and its admin's client.
async fn cluster_with_peer() -> (mcsd_sandbox::Cluster, kube::Client) {
    let cluster = cluster().await;
    let admin = cluster.admin_client().await.unwrap();
    let roles: Api<Role> = Api::namespaced(admin.clone(), "default");
    roles.create(&PostParams::default(), &from_json(json!({"metadata": {"name": "cms"}, "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]}))).await.unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "default");
    bindings.create(&PostParams::default(), &from_json(json!({"metadata": {"name": "cms"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cms"}, "subjects": [{"kind": "ServiceAccount", "name": "peer", "namespace": "mcsd-system"}]}))).await.unwrap();
    (cluster, admin)
}

/// The 401 a real API server answers: a Status with reason and message `Unauthorized`.
fn assert_unauthorized(result: kube::Result<()>) {
    let s = status(result);
    assert_eq!(
        (s.code, s.status, s.reason.as_str(), s.message.as_str()),
        (
            401,
            Some(kube::core::response::StatusSummary::Failure),
            "Unauthorized",
            "Unauthorized"
        )
    );
}

#[tokio::test]
async fn a_token_past_its_expiry_gets_401() {
    let (cluster, _) = cluster_with_peer().await;
    let ttl = Duration::from_secs(3);
    let issued = std::time::Instant::now();
    let token = cluster
        .service_account_token_with_expiry("mcsd-system", "peer", ttl)
        .unwrap();
    let lasting = cluster.service_account_token("mcsd-system", "peer").unwrap();
    list_with(&cluster, &token).await.unwrap();
    assert!(issued.elapsed() < ttl, "the first request came too late to tell");
    let rejected = eventually("the token to expire", || async {
        list_with(&cluster, &token).await.err()
    })
    .await;
    assert!(issued.elapsed() >= ttl, "rejected before its expiry");
    assert_unauthorized(Err(rejected));
    // Other tokens of the same ServiceAccount are unaffected.
    list_with(&cluster, &lasting).await.unwrap();
}

#[tokio::test]
async fn deleting_a_service_account_revokes_its_tokens_even_if_it_is_made_again() {
    let (cluster, admin) = cluster_with_peer().await;
    let token = cluster.service_account_token("mcsd-system", "peer").unwrap();
    list_with(&cluster, &token).await.unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(admin, "mcsd-system");
    accounts.delete("peer", &DeleteParams::default()).await.unwrap();
    assert_unauthorized(list_with(&cluster, &token).await);
    // A ServiceAccount of the same name is another one (another uid): the old token stays revoked.
    accounts
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "peer"}})),
        )
        .await
        .unwrap();
    assert_unauthorized(list_with(&cluster, &token).await);
    let fresh = cluster.service_account_token("mcsd-system", "peer").unwrap();
    list_with(&cluster, &fresh).await.unwrap();
}

#[tokio::test]
async fn a_token_request_is_valid_for_its_expiration_seconds_of_at_least_ten_minutes() {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    let (cluster, admin) = cluster_with_peer().await;
    cluster.service_account_token("mcsd-system", "peer").unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(admin, "mcsd-system");
    let request = |seconds: Option<i64>| {
        from_json::<TokenRequest>(json!({"spec": {"audiences": [], "expirationSeconds": seconds}}))
    };
    let s = status(
        accounts
            .create_token_request("peer", &PostParams::default(), &request(Some(60)))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        s.message,
        "TokenRequest.authentication.k8s.io \"peer\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
    );
    for (asked, lifetime) in [(Some(600), 600), (None, 3600)] {
        let before = k8s_openapi::jiff::Timestamp::now();
        let made = accounts
            .create_token_request("peer", &PostParams::default(), &request(asked))
            .await
            .unwrap();
        assert_eq!(made.spec.expiration_seconds, Some(lifetime));
        let status = made.status.unwrap();
        let left = status.expiration_timestamp.0.duration_since(before);
        assert!(
            (lifetime - 5..=lifetime + 5).contains(&left.as_secs()),
            "expires in {left:?}, asked {asked:?}"
        );
        list_with(&cluster, &status.token).await.unwrap();
    }
    // A TokenRequest is bound to its ServiceAccount too.
    let made = accounts
        .create_token_request("peer", &PostParams::default(), &request(None))
        .await
        .unwrap();
    accounts.delete("peer", &DeleteParams::default()).await.unwrap();
    assert_unauthorized(list_with(&cluster, &made.status.unwrap().token).await);
}
