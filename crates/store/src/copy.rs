//! Fan-out copy: each missing store path is read once from the local store and its NAR chunks
//! are sent to every destination that lacks it.
//!
//! Slow-destination policy: destinations are fed in lockstep through bounded channels
//! (`buffer_chunks` × 64 KiB each). Once the shared reader has waited `detach_after` in all
//! for one destination's full channel, that destination is *detached*: it leaves the shared
//! group and gets its own reader, which resumes exactly where it stopped (re-reading only what
//! that destination still needs). The fast group keeps its pace; a slow host costs extra local reads, never a stall of
//! the others. A destination whose consumer went away (its channel closed) is dropped.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};

use crate::nar::{dump_chunks, CHUNK_SIZE};
use crate::serve::{AddEvent, AddSummary, NarMsg, ServeClient};
use crate::source::NarSource;
use crate::{Error, PathInfo, Result, StorePath};

/// Default capacity (in 64 KiB chunks) of each destination's channel: 4 MiB.
pub const DEFAULT_BUFFER_CHUNKS: usize = 64;

/// Tuning for [`fan_out`].
#[derive(Debug, Clone)]
pub struct FanOutOptions {
    pub buffer_chunks: usize,
    pub detach_after: Duration,
}

impl Default for FanOutOptions {
    fn default() -> Self {
        FanOutOptions {
            buffer_chunks: DEFAULT_BUFFER_CHUNKS,
            detach_after: Duration::from_secs(2),
        }
    }
}

/// One destination of a fan-out: the paths it lacks, and the channel its consumer
/// ([`ServeClient::add_stream`] or [`crate::export::write_export_stream`]) reads.
pub struct Destination {
    pub label: String,
    pub missing: BTreeSet<StorePath>,
    pub tx: mpsc::Sender<NarMsg>,
}

/// What the producer did for one destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestReport {
    pub label: String,
    /// Paths fully queued to this destination.
    pub paths: usize,
    pub nar_bytes: u64,
    /// Whether it was detached from the shared group for being slow.
    pub detached: bool,
    /// Whether its consumer went away before the end.
    pub gone: bool,
}

/// What [`fan_out`] did.
#[derive(Debug, Clone, Default)]
pub struct FanOutReport {
    /// NAR bytes read by the shared reader (each path once).
    pub shared_bytes_read: u64,
    pub shared_paths_read: usize,
    pub dests: Vec<DestReport>,
}

/// Feed `infos` (in order) to one consumer, re-reading each NAR from `store`.
pub(crate) async fn feed<S: NarSource>(
    store: S,
    infos: Vec<Arc<PathInfo>>,
    tx: mpsc::Sender<NarMsg>,
) -> Result<(), ()> {
    for info in infos {
        feed_one(&store, &info, &tx, false, 0).await?;
    }
    Ok(())
}

/// Send one path (`Start` unless `started`, chunks from byte `skip` on, `End`). `Err` means the
/// consumer is gone or the source failed (a `Fail` was sent).
async fn feed_one<S: NarSource>(
    store: &S,
    info: &Arc<PathInfo>,
    tx: &mpsc::Sender<NarMsg>,
    started: bool,
    mut skip: u64,
) -> Result<(), ()> {
    if !started {
        tx.send(NarMsg::Start(info.clone())).await.map_err(|_| ())?;
    }
    let file = store.real_path(&info.path);
    let mut rx = dump_chunks(file.clone(), CHUNK_SIZE, 4);
    while let Some(c) = rx.recv().await {
        match c {
            Ok(mut b) => {
                if skip > 0 {
                    let n = skip.min(b.len() as u64);
                    skip -= n;
                    b = b.slice(n as usize..);
                    if b.is_empty() {
                        continue;
                    }
                }
                tx.send(NarMsg::Chunk(b)).await.map_err(|_| ())?;
            }
            Err(e) => {
                let _ = tx
                    .send(NarMsg::Fail(Error::NarSource {
                        path: info.path.clone(),
                        file,
                        source: e,
                    }))
                    .await;
                return Err(());
            }
        }
    }
    tx.send(NarMsg::End).await.map_err(|_| ())
}

struct Active {
    idx: usize,
    missing: BTreeSet<StorePath>,
    tx: mpsc::Sender<NarMsg>,
    /// How long the shared reader has waited for this destination's channel, in all.
    waited: Duration,
}

enum SendOutcome {
    Ok,
    Slow,
    Gone,
}

/// Sends `msg`; `Slow` once the shared reader has waited `t` in all for this destination. A
/// host on a slow link takes data in bursts (as SSH window space comes back), so its channel
/// has room now and then and each single wait is short, yet the waits add up to its pace:
/// counting them all is what tells it from a fast host.
async fn send(a: &mut Active, msg: NarMsg, t: Duration) -> SendOutcome {
    let msg = match a.tx.try_send(msg) {
        Ok(()) => return SendOutcome::Ok,
        Err(TrySendError::Closed(_)) => return SendOutcome::Gone,
        Err(TrySendError::Full(msg)) => msg,
    };
    let start = Instant::now();
    let r = a.tx.send_timeout(msg, t.saturating_sub(a.waited)).await;
    a.waited += start.elapsed();
    match r {
        Ok(()) => SendOutcome::Ok,
        Err(SendTimeoutError::Timeout(_)) => SendOutcome::Slow,
        Err(SendTimeoutError::Closed(_)) => SendOutcome::Gone,
    }
}

/// Stream every path of `infos` (references first) that some destination lacks: read once,
/// sent to each destination that lacks it. Returns when every destination got its paths (or
/// went away). Run the consumers concurrently (see [`fan_out_serve`]).
pub async fn fan_out<S: NarSource>(
    store: &S,
    infos: &[PathInfo],
    dests: Vec<Destination>,
    opts: &FanOutOptions,
) -> FanOutReport {
    let infos: Vec<Arc<PathInfo>> = infos.iter().cloned().map(Arc::new).collect();
    let mut report = FanOutReport {
        dests: dests
            .iter()
            .map(|d| DestReport {
                label: d.label.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut active: Vec<Active> = dests
        .into_iter()
        .enumerate()
        .map(|(idx, d)| Active {
            idx,
            missing: d.missing,
            tx: d.tx,
            waited: Duration::ZERO,
        })
        .collect();
    let mut solos = Vec::new();

    for (pi, info) in infos.iter().enumerate() {
        let mut group: Vec<(Active, u64)> = Vec::new(); // (dest, bytes delivered of this path)
        let mut rest = Vec::new();
        for a in active.drain(..) {
            if a.missing.contains(&info.path) {
                group.push((a, 0));
            } else {
                rest.push(a);
            }
        }
        active = rest;
        if group.is_empty() {
            continue;
        }
        // Start
        let mut next = Vec::new();
        for (mut a, _) in group.drain(..) {
            match send(&mut a, NarMsg::Start(info.clone()), opts.detach_after).await {
                SendOutcome::Ok => next.push((a, 0)),
                SendOutcome::Slow => {
                    solos.push(detach(store, &infos, pi, a, false, 0, &mut report))
                }
                SendOutcome::Gone => report.dests[a.idx].gone = true,
            }
        }
        group = next;
        // Chunks, read once.
        let file = store.real_path(&info.path);
        let mut rx = dump_chunks(file.clone(), CHUNK_SIZE, 4);
        let mut failed = false;
        while let Some(c) = rx.recv().await {
            if group.is_empty() {
                break;
            }
            match c {
                Ok(b) => {
                    report.shared_bytes_read += b.len() as u64;
                    let mut next = Vec::new();
                    for (mut a, sent) in group.drain(..) {
                        match send(&mut a, NarMsg::Chunk(b.clone()), opts.detach_after).await {
                            SendOutcome::Ok => next.push((a, sent + b.len() as u64)),
                            SendOutcome::Slow => {
                                solos.push(detach(store, &infos, pi, a, true, sent, &mut report))
                            }
                            SendOutcome::Gone => report.dests[a.idx].gone = true,
                        }
                    }
                    group = next;
                }
                Err(e) => {
                    for (a, _) in group.drain(..) {
                        let _ =
                            a.tx.send(NarMsg::Fail(Error::NarSource {
                                path: info.path.clone(),
                                file: file.clone(),
                                source: std::io::Error::new(e.kind(), e.to_string()),
                            }))
                            .await;
                        report.dests[a.idx].gone = true;
                    }
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            continue;
        }
        report.shared_paths_read += 1;
        for (mut a, sent) in group.drain(..) {
            match send(&mut a, NarMsg::End, opts.detach_after).await {
                SendOutcome::Ok => {
                    report.dests[a.idx].paths += 1;
                    report.dests[a.idx].nar_bytes += sent;
                    active.push(a);
                }
                SendOutcome::Slow => {
                    solos.push(detach(store, &infos, pi, a, true, sent, &mut report))
                }
                SendOutcome::Gone => report.dests[a.idx].gone = true,
            }
        }
        active.sort_by_key(|a| a.idx);
    }
    drop(active); // closes the channels: consumers finish
    for (idx, h) in solos {
        if let Ok((paths, bytes, ok)) = h.await {
            report.dests[idx].paths += paths;
            report.dests[idx].nar_bytes += bytes;
            report.dests[idx].gone |= !ok;
        }
    }
    report
}

type Solo = (usize, tokio::task::JoinHandle<(usize, u64, bool)>);

/// Hand a slow destination its own reader, resuming at path `pi` (Start already sent if
/// `started`, `offset` NAR bytes already delivered).
fn detach<S: NarSource>(
    store: &S,
    infos: &[Arc<PathInfo>],
    pi: usize,
    a: Active,
    started: bool,
    offset: u64,
    report: &mut FanOutReport,
) -> Solo {
    report.dests[a.idx].detached = true;
    report.dests[a.idx].nar_bytes += offset; // delivered by the shared reader
    let store = store.clone();
    let todo: Vec<Arc<PathInfo>> = infos[pi..]
        .iter()
        .filter(|i| a.missing.contains(&i.path))
        .cloned()
        .collect();
    let idx = a.idx;
    let h = tokio::spawn(async move {
        let (mut paths, mut bytes) = (0usize, 0u64);
        for (k, info) in todo.iter().enumerate() {
            let (st, skip) = if k == 0 {
                (started, offset)
            } else {
                (false, 0)
            };
            if feed_one(&store, info, &a.tx, st, skip).await.is_err() {
                return (paths, bytes, false);
            }
            paths += 1;
            bytes += info.nar_size - skip;
        }
        (paths, bytes, true)
    });
    (idx, h)
}

/// Fan-out into serve clients: `targets` pairs each client with the paths it lacks. Returns the
/// producer's report and each client's result, in order. `progress(i, event)` reports per
/// destination; `on_done(i, summary)` is awaited the moment destination `i` has everything
/// (before the others are done), so a caller can go on with that destination at once.
pub async fn fan_out_serve<S, R, W, D, DF>(
    store: &S,
    infos: &[PathInfo],
    targets: Vec<(&mut ServeClient<R, W>, BTreeSet<StorePath>)>,
    opts: &FanOutOptions,
    progress: &(dyn Fn(usize, AddEvent) + Sync),
    on_done: D,
) -> (FanOutReport, Vec<Result<AddSummary>>)
where
    S: NarSource,
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
    D: Fn(usize, AddSummary) -> DF,
    DF: std::future::Future<Output = ()>,
{
    let on_done = &on_done;
    let mut dests = Vec::new();
    let mut consumers = Vec::new();
    for (i, (client, missing)) in targets.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel(opts.buffer_chunks.max(1));
        dests.push(Destination {
            label: client.host().to_string(),
            missing,
            tx,
        });
        consumers.push(async move {
            let mut cb = |e: AddEvent| progress(i, e);
            let r = client.add_stream(rx, &mut cb).await;
            if let Ok(summary) = &r {
                on_done(i, *summary).await;
            }
            r
        });
    }
    let (report, results) = tokio::join!(
        fan_out(store, infos, dests, opts),
        futures::future::join_all(consumers)
    );
    (report, results)
}

/// Just the [`Bytes`] type used for chunks, re-exported for consumers.
pub type Chunk = Bytes;
