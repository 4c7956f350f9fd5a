//! Evaluation results streamed into the build: a host's package is realised as soon as its
//! batch's evaluation (or the cache) returned it, while later batches still evaluate. One
//! realise at a time: each takes every host evaluated since the last one started, so a build
//! never waits for the slowest batch, and a batch that finishes during a realise joins the
//! next. A realise whose packages are all valid already (a no-op) runs no Nix build at all.

use std::collections::BTreeSet;

use camino::Utf8Path;
use tokio::sync::mpsc;

use crate::error::BuildError;
use crate::eval::Evaluated;
use crate::realise;
use crate::spec::{BuildEvent, BuildOptions, BuiltHost, HostBuildSpec};

/// A host ready to build: its index in the specs and its evaluation.
pub(crate) type Ready = (usize, Evaluated);

/// Builds what arrives on `ready` until it is closed; one result per host received, with its
/// index.
pub(crate) async fn build_as_ready(
    specs: &[HostBuildSpec],
    mut ready: mpsc::UnboundedReceiver<Ready>,
    opts: &BuildOptions,
) -> Vec<(usize, Result<BuiltHost, BuildError>)> {
    let mut done = Vec::new();
    while let Some(first) = ready.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = ready.try_recv() {
            batch.push(more);
        }
        let results = build(specs, &batch, opts).await;
        done.extend(batch.iter().map(|(i, _)| *i).zip(results));
    }
    done
}

/// One build of `ok`'s packages: skipped when they are all valid already, else one
/// `nix-store --realise --keep-going` of those that are not; then the per-host GC roots.
async fn build(
    specs: &[HostBuildSpec],
    ok: &[Ready],
    opts: &BuildOptions,
) -> Vec<Result<BuiltHost, BuildError>> {
    let hosts: Vec<String> = ok.iter().map(|(i, _)| specs[*i].name.clone()).collect();
    let roots_dir = opts.fleet_dir.join(".fleet").join("gcroots");
    let outs: Vec<String> = ok.iter().map(|(_, e)| e.package_out.clone()).collect();
    opts.emit(BuildEvent::BuildStarted {
        hosts: hosts.clone(),
    });
    let (results, built) = match realise::invalid_paths(&outs, opts).await {
        Err(e) => (ok.iter().map(|_| Err(e.clone())).collect(), Vec::new()),
        Ok(invalid) if invalid.is_empty() => {
            let nothing = realise::Realised {
                built: Vec::new(),
                errors: Vec::new(),
            };
            let r = after_realise(specs, ok, &nothing, &invalid, &roots_dir, opts).await;
            (r, Vec::new())
        }
        Ok(invalid) => realise_invalid(specs, ok, &invalid, &roots_dir, opts).await,
    };
    let failed_hosts = hosts
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_err())
        .map(|(h, _)| h.clone())
        .collect();
    opts.emit(BuildEvent::BuildFinished {
        built,
        failed_hosts,
    });
    results
}

/// Realises the packages in `invalid` (with temporary GC roots until the per-host roots
/// exist); returns the hosts' results and the derivations Nix built.
async fn realise_invalid(
    specs: &[HostBuildSpec],
    ok: &[Ready],
    invalid: &BTreeSet<String>,
    roots_dir: &Utf8Path,
    opts: &BuildOptions,
) -> (Vec<Result<BuiltHost, BuildError>>, Vec<String>) {
    let mut drvs: Vec<String> = ok
        .iter()
        .filter(|(_, e)| invalid.contains(&e.package_out))
        .map(|(_, e)| e.package.clone())
        .collect();
    drvs.sort();
    drvs.dedup();
    let temp_dir = roots_dir.join(format!(".building-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&temp_dir) {
        let err = BuildError::Io {
            action: "creating",
            path: temp_dir.to_string(),
            source: e.into(),
        };
        return (ok.iter().map(|_| Err(err.clone())).collect(), Vec::new());
    }
    let realised = realise::realise(&drvs, &temp_dir.join("build"), opts).await;
    let out = match realised {
        Err(e) => (ok.iter().map(|_| Err(e.clone())).collect(), Vec::new()),
        Ok(realised) => {
            let outs: Vec<String> = invalid.iter().cloned().collect();
            let still = match realise::invalid_paths(&outs, opts).await {
                Ok(set) => set,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&temp_dir);
                    return (ok.iter().map(|_| Err(e.clone())).collect(), realised.built);
                }
            };
            let results = after_realise(specs, ok, &realised, &still, roots_dir, opts).await;
            (results, realised.built)
        }
    };
    let _ = std::fs::remove_dir_all(&temp_dir);
    out
}

/// Per host: its build error when its package is `invalid` after the realise, else its GC
/// root (made only when it is not in place already) and what it built.
async fn after_realise(
    specs: &[HostBuildSpec],
    ok: &[Ready],
    realised: &realise::Realised,
    invalid: &BTreeSet<String>,
    roots_dir: &Utf8Path,
    opts: &BuildOptions,
) -> Vec<Result<BuiltHost, BuildError>> {
    let registered = realise::registered_roots(opts);
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
        let rooted = match &registered {
            Some(r) => realise::root_in_place(r, &root, &ev.package_out),
            None => false,
        };
        let r = if rooted {
            Ok(())
        } else {
            realise::add_root(&ev.package_out, &root, opts).await
        };
        results.push(r.map(|()| BuiltHost {
            toplevel: ev.toplevel_out.clone(),
            package: ev.package_out.clone(),
            toplevel_drv: ev.toplevel.clone(),
            package_drv: ev.package.clone(),
            gc_root: root,
            boot: crate::boot_spec(&ev.toplevel_out),
            flake: ev.flake.clone(),
        }));
    }
    results
}
