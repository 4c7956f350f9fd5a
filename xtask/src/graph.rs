//! `cargo xtask graph`: the workspace's crate graph (normal dependencies between workspace
//! crates, from `cargo metadata`), as the Markdown block docs/architecture.md holds between
//! `<!-- crate-graph:begin -->` and `<!-- crate-graph:end -->`. `--check` fails when the document
//! differs, so the picture cannot drift (a test runs the same check).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

pub const BEGIN: &str = "<!-- crate-graph:begin -->";
pub const END: &str = "<!-- crate-graph:end -->";

/// Workspace crate → the workspace crates it depends on (normal dependencies only).
pub fn edges(root: &Path) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(root)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .map_err(|e| format!("running cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let packages = meta["packages"].as_array().cloned().unwrap_or_default();
    let names: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    let mut graph = BTreeMap::new();
    for p in &packages {
        let Some(name) = p["name"].as_str() else {
            continue;
        };
        let deps: BTreeSet<String> = p["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|d| names.contains(*d))
            .map(str::to_owned)
            .collect();
        graph.insert(name.to_owned(), deps);
    }
    Ok(graph)
}

/// The Markdown block: one line per crate, `crate → its workspace dependencies`.
pub fn render(graph: &BTreeMap<String, BTreeSet<String>>) -> String {
    let mut s = format!("{BEGIN}\n```\n");
    for (name, deps) in graph {
        if deps.is_empty() {
            s.push_str(&format!("{name}\n"));
        } else {
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            s.push_str(&format!("{name} → {}\n", deps.join(", ")));
        }
    }
    s.push_str(&format!("```\n{END}"));
    s
}

/// The block as docs/architecture.md has it now.
pub fn documented(doc: &str) -> Option<&str> {
    let start = doc.find(BEGIN)?;
    let end = doc[start..].find(END)? + start + END.len();
    Some(&doc[start..end])
}

/// `cargo xtask graph [--check|--write]`.
pub fn run(root: &Path, args: &[String]) -> Result<bool, String> {
    let block = render(&edges(root)?);
    let path = root.join("docs/architecture.md");
    let doc = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    match args.first().map(String::as_str) {
        Some("--check") => match documented(&doc) {
            Some(b) if b == block => Ok(true),
            _ => {
                eprintln!("xtask: docs/architecture.md's crate graph is out of date; run `cargo xtask graph --write`");
                Ok(false)
            }
        },
        Some("--write") => {
            let new = match documented(&doc) {
                Some(old) => doc.replacen(old, &block, 1),
                None => return Err(format!("{} has no {BEGIN} … {END} block", path.display())),
            };
            std::fs::write(&path, new).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(true)
        }
        _ => {
            println!("{block}");
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_crate_graph_is_the_real_one() {
        let root = fleet_testbed::repo_root();
        let block = render(&edges(&root).unwrap());
        let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
        assert_eq!(
            documented(&doc),
            Some(block.as_str()),
            "docs/architecture.md's crate graph is out of date: run `cargo xtask graph --write`"
        );
    }

    #[test]
    fn library_crates_never_depend_on_the_cli_or_the_testbed() {
        let graph = edges(&fleet_testbed::repo_root()).unwrap();
        for lib in [
            "fleet-types",
            "fleet-inventory",
            "fleet-planner",
            "fleet-store",
            "fleet-nix-build",
            "fleet-executor",
        ] {
            let deps = &graph[lib];
            assert!(!deps.contains("fleet"), "{lib} depends on the CLI");
            assert!(
                !deps.contains("fleet-testbed"),
                "{lib} depends on the testbed"
            );
        }
        // The vocabulary: every crate may use it, and it uses no workspace crate.
        assert!(
            graph["fleet-types"].is_empty(),
            "fleet-types depends on {:?}",
            graph["fleet-types"]
        );
        for pure in ["fleet-inventory", "fleet-planner"] {
            assert!(
                graph[pure]
                    .iter()
                    .all(|d| d == "fleet-inventory" || d == "fleet-types"),
                "{pure} depends on I/O crates: {:?}",
                graph[pure]
            );
        }
    }
}
