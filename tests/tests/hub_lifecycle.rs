//! Hub mode on the sandbox, where a story needs what only the sandbox gives: a grace period of
//! its own, a bare API server to make a hub of, hundreds of namespaces made at once. The hub down
//! past the grace period, `mcsd hub init` / `join --hub` / `leave --hub` with token renewal, and
//! the selector fallback. The stories for either tier are in `hub.rs`.

use std::time::Duration;

use mcsd_tests::{
    ClusterSet, WAIT, dig, eventually,
    fixtures::{export_when_ready, exported, resolved, withdrawn},
    kubectl,
};

const HELLO: &str = "hello.demo.svc.clusterset.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_hub_is_down_every_answer_stays_through_the_grace_period_and_leaves_past_it() {
    let grace = Duration::from_secs(4);
    let set = ClusterSet::sandbox_hub_with(3, mcsd_tests::peer_grace(grace)).await;
    for i in 0..3 {
        set.apply(i, &mcsd_tests::fixtures::namespace("demo"));
    }
    set.apply(0, &exported("demo", "hello"));
    let dns_c = set.members[2].dns;
    eventually("cluster-c to answer with cluster-a's pod", WAIT, || async {
        (dig(&dns_c, HELLO, "A").records.len() == 1).then_some(())
    })
    .await;
    let answer = dig(&dns_c, HELLO, "A");
    let hub = set.hub().sandbox_cluster();

    // A blip shorter than the grace period changes no answer.
    hub.stop_api_server().await;
    let blip_end = std::time::Instant::now() + grace / 2;
    while std::time::Instant::now() < blip_end {
        assert_eq!(dig(&dns_c, HELLO, "A"), answer, "during the blip");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    hub.start_api_server().await.unwrap();
    // The hub is followed again: a new export arrives through it.
    set.apply(0, &exported("demo", "after"));
    resolved(dns_c, "after.demo.svc.clusterset.local").await;
    assert_eq!(dig(&dns_c, HELLO, "A"), answer);

    // Past the grace period what was read from the hub leaves, and comes back with the hub.
    // (The import is withdrawn, so it comes back as a new one, with a new clusterset IP.)
    hub.stop_api_server().await;
    withdrawn(dns_c, HELLO).await;
    hub.start_api_server().await.unwrap();
    resolved(dns_c, HELLO).await;
    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_init_and_join_hub_enrol_members_idempotently_and_leave_hub_removes_one() {
    let options = mcsd::process::sandbox::Options {
        peered: false,
        ..Default::default()
    };
    let set = ClusterSet::sandbox_with(2, options).await;
    // A bare API server to make a hub of, its context `hub` beside the members'.
    let hub = mcsd::process::sandbox::start_hub(2, &set.scratch(), false)
        .await
        .expect("the hub starts");
    let merged = kube::config::Kubeconfig::read_from(set.kubeconfig())
        .unwrap()
        .merge(kube::config::Kubeconfig::from_yaml(&hub.kubeconfig_yaml()).unwrap())
        .unwrap();
    let kubeconfig = set.write("with-hub.kubeconfig", &serde_yaml::to_string(&merged).unwrap());
    let mcsd = |args: &[&str]| mcsd_tests::mcsd_ok(&kubeconfig, args);

    // Not a hub yet: one line naming the fix, nothing written.
    let refused = mcsd_tests::mcsd_refused(&kubeconfig, &["join", "--hub", "hub", "cluster-a", "cluster-b"]);
    assert!(refused.contains("run `mcsd hub init hub` first"), "{refused}");
    let init = mcsd(&["hub", "init", "hub"]);
    assert!(init.contains("initialised as a hub"), "{init}");

    // --dry-run prints what it would write, and writes nothing.
    let printed = mcsd(&["join", "--hub", "hub", "--dry-run", "cluster-a", "cluster-b"]);
    assert!(
        printed.contains("kind: Namespace") && printed.contains("name: mcsd-member-cluster-a"),
        "{printed}"
    );
    let hub_kubeconfig = set.scratch().join("hub.kubeconfig");
    let namespaces = kubectl(
        &hub_kubeconfig,
        &["get", "namespaces", "-l", "hub.mcsd.io/member", "-o", "name"],
    );
    assert!(
        namespaces.trim().is_empty(),
        "a dry run writes nothing: {namespaces}"
    );

    let join = [
        "join",
        "--hub",
        "hub",
        "cluster-a",
        "cluster-b",
        "--ranges",
        "cluster-a=10.160.0.0/16",
    ];
    let joined = mcsd(&join);
    assert!(
        joined.contains("joined: cluster-a (cluster-a) exchanges its records through the hub"),
        "{joined}"
    );
    let declared = || {
        kubectl(
            &hub_kubeconfig,
            &[
                "get",
                "namespace",
                "mcsd-member-cluster-a",
                "-o",
                "jsonpath={.metadata.annotations.hub\\.mcsd\\.io/ranges}",
            ],
        )
    };
    assert_eq!(declared(), "10.160.0.0/16");
    // A second run writes nothing; nor does one that names no ranges: a member's declared
    // ranges stay until `--ranges` changes them (enrolling again never widens them).
    let unchanged = |out: &str| {
        out.lines()
            .filter(|l| l.starts_with("hub:") || (l.starts_with("cluster-") && !l.contains(": keeps ")))
            .all(|l| l.ends_with("unchanged"))
    };
    let again = mcsd(&join);
    assert!(unchanged(&again), "{again}");
    let without_ranges = mcsd(&join[..5]);
    assert!(unchanged(&without_ranges), "{without_ranges}");
    assert!(
        without_ranges.contains("cluster-a: keeps the ranges declared on the hub: 10.160.0.0/16"),
        "{without_ranges}"
    );
    assert_eq!(declared(), "10.160.0.0/16");

    // Through the hub: an export in cluster-a resolves in cluster-b.
    set.create_namespace("demo");
    set.apply(0, &exported("demo", "hello"));
    resolved(set.members[1].dns, HELLO).await;
    // The token renews itself halfway through its life: an expiry two minutes away makes it
    // overdue, and cluster-a's mcsd mints a new day-long one through the hub and writes it.
    let annotation = || {
        set.get(
            0,
            "mcsd-system",
            "secret/hub",
            "{.metadata.annotations.mcsd\\.io/token-expires}",
        )
    };
    let old = std::fs::read_to_string(set.hub_credential(0)).unwrap();
    let soon = k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(120);
    set.kubectl(
        0,
        &[
            "annotate",
            "--overwrite",
            "secret",
            "hub",
            "-n",
            "mcsd-system",
            &format!("mcsd.io/token-expires={soon}"),
        ],
    );
    eventually("cluster-a's mcsd to renew its hub token", WAIT, || async {
        let now = std::fs::read_to_string(set.hub_credential(0)).unwrap();
        (now != old && annotation() != soon.to_string()).then_some(())
    })
    .await;
    let expires: k8s_openapi::jiff::Timestamp = annotation().parse().unwrap();
    let left = expires.as_second() - k8s_openapi::jiff::Timestamp::now().as_second();
    assert!(
        (86_000..=86_400).contains(&left),
        "a new day-long token: {left} s left"
    );
    // The new token works, and the session goes on with it: a new export arrives.
    kubectl(
        &set.hub_credential(0),
        &["get", "configmaps", "-n", "mcsd-member-cluster-a"],
    );
    set.apply(0, &exported("demo", "renewed"));
    resolved(set.members[1].dns, "renewed.demo.svc.clusterset.local").await;

    // cluster-a leaves the hub: its exports leave cluster-b.
    let left = mcsd(&["leave", "--hub", "hub", "cluster-a"]);
    assert!(left.contains("left: cluster-a"), "{left}");
    withdrawn(set.members[1].dns, HELLO).await;
    hub.shutdown().await;
    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_hundreds_of_namespaces_is_sent_every_record_and_keeps_its_own() {
    let set = ClusterSet::sandbox_hub(3).await;
    for i in 0..3 {
        set.apply(i, &mcsd_tests::fixtures::namespace("demo"));
    }
    set.apply(1, &mcsd_tests::fixtures::namespace("only-ab"));
    set.apply(0, &mcsd_tests::fixtures::namespace("only-ab"));
    // cluster-c has 500 more: naming them all would make the selector longer than a proxy in
    // front of an API server takes, so it asks for every record and keeps those it can import.
    let many: String = (0..500)
        .map(|i| mcsd_tests::fixtures::namespace(&format!("team-{i:04}")))
        .collect::<Vec<_>>()
        .join("---\n");
    set.apply(2, &many);
    let before = set.members[2].hub_objects_received().await;
    export_when_ready(&set, 0, "only-ab", "web").await;
    resolved(set.members[1].dns, "web.only-ab.svc.clusterset.local").await;
    // Sent only-ab's record and slice, which a member naming its namespaces is never sent...
    eventually("cluster-c to be sent only-ab's records", WAIT, || async {
        (set.members[2].hub_objects_received().await - before >= 2.0).then_some(())
    })
    .await;
    export_when_ready(&set, 0, "demo", "hello").await;
    resolved(set.members[2].dns, HELLO).await;
    // ...and kept only what it can import: once it has only-ab, it reads it from the hub.
    set.apply(2, &mcsd_tests::fixtures::namespace("only-ab"));
    resolved(set.members[2].dns, "web.only-ab.svc.clusterset.local").await;
    set.stop().await;
}
