//! What a cluster does to Services and Pods when they are written, so that MCS is observable
//! without nodes: Service defaulting and clusterIP allocation, Pod addresses and readiness.

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, Cause};
use crate::ipam::Addresses;
use crate::meta;

/// A Service's cluster IP may not change once set.
fn cluster_ip_changed(obj: &Value, value: &Value) -> ApiError {
    invalid(
        "Service",
        obj,
        vec![Cause::invalid(
            "spec.clusterIPs[0]",
            value,
            "may not change once set",
        )],
    )
}

fn invalid(kind: &str, obj: &Value, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid("", kind, meta::meta_str(obj, "name"), causes)
}

fn family_of(s: &str) -> Option<bool> {
    s.parse::<IpAddr>().ok().map(|ip| ip.is_ipv4())
}

/// Service defaulting, validation and clusterIP allocation (create), and the immutability of
/// allocated addresses (update).
pub fn admit_service(
    addresses: &Addresses,
    old: Option<&Value>,
    obj: &mut Value,
    allocated: &mut Vec<(bool, IpAddr)>,
) -> ApiResult<()> {
    let svc_type = service_defaults(obj)?;
    if svc_type == "ExternalName" {
        return Ok(());
    }
    if let Some(old) = old {
        return keep_allocated_addresses(old, obj);
    }
    let requested_ips = requested_cluster_ips(obj);
    let headless = requested_ips.first().is_some_and(|ip| ip == "None");
    let (policy, families) = ip_families(addresses, obj, &requested_ips)?;
    let fam_names: Vec<&str> = families
        .iter()
        .map(|f| if *f { "IPv4" } else { "IPv6" })
        .collect();
    let spec = obj["spec"].as_object_mut().expect("an object");
    spec.insert("ipFamilyPolicy".into(), json!(policy));
    spec.insert("ipFamilies".into(), json!(fam_names));
    if headless {
        spec.insert("clusterIP".into(), json!("None"));
        spec.insert("clusterIPs".into(), json!(["None"]));
        return Ok(());
    }
    let ips = cluster_ips(addresses, obj, &families, &requested_ips, allocated)?;
    let spec = obj["spec"].as_object_mut().expect("an object");
    spec.insert("clusterIP".into(), json!(ips[0]));
    spec.insert("clusterIPs".into(), json!(ips));
    obj["status"] = json!({"loadBalancer": {}});
    Ok(())
}

/// A Service's type, defaults and ports, checked: its type (`ClusterIP` when unset).
fn service_defaults(obj: &mut Value) -> ApiResult<String> {
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let spec = obj["spec"].as_object_mut().expect("made an object above");
    let svc_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&svc_type.as_str()) {
        let v = json!(svc_type);
        return Err(invalid(
            "Service",
            obj,
            vec![Cause::new(
                "spec.type",
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: {v}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
                ),
            )],
        ));
    }
    spec.insert("type".into(), json!(svc_type));
    spec.entry("sessionAffinity").or_insert(json!("None"));
    if svc_type != "ExternalName" {
        spec.entry("internalTrafficPolicy").or_insert(json!("Cluster"));
    }
    let mut causes = Vec::new();
    let ports_len = spec.get("ports").and_then(Value::as_array).map_or(0, Vec::len);
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for (i, p) in ports.iter_mut().enumerate() {
            let port = p.get("port").and_then(Value::as_i64);
            match port {
                Some(n) if (1..=65535).contains(&n) => {}
                Some(n) => causes.push(Cause::invalid(
                    format!("spec.ports[{i}].port"),
                    &json!(n),
                    "must be between 1 and 65535, inclusive",
                )),
                None => causes.push(Cause::required(format!("spec.ports[{i}].port"))),
            }
            let proto = p
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP")
                .to_string();
            if !["TCP", "UDP", "SCTP"].contains(&proto.as_str()) {
                causes.push(Cause::new(
                    format!("spec.ports[{i}].protocol"),
                    "FieldValueNotSupported",
                    format!("Unsupported value: \"{proto}\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
                ));
            }
            p["protocol"] = json!(proto);
            if ports_len > 1 && p.get("name").and_then(Value::as_str).unwrap_or("").is_empty() {
                causes.push(Cause::required(format!("spec.ports[{i}].name")));
            }
            if p.get("targetPort").is_none()
                && let Some(n) = port
            {
                p["targetPort"] = json!(n);
            }
        }
    }
    if !causes.is_empty() {
        return Err(invalid("Service", obj, causes));
    }
    Ok(svc_type)
}

/// On update: the allocated addresses carry over when the update leaves them out, and never
/// change.
fn keep_allocated_addresses(old: &Value, obj: &mut Value) -> ApiResult<()> {
    let spec = obj["spec"].as_object_mut().expect("an object");
    // Allocated addresses carry over when the update leaves them out, and never change.
    let old_spec = old.get("spec").cloned().unwrap_or(json!({}));
    for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        let given = spec
            .get(k)
            .is_some_and(|v| !v.is_null() && v != "" && v != &json!([]));
        if !given && let Some(v) = old_spec.get(k) {
            spec.insert(k.into(), v.clone());
        }
    }
    let old_ip = old_spec.get("clusterIP");
    if old_ip.is_some() && spec.get("clusterIP") != old_ip {
        let v = spec.get("clusterIP").cloned().unwrap_or(Value::Null);
        return Err(cluster_ip_changed(obj, &v));
    }
    let old_ips = old_spec.get("clusterIPs");
    if let (Some(new), Some(old)) = (
        spec.get("clusterIPs").and_then(Value::as_array),
        old_ips.and_then(Value::as_array),
    ) && !new.starts_with(&old[..1.min(old.len())])
    {
        let v = json!(new);
        return Err(cluster_ip_changed(obj, &v));
    }
    Ok(())
}

/// The cluster IPs a new Service asks for (`clusterIPs`, else `clusterIP`).
fn requested_cluster_ips(obj: &Value) -> Vec<String> {
    let spec = &obj["spec"];
    match spec.get("clusterIPs").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => match spec.get("clusterIP").and_then(Value::as_str) {
            Some(ip) if !ip.is_empty() => vec![ip.to_string()],
            _ => Vec::new(),
        },
    }
}

/// A new Service's IP family policy and families (`true`: IPv4), in order, as the cluster can
/// serve them.
fn ip_families(
    addresses: &Addresses,
    obj: &Value,
    requested_ips: &[String],
) -> ApiResult<(String, Vec<bool>)> {
    let spec = &obj["spec"];
    let policy = spec
        .get("ipFamilyPolicy")
        .and_then(Value::as_str)
        .unwrap_or("SingleStack")
        .to_string();
    if !["SingleStack", "PreferDualStack", "RequireDualStack"].contains(&policy.as_str()) {
        let v = json!(policy);
        return Err(invalid(
            "Service",
            obj,
            vec![Cause::new(
                "spec.ipFamilyPolicy",
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: {v}: supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\""
                ),
            )],
        ));
    }
    let mut families: Vec<bool> = spec
        .get("ipFamilies")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(|f| f == "IPv4").collect())
        .unwrap_or_default();
    if families.is_empty() {
        families = requested_ips.iter().filter_map(|ip| family_of(ip)).collect();
    }
    if families.is_empty() {
        families.push(addresses.service_family_available(true));
    }
    if policy != "SingleStack" && families.len() == 1 {
        let other = !families[0];
        if addresses.service_family_available(other) {
            families.push(other);
        } else if policy == "RequireDualStack" {
            return Err(invalid(
                "Service",
                obj,
                vec![Cause::invalid(
                    "spec.ipFamilyPolicy",
                    &json!(policy),
                    "this cluster is not configured for dual-stack services",
                )],
            ));
        }
    }
    if policy == "SingleStack" {
        families.truncate(1);
    }
    for (i, f) in families.iter().enumerate() {
        if !addresses.service_family_available(*f) {
            let name = if *f { "IPv4" } else { "IPv6" };
            return Err(invalid(
                "Service",
                obj,
                vec![Cause::invalid(
                    format!("spec.ipFamilies[{i}]"),
                    &json!(name),
                    "not configured on this cluster",
                )],
            ));
        }
    }
    Ok((policy, families))
}

/// Allocates (or reserves, where asked for) one cluster IP per family.
fn cluster_ips(
    addresses: &Addresses,
    obj: &Value,
    families: &[bool],
    requested_ips: &[String],
    allocated: &mut Vec<(bool, IpAddr)>,
) -> ApiResult<Vec<String>> {
    let mut ips = Vec::new();
    for (i, fam) in families.iter().enumerate() {
        let ip = match requested_ips.get(i) {
            Some(s) => {
                let ip: IpAddr = s.parse().map_err(|_| {
                    invalid(
                        "Service",
                        obj,
                        vec![Cause::invalid(
                            format!("spec.clusterIPs[{i}]"),
                            &json!(s),
                            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                        )],
                    )
                })?;
                if ip.is_ipv4() != *fam {
                    return Err(invalid(
                        "Service",
                        obj,
                        vec![Cause::invalid(
                            format!("spec.clusterIPs[{i}]"),
                            &json!(s),
                            "expected an IP of the family in spec.ipFamilies",
                        )],
                    ));
                }
                addresses.reserve_service_ip(ip).map_err(|why| {
                    invalid(
                        "Service",
                        obj,
                        vec![Cause::invalid(format!("spec.clusterIPs[{i}]"), &json!(s), why)],
                    )
                })?;
                ip
            }
            None => addresses
                .allocate_service_ip(*fam)
                .ok_or_else(|| ApiError::internal("failed to allocate a serviceIP: range is full"))?,
        };
        allocated.push((true, ip));
        ips.push(ip.to_string());
    }
    Ok(ips)
}

/// Pod defaulting; on create the Pod is "scheduled" and "started": it gets addresses from the
/// cluster's pod range, phase `Running` and `Ready=True` (unless readiness gates say otherwise).
/// Later status writes (the `status` subresource) are kept as written: that is how tests flip
/// readiness.
pub fn admit_pod(
    cluster: &str,
    addresses: &Addresses,
    old: Option<&Value>,
    obj: &mut Value,
    allocated: &mut Vec<(bool, IpAddr)>,
) -> ApiResult<()> {
    let containers_ok = obj
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !containers_ok {
        return Err(invalid("Pod", obj, vec![Cause::required("spec.containers")]));
    }
    if old.is_some() {
        return Ok(());
    }
    let node = format!("{cluster}-node");
    let spec = obj["spec"].as_object_mut().expect("checked above");
    spec.entry("restartPolicy").or_insert(json!("Always"));
    spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    spec.entry("schedulerName").or_insert(json!("default-scheduler"));
    spec.entry("terminationGracePeriodSeconds").or_insert(json!(30));
    spec.entry("serviceAccountName").or_insert(json!("default"));
    spec.entry("nodeName").or_insert(json!(node));
    if let Some(cs) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        for c in cs {
            if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    if p.get("protocol").is_none() {
                        p["protocol"] = json!("TCP");
                    }
                }
            }
        }
    }
    let mut ips = Vec::new();
    for v4 in [true, false] {
        if addresses.pod_family_available(v4) {
            let ip = addresses
                .allocate_pod_ip(v4)
                .ok_or_else(|| ApiError::internal("the pod address range is full"))?;
            allocated.push((false, ip));
            ips.push(ip.to_string());
        }
    }
    let gates: Vec<String> = obj
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|g| g.get("conditionType").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let now = meta::now();
    let ready = if gates.is_empty() { "True" } else { "False" };
    let mut conditions = vec![
        json!({"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now}),
        json!({"type": "Initialized", "status": "True", "lastTransitionTime": now}),
        json!({"type": "Ready", "status": ready, "lastTransitionTime": now}),
        json!({"type": "ContainersReady", "status": "True", "lastTransitionTime": now}),
        json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": now}),
    ];
    if ready == "False" {
        conditions[2]["reason"] = json!("ReadinessGatesNotReady");
    }
    let statuses: Vec<Value> = obj
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            json!({
                "name": c.get("name").cloned().unwrap_or(json!("")),
                "image": c.get("image").cloned().unwrap_or(json!("")),
                "imageID": "",
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    obj["status"] = json!({
        "phase": "Running",
        "conditions": conditions,
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": ips.first().cloned().unwrap_or_default(),
        "podIPs": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
        "startTime": now,
        "qosClass": "BestEffort",
        "containerStatuses": statuses,
    });
    Ok(())
}

/// A Secret's `stringData`, as kube-apiserver takes it: each key, encoded, replaces the same
/// key of `data`, and `stringData` itself is never stored.
pub fn fold_string_data(obj: &mut Value) {
    use base64::Engine as _;
    let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    if !obj["data"].is_object() {
        obj["data"] = json!({});
    }
    for (key, value) in strings {
        let text = value.as_str().unwrap_or_default();
        obj["data"][key] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// EndpointSlice validation: `addressType` required, one of IPv4/IPv6/FQDN, immutable; every
/// endpoint has at least one address.
pub fn validate_endpoint_slice(old: Option<&Value>, obj: &mut Value) -> ApiResult<()> {
    let at = obj.get("addressType").cloned().unwrap_or(Value::Null);
    let mut causes = Vec::new();
    match at.as_str() {
        None => causes.push(Cause::required("addressType")),
        Some("IPv4" | "IPv6" | "FQDN") => {}
        Some(_) => causes.push(Cause::new(
            "addressType",
            "FieldValueNotSupported",
            format!("Unsupported value: {at}: supported values: \"FQDN\", \"IPv4\", \"IPv6\""),
        )),
    }
    if let Some(old) = old
        && old.get("addressType") != Some(&at)
    {
        causes.push(Cause::invalid("addressType", &at, "field is immutable"));
    }
    for (i, e) in obj
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let addresses = e.get("addresses").and_then(Value::as_array);
        if addresses.is_none_or(Vec::is_empty) {
            causes.push(Cause::required(format!("endpoints[{i}].addresses")));
        }
        for (j, address) in addresses.into_iter().flatten().enumerate() {
            let field = format!("endpoints[{i}].addresses[{j}]");
            if let Some(why) = at
                .as_str()
                .and_then(|t| special_address(t, address.as_str().unwrap_or("")))
            {
                causes.push(Cause::invalid(field, address, why));
            }
        }
    }
    if causes.is_empty() {
        // As kube-apiserver stores them: `endpoints` and `ports` have no `omitempty`, so an empty
        // or missing list is served as `null`.
        if let Some(map) = obj.as_object_mut() {
            for field in ["endpoints", "ports"] {
                if map
                    .get(field)
                    .is_none_or(|v| v.as_array().is_some_and(Vec::is_empty))
                {
                    map.insert(field.to_string(), Value::Null);
                }
            }
        }
        Ok(())
    } else {
        Err(ApiError::invalid(
            "discovery.k8s.io",
            "EndpointSlice",
            meta::meta_str(obj, "name"),
            causes,
        ))
    }
}

/// Deployments, ReplicaSets, StatefulSets and Jobs: kube-apiserver's defaults (replicas, update
/// strategies, history limits; a Job's generated selector) and the validation kubectl users meet
/// first (a selector that matches the template's labels, at least one container).
pub fn admit_workload(kind: &str, old: Option<&Value>, obj: &mut Value) -> ApiResult<()> {
    let group = if kind == "Job" { "batch" } else { "apps" };
    let invalid =
        |causes: Vec<Cause>, obj: &Value| ApiError::invalid(group, kind, meta::meta_str(obj, "name"), causes);
    if !obj.get("spec").is_some_and(Value::is_object) {
        return Err(invalid(vec![Cause::required("spec")], obj));
    }
    if obj
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        return Err(invalid(
            vec![Cause::required("spec.template.spec.containers")],
            obj,
        ));
    }
    match kind {
        "Deployment" => fill(
            &mut obj["spec"],
            &json!({
                "replicas": 1, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            }),
        ),
        "ReplicaSet" => fill(&mut obj["spec"], &json!({"replicas": 1})),
        "StatefulSet" => fill(
            &mut obj["spec"],
            &json!({
                "replicas": 1, "revisionHistoryLimit": 10, "podManagementPolicy": "OrderedReady",
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            }),
        ),
        "Job" => {
            fill(
                &mut obj["spec"],
                &json!({"completions": 1, "parallelism": 1, "backoffLimit": 6, "completionMode": "NonIndexed", "suspend": false}),
            );
            // Unless told otherwise, a Job selects its pods by its own uid, as the API server
            // generates it (on create; the uid is already set by then).
            if old.is_none() && obj.pointer("/spec/manualSelector").and_then(Value::as_bool) != Some(true) {
                let uid = meta::meta_str(obj, "uid").to_string();
                let name = meta::meta_str(obj, "name").to_string();
                obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
                fill(
                    &mut obj["spec"]["template"]["metadata"],
                    &json!({"labels": {
                        "batch.kubernetes.io/controller-uid": uid, "controller-uid": uid,
                        "batch.kubernetes.io/job-name": name, "job-name": name,
                    }}),
                );
            }
        }
        _ => {}
    }
    // The selector must select the template's pods.
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .cloned();
    let template_labels = obj
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return Err(invalid(vec![Cause::required("spec.selector")], obj));
    };
    let pod = json!({"metadata": {"labels": template_labels}});
    if !crate::select::map_selector_matches(&selector, &pod) {
        return Err(invalid(
            vec![Cause::invalid(
                "spec.template.metadata.labels",
                &pod["metadata"]["labels"],
                "`selector` does not match template `labels`",
            )],
            obj,
        ));
    }
    if let Some(old) = old
        && old.pointer("/spec/selector") != obj.pointer("/spec/selector")
        && kind != "Job"
    {
        return Err(invalid(
            vec![Cause::invalid(
                "spec.selector",
                &obj["spec"]["selector"],
                "field is immutable",
            )],
            obj,
        ));
    }
    Ok(())
}

/// Fills what `target` lacks from `defaults`, recursively through objects (a missing or `null`
/// field takes the default whole; an object present, even empty, is filled in field by field).
fn fill(target: &mut Value, defaults: &Value) {
    if target.is_null() {
        *target = defaults.clone();
    } else if let (Some(t), Some(d)) = (target.as_object_mut(), defaults.as_object()) {
        for (k, v) in d {
            fill(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// What kube-apiserver says of an endpoint address of a slice of `address_type` it refuses: not
/// an address of that family, or one no endpoint may have (unspecified, loopback, link-local,
/// link-local multicast).
fn special_address(address_type: &str, address: &str) -> Option<&'static str> {
    use std::net::IpAddr;
    let ip = match (address_type, address.parse::<IpAddr>()) {
        ("IPv4", Ok(ip @ IpAddr::V4(_))) | ("IPv6", Ok(ip @ IpAddr::V6(_))) => ip,
        ("IPv4", _) => return Some("must be a valid IPv4 address"),
        ("IPv6", _) => return Some("must be a valid IPv6 address"),
        _ => return None,
    };
    let (unspecified, loopback, link_local, link_local_multicast) = match ip {
        IpAddr::V4(v4) => (
            v4.is_unspecified(),
            v4.is_loopback(),
            v4.is_link_local(),
            v4.octets()[..3] == [224, 0, 0],
        ),
        IpAddr::V6(v6) => (
            v6.is_unspecified(),
            v6.is_loopback(),
            v6.is_unicast_link_local(),
            v6.segments()[0] & 0xff0f == 0xff02,
        ),
    };
    if unspecified {
        Some(if ip.is_ipv4() {
            "may not be unspecified (0.0.0.0)"
        } else {
            "may not be unspecified (::)"
        })
    } else if loopback {
        Some("may not be in the loopback range (127.0.0.0/8, ::1/128)")
    } else if link_local {
        Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)")
    } else if link_local_multicast {
        Some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")
    } else {
        None
    }
}
