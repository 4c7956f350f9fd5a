//! Fan-out policy: a slow destination is detached and served by its own reader, without
//! stalling the others, and still gets byte-exact NARs.

mod common;

use std::time::Duration;

use fleet_store::copy::{fan_out, Destination, FanOutOptions};
use fleet_store::local::{self, LocalStore};
use fleet_store::serve::NarMsg;
use fleet_store::{nar, PathInfo, StorePath};
use tokio::sync::mpsc;

async fn collect(
    mut rx: mpsc::Receiver<NarMsg>,
    delay: Duration,
) -> (Vec<(StorePath, Vec<u8>)>, std::time::Instant) {
    let mut out: Vec<(StorePath, Vec<u8>)> = Vec::new();
    while let Some(m) = rx.recv().await {
        tokio::time::sleep(delay).await;
        match m {
            NarMsg::Start(i) => out.push((i.path.clone(), Vec::new())),
            NarMsg::Chunk(b) => out.last_mut().unwrap().1.extend_from_slice(&b),
            NarMsg::End => {}
            NarMsg::Fail(e) => panic!("{e}"),
        }
    }
    (out, std::time::Instant::now())
}

/// A 4-path toy closure (`tag` makes it distinct) and two destinations lacking all of it,
/// `fast` and `slow`, with one-message channels.
async fn fast_and_slow(
    tag: &str,
) -> (
    Vec<PathInfo>,
    Vec<Destination>,
    mpsc::Receiver<NarMsg>,
    mpsc::Receiver<NarMsg>,
) {
    let top = common::build_toy(4, tag, 1);
    let infos: Vec<PathInfo> = local::closure_infos(&LocalStore::system(), &[top])
        .await
        .unwrap();
    let all: std::collections::BTreeSet<StorePath> = infos.iter().map(|i| i.path.clone()).collect();
    let (fast_tx, fast_rx) = mpsc::channel(1);
    let (slow_tx, slow_rx) = mpsc::channel(1);
    let dests = vec![
        Destination {
            label: "fast".into(),
            missing: all.clone(),
            tx: fast_tx,
        },
        Destination {
            label: "slow".into(),
            missing: all,
            tx: slow_tx,
        },
    ];
    (infos, dests, fast_rx, slow_rx)
}

/// `got` holds every path of `infos`, in order, each NAR byte for byte what `nix-store --dump`
/// gives.
fn assert_exact(got: &[(StorePath, Vec<u8>)], infos: &[PathInfo], store: &LocalStore) {
    assert_eq!(got.len(), infos.len());
    for ((p, bytes), info) in got.iter().zip(infos) {
        assert_eq!(p, &info.path);
        let mut want = Vec::new();
        nar::dump(&store.real_path(p), &mut want).unwrap();
        assert!(bytes == &want, "NAR of {p} differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_destination_is_detached_and_still_exact() {
    let (infos, dests, fast_rx, slow_rx) = fast_and_slow("small").await;
    let opts = FanOutOptions {
        buffer_chunks: 1,
        detach_after: Duration::from_millis(20),
    };
    let store = LocalStore::system();
    let fast = tokio::spawn(collect(fast_rx, Duration::ZERO));
    let slow = tokio::spawn(collect(slow_rx, Duration::from_millis(100)));
    let t = std::time::Instant::now();
    let report = fan_out(&store, &infos, dests, &opts).await;
    let producer_done = t.elapsed();
    let (fast, fast_end) = fast.await.unwrap();
    let fast_done = fast_end - t;
    let (slow, slow_end) = slow.await.unwrap();
    eprintln!(
        "fast done after {fast_done:?}, slow after {:?}, producer {producer_done:?}",
        slow_end - t
    );
    assert!(
        report.dests[1].detached && !report.dests[0].detached,
        "{report:?}"
    );
    assert!(
        fast_done < Duration::from_millis(1000),
        "fast destination was stalled: {fast_done:?} (producer {producer_done:?})"
    );
    for got in [&fast, &slow] {
        assert_exact(got, &infos, &store);
    }
    assert_eq!(report.dests[1].paths, 4);
    assert_eq!(
        report.dests[1].nar_bytes,
        infos.iter().map(|i| i.nar_size).sum::<u64>()
    );
}

/// A destination that keeps taking messages, one at a time, but slower than the others: each
/// single wait is shorter than `detach_after`, yet its channel is never empty again. It is
/// detached too (before, only a destination blocked for `detach_after` on a single message
/// was, so a steadily slow host held the whole group to its pace: found by the e2e test
/// `a_very_slow_host_does_not_hold_back_the_others_over_the_serve_protocol`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steadily_slow_destination_is_detached_too() {
    let (infos, dests, fast_rx, slow_rx) = fast_and_slow("steady").await;
    // Every single wait for the slow one (20 ms) is well under `detach_after`.
    let opts = FanOutOptions {
        buffer_chunks: 1,
        detach_after: Duration::from_millis(60),
    };
    let store = LocalStore::system();
    let fast = tokio::spawn(collect(fast_rx, Duration::ZERO));
    let slow = tokio::spawn(collect(slow_rx, Duration::from_millis(20)));
    let report = fan_out(&store, &infos, dests, &opts).await;
    let (fast, _) = fast.await.unwrap();
    let (slow, _) = slow.await.unwrap();
    assert!(
        report.dests[1].detached && !report.dests[0].detached,
        "{report:?}"
    );
    for got in [&fast, &slow] {
        assert_exact(got, &infos, &store);
    }
}
