//! `mcsd status` as an operator reads it, with nothing but the kubeconfig: a joined peer synced,
//! unreachable with the reason, synced again; every context side by side. Sandbox clusters only:
//! the test stops an API server (on real clusters, `kube.rs` freezes and kills kube-apiserver).

use std::time::Duration;

use mcsd_tests::{ClusterSet, WAIT, eventually, fixtures::export_hello_as_the_readme_does};

/// `mcsd status` with nothing but the kubeconfig: a joined peer synced, then unreachable (its API
/// server stopped) with the reason, then synced again; the counts of exports and imports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_peer_going_unreachable_and_coming_back() {
    // Probes every half second: an API server that stops is noticed at once.
    let options = mcsd::process::sandbox::Options {
        peer_grace: Duration::from_secs(5),
        peered: false,
        ..Default::default()
    };
    let set = ClusterSet::sandbox_with(2, options).await;
    let kubeconfigs: Vec<_> = set.members.iter().map(|m| m.kubeconfig.clone()).collect();
    export_hello_as_the_readme_does(&kubeconfigs, 0);
    set.mcsd(&["join", "cluster-a", "cluster-b"]);

    let status = |extra: &[&str]| -> serde_json::Value {
        let out = set.mcsd(&[&["status", "-o", "json"], extra].concat());
        serde_json::from_str(&out).unwrap()
    };
    let peer_a_in_b = |wanted: &'static str| {
        let status = &status;
        move || async move {
            let s = status(&["--context", "cluster-b"]);
            let peer = s[0]["mcsd"]["peers"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == "cluster-a")?
                .clone();
            (peer["state"] == wanted).then_some((s, peer))
        }
    };
    let (s, synced) = eventually(
        "cluster-a synced in cluster-b's status",
        WAIT,
        peer_a_in_b("synced"),
    )
    .await;
    assert_eq!(s[0]["mcsd"]["cluster"], "cluster-b");
    assert!(
        synced["lastCurrent"].is_string() && synced["credentialExpiry"].is_string(),
        "{synced}"
    );
    eventually("cluster-b to import hello", WAIT, || async {
        let s = status(&["--context", "cluster-b"]);
        (s[0]["imports"] == 1 && s[0]["exports"] == 0).then_some(())
    })
    .await;

    set.members[0].cluster().stop_api_server().await;
    let (_, down) = eventually(
        "cluster-a unreachable in cluster-b's status",
        WAIT,
        peer_a_in_b("unreachable"),
    )
    .await;
    assert!(
        down["reason"].as_str().is_some_and(|r| r.contains("cluster-a")),
        "the reason names the peer: {down}"
    );
    set.members[0].cluster().start_api_server().await.unwrap();
    eventually("cluster-a synced again", WAIT, peer_a_in_b("synced")).await;

    // Every context, side by side, and as text.
    let all = status(&["--all-contexts"]);
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["mcsd"]["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cluster-a", "cluster-b"]);
    let text = set.mcsd(&["status", "--context", "cluster-a"]);
    assert!(
        text.starts_with("cluster-a (context cluster-a), ClusterSet sandbox"),
        "{text}"
    );
    assert!(text.contains("1 exports, 1 imports, 0 in conflict"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("cluster-b") && l.contains("synced")),
        "{text}"
    );

    set.stop().await;
}
