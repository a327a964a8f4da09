//! `mcsd join` and `mcsd leave`, as a platform engineer runs them: `mcsd sandbox --no-peers`
//! starts unconnected clusters, `mcsd join` connects them through `DIR/kubeconfig`'s contexts,
//! kubectl exports, dig resolves, `mcsd leave` parts them.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use mcsd_tests::{SandboxProcess, WAIT, dig, eventually, kubectl};

/// `mcsd sandbox --clusters N --no-peers` as a process, with the joins made through its
/// `DIR/kubeconfig`.
struct Sandbox(SandboxProcess);

impl std::ops::Deref for Sandbox {
    type Target = SandboxProcess;
    fn deref(&self) -> &SandboxProcess {
        &self.0
    }
}

impl Sandbox {
    fn start(clusters: usize, tag: &str) -> Self {
        Self(SandboxProcess::start(
            &format!("join-{tag}"),
            clusters,
            &["--no-peers"],
        ))
    }

    /// The file with every cluster's context.
    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// kubectl in cluster `i`, through its context in the merged kubeconfig.
    fn kubectl(&self, i: usize, args: &[&str]) -> String {
        let context = format!("--context=cluster-{}", (b'a' + i as u8) as char);
        let mut all = vec![context.as_str()];
        all.extend_from_slice(args);
        kubectl(&self.kubeconfig(), &all)
    }

    /// Each cluster's own kubeconfig.
    fn kubeconfigs(&self) -> Vec<PathBuf> {
        (0..self.members.len()).map(|i| self.kubeconfig_of(i)).collect()
    }

    /// `mcsd ARGS`, which must succeed; its standard output.
    fn mcsd_ok(&self, args: &[&str]) -> String {
        mcsd_tests::mcsd_ok(&self.kubeconfig(), args)
    }

    /// Every object `mcsd join` writes, with its resourceVersion, in every cluster.
    fn join_objects(&self) -> Vec<String> {
        let mut all = Vec::new();
        for i in 0..self.members.len() {
            for args in [
                &[
                    "get",
                    "serviceaccounts,roles,rolebindings,secrets",
                    "-n",
                    "mcsd-system",
                ][..],
                &["get", "clusterrolebindings"],
            ] {
                let mut args = args.to_vec();
                args.extend([
                    "-o",
                    "jsonpath={range .items[*]}{.kind}/{.metadata.name}@{.metadata.resourceVersion}{\"\\n\"}{end}",
                ]);
                all.extend(
                    self.kubectl(i, &args)
                        .lines()
                        .filter(|l| l.contains("peer-cluster-") || l.contains("peer-identity-cluster-"))
                        .map(|l| format!("cluster {i}: {l}")),
                );
            }
        }
        all.sort();
        all
    }
}

/// The kubeconfig in the peer Secret for `exporter` of the cluster `kubeconfig` reaches, written
/// to `dir/name`.
fn peer_secret_kubeconfig(kubeconfig: &Path, exporter: &str, dir: &Path, name: &str) -> PathBuf {
    write(
        dir,
        name,
        &mcsd_tests::peer_secret_kubeconfig(kubeconfig, exporter),
    )
}

const HELLO: &str = "hello.demo.svc.clusterset.local";

/// A kubeconfig file holding `text`, beside the sandbox's.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// kubectl with `kubeconfig`, expected to fail: its error output.
fn kubectl_refused(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "kubectl {} should have been refused: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_meshes_three_clusters_idempotently_with_read_only_credentials_and_leave_revokes_them() {
    let s = Sandbox::start(3, "mesh");
    mcsd_tests::export_hello_as_the_readme_does(&s.kubeconfigs(), 0);
    // Unconnected: cluster-c knows nothing of cluster-a's export.
    assert_eq!(dig(&s.dns(2), HELLO, "A").status, "NXDOMAIN");

    // --dry-run prints every object (none exists yet) and writes none.
    let before = s.join_objects();
    let printed = s.mcsd_ok(&["join", "--dry-run", "cluster-a", "cluster-b", "cluster-c"]);
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
    assert_eq!(s.join_objects(), before, "a dry run writes nothing");

    // The mesh: cluster-a's export resolves in cluster-b and cluster-c.
    let joined = s.mcsd_ok(&["join", "cluster-a", "cluster-b", "cluster-c"]);
    assert_eq!(joined.matches("joined: ").count(), 6, "{joined}");
    for i in [1, 2] {
        let ip = eventually(&format!("{HELLO} in cluster {i}"), WAIT, || {
            let a = dig(&s.dns(i), HELLO, "A");
            // The import exists before its clusterset IP does (NOERROR without records).
            async move { (a.status == "NOERROR" && !a.records.is_empty()).then_some(a.records) }
        })
        .await;
        assert_eq!(ip.len(), 1);
    }

    // Again: nothing is written.
    let after_first = s.join_objects();
    // In each cluster: for each of the two importers an identity, three bindings and a Role; for
    // each of the two exporters a Secret, a Role and its binding.
    assert_eq!(after_first.len(), 3 * (2 * 5 + 2 * 3), "{after_first:#?}");
    let again = s.mcsd_ok(&["join", "cluster-a", "cluster-b", "cluster-c"]);
    assert!(
        again
            .lines()
            .filter(|l| !l.starts_with("joined: "))
            .all(|l| l.ends_with(" unchanged")),
        "a second join changes nothing:\n{again}"
    );
    assert_eq!(s.join_objects(), after_first, "a second join writes nothing");
    // A dry run now says the same, object by object; one that would change prints it.
    s.kubectl(
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
    let dry = s.mcsd_ok(&["join", "--dry-run", "cluster-a", "cluster-b", "cluster-c"]);
    let unchanged = dry.lines().filter(|l| l.ends_with(" unchanged")).count();
    assert_eq!(unchanged, 6 * 8 - 1, "every object but one in place:\n{dry}");
    assert!(
        dry.contains(
            "# context cluster-a: ServiceAccount mcsd-system/mcsd-peer-cluster-b would be updated\n"
        ),
        "{dry}"
    );
    let relabelled = s.join_objects();
    s.mcsd_ok(&["join", "cluster-a", "cluster-b"]);
    assert_ne!(s.join_objects(), relabelled, "the real run puts it back");
    // An identity deleted and made anew revokes the tokens of the old one: join mints afresh
    // even though the Secret's token is not due for renewal.
    s.kubectl(
        0,
        &[
            "delete",
            "serviceaccount",
            "mcsd-peer-cluster-b",
            "-n",
            "mcsd-system",
        ],
    );
    let rejoined = s.mcsd_ok(&["join", "--one-way", "cluster-a", "cluster-b"]);
    assert!(
        rejoined.contains("cluster-a: ServiceAccount mcsd-system/mcsd-peer-cluster-b created\n")
            && rejoined.contains("cluster-b: Secret mcsd-system/peer-cluster-a updated\n"),
        "{rejoined}"
    );
    let fresh = peer_secret_kubeconfig(&s.kubeconfigs()[1], "cluster-a", &s.dir, "fresh.kubeconfig");
    kubectl(&fresh, &["get", "configmaps", "-n", "mcsd-system"]);

    // What cluster-c holds for cluster-a reads the exchange records and the cluster's identity,
    // and nothing else.
    let peer = peer_secret_kubeconfig(
        &s.kubeconfigs()[2],
        "cluster-a",
        &s.dir,
        "peer-a-for-c.kubeconfig",
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
    let left = s.mcsd_ok(&["leave", "--one-way", "cluster-a", "cluster-c"]);
    assert!(
        left.contains("ServiceAccount mcsd-peer-cluster-c deleted"),
        "{left}"
    );
    eventually(&format!("{HELLO} withdrawn in cluster-c"), WAIT, || {
        let a = dig(&s.dns(2), HELLO, "A");
        async move { (a.status == "NXDOMAIN").then_some(()) }
    })
    .await;
    let refused = kubectl_refused(&peer, &["get", "configmaps", "-n", "mcsd-system"]);
    assert!(
        refused.contains("Unauthorized") || refused.contains("credentials"),
        "the left peer's token is revoked: {refused}"
    );
    // cluster-b still imports it.
    assert_eq!(dig(&s.dns(1), HELLO, "A").status, "NOERROR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_refused_by_a_check_writes_nothing_and_says_why_in_one_line() {
    let s = Sandbox::start(2, "refused");
    let nothing = s.join_objects();
    let refused = |args: &[&str], kubeconfig: Option<&Path>, expected: &str| {
        let mut command = Command::new(mcsd_tests::mcsd_binary());
        command.arg("join").args(args).arg("--kubeconfig");
        command.arg(kubeconfig.map_or_else(|| s.kubeconfig(), Path::to_path_buf));
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "join {args:?} should fail");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(expected), "{expected:?} in: {stderr}");
        assert_eq!(
            s.join_objects(),
            nothing,
            "a refused join writes nothing ({stderr})"
        );
    };
    let text = std::fs::read_to_string(s.kubeconfig()).unwrap();

    // An unknown context, and one named twice.
    refused(&["cluster-a", "cluster-z"], None, "no context \"cluster-z\"");
    refused(&["cluster-a", "cluster-a"], None, "named twice");
    // Two contexts for one cluster: the same cluster id.
    let twice = text.replace(
        "contexts:\n",
        "contexts:\n- name: also-a\n  context:\n    cluster: cluster-a\n    user: cluster-a-admin\n",
    );
    let twice = write(&s.dir, "twice.kubeconfig", &twice);
    refused(
        &["cluster-a", "also-a", "cluster-b"],
        Some(&twice),
        "both say they are cluster cluster-a",
    );
    // An API server nobody answers at.
    let dead = text
        .replace(
            "contexts:\n",
            "contexts:\n- name: dead\n  context:\n    cluster: dead\n    user: cluster-a-admin\n",
        )
        .replace(
            "clusters:\n",
            "clusters:\n- name: dead\n  cluster:\n    server: https://127.0.0.1:1\n",
        );
    let dead = write(&s.dir, "dead.kubeconfig", &dead);
    refused(&["cluster-a", "dead"], Some(&dead), "cannot reach the API server");
    // An address for the peers that does not answer (here: nothing listens there).
    let server = "--server=cluster-b=https://127.0.0.1:1";
    refused(
        &[server, "cluster-a", "cluster-b"],
        None,
        "does not answer with the cluster's CA",
    );
    // Another ClusterSet.
    s.kubectl(
        1,
        &[
            "patch",
            "clusterproperty",
            "clusterset.k8s.io",
            "--type=merge",
            "-p",
            "{\"spec\":{\"value\":\"elsewhere\"}}",
        ],
    );
    refused(
        &["cluster-a", "cluster-b"],
        None,
        "only clusters of one ClusterSet can be joined",
    );
    // mcsd not installed (its CRDs missing).
    s.kubectl(1, &["delete", "crd", "serviceimports.multicluster.x-k8s.io"]);
    refused(&["cluster-a", "cluster-b"], None, "mcsd is not installed there");
    // Leaving asks only for the clusters' ids: a cluster that join refuses can still be left.
    let left = s.mcsd_ok(&["leave", "cluster-a", "cluster-b"]);
    assert_eq!(left.matches("left: ").count(), 2, "{left}");
}

/// Two sandbox clusters in this process, each with its mcsd, not peered: for tests that reach
/// into a cluster (its API server stopped, its token lifetimes) or an mcsd (its peer states).
struct InProcess {
    dir: PathBuf,
    members: Vec<mcsd::process::sandbox::Member>,
    mcsds: Vec<mcsd::process::sandbox::Mcsd>,
    /// What the mcsds were started with.
    options: mcsd::process::sandbox::Options,
    shutdown: tokio_util::sync::CancellationToken,
    /// `dir/kubeconfig`, both contexts.
    kubeconfig: PathBuf,
}

impl InProcess {
    async fn start(
        tag: &str,
        configs: [mcsd_sandbox::ClusterConfig; 2],
        options: mcsd::process::sandbox::Options,
    ) -> Self {
        let dir = std::env::temp_dir().join(format!("mcsd-join-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut members = Vec::new();
        for config in configs {
            members.push(
                mcsd::process::sandbox::start_member_with(config, &dir)
                    .await
                    .unwrap(),
            );
        }
        let shutdown = tokio_util::sync::CancellationToken::new();
        let options = mcsd::process::sandbox::Options {
            peered: false,
            ..options
        };
        let clusters: Vec<_> = members.iter().map(|m| &m.cluster).collect();
        let mut mcsds = Vec::new();
        for i in 0..2 {
            mcsds.push(
                mcsd::process::sandbox::start_mcsd(&clusters, i, &options, shutdown.clone())
                    .await
                    .unwrap(),
            );
        }
        let kubeconfig = write(
            &dir,
            "kubeconfig",
            &mcsd::process::sandbox::merged_kubeconfig(&members).unwrap(),
        );
        Self {
            dir,
            members,
            mcsds,
            options,
            shutdown,
            kubeconfig,
        }
    }

    fn kubeconfigs(&self) -> Vec<PathBuf> {
        self.members.iter().map(|m| m.kubeconfig.clone()).collect()
    }

    /// Another mcsd replica in cluster `i` (the two elect a leader), appended to `mcsds`.
    async fn add_replica(&mut self, i: usize) {
        let clusters: Vec<_> = self.members.iter().map(|m| &m.cluster).collect();
        let replica = mcsd::process::sandbox::start_mcsd(&clusters, i, &self.options, self.shutdown.clone())
            .await
            .unwrap();
        self.mcsds.push(replica);
    }

    /// `mcsd join` (the library) of both, with tokens living `ttl`.
    async fn join(&self, one_way: bool, ttl: Duration) {
        let options = mcsd::commands::join::JoinOptions {
            dry_run: false,
            token_ttl: ttl,
        };
        let contexts = ["cluster-a".to_string(), "cluster-b".to_string()];
        mcsd::commands::join::join(
            Some(&self.kubeconfig),
            &contexts,
            &Default::default(),
            one_way,
            &options,
        )
        .await
        .unwrap();
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for m in self.mcsds {
            let _ = m.stopped().await;
        }
        for m in self.members {
            m.cluster.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Peer tokens that live 6 s (the sandbox lets TokenRequests ask for so little): the importing
/// mcsd renews its own halfway through each life, many times over, while the import answers and
/// the peer stays synced throughout; the first token is long dead by the end. Of cluster-b's two
/// replicas only the leader renews.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_tokens_renew_themselves_across_several_lifetimes_without_a_withdrawal_or_a_flap() {
    use mcsd::daemon::metrics::PeerState;
    use mcsd_sandbox::ClusterConfig;
    const LIFETIME: Duration = Duration::from_secs(6);
    const RENEWALS: usize = 4;

    let configs = [0, 1].map(|i| ClusterConfig {
        min_token_lifetime: Duration::from_secs(1),
        ..ClusterConfig::nth(i)
    });
    let mut set = InProcess::start("renew", configs, Default::default()).await;
    // Two replicas in cluster-b: only the leader renews.
    set.add_replica(1).await;
    let (members, dir, b) = (&set.members, &set.dir, &set.mcsds[1]);
    // cluster-a exports hello; cluster-b imports it once joined one way, with 6-second tokens.
    mcsd_tests::export_hello_as_the_readme_does(&set.kubeconfigs(), 0);
    set.join(true, LIFETIME).await;
    let ip = eventually("hello in cluster-b", WAIT, || {
        let answer = dig(&b.dns, HELLO, "A");
        async move { (answer.status == "NOERROR" && !answer.records.is_empty()).then_some(answer) }
    })
    .await;
    let synced = || b.handle.peers.get("cluster-a").map(|p| p.state) == Some(PeerState::Synced);
    eventually("cluster-a synced in cluster-b", WAIT, || async {
        synced().then_some(())
    })
    .await;

    let expiry = || mcsd_tests::peer_secret_annotation(&members[1].kubeconfig, "cluster-a", "token-expires");
    let first = peer_secret_kubeconfig(&members[1].kubeconfig, "cluster-a", dir, "first-token.kubeconfig");
    let mut expiries = vec![expiry()];

    // Until the token has been renewed RENEWALS times: the answer never changes and the peer never
    // leaves Synced.
    let deadline = std::time::Instant::now() + LIFETIME * (RENEWALS as u32 + 4);
    while expiries.len() <= RENEWALS {
        assert_eq!(dig(&b.dns, HELLO, "A"), ip, "the import answers throughout");
        assert!(
            synced(),
            "cluster-a stays synced in cluster-b: {:?}",
            b.handle.peers.get("cluster-a")
        );
        let now = expiry();
        if expiries.last() != Some(&now) {
            expiries.push(now);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "renewed only {} times: {expiries:?}",
            expiries.len() - 1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The expiry the metric shows is the Secret's newest.
    let scraped =
        mcsd::commands::admin_client::get(b.admin, "/metrics", mcsd::commands::admin_client::TIMEOUT)
            .await
            .unwrap()
            .body;
    assert!(
        scraped.contains("mcsd_peer_credential_expiry_timestamp_seconds{peer=\"cluster-a\"}"),
        "{scraped}"
    );
    // The first token expired long ago; the one in the Secret works.
    let refused = kubectl_refused(&first, &["get", "configmaps", "-n", "mcsd-system"]);
    assert!(refused.contains("Unauthorized"), "{refused}");
    let current = peer_secret_kubeconfig(
        &members[1].kubeconfig,
        "cluster-a",
        dir,
        "current-token.kubeconfig",
    );
    kubectl(&current, &["get", "configmaps", "-n", "mcsd-system"]);
    // One token per renewal, from the leading replica (the join's first, and perhaps one renewal
    // under way): the other replica asked for none.
    let issued = members[0]
        .cluster
        .tokens_issued("mcsd-system", "mcsd-peer-cluster-b");
    assert!(
        issued <= expiries.len() + 1,
        "{issued} tokens issued for {} renewals: more than one replica renews",
        expiries.len() - 1
    );

    set.stop().await;
}

/// A peer token whose renewal the exporting cluster refuses (its renew RoleBinding deleted) is
/// reported as soon as the first renewal fails, while the token still works: `ClustersAtRisk` on
/// the import it feeds, `mcsd why`, `mcsd status` and the metric, each naming the fix; the import
/// keeps answering; past the expiry the peer is refused with the same fix named. Running
/// `mcsd join` again, as both say, clears every one of them without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_cannot_be_renewed_is_reported_before_it_expires_and_join_fixes_it() {
    use mcsd_sandbox::ClusterConfig;
    // Renewal is due after 10 s; the token works for 20.
    const LIFETIME: Duration = Duration::from_secs(20);

    let configs = [0, 1].map(|i| ClusterConfig {
        min_token_lifetime: Duration::from_secs(1),
        ..ClusterConfig::nth(i)
    });
    let set = InProcess::start("at-risk", configs, Default::default()).await;
    let (members, b) = (&set.members, &set.mcsds[1]);
    mcsd_tests::export_hello_as_the_readme_does(&set.kubeconfigs(), 0);
    set.join(true, LIFETIME).await;
    // cluster-a no longer lets cluster-b's identity mint its tokens.
    kubectl(
        &members[0].kubeconfig,
        &[
            "delete",
            "rolebinding",
            "mcsd-peer-cluster-b-renew",
            "-n",
            "mcsd-system",
        ],
    );
    let expires: k8s_openapi::jiff::Timestamp =
        mcsd_tests::peer_secret_annotation(&members[1].kubeconfig, "cluster-a", "token-expires")
            .parse()
            .unwrap();
    let ip = eventually("hello in cluster-b", WAIT, || {
        let answer = dig(&b.dns, HELLO, "A");
        async move { (answer.status == "NOERROR" && !answer.records.is_empty()).then_some(answer) }
    })
    .await;
    let condition = |type_: &'static str| {
        let kubeconfig = members[1].kubeconfig.clone();
        move || {
            let out = kubectl(
                &kubeconfig,
                &[
                    "get",
                    "serviceimport",
                    "hello",
                    "-n",
                    "demo",
                    "-o",
                    &format!("jsonpath={{.status.conditions[?(@.type==\"{type_}\")]['status','message']}}"),
                ],
            );
            out.split_once(' ')
                .map(|(s, m)| (s.to_string(), m.to_string()))
                .unwrap_or_default()
        }
    };
    let at_risk = condition("ClustersAtRisk");
    let (_, message) = eventually("ClustersAtRisk=True on cluster-b's import", LIFETIME, || {
        let (status, message) = at_risk();
        async move { (status == "True").then_some((status, message)) }
    })
    .await;
    assert!(
        k8s_openapi::jiff::Timestamp::now() < expires,
        "reported before the token expires ({expires})"
    );
    assert!(
        message.starts_with(&format!(
            "at risk: cluster-a: its credentials expire at {expires} and cannot be renewed: the peer refused a new token for mcsd-peer-cluster-b"
        )) && message.contains("403")
            && message.ends_with("run `mcsd join` for this pair again, or renew the kubeconfig in Secret mcsd-system/peer-cluster-a"),
        "{message}"
    );
    assert_eq!(condition("ClustersExcluded")().0, "False", "still imported");
    assert_eq!(dig(&b.dns, HELLO, "A"), ip, "the import answers meanwhile");

    let why = mcsd_tests::why(b.admin, HELLO, &[]);
    assert!(
        why.contains("At risk (still imported;") && why.contains("\n  cluster-a: its credentials expire at"),
        "{why}"
    );
    // The status is published at most every 2 s.
    eventually("the refused renewal in cluster-b's status", WAIT, || async {
        let status = mcsd_tests::mcsd_ok(
            &set.kubeconfig,
            &["status", "-o", "json", "--context", "cluster-b"],
        );
        let status: serde_json::Value = serde_json::from_str(&status).ok()?;
        let peer = &status[0]["mcsd"]["peers"][0];
        (peer["state"] == "synced"
            && peer["credentialProblem"]
                .as_str()
                .is_some_and(|p| p.contains("cannot be renewed")))
        .then_some(())
    })
    .await;
    let failing = || async {
        mcsd::commands::admin_client::get(b.admin, "/metrics", mcsd::commands::admin_client::TIMEOUT)
            .await
            .unwrap()
            .body
            .lines()
            .find_map(|l| l.strip_prefix("mcsd_peer_credential_renewal_failing{peer=\"cluster-a\"} "))
            .map(str::to_string)
    };
    assert_eq!(failing().await.as_deref(), Some("1"));

    // Left alone, the token expires: the peer is refused, naming the same fix, and its endpoints
    // stay through the grace period.
    let refused = eventually("cluster-a refused once its token expired", WAIT, || async {
        match b.handle.peers.get("cluster-a").map(|p| p.state) {
            Some(mcsd::daemon::metrics::PeerState::Refused(why)) => Some(why),
            _ => None,
        }
    })
    .await;
    assert!(
        k8s_openapi::jiff::Timestamp::now() >= expires
            && refused.contains("401")
            && refused.ends_with("run `mcsd join` for this pair again, or renew the kubeconfig in Secret mcsd-system/peer-cluster-a"),
        "{refused}"
    );
    assert_eq!(dig(&b.dns, HELLO, "A"), ip, "kept through the grace period");

    // The fix both name.
    set.join(true, LIFETIME).await;
    eventually("cluster-a synced again", WAIT, || async {
        (b.handle.peers.get("cluster-a").map(|p| p.state) == Some(mcsd::daemon::metrics::PeerState::Synced))
            .then_some(())
    })
    .await;
    eventually("ClustersAtRisk=False again", WAIT, || {
        let (status, _) = at_risk();
        async move { (status == "False").then_some(()) }
    })
    .await;
    assert_eq!(failing().await.as_deref(), Some("0"));
    assert_eq!(condition("ClustersExcluded")().0, "False");
    assert_eq!(dig(&b.dns, HELLO, "A"), ip);

    set.stop().await;
}

/// `mcsd status` with nothing but the kubeconfig: a joined peer synced, then unreachable (its API
/// server stopped) with the reason, then synced again; the counts of exports and imports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_peer_going_unreachable_and_coming_back() {
    // Probes every half second: an API server that stops is noticed at once.
    let options = mcsd::process::sandbox::Options {
        peer_grace: Duration::from_secs(5),
        ..Default::default()
    };
    let set = InProcess::start("status", [0, 1].map(mcsd_sandbox::ClusterConfig::nth), options).await;
    let (members, kubeconfig) = (&set.members, &set.kubeconfig);
    mcsd_tests::export_hello_as_the_readme_does(&set.kubeconfigs(), 0);
    set.join(false, Duration::from_secs(3600)).await;

    let status = |extra: &[&str]| -> serde_json::Value {
        let out = mcsd_tests::mcsd_ok(kubeconfig, &[&["status", "-o", "json"], extra].concat());
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

    members[0].cluster.stop_api_server().await;
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
    members[0].cluster.start_api_server().await.unwrap();
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
    let text = mcsd_tests::mcsd_ok(kubeconfig, &["status", "--context", "cluster-a"]);
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
