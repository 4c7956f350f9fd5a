//! The steps of an apply on one host, after planning: copy the missing paths (fan-out over the
//! hosts' store sessions, or the compressed import), then activation ([`crate::activation`],
//! re-exported here).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleet_store::copy::{fan_out_serve, FanOutOptions};
use fleet_store::local::LocalStore;
use fleet_store::serve::{AddEvent, AddSummary};
use fleet_store::{PathInfo, StorePath};

pub use crate::activation::{
    activate, confirm, deployment_id, failed_units, link_package, result_of, rollback, rollback_to,
    Activated, Activation, Confirmation, DeployState, DeploymentRecord, Goal, OnFailedUnits,
    ACTIVATE_SCRIPT,
};
use crate::fanout::HostEvents;
use crate::ssh::error::{ConnectError, ExecError};
use crate::store::{StoreError, StoreSession};
use crate::sudo::Privilege;
use crate::Connection;

/// Why a deploy step failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("importing into the store of {host} failed (exit {status:?}): {stderr}")]
    Import {
        host: String,
        status: Option<u32>,
        stderr: String,
    },
    #[error("reading the local store failed: {0}")]
    Source(String),
    #[error("activation on {host} was refused (exit {status:?}): {stderr}")]
    Refused {
        host: String,
        status: Option<u32>,
        stderr: String,
    },
    #[error("{stderr}")]
    Locked { host: String, stderr: String },
    #[error("activation on {host} failed (not rolled back, as asked): {stderr}")]
    ActivationFailed { host: String, stderr: String },
    #[error("activation on {host} failed and so did the rollback: {stderr}")]
    RollbackFailed { host: String, stderr: String },
    #[error("rollback on {host} failed (exit {status:?}): {stderr}")]
    Rollback {
        host: String,
        status: Option<u32>,
        stderr: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Copy

/// One host's part of a copy.
pub struct CopyTarget<'a> {
    pub session: &'a mut StoreSession,
    /// The paths of the closure the host lacks.
    pub missing: BTreeSet<StorePath>,
    pub events: HostEvents,
}

/// What one host received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyDone {
    pub paths: usize,
    pub nar_bytes: u64,
    /// Bytes on the wire (after compression), where known.
    pub wire_bytes: Option<u64>,
}

/// Told, as soon as one target's copy is complete and before the others are, its index in
/// `targets` and what it received: an apply goes on to activate that host at once, so a slow
/// host never holds back the others' activations.
pub type OnCopied<'a> = &'a (dyn Fn(usize, CopyDone) + Sync);

/// Copies `infos` (every path some host lacks, in dependency order) to all `targets` at once:
/// each NAR is read once and streamed to every host that lacks it, as pipelined AddToStoreNar
/// requests (a constant number of round trips per host). Progress goes to each host's events
/// about every 250 ms. Results are in `targets` order.
pub async fn copy_closures(
    store: &LocalStore,
    infos: &[PathInfo],
    targets: Vec<CopyTarget<'_>>,
) -> Vec<Result<CopyDone, fleet_store::Error>> {
    copy_closures_each(store, infos, targets, &|_, _| {}).await
}

/// [`copy_closures`], calling `on_copied` for each target the moment its copy is complete.
pub async fn copy_closures_each(
    store: &LocalStore,
    infos: &[PathInfo],
    targets: Vec<CopyTarget<'_>>,
    on_copied: OnCopied<'_>,
) -> Vec<Result<CopyDone, fleet_store::Error>> {
    struct Counter {
        bytes: AtomicU64,
        paths: AtomicU64,
        total_bytes: u64,
        total_paths: u64,
        /// Its final progress was sent: the ticker leaves it alone.
        finished: std::sync::atomic::AtomicBool,
    }
    let mut counters = Vec::new();
    let mut events = Vec::new();
    let mut pairs = Vec::new();
    for t in targets {
        let total_bytes = infos
            .iter()
            .filter(|i| t.missing.contains(&i.path))
            .map(|i| i.nar_size)
            .sum();
        counters.push(Arc::new(Counter {
            bytes: AtomicU64::new(0),
            paths: AtomicU64::new(0),
            total_bytes,
            total_paths: t.missing.len() as u64,
            finished: std::sync::atomic::AtomicBool::new(false),
        }));
        events.push(t.events);
        pairs.push((&mut t.session.client, t.missing));
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let ticker = {
        let (counters, events, stop) = (counters.clone(), events.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last = vec![(u64::MAX, u64::MAX); counters.len()];
            loop {
                let done = tokio::select! {
                    () = stop.cancelled() => true,
                    () = tokio::time::sleep(Duration::from_millis(250)) => false,
                };
                for (i, c) in counters.iter().enumerate() {
                    if c.finished.load(Ordering::Relaxed) {
                        continue;
                    }
                    let now = (
                        c.bytes.load(Ordering::Relaxed),
                        c.paths.load(Ordering::Relaxed),
                    );
                    if now != last[i] {
                        last[i] = now;
                        let _ = events[i]
                            .progress(now.0, c.total_bytes, now.1, c.total_paths)
                            .await;
                    }
                }
                if done {
                    break;
                }
            }
        })
    };
    let progress = |i: usize, e: AddEvent| match e {
        AddEvent::Sent { nar_bytes, .. } => counters[i].bytes.store(nar_bytes, Ordering::Relaxed),
        AddEvent::Acked { done, .. } => counters[i].paths.store(done as u64, Ordering::Relaxed),
    };
    let on_done = |i: usize, s: AddSummary| {
        let (counter, ev) = (counters[i].clone(), events[i].clone());
        async move {
            counter.finished.store(true, Ordering::Relaxed);
            let _ = ev
                .progress(
                    counter.total_bytes,
                    counter.total_bytes,
                    counter.total_paths,
                    counter.total_paths,
                )
                .await;
            on_copied(i, copy_done(&s));
        }
    };
    let (_report, results) = fan_out_serve(
        store,
        infos,
        pairs,
        &FanOutOptions::default(),
        &progress,
        on_done,
    )
    .await;
    let results = results
        .into_iter()
        .map(|r| r.map(|s| copy_done(&s)))
        .collect();
    stop.cancel();
    let _ = ticker.await;
    results
}

fn copy_done(s: &AddSummary) -> CopyDone {
    CopyDone {
        paths: s.paths,
        nar_bytes: s.nar_bytes,
        wire_bytes: None,
    }
}

/// One host's part of a compressed copy.
pub struct ImportTarget<'a> {
    pub conn: &'a Connection,
    pub privilege: &'a Privilege,
    pub missing: BTreeSet<StorePath>,
    pub events: HostEvents,
    /// The deployment these paths are for: they are GC roots under
    /// `/nix/var/nix/gcroots/fleet-pending/<id>/` from before the import until activation drops
    /// them (once the profile or the package holds them). `None`: no roots.
    pub pending_roots: Option<String>,
}

/// Where the compressed copy roots the paths it imports until activation.
pub const PENDING_ROOTS: &str = "/nix/var/nix/gcroots/fleet-pending";

/// Drops the roots [`import_command`] made for deployment `id` (idempotent).
pub async fn drop_pending_roots(
    conn: &Connection,
    privilege: &Privilege,
    id: &str,
) -> Result<(), DeployError> {
    let cmd = format!("rm -rf {}/{}", PENDING_ROOTS, crate::quote(id));
    let out = conn.exec(&cmd, privilege, crate::Stdin::None).await?;
    if out.success() {
        Ok(())
    } else {
        Err(DeployError::Refused {
            host: conn.name().to_owned(),
            status: out.status,
            stderr: out.stderr_lossy().trim().to_owned(),
        })
    }
}

/// The remote end of a compressed copy: decompress and import (as root, so no signatures are
/// needed). `nix-store --import` registers each path atomically after its NAR arrived whole, but
/// its temporary GC roots end with it: so the paths are rooted first (links to paths that are
/// not valid yet protect them from the moment they are), and a concurrent `nix-collect-garbage`
/// cannot take them before the profile does.
pub fn import_command(pending_roots: Option<&str>, paths: &BTreeSet<StorePath>) -> String {
    let import = "zstd -dc | nix-store --import > /dev/null";
    let Some(id) = pending_roots else {
        return import.to_owned();
    };
    let mut cmd = format!(
        "d={}/{} && mkdir -p \"$d\" && ln -sfn -t \"$d\" --",
        PENDING_ROOTS,
        crate::quote(id)
    );
    for p in paths {
        cmd.push(' ');
        cmd.push_str(&crate::quote(p.as_str()));
    }
    cmd.push_str(" && ");
    cmd.push_str(import);
    cmd
}

/// Copies to hosts that have `zstd` as zstd-compressed export streams into `zstd -dc |
/// nix-store --import`: each path is read and compressed **once**, however many hosts lack it,
/// and the compressed bytes go to every host that lacks it (the paths are cut into segments of
/// paths lacked by the same hosts: typically one shared segment, then one small segment per
/// host; see `compressed.rs`). No replies to wait for, so it is one round trip, and a fraction
/// of the bytes on slow links. Each host gets up to 16 MiB of the compressed stream ahead in
/// memory; past that, the hosts of a segment move at the pace of the slowest. Progress is what
/// each host received. Results are in `targets` order.
pub async fn copy_compressed(
    store: &LocalStore,
    infos: &[PathInfo],
    targets: Vec<ImportTarget<'_>>,
    zstd_level: i32,
) -> Vec<Result<CopyDone, DeployError>> {
    copy_compressed_each(store, infos, targets, zstd_level, &|_, _| {}).await
}

/// [`copy_compressed`], calling `on_copied` for each target the moment its import is complete
/// (right after its last segment, not after every host's).
pub async fn copy_compressed_each(
    store: &LocalStore,
    infos: &[PathInfo],
    targets: Vec<ImportTarget<'_>>,
    zstd_level: i32,
    on_copied: OnCopied<'_>,
) -> Vec<Result<CopyDone, DeployError>> {
    crate::compressed::copy_compressed_each(store, infos, targets, zstd_level, on_copied).await
}
