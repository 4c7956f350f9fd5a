//! An apply across hosts, once they are planned: one shared copy (each path read once, sent
//! to every host that lacks it), and per host, as soon as its own copy is complete, in parallel
//! and bounded: activate, confirm over a new connection, and report an outcome. A failing or
//! slow host never stops or delays the others.
//!
//! Cancellation (the run's token, first Ctrl-C): copies still running are abandoned (the remote
//! `nix-store` registers no partial path) and those hosts end `skipped`, as do hosts whose
//! activation has not started; activations already started run to their end on the host (they
//! are detached from the SSH session) and are reported.
//!
//! Modules: this one is the orchestration ([`apply_all`] over SSH, `orchestrate` over any
//! [`Host`] and copy); [`host`]: the seam and its SSH side; `steps`: one host's steps after
//! its copy; `route`: the copy's routes and the shared copy over SSH.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_store::local::LocalStore;
use fleet_store::{PathInfo, StorePath};
use tokio::sync::oneshot;

use crate::activation::Activation;
use crate::copy::delta_chunks::{delta_first, DeltaHost};
use crate::copy::PENDING_ROOTS;
use crate::copy::{adaptive, CopyDone, LevelChoice};
use crate::fanout::{
    run_bounded, Bound, EventKind, EventSink, HostEvents, HostJob, HostOutcome, Phase,
};
use crate::health::HealthSpec;
use crate::outcome::SkipReason;
use crate::secrets::HostSecret;
use crate::store::StoreSession;
use crate::sudo::Privilege;
use crate::{CancellationToken, Connection, Connector, SshTarget};

#[cfg(test)]
mod double;
pub mod host;
mod relayed;
mod route;
mod steps;
#[cfg(test)]
mod tests;

pub use host::{Host, SshHost};
pub use relayed::Relays;
use route::{CopyPhase, ImportPart, Route, ServePart, SshCopy};
use steps::Steps;

/// A planned host, connected, with its store session open (its valid paths queried with
/// `lock`, so they stay until the profile is switched).
pub struct ApplyHost {
    pub name: String,
    pub target: SshTarget,
    pub conn: Arc<Connection>,
    pub privilege: Privilege,
    pub store: Option<StoreSession>,
    /// What this host lacks of its closure.
    pub missing: BTreeSet<StorePath>,
    /// The host has `zstd`: the copy may be compressed (and take deltas).
    pub zstd: bool,
    /// What the host holds (its current system's closure): the bases of deltas
    /// (docs/deltas.md). Empty: no deltas.
    pub has: Vec<StorePath>,
    pub activation: Activation,
    /// Health checks after activation, before confirmation (`switch`, `test`).
    pub checks: Option<HealthSpec>,
    /// The secrets this host gets (docs/secrets.md); those it had from fleet and no longer
    /// gets are deleted after its activation.
    pub secrets: Vec<HostSecret>,
    /// The relay its compressed copy goes through (the plan's `via`; docs/relay.md).
    pub relay: Option<String>,
}

/// Run-wide settings of an apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub parallel: usize,
    /// Extra time, past the host's confirm timeout, to wait for a host to come back and tell
    /// whether it reverted.
    pub verify_grace: Duration,
    /// zstd level for the compressed copy to hosts that have `zstd`; `None`: never compress
    /// (every host gets the serve protocol's AddToStoreNar stream).
    pub compress: Option<i32>,
    /// Pick each host's zstd level from its measured link (`copy/adaptive.rs`) where its copy
    /// is big; `compress` is then the level of hosts not measured. `false`: `compress` for all.
    pub adaptive: bool,
    /// Send paths as patches against paths of the same package the host has, where that is
    /// worth it (docs/deltas.md).
    pub deltas: bool,
    /// The relays' connections, by relay name (docs/relay.md).
    pub relays: Relays,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            parallel: 16,
            verify_grace: Duration::from_secs(5),
            compress: Some(3),
            adaptive: true,
            deltas: true,
            relays: Relays::default(),
        }
    }
}

/// The run an apply belongs to: its cancellation token, where events go, and when it started
/// (event times are relative to it).
#[derive(Debug, Clone)]
pub struct Run {
    pub cancel: CancellationToken,
    pub sink: EventSink,
    pub start: Instant,
}

/// How a host's copy ended, as its activation task learns it.
pub(crate) type Copied = Result<CopyDone, HostOutcome>;

/// Applies to `hosts`. `infos` is the union of their closures' infos in dependency order.
/// Returns one outcome per host, in input order; every host also gets an `Outcome` event.
///
/// The copy is shared, but each host goes on to activate the moment its own copy is complete,
/// so a slow host delays no activation but its own.
pub async fn apply_all(
    connector: Arc<Connector>,
    store: &LocalStore,
    infos: &[PathInfo],
    mut hosts: Vec<ApplyHost>,
    opts: &ApplyOptions,
    run: Run,
) -> Vec<(String, HostOutcome)> {
    // Relays of this run that are deployed in it too import from the files they hold.
    let relays_used: BTreeSet<String> = hosts.iter().filter_map(|h| h.relay.clone()).collect();
    // The adaptive transport: measure the links of big copies (copy/adaptive.rs). Not of the
    // hosts behind a relay, nor of a relay: their closure crosses the deployer's link once,
    // compressed, whatever their own link is.
    let links: Vec<(&Connection, &BTreeSet<StorePath>, bool)> = hosts
        .iter()
        .map(|h| {
            let relayed = h.relay.is_some() || relays_used.contains(&h.name);
            (
                &*h.conn,
                &h.missing,
                h.zstd && opts.compress.is_some() && !relayed,
            )
        })
        .collect();
    let measured = route::measure_links(&links, infos, opts.adaptive).await;
    drop(links);
    let fast: Vec<bool> = adaptive::link_uses(&measured, 3)
        .into_iter()
        .map(|u| u == adaptive::LinkUse::Uncompressed)
        .collect();
    // Deltas first: what a host imports as patches is no longer missing. Not to hosts on fast
    // links: rebuilding NARs from patches costs the host more CPU than the bytes cost the link.
    let rooted = delta_phase(&mut hosts, &fast, store, infos, opts, &run).await;
    let mut copy = SshCopy {
        store,
        infos,
        zstd_level: match (opts.compress.unwrap_or(3), opts.adaptive) {
            (default, true) => LevelChoice::adaptive(default),
            (level, false) => LevelChoice::Fixed(level),
        },
        serve: Vec::new(),
        import: Vec::new(),
        relayed: Vec::new(),
        cleanups: crate::copy::relay::Cleanups::default(),
    };
    let cleanups = copy.cleanups.clone();
    let mut planned = Vec::new();
    for (((index, h), rooted), measured) in hosts.into_iter().enumerate().zip(rooted).zip(measured)
    {
        let events = HostEvents::new(&h.name, run.start, run.sink.clone(), run.cancel.clone());
        let route = route::route(
            h.missing.len(),
            h.zstd,
            opts.compress.is_some(),
            h.store.is_some(),
            fast[index],
        );
        if route == Route::Serve && measured.is_some() {
            tracing::debug!(host = %h.name, cipher = h.conn.cipher(), measured_mb_per_s = measured.map(|r| r as f64 / 1e6), "copy: transport: uncompressed (fast link)");
            let _ = events
                .emit(EventKind::Transport {
                    zstd_level: None,
                    cipher: h.conn.cipher().to_owned(),
                    measured_bytes_per_s: measured,
                })
                .await;
        }
        let (session_back, session_rx) = oneshot::channel::<StoreSession>();
        let mut session = h.store;
        // A host that took deltas has pending roots already.
        let mut pending_roots = rooted.then(|| h.activation.record.id.clone());
        let copy_state = match route {
            Route::Nothing => CopyState::Nothing,
            Route::NoSession => CopyState::Failed(HostOutcome::Failed {
                error: "no store session to copy over".into(),
            }),
            Route::Compressed => {
                let id = h.activation.record.id.clone();
                let part = ImportPart {
                    index,
                    conn: h.conn.clone(),
                    privilege: h.privilege.clone(),
                    missing: h.missing,
                    events: events.clone(),
                    id: id.clone(),
                    measured,
                };
                match h.relay {
                    Some(relay) => {
                        relayed::add(&mut copy.relayed, &opts.relays, relay, part, false)
                    }
                    None if relays_used.contains(&h.name)
                        && opts.relays.0.get(&h.name).is_some_and(Result::is_ok) =>
                    {
                        relayed::add(&mut copy.relayed, &opts.relays, h.name, part, true)
                    }
                    None => copy.import.push(part),
                }
                pending_roots = Some(id);
                CopyState::Pending
            }
            Route::Serve => match session.take() {
                Some(session) => {
                    copy.serve.push(ServePart {
                        index,
                        session,
                        missing: h.missing,
                        events: events.clone(),
                        session_back,
                    });
                    CopyState::Pending
                }
                None => CopyState::Failed(HostOutcome::Failed {
                    error: "no store session to copy over".into(),
                }),
            },
        };
        let session = match session {
            Some(s) => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(s);
                Some(rx)
            }
            None if route == Route::Serve => Some(session_rx),
            None => None,
        };
        let host = SshHost {
            connector: connector.clone(),
            target: h.target,
            conn: h.conn,
            privilege: h.privilege,
            secrets: h.secrets,
            session,
            pending_roots,
            relay_cleanups: Some(cleanups.clone()),
        };
        let steps = Steps {
            activation: h.activation,
            checks: h.checks,
        };
        planned.push(Planned {
            events,
            host,
            steps,
            copy: copy_state,
        });
    }
    let out = orchestrate(planned, copy, opts, &run.cancel).await;
    // What a cancelled relayed copy left on the relays and hosts.
    cleanups.run_all().await;
    out
}

/// The delta phase (docs/deltas.md): hosts with `zstd` and a known closure get patches first,
/// which take the imported paths out of their missing sets. Returns, per host, whether its
/// pending roots folder may hold paths (so that the apply drops it at the end).
async fn delta_phase(
    hosts: &mut [ApplyHost],
    fast: &[bool],
    store: &LocalStore,
    infos: &[PathInfo],
    opts: &ApplyOptions,
    run: &Run,
) -> Vec<bool> {
    let mut rooted = vec![false; hosts.len()];
    if !opts.deltas || opts.compress.is_none() {
        return rooted;
    }
    let events: Vec<HostEvents> = hosts
        .iter()
        .map(|h| HostEvents::new(&h.name, run.start, run.sink.clone(), run.cancel.clone()))
        .collect();
    let (index, delta_hosts): (Vec<usize>, Vec<DeltaHost>) = hosts
        .iter_mut()
        .zip(&events)
        .enumerate()
        .filter(|(i, (h, _))| h.zstd && !h.has.is_empty() && !h.missing.is_empty() && !fast[*i])
        .map(|(i, (h, events))| {
            let pending_roots = format!("{PENDING_ROOTS}/{}", h.activation.record.id);
            (
                i,
                DeltaHost {
                    conn: &h.conn,
                    privilege: &h.privilege,
                    missing: &mut h.missing,
                    has: &h.has,
                    pending_roots,
                    events,
                },
            )
        })
        .unzip();
    // Their paths are pending roots from here on, also when cancelled midway.
    for &i in &index {
        rooted[i] = true;
    }
    for h in &delta_hosts {
        let _ = h.events.phase(Phase::Copying).await;
    }
    tokio::select! {
        () = delta_first(delta_hosts, infos, store, opts.parallel) => {}
        () = run.cancel.cancelled() => {}
    };
    rooted
}

/// Where a host's copy stands when the apply starts.
#[derive(Debug, Clone)]
pub(crate) enum CopyState {
    /// Nothing to copy.
    Nothing,
    /// The shared copy will tell.
    Pending,
    /// It cannot be copied to: it ends so, without activating.
    Failed(HostOutcome),
}

/// A host as the orchestration sees it.
pub(crate) struct Planned<H> {
    pub events: HostEvents,
    pub host: H,
    pub steps: Steps,
    pub copy: CopyState,
}

/// The apply over any [`Host`] and copy: the copy runs alongside the hosts' tasks (abandoned
/// when `cancel` fires); each host waits for its own copy, then for one of
/// `opts.parallel` places to activate (the bounded runner of `run_hosts`).
pub(crate) async fn orchestrate<H: Host, C: CopyPhase>(
    hosts: Vec<Planned<H>>,
    copy: C,
    opts: &ApplyOptions,
    cancel: &CancellationToken,
) -> Vec<(String, HostOutcome)> {
    let mut txs = Vec::new();
    let mut jobs = Vec::new();
    for p in hosts {
        let (tx, rx) = oneshot::channel::<Copied>();
        let (copied, tx) = match p.copy {
            CopyState::Nothing => (None, None),
            CopyState::Pending => {
                let _ = p.events.phase(Phase::Copying).await;
                (Some(rx), Some(tx))
            }
            CopyState::Failed(o) => {
                let _ = p.events.phase(Phase::Copying).await;
                let _ = tx.send(Err(o));
                (Some(rx), None)
            }
        };
        txs.push(tx);
        let job = ApplyJob {
            host: p.host,
            steps: p.steps,
            copied,
            opts: opts.clone(),
        };
        jobs.push((p.events, job));
    }
    let bound = Bound {
        parallel: opts.parallel,
        cancel: cancel.clone(),
        queued: false,
        skipped: SkipReason::CancelledBeforeActivation,
    };
    // The copy, alongside: each host hears of its own end as it happens. Cancelled, the copy
    // is dropped (the remote imports register no partial path), and so are the senders: the
    // hosts still copying end `skipped`.
    let txs = Mutex::new(txs);
    let tell = |i: usize, c: Copied| {
        let tx = txs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(i)
            .and_then(Option::take);
        if let Some(tx) = tx {
            let _ = tx.send(c);
        }
    };
    let copy_phase = async {
        tokio::select! {
            () = copy.run(&tell) => {}
            () = cancel.cancelled() => {
                txs.lock().unwrap_or_else(|p| p.into_inner()).clear();
            }
        }
    };
    let ((), out) = tokio::join!(copy_phase, run_bounded(jobs, bound));
    out
}

/// One host of an apply, for the bounded runner.
struct ApplyJob<H> {
    host: H,
    steps: Steps,
    /// The end of its copy, if it copies.
    copied: Option<oneshot::Receiver<Copied>>,
    opts: ApplyOptions,
}

impl<H: Host> HostJob for ApplyJob<H> {
    async fn ready(&mut self, ev: &HostEvents) -> Result<(), HostOutcome> {
        let Some(rx) = self.copied.take() else {
            return Ok(());
        };
        match rx.await {
            Ok(Ok(done)) => {
                steps::copied(ev, &done).await;
                Ok(())
            }
            Ok(Err(failed)) => Err(failed),
            Err(_) => Err(HostOutcome::skipped(SkipReason::CancelledWhileCopying)),
        }
    }

    async fn run(&mut self, ev: &HostEvents) -> HostOutcome {
        steps::activate_one(&self.host, &self.steps, ev, &self.opts).await
    }

    async fn finish(self) {
        self.host.close().await;
    }
}
