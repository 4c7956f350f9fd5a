//! The copy over the hosts' store sessions (`nix-store --serve --write`): each NAR read once and
//! streamed to every host that lacks it as pipelined AddToStoreNar requests, with progress.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleet_store::copy::{fan_out_serve, FanOutOptions};
use fleet_store::local::LocalStore;
use fleet_store::serve::{AddEvent, AddSummary};
use fleet_store::{PathInfo, StorePath};

use super::{CopyDone, OnCopied};
use crate::fanout::HostEvents;
use crate::store::StoreSession;

/// One host's part of a copy.
pub struct CopyTarget<'a> {
    pub session: &'a mut StoreSession,
    /// The paths of the closure the host lacks.
    pub missing: BTreeSet<StorePath>,
    pub events: HostEvents,
}

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
