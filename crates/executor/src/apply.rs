//! An apply across hosts, once they are planned: one shared copy (each path read once, sent
//! to every host that lacks it), then per host, in parallel and bounded: activate, confirm over
//! a new connection, and report an outcome. A failing host never stops the others.
//!
//! Cancellation (the run's token, first Ctrl-C): copies still running are abandoned (the remote
//! `nix-store` registers no partial path) and those hosts end `skipped`; activations already
//! started run to their end on the host (they are detached from the SSH session) and are
//! reported.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_store::local::LocalStore;
use fleet_store::{PathInfo, StorePath};

use crate::deploy::{self, Activated, Activation, Confirmation, CopyTarget, DeployError};
use crate::fanout::{EventKind, EventSink, HostEvents, HostOutcome, LogStream, Phase};
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

/// Applies to `hosts`. `infos` is the union of their closures' infos in dependency order.
/// Returns one outcome per host, in input order; every host also gets an `Outcome` event.
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
    let mut outcomes: Vec<Option<HostOutcome>> = vec![None; hosts.len()];
    let mut hosts = hosts;

    // 1. One shared copy for every host that lacks something: compressed (export stream into
    //    `zstd -dc | nix-store --import`) where the host has zstd, else the serve protocol.
    {
        let mut serve_targets = Vec::new();
        let mut serve_idx = Vec::new();
        let mut import_targets = Vec::new();
        let mut import_idx = Vec::new();
        for (i, h) in hosts.iter_mut().enumerate() {
            if h.missing.is_empty() {
                continue;
            }
            let _ = events[i].phase(Phase::Copying).await;
            if h.zstd && opts.compress.is_some() {
                import_targets.push(deploy::ImportTarget {
                    conn: &h.conn,
                    privilege: &h.privilege,
                    missing: h.missing.clone(),
                    events: events[i].clone(),
                });
                import_idx.push(i);
                continue;
            }
            let Some(session) = h.store.as_mut() else {
                outcomes[i] = Some(HostOutcome::Failed {
                    error: "no store session to copy over".into(),
                });
                continue;
            };
            serve_targets.push(CopyTarget {
                session,
                missing: h.missing.clone(),
                events: events[i].clone(),
            });
            serve_idx.push(i);
        }
        let copy = async {
            let serve = async {
                if serve_targets.is_empty() {
                    Vec::new()
                } else {
                    deploy::copy_closures(store, infos, serve_targets).await
                }
            };
            let import = async {
                if import_targets.is_empty() {
                    Vec::new()
                } else {
                    deploy::copy_compressed(
                        store,
                        infos,
                        import_targets,
                        opts.compress.unwrap_or(3),
                    )
                    .await
                }
            };
            tokio::join!(serve, import)
        };
        let results = tokio::select! {
            r = copy => Some(r),
            () = cancel.cancelled() => None,
        };
        match results {
            Some((serve, import)) => {
                let mut failed_sessions = Vec::new();
                for (k, r) in serve.into_iter().enumerate() {
                    let i = serve_idx[k];
                    match r {
                        Ok(done) => copied(&events[i], &done).await,
                        Err(e) => failed_sessions.push((i, e)),
                    }
                }
                for (i, e) in failed_sessions {
                    let session = hosts[i].store.take().expect("copied over it");
                    let err = session.fail(e).await;
                    outcomes[i] = Some(HostOutcome::failed(&err));
                }
                for (k, r) in import.into_iter().enumerate() {
                    let i = import_idx[k];
                    match r {
                        Ok(done) => copied(&events[i], &done).await,
                        Err(e) => outcomes[i] = Some(HostOutcome::failed(&e)),
                    }
                }
            }
            None => {
                for &i in serve_idx.iter().chain(&import_idx) {
                    outcomes[i] = Some(HostOutcome::Skipped {
                        reason: "interrupted while copying; nothing was activated".into(),
                    });
                }
            }
        }
    }

    // 2. Per host: activate, confirm. Bounded; a host not started when cancelled is skipped.
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.parallel.max(1)));
    let mut tasks = Vec::new();
    for (i, h) in hosts.into_iter().enumerate() {
        if let Some(o) = outcomes[i].take() {
            drop(h);
            let _ = events[i]
                .emit(EventKind::Outcome { outcome: o.clone() })
                .await;
            tasks.push(tokio::spawn(async move { o }));
            continue;
        }
        let (sem, connector, cancel, ev, opts) = (
            sem.clone(),
            connector.clone(),
            cancel.clone(),
            events[i].clone(),
            opts.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let permit = tokio::select! {
                p = sem.acquire_owned() => p.ok(),
                () = cancel.cancelled() => None,
            };
            let outcome = match permit {
                Some(_p) if !cancel.is_cancelled() => activate_one(h, &connector, &ev, &opts).await,
                _ => HostOutcome::Skipped {
                    reason: "interrupted before activation".into(),
                },
            };
            let _ = ev
                .emit(EventKind::Outcome {
                    outcome: outcome.clone(),
                })
                .await;
            outcome
        }));
    }
    let mut out = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let o = t.await.unwrap_or_else(|e| HostOutcome::Failed {
            error: format!("internal error: {e}"),
        });
        out.push((events[i].host().to_owned(), o));
    }
    out
}

async fn activate_one(
    h: ApplyHost,
    connector: &Connector,
    ev: &HostEvents,
    opts: &ApplyOptions,
) -> HostOutcome {
    let ApplyHost {
        name,
        target,
        conn,
        privilege,
        store,
        activation,
        ..
    } = h;
    if !activation.activate {
        let _ = ev.phase(Phase::Linking).await;
        let result = deploy::link_package(&conn, &privilege, &activation).await;
        if let Some(s) = store {
            let _ = s.close().await;
        }
        conn.close().await;
        return match result {
            Ok(()) => HostOutcome::Applied,
            Err(e) => HostOutcome::failed(&e),
        };
    }
    let _ = ev.phase(Phase::Activating).await;
    let result = deploy::activate(&conn, &privilege, &activation).await;
    // The serve session's temporary GC roots are no longer needed once the profile is set
    // (or the activation failed).
    if let Some(s) = store {
        let _ = s.close().await;
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
            match reconnect_result(connector, &target, &privilege, &id, opts, &activation).await {
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
    conn.close().await;
    match activated {
        Activated::RolledBack { log } => HostOutcome::RolledBack {
            reason: format!(
                "switch-to-configuration {} failed: {}",
                activation.goal.as_str(),
                failure_lines(&log)
            ),
        },
        Activated::Done {
            pending_confirmation: false,
            ..
        } => HostOutcome::Applied,
        Activated::Done {
            pending_confirmation: true,
            ..
        } => {
            let _ = ev.phase(Phase::Confirming).await;
            let timeout = activation.confirm_timeout.unwrap_or_default();
            let deadline = Instant::now() + timeout;
            match deploy::confirm(connector, &target, &privilege, &id, deadline).await {
                Confirmation::Confirmed => HostOutcome::Applied,
                Confirmation::TooLate => HostOutcome::RolledBack {
                    reason: format!(
                        "not confirmed within {}s; the host reverted",
                        timeout.as_secs()
                    ),
                },
                Confirmation::Unreachable { last_error } => {
                    let _ = ev.phase(Phase::RollingBack).await;
                    match reconnect_result(connector, &target, &privilege, &id, opts, &activation)
                        .await
                    {
                        Some(HostOutcome::RolledBack { .. }) | None => HostOutcome::RolledBack {
                            reason: format!(
                                "could not reach the host again within {}s after activation ({last_error}); \
                                 it reverted to its previous system by itself",
                                timeout.as_secs()
                            ),
                        },
                        Some(other) => other,
                    }
                }
            }
        }
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
            match r.as_deref() {
                Ok("confirmed") => return Some(HostOutcome::Applied),
                Ok("applied") => {
                    // Activated, awaiting confirmation: confirm now, over this new connection.
                    let c = deploy::confirm(connector, target, privilege, id, deadline).await;
                    return Some(match c {
                        Confirmation::Confirmed => HostOutcome::Applied,
                        _ => HostOutcome::RolledBack {
                            reason: "not confirmed in time; the host reverted".into(),
                        },
                    });
                }
                Ok("rolled-back") => {
                    return Some(HostOutcome::RolledBack {
                        reason: "the host reverted to its previous system".into(),
                    })
                }
                Ok("rollback-failed") => {
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

/// What an activation log says about the failure: the lines before fleet's "failed; rolling
/// back" remark that mention a failure or an error (else the last three of them), joined by
/// " / ". The rollback's own output after the remark is left out.
fn failure_lines(log: &str) -> String {
    let before = log
        .lines()
        .take_while(|l| !(l.starts_with("fleet: ") && l.contains(" failed")))
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>();
    let telling: Vec<&str> = before
        .iter()
        .copied()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("fail") || l.contains("error")
        })
        .collect();
    let lines = if telling.is_empty() {
        &before[before.len().saturating_sub(3)..]
    } else {
        &telling[..]
    };
    lines.join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_lines_come_from_before_the_rollback() {
        let log = "activating the configuration...\nwarning: the following units failed: x.service\n\
                   the following new units were started: y.service\n\
                   fleet: switch-to-configuration switch failed; rolling back\n\
                   activating the configuration...\nthe following new units were started: y.service\n";
        assert_eq!(
            failure_lines(log),
            "warning: the following units failed: x.service"
        );
        assert_eq!(failure_lines("a\nb\nc\nd\n"), "b / c / d");
    }
}
