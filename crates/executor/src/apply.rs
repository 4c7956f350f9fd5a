//! An apply across hosts, once they are planned: one shared copy (each path read once, sent
//! to every host that lacks it), and per host, as soon as its own copy is complete, in parallel
//! and bounded: activate, confirm over a new connection, and report an outcome. A failing or
//! slow host never stops or delays the others.
//!
//! Cancellation (the run's token, first Ctrl-C): copies still running are abandoned (the remote
//! `nix-store` registers no partial path) and those hosts end `skipped`, as do hosts whose
//! activation has not started; activations already started run to their end on the host (they
//! are detached from the SSH session) and are reported.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_store::local::LocalStore;
use fleet_store::{PathInfo, StorePath};
use tokio::sync::oneshot;

use crate::activation::failure_lines;
use crate::deploy::{
    self, Activated, Activation, Confirmation, CopyTarget, DeployError, DeployState,
};
use crate::fanout::{EventKind, EventSink, HostEvents, HostOutcome, LogStream, Phase};
use crate::health::{self, HealthSpec};
use crate::secrets::{self, HostSecret};
use crate::ssh::error::ExecError;
use crate::store::StoreSession;
use crate::sudo::Privilege;
use crate::{CancellationToken, Connection, Connector, SshTarget};

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
    /// The host has `zstd`: the copy may be compressed.
    pub zstd: bool,
    pub activation: Activation,
    /// Health checks after activation, before confirmation (`switch`, `test`).
    pub checks: Option<HealthSpec>,
    /// The secrets this host gets (docs/secrets.md); those it had from fleet and no longer
    /// gets are deleted after its activation.
    pub secrets: Vec<HostSecret>,
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
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            parallel: 16,
            verify_grace: Duration::from_secs(5),
            compress: Some(3),
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

/// A host on its way to activation, without what its copy borrows.
struct Pending {
    name: String,
    target: SshTarget,
    conn: Arc<Connection>,
    privilege: Privilege,
    activation: Activation,
    checks: Option<HealthSpec>,
    secrets: Vec<HostSecret>,
    /// The compressed copy rooted its paths under `fleet-pending/<id>`: drop them at the end,
    /// whatever happened (the activation helper drops them too, but a failed or skipped copy
    /// never reaches it, and its garbage must stay collectable).
    pending_roots: bool,
}

/// How a host's copy ended, as its activation task learns it.
type Copied = Result<deploy::CopyDone, HostOutcome>;

/// Applies to `hosts`. `infos` is the union of their closures' infos in dependency order.
/// Returns one outcome per host, in input order; every host also gets an `Outcome` event.
///
/// The copy is shared, but each host goes on to activate the moment its own copy is complete,
/// so a slow host delays no activation but its own.
pub async fn apply_all(
    connector: Arc<Connector>,
    store: &LocalStore,
    infos: &[PathInfo],
    hosts: Vec<ApplyHost>,
    opts: &ApplyOptions,
    run: Run,
) -> Vec<(String, HostOutcome)> {
    let Run {
        cancel,
        sink,
        start,
    } = run;
    let events: Vec<HostEvents> = hosts
        .iter()
        .map(|h| HostEvents::new(&h.name, start, sink.clone(), cancel.clone()))
        .collect();

    // 1. Sort the hosts for the copy: compressed (export stream into `zstd -dc | nix-store
    //    --import`) where the host has zstd, else the serve protocol over its store session.
    //    Each host's task gets a receiver for the end of its copy, and one for its store
    //    session, which it closes only after activation (the session's temporary GC roots
    //    protect the paths the host already had until the profile is switched).
    let mut serve: Vec<(usize, StoreSession, BTreeSet<StorePath>)> = Vec::new();
    let mut serve_session_txs: Vec<oneshot::Sender<StoreSession>> = Vec::new();
    #[allow(clippy::type_complexity)]
    let mut import: Vec<(
        usize,
        Arc<Connection>,
        Privilege,
        BTreeSet<StorePath>,
        String,
    )> = Vec::new();
    let mut copied_txs: Vec<Option<oneshot::Sender<Copied>>> = Vec::new();
    let mut pending = Vec::new();
    for (i, h) in hosts.into_iter().enumerate() {
        let ApplyHost {
            name,
            target,
            conn,
            privilege,
            store: session,
            missing,
            zstd,
            activation,
            checks,
            secrets,
        } = h;
        let (session_tx, session_rx) = oneshot::channel::<StoreSession>();
        let (copied_tx, copied_rx) = oneshot::channel::<Copied>();
        let mut copied_tx = Some(copied_tx);
        let copying = !missing.is_empty();
        let mut session = session;
        if copying {
            let _ = events[i].phase(Phase::Copying).await;
            if zstd && opts.compress.is_some() {
                import.push((
                    i,
                    conn.clone(),
                    privilege.clone(),
                    missing,
                    activation.record.id.clone(),
                ));
            } else if let Some(s) = session.take() {
                serve.push((i, s, missing));
            } else {
                if let Some(tx) = copied_tx.take() {
                    let _ = tx.send(Err(HostOutcome::Failed {
                        error: "no store session to copy over".into(),
                    }));
                }
            }
        }
        match session {
            Some(s) => {
                let _ = session_tx.send(s);
            }
            None if serve.last().is_some_and(|(k, ..)| *k == i) => {
                serve_session_txs.push(session_tx)
            }
            None => {}
        }
        copied_txs.push(copied_tx);
        pending.push((
            Pending {
                name,
                target,
                conn,
                privilege,
                activation,
                checks,
                secrets,
                pending_roots: import.last().is_some_and(|(k, ..)| *k == i),
            },
            copying.then_some(copied_rx),
            session_rx,
        ));
    }

    // 2. Per host, as soon as its copy is done: activate, confirm. Bounded; a host not started
    //    when cancelled is skipped.
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.parallel.max(1)));
    let mut tasks = Vec::new();
    for (i, (p, copied_rx, session_rx)) in pending.into_iter().enumerate() {
        let (sem, connector, cancel, ev, opts) = (
            sem.clone(),
            connector.clone(),
            cancel.clone(),
            events[i].clone(),
            opts.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let outcome = async {
                if let Some(rx) = copied_rx {
                    match rx.await {
                        Ok(Ok(done)) => copied(&ev, &done).await,
                        Ok(Err(failed)) => return failed,
                        Err(_) => {
                            return HostOutcome::Skipped {
                                reason: "interrupted while copying; nothing was activated".into(),
                            }
                        }
                    }
                }
                let permit = tokio::select! {
                    p = sem.acquire_owned() => p.ok(),
                    () = cancel.cancelled() => None,
                };
                match permit {
                    Some(_p) if !cancel.is_cancelled() => {
                        activate_one(&p, &connector, &ev, &opts).await
                    }
                    _ => HostOutcome::Skipped {
                        reason: "interrupted before activation".into(),
                    },
                }
            }
            .await;
            let _ = ev
                .emit(EventKind::Outcome {
                    outcome: outcome.clone(),
                })
                .await;
            // Only now: the session (it waits here for the end of a serve copy) and the
            // connection.
            if let Ok(s) = session_rx.await {
                let _ = s.close().await;
            }
            if p.pending_roots {
                let _ = deploy::drop_pending_roots(&p.conn, &p.privilege, &p.activation.record.id)
                    .await;
            }
            p.conn.close().await;
            outcome
        }));
    }

    // The copy, alongside: each host hears of its own end as it happens. Cancelled, the copy
    // is dropped (the remote imports register no partial path), and so are the senders: the
    // hosts still copying end `skipped`.
    let copied_txs = std::sync::Mutex::new(copied_txs);
    let tell = |i: usize, c: Copied| {
        let tx = copied_txs.lock().unwrap_or_else(|p| p.into_inner())[i].take();
        if let Some(tx) = tx {
            let _ = tx.send(c);
        }
    };
    let copy_phase = async {
        if serve.is_empty() && import.is_empty() {
            return;
        }
        let (serve_idx, mut sessions, serve_missing): (Vec<usize>, Vec<StoreSession>, Vec<_>) =
            serve.into_iter().fold(
                (Vec::new(), Vec::new(), Vec::new()),
                |(mut a, mut b, mut c), (i, s, m)| {
                    a.push(i);
                    b.push(s);
                    c.push(m);
                    (a, b, c)
                },
            );
        let results = {
            let serve_targets: Vec<CopyTarget> = sessions
                .iter_mut()
                .zip(serve_missing)
                .zip(&serve_idx)
                .map(|((session, missing), &i)| CopyTarget {
                    session,
                    missing,
                    events: events[i].clone(),
                })
                .collect();
            let import_targets: Vec<deploy::ImportTarget> = import
                .iter()
                .map(|(i, conn, privilege, missing, id)| deploy::ImportTarget {
                    conn,
                    privilege,
                    missing: missing.clone(),
                    events: events[*i].clone(),
                    pending_roots: Some(id.clone()),
                })
                .collect();
            let on_serve = |k: usize, done: deploy::CopyDone| tell(serve_idx[k], Ok(done));
            let on_import = |k: usize, done: deploy::CopyDone| tell(import[k].0, Ok(done));
            let copy = async {
                let serve = async {
                    if serve_targets.is_empty() {
                        Vec::new()
                    } else {
                        deploy::copy_closures_each(store, infos, serve_targets, &on_serve).await
                    }
                };
                let import = async {
                    if import_targets.is_empty() {
                        Vec::new()
                    } else {
                        deploy::copy_compressed_each(
                            store,
                            infos,
                            import_targets,
                            opts.compress.unwrap_or(3),
                            &on_import,
                        )
                        .await
                    }
                };
                tokio::join!(serve, import)
            };
            tokio::select! {
                r = copy => Some(r),
                () = cancel.cancelled() => None,
            }
        };
        let Some((serve_results, import_results)) = results else {
            // Interrupted: the copy is gone, and so are the senders of the hosts it had not
            // finished (they end `skipped`).
            copied_txs.lock().unwrap_or_else(|p| p.into_inner()).clear();
            return;
        };
        for (k, r) in import_results.into_iter().enumerate() {
            tell(import[k].0, r.map_err(|e| HostOutcome::failed(&e)));
        }
        for (((k, r), session), session_tx) in serve_results
            .into_iter()
            .enumerate()
            .zip(sessions)
            .zip(serve_session_txs)
        {
            match r {
                Ok(done) => {
                    tell(serve_idx[k], Ok(done));
                    let _ = session_tx.send(session);
                }
                Err(e) => {
                    let err = session.fail(e).await;
                    tell(serve_idx[k], Err(HostOutcome::failed(&err)));
                }
            }
        }
    };
    let collect = async {
        let mut out = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            let o = t.await.unwrap_or_else(|e| HostOutcome::Failed {
                error: format!("internal error: {e}"),
            });
            out.push((events[i].host().to_owned(), o));
        }
        out
    };
    let ((), out) = tokio::join!(copy_phase, collect);
    out
}

async fn activate_one(
    p: &Pending,
    connector: &Connector,
    ev: &HostEvents,
    opts: &ApplyOptions,
) -> HostOutcome {
    let Pending {
        name,
        target,
        conn,
        privilege,
        activation,
        secrets,
        ..
    } = p;
    if !activation.activate && activation.goal == deploy::Goal::DryActivate {
        return HostOutcome::DryRun {
            output: "the host runs this system: only the deployment package would be linked".into(),
        };
    }
    if !activation.activate {
        let _ = ev.phase(Phase::Linking).await;
        if let Err(e) = secrets::push(conn, privilege, secrets, ev).await {
            return HostOutcome::failed(&e);
        }
        return match deploy::link_package(conn, privilege, activation).await {
            Ok(()) => HostOutcome::Applied,
            Err(e) => HostOutcome::failed(&e),
        };
    }
    if activation.goal != deploy::Goal::DryActivate {
        if let Some(failed) = secrets::before_activation(conn, privilege, secrets, ev).await {
            return failed;
        }
    }
    let _ = ev.phase(Phase::Activating).await;
    let result = deploy::activate(conn, privilege, activation).await;
    if let Ok(
        Activated::Done { log, .. }
        | Activated::RolledBack { log }
        | Activated::RebootRequired { log }
        | Activated::DryRun { log },
    ) = &result
    {
        // What switch-to-configuration said (units started, restarted, failed), per host.
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            let _ = ev.log(LogStream::Stderr, line).await;
        }
    }
    let id = activation.record.id.clone();
    let activated = match result {
        Ok(a) => a,
        Err(DeployError::Exec(ExecError::UnknownOutcome { .. })) => {
            // The connection dropped while activating; the activation ran on detached. Ask
            // again over a new connection what became of it.
            let _ = ev
                .log(
                    LogStream::Fleet,
                    "connection lost during activation; asking the host what happened",
                )
                .await;
            match reconnect_result(connector, target, privilege, &id, opts, activation).await {
                Some(o) => return o,
                None => {
                    return HostOutcome::Failed {
                        error: format!(
                        "lost the connection during activation and could not reach {name} again; \
                             it either finished or reverted by itself"
                    ),
                    }
                }
            }
        }
        Err(e) => return HostOutcome::failed(&e),
    };
    let (failed_units, done) = match activated {
        Activated::RolledBack { log } => {
            return HostOutcome::RolledBack {
                reason: format!(
                    "switch-to-configuration {} failed: {}",
                    activation.goal.as_str(),
                    failure_lines(&log)
                ),
            }
        }
        Activated::RebootRequired { log } => {
            return HostOutcome::RebootRequired {
                reason: reboot_reason(activation.goal, &log),
            }
        }
        Activated::DryRun { log } => return HostOutcome::DryRun { output: log },
        Activated::Done {
            pending_confirmation,
            failed_units,
            ..
        } => (failed_units, !pending_confirmation),
    };
    let confirming = (!done).then(|| activation.confirm_timeout.unwrap_or_default());
    if let Some(failed) = secrets::after_activation(conn, privilege, secrets, ev, confirming).await
    {
        return failed;
    }
    let active = || {
        if failed_units.is_empty() {
            HostOutcome::Applied
        } else {
            HostOutcome::UnitsFailed {
                units: failed_units.clone(),
            }
        }
    };
    if let Some(spec) = &p.checks {
        let (target, privilege, id, goal) = (
            &p.target,
            &p.privilege,
            &p.activation.record.id,
            p.activation.goal,
        );
        let on = health::OnHost {
            connector,
            target,
            privilege,
            id,
            goal,
        };
        if let Some(failed) = health::check_host(&on, ev, spec, done).await {
            return failed;
        }
    }
    if done {
        return active();
    }
    let _ = ev.phase(Phase::Confirming).await;
    let timeout = activation.confirm_timeout.unwrap_or_default();
    let deadline = Instant::now() + timeout;
    match deploy::confirm(connector, target, privilege, &id, deadline).await {
        Confirmation::Confirmed => active(),
        Confirmation::TooLate => HostOutcome::RolledBack {
            reason: format!(
                "not confirmed within {}s; the host reverted",
                timeout.as_secs()
            ),
        },
        Confirmation::Unreachable { last_error } => {
            let _ = ev.phase(Phase::RollingBack).await;
            match reconnect_result(connector, target, privilege, &id, opts, activation).await {
                Some(HostOutcome::RolledBack { .. }) | None => HostOutcome::RolledBack {
                    reason: format!(
                        "could not reach the host again within {}s after activation ({last_error}); \
                         it reverted to its previous system by itself",
                        timeout.as_secs()
                    ),
                },
                Some(HostOutcome::Applied) => active(),
                Some(other) => other,
            }
        }
    }
}

/// Why a host needs a reboot before its new system runs.
fn reboot_reason(goal: deploy::Goal, log: &str) -> String {
    let what = match goal {
        deploy::Goal::Test => {
            "the new system has a new init interface and cannot be tested without a reboot; \
             nothing was changed (apply boot, then reboot)"
        }
        _ => {
            "the new system has a new init interface: it is the boot default and takes effect \
             at the next reboot"
        }
    };
    let said = failure_lines(log);
    if said.is_empty() {
        what.to_owned()
    } else {
        format!("{what} ({said})")
    }
}

/// Reconnects (until confirm timeout + grace) and reads the deployment's result on the host.
async fn reconnect_result(
    connector: &Connector,
    target: &SshTarget,
    privilege: &Privilege,
    id: &str,
    opts: &ApplyOptions,
    activation: &Activation,
) -> Option<HostOutcome> {
    let wait = activation.confirm_timeout.unwrap_or_default() + opts.verify_grace;
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Ok(Ok(conn)) =
            tokio::time::timeout(Duration::from_secs(5), connector.connect(target)).await
        {
            let r = deploy::result_of(&conn, privilege, id).await;
            conn.close().await;
            match r {
                Ok(DeployState::Confirmed) => return Some(HostOutcome::Applied),
                Ok(DeployState::Applied | DeployState::UnitsFailed) => {
                    // Activated, awaiting confirmation: confirm now, over this new connection.
                    let c = deploy::confirm(connector, target, privilege, id, deadline).await;
                    return Some(match c {
                        Confirmation::Confirmed => HostOutcome::Applied,
                        _ => HostOutcome::RolledBack {
                            reason: "not confirmed in time; the host reverted".into(),
                        },
                    });
                }
                Ok(DeployState::RebootRequired) => {
                    return Some(HostOutcome::RebootRequired {
                        reason: reboot_reason(activation.goal, ""),
                    })
                }
                Ok(DeployState::RolledBack) => {
                    return Some(HostOutcome::RolledBack {
                        reason: "the host reverted to its previous system".into(),
                    })
                }
                Ok(DeployState::RollbackFailed) => {
                    return Some(HostOutcome::Failed {
                        error: "activation failed and so did the rollback".into(),
                    })
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

async fn copied(ev: &HostEvents, done: &deploy::CopyDone) {
    let wire = match done.wire_bytes {
        Some(w) => format!(", {w} bytes sent compressed"),
        None => String::new(),
    };
    let _ = ev
        .log(
            LogStream::Fleet,
            format!(
                "copied {} paths ({} bytes of NAR{wire})",
                done.paths, done.nar_bytes
            ),
        )
        .await;
}
