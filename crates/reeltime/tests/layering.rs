//! The module layering of the server crate (docs/architecture.md, "Module
//! dependencies"), checked on the sources: the domain never uses the HTTP
//! edge, and no chain of `use crate::...` comes back to where it started.
//!
//! A crate boundary would make the compiler keep this; until the domain
//! is its own crate (see docs/architecture.md), this test does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The only modules that may use `crate::http`.
const HTTP_USERS: &[&str] = &["http", "app"];

#[test]
fn only_the_edge_uses_http() {
    let graph = module_graph();
    let offenders: Vec<&String> = graph
        .iter()
        .filter(|(module, uses)| uses.contains("http") && !HTTP_USERS.contains(&module.as_str()))
        .map(|(module, _)| module)
        .collect();
    assert!(
        offenders.is_empty(),
        "{offenders:?} use crate::http; handlers belong in http/, domain modules must not import it"
    );
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = module_graph();
    assert!(
        graph.len() >= 10 && graph["http"].contains("imports"),
        "the scan found the modules: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "the modules use each other in a cycle: {}",
            cycle.join(" -> ")
        );
    }
}

/// Each top-level module of `src/` and the other top-level modules it names
/// as `crate::<module>` (code and tests, not comments).
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).expect("under src");
        let first = relative
            .components()
            .next()
            .expect("a path")
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let uses = graph.entry(module.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            for (at, _) in code.match_indices("crate::") {
                let name: String = code[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
        }
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// A cycle as the list of modules along it, by depth-first search.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|seen| seen == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_string());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}
