//! Installs the programs the tests drive before any test is built: `apt-get install` of the
//! missing ones when running as root on a machine with apt-get; otherwise stops the build with
//! one line naming them and the command that installs them. `MCSD_TEST_INSTALL=0` forbids the
//! install (the build then stops instead).

#![allow(clippy::print_stderr)]

#[path = "src/table.rs"]
mod table;

use table::{TOOLS, find_on, missing_line};

fn main() {
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=MCSD_TEST_INSTALL");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing = |path: &std::ffi::OsStr| -> Vec<(&'static str, &'static str)> {
        TOOLS
            .iter()
            .copied()
            .filter(|(program, _)| find_on(path, program).is_none())
            .collect()
    };
    let mut absent = missing(&path);
    if !absent.is_empty() && may_install() {
        let packages: Vec<&str> = absent.iter().map(|(_, p)| *p).collect();
        println!(
            "cargo:warning=the tests drive dig, kdig and kubectl: installing the missing {} with apt-get",
            packages.join(" ")
        );
        if let Err(problem) = apt_get(&packages) {
            println!("cargo:warning=apt-get failed: {problem}");
        }
        absent = missing(&path);
    }
    if !absent.is_empty() {
        eprintln!("{}", missing_line(&absent));
        std::process::exit(1);
    }
    // Found: build again only if one of them goes away or changes.
    for (program, _) in TOOLS {
        if let Some(at) = find_on(&path, program) {
            println!("cargo:rerun-if-changed={}", at.display());
        }
    }
}

/// Root, apt-get present, and not forbidden.
fn may_install() -> bool {
    if std::env::var("MCSD_TEST_INSTALL").is_ok_and(|v| v == "0") {
        return false;
    }
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    });
    root && find_on(&std::env::var_os("PATH").unwrap_or_default(), "apt-get").is_some()
}

fn apt_get(packages: &[&str]) -> Result<(), String> {
    let run = |args: &[&str]| -> Result<(), String> {
        let out = std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(err
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("failed")
                .to_string())
        }
    };
    run(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend_from_slice(packages);
    run(&args)
}
