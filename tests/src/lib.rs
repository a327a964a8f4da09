//! End-to-end tests of mcsd, through the interfaces users touch: `kubectl`, `dig`, and the `mcsd`
//! command line. The tests live in `tests/tests/`; this library holds what they share.

use std::path::{Path, PathBuf};

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}
