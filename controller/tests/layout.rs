//! The layout's rules, read from the source: `core/` imports nothing else of the crate, the
//! command line (`commands/`) never reaches into the daemon (`daemon/`), and no two files import
//! each other, directly or round a circle. Test code (`#[cfg(test)]` and after) is not counted.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Every source file of the crate, by module path (`core::view`, `daemon`, …).
fn modules() -> BTreeMap<Vec<String>, PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                parts.pop();
            }
            if parts.is_empty() && path.file_name().is_some_and(|n| n == "main.rs") {
                continue;
            }
            found.insert(parts, path);
        }
    }
    found
}

/// The source without its tests and comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path the code names from `crate::`, `super::` or `self::`, made absolute for the file
/// module `module` (whose own `self` is `is_root`: a `mod.rs` or a folder's module file).
fn paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for (start, prefix) in [("crate::", 0usize), ("super::", 1), ("self::", 2)]
        .iter()
        .flat_map(|(p, kind)| code.match_indices(p).map(move |(i, _)| (i, (*p, *kind))))
        .map(|(i, (p, kind))| (i + p.len(), kind))
        .filter(|(i, kind)| {
            // Whole words only.
            let before = i - ["crate::", "super::", "self::"][*kind].len();
            before == 0
                || !(bytes[before - 1].is_ascii_alphanumeric()
                    || bytes[before - 1] == b'_'
                    || bytes[before - 1] == b':')
        })
    {
        let base: Vec<String> = match prefix {
            0 => Vec::new(),
            1 => module[..module.len().saturating_sub(1)].to_vec(),
            _ => module.to_vec(),
        };
        let mut rest = &code[start..];
        for path in expand(&mut rest) {
            let mut full = base.clone();
            full.extend(path);
            out.push(full);
        }
    }
    out
}

/// The paths of one use tree (`a::b`, `a::{b, c::{d}}`), consuming it from `text`.
fn expand(text: &mut &str) -> Vec<Vec<String>> {
    let mut prefix = Vec::new();
    loop {
        let trimmed = text.trim_start();
        if let Some(inner) = trimmed.strip_prefix('{') {
            *text = inner;
            let mut all = Vec::new();
            loop {
                let t = text.trim_start();
                if let Some(after) = t.strip_prefix('}') {
                    *text = after;
                    break;
                }
                if let Some(after) = t.strip_prefix(',') {
                    *text = after;
                    continue;
                }
                *text = t;
                let before = text.len();
                for p in expand(text) {
                    let mut full = prefix.clone();
                    full.extend(p);
                    all.push(full);
                }
                if text.len() == before {
                    // Not a path: skip a character so the loop ends.
                    *text = &text[text.chars().next().map_or(0, char::len_utf8)..];
                }
            }
            return all;
        }
        let end = trimmed
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(trimmed.len());
        if end == 0 {
            *text = trimmed;
            return vec![prefix];
        }
        prefix.push(trimmed[..end].to_string());
        let after = &trimmed[end..];
        match after.strip_prefix("::") {
            Some(more) => *text = more,
            None => {
                *text = after;
                return vec![prefix];
            }
        }
    }
}

/// The file module a path lands in: its longest prefix that is one.
fn target(path: &[String], modules: &BTreeMap<Vec<String>, PathBuf>) -> Option<Vec<String>> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains_key(prefix))
}

/// Each file module and the file modules it imports (itself, its ancestors and its own
/// submodules left out: a module root declares its children, and a child may name a parent's
/// item without a circle of files).
fn imports() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let modules = modules();
    let mut graph = BTreeMap::new();
    for (module, path) in &modules {
        let mut to = BTreeSet::new();
        for p in paths(&code(path), module) {
            let Some(t) = target(&p, &modules) else { continue };
            if t.starts_with(module) || module.starts_with(&t) {
                continue;
            }
            to.insert(t);
        }
        graph.insert(module.clone(), to);
    }
    graph
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

#[test]
fn the_core_imports_nothing_else_of_the_crate() {
    let bad: Vec<String> = imports()
        .iter()
        .filter(|(m, _)| m.first().is_some_and(|f| f == "core"))
        .flat_map(|(m, to)| {
            to.iter()
                .filter(|t| t.first().is_none_or(|f| f != "core"))
                .map(move |t| format!("{} → {}", name(m), name(t)))
        })
        .collect();
    assert!(bad.is_empty(), "core/ must stay pure; it imports: {bad:#?}");
}

#[test]
fn no_command_reaches_into_the_daemon() {
    let bad: Vec<String> = imports()
        .iter()
        .filter(|(m, _)| m.first().is_some_and(|f| f == "commands"))
        .flat_map(|(m, to)| {
            to.iter()
                .filter(|t| t.first().is_some_and(|f| f == "daemon"))
                .map(move |t| format!("{} → {}", name(m), name(t)))
        })
        .collect();
    assert!(bad.is_empty(), "the commands import the daemon: {bad:#?}");
}

#[test]
fn no_files_import_each_other_in_a_circle() {
    let graph = imports();
    // Depth-first search; a node met again on the current path closes a circle.
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        path: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
        circles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle: Vec<String> = path[at..].iter().map(|n| name(n)).collect();
            circle.push(name(node));
            circles.push(circle.join(" → "));
            return;
        }
        if !done.insert(node.clone()) {
            return;
        }
        path.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done, circles);
        }
        path.pop();
    }
    let mut circles = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done, &mut circles);
    }
    assert!(circles.is_empty(), "files that import each other: {circles:#?}");
}

#[test]
fn the_reader_finds_grouped_and_relative_imports() {
    let module = vec!["daemon".to_string(), "peers".to_string()];
    let found = paths(
        "use crate::{core::{view::Key, exchange}, cluster::driver};\nuse super::metrics::Peers;\nlet x = self::follow::go();",
        &module,
    );
    let found: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        found,
        [
            "core::view::Key",
            "core::exchange",
            "cluster::driver",
            "daemon::metrics::Peers",
            "daemon::peers::follow::go"
        ]
    );
}
