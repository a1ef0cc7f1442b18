//! The modules of rotor import each other without a cycle, and in the layers of the design:
//! the command line over the use cases, over the scheduler and engine, over the config that composes the
//! plug-ins, over alerts and hooks, over the store and vaults, over plain values and rules
//! (`LAYERS`). The rotators are a crate of their own that sees none of these. Read from the `crate::` paths in the source, so that a new
//! import that closes a cycle fails here with the cycle named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module of `src/` and the top-level modules it names through `crate::` (or
/// `super::` from a module's root file). A module's unit tests are left out: they may reach
/// anywhere.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::<String, BTreeSet<String>>::new();
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                files.push(entry.unwrap().path());
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(&src).unwrap();
        let mut parts = relative.iter().map(|p| p.to_string_lossy().into_owned());
        let first = parts.next().unwrap();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        // `super::` names the crate root from `src/m.rs` and `src/m/mod.rs` only.
        let root_file = relative.components().count() == 1 || relative.ends_with("mod.rs");
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("\nmod tests {").next().unwrap();
        let names = graph.entry(module.clone()).or_default();
        for line in code.lines() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            let mut prefixes = vec!["crate::"];
            if root_file {
                prefixes.push("super::");
            }
            for prefix in prefixes {
                for (at, _) in line.match_indices(prefix) {
                    let rest = &line[at + prefix.len()..];
                    for name in named_modules(rest) {
                        if name != module {
                            names.insert(name);
                        }
                    }
                }
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for names in graph.values_mut() {
        names.retain(|n| modules.contains(n));
    }
    graph
}

/// The first path segment after `crate::`, or each one of a `crate::{a, b::c}` group.
fn named_modules(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut names = Vec::new();
        let mut start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => start = true,
                c if start && !c.is_whitespace() => {
                    names.push(ident(&group[i..]));
                    start = false;
                }
                _ => {}
            }
        }
        names
    } else {
        vec![ident(rest)]
    }
}

/// A cycle in `graph`, as the list of modules around it, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(graph, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(graph, node, &mut Vec::new(), &mut done))
}

#[test]
fn the_modules_import_each_other_without_a_cycle() {
    let graph = imports();
    assert!(graph.len() > 5, "the source was not found: {graph:?}");
    if let Some(cycle) = cycle(&graph) {
        panic!(
            "import cycle: {}\nevery module's imports: {graph:#?}",
            cycle.join(" -> ")
        );
    }
}

/// The layers of the design, lowest first: a module imports only from its own layer or below.
const LAYERS: &[&[&str]] = &[
    // Values and pure rules.
    &["model", "clock", "failpoint", "policy", "fingerprint"],
    // Where state lives: rotor's store and the vaults.
    &["store", "vault"],
    // Who hears of it: alert sinks and hooks, delivered by one outbox loop.
    &["outbox", "alert", "notify"],
    // The composition of all plug-ins that one installation declares.
    &["config"],
    // What runs: the engine, the scheduler over it, drills, and what observes them.
    &["engine", "scheduler", "drill", "telemetry"],
    // The use cases: what an operator asks, with typed outcomes.
    &["app"],
    // The face.
    &["cli"],
];

#[test]
fn every_module_imports_from_its_layer_or_below() {
    let layer = |module: &str| {
        LAYERS
            .iter()
            .position(|l| l.contains(&module))
            .unwrap_or_else(|| panic!("module `{module}` is in no layer: add it to LAYERS"))
    };
    let upward: Vec<String> = imports()
        .iter()
        .flat_map(|(module, names)| {
            names
                .iter()
                .filter(|name| layer(name) > layer(module))
                .map(move |name| format!("{module} -> {name}"))
        })
        .collect();
    assert!(upward.is_empty(), "imports against the layers: {upward:?}");
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(cycle(&graph).unwrap().join(" -> "), "a -> b -> c -> a");
    assert_eq!(
        named_modules("{config::Config, store::{A, B}, vault}"),
        ["config", "store", "vault"]
    );
}
