//! The alert rules operators load (`manifests/chart/files/alerts.yaml`, which the Helm chart wraps
//! in a PrometheusRule) are valid Prometheus rules, each an alert with a severity, a one-line
//! summary and a description that names the command to run; and each fires when it should and
//! only then, as its promtool unit tests (`tests/monitoring/alerts_test.yaml`) show. Both run the
//! real promtool, which `tests/kube/build.sh` builds with the real tier's programs.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

use serde::Deserialize;

/// The rule file, from the repository's root.
const RULES: &str = "manifests/chart/files/alerts.yaml";

/// Its unit tests, from the repository's root.
const UNIT_TESTS: &str = "tests/monitoring/alerts_test.yaml";

#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    alert: Option<String>,
    record: Option<String>,
    #[serde(rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct UnitTests {
    rule_files: Vec<String>,
    tests: Vec<UnitTest>,
}

#[derive(Deserialize)]
struct UnitTest {
    #[serde(default)]
    alert_rule_test: Vec<AlertCase>,
}

#[derive(Deserialize)]
struct AlertCase {
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<serde_yaml::Value>,
}

/// Runs promtool with `args` from the repository's root; returns what it printed, and fails the
/// test with that unless it succeeded.
fn promtool(args: &[&str]) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    assert!(
        mcsd_test_tools::find_on(&path, "promtool").is_some(),
        "promtool is not on PATH: tests/kube/build.sh builds it (Prometheus from the Go module proxy)"
    );
    let out = Command::new("promtool")
        .args(args)
        .current_dir(mcsd_tests::repo_root())
        .output()
        .expect("promtool runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{printed}",
        args.join(" "),
        out.status
    );
    printed
}

fn read(path: &str) -> String {
    let file = mcsd_tests::repo_root().join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

#[test]
#[ignore = "needs promtool from tests/kube/build.sh (Prometheus from the Go module proxy): tests/kube/test.sh runs it"]
fn every_alert_rule_is_valid_promql_with_a_summary_that_names_the_fix() {
    let printed = promtool(&["check", "rules", RULES]);
    assert!(printed.contains("SUCCESS"), "{printed}");

    let file: RuleFile = serde_yaml::from_str(&read(RULES)).expect("the rule file is YAML");
    assert_eq!(
        file.groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
        ["mcsd"],
        "one group, mcsd"
    );
    let mut alerts = BTreeSet::new();
    for rule in &file.groups[0].rules {
        let name = rule.alert.clone().unwrap_or_else(|| {
            panic!(
                "{:?} is a recording rule: this file holds alerts only",
                rule.record
            )
        });
        assert!(name.starts_with("Mcsd"), "{name}: alert names start with Mcsd");
        assert!(alerts.insert(name.clone()), "{name} is defined twice");
        assert!(
            rule.for_.is_some(),
            "{name} has no `for`: one bad scrape would page"
        );
        let severity = rule.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{name}: severity is critical or warning, not {severity:?}"
        );
        let summary = rule
            .annotations
            .get("summary")
            .map(|s| s.trim())
            .unwrap_or_default();
        assert!(
            !summary.is_empty() && !summary.contains('\n'),
            "{name}: the summary is one line: {summary:?}"
        );
        let description = rule
            .annotations
            .get("description")
            .map(|s| s.trim())
            .unwrap_or_default();
        assert!(
            description.contains("`mcsd ") || description.contains("`kubectl "),
            "{name}: the description names the command that shows or fixes it: {description:?}"
        );
    }

    // Every alert has its unit tests, and every unit test is of an alert of the file: a case
    // where it fires and one where it does not.
    let tests: UnitTests = serde_yaml::from_str(&read(UNIT_TESTS)).expect("the unit tests are YAML");
    let tests_dir = Path::new(UNIT_TESTS).parent().unwrap();
    assert!(
        tests
            .rule_files
            .iter()
            .any(|f| normalise(&tests_dir.join(f)) == Path::new(RULES)),
        "{UNIT_TESTS} tests {RULES} (a path from its own directory): {:?}",
        tests.rule_files
    );
    let cases: Vec<&AlertCase> = tests.tests.iter().flat_map(|t| &t.alert_rule_test).collect();
    let tested: BTreeSet<String> = cases.iter().map(|c| c.alertname.clone()).collect();
    assert_eq!(
        tested.difference(&alerts).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "unit tests of alerts {RULES} does not define"
    );
    for alert in &alerts {
        let of_it = || cases.iter().filter(|c| &c.alertname == alert);
        assert!(
            of_it().any(|c| !c.exp_alerts.is_empty()),
            "{alert} has no unit test where it fires, in {UNIT_TESTS}"
        );
        assert!(
            of_it().any(|c| c.exp_alerts.is_empty()),
            "{alert} has no unit test where it does not fire, in {UNIT_TESTS}"
        );
    }
}

/// `path` without its `..` and `.` components (lexically: `a/b/../c` is `a/c`).
fn normalise(path: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
#[ignore = "needs promtool from tests/kube/build.sh (Prometheus from the Go module proxy): tests/kube/test.sh runs it"]
fn every_alert_fires_when_it_should_and_only_then() {
    // promtool reads the test file's `rule_files` relative to the test file's own directory.
    let printed = promtool(&["test", "rules", UNIT_TESTS]);
    assert!(printed.contains("SUCCESS"), "{printed}");
}
