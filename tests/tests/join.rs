//! `mcsd join` and `mcsd leave`, as a platform engineer runs them, on sandbox and real clusters
//! alike: the clusters start unpeered ([`ClusterSet::unpeered`]), `mcsd join` connects them
//! through the kubeconfig's contexts, kubectl exports, dig resolves, the handed-over credentials
//! read the exchange records and nothing else, tokens renew through the API server's
//! TokenRequest, and `mcsd leave` parts them. Each test leaves its clusters joined again (the real
//! tier's next test expects a mesh). What needs sandbox clusters is beside: `join_checks.rs`
//! (clusters broken on purpose), `tokens.rs` (tokens that live seconds), `status.rs` (an API
//! server stopped).

use mcsd_tests::{
    ClusterSet, WAIT, dig, eventually,
    fixtures::{export_hello_as_the_readme_does, refuse_renewals, resolved, withdrawn},
    kubectl, kubectl_refused, peer_secret_annotation, peer_secret_kubeconfig,
};

const HELLO: &str = "hello.demo.svc.clusterset.local";

/// What every refusal of a peer's credential names as the fix.
fn join_fix(exporter: &str) -> String {
    format!(
        "run `mcsd join` for this pair again, or renew the kubeconfig in Secret mcsd-system/peer-{exporter}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_meshes_three_clusters_idempotently_with_read_only_credentials_and_leave_revokes_them() {
    let set = ClusterSet::unpeered(3).await;
    let kubeconfigs: Vec<_> = set.members.iter().map(|m| m.kubeconfig.clone()).collect();
    let dns: Vec<_> = set.members.iter().map(|m| m.dns).collect();
    export_hello_as_the_readme_does(&kubeconfigs, 0);
    // Unconnected: cluster-c knows nothing of cluster-a's export.
    assert_eq!(dig(&dns[2], HELLO, "A").status, "NXDOMAIN");

    // --dry-run prints every object (none exists yet) and writes none.
    let before = set.join_objects();
    let printed = set.mcsd(&["join", "--dry-run", "cluster-a", "cluster-b", "cluster-c"]);
    // Per ordered pair: the identity, its two bindings, the Role and binding that let it renew
    // its own token; the Secret and the Role and binding that let the importer's mcsd write the
    // renewed token into it.
    for (kind, per_pair) in [
        ("ServiceAccount", 1),
        ("RoleBinding", 3),
        ("ClusterRoleBinding", 1),
        ("Role", 2),
        ("Secret", 1),
    ] {
        assert_eq!(
            printed.lines().filter(|l| *l == format!("kind: {kind}")).count(),
            6 * per_pair,
            "{per_pair} {kind} per ordered pair in:\n{printed}"
        );
    }
    assert!(
        !printed.contains("token:"),
        "a dry run mints no token:\n{printed}"
    );
    assert_eq!(set.join_objects(), before, "a dry run writes nothing");

    // The mesh: cluster-a's export resolves in cluster-b and cluster-c.
    let joined = set.mcsd(&["join", "cluster-a", "cluster-b", "cluster-c"]);
    assert_eq!(joined.matches("joined: ").count(), 6, "{joined}");
    resolved(dns[1], HELLO).await;
    resolved(dns[2], HELLO).await;

    // Again: nothing is written (the API server's resourceVersions say so).
    let after_first = set.join_objects();
    // In each cluster: for each of the two importers an identity, three bindings and a Role; for
    // each of the two exporters a Secret, a Role and its binding.
    assert_eq!(after_first.len(), 3 * (2 * 5 + 2 * 3), "{after_first:#?}");
    let again = set.mcsd(&["join", "cluster-a", "cluster-b", "cluster-c"]);
    assert!(
        again
            .lines()
            .filter(|l| !l.starts_with("joined: "))
            .all(|l| l.ends_with(" unchanged")),
        "a second join changes nothing:\n{again}"
    );
    assert_eq!(set.join_objects(), after_first, "a second join writes nothing");
    // A dry run now says the same, object by object; one that would change prints it.
    set.kubectl(
        0,
        &[
            "label",
            "serviceaccount",
            "mcsd-peer-cluster-b",
            "-n",
            "mcsd-system",
            "app.kubernetes.io/name=other",
            "--overwrite",
        ],
    );
    let dry = set.mcsd(&["join", "--dry-run", "cluster-a", "cluster-b", "cluster-c"]);
    let unchanged = dry.lines().filter(|l| l.ends_with(" unchanged")).count();
    assert_eq!(unchanged, 6 * 8 - 1, "every object but one in place:\n{dry}");
    assert!(
        dry.contains(
            "# context cluster-a: ServiceAccount mcsd-system/mcsd-peer-cluster-b would be updated\n"
        ),
        "{dry}"
    );
    let relabelled = set.join_objects();
    set.mcsd(&["join", "cluster-a", "cluster-b"]);
    assert_ne!(set.join_objects(), relabelled, "the real run puts it back");
    // An identity deleted and made anew revokes the tokens of the old one: join mints afresh
    // even though the Secret's token is not due for renewal.
    set.kubectl(
        0,
        &[
            "delete",
            "serviceaccount",
            "mcsd-peer-cluster-b",
            "-n",
            "mcsd-system",
        ],
    );
    let rejoined = set.mcsd(&["join", "--one-way", "cluster-a", "cluster-b"]);
    assert!(
        rejoined.contains("cluster-a: ServiceAccount mcsd-system/mcsd-peer-cluster-b created\n")
            && rejoined.contains("cluster-b: Secret mcsd-system/peer-cluster-a updated\n"),
        "{rejoined}"
    );
    let fresh = set.write(
        "fresh.kubeconfig",
        &peer_secret_kubeconfig(&kubeconfigs[1], "cluster-a"),
    );
    kubectl(&fresh, &["get", "configmaps", "-n", "mcsd-system"]);

    // What cluster-c holds for cluster-a reads the exchange records and the cluster's identity,
    // and nothing else.
    let peer = set.write(
        "peer-a-for-c.kubeconfig",
        &peer_secret_kubeconfig(&kubeconfigs[2], "cluster-a"),
    );
    kubectl(&peer, &["get", "configmaps,endpointslices", "-n", "mcsd-system"]);
    kubectl(&peer, &["get", "clusterproperty", "cluster.clusterset.k8s.io"]);
    // It may mint a token for itself (renewal), for no other ServiceAccount.
    assert!(
        !kubectl(
            &peer,
            &["create", "token", "mcsd-peer-cluster-c", "-n", "mcsd-system"]
        )
        .trim()
        .is_empty()
    );
    for args in [
        &["get", "secrets", "-n", "mcsd-system"][..],
        &["get", "services", "-A"],
        &["get", "serviceexports", "-A"],
        &["get", "lease", "mcsd-status", "-n", "mcsd-system"],
        &["create", "configmap", "planted", "-n", "mcsd-system"],
        &["delete", "configmap", "--all", "-n", "mcsd-system"],
        &["create", "token", "mcsd", "-n", "mcsd-system"],
        &["create", "token", "mcsd-peer-cluster-b", "-n", "mcsd-system"],
    ] {
        let refused = kubectl_refused(&peer, args);
        assert!(
            refused.contains("forbidden"),
            "kubectl {}: {refused}",
            args.join(" ")
        );
    }

    // leave: cluster-a's export is withdrawn from cluster-c, and the token cluster-c held is dead.
    let left = set.mcsd(&["leave", "--one-way", "cluster-a", "cluster-c"]);
    assert!(
        left.contains("ServiceAccount mcsd-peer-cluster-c deleted"),
        "{left}"
    );
    withdrawn(dns[2], HELLO).await;
    // kube-apiserver authenticates a deleted ServiceAccount's token for a moment longer (its
    // cache of ServiceAccounts catches up), refusing it meanwhile for want of rights.
    eventually("the left peer's token to be revoked", WAIT, || async {
        let refused = kubectl_refused(&peer, &["get", "configmaps", "-n", "mcsd-system"]);
        (refused.contains("Unauthorized") || refused.contains("credentials")).then_some(())
    })
    .await;
    // cluster-b still imports it.
    assert_eq!(dig(&dns[1], HELLO, "A").status, "NOERROR");

    // Joined again: the import comes back in cluster-c (a new one, with a new clusterset IP: the
    // old one was withdrawn), and `mcsd status` reads, with the kubeconfig alone, cluster-a
    // synced in cluster-c's view.
    set.mcsd(&["join", "--one-way", "cluster-a", "cluster-c"]);
    resolved(dns[2], HELLO).await;
    eventually("cluster-a synced in cluster-c's status", WAIT, || async {
        let peer = set.peer_status("cluster-c", "cluster-a")?;
        (peer["state"] == "synced").then_some(())
    })
    .await;
    set.stop().await;
}

/// Token renewal through the API server's TokenRequest, with the rights `mcsd join` grants. The
/// Secret's expiry is brought forward (kube-apiserver's tokens live at least 10 minutes, too long
/// to wait for halfway) and cluster-b's mcsd renews at once, without the import moving. Then,
/// with the renew RoleBinding deleted in cluster-a, the refused renewal is reported while the
/// token still works: `ClustersAtRisk` on the import, `mcsd why`, `mcsd status` and the metric,
/// each naming the fix; `mcsd join` again, as they say, clears every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_token_renews_through_the_api_server_and_a_refused_renewal_is_reported_until_join_fixes_it() {
    let set = ClusterSet::unpeered(2).await;
    let kubeconfigs: Vec<_> = set.members.iter().map(|m| m.kubeconfig.clone()).collect();
    let b = &set.members[1];
    set.mcsd(&["join", "--one-way", "cluster-a", "cluster-b"]);
    export_hello_as_the_readme_does(&kubeconfigs, 0);
    let ip = resolved(b.dns, HELLO).await;

    let annotation = |name: &str| peer_secret_annotation(&b.kubeconfig, "cluster-a", name);
    assert_eq!(annotation("token-lifetime"), "86400");
    // Renewal is due halfway through a token's life: an expiry two minutes away makes it overdue.
    let bring_forward = || {
        let soon = k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(120);
        set.kubectl(
            1,
            &[
                "annotate",
                "--overwrite",
                "secret",
                "peer-cluster-a",
                "-n",
                "mcsd-system",
                &format!("mcsd.io/token-expires={soon}"),
            ],
        );
        soon.to_string()
    };
    let old = peer_secret_kubeconfig(&b.kubeconfig, "cluster-a");
    let soon = bring_forward();
    let renewed = eventually("cluster-b's mcsd to renew its token", WAIT, || async {
        let now = peer_secret_kubeconfig(&b.kubeconfig, "cluster-a");
        (now != old && annotation("token-expires") != soon).then_some(now)
    })
    .await;
    let expires: k8s_openapi::jiff::Timestamp = annotation("token-expires").parse().unwrap();
    let left = expires.as_second() - k8s_openapi::jiff::Timestamp::now().as_second();
    assert!(
        (86_000..=86_400).contains(&left),
        "a new day-long token: {left} s left"
    );
    let token = set.write("renewed-peer-a-for-b.kubeconfig", &renewed);
    kubectl(&token, &["get", "configmaps", "-n", "mcsd-system"]);
    assert_eq!(resolved(b.dns, HELLO).await, ip, "the import never moved");

    // cluster-a refuses the next renewal: reported while the token still works.
    refuse_renewals(&set, 0, "cluster-b");
    let soon = bring_forward();
    let condition = |type_: &str| {
        let out = set.get(
            1,
            "demo",
            "serviceimport/hello",
            &format!("{{.status.conditions[?(@.type==\"{type_}\")]['status','message']}}"),
        );
        out.split_once(' ')
            .map(|(s, m)| (s.to_string(), m.to_string()))
            .unwrap_or_default()
    };
    let message = eventually("ClustersAtRisk=True on cluster-b's import", WAIT, || async {
        let (status, message) = condition("ClustersAtRisk");
        (status == "True").then_some(message)
    })
    .await;
    assert!(
        message.starts_with(&format!(
            "at risk: cluster-a: its credentials expire at {soon} and cannot be renewed: the peer refused a new token for mcsd-peer-cluster-b"
        )) && message.contains("forbidden")
            && message.ends_with(&join_fix("cluster-a")),
        "{message}"
    );
    assert_eq!(condition("ClustersExcluded").0, "False", "still imported");
    assert_eq!(resolved(b.dns, HELLO).await, ip, "the import answers meanwhile");
    let why = set.why(1, HELLO, &[]);
    assert!(
        why.contains("At risk (still imported;") && why.contains("\n  cluster-a: its credentials expire at"),
        "{why}"
    );
    let failing = || async {
        mcsd_tests::metric_values(
            &mcsd_tests::admin_get(b.admin, "/metrics").await,
            "mcsd_peer_credential_renewal_failing",
        )
        .into_iter()
        .find(|(labels, _)| mcsd_tests::label(labels, "peer") == Some("cluster-a"))
        .map(|(_, v)| v)
    };
    assert_eq!(failing().await, Some(1.0));
    // The status is published at most every 2 s.
    eventually("the refused renewal in cluster-b's status", WAIT, || async {
        let peer = set.peer_status("cluster-b", "cluster-a")?;
        let problem = peer["credentialProblem"].as_str()?;
        (peer["state"] == "synced" && problem.contains("cannot be renewed")).then_some(())
    })
    .await;

    // The fix they name; the clusters joined both ways again.
    set.mcsd(&["join", "cluster-a", "cluster-b"]);
    eventually("ClustersAtRisk=False again", WAIT, || async {
        (condition("ClustersAtRisk").0 == "False").then_some(())
    })
    .await;
    assert_eq!(failing().await, Some(0.0));
    assert_eq!(condition("ClustersExcluded").0, "False");
    assert_eq!(resolved(b.dns, HELLO).await, ip);
    set.stop().await;
}
