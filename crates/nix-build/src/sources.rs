//! Everything a host's evaluation reads, put in the store before evaluating: the nixpkgs pin,
//! the `nix-path` entries of fleet.toml and the host's own configuration files (see
//! [`crate::files`]). One `nix-instantiate` for all of them; evaluation then sees only store
//! paths, the way `nixos-rebuild -I nixpkgs=… -I nixos-config=…` on the host would.
//!
//! A folder (a `path` pin, a `nix-path` entry) is copied filtered: its git-tracked files when
//! it is in a git checkout, else everything but `.git`, `.fleet`, `.direnv` and `result*`. Same
//! contents, same store path: a pin lands in a host's store once, not once per deploy.

use std::collections::BTreeSet;

use camino::{Utf8Path, Utf8PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::error::BuildError;
use crate::expr::{nix_path, nix_string};
use crate::fingerprint::{self, Fingerprint};
use crate::nix;
use crate::realise;
use crate::spec::{BuildOptions, PinSpec};

/// One thing to put in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A nixpkgs pin (tarball or folder), stored as `source` like `fetchTarball` does.
    Pin(PinSpec),
    /// A `nix-path` entry: a folder or a file, stored as `source`.
    Path(Utf8PathBuf),
    /// A host's configuration files: `entries` (absolute) under `root`, stored as `fleet-config`.
    Tree {
        root: Utf8PathBuf,
        entries: BTreeSet<Utf8PathBuf>,
    },
}

/// A source in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Stored {
    pub path: String,
    /// The stored tree has a `.git-revision` or `.version-suffix` (nixpkgs labels itself).
    pub labelled: bool,
}

/// What a folder's copy keeps, decided before Nix reads it.
enum Filter {
    /// Exactly these paths (a git checkout's tracked files and their folders).
    Only(BTreeSet<Utf8PathBuf>),
    /// Everything but `.git`, `.fleet`, `.direnv`, `result*`.
    Default,
}

/// The git-tracked files of `dir` (absolute), with their folders, or `None` when `dir` is not in
/// a git checkout (or git is missing).
async fn git_tracked(dir: &Utf8Path) -> Option<BTreeSet<Utf8PathBuf>> {
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["ls-files", "-z", "--cached", "--", "."])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let mut set = BTreeSet::new();
    for rel in text.split('\0').filter(|s| !s.is_empty()) {
        let mut p = dir.join(rel);
        if std::fs::symlink_metadata(&p).is_err() {
            continue; // deleted in the work tree
        }
        set.insert(p.clone());
        while p.pop() && p.as_str().len() > dir.as_str().len() {
            set.insert(p.clone());
        }
    }
    Some(set)
}

/// The commit a git checkout is at (`None` if `dir` is not in one).
pub(crate) async fn git_revision(dir: &Utf8Path) -> Option<String> {
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .await
        .ok()?;
    let rev = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && rev.len() == 40).then_some(rev)
}

fn set_literal(entries: &BTreeSet<Utf8PathBuf>) -> String {
    let mut s = String::from("{");
    for e in entries {
        s.push_str(&nix_string(e.as_str()));
        s.push_str("=1;");
    }
    s.push('}');
    s
}

fn copy_expr(path: &Utf8Path, name: &str, filter: &Filter) -> String {
    let filter = match filter {
        Filter::Only(set) => format!("(let s = {}; in p: t: s ? ${{p}})", set_literal(set)),
        Filter::Default => "keep".to_owned(),
    };
    format!(
        "builtins.path {{ path = {}; name = {}; filter = {filter}; }}",
        nix_path(path),
        nix_string(name)
    )
}

const PRELUDE: &str = r#"let
  keep = path: type:
    let b = baseNameOf path; in
    !(b == ".git" || b == ".fleet" || b == ".direnv" || b == "result"
      || builtins.substring 0 7 b == "result-");
  stored = p: {
    path = p;
    labelled = builtins.pathExists (p + "/.git-revision")
      || builtins.pathExists (p + "/.version-suffix");
  };
in [
"#;

/// What a folder source keeps (`None`: a tarball, or a file).
async fn filter_of(source: &Source) -> Option<Filter> {
    match source {
        Source::Pin(PinSpec::Tarball { .. }) => None,
        Source::Pin(PinSpec::Path(p)) | Source::Path(p) => Some(if p.is_dir() {
            match git_tracked(p).await {
                Some(set) => Filter::Only(set),
                None => Filter::Default,
            }
        } else {
            Filter::Default
        }),
        Source::Tree { entries, .. } => Some(Filter::Only(entries.clone())),
    }
}

/// The names `keep` of the prelude drops.
fn kept(name: &str) -> bool {
    !(matches!(name, ".git" | ".fleet" | ".direnv" | "result") || name.starts_with("result-"))
}

/// The source's fingerprint at `now`: its description and the files the store copy holds.
fn fingerprint(source: &Source, filter: Option<&Filter>, now: SystemTime) -> Fingerprint {
    let (what, dir) = match source {
        Source::Pin(PinSpec::Tarball { url, sha256 }) => {
            return fingerprint::Builder::new(&["tarball", url, sha256], now).finish();
        }
        Source::Pin(PinSpec::Path(p)) | Source::Path(p) => (["source", p.as_str()], p),
        Source::Tree { root, .. } => (["fleet-config", root.as_str()], root),
    };
    let mut b = fingerprint::Builder::new(&what, now);
    let mut entry = |p: &Utf8Path| {
        let rel = p
            .strip_prefix(dir)
            .map(|r| r.as_str())
            .unwrap_or(p.as_str());
        b.entry(p, rel);
    };
    match filter {
        Some(Filter::Only(set)) => set.iter().for_each(|p| entry(p)),
        _ if dir.is_dir() => fingerprint::walk(dir, &kept).iter().for_each(|p| entry(p)),
        _ => entry(dir),
    }
    b.finish()
}

fn source_expr(source: &Source, filter: Option<&Filter>) -> String {
    let inner = match (source, filter) {
        (Source::Pin(PinSpec::Tarball { url, sha256 }), _) => format!(
            "builtins.fetchTarball {{ url = {}; sha256 = {}; }}",
            nix_string(url),
            nix_string(sha256)
        ),
        (Source::Pin(PinSpec::Path(p)) | Source::Path(p), filter) => {
            copy_expr(p, "source", filter.unwrap_or(&Filter::Default))
        }
        (Source::Tree { root, entries }, _) => {
            copy_expr(root, "fleet-config", &Filter::Only(entries.clone()))
        }
    };
    format!("  (stored ({inner}))\n")
}

async fn store_once(exprs: &[String], opts: &BuildOptions) -> Result<Vec<Stored>, BuildError> {
    let mut e = String::from(PRELUDE);
    for x in exprs {
        e.push_str(x);
    }
    e.push_str("]\n");
    let mut args = nix::isolated_eval_args();
    args.extend(["--json", "--read-write-mode", "-"].map(str::to_owned));
    let out = nix::run_with_stdin("nix-instantiate", &args, &opts.nix_env, e).await?;
    if !out.success {
        return Err(BuildError::Eval {
            stderr: nix::excerpt(&out.stderr),
        });
    }
    let list: Vec<Stored> =
        serde_json::from_str(out.stdout.trim()).map_err(|e| BuildError::Output {
            command: "nix-instantiate (sources)".into(),
            detail: format!("{e}: {}", out.stdout.trim()),
        })?;
    if list.len() != exprs.len() {
        return Err(BuildError::Output {
            command: "nix-instantiate (sources)".into(),
            detail: format!("{} results for {} sources", list.len(), exprs.len()),
        });
    }
    Ok(list)
}

/// Puts every source in the store with one Nix process (each source alone when that fails, so
/// that one bad pin is that pin's error). With the evaluation cache on, a source whose
/// fingerprint ([`crate::fingerprint`]) matches the one recorded with a store path still valid
/// (one `nix-store --check-validity` for all) is not stored again. One result per source, in
/// order.
pub(crate) async fn store(
    sources: &[Source],
    opts: &BuildOptions,
) -> Vec<Result<Stored, BuildError>> {
    if sources.is_empty() {
        return Vec::new();
    }
    let now = SystemTime::now();
    let mut exprs = Vec::with_capacity(sources.len());
    let mut prints = Vec::with_capacity(sources.len());
    for s in sources {
        let filter = filter_of(s).await;
        prints.push(
            opts.eval_cache
                .then(|| fingerprint(s, filter.as_ref(), now))
                .filter(|f| !f.racy),
        );
        exprs.push(source_expr(s, filter.as_ref()));
    }
    let mut cache = opts
        .eval_cache
        .then(|| Cache::<Stored>::load_named(&opts.fleet_dir, CACHE_FILE));
    let mut out: Vec<Option<Result<Stored, BuildError>>> = sources.iter().map(|_| None).collect();
    if let Some(cache) = &mut cache {
        let hits: Vec<(usize, Stored)> = prints
            .iter()
            .enumerate()
            .filter_map(|(i, f)| Some((i, cache.get(&f.as_ref()?.key)?.clone())))
            .collect();
        let paths: Vec<String> = hits.iter().map(|(_, s)| s.path.clone()).collect();
        // Cannot tell: store everything again.
        let invalid = realise::invalid_paths(&paths, opts)
            .await
            .unwrap_or_else(|_| paths.iter().cloned().collect());
        for (i, stored) in hits {
            if !invalid.contains(&stored.path) {
                cache.touch(&prints[i].as_ref().expect("a hit has a key").key);
                out[i] = Some(Ok(stored));
            }
        }
    }
    let missing: Vec<usize> = (0..sources.len()).filter(|&i| out[i].is_none()).collect();
    let missing_exprs: Vec<String> = missing.iter().map(|&i| exprs[i].clone()).collect();
    for (i, r) in missing
        .into_iter()
        .zip(store_exprs(&missing_exprs, opts).await)
    {
        if let (Ok(stored), Some(cache), Some(print)) = (&r, &mut cache, &prints[i]) {
            cache.put(print.key.clone(), stored.clone());
        }
        out[i] = Some(r);
    }
    if let Some(Err(e)) = cache.map(Cache::save) {
        opts.emit(crate::spec::BuildEvent::Warning {
            host: String::new(),
            message: format!("cannot write the sources' cache: {e}"),
        });
    }
    out.into_iter()
        .map(|r| r.expect("every source has a result"))
        .collect()
}

/// Where the sources' store paths are kept, by fingerprint.
const CACHE_FILE: &str = "sources-cache.json";

async fn store_exprs(exprs: &[String], opts: &BuildOptions) -> Vec<Result<Stored, BuildError>> {
    if exprs.is_empty() {
        return Vec::new();
    }
    match store_once(exprs, opts).await {
        Ok(list) => list.into_iter().map(Ok).collect(),
        Err(e) if exprs.len() == 1 => vec![Err(e)],
        Err(_) => {
            let mut out = Vec::with_capacity(exprs.len());
            for x in exprs {
                out.push(
                    store_once(std::slice::from_ref(x), opts)
                        .await
                        .map(|mut v| v.remove(0)),
                );
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_filter_is_a_set_lookup() {
        let set: BTreeSet<Utf8PathBuf> = ["/a/x y".into(), "/a/b".into()].into();
        let e = copy_expr(Utf8Path::new("/a"), "source", &Filter::Only(set));
        assert!(e.contains(r#"{"/a/b"=1;"/a/x y"=1;}"#), "{e}");
        assert!(e.contains(r#"path = (/. + "/a")"#), "{e}");
    }
}
