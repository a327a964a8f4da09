//! mcsd as a kubectl plugin: with the binary on `PATH` as `kubectl-mcsd`, `kubectl mcsd …` is
//! `mcsd …`, through the real kubectl, with kubectl's `KUBECONFIG`.

use std::{path::Path, process::Command};

use mcsd_tests::{ClusterSet, WAIT, eventually, fixtures::export_when_ready};

/// `kubectl ARGS` with `bin` first on `PATH` and `KUBECONFIG` set: kubectl finds its plugins on
/// `PATH` and hands them its environment.
fn kubectl_with(bin: &Path, kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    let path = std::env::join_paths(std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    Command::new("kubectl")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("kubectl runs")
}

/// `kubectl mcsd join`, `status` and `why` do what `mcsd join`, `status` and `why` do, and its
/// help and errors name the command as the user typed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_mcsd_joins_shows_status_and_explains_a_name() {
    mcsd_test_tools::require(&["kubectl"]);
    let set = ClusterSet::unpeered(2).await;
    set.create_namespace("demo");
    let bin = set.scratch().join("plugins");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(mcsd_tests::mcsd_binary(), bin.join("kubectl-mcsd")).unwrap();
    let kubeconfig = set.kubeconfig();
    let run = |args: &[&str]| kubectl_with(&bin, &kubeconfig, args);
    let ok = |args: &[&str]| mcsd_tests::succeeded(&format!("kubectl {}", args.join(" ")), run(args));

    let plugins = ok(&["plugin", "list", "--name-only"]);
    assert!(plugins.lines().any(|l| l.trim() == "kubectl-mcsd"), "{plugins}");
    let help = ok(&["mcsd", "--help"]);
    assert!(help.contains("Usage: kubectl mcsd "), "{help}");

    // The two clusters know nothing of each other until `kubectl mcsd join` connects them.
    let joined = ok(&["mcsd", "join", "cluster-a", "cluster-b"]);
    assert_eq!(joined.matches("joined: ").count(), 2, "{joined}");

    export_when_ready(&set, 0, "demo", "hello").await;
    let status = eventually(
        "kubectl mcsd status to show cluster-b importing hello",
        WAIT,
        || async {
            let out = ok(&["mcsd", "status", "--context", "cluster-b", "-o", "json"]);
            let status: serde_json::Value = serde_json::from_str(&out).ok()?;
            (status[0]["imports"] == 1).then_some(status)
        },
    )
    .await;
    assert_eq!(status[0]["mcsd"]["cluster"], "cluster-b", "{status}");
    let direct: serde_json::Value =
        serde_json::from_str(&set.mcsd(&["status", "--context", "cluster-b", "-o", "json"])).unwrap();
    assert_eq!(status[0]["imports"], direct[0]["imports"]);

    let admin = set.members[1].admin.to_string();
    let why = ok(&[
        "mcsd",
        "why",
        "hello.demo.svc.clusterset.local",
        "--admin",
        &admin,
        "-o",
        "json",
    ]);
    let why: serde_json::Value = serde_json::from_str(&why).unwrap();
    assert!(why.to_string().contains("cluster-a"), "{why}");

    // A bad flag: one line that names the plugin's own help, and kubectl passes the exit code on.
    let bad = run(&["mcsd", "status", "--no-such-flag"]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.starts_with("kubectl mcsd: ") && stderr.contains("(see `kubectl mcsd --help`)"),
        "{stderr}"
    );
    set.stop().await;
}
