//! The relayed copy (docs/relay.md): the compressed segments the hosts behind a relay need go
//! **once** over the deployer's link into a private folder on the relay, and the relay
//! forwards each host its segments over the LAN, into the same root `zstd -dc | nix-store
//! --import` as the direct compressed route.
//!
//! The LAN hop has its own, least-privileged channel: a one-off ed25519 key made in memory for
//! this run (its private half reaches the relay through a channel's stdin, never argv, the
//! environment, a log or the store), the host keys fleet's own connections verified (the
//! relay's `ssh` checks them strictly), and on each host one `authorized_keys` line that
//! accepts that key only from the relay, only until an expiry an hour ahead, and only to run
//! `cat > FIFO`: the FIFO that host's root import (started by fleet over its own connection,
//! sudo inside that channel as always) reads. The relay holds no password and gains no lasting
//! access: the folder, the line and the FIFO are removed at the end (success, failure, Ctrl-C:
//! [`Cleanups`]), and the expiry bounds a deployer that dies.
//!
//! A host whose hop fails (relay unreachable or dying, no `ssh` on it, authentication refused)
//! gets [`Relayed::Direct`]: the caller copies it directly. A host whose own import fails gets
//! [`Relayed::Failed`]: it fails alone.

use std::collections::BTreeSet;
use std::sync::Arc;

use fleet_store::copy::{fan_out, Destination, FanOutOptions};
use fleet_store::local::LocalStore;
use fleet_store::{PathInfo, StorePath};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::relay_sh::{self as sh, Dial};
use super::relay_state::OneOffKey;
pub use super::relay_state::{relay_source_address, Cleanups};
use super::segments::plan_segments;
use super::{import_command, CopyDone, OnCopied};
use crate::error::DeployError;
use crate::fanout::{EventKind, HostEvents};
use crate::sudo::Privilege;
use crate::{Connection, Stdin};

/// How long the `authorized_keys` line is accepted, at most (a deployer that dies mid-run).
pub const KEY_LIFETIME_SECS: u64 = 3600;

/// At most this many hops run at once over fleet's one connection to the relay: with the
/// upload and a short command, the channels stay under sshd's default `MaxSessions` (10).
/// The others start as these end (from the files, by then complete).
pub const MAX_HOPS: usize = 7;

/// One host behind a relay.
pub struct RelayTarget {
    pub conn: Arc<Connection>,
    pub privilege: Privilege,
    pub missing: BTreeSet<StorePath>,
    pub events: HostEvents,
    /// As for the direct import: the deployment id its paths are rooted under until activation.
    pub pending_roots: Option<String>,
    /// The relay itself, deployed in the same run: it imports from the segment files it
    /// holds (no hop), so the closure crosses the deployer's link once for it and its hosts.
    pub local: bool,
}

/// Told, as soon as it is known and before the others end, a target (its index) that falls
/// back to a direct copy and why: its direct copy can start at once.
pub type OnDirect<'a> = &'a (dyn Fn(usize, &str) + Sync);

/// How one host's relayed copy ended.
#[derive(Debug)]
pub enum Relayed {
    Done(CopyDone),
    /// The relay or the LAN hop failed before the host's import got its stream: copy it
    /// directly (what it imported stays).
    Direct(String),
    /// The host's own import failed: it fails alone.
    Failed(DeployError),
}

/// Where segment uploads stand: how many are on the relay, or why the relay failed.
#[derive(Debug, Clone)]
enum Upload {
    Uploaded(usize),
    Failed(String),
}

/// One host's hop, prepared: its folder, its import waiting on the FIFO, its segments.
struct Hop {
    index: usize,
    /// The host's side (its cleanup, its import waiting on the FIFO); `None`: the relay's own
    /// import, from the files.
    remote: Option<(u64, crate::RemoteProcess)>,
    segments: Vec<usize>,
    dial: Dial,
}

/// Copies to `targets` through `relay` (see the module docs). Results in `targets` order;
/// each host whose import completed gets a `relayed` event and `on_copied` is told, as it does;
/// `on_direct` hears of a host whose hop failed as it does (the early failures of the whole
/// relay come back in the results only, at once).
#[allow(clippy::too_many_arguments)]
pub async fn copy_via_relay(
    store: &LocalStore,
    infos: &[PathInfo],
    relay: &Arc<Connection>,
    from: &str,
    targets: &[RelayTarget],
    zstd_level: i32,
    (on_copied, on_direct): (OnCopied<'_>, OnDirect<'_>),
    cleanups: &Cleanups,
) -> Vec<Relayed> {
    let mut results: Vec<Option<Relayed>> = (0..targets.len()).map(|_| None).collect();
    let all_direct = |why: String| -> Vec<Relayed> {
        (0..targets.len())
            .map(|_| Relayed::Direct(why.clone()))
            .collect()
    };
    let key = match OneOffKey::new() {
        Ok(k) => k,
        Err(e) => return all_direct(e),
    };
    let id = crate::deploy::deployment_id();

    // The relay's private folder, with the key (through stdin), the hosts' verified keys and
    // the end of every stream.
    let setup = relay
        .exec(
            &sh::relay_setup(),
            &Privilege::None,
            Stdin::Bytes(bytes::Bytes::from(key.private.as_bytes().to_vec())),
        )
        .await;
    let (dir, pipelined) = match setup {
        Ok(out) if out.success() => {
            let text = out.stdout_lossy();
            let mut lines = text.lines();
            let dir = lines.next().unwrap_or_default().trim().to_owned();
            (dir, lines.any(|l| l.trim() == sh::PIPELINED))
        }
        Ok(out) => return all_direct(out.stderr_lossy().trim().to_owned()),
        Err(e) => return all_direct(e.to_string()),
    };
    let relay_cleanup = cleanups.add(relay, sh::relay_cleanup(&dir));
    let mut known_hosts = String::new();
    let mut dials = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let r = t.conn.resolved();
        let dial = Dial {
            host: r.host.clone(),
            port: r.port,
            user: r.user.clone(),
        };
        match t.conn.host_key() {
            _ if t.local => {}
            Some(k) => known_hosts.push_str(&sh::known_hosts_line(&dial.host, dial.port, k)),
            None => {
                results[i] = Some(Relayed::Direct(
                    "fleet's connection verified no host key to hand the relay".into(),
                ))
            }
        }
        known_hosts.push('\n');
        dials.push(dial);
    }
    let end = fleet_store::export::export_end(Some(zstd_level));
    for (file, bytes) in [("known_hosts", known_hosts.into_bytes()), ("end", end)] {
        let out = relay
            .exec(
                &sh::write_file(&dir, file),
                &Privilege::None,
                Stdin::Bytes(bytes.into()),
            )
            .await;
        let failed = match out {
            Ok(o) if o.success() => None,
            Ok(o) => Some(o.stderr_lossy().trim().to_owned()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = failed {
            cleanups.run(relay_cleanup).await;
            return all_direct(e);
        }
    }

    // Each host: its FIFO and line, then its root import reading the FIFO.
    let expiry = sh::utc_stamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            + KEY_LIFETIME_SECS,
    );
    let prepared = futures::future::join_all(targets.iter().enumerate().map(|(i, t)| {
        let skip = results[i].is_some() || t.missing.is_empty();
        let (expiry, key, id) = (&expiry, &key.public, &id);
        async move {
            if skip {
                return None;
            }
            if t.local {
                return Some(Ok(None));
            }
            Some(
                prepare_host(t, from, expiry, key, id, cleanups)
                    .await
                    .map(Some),
            )
        }
    }))
    .await;
    let mut hops = Vec::new();
    for (i, p) in prepared.into_iter().enumerate() {
        match p {
            Some(Ok(remote)) => hops.push((i, remote)),
            Some(Err(e)) => {
                on_direct(i, &e);
                results[i] = Some(Relayed::Direct(e));
            }
            None if results[i].is_none() => results[i] = Some(Relayed::Done(CopyDone::default())),
            None => {}
        }
    }

    // The segments of the hosts whose hop is ready, each once over the uplink.
    static NOTHING: BTreeSet<StorePath> = BTreeSet::new();
    let missing: Vec<&BTreeSet<StorePath>> = (0..targets.len())
        .map(|i| {
            if hops.iter().any(|(k, ..)| *k == i) {
                &targets[i].missing
            } else {
                &NOTHING
            }
        })
        .collect();
    let segments = plan_segments(infos, &missing);
    let hops: Vec<Hop> = hops
        .into_iter()
        .map(|(index, remote)| Hop {
            index,
            remote,
            segments: (0..segments.len())
                .filter(|&s| segments[s].members.contains(&index))
                .collect(),
            dial: dials[index].clone(),
        })
        .collect();
    let totals = super::totals(infos, targets.iter().map(|t| &t.missing));
    let (tx, rx) = watch::channel(Upload::Uploaded(0));
    let slots = tokio::sync::Semaphore::new(MAX_HOPS);
    let uploader = async {
        let mut have = vec![(0u64, 0u64); targets.len()];
        for (s, seg) in segments.iter().enumerate() {
            let uploaded =
                match upload(store, infos, seg.paths.clone(), relay, &dir, s, zstd_level).await {
                    // Whole: the pipelined hops may send the end after it.
                    Ok(()) => mark(relay, &dir, &sh::segment_ok(s)).await,
                    Err(e) => Err(e),
                };
            match uploaded {
                Ok(()) => {
                    let nar: u64 = infos
                        .iter()
                        .filter(|i| seg.paths.contains(&i.path))
                        .map(|i| i.nar_size)
                        .sum();
                    for &m in &seg.members {
                        have[m].0 += nar;
                        have[m].1 += seg.paths.len() as u64;
                        let _ = targets[m]
                            .events
                            .progress(have[m].0, totals[m].0, have[m].1, totals[m].1)
                            .await;
                    }
                    let _ = tx.send(Upload::Uploaded(s + 1));
                }
                Err(e) => {
                    let _ = tx.send(Upload::Failed(e));
                    // The pipelined hops stop waiting (best effort: the relay may be gone).
                    let _ = mark(relay, &dir, "abort").await;
                    return;
                }
            }
        }
    };
    let forwarders = futures::future::join_all(hops.into_iter().map(|hop| {
        let (rx, dir, slots) = (rx.clone(), &dir, &slots);
        let t = &targets[hop.index];
        let total = totals[hop.index];
        async move {
            let i = hop.index;
            let pipelined = (pipelined, slots);
            let r = forward(hop, t, relay, dir, rx, total, cleanups, pipelined).await;
            if let Relayed::Direct(why) = &r {
                on_direct(i, why);
            }
            if let Relayed::Done(done) = &r {
                let _ = t
                    .events
                    .emit(EventKind::Relayed {
                        relay: relay.name().to_owned(),
                    })
                    .await;
                on_copied(i, *done);
            }
            (i, r)
        }
    }));
    let ((), finished) = tokio::join!(uploader, forwarders);
    for (i, r) in finished {
        results[i] = Some(r);
    }
    cleanups.run(relay_cleanup).await;
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Relayed::Direct("not relayed".into())))
        .collect()
}

/// A host's side of the hop: the FIFO and the `authorized_keys` line (as the login user),
/// then the root import reading the FIFO (with the privilege, over fleet's own connection).
async fn prepare_host(
    t: &RelayTarget,
    from: &str,
    expiry: &str,
    public_key: &str,
    id: &str,
    cleanups: &Cleanups,
) -> Result<(u64, crate::RemoteProcess), String> {
    let out = t
        .conn
        .exec(
            &sh::host_setup(from, expiry, public_key, id),
            &Privilege::None,
            Stdin::None,
        )
        .await
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!(
            "preparing the hop on {}: {}",
            t.conn.name(),
            out.stderr_lossy().trim()
        ));
    }
    let dir = out.stdout_lossy().trim().to_owned();
    let cleanup = cleanups.add(&t.conn, sh::host_cleanup(&dir, id));
    let import = import_command(t.pending_roots.as_deref(), &t.missing);
    match t
        .conn
        .spawn(&sh::import_from_fifo(&dir, &import), &t.privilege)
        .await
    {
        Ok(p) => Ok((cleanup, p)),
        Err(e) => {
            cleanups.run(cleanup).await;
            Err(e.to_string())
        }
    }
}

/// Waits for the host's segments on the relay, runs the hop, and reads the import's end.
#[allow(clippy::too_many_arguments)]
async fn forward(
    hop: Hop,
    t: &RelayTarget,
    relay: &Connection,
    dir: &str,
    mut rx: watch::Receiver<Upload>,
    (total_bytes, total_paths): (u64, u64),
    cleanups: &Cleanups,
    (pipelined, slots): (bool, &tokio::sync::Semaphore),
) -> Relayed {
    let need = hop.segments.last().map_or(0, |s| s + 1);
    // A pipelined hop starts at once and follows the segments as they arrive.
    let pipe = pipelined && hop.remote.is_some();
    let waited = loop {
        if pipe {
            break Ok(());
        }
        let now = rx.borrow().clone();
        match now {
            Upload::Uploaded(k) if k >= need => break Ok(()),
            Upload::Failed(e) => break Err(e),
            Upload::Uploaded(_) => {}
        }
        if rx.changed().await.is_err() {
            break Err("the upload to the relay ended early".to_owned());
        }
    };
    let Some((cleanup, import)) = hop.remote else {
        return match waited {
            Err(e) => Relayed::Direct(e),
            Ok(()) => own_import(t, dir, &hop.segments, (total_bytes, total_paths)).await,
        };
    };
    // One of the relay connection's hop channels (never closed: acquiring cannot fail).
    let slot = slots.acquire().await.ok();
    let hop_result = match waited {
        Err(e) => Err(e),
        Ok(()) => match relay
            .exec(
                &if pipe {
                    sh::forward_pipelined(dir, &hop.segments, &hop.dial)
                } else {
                    sh::forward(dir, &hop.segments, &hop.dial)
                },
                &Privilege::None,
                Stdin::None,
            )
            .await
        {
            // The segments did not all arrive: why the upload stopped, if known.
            Ok(out) if out.stderr_lossy().contains(sh::INCOMPLETE) => {
                Err(upload_failure(&rx).unwrap_or_else(|| out.stderr_lossy().trim().to_owned()))
            }
            Ok(out) if out.success() => Ok(()),
            Ok(out) => Err(format!(
                "forwarding to {} failed (exit {}): {}",
                t.conn.name(),
                out.status.map_or("signal".into(), |s| s.to_string()),
                out.stderr_lossy().trim()
            )),
            Err(e) => Err(upload_failure(&rx).unwrap_or_else(|| e.to_string())),
        },
    };
    drop(slot);
    match hop_result {
        Err(e) => {
            // Wake the import still waiting on the FIFO, drop it, and remove the line.
            cleanups.run(cleanup).await;
            import.kill().await;
            Relayed::Direct(e)
        }
        Ok(()) => {
            let info = import.finish().await;
            cleanups.run(cleanup).await;
            match info {
                Ok(info) => {
                    let stderr = String::from_utf8_lossy(&info.stderr);
                    let status = (!info.success()).then_some((info.status, stderr.trim()));
                    import_ended(t, status, (total_bytes, total_paths)).await
                }
                Err(e) => Relayed::Failed(e.into()),
            }
        }
    }
}

/// Why the uploads to the relay stopped, if they did.
fn upload_failure(rx: &watch::Receiver<Upload>) -> Option<String> {
    match &*rx.borrow() {
        Upload::Failed(e) => Some(e.clone()),
        Upload::Uploaded(_) => None,
    }
}

/// The relay's own import, from the segment files it holds (with its privilege).
async fn own_import(
    t: &RelayTarget,
    dir: &str,
    segments: &[usize],
    (total_bytes, total_paths): (u64, u64),
) -> Relayed {
    let import = import_command(t.pending_roots.as_deref(), &t.missing);
    let out = t
        .conn
        .exec(
            &sh::import_from_files(dir, segments, &import),
            &t.privilege,
            Stdin::None,
        )
        .await;
    match out {
        Ok(o) => {
            let stderr = o.stderr_lossy();
            let status = (!o.success()).then_some((o.status, stderr.trim()));
            import_ended(t, status, (total_bytes, total_paths)).await
        }
        Err(e) => Relayed::Direct(e.to_string()),
    }
}

/// How a host's import ended: `failed` (its exit status and stderr) fails the host alone;
/// else its copy is done and its progress full.
async fn import_ended(
    t: &RelayTarget,
    failed: Option<(Option<u32>, &str)>,
    (total_bytes, total_paths): (u64, u64),
) -> Relayed {
    if let Some((status, stderr)) = failed {
        return Relayed::Failed(DeployError::Import {
            host: t.conn.name().to_owned(),
            status,
            stderr: stderr.to_owned(),
        });
    }
    let _ = t
        .events
        .progress(total_bytes, total_bytes, total_paths, total_paths)
        .await;
    Relayed::Done(CopyDone {
        paths: total_paths as usize,
        nar_bytes: total_bytes,
        wire_bytes: None,
    })
}

/// A marker file in the relay's folder.
async fn mark(relay: &Connection, dir: &str, name: &str) -> Result<(), String> {
    match relay
        .exec(&sh::mark(dir, name), &Privilege::None, Stdin::None)
        .await
    {
        Ok(o) if o.success() => Ok(()),
        Ok(o) => Err(o.stderr_lossy().trim().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// One segment, read and compressed once, into `DIR/s<N>` on the relay (a complete zstd
/// frame, no end marker: the hop appends the segments a host needs, then `end`).
async fn upload(
    store: &LocalStore,
    infos: &[PathInfo],
    paths: BTreeSet<StorePath>,
    relay: &Connection,
    dir: &str,
    n: usize,
    zstd_level: i32,
) -> Result<(), String> {
    let file = sh::segment_file(n);
    let proc = relay
        .spawn(&sh::segment_upload(dir, n), &Privilege::None)
        .await
        .map_err(|e| e.to_string())?;
    let (mut stdout, mut stdin, exit) = proc.into_parts();
    let (nar_tx, nar_rx) = mpsc::channel(64);
    let label = format!("relay {}", relay.name());
    let options = FanOutOptions::default();
    let producer = fan_out(
        store,
        infos,
        vec![Destination {
            label: label.clone(),
            missing: paths,
            tx: nar_tx,
        }],
        &options,
    );
    let write = async {
        let r = fleet_store::export::write_export_part(
            nar_rx,
            &mut stdin,
            Some(zstd_level),
            &label,
            false,
        )
        .await;
        let _ = stdin.shutdown().await;
        r
    };
    let drain = async {
        let mut sink = Vec::new();
        let _ = stdout.read_to_end(&mut sink).await;
    };
    let (_report, written, ()) = tokio::join!(producer, write, drain);
    drop(stdin);
    let info = exit.finish().await.map_err(|e| e.to_string())?;
    written.map_err(|e| e.to_string())?;
    if info.success() {
        Ok(())
    } else {
        Err(format!(
            "writing {dir}/{file} failed: {}",
            String::from_utf8_lossy(&info.stderr).trim()
        ))
    }
}
