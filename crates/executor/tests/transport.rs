//! The adaptive transport against the simulated fleet: each host's link is measured, its zstd
//! level follows, its cipher is what both ends prefer, and each host says so in a `transport`
//! event; hosts on different levels still get every path intact. Needs root and namespaces.

mod simulated;

use std::collections::BTreeSet;
use std::time::Instant;

use fleet_executor::copy::{adaptive, LevelChoice};
use fleet_executor::deploy;
use fleet_executor::*;
use fleet_store::local::{closure_infos, LocalStore};
use fleet_store::StorePath;
use fleet_testbed::{HostSpec, Testbed};
use simulated::{connector, target};

/// A small closure the deployer has: the stand-in's `hello`-like package built for the test.
async fn some_closure(tb: &Testbed) -> Vec<fleet_store::PathInfo> {
    let out = tokio::process::Command::new("nix-build")
        .args(["--no-out-link", "-A", "git"])
        .arg(fleet_testbed::nixpkgs_standin())
        .envs(tb.nix_env())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    closure_infos(&LocalStore::system(), &[StorePath::new(&path).unwrap()])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_reports_the_level_its_link_gets_and_its_cipher() {
    let tb = Testbed::start([HostSpec::new("fast"), HostSpec::new("slow").rate_mbit(4)]).unwrap();
    let infos = some_closure(&tb).await;
    let all: BTreeSet<StorePath> = infos.iter().map(|i| i.path.clone()).collect();
    let c = connector(&tb);
    // The fast host is an x86_64 host (AES-GCM preferred), the slow one a Pi (ChaCha20).
    let fast = c
        .connect(&SshTarget {
            host_aes: true,
            ..target(&tb, "fast")
        })
        .await
        .unwrap();
    let slow = c.connect(&target(&tb, "slow")).await.unwrap();
    let (sink, mut rx) = EventSink::channel(4096);
    let ev = |h: &str| HostEvents::new(h, Instant::now(), sink.clone(), CancellationToken::new());
    let targets = vec![
        deploy::ImportTarget {
            pending_roots: None,
            measured: None,
            conn: &fast,
            privilege: &Privilege::None,
            missing: all.clone(),
            events: ev("fast"),
        },
        deploy::ImportTarget {
            pending_roots: None,
            measured: None,
            conn: &slow,
            privilege: &Privilege::None,
            missing: all.clone(),
            events: ev("slow"),
        },
    ];
    let started = Instant::now();
    let results = deploy::copy_compressed(
        &LocalStore::system(),
        &infos,
        targets,
        LevelChoice::Adaptive {
            default: 3,
            probe_from: 0,
        },
    )
    .await;
    eprintln!("copy with probes: {:.2} s", started.elapsed().as_secs_f64());
    drop(sink);
    for r in results {
        assert_eq!(r.expect("compressed copy").paths, all.len());
    }
    let mut seen = std::collections::BTreeMap::new();
    while let Ok(e) = rx.try_recv() {
        if let EventKind::Transport {
            zstd_level,
            cipher,
            measured_bytes_per_s,
        } = e.kind
        {
            eprintln!(
                "{}: zstd {zstd_level:?}, {cipher}, {measured_bytes_per_s:?} B/s",
                e.host
            );
            assert!(seen
                .insert(e.host.clone(), (zstd_level, cipher, measured_bytes_per_s))
                .is_none());
        }
    }
    let (fl, fc, fr) = seen.remove("fast").expect("fast reported its transport");
    let (sl, sc, sr) = seen.remove("slow").expect("slow reported its transport");
    let (fr, sr) = (fr.expect("fast measured"), sr.expect("slow measured"));
    // 4 Mbit/s is 0.5 MB/s; tc's burst and the socket buffers let a little more through.
    assert!(sr < adaptive::SLOW_LINK, "slow link measured at {sr} B/s");
    assert!(fr > 4 * sr, "fast {fr} B/s against slow {sr} B/s");
    assert_eq!(sl, Some(6), "a 4 Mbit/s link gets level 6");
    // A fast link on the compressed route (the apply would have given it the uncompressed
    // serve stream, `route.rs`): level 3.
    assert_eq!(fl, Some(3));
    assert_eq!(
        adaptive::link_use(Some(fr), 3),
        adaptive::LinkUse::Uncompressed,
        "fast link measured at {fr} B/s"
    );
    assert_eq!(fc, "aes256-gcm@openssh.com");
    assert_eq!(fc, fast.cipher());
    assert_eq!(sc, "chacha20-poly1305@openssh.com");
    // Two levels, two compressions of one segment: both hosts hold valid paths.
    for h in ["fast", "slow"] {
        for p in &all {
            tb.exec_ok(h, &format!("nix-store --verify-path {p}"))
                .unwrap();
        }
    }
    tb.teardown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_level_measures_nothing() {
    let tb = Testbed::start([HostSpec::new("h")]).unwrap();
    let infos = some_closure(&tb).await;
    let all: BTreeSet<StorePath> = infos.iter().map(|i| i.path.clone()).collect();
    let conn = connector(&tb).connect(&target(&tb, "h")).await.unwrap();
    let (sink, mut rx) = EventSink::channel(4096);
    let targets = vec![deploy::ImportTarget {
        pending_roots: None,
        measured: None,
        conn: &conn,
        privilege: &Privilege::None,
        missing: all,
        events: HostEvents::new("h", Instant::now(), sink.clone(), CancellationToken::new()),
    }];
    let r = deploy::copy_compressed(&LocalStore::system(), &infos, targets, 2).await;
    r.into_iter().next().unwrap().expect("copy");
    drop(sink);
    let mut transports = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let EventKind::Transport { .. } = e.kind {
            transports.push(e.kind);
        }
    }
    assert_eq!(
        transports,
        vec![EventKind::Transport {
            zstd_level: Some(2),
            cipher: "chacha20-poly1305@openssh.com".into(),
            measured_bytes_per_s: None,
        }]
    );
    tb.teardown().unwrap();
}
