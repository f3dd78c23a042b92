//! The house stays one-way: every `crate::` and `super::` path under `src/` is read, and
//! an import that points up the declared layers, or between two modules of one layer, or a
//! cycle between files, fails this test, naming the file and the path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first. A module may import modules of lower layers only; modules of
/// one layer do not import each other.
const LAYERS: &[&[&str]] = &[
    &["model"],
    &["config"],
    &["redact", "outside", "stats", "tls"],
    &["telemetry", "metrics"],
    &["store"],
    &["evidence", "changes", "intake", "notify"],
    &["verdict"],
    &["runner"],
    &["diagnosis"],
    &["pipeline"],
    &["worker"],
    &["http"],
    &["startup", "gate"],
];

/// Who may import the store: the rest of the service gets its inputs as values and hands
/// its outputs back.
const STORE_USERS: &[&str] = &["intake", "worker", "http", "startup"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// A file's module path: `src/store/embedded/rows.rs` is `store::embedded::rows`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file, comments removed (a doc link is not an import).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module path a file names: `crate::a::b`, the items of `crate::{a::b, c}`, and
/// `super::` paths resolved against the file's own module. Two segments are kept: enough
/// for the layers and for cycles between files.
fn imports(code: &str, module: &[String]) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    // The segments that follow a prefix, through one level of braces.
    fn after(rest: &str, ident: &dyn Fn(&str) -> String) -> Vec<Vec<String>> {
        let rest = rest.trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut end = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let mut paths = Vec::new();
            let mut depth = 0;
            let mut start = 0;
            let inner = &group[..end];
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        paths.extend(after(&inner[start..i], ident));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            paths.extend(after(&inner[start..], ident));
            return paths;
        }
        let first = ident(rest);
        if first.is_empty() || first == "self" {
            return vec![Vec::new()];
        }
        let tail = &rest[first.len()..];
        match tail.strip_prefix("::") {
            Some(more) => after(more, ident)
                .into_iter()
                .map(|mut p| {
                    p.insert(0, first.clone());
                    p
                })
                .collect(),
            None => vec![vec![first]],
        }
    }
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `deploy_diagnosis_crate::`, not ours
        }
        for path in after(&code[i + "crate::".len()..], &ident) {
            if !path.is_empty() {
                found.insert(path.into_iter().take(2).collect());
            }
        }
    }
    for (i, _) in code.match_indices("super::") {
        if i >= 7 && &code[i - 7..i] == "super::" {
            continue; // counted from the first `super::` of the run
        }
        let mut base: Vec<String> = module.to_vec();
        let mut rest = &code[i..];
        while let Some(more) = rest.strip_prefix("super::") {
            base.pop();
            rest = more;
        }
        for path in after(rest, &ident) {
            let mut full = base.clone();
            full.extend(path);
            if !full.is_empty() {
                found.insert(full.into_iter().take(2).collect());
            }
        }
    }
    found
}

/// Every edge `(file module, imported module)`, both cut to two segments, with the file.
fn edges() -> Vec<(Vec<String>, Vec<String>, PathBuf)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges = Vec::new();
    for file in files {
        if file.ends_with("main.rs") {
            continue; // the binary, above everything
        }
        let module = module_path(&src, &file);
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests may reach anywhere in their own module; only shipped code counts.
        let shipped = match text.find("#[cfg(test)]\nmod tests") {
            Some(i) => &text[..i],
            None => &text[..],
        };
        let from: Vec<String> = module.iter().take(2).cloned().collect();
        for to in imports(&code(shipped), &module) {
            if to != from {
                edges.push((from.clone(), to, file.clone()));
            }
        }
    }
    edges
}

/// What is wrong with an edge, if anything.
fn violation(from: &[String], to: &[String]) -> Option<String> {
    let (Some(a), Some(b)) = (from.first(), to.first()) else {
        return None;
    };
    if a == b {
        return None;
    }
    let (Some(la), Some(lb)) = (layer_of(a), layer_of(b)) else {
        return Some(format!(
            "module {} is in no layer: add it to LAYERS",
            if layer_of(a).is_none() { a } else { b }
        ));
    };
    if b == "store" && !STORE_USERS.contains(&a.as_str()) {
        return Some(format!(
            "{a} imports the store; only {STORE_USERS:?} may (return values instead)"
        ));
    }
    if lb > la {
        return Some(format!(
            "{a} (layer {la}) imports {b} (layer {lb}), above it"
        ));
    }
    if lb == la {
        return Some(format!(
            "{a} and {b} are one layer; neither imports the other"
        ));
    }
    None
}

/// Cycles between files of one module (`store::embedded` ↔ `store::rules`, say).
fn cycles(edges: &[(Vec<String>, Vec<String>, PathBuf)]) -> Vec<String> {
    let mut graph: BTreeMap<&[String], BTreeSet<&[String]>> = BTreeMap::new();
    for (from, to, _) in edges {
        graph.entry(from).or_default().insert(to);
    }
    let mut found = Vec::new();
    for (&start, _) in graph.iter() {
        // Depth-first from `start`, looking for a way back to it.
        let mut stack = vec![(start, vec![start])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for &next in graph.get(node).into_iter().flatten() {
                // A file and its own parent module (`store` and `store::rules`) are one
                // module seen twice: Rust's `mod.rs` re-exports are not a cycle.
                if next == start && path.len() > 1 {
                    let names: Vec<String> = path.iter().map(|p| p.join("::")).collect();
                    found.push(format!("{} -> {}", names.join(" -> "), start.join("::")));
                } else if seen.insert(next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push((next, longer));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Parent modules import their children's items, and children their parent's: that is
/// Rust's module system, not a cycle. Such pairs are left out of the cycle search.
fn without_parent_links(
    edges: Vec<(Vec<String>, Vec<String>, PathBuf)>,
) -> Vec<(Vec<String>, Vec<String>, PathBuf)> {
    edges
        .into_iter()
        .filter(|(from, to, _)| !(from.starts_with(to) || to.starts_with(from)))
        .collect()
}

#[test]
fn imports_point_down_the_layers_and_make_no_cycle() {
    let edges = edges();
    assert!(
        edges.len() > 50,
        "the scan found only {} imports",
        edges.len()
    );
    let mut problems: Vec<String> = edges
        .iter()
        .filter_map(|(from, to, file)| {
            violation(from, to)
                .map(|why| format!("{}: crate::{}: {why}", file.display(), to.join("::")))
        })
        .collect();
    problems.extend(
        cycles(&without_parent_links(edges))
            .into_iter()
            .map(|c| format!("cycle: {c}")),
    );
    assert!(
        problems.is_empty(),
        "the house is not one-way:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_sees_a_forbidden_import() {
    // An import up the layers, one across a layer, and the store where it is not allowed.
    let module = vec!["model".to_owned(), "report".to_owned()];
    let found = imports(
        &code("use crate::{config::Config, model::alert::Alert};\nuse super::super::store::Wake; // crate::http"),
        &module,
    );
    let names: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(names, vec!["config::Config", "model::alert", "store::Wake"]);
    assert!(violation(&module, &["config".into()]).is_some());
    assert!(violation(&["evidence".into()], &["changes".into()]).is_some());
    assert!(violation(&["diagnosis".into()], &["store".into()]).is_some());
    assert!(violation(&["worker".into()], &["store".into()]).is_none());
    let edges = vec![
        (
            vec!["store".into(), "a".into()],
            vec!["store".into(), "b".into()],
            PathBuf::new(),
        ),
        (
            vec!["store".into(), "b".into()],
            vec!["store".into(), "a".into()],
            PathBuf::new(),
        ),
    ];
    assert_eq!(cycles(&edges).len(), 2, "{:?}", cycles(&edges));
}

#[test]
fn the_documented_layout_names_every_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let layout = doc
        .split("## Layout")
        .nth(1)
        .expect("docs/architecture.md has a Layout section");
    for layer in LAYERS {
        for module in *layer {
            assert!(
                layout.contains(&format!("`{module}")),
                "docs/architecture.md's Layout does not name {module}"
            );
        }
    }
}
