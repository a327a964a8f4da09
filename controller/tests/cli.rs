//! The `mcsd` command line, run as a user runs it.

use std::process::Command;

fn mcsd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mcsd"))
        .args(args)
        .output()
        .expect("run mcsd")
}

#[test]
fn help_lists_the_subcommands() {
    let out = mcsd(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for command in ["crds", "run", "sandbox", "dns", "why"] {
        assert!(text.contains(command), "{command} missing from:\n{text}");
    }
}

/// Every flag of `mcsd run --help` has a description (no bare `--flag <VALUE>` line) and the
/// ones a newcomer needs are there.
#[test]
fn run_help_documents_every_flag() {
    let out = mcsd(&["run", "--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--kubeconfig",
        "--cluster-id",
        "--clusterset",
        "--exchange-namespace",
        "--peer ",
        "--peer-sync-timeout",
        "--peer-grace-period",
        "--dns-listen",
        "--zone",
        "--ttl",
        "--admin-listen",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("--") {
            // clap prints the description on the same line or the next one.
            let described = line.trim_start().split("  ").filter(|s| !s.is_empty()).count() > 1
                || lines.get(i + 1).is_some_and(|next| {
                    let next = next.trim_start();
                    !next.is_empty() && !next.starts_with('-')
                });
            assert!(described, "undocumented flag: {line}");
        }
    }
}

#[test]
fn a_bad_flag_fails_with_one_line_naming_it() {
    let out = mcsd(&["crds", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");
}

#[test]
fn crds_prints_exactly_the_committed_files_as_one_stream() {
    let out = mcsd(&["crds"]);
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("crds");
    let files: Vec<String> = [
        "multicluster.x-k8s.io_serviceexports.yaml",
        "multicluster.x-k8s.io_serviceimports.yaml",
        "about.k8s.io_clusterproperties.yaml",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(root.join(f)).unwrap())
    .collect();
    assert_eq!(printed, files.join("---\n"));
}

#[test]
fn crds_into_an_unwritable_directory_fails_with_one_line() {
    let out = mcsd(&["crds", "--dir", "/nonexistent/dir"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/dir"), "{err}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    // An unreadable objects file fails start-up after logging has begun.
    let dir = std::env::temp_dir().join(format!("mcsd-json-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("objects.yaml");
    std::fs::write(&path, "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcsd"))
        .args([
            "--log-format",
            "json",
            "dns",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--objects",
        ])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("mcsd dns: serving"), "{line}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.lines().count() >= 2, "{err}");
    for l in err.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{l}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `mcsd run` serves DNS as `mcsd dns` does: every DNS flag of `mcsd dns` is a flag of `mcsd run`
/// (`--listen` is `--dns-listen` there, `--admin` is `--admin-listen`).
#[test]
fn run_has_every_dns_flag_of_dns() {
    let flags = |command: &str| -> Vec<String> {
        let out = mcsd(&[command, "--help"]);
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--")))
            .map(|f| f.trim_end_matches(',').split('=').next().unwrap().to_string())
            .collect()
    };
    let run = flags("run");
    let dns = flags("dns");
    for known in [
        "--workers",
        "--tcp-idle-timeout",
        "--max-udp-payload",
        "--ttl",
        "--zone",
    ] {
        assert!(
            dns.iter().any(|f| f == known),
            "{known} not found in mcsd dns --help: {dns:?}"
        );
    }
    for flag in dns {
        let as_in_run = match flag.as_str() {
            "--listen" => "--dns-listen",
            "--admin" => "--admin-listen",
            "--objects" | "--kubeconfig" | "--help" => continue,
            other => other,
        };
        assert!(
            run.iter().any(|f| f == as_in_run),
            "mcsd run lacks {as_in_run} (mcsd dns {flag})"
        );
    }
}
