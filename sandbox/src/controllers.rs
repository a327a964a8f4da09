//! The controllers a cluster runs that MCS needs: the EndpointSlice controller, the garbage
//! collector (ownerReferences, foreground and orphan deletion), the namespace controller
//! (deleting a namespace deletes its contents, then the namespace) and the ServiceAccount
//! controller (a `default` ServiceAccount in every namespace).
//!
//! They follow the store's event log like a watch and write through [`Api`], so their writes are
//! ordinary, validated, versioned writes with events.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::api::{Api, Ctx, DeleteOptions, Propagation, log_err};
use crate::kinds::ResourceInfo;
use crate::meta;
use crate::select::map_selector_matches;
use crate::store::{Event, EventType, GroupResource, ObjectKey};
use crate::workloads;

/// `endpointslice.kubernetes.io/managed-by` of the slices this controller owns.
pub const ENDPOINTSLICE_MANAGER: &str = "endpointslice-controller.k8s.io";

/// Runs every controller until `shutdown`.
pub async fn run(api: Arc<Api>, shutdown: CancellationToken) {
    let mut head = api.store().subscribe();
    let mut last = api.store().head();
    resync(&api);
    loop {
        head.borrow_and_update();
        match api.store().events_since(last) {
            Ok((events, now)) => {
                for ev in &events {
                    handle(&api, ev);
                }
                last = now;
            }
            Err(_) => {
                warn!("controllers fell behind the event log; resyncing");
                last = api.store().head();
                resync(&api);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = head.changed() => if changed.is_err() { return },
        }
    }
}

fn ctx(manager: &str) -> Ctx {
    Ctx::system(manager)
}

fn info(api: &Api, gr: &GroupResource) -> Option<Arc<ResourceInfo>> {
    api.resource(&gr.group, &gr.resource)
}

/// The garbage collector's write of `new` over the object at `key` (stored version), logged when
/// it fails for a reason other than the object having gone or changed meanwhile.
fn gc_update(api: &Api, info: &ResourceInfo, key: &ObjectKey, new: Value, what: &str) {
    log_err(
        what,
        api.update(
            info,
            &info.storage_version,
            &key.namespace,
            &key.name,
            new,
            None,
            &ctx("garbage-collector"),
        ),
    );
}

fn handle(api: &Api, ev: &Event) {
    let gr = &ev.key.gr;
    let obj = &ev.object;
    // Garbage collection and the owners waiting for it.
    if ev.kind == EventType::Deleted {
        let uid = meta::meta_str(obj, "uid");
        if !uid.is_empty() {
            collect_dependents(api, uid);
        }
        for owner in meta::owner_uids(obj) {
            if let Some(key) = api.store().key_of_uid(&owner) {
                finish_owner(api, &key);
            }
        }
        if !ev.key.namespace.is_empty() {
            clean_namespace(api, &ev.key.namespace);
        }
    } else if meta::is_deleting(obj) {
        finish_owner(api, &ev.key);
    }
    if gr.group.is_empty() {
        match gr.resource.as_str() {
            "namespaces" => {
                if meta::is_deleting(obj) {
                    clean_namespace(api, &ev.key.name);
                } else if ev.kind == EventType::Added {
                    ensure_default_service_account(api, &ev.key.name);
                }
            }
            "services" => reconcile_service(api, &ev.key.namespace, &ev.key.name),
            "pods" => {
                let (services, _) = api.list(&api.core("services"), Some(&ev.key.namespace));
                for svc in services {
                    let Some(sel) = svc.pointer("/spec/selector").and_then(Value::as_object) else {
                        continue;
                    };
                    if sel.is_empty() {
                        continue;
                    }
                    let old_match = ev.old.as_ref().is_some_and(|o| map_selector_matches(sel, o));
                    if old_match || map_selector_matches(sel, obj) {
                        reconcile_service(api, &ev.key.namespace, meta::meta_str(&svc, "name"));
                    }
                }
            }
            _ => {}
        }
    }
    if ev.kind != EventType::Deleted || gr.resource == "pods" {
        match (gr.group.as_str(), gr.resource.as_str()) {
            ("apps", "deployments") => workloads::reconcile_deployment(api, &ev.key.namespace, &ev.key.name),
            ("apps", "replicasets") => workloads::reconcile_replica_set(api, &ev.key.namespace, &ev.key.name),
            ("apps", "statefulsets") => {
                workloads::reconcile_stateful_set(api, &ev.key.namespace, &ev.key.name)
            }
            ("batch", "jobs") => workloads::reconcile_job(api, &ev.key.namespace, &ev.key.name),
            ("", "pods") => {
                if ev.kind == EventType::Added {
                    let node = obj
                        .pointer("/spec/nodeName")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let message = format!(
                        "Successfully assigned {}/{} to {node}",
                        ev.key.namespace, ev.key.name
                    );
                    crate::events::record(api, obj, "Normal", "Scheduled", &message);
                }
                workloads::pod_changed(api, obj);
            }
            _ => {}
        }
    }
    if gr.group == "discovery.k8s.io"
        && gr.resource == "endpointslices"
        && let Some(svc) = obj
            .pointer("/metadata/labels/kubernetes.io~1service-name")
            .and_then(Value::as_str)
        && obj
            .pointer("/metadata/labels/endpointslice.kubernetes.io~1managed-by")
            .and_then(Value::as_str)
            == Some(ENDPOINTSLICE_MANAGER)
    {
        reconcile_service(api, &ev.key.namespace, svc);
    }
}

fn resync(api: &Api) {
    let (namespaces, _) = api.list(&api.core("namespaces"), None);
    for ns in &namespaces {
        let name = meta::meta_str(ns, "name");
        ensure_default_service_account(api, name);
        if meta::is_deleting(ns) {
            clean_namespace(api, name);
        }
    }
    let (services, _) = api.list(&api.core("services"), None);
    for svc in &services {
        reconcile_service(api, meta::meta_str(svc, "namespace"), meta::meta_str(svc, "name"));
    }
    for (group, resource, reconcile) in [
        (
            "apps",
            "deployments",
            workloads::reconcile_deployment as fn(&Api, &str, &str),
        ),
        ("apps", "replicasets", workloads::reconcile_replica_set),
        ("apps", "statefulsets", workloads::reconcile_stateful_set),
        ("batch", "jobs", workloads::reconcile_job),
    ] {
        let Some(info) = api.resource(group, resource) else {
            continue;
        };
        for obj in api.list(&info, None).0 {
            reconcile(
                api,
                meta::meta_str(&obj, "namespace"),
                meta::meta_str(&obj, "name"),
            );
        }
    }
    for info in api.registry().all() {
        let (items, _) = api.list(info, None);
        for item in items {
            let key = ObjectKey {
                gr: info.gr(),
                namespace: meta::meta_str(&item, "namespace").to_string(),
                name: meta::meta_str(&item, "name").to_string(),
            };
            if meta::is_deleting(&item) {
                finish_owner(api, &key);
            }
            for owner in meta::owner_uids(&item) {
                if api.store().key_of_uid(&owner).is_none() {
                    collect_dependents(api, &owner);
                }
            }
        }
    }
}

fn ensure_default_service_account(api: &Api, ns: &str) {
    let sa = api.core("serviceaccounts");
    if api.get(&sa, ns, "default").is_err() {
        let body = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
        let r = api.create(&sa, "v1", ns, body, &ctx("service-account-controller"));
        if let Err(e) = r
            && e.code != 409
            && e.code != 403
            && e.code != 404
        {
            debug!(error = %e, "creating the default ServiceAccount failed");
        }
    }
}

/// The owner (deleted, with uid `uid`) is gone: delete its dependents that have no other owner,
/// and drop the reference from those that do.
fn collect_dependents(api: &Api, uid: &str) {
    for key in api.store().dependents_of(uid) {
        let Some(info) = info(api, &key.gr) else { continue };
        let Some(dep) = api.store().get(&key) else {
            continue;
        };
        let refs = dep
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let others_alive = refs.iter().any(|r| {
            let u = r.get("uid").and_then(Value::as_str).unwrap_or("");
            u != uid && api.store().key_of_uid(u).is_some()
        });
        if others_alive {
            let kept: Vec<Value> = refs
                .into_iter()
                .filter(|r| r.get("uid").and_then(Value::as_str) != Some(uid))
                .collect();
            let mut new = (*dep).clone();
            new["metadata"]["ownerReferences"] = json!(kept);
            gc_update(api, &info, &key, new, "dropping a dangling owner reference");
        } else if !meta::is_deleting(&dep) {
            log_err(
                "deleting a dependent",
                api.delete(&info, &key.namespace, &key.name, &DeleteOptions::default()),
            );
        }
    }
}

/// An owner being deleted with `foregroundDeletion` or `orphan`: do what the finalizer asks,
/// then remove it.
fn finish_owner(api: &Api, key: &ObjectKey) {
    let Some(info) = info(api, &key.gr) else { return };
    let Some(owner) = api.store().get(key) else { return };
    if !meta::is_deleting(&owner) {
        return;
    }
    let finalizers = meta::finalizers(&owner);
    let uid = meta::meta_str(&owner, "uid").to_string();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    if finalizers.iter().any(|f| f == "orphan") {
        for dep_key in api.store().dependents_of(&uid) {
            let Some(dep_info) = self::info(api, &dep_key.gr) else {
                continue;
            };
            let Some(dep) = api.store().get(&dep_key) else {
                continue;
            };
            let mut new = (*dep).clone();
            let kept: Vec<Value> = dep
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()))
                .cloned()
                .collect();
            new["metadata"]["ownerReferences"] = json!(kept);
            gc_update(api, &dep_info, &dep_key, new, "orphaning a dependent");
        }
        if api.store().dependents_of(&uid).is_empty() {
            done.insert("orphan");
        }
    }
    if finalizers.iter().any(|f| f == "foregroundDeletion") {
        let deps = api.store().dependents_of(&uid);
        for dep_key in &deps {
            let Some(dep_info) = self::info(api, &dep_key.gr) else {
                continue;
            };
            if api.store().get(dep_key).is_some_and(|d| !meta::is_deleting(&d)) {
                let opts = DeleteOptions {
                    propagation: Propagation::Foreground,
                    ..Default::default()
                };
                log_err(
                    "deleting a dependent in the foreground",
                    api.delete(&dep_info, &dep_key.namespace, &dep_key.name, &opts),
                );
            }
        }
        if api.store().dependents_of(&uid).is_empty() {
            done.insert("foregroundDeletion");
        }
    }
    if done.is_empty() {
        return;
    }
    let Some(current) = api.store().get(key) else {
        return;
    };
    let mut new = (*current).clone();
    let kept: Vec<String> = meta::finalizers(&current)
        .into_iter()
        .filter(|f| !done.contains(f.as_str()))
        .collect();
    new["metadata"]["finalizers"] = json!(kept);
    gc_update(api, &info, key, new, "removing a garbage collector finalizer");
}

/// A namespace being deleted: delete everything in it; once it is empty, remove the `kubernetes`
/// finalizer so the namespace goes.
fn clean_namespace(api: &Api, ns: &str) {
    let ns_info = api.core("namespaces");
    let Ok(namespace) = api.get(&ns_info, "", ns) else {
        return;
    };
    if !meta::is_deleting(&namespace) {
        return;
    }
    let keys = api.store().keys_in_namespace(ns);
    for key in &keys {
        let Some(info) = info(api, &key.gr) else { continue };
        if api.store().get(key).is_some_and(|o| !meta::is_deleting(&o)) {
            log_err(
                "deleting namespace content",
                api.delete(&info, &key.namespace, &key.name, &DeleteOptions::default()),
            );
        }
    }
    if !api.store().keys_in_namespace(ns).is_empty() {
        return;
    }
    let Ok(current) = api.get(&ns_info, "", ns) else {
        return;
    };
    let has = current
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|f| f == "kubernetes"));
    if has {
        let mut new = (*current).clone();
        new["spec"]["finalizers"] = json!([]);
        log_err(
            "finalizing a namespace",
            api.update(&ns_info, "v1", "", ns, new, None, &ctx("namespace-controller")),
        );
    }
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c.get("type") == Some(&json!("Ready")) && c.get("status") == Some(&json!("True")))
}

fn resolve_port(target: &Value, pods: &[Arc<Value>]) -> Option<i64> {
    if let Some(n) = target.as_i64() {
        return Some(n);
    }
    let name = target.as_str()?;
    if let Ok(n) = name.parse::<i64>() {
        return Some(n);
    }
    pods.iter().find_map(|pod| {
        pod.pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| c.get("ports").and_then(Value::as_array).into_iter().flatten())
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|p| p.get("containerPort").and_then(Value::as_i64))
    })
}

/// Builds the EndpointSlices of one Service (one per address family), as the built-in
/// controller does.
pub fn reconcile_service(api: &Api, ns: &str, name: &str) {
    let slices_info = api
        .resource("discovery.k8s.io", "endpointslices")
        .expect("endpointslices are built in");
    let svc = api.get(&api.core("services"), ns, name).ok();
    let ours = slices_of(api, &slices_info, ns, name, svc.as_ref());
    let selector = svc
        .as_ref()
        .and_then(|s| s.pointer("/spec/selector"))
        .and_then(Value::as_object)
        .filter(|s| !s.is_empty())
        .cloned();
    let (Some(svc), Some(selector)) = (svc, selector) else {
        for s in ours {
            log_err(
                "deleting an EndpointSlice",
                api.delete(
                    &slices_info,
                    ns,
                    meta::meta_str(&s, "name"),
                    &DeleteOptions::default(),
                ),
            );
        }
        return;
    };
    if meta::is_deleting(&svc) {
        return;
    }
    let pods = selected_pods(api, ns, &selector);
    let headless = svc.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    let families: Vec<String> = svc
        .pointer("/spec/ipFamilies")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
        .filter(|f: &Vec<String>| !f.is_empty())
        .unwrap_or_else(|| vec!["IPv4".into()]);
    let ports = slice_ports(&svc, &pods);
    let mut labels = meta::labels(&svc).cloned().unwrap_or_default();
    labels.insert("kubernetes.io/service-name".into(), json!(name));
    labels.insert(
        "endpointslice.kubernetes.io/managed-by".into(),
        json!(ENDPOINTSLICE_MANAGER),
    );
    if headless {
        labels.insert("service.kubernetes.io/headless".into(), json!(""));
    }
    let owner = json!([{
        "apiVersion": "v1", "kind": "Service", "name": name,
        "uid": meta::meta_str(&svc, "uid"), "controller": true, "blockOwnerDeletion": true,
    }]);
    let c = ctx(ENDPOINTSLICE_MANAGER);
    for family in &families {
        let endpoints = family_endpoints(&pods, ns, name, family == "IPv4");
        let existing = ours
            .iter()
            .find(|s| s.get("addressType").and_then(Value::as_str) == Some(family.as_str()));
        match existing {
            Some(s) => {
                let mut new = (**s).clone();
                new["endpoints"] = json!(endpoints);
                new["ports"] = json!(ports);
                new["metadata"]["labels"] = Value::Object(labels.clone());
                new["metadata"]["ownerReferences"] = owner.clone();
                log_err(
                    "updating an EndpointSlice",
                    api.update(&slices_info, "v1", ns, meta::meta_str(s, "name"), new, None, &c),
                );
            }
            None => {
                let body = json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"generateName": format!("{name}-"), "labels": labels, "ownerReferences": owner},
                    "addressType": family, "endpoints": endpoints, "ports": ports,
                });
                log_err(
                    "creating an EndpointSlice",
                    api.create(&slices_info, "v1", ns, body, &c),
                );
            }
        }
    }
    for s in ours.iter().filter(|s| {
        !families
            .iter()
            .any(|f| s.get("addressType").and_then(Value::as_str) == Some(f.as_str()))
    }) {
        log_err(
            "deleting an EndpointSlice of a family the Service dropped",
            api.delete(
                &slices_info,
                ns,
                meta::meta_str(s, "name"),
                &DeleteOptions::default(),
            ),
        );
    }
}

/// The slices this controller made for the Service `ns/name` (`svc`, if it still exists).
fn slices_of(
    api: &Api,
    slices_info: &ResourceInfo,
    ns: &str,
    name: &str,
    svc: Option<&Arc<Value>>,
) -> Vec<Arc<Value>> {
    let is_ours = |s: &Value| {
        let l = meta::labels(s);
        let get = |k: &str| l.and_then(|l| l.get(k)).and_then(Value::as_str);
        get("kubernetes.io/service-name") == Some(name)
            && get("endpointslice.kubernetes.io/managed-by") == Some(ENDPOINTSLICE_MANAGER)
    };
    match svc {
        // Every slice this controller makes names its Service as owner: the store's owner index
        // finds them without a scan of the namespace (which would make each Service event cost
        // as much as every slice beside it).
        Some(svc) => {
            let gr = slices_info.gr();
            api.store()
                .dependents_of(meta::meta_str(svc, "uid"))
                .into_iter()
                .filter(|k| k.gr == gr && k.namespace == ns)
                .filter_map(|k| api.store().get(&k))
                .filter(|s| is_ours(s))
                .collect()
        }
        // The Service is gone (its slices normally went with it, by garbage collection).
        None => {
            let (all_slices, _) = api.list(slices_info, Some(ns));
            all_slices.into_iter().filter(|s| is_ours(s)).collect()
        }
    }
}

/// The pods `selector` selects in `ns` that have not finished.
fn selected_pods(api: &Api, ns: &str, selector: &serde_json::Map<String, Value>) -> Vec<Arc<Value>> {
    let (pods, _) = api.list(&api.core("pods"), Some(ns));
    pods.into_iter()
        .filter(|p| map_selector_matches(selector, p))
        .filter(|p| {
            !matches!(
                p.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            )
        })
        .collect()
}

/// The slice ports of a Service: its ports with their target ports resolved against `pods`.
fn slice_ports(svc: &Value, pods: &[Arc<Value>]) -> Vec<Value> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let target = p.get("targetPort").or_else(|| p.get("port"))?;
            let port = resolve_port(target, pods)?;
            let mut out = json!({
                "name": p.get("name").and_then(Value::as_str).unwrap_or(""),
                "protocol": p.get("protocol").and_then(Value::as_str).unwrap_or("TCP"),
                "port": port,
            });
            if let Some(ap) = p.get("appProtocol") {
                out["appProtocol"] = ap.clone();
            }
            Some(out)
        })
        .collect()
}

/// One endpoint per pod with an address of the family (`v4`: IPv4) for the Service `ns/name`.
fn family_endpoints(pods: &[Arc<Value>], ns: &str, name: &str, v4: bool) -> Vec<Value> {
    pods
        .iter()
        .filter_map(|pod| {
            let ip = pod
                .pointer("/status/podIPs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|i| i.get("ip").and_then(Value::as_str))
                .find(|ip| ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_ipv4() == v4))?;
            let terminating = meta::is_deleting(pod);
            let serving = pod_ready(pod);
            let mut ep = json!({
                "addresses": [ip],
                "conditions": {"ready": serving && !terminating, "serving": serving, "terminating": terminating},
                "targetRef": {"kind": "Pod", "namespace": ns, "name": meta::meta_str(pod, "name"), "uid": meta::meta_str(pod, "uid")},
            });
            if let Some(node) = pod.pointer("/spec/nodeName") {
                ep["nodeName"] = node.clone();
            }
            let hostname = pod.pointer("/spec/hostname").and_then(Value::as_str);
            let subdomain = pod.pointer("/spec/subdomain").and_then(Value::as_str);
            if let (Some(h), Some(sub)) = (hostname, subdomain)
                && sub == name
                && !h.is_empty()
            {
                ep["hostname"] = json!(h);
            }
            Some(ep)
        })
        .collect()
}
