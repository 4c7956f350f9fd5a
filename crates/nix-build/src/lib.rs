//! fleet-nix-build: evaluate and build NixOS hosts on this machine, the way `nixos-rebuild` does,
//! from an expression fleet generates.
//!
//! For every host: `import "${nixpkgs}/nixos" { configuration; system; }` with the search path
//! `nixpkgs` (its pin), `nixos-config` (its configuration) and fleet.toml's `nix-path` only, the
//! deployer's `NIX_PATH` never (many hosts per Nix process when they share a search path), plus a
//! **deployment package** derivation (the host's own files, `nixpkgs`, `nix-path/` and `system`
//! links, a `switch` script, a README) that depends only on those files, pin and system. All hosts' packages are built in one `nix-store --realise --keep-going`, and each
//! host's package gets a GC root at `<fleet_dir>/.fleet/gcroots/<host>`. A failed host is a
//! value: one host's evaluation or build error never hides the others.
//!
//! The library never prints; progress goes to [`BuildOptions::on_event`].
//!
//! # Layout
//! - [`spec`]: inputs ([`HostBuildSpec`], [`PinSpec`], [`BuildOptions`]) and outputs
//!   ([`BuiltHost`], [`BootSpec`]), progress [`BuildEvent`]s.
//! - [`capability`]: can this machine build a system (native, `extra-platforms`, `builders`)?
//! - [`files`]: which files a configuration reads (pure apart from reading files).
//! - `prepare`, `sources`: absolute paths, search path checks, and every pin, `nix-path` entry
//!   and host's files put in the store before evaluation (the evaluation sees only those).
//! - `expr`: the generated Nix expression and the package's templates (`src/templates/`).
//! - `eval`: batches of hosts per `nix-instantiate`, per-host fallback.
//! - `cache`: the evaluation cache (`.fleet/eval-cache.json`): unchanged inputs, no evaluation.
//! - `realise`: the one build, per-host failures, GC roots.
//! - `push`: [`push_to_cache`], built closures to a binary cache (`fleet build --to`).
//! - [`error`]: [`BuildError`], [`CannotBuild`].

mod cache;
pub mod capability;
pub mod error;
mod eval;
mod expr;
pub mod files;
mod flake;
mod nix;
mod prepare;
mod push;
mod realise;
mod sources;
pub mod spec;

use std::collections::BTreeSet;

use camino::Utf8Path;
use fleet_types::{BootEntry, BootSpec};

pub use capability::{check_can_build, BuildRoute, NixCapabilities};
pub use error::{BuildError, CannotBuild};
pub use nix::mem_available;
pub use push::push_to_cache;
pub use spec::{
    BuildEvent, BuildOptions, BuiltHost, EventSink, FlakeLock, FlakeSpec, HostBuildSpec,
    LockedInput, PinSpec,
};

/// Evaluate and build `specs`. Returns one result per spec, in the same order.
pub async fn evaluate_and_build(
    specs: &[HostBuildSpec],
    opts: &BuildOptions,
) -> Vec<(String, Result<BuiltHost, BuildError>)> {
    let mut results = check_and_evaluate(specs, opts).await;

    // Build the union in one realise.
    let ok: Vec<(usize, eval::Evaluated)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().ok().map(|ev| (i, ev.clone())))
        .collect();
    let mut built: Vec<Option<Result<BuiltHost, BuildError>>> = results
        .iter_mut()
        .map(|r| match r {
            Ok(_) => None,
            Err(e) => Some(Err(e.clone())),
        })
        .collect();
    if !ok.is_empty() {
        let build_results = build(specs, &ok, opts).await;
        for ((i, _), r) in ok.iter().zip(build_results) {
            built[*i] = Some(r);
        }
    }
    specs
        .iter()
        .zip(built)
        .map(|(spec, r)| {
            let r = r.unwrap_or_else(|| {
                Err(BuildError::Output {
                    command: "fleet-nix-build".into(),
                    detail: "host was not processed".into(),
                })
            });
            (spec.name.clone(), r)
        })
        .collect()
}

/// What evaluation alone tells about a host: the output paths its system and deployment
/// package will have once built (nothing is built).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvaluatedHost {
    pub toplevel: String,
    pub package: String,
    pub toplevel_drv: String,
    pub package_drv: String,
    /// A flake host's lock.
    pub flake: Option<FlakeLock>,
}

/// Evaluate `specs` without building (for `fleet status`: which system does fleet.toml want?).
/// Same checks and batching as [`evaluate_and_build`]; one result per spec, in order.
pub async fn evaluate(
    specs: &[HostBuildSpec],
    opts: &BuildOptions,
) -> Vec<(String, Result<EvaluatedHost, BuildError>)> {
    let results = check_and_evaluate(specs, opts).await;
    specs
        .iter()
        .zip(results)
        .map(|(spec, r)| {
            let r = r.map(|ev| EvaluatedHost {
                toplevel: ev.toplevel_out,
                package: ev.package_out,
                toplevel_drv: ev.toplevel,
                package_drv: ev.package,
                flake: ev.flake,
            });
            (spec.name.clone(), r)
        })
        .collect()
}

/// Resolves paths, checks that this machine can build each system, and evaluates the hosts
/// that passed. One result per spec, in order.
async fn check_and_evaluate(
    specs: &[HostBuildSpec],
    opts: &BuildOptions,
) -> Vec<Result<eval::Evaluated, BuildError>> {
    let mut results: Vec<Option<Result<eval::Evaluated, BuildError>>> =
        specs.iter().map(|_| None).collect();
    let caps = if specs.iter().any(|s| !s.cross) {
        Some(NixCapabilities::query(&opts.nix_env).await)
    } else {
        None
    };
    let check = |spec: &HostBuildSpec| -> Result<(), BuildError> {
        if !spec.cross {
            match &caps {
                Some(Ok(caps)) => {
                    caps.check(&spec.system)?;
                    match caps.route(&spec.system) {
                        Some(BuildRoute::Native) | None => {}
                        Some(route) => opts.emit(BuildEvent::BuildRoute {
                            host: spec.name.clone(),
                            system: spec.system.clone(),
                            route,
                        }),
                    }
                }
                Some(Err(e)) => return Err(e.clone()),
                None => {}
            }
        }
        Ok(())
    };
    // Flake hosts: their own evaluation (one per flake).
    let (flake_index, flake_specs): (Vec<usize>, Vec<&HostBuildSpec>) = specs
        .iter()
        .enumerate()
        .filter(|(_, s)| s.flake.is_some())
        .filter(|(i, s)| match check(s) {
            Ok(()) => true,
            Err(e) => {
                results[*i] = Some(Err(e));
                false
            }
        })
        .unzip();
    let pinned: Vec<(usize, HostBuildSpec)> = specs
        .iter()
        .enumerate()
        .filter(|(_, s)| s.flake.is_none())
        .map(|(i, s)| (i, s.clone()))
        .collect();
    let (pinned_index, pinned_specs): (Vec<usize>, Vec<HostBuildSpec>) = pinned.into_iter().unzip();
    let mut to_eval = Vec::new();
    let mut eval_index = Vec::new();
    let (prepared, flake_evaluated) = tokio::join!(
        prepare::prepare(&pinned_specs, opts),
        flake::evaluate(&flake_specs, opts)
    );
    for (i, r) in flake_index.into_iter().zip(flake_evaluated) {
        results[i] = Some(r);
    }
    for (i, (spec, host)) in pinned_index
        .into_iter()
        .zip(pinned_specs.iter().zip(prepared))
    {
        match host.and_then(|host| check(spec).map(|()| host)) {
            Ok(host) => {
                to_eval.push((spec.name.clone(), host));
                eval_index.push(i);
            }
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    let evaluated = cache::evaluate(to_eval, opts).await;
    for (i, r) in eval_index.into_iter().zip(evaluated) {
        results[i] = Some(r);
    }
    for (i, slot) in results.iter_mut().enumerate() {
        // The configuration's own platform must be fleet.toml's: NixOS lets
        // `nixpkgs.hostPlatform` win silently over the `system` fleet passes.
        let Some(r) = slot.take() else { continue };
        let r = r.and_then(|ev| match &ev.host_platform {
            Some(p) if *p != specs[i].system => Err(BuildError::PlatformMismatch {
                configured: p.clone(),
                system: specs[i].system.clone(),
            }),
            _ => Ok(ev),
        });
        *slot = Some(r);
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(BuildError::Output {
                    command: "fleet-nix-build".into(),
                    detail: "host was not processed".into(),
                })
            })
        })
        .collect()
}

async fn build(
    specs: &[HostBuildSpec],
    ok: &[(usize, eval::Evaluated)],
    opts: &BuildOptions,
) -> Vec<Result<BuiltHost, BuildError>> {
    let hosts: Vec<String> = ok.iter().map(|(i, _)| specs[*i].name.clone()).collect();
    let mut drvs: Vec<String> = ok.iter().map(|(_, e)| e.package.clone()).collect();
    drvs.sort();
    drvs.dedup();
    let roots_dir = opts.fleet_dir.join(".fleet").join("gcroots");
    let temp_dir = roots_dir.join(format!(".building-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&temp_dir) {
        let err = BuildError::Io {
            action: "creating",
            path: temp_dir.to_string(),
            source: e.into(),
        };
        return ok.iter().map(|_| Err(err.clone())).collect();
    }

    opts.emit(BuildEvent::BuildStarted {
        hosts: hosts.clone(),
    });
    let realised = realise::realise(&drvs, &temp_dir.join("build"), opts).await;
    let (results, built) = match realised {
        Err(e) => (ok.iter().map(|_| Err(e.clone())).collect(), Vec::new()),
        Ok(realised) => {
            let results = after_realise(specs, ok, &realised, &roots_dir, opts).await;
            (results, realised.built)
        }
    };
    let _ = std::fs::remove_dir_all(&temp_dir);
    let failed_hosts = hosts
        .iter()
        .zip(&results)
        .filter(|(_, r): &(_, &Result<BuiltHost, BuildError>)| r.is_err())
        .map(|(h, _)| h.clone())
        .collect();
    opts.emit(BuildEvent::BuildFinished {
        built,
        failed_hosts,
    });
    results
}

async fn after_realise(
    specs: &[HostBuildSpec],
    ok: &[(usize, eval::Evaluated)],
    realised: &realise::Realised,
    roots_dir: &Utf8Path,
    opts: &BuildOptions,
) -> Vec<Result<BuiltHost, BuildError>> {
    let outs: Vec<String> = ok.iter().map(|(_, e)| e.package_out.clone()).collect();
    let invalid = match realise::invalid_paths(&outs, opts).await {
        Ok(set) => set,
        Err(e) => return ok.iter().map(|_| Err(e.clone())).collect(),
    };
    let mut results = Vec::with_capacity(ok.len());
    for (i, ev) in ok {
        let name = &specs[*i].name;
        if invalid.contains(&ev.package_out) {
            let closure = realise::drv_closure(&ev.package, opts)
                .await
                .unwrap_or_else(|_| BTreeSet::from([ev.package.clone()]));
            results.push(Err(
                realise::host_build_error(&closure, realised, opts).await
            ));
            continue;
        }
        let root = roots_dir.join(realise::root_name(name));
        let r = realise::add_root(&ev.package_out, &root, opts)
            .await
            .map(|()| BuiltHost {
                toplevel: ev.toplevel_out.clone(),
                package: ev.package_out.clone(),
                toplevel_drv: ev.toplevel.clone(),
                package_drv: ev.package.clone(),
                gc_root: root,
                boot: boot_spec(&ev.toplevel_out),
                flake: ev.flake.clone(),
            });
        results.push(r);
    }
    results
}

/// What a built toplevel boots, read from the local store: the targets of its `kernel`,
/// `initrd`, `kernel-modules`, `dtbs` and `firmware` links and its `kernel-params` and
/// `init-interface-version` files (the same parts the facts script reads on a host).
pub fn boot_spec(toplevel: &str) -> BootSpec {
    let toplevel = Utf8Path::new(toplevel);
    BootSpec::from_fn(|part| {
        let entry = toplevel.join(part.as_str());
        match part.entry() {
            BootEntry::Link => std::fs::read_link(entry)
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
            BootEntry::File => std::fs::read_to_string(entry)
                .ok()
                .map(|s| s.lines().collect::<String>()),
        }
    })
}
