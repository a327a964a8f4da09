//! `mcsd sandbox`: the contract other tools rely on.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn state_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mcsd-sandbox-cli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn sandbox_writes_kubeconfigs_and_manifest_says_ready_and_exits_cleanly_on_sigterm() {
    let dir = state_dir("ready");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcsd"))
        .args(["sandbox", "--clusters", "2", "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mcsd starts");
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "sandbox ready\n");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("sandbox.json")).unwrap()).unwrap();
    let members = manifest.as_array().unwrap();
    assert_eq!(members.len(), 2);
    for (member, name) in members.iter().zip(["cluster-a", "cluster-b"]) {
        assert_eq!(member["name"], name);
        assert!(member["api"].as_str().unwrap().starts_with("https://127.0.0.1:"));
        let kubeconfig = std::fs::read_to_string(member["kubeconfig"].as_str().unwrap()).unwrap();
        assert!(kubeconfig.contains("certificate-authority-data") && kubeconfig.contains(name));
        let dns = member["dns"].as_str().expect("every member serves DNS");
        assert!(dns.starts_with("127.0.0.1:"), "{dns}");
        let admin = member["admin"]
            .as_str()
            .expect("every member's mcsd has an admin listener");
        assert!(admin.starts_with("127.0.0.1:"), "{admin}");
    }
    // `mcsd why` finds a member's mcsd through sandbox.json.
    let out = Command::new(env!("CARGO_BIN_EXE_mcsd"))
        .args(["why", "nope.demo.svc.clusterset.local", "--sandbox"])
        .arg(&dir)
        .args(["--cluster", "cluster-b"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.starts_with("nope.demo.svc.clusterset.local.  (asked of cluster-b's mcsd"),
        "{text}"
    );
    assert!(text.contains("A     NXDOMAIN"), "{text}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    let log = log.join().unwrap();
    assert!(exit.success(), "exit status {exit:?}: {log}");
    // A clean stop says nothing an operator must act on: each mcsd stops before the API server
    // it talks to.
    assert!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "a clean stop logged:\n{log}"
    );
}

#[test]
fn sandbox_rejects_a_bad_cluster_count_with_one_clear_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_mcsd"))
        .args(["sandbox", "--clusters", "0", "--dir"])
        .arg(state_dir("bad"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().next().unwrap().contains("--clusters"), "{err}");
}
