//! The systems fleet.toml wants: evaluated and built on this machine (fleet-nix-build), or taken
//! from a saved plan, with their closures read from the local store in one query.

use std::collections::{BTreeMap, BTreeSet};

use camino::{Utf8Path, Utf8PathBuf};
use fleet_executor::error_chain;
use fleet_inventory::{BuildMode, Host, Inventory, PinSource};
use fleet_nix_build::{BuildOptions, FlakeSpec, HostBuildSpec, PinSpec};
use fleet_planner::{ClosurePath, DesiredError, DesiredHost, FlakeLock, Plan, Specialisation};
use fleet_store::local::{closure_infos, LocalStore};
use fleet_store::{PathInfo, StorePath};
use fleet_types::{HostName, System};

use crate::events::Events;
use crate::report::Mode;

/// Per host the desired system (or why there is none), and the union of all their closures.
pub struct Desired {
    /// In the order of the hosts given.
    pub hosts: Vec<(HostName, Result<DesiredHost, DesiredError>)>,
    /// Every path of every desired closure, references before referrers.
    pub infos: Vec<PathInfo>,
}

impl Desired {
    pub fn get(&self, name: &str) -> Option<&DesiredHost> {
        self.hosts
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, d)| d.as_ref().ok())
    }

    /// The closure of `root` (a path of some desired closure), from the local query.
    pub fn closure_of(&self, root: &str) -> Vec<String> {
        let Ok(root) = StorePath::new(root.to_owned()) else {
            return Vec::new();
        };
        let index: BTreeMap<&StorePath, usize> = self
            .infos
            .iter()
            .enumerate()
            .map(|(i, p)| (&p.path, i))
            .collect();
        closure_of(&self.infos, &index, &root)
            .into_iter()
            .map(|i| self.infos[i].path.to_string())
            .collect()
    }
}

/// The folder of fleet.toml: where `.fleet/` goes and what relative paths are relative to.
pub fn fleet_dir(file: &Utf8Path) -> Utf8PathBuf {
    file.canonicalize_utf8()
        .ok()
        .and_then(|p| p.parent().map(Utf8Path::to_path_buf))
        .unwrap_or_else(|| Utf8PathBuf::from("."))
}

/// What fleet-nix-build needs to know about a host.
pub fn build_spec(inventory: &Inventory, host: &Host) -> HostBuildSpec {
    let pin = match host
        .pin()
        .and_then(|p| inventory.pins.get(p))
        .map(|p| &p.source)
    {
        Some(PinSource::Tarball { url, sha256 }) => PinSpec::Tarball {
            url: url.clone(),
            sha256: sha256.clone(),
        },
        Some(PinSource::Path(p)) => PinSpec::Path(p.clone()),
        // The inventory refuses hosts whose pin does not exist; a flake host has none.
        None => PinSpec::Path(Utf8PathBuf::from("/nonexistent-pin")),
    };
    HostBuildSpec {
        name: host.name.to_string(),
        system: host.system.to_string(),
        pin,
        config: host.config().cloned().unwrap_or_default(),
        cross: host.build == BuildMode::Cross,
        nix_path: host
            .nix_path
            .iter()
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect(),
        flake: host.flake().map(|f| FlakeSpec {
            reference: f.reference.clone(),
            attribute: f.attribute.clone(),
            impure: f.impure,
        }),
    }
}

/// How this run evaluates (global flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvalSettings {
    /// `--show-trace`.
    pub show_trace: bool,
    /// The evaluation cache (off with `--no-eval-cache`).
    pub cache: bool,
    /// `--eval-jobs`.
    pub jobs: Option<u16>,
    /// `--eval-max-memory`, bytes.
    pub max_memory: Option<u64>,
}

impl EvalSettings {
    pub fn of(global: &crate::args::GlobalArgs) -> EvalSettings {
        EvalSettings {
            show_trace: global.show_trace,
            cache: !global.no_eval_cache,
            jobs: global.eval_jobs,
            max_memory: global.eval_max_memory,
        }
    }

    /// Evaluation processes at once and the memory each may use, given the deployer's
    /// available memory: by default as many processes (at most 2) as there are GiB available,
    /// sharing three quarters of it; an explicit limit or count is kept as given.
    pub fn bounds(&self, mem_available: Option<u64>) -> (usize, Option<u64>) {
        const GIB: u64 = 1 << 30;
        let jobs = match (self.jobs, mem_available) {
            (Some(j), _) => usize::from(j),
            (None, Some(m)) => (m / GIB).clamp(1, 2) as usize,
            (None, None) => 2,
        };
        let max = self
            .max_memory
            .or_else(|| mem_available.map(|m| (m / 4 * 3 / jobs as u64).max(GIB / 2)));
        (jobs, max)
    }
}

/// Build options for a run: GC roots under `<fleet_dir>/.fleet/`, every host's configuration
/// (a package never holds another host's files), progress and warnings as the run's events
/// (`events`), `--show-trace` as Nix's `show-trace` setting (added to the `NIX_CONFIG` fleet
/// was given).
pub fn build_options(
    inventory: &Inventory,
    fleet_dir: &Utf8Path,
    events: &Events,
    eval: &EvalSettings,
) -> BuildOptions {
    let mut opts = BuildOptions::new(fleet_dir.to_path_buf());
    opts.eval_cache = eval.cache;
    let (jobs, max_memory) = eval.bounds(fleet_nix_build::mem_available());
    opts.max_parallel_evals = jobs;
    opts.eval_max_memory = max_memory;
    let show_trace = eval.show_trace;
    opts.all_configs = inventory
        .hosts
        .iter()
        .filter_map(|h| h.config().cloned())
        .collect();
    let mut extra = crate::scale::nix_config_lines(&inventory.build);
    if show_trace {
        extra.push_str("show-trace = true\n");
    }
    if !extra.is_empty() {
        let config = crate::scale::with_nix_config(std::env::var("NIX_CONFIG").ok(), &extra);
        opts.nix_env.push(("NIX_CONFIG".into(), config));
    }
    opts.on_event = Some(events.build_sink());
    opts
}

/// Evaluates and builds `hosts` (one evaluation per batch, one realise for all), then reads
/// the closures of the built deployment packages.
pub async fn build(
    inventory: &Inventory,
    hosts: &[&Host],
    fleet_dir: &Utf8Path,
    events: &Events,
    eval: &EvalSettings,
) -> Desired {
    if let Err(e) = crate::record::ensure_state_dir(fleet_dir) {
        errln!("fleet: warning: cannot create {fleet_dir}/.fleet: {e}");
    }
    let specs: Vec<HostBuildSpec> = hosts.iter().map(|h| build_spec(inventory, h)).collect();
    let built = fleet_nix_build::evaluate_and_build(
        &specs,
        &build_options(inventory, fleet_dir, events, eval),
    )
    .await;
    // Nix colours its messages; keep the escapes only for a person watching a terminal.
    let plain =
        !(matches!(events.mode(), Mode::Live | Mode::Plain) && crate::term::stderr_is_tty());
    let wanted: Vec<(HostName, Result<Wanted, DesiredError>)> = built
        .into_iter()
        .zip(hosts)
        .map(|((_, r), host)| {
            let r = r
                .map_err(|e| {
                    let text = error_chain(&e);
                    DesiredError::Build {
                        reason: if plain {
                            crate::out::strip_ansi(&text)
                        } else {
                            text
                        },
                    }
                })
                .map(|b| Wanted {
                    system: host.system.clone(),
                    toplevel: b.toplevel,
                    package: b.package,
                    flake: b.flake,
                });
            (host.name.clone(), r)
        })
        .collect();
    with_closures(wanted).await
}

/// The desired systems of a saved plan: exactly its targets and packages (kept alive by the
/// GC roots in `.fleet/`). A host whose package is gone from the local store gets an error.
pub async fn from_plan(plan: &Plan, hosts: &[&Host]) -> Desired {
    let wanted = hosts
        .iter()
        .map(|host| {
            let name = host.name.clone();
            let r = match plan.host(&name) {
                None => Err(DesiredError::NotInPlan),
                Some(h) => match (&h.target, &h.package) {
                    (Some(t), Some(p)) => Ok(Wanted {
                        system: h.system.clone().unwrap_or_else(|| host.system.clone()),
                        toplevel: t.clone(),
                        package: p.clone(),
                        // A saved plan keeps the flake's revision, not its whole lock.
                        flake: None,
                    }),
                    _ => Err(DesiredError::NothingPlanned {
                        planned: h.error.clone(),
                    }),
                },
            };
            (name, r)
        })
        .collect();
    with_closures(wanted).await
}

struct Wanted {
    system: System,
    toplevel: String,
    package: String,
    flake: Option<FlakeLock>,
}

/// The flake lock a host's deployment record carries (`flake`), if any.
pub fn recorded_flake(record: Option<&serde_json::Value>) -> Option<FlakeLock> {
    serde_json::from_value(record?.get("flake")?.clone()).ok()
}

/// Reads the closures of all wanted packages in one local query and splits them per host.
async fn with_closures(wanted: Vec<(HostName, Result<Wanted, DesiredError>)>) -> Desired {
    let store = LocalStore::system();
    let mut roots = BTreeSet::new();
    type Rooted = Result<(Wanted, StorePath), DesiredError>;
    let mut wanted: Vec<(HostName, Rooted)> = wanted
        .into_iter()
        .map(|(name, r)| {
            let r = r.and_then(|w| {
                let p = StorePath::new(w.package.clone())?;
                if !std::path::Path::new(p.as_str()).exists() {
                    return Err(DesiredError::PackageGone { package: p });
                }
                roots.insert(p.clone());
                Ok((w, p))
            });
            (name, r)
        })
        .collect();
    let roots: Vec<StorePath> = roots.into_iter().collect();
    let infos = if roots.is_empty() {
        Ok(Vec::new())
    } else {
        closure_infos(&store, &roots)
            .await
            .map_err(|e| e.to_string())
    };
    let infos = match infos {
        Ok(i) => i,
        Err(e) => {
            for (_, r) in &mut wanted {
                if r.is_ok() {
                    *r = Err(DesiredError::LocalClosure { reason: e.clone() });
                }
            }
            Vec::new()
        }
    };
    let index: BTreeMap<&StorePath, usize> = infos
        .iter()
        .enumerate()
        .map(|(i, p)| (&p.path, i))
        .collect();
    let hosts = wanted
        .into_iter()
        .map(|(name, r)| {
            let d = r.map(|(w, root)| {
                let closure = closure_of(&infos, &index, &root)
                    .into_iter()
                    .map(|i| ClosurePath {
                        path: infos[i].path.to_string(),
                        nar_size: infos[i].nar_size,
                    })
                    .collect();
                let nixpkgs = std::fs::read_link(Utf8Path::new(&w.package).join("nixpkgs"))
                    .ok()
                    .map(|p| p.to_string_lossy().into_owned());
                DesiredHost {
                    name: name.clone(),
                    system: w.system,
                    boot: fleet_nix_build::boot_spec(&w.toplevel),
                    specialisations: specialisations(Utf8Path::new(&w.toplevel)),
                    toplevel: w.toplevel,
                    package: w.package,
                    closure,
                    nixpkgs,
                    flake: w.flake,
                }
            });
            (name, d)
        })
        .collect();
    Desired { hosts, infos }
}

/// Indices into `infos` of the closure of `root`, in `infos` order (references first).
fn closure_of(
    infos: &[PathInfo],
    index: &BTreeMap<&StorePath, usize>,
    root: &StorePath,
) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&StorePath> = vec![root];
    while let Some(p) = stack.pop() {
        let Some(&i) = index.get(p) else { continue };
        if seen.insert(i) {
            stack.extend(infos[i].references.iter());
        }
    }
    seen.into_iter().collect()
}

/// The specialisations of a built toplevel (`specialisation/NAME` links), by name.
fn specialisations(toplevel: &Utf8Path) -> Vec<Specialisation> {
    let Ok(entries) = std::fs::read_dir(toplevel.join("specialisation")) else {
        return Vec::new();
    };
    let mut out: Vec<Specialisation> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let target = std::fs::canonicalize(e.path()).ok()?;
            Some(Specialisation {
                name,
                toplevel: target.to_string_lossy().into_owned(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluation_bounds_follow_the_memory_available_unless_given() {
        const GIB: u64 = 1 << 30;
        let auto = EvalSettings::default();
        assert_eq!(auto.bounds(Some(16 * GIB)), (2, Some(6 * GIB)));
        // Little memory: one process, a floor of half a GiB.
        assert_eq!(auto.bounds(Some(GIB / 2)), (1, Some(GIB / 2)));
        assert_eq!(auto.bounds(None), (2, None));
        let given = EvalSettings {
            jobs: Some(4),
            max_memory: Some(3 * GIB),
            ..EvalSettings::default()
        };
        assert_eq!(given.bounds(Some(16 * GIB)), (4, Some(3 * GIB)));
    }

    #[test]
    fn show_trace_is_added_to_nix_config() {
        let dir = Utf8Path::new("/tmp");
        let inv = fleet_inventory::parse(
            "[pins.p]\npath = \"/p\"\n[hosts.pi1]\nsystem = \"aarch64-linux\"\nconfig = \"/c.nix\"\n",
            &fleet_inventory::ParseOptions {
                file_name: "fleet.toml",
                base_dir: dir,
                exists: &|_| true,
            },
        )
        .unwrap();
        let events = Events::quiet();
        assert!(build_options(&inv, dir, &events, &EvalSettings::default())
            .nix_env
            .is_empty());
        let opts = build_options(
            &inv,
            dir,
            &events,
            &EvalSettings {
                show_trace: true,
                ..EvalSettings::default()
            },
        );
        let (k, v) = &opts.nix_env[0];
        assert_eq!(k, "NIX_CONFIG");
        assert!(v.lines().any(|l| l == "show-trace = true"), "{v}");
        // What fleet was given (e.g. `substituters =`) is kept.
        if let Ok(given) = std::env::var("NIX_CONFIG") {
            assert!(v.starts_with(given.trim_end()), "{v}");
        }
    }

    fn info(name: &str, refs: &[&str]) -> PathInfo {
        let p = |n: &str| StorePath::new(format!("/nix/store/{}-{n}", "a".repeat(32))).unwrap();
        PathInfo {
            path: p(name),
            deriver: None,
            nar_hash: String::new(),
            nar_size: 1,
            references: refs.iter().map(|r| p(r)).collect(),
            sigs: Vec::new(),
            ca: None,
        }
    }

    #[test]
    fn closure_of_a_root_keeps_the_union_order() {
        let infos = vec![
            info("glibc", &[]),
            info("htop", &["glibc"]),
            info("nano", &["glibc"]),
            info("sys-a", &["htop", "glibc"]),
            info("sys-b", &["nano"]),
        ];
        let index = infos
            .iter()
            .enumerate()
            .map(|(i, p)| (&p.path, i))
            .collect();
        assert_eq!(closure_of(&infos, &index, &infos[3].path), vec![0, 1, 3]);
        assert_eq!(closure_of(&infos, &index, &infos[4].path), vec![0, 2, 4]);
    }
}
