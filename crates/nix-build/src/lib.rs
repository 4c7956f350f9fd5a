//! fleet-nix-build: evaluate and build NixOS hosts on this machine, the way `nixos-rebuild` does,
//! from an expression fleet generates.
//!
//! For every host: `import "${nixpkgs}/nixos" { configuration; system; }` with the search path
//! `nixpkgs` (its pin), `nixos-config` (its configuration) and fleet.toml's `nix-path` only, the
//! deployer's `NIX_PATH` never (many hosts per Nix process when they share a search path), plus a
//! **deployment package** derivation (the host's own files, `nixpkgs`, `nix-path/` and `system`
//! links, a `switch` script, a README) that depends only on those files, pin and system. Hosts'
//! packages are built with `nix-store --realise --keep-going` as their evaluations return
//! (one realise at a time, for every host evaluated since the last one), and each
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
//! - `fingerprint`: stat fingerprints of a source's files (git's racy rule), so an unchanged
//!   source is not put in the store again (`.fleet/sources-cache.json`).
//! - `pipeline`: evaluation results streamed into the build; no realise when all is built.
//! - `realise`: a realise, per-host failures, GC roots.
//! - `push`: [`push_to_cache`], built closures to a binary cache (`fleet build --to`).
//! - [`error`]: [`BuildError`], [`CannotBuild`].

mod cache;
pub mod capability;
pub mod error;
mod eval;
mod expr;
pub mod files;
mod fingerprint;
mod flake;
mod nix;
mod pipeline;
mod prepare;
mod push;
mod realise;
mod sources;
pub mod spec;

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

/// Evaluate and build `specs`. Returns one result per spec, in the same order. A host's build
/// starts as soon as its evaluation returned (`pipeline`), while other batches still evaluate.
pub async fn evaluate_and_build(
    specs: &[HostBuildSpec],
    opts: &BuildOptions,
) -> Vec<(String, Result<BuiltHost, BuildError>)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let evaluating = async move {
        let on_ready = |i: usize, ev: &eval::Evaluated| {
            let _ = tx.send((i, ev.clone()));
        };
        check_and_evaluate(specs, opts, &on_ready).await
        // `tx` is dropped here: the build ends after the last host evaluated.
    };
    let (evaluated, built) = tokio::join!(evaluating, pipeline::build_as_ready(specs, rx, opts));
    let mut results: Vec<Option<Result<BuiltHost, BuildError>>> =
        evaluated.into_iter().map(|r| r.err().map(Err)).collect();
    for (i, r) in built {
        results[i] = Some(r);
    }
    specs
        .iter()
        .zip(results)
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
    let results = check_and_evaluate(specs, opts, &|_, _| {}).await;
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
/// that passed. One result per spec, in order; each success is also given to `on_ready` (with
/// its index) as soon as it is known.
async fn check_and_evaluate(
    specs: &[HostBuildSpec],
    opts: &BuildOptions,
    on_ready: &(dyn Fn(usize, &eval::Evaluated) + Sync),
) -> Vec<Result<eval::Evaluated, BuildError>> {
    let mut results: Vec<Option<Result<eval::Evaluated, BuildError>>> =
        specs.iter().map(|_| None).collect();
    let pinned: Vec<(usize, HostBuildSpec)> = specs
        .iter()
        .enumerate()
        .filter(|(_, s)| s.flake.is_none())
        .map(|(i, s)| (i, s.clone()))
        .collect();
    let (pinned_index, pinned_specs): (Vec<usize>, Vec<HostBuildSpec>) = pinned.into_iter().unzip();
    // The capability check, then the flake hosts (one evaluation per flake), while the pinned
    // hosts' sources are prepared.
    let checked_flakes = async {
        let caps = if specs.iter().any(|s| !s.cross) {
            Some(NixCapabilities::query(&opts.nix_env).await)
        } else {
            None
        };
        let mut refused = Vec::new();
        let (flake_index, flake_specs): (Vec<usize>, Vec<&HostBuildSpec>) = specs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.flake.is_some())
            .filter(|(i, s)| match check(s, caps.as_ref(), opts) {
                Ok(()) => true,
                Err(e) => {
                    refused.push((*i, e));
                    false
                }
            })
            .unzip();
        let evaluated = flake::evaluate(&flake_specs, opts).await;
        (caps, refused, flake_index.into_iter().zip(evaluated))
    };
    let ((caps, refused, flake_evaluated), prepared) =
        tokio::join!(checked_flakes, prepare::prepare(&pinned_specs, opts));
    for (i, e) in refused {
        results[i] = Some(Err(e));
    }
    let mut to_eval = Vec::new();
    let mut eval_index = Vec::new();
    for (i, r) in flake_evaluated {
        let r = r.and_then(|ev| platform_checked(&specs[i], ev));
        if let Ok(ev) = &r {
            on_ready(i, ev);
        }
        results[i] = Some(r);
    }
    for (i, (spec, host)) in pinned_index
        .into_iter()
        .zip(pinned_specs.iter().zip(prepared))
    {
        match host.and_then(|host| check(spec, caps.as_ref(), opts).map(|()| host)) {
            Ok(host) => {
                to_eval.push((spec.name.clone(), host));
                eval_index.push(i);
            }
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    let on_result = |j: usize, r: &eval::EvalResult| {
        let i = eval_index[j];
        if let Ok(ev) = r {
            if platform_checked(&specs[i], ev.clone()).is_ok() {
                on_ready(i, ev);
            }
        }
    };
    let evaluated = cache::evaluate(to_eval, opts, &on_result).await;
    for (&i, r) in eval_index.iter().zip(evaluated) {
        results[i] = Some(r.and_then(|ev| platform_checked(&specs[i], ev)));
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

/// Can this machine build `spec`'s system (natively, emulated or on a builder)? Says where
/// when it is not natively here.
fn check(
    spec: &HostBuildSpec,
    caps: Option<&Result<NixCapabilities, BuildError>>,
    opts: &BuildOptions,
) -> Result<(), BuildError> {
    if spec.cross {
        return Ok(());
    }
    match caps {
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
            Ok(())
        }
        Some(Err(e)) => Err(e.clone()),
        None => Ok(()),
    }
}

/// The configuration's own platform must be fleet.toml's: NixOS lets `nixpkgs.hostPlatform`
/// win silently over the `system` fleet passes.
fn platform_checked(
    spec: &HostBuildSpec,
    ev: eval::Evaluated,
) -> Result<eval::Evaluated, BuildError> {
    match &ev.host_platform {
        Some(p) if *p != spec.system => Err(BuildError::PlatformMismatch {
            configured: p.clone(),
            system: spec.system.clone(),
        }),
        _ => Ok(ev),
    }
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
