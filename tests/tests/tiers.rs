//! Which test files run on which tier, decided by the files themselves. A file whose stories take
//! whichever ClusterSet the tests are pointed at (`ClusterSet::start`, `with_namespace`,
//! `unpeered`) runs on the sandbox tier (`cargo test`) and again on the real one
//! (`tests/kube/test.sh` finds it by that call, with no list to keep); a file that starts sandbox
//! clusters of its own (`ClusterSet::sandbox*`, `SandboxProcess`) runs on the sandbox tier only.
//! A file whose stories take a hub ClusterSet (`ClusterSet::hub_start`, `hub_with_namespace`) runs
//! on the sandbox tier and again on the real tier's hub ClusterSet (`up.sh --hub`). A file whose
//! stories take clusters installed with Helm (`ClusterSet::installed_with_helm`) runs only on
//! the real tier's Helm ClusterSet (`up.sh --install helm`). One file is one of the four, so the
//! real tier never runs a sandbox story twice, nor a story on a ClusterSet it was not written for.

use std::path::Path;

/// What `tests/kube/test.sh` greps for (extended regular expression) to choose its files.
const EITHER_TIER: &str = r"ClusterSet::(start|with_namespace|unpeered)\(";

/// What it greps for to choose the files its hub ClusterSet runs.
const HUB_TIER: &str = r"ClusterSet::hub_(start|with_namespace)\(";

/// What it greps for to choose the files its Helm ClusterSet runs.
const HELM_TIER: &str = r"ClusterSet::installed_with_helm\(";

fn helm_tier(text: &str) -> bool {
    // Spelt in pieces, so that this file is not one of them.
    text.contains(&format!("ClusterSet::{}(", "installed_with_helm"))
}

fn hub_tier(text: &str) -> bool {
    ["hub_start(", "hub_with_namespace("]
        .iter()
        .any(|call| text.contains(&format!("ClusterSet::{call}")))
}

fn either_tier(text: &str) -> bool {
    // Spelt in pieces, so that this file is not one of them.
    ["start(", "with_namespace(", "unpeered("]
        .iter()
        .any(|call| text.contains(&format!("ClusterSet::{call}")))
}

fn sandbox_only(text: &str) -> bool {
    text.contains("ClusterSet::sandbox") || text.contains("SandboxProcess::start")
}

#[test]
fn no_test_file_mixes_stories_for_either_tier_with_sandbox_only_ones() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut real_tier = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("tiers.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let kinds = [
            either_tier(&text),
            hub_tier(&text),
            helm_tier(&text),
            sandbox_only(&text),
        ];
        assert!(
            kinds.iter().filter(|k| **k).count() <= 1,
            "{} mixes stories for either tier, for a hub ClusterSet, for a Helm ClusterSet and sandbox-only ones: give each kind a file of its own, or the real tier runs stories on a ClusterSet they were not written for",
            path.display()
        );
        if either_tier(&text) {
            real_tier.push(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    // The stories told once for both tiers are among them.
    for story in ["walkthrough", "join", "why", "clusterset", "conformance"] {
        assert!(
            real_tier.iter().any(|f| f == story),
            "{story}.rs runs on the real tier: {real_tier:?}"
        );
    }
    let test_sh = std::fs::read_to_string(mcsd_tests::repo_root().join("tests/kube/test.sh")).unwrap();
    assert!(
        test_sh.contains(EITHER_TIER),
        "tests/kube/test.sh chooses the real tier's files by {EITHER_TIER}"
    );
    assert!(
        test_sh.contains(HUB_TIER),
        "tests/kube/test.sh chooses the hub ClusterSet's files by {HUB_TIER}"
    );
    assert!(
        test_sh.contains(HELM_TIER),
        "tests/kube/test.sh chooses the Helm ClusterSet's files by {HELM_TIER}"
    );
}
