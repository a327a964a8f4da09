//! kube-rs clients against the sandbox: CRUD, versions, watches, conflicts, apply, finalizers,
//! garbage collection, namespaces.

mod common;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::ObjectMeta;
use mcsd_crds::mcs::v1beta1::ServiceExport;
use serde_json::json;

async fn crud<K>(client: &kube::Client, ns: Option<&str>, obj: serde_json::Value, change: serde_json::Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns.unwrap_or("default"));
    crud_with(api, obj, change).await;
}

async fn crud_with<K>(api: Api<K>, obj: serde_json::Value, change: serde_json::Value)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let created = api
        .create(&PostParams::default(), &from_json(obj))
        .await
        .expect("create");
    let name = created.meta().name.clone().expect("a name");
    let meta = created.meta();
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some() && meta.resource_version.is_some());
    let got = api.get(&name).await.expect("get");
    assert_eq!(got.meta().uid, meta.uid);
    let listed = api.list(&ListParams::default()).await.expect("list");
    assert!(
        listed
            .items
            .iter()
            .any(|o| o.meta().name.as_deref() == Some(name.as_str()))
    );
    let patched = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&change))
        .await
        .expect("patch");
    assert_ne!(patched.meta().resource_version, meta.resource_version);
    let mut replaced = patched.clone();
    replaced
        .meta_mut()
        .labels
        .get_or_insert_default()
        .insert("replaced".into(), "yes".into());
    let replaced = api
        .replace(&name, &PostParams::default(), &replaced)
        .await
        .expect("replace");
    assert_eq!(
        replaced
            .meta()
            .labels
            .as_ref()
            .and_then(|l| l.get("replaced"))
            .map(String::as_str),
        Some("yes")
    );
    api.delete(&name, &DeleteParams::default()).await.expect("delete");
    assert_eq!(code(api.get(&name).await), 404);
}

#[tokio::test]
async fn every_builtin_kind_can_be_created_read_listed_patched_replaced_and_deleted() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    crud_with::<Namespace>(
        Api::all(client.clone()),
        json!({"metadata": {"name": "crud"}}),
        json!({"metadata": {"labels": {"a": "b"}}}),
    )
    .await;
    crud::<Service>(
        &client,
        None,
        json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}),
        json!({"spec": {"selector": {"app": "x"}}}),
    )
    .await;
    crud::<Pod>(
        &client,
        None,
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        json!({"metadata": {"labels": {"a": "b"}}}),
    )
    .await;
    crud::<Secret>(
        &client,
        None,
        json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}, "data": {"x": "eA=="}}),
        json!({"data": {"y": "eQ=="}}),
    )
    .await;
    crud::<ConfigMap>(
        &client,
        None,
        json!({"metadata": {"name": "c"}, "data": {"k": "v"}}),
        json!({"data": {"k2": "v2"}}),
    )
    .await;
    crud::<ServiceAccount>(
        &client,
        None,
        json!({"metadata": {"name": "robot"}}),
        json!({"metadata": {"labels": {"a": "b"}}}),
    )
    .await;
    crud::<EndpointSlice>(
        &client,
        None,
        json!({"metadata": {"name": "e"}, "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}]}),
        json!({"endpoints": []}),
    )
    .await;
    crud::<Lease>(
        &client,
        None,
        json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}}),
        json!({"spec": {"holderIdentity": "b"}}),
    )
    .await;
    crud::<Role>(
        &client,
        None,
        json!({"metadata": {"name": "r"}, "rules": []}),
        json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
    )
    .await;
    crud::<RoleBinding>(&client, None, json!({"metadata": {"name": "rb"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": []}), json!({"metadata": {"labels": {"a": "b"}}})).await;
    crud_with::<ClusterRole>(
        Api::all(client.clone()),
        json!({"metadata": {"name": "cr"}, "rules": []}),
        json!({"metadata": {"labels": {"a": "b"}}}),
    )
    .await;
    crud_with::<ClusterRoleBinding>(Api::all(client.clone()), json!({"metadata": {"name": "crb"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cr"}}), json!({"metadata": {"labels": {"a": "b"}}})).await;
    crud::<ServiceExport>(
        &client,
        None,
        json!({"metadata": {"name": "x"}, "spec": {}}),
        json!({"spec": {"exportedLabels": {"a": "b"}}}),
    )
    .await;
}

#[tokio::test]
async fn crds_become_servable_at_every_served_version_and_go_away_when_deleted() {
    let cluster = cluster_with(|c| c.install_crds = false).await;
    let client = cluster.admin_client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let imports_v1beta1 = dynamic(
        &client,
        ("multicluster.x-k8s.io", "v1beta1", "ServiceImport"),
        "serviceimports",
        Some("default"),
    );
    assert_eq!(code(imports_v1beta1.list(&ListParams::default()).await), 404);
    for generated in mcsd_crds::generate::crds().unwrap() {
        let crd = crds.create(&PostParams::default(), &generated.crd).await.unwrap();
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        );
    }
    let import = json!({
        "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceImport",
        "metadata": {"name": "svc"}, "spec": {"type": "ClusterSetIP", "ports": [{"port": 80}], "unknownField": 1},
    });
    let created = imports_v1beta1
        .create(&PostParams::default(), &from_json(import))
        .await
        .unwrap();
    // Structural defaulting and pruning.
    assert_eq!(created.data["spec"]["ports"][0]["protocol"], "TCP");
    assert!(created.data["spec"].get("unknownField").is_none());
    let imports_v1alpha1 = dynamic(
        &client,
        ("multicluster.x-k8s.io", "v1alpha1", "ServiceImport"),
        "serviceimports",
        Some("default"),
    );
    let old = imports_v1alpha1.get("svc").await.unwrap();
    assert_eq!(old.types.unwrap().api_version, "multicluster.x-k8s.io/v1alpha1");
    assert_eq!(old.metadata.uid, created.metadata.uid);
    // A ServiceExport gets `spec: {}`.
    let exports = dynamic(
        &client,
        ("multicluster.x-k8s.io", "v1beta1", "ServiceExport"),
        "serviceexports",
        Some("default"),
    );
    let bare = json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport", "metadata": {"name": "svc"}});
    let export = exports
        .create(&PostParams::default(), &from_json(bare))
        .await
        .unwrap();
    assert_eq!(export.data["spec"], json!({}));
    // Schema violations are 422 Invalid and name the field.
    let bad = json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceImport", "metadata": {"name": "bad"}, "spec": {"type": "Nope", "ports": []}});
    let s = status(
        imports_v1beta1
            .create(&PostParams::default(), &from_json(bad))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(s.message.contains("spec.type"), "{}", s.message);
    crds.delete("serviceimports.multicluster.x-k8s.io", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(code(imports_v1beta1.list(&ListParams::default()).await), 404);
}

/// As kube-apiserver (KEP-1111): a CRD in a `*.k8s.io` or `*.kubernetes.io` group is refused
/// without the `api-approved.kubernetes.io` annotation; the generated ClusterProperty CRD has it.
#[tokio::test]
async fn a_crd_in_a_protected_group_needs_the_approval_annotation() {
    let cluster = cluster_with(|c| c.install_crds = false).await;
    let client = cluster.admin_client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let property = mcsd_crds::generate::crds()
        .unwrap()
        .into_iter()
        .find(|g| g.crd.spec.group == "about.k8s.io")
        .unwrap()
        .crd;
    let mut unapproved = property.clone();
    unapproved.metadata.annotations = None;
    let s = status(crds.create(&PostParams::default(), &unapproved).await);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message
            .contains("metadata.annotations[api-approved.kubernetes.io]: Required value"),
        "{}",
        s.message
    );
    crds.create(&PostParams::default(), &property).await.unwrap();
}

#[tokio::test]
async fn create_fills_generate_name_uid_timestamp_and_generation() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            generate_name: Some("gen-".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let a = cms.create(&PostParams::default(), &cm).await.unwrap();
    let b = cms.create(&PostParams::default(), &cm).await.unwrap();
    let (na, nb) = (a.metadata.name.unwrap(), b.metadata.name.unwrap());
    assert!(na.starts_with("gen-") && na.len() == 9 && na != nb);
    assert_ne!(a.metadata.uid, b.metadata.uid);
    assert_eq!(a.metadata.generation, Some(1));
    let dup = ConfigMap {
        metadata: ObjectMeta {
            name: Some(na.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(
        status(cms.create(&PostParams::default(), &dup).await).reason,
        "AlreadyExists"
    );
    let nameless = ConfigMap::default();
    assert_eq!(code(cms.create(&PostParams::default(), &nameless).await), 422);
    let missing_ns: Api<ConfigMap> = Api::namespaced(cms.clone().into_client(), "nowhere");
    assert_eq!(code(missing_ns.create(&PostParams::default(), &dup).await), 404);
}

#[tokio::test]
async fn stale_update_is_409_conflict() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let v1 = cms
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "c"}, "data": {"k": "1"}})),
        )
        .await
        .unwrap();
    let mut v2 = v1.clone();
    v2.data = Some([("k".to_string(), "2".to_string())].into());
    cms.replace("c", &PostParams::default(), &v2).await.unwrap();
    let mut stale = v1.clone();
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    let s = status(cms.replace("c", &PostParams::default(), &stale).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains("the object has been modified"),
        "{}",
        s.message
    );
    assert_eq!(cms.get("c").await.unwrap().data.unwrap()["k"], "2");
}

#[tokio::test]
async fn generation_is_bumped_by_spec_changes_only_and_noop_writes_keep_the_version() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let exports: Api<ServiceExport> = Api::namespaced(client, "default");
    let e = exports
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "e"}, "spec": {}})),
        )
        .await
        .unwrap();
    assert_eq!(e.metadata.generation, Some(1));
    let labelled = exports
        .patch(
            "e",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    let status = json!({"status": {"conditions": [{"type": "Valid", "status": "True", "reason": "Valid", "message": "", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}});
    let with_status = exports
        .patch_status("e", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    assert_eq!(with_status.metadata.generation, Some(1));
    assert!(with_status.status.is_some());
    let spec = exports
        .patch(
            "e",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"exportedLabels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(spec.metadata.generation, Some(2));
    // Status written through the main resource is ignored; the status subresource keeps it.
    let ignored = exports
        .patch(
            "e",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": null})),
        )
        .await
        .unwrap();
    assert!(ignored.status.is_some());
    let again = exports
        .patch(
            "e",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"exportedLabels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, ignored.metadata.resource_version);
}

#[tokio::test]
async fn lists_filter_by_labels_and_fields_and_page_with_limit_and_continue() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        cms.create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": format!("c{i}"), "labels": {"tier": tier}}})),
        )
        .await
        .unwrap();
    }
    let even = cms
        .list(&ListParams::default().labels("tier=even"))
        .await
        .unwrap();
    assert_eq!(even.items.len(), 4);
    let not_even = cms
        .list(&ListParams::default().labels("tier!=even,tier"))
        .await
        .unwrap();
    assert_eq!(not_even.items.len(), 3);
    let set = cms
        .list(&ListParams::default().labels("tier in (odd, none)"))
        .await
        .unwrap();
    assert_eq!(set.items.len(), 3);
    let named = cms
        .list(&ListParams::default().fields("metadata.name=c3"))
        .await
        .unwrap();
    assert_eq!(named.items.len(), 1);
    let all: Api<ConfigMap> = Api::all(client.clone());
    let in_ns = all
        .list(&ListParams::default().fields("metadata.namespace=default"))
        .await
        .unwrap();
    assert_eq!(in_ns.items.len(), 7);
    assert_eq!(
        code(cms.list(&ListParams::default().fields("data.k=v")).await),
        400
    );
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = cms.list(&lp).await.unwrap();
        assert!(page.items.len() <= 3);
        names.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = ListParams::default().limit(3).continue_token(&c),
            None => break,
        }
    }
    assert_eq!(names, (0..7).map(|i| format!("c{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn watch_delivers_every_event_in_order_and_resumes_from_a_resource_version() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let start = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().disable_bookmarks(), &start)
        .await
        .unwrap()
        .boxed();
    cms.create(
        &PostParams::default(),
        &from_json(json!({"metadata": {"name": "w"}, "data": {"n": "0"}})),
    )
    .await
    .unwrap();
    let mut middle = String::new();
    for n in 1..=5 {
        let cm = cms
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"n": n.to_string()}})),
            )
            .await
            .unwrap();
        if n == 2 {
            middle = cm.metadata.resource_version.unwrap();
        }
    }
    cms.delete("w", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    let mut last_rv = 0u64;
    while seen.len() < 7 {
        let ev = stream.try_next().await.unwrap().expect("the stream stays open");
        let (kind, cm) = match ev {
            WatchEvent::Added(c) => ("ADDED", c),
            WatchEvent::Modified(c) => ("MODIFIED", c),
            WatchEvent::Deleted(c) => ("DELETED", c),
            other => panic!("unexpected {other:?}"),
        };
        let rv: u64 = cm.metadata.resource_version.clone().unwrap().parse().unwrap();
        assert!(rv > last_rv, "events arrive in resourceVersion order");
        last_rv = rv;
        seen.push(format!(
            "{kind}:{}",
            cm.data.as_ref().map(|d| d["n"].clone()).unwrap_or_default()
        ));
    }
    assert_eq!(
        seen,
        [
            "ADDED:0",
            "MODIFIED:1",
            "MODIFIED:2",
            "MODIFIED:3",
            "MODIFIED:4",
            "MODIFIED:5",
            "DELETED:5"
        ]
    );
    // Resuming after the second modification replays the rest.
    let mut resumed = cms
        .watch(&WatchParams::default().disable_bookmarks(), &middle)
        .await
        .unwrap()
        .boxed();
    let mut rest = Vec::new();
    while rest.len() < 4 {
        match resumed.try_next().await.unwrap().unwrap() {
            WatchEvent::Modified(c) => rest.push(c.data.unwrap()["n"].clone()),
            WatchEvent::Deleted(_) => rest.push("deleted".into()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(rest, ["3", "4", "5", "deleted"]);
}

#[tokio::test]
async fn watches_get_bookmarks_and_end_after_timeout_seconds() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap()
        .boxed();
    let mut bookmark = None;
    while let Some(ev) = stream.try_next().await.unwrap() {
        if let WatchEvent::Bookmark(b) = ev {
            bookmark = Some(b.metadata.resource_version);
        }
    }
    assert_eq!(
        bookmark.as_deref(),
        Some(rv.as_str()),
        "a bookmark at the current version, then the stream ends"
    );
}

#[tokio::test]
async fn watch_from_a_version_older_than_the_event_log_is_410_gone() {
    let cluster = cluster_with(|c| c.event_log_capacity = 5).await;
    let client = cluster.admin_client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    for i in 0..10 {
        cms.create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": format!("c{i}")}})),
        )
        .await
        .unwrap();
    }
    let mut stream = cms.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test]
async fn label_selected_watch_sees_objects_leave_and_enter_the_selection() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(
            &WatchParams::default().labels("pick=yes").disable_bookmarks(),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    cms.create(
        &PostParams::default(),
        &from_json(json!({"metadata": {"name": "a", "labels": {"pick": "no"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"pick": "yes"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"pick": "no"}}})),
    )
    .await
    .unwrap();
    assert!(matches!(
        stream.try_next().await.unwrap(),
        Some(WatchEvent::Added(_))
    ));
    assert!(matches!(
        stream.try_next().await.unwrap(),
        Some(WatchEvent::Deleted(_))
    ));
}

#[tokio::test]
async fn json_patch_and_strategic_merge_patch_follow_their_rules() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &from_json(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "one"}, {"name": "b", "image": "two"}]}}))).await.unwrap();
    let smp = json!({"spec": {"containers": [{"name": "b", "image": "three"}]}});
    let p = pods
        .patch("p", &PatchParams::default(), &Patch::Strategic(smp))
        .await
        .unwrap();
    let images: Vec<_> = p
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.image.unwrap())
        .collect();
    assert_eq!(images, ["one", "three"], "containers merge by name");
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/metadata/labels", "value": {"x": "1"}}]))
            .unwrap();
    let p = pods
        .patch("p", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(p.metadata.labels.unwrap()["x"], "1");
    let exports: Api<ServiceExport> = Api::namespaced(client, "default");
    exports
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "e"}, "spec": {}})),
        )
        .await
        .unwrap();
    assert_eq!(
        code(
            exports
                .patch("e", &PatchParams::default(), &Patch::Strategic(json!({})))
                .await
        ),
        415
    );
}

#[tokio::test]
async fn apply_conflicts_between_two_field_managers_unless_forced() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let exports: Api<ServiceExport> = Api::namespaced(client, "default");
    let a = json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport", "metadata": {"name": "e"}, "spec": {"exportedLabels": {"team": "a", "a-only": "1"}}});
    exports
        .patch("e", &PatchParams::apply("alice"), &Patch::Apply(&a))
        .await
        .unwrap();
    let b = json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport", "metadata": {"name": "e"}, "spec": {"exportedLabels": {"team": "b"}}});
    let s = status(
        exports
            .patch("e", &PatchParams::apply("bob"), &Patch::Apply(&b))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains("alice") && s.message.contains(".spec.exportedLabels.team"),
        "{}",
        s.message
    );
    // The same value is shared ownership, not a conflict.
    let same = json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport", "metadata": {"name": "e"}, "spec": {"exportedLabels": {"team": "a"}}});
    exports
        .patch("e", &PatchParams::apply("carol"), &Patch::Apply(&same))
        .await
        .unwrap();
    let forced = exports
        .patch("e", &PatchParams::apply("bob").force(), &Patch::Apply(&b))
        .await
        .unwrap();
    let labels = forced.spec.exported_labels.clone().unwrap();
    assert_eq!(labels["team"], "b");
    let managers: Vec<_> = forced
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .map(|m| m.manager.unwrap())
        .collect();
    assert!(managers.contains(&"bob".to_string()) && managers.contains(&"alice".to_string()));
    // alice stops applying a field she alone owns: it is removed.
    let a2 = json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport", "metadata": {"name": "e"}, "spec": {}});
    let after = exports
        .patch("e", &PatchParams::apply("alice"), &Patch::Apply(&a2))
        .await
        .unwrap();
    let labels = after.spec.exported_labels.unwrap();
    assert!(!labels.contains_key("a-only"));
    assert_eq!(labels["team"], "b");
}

#[tokio::test]
async fn apply_creates_and_status_apply_touches_only_status() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let exports: Api<ServiceExport> = Api::namespaced(client, "default");
    let body = json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport", "metadata": {"name": "e", "labels": {"l": "1"}}});
    let created = exports
        .patch("e", &PatchParams::apply("user"), &Patch::Apply(&body))
        .await
        .unwrap();
    assert_eq!(created.metadata.labels.unwrap()["l"], "1");
    let status = json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport", "metadata": {"name": "e"},
        "status": {"conditions": [{"type": "Valid", "status": "True", "reason": "Valid", "message": "ok", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}});
    let after = exports
        .patch_status("e", &PatchParams::apply("mcsd").force(), &Patch::Apply(&status))
        .await
        .unwrap();
    assert_eq!(after.status.unwrap().conditions[0].type_, "Valid");
    assert_eq!(
        after.metadata.labels.unwrap()["l"],
        "1",
        "status apply leaves metadata alone"
    );
    let entry = after
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("mcsd"))
        .unwrap();
    assert_eq!(entry.subresource.as_deref(), Some("status"));
}

#[tokio::test]
async fn applying_without_a_list_map_item_it_applied_before_removes_the_whole_item() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let exports: Api<ServiceExport> = Api::namespaced(client, "default");
    let body = json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport", "metadata": {"name": "e"}});
    exports
        .patch("e", &PatchParams::apply("user"), &Patch::Apply(&body))
        .await
        .unwrap();
    let condition = |type_: &str| json!({"type": type_, "status": "True", "reason": type_, "message": "m", "lastTransitionTime": "2024-01-01T00:00:00Z"});
    let status = |conditions: Vec<serde_json::Value>| json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport", "status": {"conditions": conditions}});
    let params = PatchParams::apply("mcsd").force();
    exports
        .patch_status(
            "e",
            &params,
            &Patch::Apply(&status(vec![
                condition("Valid"),
                condition("Ready"),
                condition("Conflict"),
            ])),
        )
        .await
        .unwrap();
    // The manager stops applying `Conflict`: the item goes, keys and all, leaving no husk.
    let after = exports
        .patch_status(
            "e",
            &params,
            &Patch::Apply(&status(vec![condition("Valid"), condition("Ready")])),
        )
        .await
        .unwrap();
    let types: Vec<String> = after
        .status
        .unwrap()
        .conditions
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert_eq!(types, ["Valid", "Ready"]);
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(
        &PostParams::default(),
        &from_json(json!({"metadata": {"name": "f", "finalizers": ["example.com/hold"]}})),
    )
    .await
    .unwrap();
    cms.delete("f", &DeleteParams::default()).await.unwrap();
    let held = cms.get("f").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let s = status(
        cms.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold", "new"]}})),
        )
        .await,
    );
    assert_eq!(s.code, 422);
    cms.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(code(cms.get("f").await), 404);
}

fn owned_by(owner: &kube::core::ObjectMeta, kind: &str, api_version: &str) -> serde_json::Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": owner.name, "uid": owner.uid, "blockOwnerDeletion": true}])
}

#[tokio::test]
async fn garbage_collector_deletes_dependents_in_background_and_foreground_and_orphans_on_request() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    for (policy, dp) in [
        ("bg", DeleteParams::background()),
        ("fg", DeleteParams::foreground()),
        ("orphan", DeleteParams::orphan()),
    ] {
        let owner = cms
            .create(
                &PostParams::default(),
                &from_json(json!({"metadata": {"name": format!("owner-{policy}")}})),
            )
            .await
            .unwrap();
        let dep_name = format!("dep-{policy}");
        secrets.create(&PostParams::default(), &from_json(json!({"metadata": {"name": dep_name, "ownerReferences": owned_by(&owner.metadata, "ConfigMap", "v1")}}))).await.unwrap();
        cms.delete(&format!("owner-{policy}"), &dp).await.unwrap();
        eventually("the owner to go", || async {
            cms.get_opt(&format!("owner-{policy}"))
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
        if policy == "orphan" {
            let dep = secrets.get(&dep_name).await.unwrap();
            assert!(dep.metadata.owner_references.unwrap_or_default().is_empty());
        } else {
            eventually("the dependent to go", || async {
                secrets.get_opt(&dep_name).await.unwrap().is_none().then_some(())
            })
            .await;
        }
    }
}

#[tokio::test]
async fn foreground_deletion_waits_for_dependents() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let owner = cms
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "owner"}})),
        )
        .await
        .unwrap();
    secrets.create(&PostParams::default(), &from_json(json!({"metadata": {"name": "dep", "finalizers": ["example.com/hold"], "ownerReferences": owned_by(&owner.metadata, "ConfigMap", "v1")}}))).await.unwrap();
    cms.delete("owner", &DeleteParams::foreground()).await.unwrap();
    eventually("the dependent to be deleting", || async {
        secrets
            .get("dep")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .map(|_| ())
    })
    .await;
    let waiting = cms.get("owner").await.unwrap();
    assert!(
        waiting
            .metadata
            .finalizers
            .unwrap()
            .contains(&"foregroundDeletion".to_string())
    );
    secrets
        .patch(
            "dep",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    eventually("the owner to go", || async {
        cms.get_opt("owner").await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_contents_then_the_namespace() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    namespace(&client, "doomed").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    cms.create(
        &PostParams::default(),
        &from_json(json!({"metadata": {"name": "c"}})),
    )
    .await
    .unwrap();
    let exports: Api<ServiceExport> = Api::namespaced(client.clone(), "doomed");
    exports
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "e"}, "spec": {}})),
        )
        .await
        .unwrap();
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.delete("doomed", &DeleteParams::default()).await.unwrap();
    eventually("the namespace to go", || async {
        nss.get_opt("doomed").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(
        exports
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(cms.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn restarted_api_server_comes_back_on_the_same_port_with_the_same_data() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &from_json(json!({"metadata": {"name": "kept"}})),
    )
    .await
    .unwrap();
    let url = cluster.api_url();
    cluster.stop_api_server().await;
    assert!(
        cms.get("kept").await.is_err(),
        "a stopped API server answers nothing"
    );
    cluster.start_api_server().await.unwrap();
    assert_eq!(cluster.api_url(), url);
    let fresh = cluster.admin_client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(fresh, "default");
    assert!(cms.get("kept").await.is_ok());
}

/// A protobuf body that is not one gets kube-apiserver's 400 with what is wrong, and the server
/// keeps serving.
#[tokio::test]
async fn a_malformed_protobuf_body_gets_a_bad_request_and_the_server_keeps_serving() {
    let cluster = cluster().await;
    let client = cluster.admin_client().await.unwrap();
    let post = |body: Vec<u8>| {
        http::Request::post("/api/v1/namespaces")
            .header("content-type", "application/vnd.kubernetes.protobuf")
            .body(body)
            .unwrap()
    };
    // An envelope naming a kind nobody registered: typeMeta {apiVersion: "v1", kind: "Nope"}.
    let mut unknown_kind = b"k8s\0".to_vec();
    unknown_kind.extend([
        0x0a, 0x0a, 0x0a, 0x02, b'v', b'1', 0x12, 0x04, b'N', b'o', b'p', b'e',
    ]);
    for (body, says) in [
        (b"{\"kind\": \"Namespace\"}".to_vec(), "prefix"),
        (b"k8s\0\xff\xff\xff".to_vec(), "could not be decoded"),
        (unknown_kind, "no kind \"Nope\" is registered for version \"v1\""),
    ] {
        let s = status(client.request_text(post(body)).await);
        assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"), "{}", s.message);
        assert!(s.message.contains(says), "{}", s.message);
    }
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "still-serving"}})),
        )
        .await
        .unwrap();
}
