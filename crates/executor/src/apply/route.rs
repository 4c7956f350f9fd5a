//! The copy of an apply: which route each host's missing paths take (the compressed export
//! stream where the host has `zstd`, else the serve protocol over its store session), and the
//! one shared copy over SSH that tells each host the moment its own part is complete.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;

use fleet_store::local::LocalStore;
use fleet_store::{PathInfo, StorePath};
use tokio::sync::oneshot;

use super::Copied;
use crate::copy::{self, adaptive, CopyDone, CopyTarget, ImportTarget, LevelChoice};
use crate::fanout::{HostEvents, HostOutcome};
use crate::store::StoreSession;
use crate::sudo::Privilege;
use crate::Connection;

/// How a host's missing paths get there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// It lacks nothing.
    Nothing,
    /// `zstd -dc | nix-store --import`, as root.
    Compressed,
    /// AddToStoreNar over its `nix-store --serve --write` session.
    Serve,
    /// It lacks paths but has no store session to copy over (and no compressed route).
    NoSession,
}

/// Picks a host's route: compressed when it has `zstd` and compression is on (`compress`),
/// unless its link was measured fast (`fast_link`, `copy/adaptive.rs`) and it has a session;
/// else over its store session.
pub(crate) fn route(
    missing: usize,
    zstd: bool,
    compress: bool,
    session: bool,
    fast_link: bool,
) -> Route {
    match (missing, zstd && compress, session) {
        (0, ..) => Route::Nothing,
        (_, true, true) if fast_link => Route::Serve,
        (_, true, _) => Route::Compressed,
        (_, false, true) => Route::Serve,
        (_, false, false) => Route::NoSession,
    }
}

/// The links of the hosts whose copy is big enough to be worth measuring (compressed route
/// possible, at least [`adaptive::PROBE_MIN_NAR`] lacked), measured all at once; `None` for
/// the others, or when `adaptive` is off.
pub(crate) async fn measure_links(
    hosts: &[(&Connection, &BTreeSet<StorePath>, bool)],
    infos: &[PathInfo],
    adaptive: bool,
) -> Vec<Option<u64>> {
    if !adaptive {
        return vec![None; hosts.len()];
    }
    let sizes: HashMap<&StorePath, u64> = infos.iter().map(|i| (&i.path, i.nar_size)).collect();
    futures::future::join_all(hosts.iter().map(|&(conn, missing, zstd)| {
        let nar: u64 = missing.iter().filter_map(|p| sizes.get(p)).sum();
        async move {
            if zstd && nar >= adaptive::PROBE_MIN_NAR {
                adaptive::probe(conn).await
            } else {
                None
            }
        }
    }))
    .await
}

/// The shared copy, as the orchestration sees it: `run` copies to every host it was given and
/// calls `tell(i, how)` (`i`: the host's index in the apply) the moment a host's part ends.
/// Dropped before its end (cancelled), the hosts not yet told end `skipped`.
pub(crate) trait CopyPhase: Send {
    fn run(self, tell: &(dyn Fn(usize, Copied) + Sync)) -> impl Future<Output = ()> + Send;
}

/// One host's part of a copy over its store session.
pub(crate) struct ServePart {
    pub index: usize,
    pub session: StoreSession,
    pub missing: BTreeSet<StorePath>,
    pub events: HostEvents,
    /// Where the session goes back to when the copy succeeded (the host closes it after its
    /// activation).
    pub session_back: oneshot::Sender<StoreSession>,
}

/// One host's part of the compressed copy.
pub(crate) struct ImportPart {
    pub index: usize,
    pub conn: Arc<Connection>,
    pub privilege: Privilege,
    pub missing: BTreeSet<StorePath>,
    pub events: HostEvents,
    /// The deployment id its pending GC roots are under.
    pub id: String,
    /// Its link's throughput, if measured.
    pub measured: Option<u64>,
}

/// The copy over SSH: every route at once, each path read from `store` once per route.
pub(crate) struct SshCopy<'a> {
    pub store: &'a LocalStore,
    /// The union of the hosts' closures, in dependency order.
    pub infos: &'a [PathInfo],
    pub zstd_level: LevelChoice,
    pub serve: Vec<ServePart>,
    pub import: Vec<ImportPart>,
    /// Compressed parts that go through a relay (`apply/relayed.rs`).
    pub relayed: Vec<super::relayed::RelayGroup>,
    pub cleanups: crate::copy::relay::Cleanups,
}

impl CopyPhase for SshCopy<'_> {
    async fn run(self, tell: &(dyn Fn(usize, Copied) + Sync)) {
        let SshCopy {
            store,
            infos,
            zstd_level,
            serve,
            import,
            relayed,
            cleanups,
        } = self;
        let relays = super::relayed::run_groups(
            store,
            infos,
            zstd_level.unmeasured(),
            relayed,
            tell,
            &cleanups,
        );
        if serve.is_empty() && import.is_empty() {
            relays.await;
            return;
        }
        let mut serve_idx = Vec::new();
        let mut sessions = Vec::new();
        let mut serve_missing = Vec::new();
        let mut serve_events = Vec::new();
        let mut session_backs = Vec::new();
        for p in serve {
            serve_idx.push(p.index);
            sessions.push(p.session);
            serve_missing.push(p.missing);
            serve_events.push(p.events);
            session_backs.push(p.session_back);
        }
        let (serve_results, import_results) = {
            let serve_targets: Vec<CopyTarget> = sessions
                .iter_mut()
                .zip(serve_missing)
                .zip(serve_events)
                .map(|((session, missing), events)| CopyTarget {
                    session,
                    missing,
                    events,
                })
                .collect();
            let import_targets: Vec<ImportTarget> = import
                .iter()
                .map(|p| ImportTarget {
                    conn: &p.conn,
                    privilege: &p.privilege,
                    missing: p.missing.clone(),
                    events: p.events.clone(),
                    pending_roots: Some(p.id.clone()),
                    measured: p.measured,
                })
                .collect();
            let on_serve = |k: usize, done: CopyDone| tell(serve_idx[k], Ok(done));
            let on_import = |k: usize, done: CopyDone| tell(import[k].index, Ok(done));
            let serve = async {
                if serve_targets.is_empty() {
                    Vec::new()
                } else {
                    copy::copy_closures_each(store, infos, serve_targets, &on_serve).await
                }
            };
            let import = async {
                if import_targets.is_empty() {
                    Vec::new()
                } else {
                    copy::copy_compressed_each(store, infos, import_targets, zstd_level, &on_import)
                        .await
                }
            };
            let (serve, import, ()) = tokio::join!(serve, import, relays);
            (serve, import)
        };
        for (k, r) in import_results.into_iter().enumerate() {
            tell(import[k].index, r.map_err(|e| HostOutcome::failed(&e)));
        }
        for (((k, r), session), back) in serve_results
            .into_iter()
            .enumerate()
            .zip(sessions)
            .zip(session_backs)
        {
            match r {
                Ok(done) => {
                    tell(serve_idx[k], Ok(done));
                    let _ = back.send(session);
                }
                Err(e) => {
                    let err = session.fail(e).await;
                    tell(serve_idx[k], Err(HostOutcome::failed(&err)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(0, true, true, true, false), Route::Nothing);
        assert_eq!(route(3, true, true, true, false), Route::Compressed);
        assert_eq!(route(3, true, true, false, false), Route::Compressed);
        assert_eq!(route(3, true, false, true, false), Route::Serve);
        assert_eq!(route(3, false, true, true, false), Route::Serve);
        assert_eq!(route(3, false, true, false, false), Route::NoSession);
        // A fast link takes the uncompressed serve stream, if it has a session.
        assert_eq!(route(3, true, true, true, true), Route::Serve);
        assert_eq!(route(3, true, true, false, true), Route::Compressed);
        assert_eq!(route(0, true, true, true, true), Route::Nothing);
    }
}
