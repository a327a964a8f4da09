//! The workload controllers kubectl and the MCS walkthroughs rely on: Deployments make a
//! ReplicaSet per pod template, ReplicaSets keep their pods, StatefulSets keep `<set>-<ordinal>`
//! pods with `hostname`/`subdomain` (the names headless MCS services answer), Jobs run their pods
//! (which, never really running, complete at once). Each writes the status `kubectl rollout
//! status`, `kubectl get` and `kubectl wait` read, and records the events a user looks for.
//!
//! Like the other controllers they are called with the changed object's key and converge it in
//! one pass: a template change rolls every pod at once (no surge, no partition).

use serde_json::{Value, json};

use crate::api::log_err;
use crate::api::{Api, Ctx, DeleteOptions};
use crate::events;
use crate::meta;
use crate::select::map_selector_matches;
use crate::store::ObjectKey;

/// The label tying a ReplicaSet and its pods to one pod template of a Deployment.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The label tying a StatefulSet's pods to a revision of its template.
const REVISION_HASH: &str = "controller-revision-hash";

fn ctx(manager: &str) -> Ctx {
    Ctx::system(manager)
}

fn apps(api: &Api, resource: &str) -> std::sync::Arc<crate::kinds::ResourceInfo> {
    api.resource("apps", resource).expect("apps kinds are built in")
}

/// A short, stable hash of a pod template, in the alphabet Kubernetes uses for generated names.
pub fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    // FNV-1a over the template's JSON.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in serde_json::to_vec(template).unwrap_or_default() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..10)
        .map(|i| ALPHABET[((h >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
}

fn generation(obj: &Value) -> i64 {
    obj.pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn controller_ref(owner: &Value, api_version: &str, kind: &str) -> Value {
    json!([{
        "apiVersion": api_version, "kind": kind,
        "name": meta::meta_str(owner, "name"), "uid": meta::meta_str(owner, "uid"),
        "controller": true, "blockOwnerDeletion": true,
    }])
}

/// The objects of `resource` (`group`) whose controller is `owner`, not being deleted.
fn owned(api: &Api, owner: &Value, group: &str, resource: &str) -> Vec<std::sync::Arc<Value>> {
    api.store()
        .dependents_of(meta::meta_str(owner, "uid"))
        .into_iter()
        .filter(|k| k.gr.group == group && k.gr.resource == resource)
        .filter_map(|k| api.store().get(&k))
        .filter(|o| !meta::is_deleting(o))
        .collect()
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// Writes `status` on `obj` when it differs from what is there.
fn write_status(api: &Api, resource: &str, obj: &Value, status: Value, manager: &str) {
    if obj.get("status") == Some(&status) {
        return;
    }
    let info = match resource {
        "jobs" => api.resource("batch", "jobs").expect("built in"),
        r => apps(api, r),
    };
    let mut new = obj.clone();
    new["status"] = status;
    let r = api.update(
        &info,
        &info.storage_version,
        meta::meta_str(obj, "namespace"),
        meta::meta_str(obj, "name"),
        new,
        Some("status"),
        &ctx(manager),
    );
    if let Err(e) = r
        && e.code != 409
        && e.code != 404
    {
        tracing::debug!(error = %e, resource, "writing a workload's status failed");
    }
}

/// A pod from `template`, owned by `owner`, in `ns`.
fn pod_from(template: &Value, ns: &str, owner_ref: Value, labels: serde_json::Map<String, Value>) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": ns}});
    if let Some(tm) = template.get("metadata").and_then(Value::as_object) {
        for (k, v) in tm {
            if k != "name" && k != "namespace" {
                pod["metadata"][k] = v.clone();
            }
        }
    }
    pod["metadata"]["labels"] = Value::Object(labels);
    pod["metadata"]["ownerReferences"] = owner_ref;
    pod["spec"] = template.get("spec").cloned().unwrap_or(json!({}));
    pod
}

fn template_labels(template: &Value) -> serde_json::Map<String, Value> {
    template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Converges Deployment `ns/name`: a ReplicaSet for its current template at its replica count,
/// the others at zero; then its status from theirs.
pub fn reconcile_deployment(api: &Api, ns: &str, name: &str) {
    let info = apps(api, "deployments");
    let Ok(d) = api.get(&info, ns, name) else { return };
    if meta::is_deleting(&d) {
        return;
    }
    let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = template_hash(&template);
    let desired = replicas(&d);
    let rs_info = apps(api, "replicasets");
    let sets = owned(api, &d, "apps", "replicasets");
    let revision = |rs: &Value| -> i64 {
        rs.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
            .and_then(Value::as_str)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    };
    let current = sets.iter().find(|rs| {
        rs.pointer(&format!("/metadata/labels/{POD_TEMPLATE_HASH}"))
            .and_then(Value::as_str)
            == Some(hash.as_str())
    });
    match current {
        None => {
            let next_revision = sets.iter().map(|rs| revision(rs)).max().unwrap_or(0) + 1;
            let mut labels = template_labels(&template);
            labels.insert(POD_TEMPLATE_HASH.into(), json!(hash));
            let mut rs_template = template.clone();
            rs_template["metadata"]["labels"] = Value::Object(labels.clone());
            let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
            selector["matchLabels"][POD_TEMPLATE_HASH] = json!(hash);
            let rs_name = format!("{name}-{hash}");
            let body = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name, "labels": labels,
                    "annotations": {"deployment.kubernetes.io/revision": next_revision.to_string(),
                                    "deployment.kubernetes.io/desired-replicas": desired.to_string()},
                    "ownerReferences": controller_ref(&d, "apps/v1", "Deployment"),
                },
                "spec": {"replicas": desired, "selector": selector, "template": rs_template},
            });
            if api
                .create(&rs_info, "v1", ns, body, &ctx("deployment-controller"))
                .is_ok()
            {
                events::record(
                    api,
                    &d,
                    "Normal",
                    "ScalingReplicaSet",
                    &format!("Scaled up replica set {rs_name} from 0 to {desired}"),
                );
            }
        }
        Some(rs) if replicas(rs) != desired => scale_replica_set(api, &d, rs, desired),
        Some(_) => {}
    }
    for old in sets.iter().filter(|rs| Some(*rs) != current) {
        if replicas(old) != 0 {
            scale_replica_set(api, &d, old, 0);
        }
    }
    // Status, from the ReplicaSets as they are now.
    let sets = owned(api, &d, "apps", "replicasets");
    let sum = |path: &str| -> i64 {
        sets.iter()
            .map(|rs| rs.pointer(path).and_then(Value::as_i64).unwrap_or(0))
            .sum()
    };
    let updated = sets
        .iter()
        .find(|rs| {
            rs.pointer(&format!("/metadata/labels/{POD_TEMPLATE_HASH}"))
                .and_then(Value::as_str)
                == Some(hash.as_str())
        })
        .and_then(|rs| rs.pointer("/status/replicas").and_then(Value::as_i64))
        .unwrap_or(0);
    let (total, ready, available) = (
        sum("/status/replicas"),
        sum("/status/readyReplicas"),
        sum("/status/availableReplicas"),
    );
    let complete = updated == desired && total == desired && available == desired;
    let old_status = d.get("status").cloned().unwrap_or(json!({}));
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let previous = old_status
            .get("conditions")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
            });
        let since = previous
            .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(meta::now()));
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": since, "lastUpdateTime": since})
    };
    let status = json!({
        "observedGeneration": generation(&d),
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (total - available).max(0),
        "conditions": [
            condition("Available", available >= desired, if available >= desired { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                      if available >= desired { "Deployment has minimum availability.".into() } else { "Deployment does not have minimum availability.".into() }),
            condition("Progressing", true, if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
                      format!("ReplicaSet \"{name}-{hash}\" {}", if complete { "has successfully progressed." } else { "is progressing." })),
        ],
    });
    write_status(
        api,
        "deployments",
        &d,
        strip_zeros(status),
        "deployment-controller",
    );
}

/// Drops the counts that are zero, as the API server's JSON omits them.
fn strip_zeros(mut status: Value) -> Value {
    if let Some(map) = status.as_object_mut() {
        map.retain(|k, v| k == "replicas" || k == "observedGeneration" || v.as_i64() != Some(0));
    }
    status
}

fn scale_replica_set(api: &Api, d: &Value, rs: &Value, to: i64) {
    let info = apps(api, "replicasets");
    let from = replicas(rs);
    let mut new = rs.clone();
    new["spec"]["replicas"] = json!(to);
    new["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] =
        json!(replicas(d).to_string());
    let name = meta::meta_str(rs, "name").to_string();
    let r = api.update(
        &info,
        "v1",
        meta::meta_str(rs, "namespace"),
        &name,
        new,
        None,
        &ctx("deployment-controller"),
    );
    if r.is_ok() {
        let direction = if to > from { "up" } else { "down" };
        events::record(
            api,
            d,
            "Normal",
            "ScalingReplicaSet",
            &format!("Scaled {direction} replica set {name} from {from} to {to}"),
        );
    }
}

/// Converges ReplicaSet `ns/name`: as many pods as it asks for, then its status; and its
/// Deployment's status with it.
pub fn reconcile_replica_set(api: &Api, ns: &str, name: &str) {
    let info = apps(api, "replicasets");
    let Ok(rs) = api.get(&info, ns, name) else { return };
    if meta::is_deleting(&rs) {
        return;
    }
    let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let desired = replicas(&rs);
    let mut pods = owned(api, &rs, "", "pods");
    let pods_info = api.core("pods");
    let mut created = 0;
    while (pods.len() as i64) < desired {
        let mut pod = pod_from(
            &template,
            ns,
            controller_ref(&rs, "apps/v1", "ReplicaSet"),
            template_labels(&template),
        );
        pod["metadata"]["generateName"] = json!(format!("{name}-"));
        match api.create(&pods_info, "v1", ns, pod, &ctx("replicaset-controller")) {
            Ok(p) => {
                events::record(
                    api,
                    &rs,
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: {}", meta::meta_str(&p, "name")),
                );
                pods.push(p);
                created += 1;
            }
            Err(e) => {
                events::record(
                    api,
                    &rs,
                    "Warning",
                    "FailedCreate",
                    &format!("Error creating: {}", e.message),
                );
                break;
            }
        }
    }
    if (pods.len() as i64) > desired {
        // The newest go first.
        pods.sort_by(|a, b| {
            meta::meta_str(b, "creationTimestamp")
                .cmp(meta::meta_str(a, "creationTimestamp"))
                .then(meta::meta_str(b, "name").cmp(meta::meta_str(a, "name")))
        });
        let extra = pods.len() - desired.max(0) as usize;
        for pod in pods.drain(..extra) {
            let pod_name = meta::meta_str(&pod, "name").to_string();
            log_err(
                "deleting a pod",
                api.delete(&pods_info, ns, &pod_name, &DeleteOptions::default()),
            );
            events::record(
                api,
                &rs,
                "Normal",
                "SuccessfulDelete",
                &format!("Deleted pod: {pod_name}"),
            );
        }
    }
    let _ = created;
    let ready = pods.iter().filter(|p| pod_ready(p)).count() as i64;
    let labelled = pods
        .iter()
        .filter(|p| {
            rs.pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object)
                .is_none_or(|sel| map_selector_matches(sel, p))
        })
        .count() as i64;
    let status = json!({
        "observedGeneration": generation(&rs),
        "replicas": pods.len(),
        "fullyLabeledReplicas": labelled,
        "readyReplicas": ready,
        "availableReplicas": ready,
    });
    write_status(
        api,
        "replicasets",
        &rs,
        strip_zeros(status),
        "replicaset-controller",
    );
    if let Some(owner) = controller_of(api, &rs, "Deployment") {
        reconcile_deployment(api, ns, &owner);
    }
}

/// The name of `obj`'s controller, if it is a `kind`.
fn controller_of(api: &Api, obj: &Value, kind: &str) -> Option<String> {
    let refs = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?;
    let owner = refs.iter().find(|r| {
        r.get("controller").and_then(Value::as_bool) == Some(true)
            && r.get("kind").and_then(Value::as_str) == Some(kind)
    })?;
    let uid = owner.get("uid").and_then(Value::as_str)?;
    api.store().key_of_uid(uid).map(|k| k.name)
}

/// Converges StatefulSet `ns/name`: pods `<name>-0` … `<name>-(replicas-1)` of its current
/// template, each with `hostname` its own name and `subdomain` the set's `serviceName`; pods of
/// an older template are replaced; then its status.
pub fn reconcile_stateful_set(api: &Api, ns: &str, name: &str) {
    let info = apps(api, "statefulsets");
    let Ok(set) = api.get(&info, ns, name) else { return };
    if meta::is_deleting(&set) {
        return;
    }
    let template = set.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let revision = format!("{name}-{}", template_hash(&template));
    let desired = replicas(&set).max(0);
    let service = set
        .pointer("/spec/serviceName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let pods_info = api.core("pods");
    let pods = owned(api, &set, "", "pods");
    let ordinal = |p: &Value| -> Option<i64> {
        meta::meta_str(p, "name")
            .strip_prefix(&format!("{name}-"))?
            .parse()
            .ok()
    };
    for pod in &pods {
        let stale = pod
            .pointer(&format!("/metadata/labels/{REVISION_HASH}"))
            .and_then(Value::as_str)
            != Some(revision.as_str());
        if ordinal(pod).is_none_or(|o| o >= desired) || stale {
            let pod_name = meta::meta_str(pod, "name").to_string();
            log_err(
                "deleting a pod",
                api.delete(&pods_info, ns, &pod_name, &DeleteOptions::default()),
            );
            events::record(
                api,
                &set,
                "Normal",
                "SuccessfulDelete",
                &format!("delete Pod {pod_name} in StatefulSet {name} successful"),
            );
        }
    }
    for i in 0..desired {
        let pod_name = format!("{name}-{i}");
        if api
            .store()
            .get(&ObjectKey {
                gr: pods_info.gr(),
                namespace: ns.to_string(),
                name: pod_name.clone(),
            })
            .is_some()
        {
            continue;
        }
        let mut labels = template_labels(&template);
        labels.insert("statefulset.kubernetes.io/pod-name".into(), json!(pod_name));
        labels.insert("apps.kubernetes.io/pod-index".into(), json!(i.to_string()));
        labels.insert(REVISION_HASH.into(), json!(revision));
        let mut pod = pod_from(
            &template,
            ns,
            controller_ref(&set, "apps/v1", "StatefulSet"),
            labels,
        );
        pod["metadata"]["name"] = json!(pod_name);
        pod["spec"]["hostname"] = json!(pod_name);
        if !service.is_empty() {
            pod["spec"]["subdomain"] = json!(service);
        }
        match api.create(&pods_info, "v1", ns, pod, &ctx("statefulset-controller")) {
            Ok(_) => events::record(
                api,
                &set,
                "Normal",
                "SuccessfulCreate",
                &format!("create Pod {pod_name} in StatefulSet {name} successful"),
            ),
            Err(e) if e.code == 409 => {}
            Err(e) => events::record(
                api,
                &set,
                "Warning",
                "FailedCreate",
                &format!(
                    "create Pod {pod_name} in StatefulSet {name} failed error: {}",
                    e.message
                ),
            ),
        }
    }
    let pods = owned(api, &set, "", "pods");
    let current = pods
        .iter()
        .filter(|p| {
            p.pointer(&format!("/metadata/labels/{REVISION_HASH}"))
                .and_then(Value::as_str)
                == Some(revision.as_str())
        })
        .count() as i64;
    let ready = pods.iter().filter(|p| pod_ready(p)).count() as i64;
    let status = json!({
        "observedGeneration": generation(&set),
        "replicas": pods.len(),
        "readyReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": current,
        "availableReplicas": ready,
        "currentRevision": revision,
        "updateRevision": revision,
        "collisionCount": 0,
    });
    write_status(
        api,
        "statefulsets",
        &set,
        strip_zeros(status),
        "statefulset-controller",
    );
}

/// Converges Job `ns/name`: its pods (`completions`, default 1) are made and, as sandbox pods
/// never really run, succeed at once; the Job then completes.
pub fn reconcile_job(api: &Api, ns: &str, name: &str) {
    let Some(info) = api.resource("batch", "jobs") else {
        return;
    };
    let Ok(job) = api.get(&info, ns, name) else { return };
    if meta::is_deleting(&job) || job.pointer("/status/completionTime").is_some() {
        return;
    }
    let completions = job
        .pointer("/spec/completions")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let pods_info = api.core("pods");
    let mut pods = owned(api, &job, "", "pods");
    while (pods.len() as i64) < completions {
        let mut labels = template_labels(&template);
        labels.insert("batch.kubernetes.io/job-name".into(), json!(name));
        labels.insert("job-name".into(), json!(name));
        labels.insert(
            "batch.kubernetes.io/controller-uid".into(),
            json!(meta::meta_str(&job, "uid")),
        );
        let mut pod = pod_from(&template, ns, controller_ref(&job, "batch/v1", "Job"), labels);
        pod["metadata"]["generateName"] = json!(format!("{name}-"));
        match api.create(&pods_info, "v1", ns, pod, &ctx("job-controller")) {
            Ok(p) => {
                events::record(
                    api,
                    &job,
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: {}", meta::meta_str(&p, "name")),
                );
                pods.push(p);
            }
            Err(_) => return,
        }
    }
    // The pods finish: phase Succeeded, not ready.
    for pod in &pods {
        if pod.pointer("/status/phase").and_then(Value::as_str) == Some("Succeeded") {
            continue;
        }
        let mut done = (**pod).clone();
        done["status"]["phase"] = json!("Succeeded");
        done["status"]["conditions"] = json!([{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": meta::now()}]);
        log_err(
            "completing a job's pod",
            api.update(
                &pods_info,
                "v1",
                ns,
                meta::meta_str(pod, "name"),
                done,
                Some("status"),
                &ctx("kubelet"),
            ),
        );
    }
    let now = meta::now();
    let status = json!({
        "startTime": job.pointer("/status/startTime").cloned().unwrap_or(json!(now)),
        "completionTime": now,
        "succeeded": completions,
        "ready": 0,
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
        ],
    });
    write_status(api, "jobs", &job, status, "job-controller");
    events::record(api, &job, "Normal", "Completed", "Job completed");
}

/// A pod changed: the workload that controls it converges (replaces a deleted pod, counts a
/// ready one).
pub fn pod_changed(api: &Api, pod: &Value) {
    let ns = meta::meta_str(pod, "namespace");
    for (kind, reconcile) in [
        ("ReplicaSet", reconcile_replica_set as fn(&Api, &str, &str)),
        ("StatefulSet", reconcile_stateful_set),
    ] {
        if let Some(owner) = controller_of(api, pod, kind) {
            reconcile(api, ns, &owner);
        }
    }
}
