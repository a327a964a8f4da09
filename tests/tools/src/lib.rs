//! The external programs the tests drive: `dig`, `kdig` and `kubectl`.
//!
//! The build script installs whichever of them is missing before any test is built, when it
//! may (root, with `apt-get`), and otherwise stops the build with one line that names them and
//! the command that installs them. So the README's test command, `cargo test --workspace`, needs
//! no step before it on a fresh Debian machine. [`require`] is the same check at run time, for a
//! test binary run by itself: once per process, up front, with the same line.

mod table;

pub use table::{TOOLS, find_on, missing_line};

/// Fails the calling test, with the one line that names what is missing and how to install it,
/// unless every program in `programs` is on `PATH`. Checked once per program and process.
pub fn require(programs: &[&str]) {
    use std::sync::{Mutex, OnceLock};
    static CHECKED: OnceLock<Mutex<Vec<(String, bool)>>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| Mutex::new(Vec::new()));
    let mut checked = checked.lock().unwrap_or_else(|e| e.into_inner());
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut missing = Vec::new();
    for program in programs {
        let present = match checked.iter().find(|(p, _)| p == program) {
            Some((_, present)) => *present,
            None => {
                let present = find_on(&path, program).is_some();
                checked.push(((*program).to_string(), present));
                present
            }
        };
        if !present {
            let package = TOOLS
                .iter()
                .find(|(p, _)| p == program)
                .map_or(*program, |(_, package)| package);
            missing.push((*program, package));
        }
    }
    assert!(missing.is_empty(), "{}", missing_line(&missing));
}
