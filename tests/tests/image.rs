//! The production image, as an operator runs it: built by `.ci/image` (no daemon, no registry),
//! loaded into podman, it carries the Dockerfile's user, entrypoint and command and no sandbox,
//! and, run as non-root on a read-only root filesystem with nothing but a ServiceAccount token,
//! it serves as one more replica of a real cluster's mcsd: ready, and answering DNS as the
//! cluster's mcsd does.
//!
//! Needs podman and the image (`MCSD_IMAGE`, the tarball `.ci/image` writes): ignored by `cargo
//! test`; `tests/kube/test.sh` builds the image and runs it on the real tier.

use std::{process::Command, time::Duration};

use mcsd_tests::{ClusterSet, WAIT, dig, eventually, fixtures::export_when_ready, fixtures::resolved};

/// podman, with runc as its runtime: on CI's machines (cgroups v1 alongside v2) crun refuses to
/// start a container; runc does. Debian's `runc`, installed by `tests/kube/test.sh`.
fn podman_command() -> Command {
    let mut command = Command::new("podman");
    command.args(["--runtime", "runc"]);
    command
}

/// The resource limits a container asks for: podman's defaults are above what CI's machines let
/// a process set (`setrlimit` is refused), so ask for what this process has, at most plenty.
fn ulimits() -> Vec<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let hard = |name: &str, at_most: u64| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(at_most, |h| h.min(at_most))
    };
    let nofile = hard("Max open files", 65_536);
    vec![
        "--ulimit".into(),
        format!("nofile={nofile}:{nofile}"),
        "--ulimit".into(),
        "nproc=4096:4096".into(),
    ]
}

/// `podman ARGS`, failing the test with podman's own words unless it succeeds.
fn podman(args: &[&str]) -> String {
    let out = podman_command()
        .args(args)
        .output()
        .expect("podman runs (Debian's package `podman`)");
    mcsd_tests::succeeded(&format!("podman {}", args.join(" ")), out)
}

/// Removes the container (if any) and then the loaded image when dropped, failed or not.
struct Loaded {
    image: String,
    container: Option<String>,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        if let Some(container) = &self.container {
            let _ = podman_command()
                .args(["rm", "--force", "--time", "5", container])
                .output();
        }
        let _ = podman_command().args(["rmi", "--force", &self.image]).output();
    }
}

/// The Dockerfile's value of `instruction` in its last stage (`USER`, `ENTRYPOINT`, `CMD`).
fn dockerfile(instruction: &str) -> String {
    let text = std::fs::read_to_string(mcsd_tests::repo_root().join("Dockerfile")).unwrap();
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("the Dockerfile has no {instruction}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs podman, the image from .ci/image (MCSD_IMAGE) and a real cluster: tests/kube/test.sh runs it"]
async fn the_image_runs_as_non_root_read_only_and_serves_as_a_replica_of_a_real_cluster() {
    let archive = std::env::var("MCSD_IMAGE")
        .expect("MCSD_IMAGE names the image tarball: build it with `.ci/image --out FILE`");
    let set = ClusterSet::with_namespace(2, "demo").await;
    assert!(
        set.is_real(),
        "this story runs on the real tier (tests/kube/test.sh)"
    );

    let load = podman(&["load", "--quiet", "--input", &archive]);
    let image = load
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .unwrap_or_else(|| panic!("podman load named no image: {load}"))
        .trim()
        .to_string();
    let mut loaded = Loaded {
        image: image.clone(),
        container: None,
    };
    // What the Dockerfile says, the image says.
    let config: serde_json::Value = serde_json::from_str(&podman(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config}}",
        &image,
    ]))
    .unwrap();
    assert_eq!(config["User"], dockerfile("USER"));
    assert_eq!(config["Entrypoint"].to_string(), dockerfile("ENTRYPOINT"));
    assert_eq!(config["Cmd"].to_string(), dockerfile("CMD"));
    let limits = ulimits();
    let limits: Vec<&str> = limits.iter().map(String::as_str).collect();
    // With no network: podman's default bridge would add a link and firewall rules to the host,
    // which the tier must leave as it found it.
    let help = podman(
        &[
            &["run", "--rm", "--network", "none"],
            &limits[..],
            &[&image, "--help"],
        ]
        .concat(),
    );
    assert!(help.contains("Usage: mcsd"), "{help}");
    // The production binary carries no sandbox.
    let sandbox = podman_command()
        .args(
            [
                &["run", "--rm", "--network", "none"],
                &limits[..],
                &[&image, "sandbox", "--clusters", "1"],
            ]
            .concat(),
        )
        .output()
        .unwrap();
    assert!(!sandbox.status.success());
    assert!(
        String::from_utf8_lossy(&sandbox.stderr).contains("unrecognized subcommand 'sandbox'"),
        "{}",
        String::from_utf8_lossy(&sandbox.stderr)
    );

    // One more replica of cluster-a's mcsd, with what a pod would have: the mcsd ServiceAccount's
    // token and the cluster's CA, in a kubeconfig mounted read-only. Its API server is named
    // `localhost` (its certificate's name too): the static binary resolves names with no C
    // library in the image.
    let a = &set.members[0];
    let token = set.kubectl(
        0,
        &["create", "token", "mcsd", "-n", "mcsd-system", "--duration=1h"],
    );
    let mut kubeconfig = kube::config::Kubeconfig::read_from(&a.kubeconfig).unwrap();
    for cluster in &mut kubeconfig.clusters {
        if let Some(c) = cluster.cluster.as_mut() {
            c.server = c
                .server
                .as_ref()
                .map(|s| s.replace("https://127.0.0.1:", "https://localhost:"));
            assert!(
                c.server
                    .as_ref()
                    .is_some_and(|s| s.starts_with("https://localhost:")),
                "{:?}",
                c.server
            );
        }
    }
    for user in &mut kubeconfig.auth_infos {
        user.auth_info = Some(kube::config::AuthInfo {
            token: Some(token.trim().to_string().into()),
            ..Default::default()
        });
    }
    let file = set.write(
        "image-mcsd.kubeconfig",
        &serde_yaml::to_string(&kubeconfig).unwrap(),
    );
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (mut args, dns, admin) = a.replica_args();
    for arg in &mut args {
        if arg.starts_with("--kubeconfig=") {
            *arg = "--kubeconfig=/etc/mcsd/kubeconfig".into();
        }
    }
    let name = format!("mcsd-image-{}", std::process::id());
    let mount = format!("{}:/etc/mcsd/kubeconfig:ro", file.display());
    let mut run = vec![
        "run",
        "--detach",
        "--name",
        &name,
        "--read-only",
        "--network",
        "host",
        "--env",
        "MCSD_POD_NAME=mcsd-image",
        "--volume",
        &mount,
    ];
    run.extend(&limits);
    run.push(&image);
    run.extend(args.iter().map(String::as_str));
    loaded.container = Some(name.clone());
    podman(&run);

    eventually("the image's mcsd to turn ready (/readyz 200)", WAIT, || async {
        let reply = mcsd::commands::admin_client::get(admin, "/readyz", Duration::from_secs(5)).await;
        reply.is_ok_and(|r| r.status == 200).then_some(())
    })
    .await;
    // Non-root and read-only, as it runs.
    let user = podman(&["top", &name, "user", "huser"]);
    assert!(
        user.lines()
            .skip(1)
            .all(|l| l.split_whitespace().eq(["65532", "65532"])),
        "{user}"
    );
    assert_eq!(
        podman(&["inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", &name]).trim(),
        "true"
    );

    // It answers as cluster-a's mcsd does: cluster-b's export resolves through it.
    export_when_ready(&set, 1, "demo", "hello").await;
    resolved(a.dns, "hello.demo.svc.clusterset.local").await;
    let answer = eventually("the image's mcsd to answer hello", WAIT, || async {
        let answer = dig(&dns, "hello.demo.svc.clusterset.local", "A");
        (answer.status == "NOERROR" && !answer.records.is_empty()).then_some(answer)
    })
    .await;
    assert_eq!(
        answer.records,
        dig(&a.dns, "hello.demo.svc.clusterset.local", "A").records
    );
    drop(loaded);
    set.stop().await;
}
