//! The relayed part of an apply's copy (docs/relay.md): per relay, its hosts' compressed
//! copy through it (`copy::relay`), and for each host whose relay or hop failed, as soon as it
//! did, a typed `relay-failed` event and the direct compressed copy of what it still lacks, in
//! the same run. A host whose import failed fails alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_store::local::LocalStore;
use fleet_store::{PathInfo, StorePath};
use tokio::sync::mpsc;

use super::route::ImportPart;
use super::Copied;
use crate::copy::relay::{copy_via_relay, relay_source_address, Cleanups, RelayTarget, Relayed};
use crate::copy::{self, CopyDone, ImportTarget};
use crate::fanout::{EventKind, HostOutcome};
use crate::sudo::Privilege;
use crate::{Connection, Stdin};

/// The relays of a run: each relay host's connection for relaying (its own, not the one its
/// own apply closes), or why it could not be reached (its hosts then go direct).
#[derive(Debug, Clone, Default)]
pub struct Relays(pub BTreeMap<String, Result<Arc<Connection>, String>>);

impl Relays {
    /// Closes the relays' connections.
    pub async fn close(&self) {
        for c in self.0.values().flatten() {
            c.close().await;
        }
    }
}

/// The hosts of one relay.
pub(crate) struct RelayGroup {
    pub relay: String,
    pub conn: Result<Arc<Connection>, String>,
    pub parts: Vec<ImportPart>,
    /// Which of `parts` is the relay itself (deployed in the same run).
    pub local: Option<usize>,
}

/// Runs every relay's group at once; each host is told as its copy ends.
pub(crate) async fn run_groups(
    store: &LocalStore,
    infos: &[PathInfo],
    zstd_level: i32,
    groups: Vec<RelayGroup>,
    tell: &(dyn Fn(usize, Copied) + Sync),
    cleanups: &Cleanups,
) {
    futures::future::join_all(
        groups
            .into_iter()
            .map(|g| run_group(store, infos, zstd_level, g, tell, cleanups)),
    )
    .await;
}

async fn run_group(
    store: &LocalStore,
    infos: &[PathInfo],
    zstd_level: i32,
    group: RelayGroup,
    tell: &(dyn Fn(usize, Copied) + Sync),
    cleanups: &Cleanups,
) {
    let RelayGroup {
        relay,
        conn,
        parts,
        local,
    } = group;
    let (dtx, mut drx) = mpsc::unbounded_channel::<(usize, String)>();
    let sent = Mutex::new(BTreeSet::new());
    let relayed = async {
        let dtx = dtx;
        let on_direct = |k: usize, why: &str| {
            sent.lock().unwrap_or_else(|p| p.into_inner()).insert(k);
            let _ = dtx.send((k, why.to_owned()));
        };
        let results = match &conn {
            Ok(conn) => {
                let from = relay_source_address(conn).await;
                let targets: Vec<RelayTarget> = parts
                    .iter()
                    .enumerate()
                    .map(|(k, p)| RelayTarget {
                        local: local == Some(k),
                        conn: p.conn.clone(),
                        privilege: p.privilege.clone(),
                        missing: p.missing.clone(),
                        events: p.events.clone(),
                        pending_roots: Some(p.id.clone()),
                    })
                    .collect();
                let on_copied = |k: usize, done: CopyDone| tell(parts[k].index, Ok(done));
                copy_via_relay(
                    store,
                    infos,
                    conn,
                    &from,
                    &targets,
                    zstd_level,
                    (&on_copied, &on_direct),
                    cleanups,
                )
                .await
            }
            Err(e) => parts
                .iter()
                .map(|_| Relayed::Direct(format!("unreachable: {e}")))
                .collect(),
        };
        for (k, r) in results.into_iter().enumerate() {
            match r {
                Relayed::Done(done) => tell(parts[k].index, Ok(done)),
                Relayed::Failed(e) => tell(parts[k].index, Err(HostOutcome::failed(&e))),
                Relayed::Direct(why) => {
                    if !sent.lock().unwrap_or_else(|p| p.into_inner()).contains(&k) {
                        let _ = dtx.send((k, why));
                    }
                }
            }
        }
    };
    // Hosts fall back as they fail; those failing together are copied together (each path
    // compressed once for them).
    let fallback = async {
        while let Some(first) = drx.recv().await {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut batch = vec![first];
            while let Ok(more) = drx.try_recv() {
                batch.push(more);
            }
            direct(store, infos, zstd_level, &relay, &parts, batch, tell).await;
        }
    };
    tokio::join!(relayed, fallback);
}

/// The direct compressed copy of the hosts (`(index in parts, why)`) whose relay failed, each
/// of what it still lacks, after a `relay-failed` event each.
async fn direct(
    store: &LocalStore,
    infos: &[PathInfo],
    zstd_level: i32,
    relay: &str,
    parts: &[ImportPart],
    batch: Vec<(usize, String)>,
    tell: &(dyn Fn(usize, Copied) + Sync),
) {
    let mut direct = Vec::new();
    for (k, error) in batch {
        let part = &parts[k];
        let _ = part
            .events
            .emit(EventKind::RelayFailed {
                relay: relay.to_owned(),
                error,
            })
            .await;
        direct.push(part);
    }
    // What each still lacks (what the relay delivered before it failed stays).
    let still = futures::future::join_all(
        direct
            .iter()
            .map(|p| still_missing(&p.conn, &p.privilege, &p.missing)),
    )
    .await;
    let targets: Vec<ImportTarget> = direct
        .iter()
        .zip(still)
        .map(|(p, missing)| ImportTarget {
            conn: &p.conn,
            privilege: &p.privilege,
            missing,
            events: p.events.clone(),
            pending_roots: Some(p.id.clone()),
            measured: None,
        })
        .collect();
    let on_import = |k: usize, done: CopyDone| tell(direct[k].index, Ok(done));
    let results = copy::copy_compressed_each(store, infos, targets, zstd_level, &on_import).await;
    for (k, r) in results.into_iter().enumerate() {
        tell(direct[k].index, r.map_err(|e| HostOutcome::failed(&e)));
    }
}

/// The paths of `missing` the host still lacks (all of them when it cannot say).
async fn still_missing(
    conn: &Connection,
    privilege: &Privilege,
    missing: &BTreeSet<StorePath>,
) -> BTreeSet<StorePath> {
    let list: String = missing.iter().map(|p| format!("{p}\n")).collect();
    let out = conn
        .exec(
            "xargs nix-store --check-validity --print-invalid",
            privilege,
            Stdin::Bytes(list.into_bytes().into()),
        )
        .await;
    match out {
        Ok(o) if o.success() => {
            let text = o.stdout_lossy();
            let invalid: BTreeSet<&str> = text.lines().map(str::trim).collect();
            missing
                .iter()
                .filter(|p| invalid.contains(p.as_str()))
                .cloned()
                .collect()
        }
        _ => missing.clone(),
    }
}

/// Puts `part` into the group of `relay`; `local`: it is the relay itself.
pub(crate) fn add(
    groups: &mut Vec<RelayGroup>,
    relays: &Relays,
    relay: String,
    part: ImportPart,
    local: bool,
) {
    match groups.iter_mut().find(|g| g.relay == relay) {
        Some(g) => {
            if local {
                g.local = Some(g.parts.len());
            }
            g.parts.push(part);
        }
        None => {
            let conn = relays
                .0
                .get(&relay)
                .cloned()
                .unwrap_or_else(|| Err("not connected".into()));
            groups.push(RelayGroup {
                relay,
                conn,
                parts: vec![part],
                local: local.then_some(0),
            });
        }
    }
}
