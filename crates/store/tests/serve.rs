//! The serve client against the real `nix-store --serve --write` in private chroot stores.

mod common;

use std::collections::BTreeSet;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::{build_toy, TempStore};
use fleet_store::copy::{fan_out_serve, FanOutOptions};
use fleet_store::local::{self, LocalStore};
use fleet_store::serve::{AddEvent, NarMsg, ServeClient};
use fleet_store::{Error, PathInfo, StorePath};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(120);

async fn toy_infos(n: usize, tag: &str, kb: usize) -> Vec<PathInfo> {
    let top = build_toy(n, tag, kb);
    let infos = local::closure_infos(&LocalStore::system(), &[top])
        .await
        .unwrap();
    assert_eq!(infos.len(), n);
    infos
}

fn paths(infos: &[PathInfo]) -> Vec<StorePath> {
    infos.iter().map(|i| i.path.clone()).collect()
}

#[tokio::test]
async fn local_queries_match_nix_store() {
    let infos = toy_infos(4, "small", 1).await;
    // References come before referrers.
    for (k, i) in infos.iter().enumerate() {
        for r in &i.references {
            if r != &i.path {
                assert!(
                    infos[..k].iter().any(|j| &j.path == r),
                    "{} before {}",
                    r,
                    i.path
                );
            }
        }
        assert_eq!(i.nar_hash, common::query_hash(None, &i.path));
        let (h, size) =
            fleet_store::nar::nar_hash(&LocalStore::system().real_path(&i.path)).unwrap();
        assert_eq!((h, size), (i.nar_hash.clone(), i.nar_size));
        assert!(i.deriver.as_ref().unwrap().name().ends_with(".drv"));
    }
    let c = local::closure(&LocalStore::system(), &[infos[3].path.clone()])
        .await
        .unwrap();
    assert_eq!(c, paths(&infos).into_iter().collect());
    let pi = local::path_infos(&LocalStore::system(), &paths(&infos))
        .await
        .unwrap();
    assert_eq!(local::topo_sort(pi).unwrap(), infos);
}

#[tokio::test]
async fn handshake_query_copy_verify_and_nothing_twice() {
    let infos = toy_infos(4, "small", 1).await;
    let dst = TempStore::new();
    let mut s = dst.store().serve(true).await.unwrap();
    assert_eq!(s.client().version(), 0x207);
    let all = paths(&infos);
    let valid = s
        .client()
        .query_valid_paths(&all, true, false)
        .await
        .unwrap();
    assert!(valid.is_empty());
    let mut events = Vec::new();
    let sum = tokio::time::timeout(
        T,
        s.client()
            .add_paths(&infos, &LocalStore::system(), &mut |e| events.push(e)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(sum.paths, 4);
    assert_eq!(sum.nar_bytes, infos.iter().map(|i| i.nar_size).sum::<u64>());
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, AddEvent::Acked { .. }))
            .count(),
        4
    );
    let valid = s
        .client()
        .query_valid_paths(&all, false, false)
        .await
        .unwrap();
    assert_eq!(valid.len(), 4);
    // The destination reports the same infos.
    let mut remote = s.client().query_path_infos(&all).await.unwrap();
    remote.sort_by(|a, b| a.path.cmp(&b.path));
    let mut local_sorted = infos.clone();
    local_sorted.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(remote.len(), 4);
    for (a, b) in remote.iter().zip(&local_sorted) {
        assert_eq!(
            (&a.path, &a.nar_hash, a.nar_size, &a.references, &a.deriver),
            (&b.path, &b.nar_hash, b.nar_size, &b.references, &b.deriver)
        );
    }
    s.finish().await.unwrap();
    for i in &infos {
        dst.verify(&i.path);
        assert_eq!(dst.hash(&i.path), i.nar_hash);
    }
    // Second round: everything present, nothing copied.
    let mut s = dst.store().serve(true).await.unwrap();
    let valid = s
        .client()
        .query_valid_paths(&all, true, false)
        .await
        .unwrap();
    let missing: Vec<PathInfo> = infos
        .iter()
        .filter(|i| !valid.contains(&i.path))
        .cloned()
        .collect();
    assert!(missing.is_empty());
    let sum = s
        .client()
        .add_paths(&missing, &LocalStore::system(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(sum.paths, 0);
    s.finish().await.unwrap();
}

#[tokio::test]
async fn truncated_stream_registers_nothing() {
    let infos = toy_infos(4, "small", 1).await;
    let dst = TempStore::new();
    let mut s = dst.store().serve(true).await.unwrap();
    s.client()
        .add_paths(&infos[..3], &LocalStore::system(), &mut |_| {})
        .await
        .unwrap();
    // Now the top path: half its NAR, then the source fails.
    let top = infos[3].clone();
    let mut nar = Vec::new();
    fleet_store::nar::dump(&LocalStore::system().real_path(&top.path), &mut nar).unwrap();
    let (tx, rx) = mpsc::channel(8);
    tx.send(NarMsg::Start(Arc::new(top.clone()))).await.unwrap();
    tx.send(NarMsg::Chunk(nar[..nar.len() / 2].to_vec().into()))
        .await
        .unwrap();
    tx.send(NarMsg::Fail(Error::Cancelled {
        host: "test".into(),
    }))
    .await
    .unwrap();
    drop(tx);
    let err = tokio::time::timeout(T, s.client().add_stream(rx, &mut |_| {}))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err}");
    let fin = s.finish().await.unwrap_err();
    assert!(
        matches!(&fin, Error::RemoteFailed { stderr, .. } if stderr.contains("end")),
        "{fin}"
    );
    assert!(!dst.is_valid(&top.path), "nothing partial registered");
    for i in &infos[..3] {
        dst.verify(&i.path);
    }
    // Nix may leave the unregistered partial directory on disk (GC removes it); a later
    // copy replaces it.
    eprintln!(
        "partial directory left on disk: {}",
        dst.exists_on_disk(&top.path)
    );
    let mut s = dst.store().serve(true).await.unwrap();
    s.client()
        .add_paths(&infos[3..], &LocalStore::system(), &mut |_| {})
        .await
        .unwrap();
    s.finish().await.unwrap();
    dst.verify(&top.path);
    assert_eq!(dst.hash(&top.path), top.nar_hash);

    // The server dies in the middle of a stream: an error, not a hang; what was acknowledged is
    // valid and nothing after it is. The requests are pipelined, so the server may have
    // acknowledged a few more paths than the two seen when it was killed: a closure large
    // enough (12 × 256 KiB) that it cannot have taken all of it.
    let infos = toy_infos(12, "killed", 256).await;
    let dst = TempStore::new();
    let mut s = dst.store().serve(true).await.unwrap();
    let pid = s.pid().unwrap();
    let mut killed = false;
    let err = tokio::time::timeout(
        T,
        s.client()
            .add_paths(&infos, &LocalStore::system(), &mut |e| {
                if matches!(e, AddEvent::Acked { done: 2, .. }) && !killed {
                    killed = true;
                    std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status()
                        .unwrap();
                }
            }),
    )
    .await
    .expect("no hang")
    .unwrap_err();
    let err = s.explain(err, "copying").await;
    let Error::CopyFailed {
        acknowledged,
        source,
        ..
    } = &err
    else {
        panic!("expected CopyFailed, got {err:?}");
    };
    assert!(matches!(**source, Error::RemoteFailed { .. }), "{err:?}");
    assert!(
        (2..infos.len()).contains(acknowledged),
        "acknowledged {acknowledged} of {}",
        infos.len()
    );
    for i in &infos[..*acknowledged] {
        dst.verify(&i.path);
    }
    assert!(!dst.is_valid(&infos[infos.len() - 1].path));
}

#[tokio::test]
async fn export_stream_into_nix_store_import_with_and_without_zstd() {
    let infos = toy_infos(4, "small", 1).await;
    // Sync writer, no compression.
    let dst = TempStore::new();
    let mut child = std::process::Command::new("nix-store")
        .env("NIX_CONFIG", common::NIX_CONFIG)
        .args(["--store", &dst.arg(), "--import"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    fleet_store::export::write_export(child.stdin.take().unwrap(), &infos, &LocalStore::system())
        .unwrap();
    assert!(child.wait().unwrap().success());
    for i in &infos {
        dst.verify(&i.path);
        assert_eq!(dst.hash(&i.path), i.nar_hash);
    }
    // Async writer, zstd, `zstd -dc | nix-store --import`, fed by fan-out.
    let dst = TempStore::new();
    let mut child = tokio::process::Command::new("sh")
        .env("NIX_CONFIG", common::NIX_CONFIG)
        .args([
            "-c",
            &format!("zstd -dc | nix-store --store {} --import", dst.arg()),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel(16);
    let dests = vec![fleet_store::copy::Destination {
        label: "zstd".into(),
        missing: paths(&infos).into_iter().collect(),
        tx,
    }];
    let (sys, opts) = (LocalStore::system(), FanOutOptions::default());
    let (_, res) = tokio::join!(
        fleet_store::copy::fan_out(&sys, &infos, dests, &opts),
        fleet_store::export::write_export_stream(rx, stdin, Some(3), "zstd")
    );
    let (n, wire) = res.unwrap();
    assert_eq!(n, 4);
    assert!(wire < infos.iter().map(|i| i.nar_size).sum::<u64>());
    assert!(child.wait().await.unwrap().success());
    for i in &infos {
        dst.verify(&i.path);
    }
}

/// Counts protocol turnarounds: a read that completes after the client flushed (= the client
/// waited for a reply to what it had sent).
#[derive(Default)]
struct Turns {
    flushed: AtomicBool,
    turnarounds: AtomicUsize,
    flushes: AtomicUsize,
}

struct CountR<R>(R, Arc<Turns>);
struct CountW<W>(W, Arc<Turns>);

impl<R: AsyncRead + Unpin> AsyncRead for CountR<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.0).poll_read(cx, buf);
        if r.is_ready() && self.1.flushed.swap(false, Ordering::SeqCst) {
            self.1.turnarounds.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for CountW<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.0).poll_flush(cx);
        if r.is_ready() {
            self.1.flushed.store(true, Ordering::SeqCst);
            self.1.flushes.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn two_hundred_paths_in_constant_round_trips() {
    let t0 = Instant::now();
    let infos = toy_infos(200, "big", 100).await;
    eprintln!("closure + infos of 200 paths: {:?}", t0.elapsed());
    let dst = TempStore::new();
    let mut child = tokio::process::Command::new("nix-store")
        .env("NIX_CONFIG", common::NIX_CONFIG)
        .args(["--store", &dst.arg(), "--serve", "--write"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let turns = Arc::new(Turns::default());
    let r = CountR(child.stdout.take().unwrap(), turns.clone());
    let w = CountW(child.stdin.take().unwrap(), turns.clone());
    let t1 = Instant::now();
    let mut c = ServeClient::handshake(r, w, "dst").await.unwrap();
    let all = paths(&infos);
    let valid = c.query_valid_paths(&all, true, false).await.unwrap();
    assert!(valid.is_empty());
    let sum = tokio::time::timeout(T, c.add_paths(&infos, &LocalStore::system(), &mut |_| {}))
        .await
        .unwrap()
        .unwrap();
    let valid = c.query_valid_paths(&all, false, false).await.unwrap();
    let dt = t1.elapsed();
    assert_eq!(valid.len(), 200);
    assert_eq!(sum.paths, 200);
    let turnarounds = turns.turnarounds.load(Ordering::SeqCst);
    eprintln!(
        "copied 200 paths, {} MiB NAR in {:?} ({:.1} MiB/s); turnarounds {turnarounds}, flushes {}",
        sum.nar_bytes / (1 << 20),
        dt,
        sum.nar_bytes as f64 / (1 << 20) as f64 / dt.as_secs_f64(),
        turns.flushes.load(Ordering::SeqCst)
    );
    // handshake, QueryValidPaths, the whole AddToStoreNar batch, QueryValidPaths: at most 4,
    // whatever the number of paths.
    assert!(turnarounds <= 4, "{turnarounds} turnarounds");
    c.shutdown().await.unwrap();
    drop(c); // tokio's ChildStdin closes on drop, not on shutdown
    assert!(child.wait().await.unwrap().success());
    for i in [&infos[0], &infos[100], &infos[199]] {
        dst.verify(&i.path);
        assert_eq!(dst.hash(&i.path), i.nar_hash);
    }
}

#[tokio::test]
async fn fan_out_reads_each_path_once() {
    let infos = toy_infos(4, "small", 1).await;
    let all = paths(&infos);
    let (a, b, c) = (TempStore::new(), TempStore::new(), TempStore::new());
    // b already has the first two paths.
    let mut sb = b.store().serve(true).await.unwrap();
    sb.client()
        .add_paths(&infos[..2], &LocalStore::system(), &mut |_| {})
        .await
        .unwrap();
    sb.finish().await.unwrap();

    let mut servers = vec![
        a.store().serve(true).await.unwrap(),
        b.store().serve(true).await.unwrap(),
        c.store().serve(true).await.unwrap(),
    ];
    let mut missing = Vec::new();
    for s in servers.iter_mut() {
        let v = s
            .client()
            .query_valid_paths(&all, true, false)
            .await
            .unwrap();
        missing.push(
            all.iter()
                .filter(|p| !v.contains(*p))
                .cloned()
                .collect::<BTreeSet<_>>(),
        );
    }
    assert_eq!(
        missing.iter().map(|m| m.len()).collect::<Vec<_>>(),
        vec![4, 2, 4]
    );
    let acked = std::sync::Mutex::new(vec![0usize; 3]);
    let targets = servers
        .iter_mut()
        .map(|s| s.client())
        .zip(missing)
        .collect();
    let (report, results) = tokio::time::timeout(
        T,
        fan_out_serve(
            &LocalStore::system(),
            &infos,
            targets,
            &FanOutOptions::default(),
            &|i, e| {
                if let AddEvent::Acked { .. } = e {
                    acked.lock().unwrap()[i] += 1;
                }
            },
            |_, _| async {},
        ),
    )
    .await
    .unwrap();
    for r in results {
        r.unwrap();
    }
    assert_eq!(*acked.lock().unwrap(), vec![4, 2, 4]);
    assert_eq!(report.shared_paths_read, 4, "each path read once");
    assert_eq!(
        report.shared_bytes_read,
        infos.iter().map(|i| i.nar_size).sum::<u64>()
    );
    assert!(report.dests.iter().all(|d| !d.detached && !d.gone));
    for s in servers {
        s.finish().await.unwrap();
    }
    for st in [&a, &b, &c] {
        for i in &infos {
            st.verify(&i.path);
        }
    }
}

#[tokio::test]
async fn truncated_export_stream_registers_nothing() {
    let infos = toy_infos(4, "small", 1).await;
    let dst = TempStore::new();
    let mut child = tokio::process::Command::new("sh")
        .env("NIX_CONFIG", common::NIX_CONFIG)
        .args([
            "-c",
            &format!("zstd -dc | nix-store --store {} --import", dst.arg()),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel(16);
    let top = infos[3].clone();
    let mut nar = Vec::new();
    fleet_store::nar::dump(&LocalStore::system().real_path(&top.path), &mut nar).unwrap();
    let feeder = async move {
        tx.send(NarMsg::Start(Arc::new(top.clone()))).await.unwrap();
        tx.send(NarMsg::Chunk(nar[..nar.len() / 2].to_vec().into()))
            .await
            .unwrap();
        tx.send(NarMsg::Fail(Error::Cancelled {
            host: "test".into(),
        }))
        .await
        .unwrap();
    };
    let (_, res) = tokio::join!(
        feeder,
        fleet_store::export::write_export_stream(rx, stdin, Some(3), "zstd")
    );
    assert!(matches!(res, Err(Error::Cancelled { .. })));
    assert!(!tokio::time::timeout(T, child.wait())
        .await
        .unwrap()
        .unwrap()
        .success());
    assert!(!dst.is_valid(&infos[3].path));
    assert!(!dst.exists_on_disk(&infos[3].path));
}
