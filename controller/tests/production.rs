//! The production build (`Dockerfile`: `--no-default-features`) carries no sandbox: neither the
//! sandbox crate nor the certificate stack only it needs is in its dependency tree.

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
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("-p mcsd --no-default-features"),
        "the Dockerfile builds the production binary"
    );
}
