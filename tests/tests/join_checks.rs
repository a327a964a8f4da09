//! `mcsd join` refusing what it must not join, each time in one line and writing nothing: an
//! unknown context, one named twice, two contexts for one cluster, an API server nobody answers
//! at, a peer address that does not answer with the cluster's CA, another ClusterSet, mcsd not
//! installed. Sandbox clusters only: the test breaks them on purpose (the ClusterSet's id
//! changed, a CRD deleted).

use std::{path::Path, process::Command};

use mcsd_tests::ClusterSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_refused_by_a_check_writes_nothing_and_says_why_in_one_line() {
    let s = ClusterSet::sandbox_with(
        2,
        mcsd::process::sandbox::Options {
            peered: false,
            ..Default::default()
        },
    )
    .await;
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
    let twice = s.write("twice.kubeconfig", &twice);
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
    let dead = s.write("dead.kubeconfig", &dead);
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
    let left = s.mcsd(&["leave", "cluster-a", "cluster-b"]);
    assert_eq!(left.matches("left: ").count(), 2, "{left}");
    s.stop().await;
}
