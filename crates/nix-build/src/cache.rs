//! The evaluation cache: a host whose evaluation inputs did not change reuses its last
//! evaluation (its `.drv` files and output paths) instead of running Nix again.
//!
//! The key of a host is a SHA-256 over fleet's version, the Nix expression fleet generates for
//! that host alone (it names the pin, every `nix-path` entry and the host's own files by their
//! *store* paths, which are content hashes, plus its system, cross flag and version label, and
//! the package templates), and the environment given to Nix. Equal keys mean the same
//! evaluation, for a configuration that reads only what fleet put in the store, which is what
//! the isolated evaluation enforces (docs/evaluation.md). A hit is used only when both its
//! `.drv` files are still valid in the local store (a garbage collection may have deleted
//! them). The cache is one JSON file, `<fleet_dir>/.fleet/eval-cache.json`; an unreadable file
//! is an empty cache, never an error.

use std::collections::BTreeMap;

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::eval::{self, EvalResult, Evaluated, OnResult};
use crate::expr::{batch_expression, ExprHost};
use crate::realise;
use crate::spec::{BuildEvent, BuildOptions};

/// Version of the file's format; another version is an empty cache.
const FORMAT: u32 = 1;
/// Entries kept at most (the most recently used win): enough for every host of a large fleet
/// and a few revisions of each.
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "V: Serialize + serde::de::DeserializeOwned")]
struct File<V> {
    format: u32,
    /// key → (last use, a counter; the value).
    entries: BTreeMap<String, (u64, V)>,
}

impl<V> Default for File<V> {
    fn default() -> Self {
        File {
            format: FORMAT,
            entries: BTreeMap::new(),
        }
    }
}

/// A JSON file of keyed values under `<fleet_dir>/.fleet/`, the least recently used dropped
/// beyond [`MAX_ENTRIES`]: the evaluation cache ([`EvalCache`]) and the sources' store paths
/// (`crate::sources`).
pub(crate) struct Cache<V> {
    path: Utf8PathBuf,
    file: File<V>,
    clock: u64,
}

/// The evaluation cache of one fleet directory.
pub(crate) type EvalCache = Cache<Evaluated>;

impl<V: Serialize + serde::de::DeserializeOwned> Cache<V> {
    /// `<fleet_dir>/.fleet/<name>` (empty when missing, unreadable or of another format).
    pub fn load_named(fleet_dir: &Utf8Path, name: &str) -> Cache<V> {
        let path = fleet_dir.join(".fleet").join(name);
        let file = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<File<V>>(&text).ok())
            .filter(|f| f.format == FORMAT)
            .unwrap_or_default();
        let clock = file.entries.values().map(|(t, _)| *t).max().unwrap_or(0);
        Cache { path, file, clock }
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.file.entries.get(key).map(|(_, v)| v)
    }

    pub fn put(&mut self, key: String, v: V) {
        self.clock += 1;
        self.file.entries.insert(key, (self.clock, v));
    }

    /// Mark a hit as used now (kept longest).
    pub fn touch(&mut self, key: &str) {
        self.clock += 1;
        if let Some(entry) = self.file.entries.get_mut(key) {
            entry.0 = self.clock;
        }
    }

    /// Write the file (atomically: a temporary file renamed over it), oldest entries dropped
    /// beyond [`MAX_ENTRIES`].
    pub fn save(mut self) -> std::io::Result<()> {
        if self.file.entries.len() > MAX_ENTRIES {
            let mut uses: Vec<u64> = self.file.entries.values().map(|(t, _)| *t).collect();
            uses.sort_unstable();
            let cut = uses[uses.len() - MAX_ENTRIES];
            self.file.entries.retain(|_, (t, _)| *t >= cut);
        }
        self.file.format = FORMAT;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self
            .path
            .with_extension(format!("json.{}", std::process::id()));
        let text = serde_json::to_string(&self.file).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.path)
    }
}

impl EvalCache {
    /// The evaluation cache of `fleet_dir`: `.fleet/eval-cache.json`.
    pub fn load(fleet_dir: &Utf8Path) -> EvalCache {
        Cache::load_named(fleet_dir, "eval-cache.json")
    }
}

/// The cache key of a host's evaluation (see the module's documentation).
pub(crate) fn key(host: &ExprHost, nix_env: &[(String, String)]) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(env!("CARGO_PKG_VERSION").as_bytes());
    field(batch_expression(std::slice::from_ref(host)).as_bytes());
    for (name, path) in &host.search {
        field(name.as_bytes());
        field(path.as_bytes());
    }
    let mut env: Vec<&(String, String)> = nix_env.iter().collect();
    env.sort();
    for (name, value) in env {
        field(name.as_bytes());
        field(value.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Evaluate `hosts` like [`eval::evaluate`], answering from the cache where it can (when
/// `opts.eval_cache`), and remembering new successes. Results keep the input order; each is
/// given to `on_result` as soon as it is known (hits first).
pub(crate) async fn evaluate(
    hosts: Vec<(String, ExprHost)>,
    opts: &BuildOptions,
    on_result: OnResult<'_>,
) -> Vec<EvalResult> {
    if !opts.eval_cache {
        return eval::evaluate(hosts, opts, on_result).await;
    }
    let mut cache = EvalCache::load(&opts.fleet_dir);
    let keys: Vec<String> = hosts.iter().map(|(_, h)| key(h, &opts.nix_env)).collect();
    // Hits whose derivations are still in the store.
    let candidates: Vec<&Evaluated> = keys.iter().filter_map(|k| cache.get(k)).collect();
    let drvs: Vec<String> = candidates
        .iter()
        .flat_map(|ev| [ev.toplevel.clone(), ev.package.clone()])
        .collect();
    let invalid = realise::invalid_paths(&drvs, opts)
        .await
        .unwrap_or_else(|_| {
            // Cannot tell: evaluate everything again.
            drvs.iter().cloned().collect()
        });
    let mut results: Vec<Option<EvalResult>> = hosts.iter().map(|_| None).collect();
    let mut cached_names = Vec::new();
    let mut to_eval = Vec::new();
    let mut to_eval_index = Vec::new();
    for (i, (host, key)) in hosts.into_iter().zip(&keys).enumerate() {
        match cache.get(key) {
            Some(ev) if !invalid.contains(&ev.toplevel) && !invalid.contains(&ev.package) => {
                results[i] = Some(Ok(ev.clone()));
                cached_names.push(host.0);
                cache.touch(key);
            }
            _ => {
                to_eval.push(host);
                to_eval_index.push(i);
            }
        }
    }
    if !cached_names.is_empty() {
        opts.emit(BuildEvent::EvalCached {
            hosts: cached_names,
        });
    }
    for (i, r) in results.iter().enumerate() {
        if let Some(r) = r {
            on_result(i, r);
        }
    }
    let evaluated = eval::evaluate(to_eval, opts, &|j, r| on_result(to_eval_index[j], r)).await;
    for (i, r) in to_eval_index.into_iter().zip(evaluated) {
        if let Ok(ev) = &r {
            cache.put(keys[i].clone(), ev.clone());
        }
        results[i] = Some(r);
    }
    if let Err(e) = cache.save() {
        opts.emit(BuildEvent::Warning {
            host: String::new(),
            message: format!("cannot write the evaluation cache: {e}"),
        });
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(crate::error::BuildError::Output {
                    command: "nix-instantiate".into(),
                    detail: "no result for host".into(),
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(tree: &str) -> ExprHost {
        ExprHost {
            system: "x86_64-linux".into(),
            nixpkgs: "/nix/store/aaaa-nixpkgs".into(),
            tree: tree.into(),
            origin: "/home/me/fleet/hosts/pi".into(),
            config_rel: "configuration.nix".into(),
            cross: false,
            label: None,
            search: vec![("nixpkgs".into(), "/nix/store/aaaa-nixpkgs".into())],
        }
    }

    fn evaluated(n: u32) -> Evaluated {
        Evaluated {
            host_platform: None,
            alone: false,
            toplevel: format!("/nix/store/{n}-nixos-system.drv"),
            toplevel_out: format!("/nix/store/{n}-nixos-system"),
            package: format!("/nix/store/{n}-fleet-deployment.drv"),
            package_out: format!("/nix/store/{n}-fleet-deployment"),
            flake: None,
        }
    }

    #[test]
    fn the_key_follows_every_input_and_only_them() {
        let env = vec![("NIX_CONFIG".to_owned(), "sandbox = false".to_owned())];
        let a = key(&host("/nix/store/t1-fleet-config"), &env);
        assert_eq!(a, key(&host("/nix/store/t1-fleet-config"), &env));
        // Where the files came from is only for messages.
        let mut moved = host("/nix/store/t1-fleet-config");
        moved.origin = "/elsewhere".into();
        assert_eq!(a, key(&moved, &env));
        // Other files, pin, system, search path or Nix environment: another key.
        assert_ne!(a, key(&host("/nix/store/t2-fleet-config"), &env));
        let mut pin = host("/nix/store/t1-fleet-config");
        pin.nixpkgs = "/nix/store/bbbb-nixpkgs".into();
        assert_ne!(a, key(&pin, &env));
        let mut system = host("/nix/store/t1-fleet-config");
        system.system = "aarch64-linux".into();
        assert_ne!(a, key(&system, &env));
        let mut search = host("/nix/store/t1-fleet-config");
        search
            .search
            .push(("secrets".into(), "/nix/store/cccc-secrets".into()));
        assert_ne!(a, key(&search, &env));
        assert_ne!(a, key(&host("/nix/store/t1-fleet-config"), &[]));
    }

    #[test]
    fn saved_entries_come_back_and_the_oldest_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let fleet_dir = Utf8Path::from_path(dir.path()).unwrap();
        let mut c = EvalCache::load(fleet_dir);
        assert!(c.get("k1").is_none());
        c.put("k1".into(), evaluated(1));
        c.put("k2".into(), evaluated(2));
        c.save().unwrap();
        let mut c = EvalCache::load(fleet_dir);
        assert_eq!(c.get("k1"), Some(&evaluated(1)));
        // k1 used again: beyond the limit, k2 goes and k1 stays.
        c.touch("k1");
        for n in 0..MAX_ENTRIES as u32 - 1 {
            c.put(format!("x{n}"), evaluated(n));
        }
        c.save().unwrap();
        let c = EvalCache::load(fleet_dir);
        assert!(c.get("k1").is_some() && c.get("k2").is_none());
        assert!(c.get("x0").is_some());
        // A damaged file is an empty cache.
        std::fs::write(fleet_dir.join(".fleet/eval-cache.json"), "{").unwrap();
        assert!(EvalCache::load(fleet_dir).get("x0").is_none());
    }
}
