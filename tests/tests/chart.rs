//! The Helm chart (`manifests/chart`): with default values it renders exactly the objects
//! `kubectl kustomize manifests/` does, so the two installs never drift; it passes `helm lint
//! --strict`; and each value reaches the object it names.
//!
//! Helm 3 lints it too and renders the same objects as Helm 4.
//!
//! Helm comes from the Go module proxy (`tests/kube/build.sh`: Helm 4 as `helm`, Helm 3 as
//! `helm3`), so these are ignored by `cargo test` and run by `tests/kube/test.sh`.

use std::{collections::BTreeMap, process::Command};

use serde::Deserialize;

fn chart() -> std::path::PathBuf {
    mcsd_tests::repo_root().join("manifests/chart")
}

/// Runs `program ARGS`, failing the test with its standard error unless it succeeds.
fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("{program} did not run ({e}): tests/kube/build.sh builds helm; kubectl comes with the tests")
    });
    mcsd_tests::succeeded(&format!("{program} {}", args.join(" ")), out)
}

/// `value` with every whole number as an integer: kustomize writes the CRDs' `minimum: 0.0` as `0`,
/// Helm leaves it as written; both are the number 0.
fn whole_numbers(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(whole_numbers).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, whole_numbers(v))).collect()),
        other => other,
    }
}

/// The objects of a YAML stream, by kind, namespace and name.
fn objects(text: &str) -> BTreeMap<String, serde_json::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| serde_json::Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .map(whole_numbers)
        .map(|v| {
            let key = format!(
                "{} {}/{}",
                v["kind"].as_str().unwrap_or_default(),
                v["metadata"]["namespace"].as_str().unwrap_or_default(),
                v["metadata"]["name"].as_str().unwrap_or_default()
            );
            (key, v)
        })
        .collect()
}

/// A container's `args`.
fn args_of(container: &serde_json::Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

/// `helm template` of the chart with `sets` (`--set` arguments), CRDs included.
fn rendered(sets: &[&str]) -> BTreeMap<String, serde_json::Value> {
    rendered_by("helm", &[], sets)
}

/// [`rendered`] by `helm`, the program named (`helm`: Helm 4; `helm3`: Helm 3), with `flags`.
fn rendered_by(helm: &str, flags: &[&str], sets: &[&str]) -> BTreeMap<String, serde_json::Value> {
    let chart = chart();
    let mut args = vec!["template", "mcsd", chart.to_str().unwrap(), "--include-crds"];
    args.extend(flags);
    for set in sets {
        args.extend(["--set", set]);
    }
    objects(&output(helm, &args))
}

/// `helm template` of the chart with a values file holding `values` (as operators keep them:
/// Helm reads a file's numbers as floating point, where `--set` keeps whole numbers whole).
fn rendered_from_file(values: &str) -> BTreeMap<String, serde_json::Value> {
    let file = std::env::temp_dir().join(format!("mcsd-chart-values-{}.yaml", std::process::id()));
    std::fs::write(&file, values).unwrap();
    let chart = chart();
    let out = output(
        "helm",
        &[
            "template",
            "mcsd",
            chart.to_str().unwrap(),
            "-f",
            file.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_file(&file);
    objects(&out)
}

#[test]
#[ignore = "needs helm from tests/kube/build.sh (the Go module proxy): tests/kube/test.sh runs it"]
fn the_chart_with_default_values_renders_what_kustomize_applies() {
    let manifests = mcsd_tests::repo_root().join("manifests");
    let kustomized = objects(&output("kubectl", &["kustomize", manifests.to_str().unwrap()]));
    let helm = rendered(&[]);
    let only = |a: &BTreeMap<String, serde_json::Value>, b: &BTreeMap<String, serde_json::Value>| {
        a.keys()
            .filter(|k| !b.contains_key(*k))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        only(&helm, &kustomized),
        Vec::<String>::new(),
        "rendered by helm only"
    );
    assert_eq!(
        only(&kustomized, &helm),
        Vec::<String>::new(),
        "rendered by kustomize only"
    );
    for (key, object) in &kustomized {
        assert_eq!(
            &helm[key], object,
            "{key} differs between `helm template manifests/chart` and `kubectl kustomize manifests/`"
        );
    }
    assert!(kustomized.len() >= 20, "{:?}", kustomized.keys());
}

#[test]
#[ignore = "needs helm and helm3 from tests/kube/build.sh (the Go module proxy): tests/kube/test.sh runs it"]
fn helm_3_lints_the_chart_and_renders_the_objects_helm_4_does() {
    // Most operators still run Helm 3: the chart is `apiVersion: v2`, which both read.
    let chart = chart();
    let version = output("helm3", &["version", "--short"]);
    assert!(version.starts_with("v3."), "helm3 is Helm 3: {version}");
    let lint = output("helm3", &["lint", "--strict", chart.to_str().unwrap()]);
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    for sets in [
        &[][..],
        &[
            "replicas=1",
            "clusterId=cluster-a",
            "clusterSet=prod",
            "extraArgs={--ttl=10}",
            "prometheusRule.enabled=true",
            "dashboard.enabled=true",
        ][..],
    ] {
        // A Helm built from its module (not a release binary) assumes Kubernetes 1.20, which
        // the chart's kubeVersion refuses: name the tier's (tests/kube/versions.env).
        let versions =
            std::fs::read_to_string(mcsd_tests::repo_root().join("tests/kube/versions.env")).unwrap();
        let version = versions
            .lines()
            .find_map(|l| l.strip_prefix("KUBERNETES_VERSION="))
            .expect("versions.env names the Kubernetes version");
        let kube = ["--kube-version", version];
        let three = rendered_by("helm3", &kube, sets);
        let four = rendered_by("helm", &kube, sets);
        assert_eq!(
            three.keys().collect::<Vec<_>>(),
            four.keys().collect::<Vec<_>>(),
            "the same objects from Helm 3 and Helm 4 with {sets:?}"
        );
        for (key, object) in &four {
            assert_eq!(
                &three[key], object,
                "{key} with {sets:?}: Helm 3 renders it otherwise"
            );
        }
    }
}

#[test]
#[ignore = "needs helm from tests/kube/build.sh (the Go module proxy): tests/kube/test.sh runs it"]
fn the_chart_lints_and_each_value_reaches_the_object_it_names() {
    let chart = chart();
    let lint = output("helm", &["lint", "--strict", chart.to_str().unwrap()]);
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    let objects = rendered(&[
        "image.repository=registry.example/mcsd",
        "image.tag=1.2.3",
        "replicas=3",
        "dns.servicePort=5353",
        "admin.port=9090",
        "allowedNamespaces={kube-dns-exports,team-*}",
        "deniedNamespaces={secret}",
        "peerLimits.maxRecords=5000",
        "peerLimits.maxEndpointsPerService=200",
        "peerLimits.maxRecordBytes=65536",
        "clusterId=cluster-a",
        "clusterSet=prod",
        "peerGracePeriod=120",
        "logFormat=json",
        "extraArgs={--ttl=10}",
        "prometheusRule.enabled=true",
        "prometheusRule.labels.release=kube-prometheus",
        "dashboard.enabled=true",
        "dashboard.namespace=monitoring",
    ]);
    let deployment = &objects["Deployment mcsd-system/mcsd"];
    assert_eq!(deployment["spec"]["replicas"], 3);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/mcsd:1.2.3");
    let args = args_of(container);
    assert_eq!(
        args,
        [
            "run",
            "--dns-listen=0.0.0.0:5353",
            "--admin-listen=0.0.0.0:9090",
            "--allow-namespace=kube-dns-exports",
            "--allow-namespace=team-*",
            "--deny-namespace=secret",
            "--max-peer-records=5000",
            "--max-peer-endpoints-per-service=200",
            "--max-peer-record-bytes=65536",
            "--cluster-id=cluster-a",
            "--clusterset=prod",
            "--peer-grace-period=120",
            "--log-format=json",
            "--ttl=10",
        ]
    );
    // Every flag the chart writes is one `mcsd run` takes.
    let help = output(mcsd_tests::mcsd_binary().to_str().unwrap(), &["run", "--help"]);
    for arg in &args[1..] {
        let flag = arg.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{flag} <")),
            "`mcsd run` has no flag {flag}"
        );
    }
    let admin_port = &container["ports"].as_array().unwrap()[2];
    assert_eq!(admin_port["containerPort"], 9090);
    let dns = &objects["Service mcsd-system/mcsd-dns"];
    assert_eq!(dns["spec"]["ports"][0]["port"], 5353);
    assert_eq!(
        objects["Service mcsd-system/mcsd-metrics"]["spec"]["ports"][0]["port"],
        9090
    );

    // From a values file: large numbers stay whole numbers in flags; the pod's placement,
    // metadata, environment and resources are as given; one replica has no disruption budget
    // (it would block every node drain).
    let objects_from_file = rendered_from_file(
        "replicas: 1\n\
         image: {pullPolicy: IfNotPresent}\n\
         imagePullSecrets: [{name: registry}]\n\
         dns: {containerPort: 1053}\n\
         peerLimits: {maxRecords: 2000000, maxRecordBytes: 1048576}\n\
         peerGracePeriod: 86400\n\
         extraEnv: [{name: RUST_LOG, value: debug}]\n\
         podLabels: {team: platform}\n\
         podAnnotations: {prometheus.io/scrape: \"true\"}\n\
         nodeSelector: {kubernetes.io/os: linux}\n\
         tolerations: [{key: edge, operator: Exists}]\n\
         priorityClassName: system-cluster-critical\n\
         resources: {requests: {cpu: 50m, memory: 32Mi}, limits: {memory: 256Mi}}\n",
    );
    assert!(!objects_from_file.contains_key("PodDisruptionBudget mcsd-system/mcsd"));
    let pod = &objects_from_file["Deployment mcsd-system/mcsd"]["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let args = args_of(container);
    for wanted in [
        "--dns-listen=0.0.0.0:1053",
        "--max-peer-records=2000000",
        "--max-peer-record-bytes=1048576",
        "--peer-grace-period=86400",
    ] {
        assert!(args.contains(&wanted), "{wanted} in {args:?}");
    }
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    assert_eq!(container["ports"][0]["containerPort"], 1053);
    assert_eq!(container["env"][2]["name"], "RUST_LOG");
    assert_eq!(container["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(pod["metadata"]["labels"]["team"], "platform");
    assert_eq!(pod["metadata"]["labels"]["app.kubernetes.io/name"], "mcsd");
    assert_eq!(pod["metadata"]["annotations"]["prometheus.io/scrape"], "true");
    assert_eq!(pod["spec"]["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["spec"]["tolerations"][0]["key"], "edge");
    assert_eq!(pod["spec"]["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["spec"]["imagePullSecrets"][0]["name"], "registry");

    // The PrometheusRule carries the rule file operators load without the operator, unchanged.
    let rule = &objects["PrometheusRule mcsd-system/mcsd"];
    assert_eq!(rule["metadata"]["labels"]["release"], "kube-prometheus");
    let file = std::fs::read_to_string(chart.join("files/alerts.yaml")).unwrap();
    let alerts: serde_json::Value = serde_yaml::from_str(&file).unwrap();
    assert_eq!(rule["spec"], alerts);
    assert!(!alerts["groups"][0]["rules"].as_array().unwrap().is_empty());

    // The dashboard's ConfigMap carries the file operators import by hand, unchanged.
    let dashboard = &objects["ConfigMap monitoring/mcsd-dashboard"];
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = std::fs::read_to_string(chart.join("files/dashboard.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(dashboard["data"]["mcsd.json"].as_str().unwrap()).unwrap(),
        serde_json::from_str::<serde_json::Value>(&json).unwrap()
    );

    // NOTES (rendered by an install, here a client-side dry run) give CoreDNS's stub, with the
    // port when it is not 53.
    let dry = output(
        "helm",
        &[
            "install",
            "mcsd",
            chart.to_str().unwrap(),
            "--dry-run=client",
            "--set",
            "dns.servicePort=5353",
        ],
    );
    assert!(
        dry.contains("clusterset.local:53 {") && dry.contains("forward . <that IP>:5353"),
        "{dry}"
    );
}
