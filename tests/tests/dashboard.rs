//! The dashboard (`manifests/chart/files/dashboard.json`) and the alert rules
//! (`manifests/chart/files/alerts.yaml`) against live metrics: a real Prometheus server scrapes
//! every mcsd of a ClusterSet in which something of everything has happened (a join, an export
//! imported, DNS answers, an unreachable peer, a refused record), then every panel's query must
//! return series, every alert rule must evaluate without error, and every metric and label an
//! alert reads must exist.
//!
//! Prometheus comes from the Go module proxy (`tests/kube/build.sh`), so this is ignored by `cargo
//! test` and run on the real tier by `tests/kube/test.sh`.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use mcsd_tests::{
    ClusterSet, WAIT, admin_get, dig, eventually, eventually_or_none,
    fixtures::{export_when_ready, resolved},
    label, metric_values,
};
use serde_json::{Value, json};

/// A Prometheus server scraping `targets` every second and evaluating `rules`; stopped when
/// dropped.
struct Prometheus {
    child: Child,
    address: SocketAddr,
}

impl Prometheus {
    fn start(dir: &Path, targets: &[SocketAddr], rules: &Path) -> Self {
        let port = mcsd_tests::real::free_port().expect("a free port");
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let targets: Vec<String> = targets.iter().map(ToString::to_string).collect();
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules],
            "scrape_configs": [{"job_name": "mcsd", "static_configs": [{"targets": targets}]}],
        });
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, serde_yaml::to_string(&config).unwrap()).unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus is on PATH: tests/kube/build.sh builds it (the Go module proxy)");
        Self { child, address }
    }

    /// `GET /api/v1/<path>` with `query` URL-encoded; the `data` of a successful answer, or why not.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let mut url = format!("/api/v1/{path}");
        if !query.is_empty() {
            let encoded = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query)
                .finish();
            url = format!("{url}?{encoded}");
        }
        let reply = mcsd::commands::admin_client::get(self.address, &url, Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = serde_json::from_str(&reply.body).map_err(|e| format!("{e}: {}", reply.body))?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"].clone())
    }

    /// The instant vector `expr` evaluates to now.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("query", &[("query", expr)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every vector or range selector in a parsed PromQL expression (`/api/v1/parse_query`): its
/// metric name and the label names its matchers test.
fn selectors(node: &Value, out: &mut BTreeSet<(String, Vec<String>)>) {
    match node {
        Value::Object(map) => {
            let kind = map.get("type").and_then(Value::as_str);
            if kind == Some("vectorSelector") || kind == Some("matrixSelector") {
                let labels = map["matchers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m["name"].as_str())
                    .filter(|n| *n != "__name__")
                    .map(str::to_string)
                    .collect();
                out.insert((map["name"].as_str().unwrap_or_default().to_string(), labels));
            }
            map.values().for_each(|v| selectors(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| selectors(v, out)),
        _ => {}
    }
}

/// Every panel target's query, with Grafana's `$__rate_interval` as a window that holds several
/// scrapes here, and the dashboard's `$job` variable at "All".
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "20s")
                .replace("$job", ".*");
            out.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    out
}

/// Deletes these objects of `mcsd-system` when dropped, failed or not: the real tier's next test
/// expects no ghost peer and no forged record.
struct Remove(Vec<(std::path::PathBuf, &'static str)>);

impl Drop for Remove {
    fn drop(&mut self) {
        for (kubeconfig, object) in &self.0 {
            let _ = mcsd_tests::kubectl_output(
                kubeconfig,
                &[
                    "delete",
                    object,
                    "-n",
                    "mcsd-system",
                    "--ignore-not-found",
                    "--wait=false",
                ],
            );
        }
    }
}

/// A Secret naming a peer `ghost` whose API server nothing serves: mcsd finds it unreachable.
fn ghost_peer() -> String {
    use base64::Engine as _;
    let port = mcsd_tests::real::free_port().unwrap();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: ghost\n  cluster: {{server: \"https://127.0.0.1:{port}\", insecure-skip-tls-verify: true}}\nusers:\n- name: ghost\n  user: {{token: nothing}}\ncontexts:\n- name: ghost\n  context: {{cluster: ghost, user: ghost}}\ncurrent-context: ghost\n"
    );
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: peer-ghost\n  namespace: mcsd-system\n  labels: {{mcsd.io/peer: \"\"}}\ndata:\n  name: {}\n  kubeconfig: {}\n",
        b64("ghost"),
        b64(&kubeconfig)
    )
}

/// An exchange record in cluster-a's exchange namespace that says it is cluster-x's: cluster-b's
/// guard refuses it (`names_another_cluster`).
fn misattributed_record() -> String {
    let export = json!({
        "cluster": "cluster-x", "namespace": "demo", "name": "impostor",
        "exportCreated": "2026-01-01T00:00:00Z", "type": "ClusterSetIP",
        "ports": [{"port": 80, "protocol": "TCP"}], "sessionAffinity": "None",
        "ipFamilies": ["IPv4"], "internalTrafficPolicy": "Cluster",
    });
    serde_yaml::to_string(&json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": "demo.impostor", "namespace": "mcsd-system",
            "labels": {"mcsd.io/exchange": "v1", "mcsd.io/service-namespace": "demo", "mcsd.io/service-name": "impostor"},
        },
        "data": {"export.json": export.to_string()},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs prometheus from tests/kube/build.sh (the Go module proxy): tests/kube/test.sh runs it"]
async fn every_dashboard_panel_and_alert_reads_live_series_from_every_mcsd() {
    let chart = mcsd_tests::repo_root().join("manifests/chart/files");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(chart.join("dashboard.json")).unwrap()).unwrap();

    // Something of everything: a join (credentials mcsd renews), an export imported (propagation,
    // writes), answers (DNS), an unreachable peer (state, problem), a refused record.
    let set = ClusterSet::unpeered(2).await;
    set.create_namespace("demo");
    set.mcsd(&["join", "cluster-a", "cluster-b"]);
    export_when_ready(&set, 0, "demo", "hello").await;
    resolved(set.members[1].dns, "hello.demo.svc.clusterset.local").await;
    assert_eq!(
        dig(&set.members[1].dns, "nothing.demo.svc.clusterset.local", "A").status,
        "NXDOMAIN"
    );
    let _left_as_found = Remove(vec![
        (set.members[1].kubeconfig.clone(), "secret/peer-ghost"),
        (set.members[0].kubeconfig.clone(), "configmap/demo.impostor"),
    ]);
    set.apply(1, &ghost_peer());
    set.apply(0, &misattributed_record());
    let b = set.members[1].admin;
    eventually(
        "cluster-b to find ghost unreachable and refuse the impostor",
        WAIT,
        || async {
            let text = admin_get(b, "/metrics").await;
            let ghost = metric_values(&text, "mcsd_peer_state").into_iter().any(|(l, v)| {
                v == 1.0 && label(&l, "peer") == Some("ghost") && label(&l, "state") == Some("unreachable")
            });
            let refused = metric_values(&text, "mcsd_peer_records_refused_total")
                .into_iter()
                .any(|(l, v)| v >= 1.0 && label(&l, "reason") == Some("names_another_cluster"));
            (ghost && refused).then_some(())
        },
    )
    .await;

    let dir = set.scratch().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let admins: Vec<SocketAddr> = set.members.iter().map(|m| m.admin).collect();
    let prometheus = Prometheus::start(&dir, &admins, &chart.join("alerts.yaml"));
    eventually("Prometheus to scrape every mcsd", WAIT, || async {
        let up = prometheus.query("up{job=\"mcsd\"} == 1").await.ok()?;
        (up.len() == admins.len()).then_some(())
    })
    .await;

    // Every panel's query: series, once the rate windows hold a few scrapes.
    let queries = panel_queries(&dashboard);
    assert!(queries.len() >= 15, "{queries:?}");
    let empty = std::sync::Mutex::new(Vec::new());
    let all_answered = eventually_or_none(WAIT, || async {
        let mut missing = Vec::new();
        for (title, expr) in &queries {
            match prometheus.query(expr).await {
                Ok(series) if !series.is_empty() => {}
                Ok(_) => missing.push(format!("{title}: {expr}: no series")),
                Err(e) => missing.push(format!("{title}: {expr}: {e}")),
            }
        }
        let done = missing.is_empty();
        *empty.lock().unwrap() = missing;
        done.then_some(())
    })
    .await;
    assert!(
        all_answered.is_some(),
        "panels without series: {:#?}",
        empty.lock().unwrap()
    );

    // Every alert rule: loaded, evaluated on these series without error.
    let rules = eventually("Prometheus to evaluate every alert rule", WAIT, || async {
        let groups = prometheus.api("rules", &[("type", "alert")]).await.ok()?;
        let rules: Vec<Value> = groups["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.iter().all(|r| {
            r["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001"))
        });
        (!rules.is_empty() && evaluated).then_some(rules)
    })
    .await;
    let file: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart.join("alerts.yaml")).unwrap()).unwrap();
    assert_eq!(rules.len(), file["groups"][0]["rules"].as_array().unwrap().len());
    for rule in &rules {
        assert_eq!(
            rule["health"], "ok",
            "alert {}: {}",
            rule["name"], rule["lastError"]
        );
    }
    // Every metric an alert reads, with every label its matchers test.
    let mut wanted = BTreeSet::new();
    for rule in &rules {
        let parsed = prometheus
            .api("parse_query", &[("query", rule["query"].as_str().unwrap())])
            .await
            .unwrap_or_else(|e| panic!("alert {}: {e}", rule["name"]));
        selectors(&parsed, &mut wanted);
    }
    assert!(wanted.len() >= 8, "{wanted:?}");
    for (metric, labels) in &wanted {
        let series = prometheus.query(metric).await.unwrap();
        assert!(!series.is_empty(), "no series of {metric}, which an alert reads");
        for l in labels {
            assert!(
                series.iter().any(|s| s["metric"].get(l).is_some()),
                "no series of {metric} has label {l}, which an alert matches on"
            );
        }
    }
    drop(prometheus);
    set.stop().await;
}
