//! The compressed copy: zstd-compressed export streams into `zstd -dc | nix-store --import`, one
//! importer per host, with each path read **and compressed** once however many hosts lack it.
//!
//! Hosts rarely lack the same set of paths (each host's toplevel, `etc` and deployment package
//! are its own), so the copy is cut into **segments**: runs of paths lacked by the same hosts,
//! in an order that keeps every path after its references (a topological order that stays
//! with one set of hosts as long as it can: typically one segment with everything the hosts
//! share, then one small segment per host). Each segment is read once, compressed once into
//! complete zstd frames, and broadcast to the hosts that lack its paths; a host's stream is
//! the segments it needs, in order, then the end marker (`zstd -dc` decompresses concatenated
//! frames). A host gets its end marker right after its last segment, so its import (and its
//! activation) completes without waiting for the segments of hosts after it.
//!
//! Measured by `cargo xtask bench` (docs/performance.md): one stream per distinct missing set
//! compressed the shared closure once per host.
//!
//! Each host has its own zstd level ([`LevelChoice::Adaptive`]: from its link's measured
//! throughput, `adaptive.rs`): a segment is compressed once **per distinct level** among its
//! hosts, each compression reading the segment's NARs itself (from the page cache).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_store::copy::{fan_out, Destination, FanOutOptions};
use fleet_store::local::LocalStore;
use fleet_store::serve::NarMsg;
use fleet_store::{PathInfo, StorePath};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::adaptive::{self, LevelChoice, Transport};
use super::segments::{plan_segments, Segment};
use super::{CopyDone, OnCopied};
use crate::error::DeployError;
use crate::fanout::{EventKind, HostEvents};
use crate::sudo::Privilege;
use crate::Connection;

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
    /// The link's throughput, bytes/s, if measured already (the apply measures before it picks
    /// routes): not measured again.
    pub measured: Option<u64>,
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
    zstd_level: impl Into<LevelChoice>,
) -> Vec<Result<CopyDone, DeployError>> {
    copy_compressed_each(store, infos, targets, zstd_level, &|_, _| {}).await
}

/// [`copy_compressed`], calling `on_copied` for each target the moment its import is complete
/// (right after its last segment, not after every host's).
pub async fn copy_compressed_each(
    store: &LocalStore,
    infos: &[PathInfo],
    targets: Vec<ImportTarget<'_>>,
    zstd_level: impl Into<LevelChoice>,
    on_copied: OnCopied<'_>,
) -> Vec<Result<CopyDone, DeployError>> {
    broadcast(store, infos, targets, zstd_level.into(), on_copied).await
}

/// Each target's transport: with [`LevelChoice::Adaptive`], the hosts that lack at least
/// `probe_from` (by default [`adaptive::PROBE_MIN_NAR`]) are probed, all at once, and get [`adaptive::level_for`] their
/// throughput. Told to each host as a `transport` event (and in the `-v` log).
async fn transports(
    targets: &[ImportTarget<'_>],
    totals: &[(u64, u64)],
    choice: LevelChoice,
) -> Vec<Transport> {
    let measured: Vec<Option<u64>> = match choice {
        LevelChoice::Fixed(_) => vec![None; targets.len()],
        LevelChoice::Adaptive { probe_from, .. } => {
            futures::future::join_all(targets.iter().zip(totals).map(|(t, &(nar, _))| async move {
                if t.measured.is_some() {
                    t.measured
                } else if nar >= probe_from && nar > 0 {
                    adaptive::probe(t.conn).await
                } else {
                    None
                }
            }))
            .await
        }
    };
    let mut out = Vec::with_capacity(targets.len());
    for (t, m) in targets.iter().zip(measured) {
        let zstd_level = match choice {
            LevelChoice::Fixed(l) => l,
            LevelChoice::Adaptive { default, .. } => adaptive::level_for(m, default),
        };
        let tr = Transport {
            zstd_level: Some(zstd_level),
            cipher: t.conn.cipher().to_owned(),
            measured_bytes_per_s: m,
        };
        tracing::debug!(
            host = t.conn.name(),
            zstd_level,
            cipher = %tr.cipher,
            measured_mb_per_s = m.map(|r| r as f64 / 1e6),
            "copy: transport"
        );
        let _ = t
            .events
            .emit(EventKind::Transport {
                zstd_level: Some(zstd_level),
                cipher: tr.cipher.clone(),
                measured_bytes_per_s: m,
            })
            .await;
        out.push(tr);
    }
    out
}

/// A piece of a host's stream: compressed bytes, how much NAR (bytes, whole paths) the host
/// will have once it has them, and whether this is the end of its stream.
struct Piece {
    bytes: bytes::Bytes,
    nar_bytes: u64,
    paths: u64,
    end: bool,
}

/// See [`copy_compressed_each`].
async fn broadcast(
    store: &LocalStore,
    infos: &[PathInfo],
    targets: Vec<ImportTarget<'_>>,
    choice: LevelChoice,
    on_copied: OnCopied<'_>,
) -> Vec<Result<CopyDone, DeployError>> {
    let n = targets.len();
    let totals = super::totals(infos, targets.iter().map(|t| &t.missing));
    let levels: Vec<i32> = transports(&targets, &totals, choice)
        .await
        .into_iter()
        .map(|t| t.zstd_level.unwrap_or(3))
        .collect();
    // Start every importer; one that cannot start fails alone.
    let mut results: Vec<Option<Result<CopyDone, DeployError>>> = (0..n).map(|_| None).collect();
    let mut senders: Vec<Option<mpsc::Sender<Piece>>> = (0..n).map(|_| None).collect();
    let mut consumers = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        match t
            .conn
            .spawn(
                &import_command(t.pending_roots.as_deref(), &t.missing),
                t.privilege,
            )
            .await
        {
            Err(e) => results[i] = Some(Err(e.into())),
            Ok(proc) => {
                // 64 pieces of up to 256 KiB: up to 16 MiB of the stream ahead per host.
                let (tx, rx) = mpsc::channel::<Piece>(64);
                senders[i] = Some(tx);
                consumers.push(consume(i, t, proc, rx, totals[i], on_copied));
            }
        }
    }
    let missing: Vec<&BTreeSet<StorePath>> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            static NOTHING: BTreeSet<StorePath> = BTreeSet::new();
            if senders[i].is_some() {
                &t.missing
            } else {
                &NOTHING
            }
        })
        .collect();
    let segments = plan_segments(infos, &missing);
    let (source_errors, finished) = tokio::join!(
        feed(store, infos, &segments, senders, &levels),
        futures::future::join_all(consumers)
    );
    for (i, r) in finished {
        results[i] = Some(match (r, &source_errors[i]) {
            (Ok(done), None) => Ok(done),
            (Ok(_), Some(e)) | (Err(_), Some(e)) => Err(DeployError::Source(e.clone())),
            (Err(e), None) => Err(e),
        });
    }
    results
        .into_iter()
        .map(|r| r.expect("every target has a result"))
        .collect()
}

/// Writes one host's pieces into its importer; the result is what it received once the
/// importer exited successfully after the end of the stream.
async fn consume(
    i: usize,
    t: &ImportTarget<'_>,
    proc: crate::RemoteProcess,
    mut rx: mpsc::Receiver<Piece>,
    (total_bytes, total_paths): (u64, u64),
    on_copied: OnCopied<'_>,
) -> (usize, Result<CopyDone, DeployError>) {
    let (stdout, mut stdin, exit) = proc.into_parts();
    drop(stdout);
    let (mut sent, mut complete, mut write_err) = (0u64, false, None);
    let mut last = Instant::now();
    while let Some(p) = rx.recv().await {
        if let Err(e) = stdin.write_all(&p.bytes).await {
            write_err = Some(e);
            break;
        }
        sent += p.bytes.len() as u64;
        complete = p.end;
        if last.elapsed() >= Duration::from_millis(250) {
            last = Instant::now();
            let _ = t
                .events
                .progress(p.nar_bytes, total_bytes, p.paths, total_paths)
                .await;
        }
    }
    drop(rx);
    let _ = stdin.shutdown().await;
    drop(stdin);
    let info = exit.finish().await;
    let host = t.conn.name().to_owned();
    let r = match info {
        Ok(info) if info.success() && write_err.is_none() && complete => {
            let done = CopyDone {
                paths: total_paths as usize,
                nar_bytes: total_bytes,
                wire_bytes: Some(sent),
            };
            let _ = t
                .events
                .progress(total_bytes, total_bytes, total_paths, total_paths)
                .await;
            on_copied(i, done);
            Ok(done)
        }
        Ok(info) => Err(DeployError::Import {
            host,
            status: info.status,
            stderr: String::from_utf8_lossy(&info.stderr).trim().to_owned(),
        }),
        Err(e) => Err(e.into()),
    };
    (i, r)
}

/// Each target's sender (`None`: not fed, or gone).
type Senders = Vec<Option<mpsc::Sender<Piece>>>;

/// Reads, compresses and broadcasts the segments in order; each host gets its end marker
/// after its last segment. A local read failure cuts the stream of the segment's hosts (their
/// imports fail, nothing partial is registered) and is returned for them.
async fn feed(
    store: &LocalStore,
    infos: &[PathInfo],
    segments: &[Segment],
    mut senders: Vec<Option<mpsc::Sender<Piece>>>,
    levels: &[i32],
) -> Vec<Option<String>> {
    let n = senders.len();
    let mut errors: Vec<Option<String>> = vec![None; n];
    let mut have = vec![(0u64, 0u64); n];
    let mut last_segment: Vec<Option<usize>> = vec![None; n];
    for (s, seg) in segments.iter().enumerate() {
        for &i in &seg.members {
            last_segment[i] = Some(s);
        }
    }
    // The end marker is one tiny frame: any level decompresses the same.
    let end = bytes::Bytes::from(fleet_store::export::export_end(Some(
        levels.first().copied().unwrap_or(3),
    )));
    let finish = |tx: mpsc::Sender<Piece>, (nar_bytes, paths): (u64, u64)| {
        let end = end.clone();
        async move {
            let _ = tx
                .send(Piece {
                    bytes: end,
                    nar_bytes,
                    paths,
                    end: true,
                })
                .await;
        }
    };
    // Hosts that lack nothing get an empty stream.
    for i in 0..n {
        if last_segment[i].is_none() {
            if let Some(tx) = senders[i].take() {
                finish(tx, have[i]).await;
            }
        }
    }
    for (s, seg) in segments.iter().enumerate() {
        let members: Vec<usize> = seg
            .members
            .iter()
            .copied()
            .filter(|&i| senders[i].is_some())
            .collect();
        if members.is_empty() {
            continue;
        }
        // One compression per distinct level among the members, all at once; each owns its
        // members' senders meanwhile.
        let mut groups: Vec<(i32, Vec<usize>, Senders)> = Vec::new();
        for &i in &members {
            let level = levels[i];
            let g = match groups.iter().position(|g| g.0 == level) {
                Some(g) => g,
                None => {
                    groups.push((level, Vec::new(), (0..n).map(|_| None).collect()));
                    groups.len() - 1
                }
            };
            groups[g].1.push(i);
            groups[g].2[i] = senders[i].take();
        }
        let runs = groups.iter_mut().map(|(level, group, own)| {
            let have = &have;
            async move {
                let r = segment(store, infos, seg, group, own, have, *level).await;
                (group.clone(), r)
            }
        });
        let outcomes = futures::future::join_all(runs).await;
        for (_, _, own) in groups {
            for (i, tx) in own.into_iter().enumerate() {
                if tx.is_some() {
                    senders[i] = tx;
                }
            }
        }
        for (group, r) in outcomes {
            match r {
                Ok((nar_bytes, paths)) => {
                    for &i in &group {
                        have[i].0 += nar_bytes;
                        have[i].1 += paths;
                    }
                }
                Err(e) => {
                    for &i in &group {
                        errors[i] = Some(e.clone());
                        senders[i] = None;
                    }
                }
            }
        }
        for &i in &members {
            if last_segment[i] == Some(s) {
                if let Some(tx) = senders[i].take() {
                    finish(tx, have[i]).await;
                }
            }
        }
    }
    errors
}

/// One segment: NARs (read once) → counting relay → export part + zstd → broadcast to the
/// members still listening. Returns the segment's NAR bytes and paths.
async fn segment(
    store: &LocalStore,
    infos: &[PathInfo],
    seg: &Segment,
    members: &[usize],
    senders: &mut [Option<mpsc::Sender<Piece>>],
    have: &[(u64, u64)],
    zstd_level: i32,
) -> Result<(u64, u64), String> {
    // How far the export got (NAR bytes, whole paths), read with each compressed chunk, so
    // each member's progress is what it received, not what was read.
    let produced = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let (nar_tx, mut nar_rx) = mpsc::channel(64);
    let (relay_tx, relay_rx) = mpsc::channel(64);
    let (mut pipe_w, pipe_r) = tokio::io::duplex(256 * 1024);
    let label = format!("{} host(s)", members.len());
    let options = FanOutOptions::default();
    let producer = fan_out(
        store,
        infos,
        vec![Destination {
            label: label.clone(),
            missing: seg.paths.clone(),
            tx: nar_tx,
        }],
        &options,
    );
    let counts = produced.clone();
    let relay = async move {
        while let Some(msg) = nar_rx.recv().await {
            match &msg {
                NarMsg::Chunk(b) => {
                    counts.0.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
                NarMsg::End => {
                    counts.1.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            if relay_tx.send(msg).await.is_err() {
                break;
            }
        }
    };
    let compress = async move {
        let r = fleet_store::export::write_export_part(
            relay_rx,
            &mut pipe_w,
            Some(zstd_level),
            &label,
            false,
        )
        .await;
        let _ = pipe_w.shutdown().await;
        r
    };
    let broadcast = async {
        // Owned here, so it is dropped when no member listens any more: the compressor's
        // writes then fail and the segment ends, instead of waiting for a reader forever.
        let mut pipe_r = pipe_r;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match pipe_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = bytes::Bytes::copy_from_slice(&buf[..n]);
            let at = (
                produced.0.load(Ordering::Relaxed),
                produced.1.load(Ordering::Relaxed),
            );
            let mut alive = 0;
            for &i in members {
                let Some(tx) = &senders[i] else { continue };
                let piece = Piece {
                    bytes: chunk.clone(),
                    nar_bytes: have[i].0 + at.0,
                    paths: have[i].1 + at.1,
                    end: false,
                };
                if tx.send(piece).await.is_ok() {
                    alive += 1;
                } else {
                    // Its importer is gone; its consumer reports why.
                    senders[i] = None;
                }
            }
            if alive == 0 {
                return true;
            }
        }
        false
    };
    let (_report, (), export, nobody_left) = tokio::join!(producer, relay, compress, broadcast);
    match export {
        Ok((paths, _)) => Ok((produced.0.load(Ordering::Relaxed), paths as u64)),
        // The export broke because every member's importer had gone: not a local failure;
        // each member's own error (say, a full disk) is what its consumer reports.
        Err(_) if nobody_left => Ok((
            produced.0.load(Ordering::Relaxed),
            produced.1.load(Ordering::Relaxed),
        )),
        Err(e) => Err(e.to_string()),
    }
}
