//! The production build (`.ci/static-binary`, which the Dockerfile and `.ci/image` run:
//! `--no-default-features`) carries no sandbox: neither the sandbox crate nor the certificate
//! stack only it needs is in its dependency tree.

use std::process::Command;

fn dependency_tree(features: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "mcsd",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .args(features)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut crates: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    crates.sort();
    crates.dedup();
    crates
}

#[test]
fn the_production_build_has_no_sandbox_in_its_dependency_tree() {
    let production = dependency_tree(&["--no-default-features"]);
    for absent in ["mcsd-sandbox", "rcgen", "prost-reflect"] {
        assert!(
            !production.iter().any(|c| c == absent),
            "{absent} is in the production build"
        );
    }
    // The default build (the quick start) has the sandbox.
    let default = dependency_tree(&[]);
    assert!(default.iter().any(|c| c == "mcsd-sandbox"));
    assert!(production.len() < default.len());
    // The Dockerfile and .ci/image both take the binary .ci/static-binary builds.
    let read =
        |file: &str| std::fs::read_to_string(format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert!(
        read(".ci/static-binary").contains("-p mcsd --no-default-features"),
        ".ci/static-binary builds the production binary"
    );
    assert!(read("Dockerfile").contains("RUN .ci/static-binary /out/mcsd"));
    assert!(read(".ci/image").contains("\"$repo/.ci/static-binary\""));
}
