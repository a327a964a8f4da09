//! The programs the tests drive and the Debian packages that provide them. Shared by the build
//! script (which installs them) and the library (which checks them); no dependencies.

/// `(program, Debian package)` for every external program a default test run drives.
pub const TOOLS: &[(&str, &str)] = &[
    ("dig", "dnsutils"),
    ("kdig", "knot-dnsutils"),
    ("kubectl", "kubernetes-client"),
];

/// Where `program` is on `path` (a `PATH` value), if anywhere.
pub fn find_on(path: &std::ffi::OsStr, program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The one line that names the missing programs and the command that installs them.
pub fn missing_line(missing: &[(&str, &str)]) -> String {
    let programs: Vec<&str> = missing.iter().map(|(p, _)| *p).collect();
    let packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    format!(
        "the tests drive {} and this machine lacks {}: install with `sudo apt-get install -y {}` \
         (as root, `cargo test` installs them itself), then run the tests again",
        TOOLS.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(", "),
        programs.join(", "),
        packages.join(" "),
    )
}
