//! Our ServiceExport and ServiceImport CRDs against upstream's (`sigs.k8s.io/mcs-api`, at the
//! release `names::MCS_RELEASE_VERSION` names), field by field: every served version's schema,
//! names, scope and printer columns. What differs must be exactly the extensions `docs/crds.md`
//! lists, so a new drift fails here, and so does an extension that is gone but still documented.
//!
//! Upstream's CRDs come from the Go module proxy (`go mod download`), never from the repository:
//! the test needs Go, so it is ignored by `cargo test` and run by `tests/kube/test.sh`.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use mcsd_crds::{generate::crds, names};
use serde_json::Value;

/// The differences `docs/crds.md` documents, as `<kind> <path> <what>` (what this walk reports).
const EXTENSIONS: &[&str] = &[
    // `kubectl get multicluster` lists both kinds.
    "ServiceExport spec.names categories: ours only",
    "ServiceImport spec.names categories: ours only",
    // `kubectl get serviceexports` shows the conditions; `-o wide` the conflict's reason.
    "ServiceExport v1alpha1 additionalPrinterColumns: differ",
    "ServiceExport v1beta1 additionalPrinterColumns: differ",
    "ServiceImport v1alpha1 additionalPrinterColumns: differ",
    "ServiceImport v1beta1 additionalPrinterColumns: differ",
    // A bare `kubectl apply` of a ServiceExport gets `spec: {}`.
    "ServiceExport v1alpha1 .spec default: ours only",
    "ServiceExport v1beta1 .spec default: ours only",
    // A ServiceImport must have a spec; a missing `ports` is defaulted to `[]` rather than refused.
    "ServiceImport v1alpha1 . required: ours only",
    "ServiceImport v1beta1 . required: ours only",
    "ServiceImport v1alpha1 .spec required: differ",
    "ServiceImport v1beta1 .spec required: differ",
    "ServiceImport v1alpha1 .spec.ports default: ours only",
    "ServiceImport v1beta1 .spec.ports default: ours only",
    // The fields a Service validates, validated as a Service does.
    "ServiceImport v1alpha1 .spec.ports x-kubernetes-list-type: differ",
    "ServiceImport v1beta1 .spec.ports x-kubernetes-list-type: differ",
    "ServiceImport v1alpha1 .spec.ports x-kubernetes-list-map-keys: ours only",
    "ServiceImport v1beta1 .spec.ports x-kubernetes-list-map-keys: ours only",
    "ServiceImport v1alpha1 .spec.ports[].port maximum: ours only",
    "ServiceImport v1beta1 .spec.ports[].port maximum: ours only",
    "ServiceImport v1alpha1 .spec.ports[].port minimum: ours only",
    "ServiceImport v1beta1 .spec.ports[].port minimum: ours only",
    "ServiceImport v1alpha1 .spec.ports[].protocol default: ours only",
    "ServiceImport v1beta1 .spec.ports[].protocol default: ours only",
    "ServiceImport v1alpha1 .spec.ports[].protocol enum: ours only",
    "ServiceImport v1beta1 .spec.ports[].protocol enum: ours only",
    "ServiceImport v1alpha1 .spec.ips x-kubernetes-list-type: ours only",
    "ServiceImport v1beta1 .spec.ips x-kubernetes-list-type: ours only",
    "ServiceImport v1alpha1 .spec.ipFamilies x-kubernetes-list-type: ours only",
    "ServiceImport v1beta1 .spec.ipFamilies x-kubernetes-list-type: ours only",
    "ServiceImport v1alpha1 .spec.ipFamilies[] enum: ours only",
    "ServiceImport v1beta1 .spec.ipFamilies[] enum: ours only",
    "ServiceImport v1alpha1 .spec.sessionAffinity enum: ours only",
    "ServiceImport v1beta1 .spec.sessionAffinity enum: ours only",
    "ServiceImport v1alpha1 .spec.internalTrafficPolicy enum: ours only",
    "ServiceImport v1beta1 .spec.internalTrafficPolicy enum: ours only",
];

/// Upstream's module directory, downloaded through the Go module proxy.
fn upstream_module() -> PathBuf {
    let module = format!("sigs.k8s.io/mcs-api@{}", names::MCS_RELEASE_VERSION);
    let out = Command::new("go")
        .args(["mod", "download", "-json", &module])
        .output()
        .unwrap_or_else(|e| panic!("`go mod download {module}` did not run (is Go on PATH?): {e}"));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "`go mod download -json {module}` printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && info["Error"].is_null(),
        "`go mod download {module}` failed: {}",
        info["Error"]
    );
    PathBuf::from(info["Dir"].as_str().expect("the module's directory"))
}

/// Compares `ours` with `theirs` (two schemas, or parts of a CRD), adding each difference to `out`.
/// Descriptions are prose and not compared.
fn compare(at: &str, ours: &Value, theirs: &Value, out: &mut BTreeSet<String>) {
    let (Value::Object(o), Value::Object(t)) = (ours, theirs) else {
        if ours != theirs {
            out.insert(format!("{at}: differ"));
        }
        return;
    };
    let keys: BTreeSet<&String> = o.keys().chain(t.keys()).collect();
    for key in keys {
        if key == "description" {
            continue;
        }
        match (o.get(key), t.get(key)) {
            (Some(_), None) => {
                out.insert(format!("{at} {key}: ours only"));
            }
            (None, Some(_)) => {
                out.insert(format!("{at} {key}: upstream only"));
            }
            (Some(a), Some(b)) if key == "properties" => {
                let (a, b) = (a.as_object().unwrap(), b.as_object().unwrap());
                let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for name in names {
                    let path = format!("{}.{name}", at.trim_end_matches('.'));
                    match (a.get(name), b.get(name)) {
                        (Some(x), Some(y)) => compare(&path, x, y, out),
                        (Some(_), None) => {
                            out.insert(format!("{path}: field ours only"));
                        }
                        _ => {
                            out.insert(format!("{path}: field upstream only"));
                        }
                    }
                }
            }
            (Some(a), Some(b)) if key == "items" => compare(&format!("{at}[]"), a, b, out),
            // controller-gen writes `minimum: 0`, Rust's f64 `0.0`: one number.
            (Some(Value::Number(a)), Some(Value::Number(b))) if a.as_f64() == b.as_f64() => {}
            (Some(a), Some(b)) if a != b => {
                out.insert(format!("{at} {key}: differ"));
            }
            _ => {}
        }
    }
}

#[test]
#[ignore = "needs Go and the module proxy for upstream's CRDs: tests/kube/test.sh runs it"]
fn our_mcs_crds_match_upstreams_release_but_for_the_documented_extensions() {
    let dir = upstream_module().join("config/crd");
    let mut differences = BTreeSet::new();
    let mut compared = 0;
    for generated in crds().unwrap() {
        if generated.crd.spec.group != names::MCS_GROUP {
            continue;
        }
        let kind = generated.crd.spec.names.kind.clone();
        let path = dir.join(&generated.file_name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("upstream has no {}: {e}", path.display()));
        let theirs: Value = serde_yaml::from_str(&text).unwrap();
        let ours = serde_json::to_value(&generated.crd).unwrap();
        let mut found = BTreeSet::new();
        compare("metadata", &ours["metadata"], &theirs["metadata"], &mut found);
        for key in ["group", "scope"] {
            compare(
                &format!("spec.{key}"),
                &ours["spec"][key],
                &theirs["spec"][key],
                &mut found,
            );
        }
        compare(
            "spec.names",
            &ours["spec"]["names"],
            &theirs["spec"]["names"],
            &mut found,
        );
        let versions = |crd: &Value| -> Vec<(String, Value)> {
            let mut v: Vec<(String, Value)> = crd["spec"]["versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| (v["name"].as_str().unwrap().to_string(), v.clone()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let (mine, upstream) = (versions(&ours), versions(&theirs));
        assert_eq!(
            mine.iter().map(|v| &v.0).collect::<Vec<_>>(),
            upstream.iter().map(|v| &v.0).collect::<Vec<_>>(),
            "{kind}: the served versions differ from upstream's"
        );
        for ((name, a), (_, b)) in mine.iter().zip(&upstream) {
            for key in ["served", "storage", "subresources", "additionalPrinterColumns"] {
                if a[key] != b[key] {
                    found.insert(format!("{name} {key}: differ"));
                }
            }
            compare(
                &format!("{name} ."),
                &a["schema"]["openAPIV3Schema"],
                &b["schema"]["openAPIV3Schema"],
                &mut found,
            );
            compared += 1;
        }
        differences.extend(found.into_iter().map(|d| format!("{kind} {d}")));
    }
    assert_eq!(compared, 4, "two kinds at two versions each");
    let documented: BTreeSet<String> = EXTENSIONS.iter().map(|s| s.to_string()).collect();
    let undocumented: Vec<&String> = differences.difference(&documented).collect();
    let gone: Vec<&String> = documented.difference(&differences).collect();
    assert!(
        undocumented.is_empty() && gone.is_empty(),
        "our CRDs against mcs-api {}:\n  differences not documented as extensions in docs/crds.md: {undocumented:#?}\n  documented extensions no longer there: {gone:#?}",
        names::MCS_RELEASE_VERSION
    );
}
