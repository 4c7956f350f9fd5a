//! The compressed copy against the simulated fleet, with systems built by fleet-nix-build from
//! the nixpkgs stand-in: each path read once for every host, each host getting exactly what it
//! lacks, and what it imported rooted until activation. Needs root and namespaces; never skipped.

mod simulated;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use camino::Utf8PathBuf;
use fleet_executor::deploy::{self};
use fleet_executor::*;
use fleet_store::local::{closure_infos, LocalStore};
use fleet_store::StorePath;
use fleet_testbed::{HostSpec, Testbed};
use simulated::{build, connector, copy, sh, target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_copy_reads_once_and_imports_on_every_host() {
    let tb = Testbed::start([HostSpec::new("h1"), HostSpec::new("h2")]).unwrap();
    let dir = Utf8PathBuf::from_path_buf(tempfile::tempdir().unwrap().keep()).unwrap();
    let c = connector(&tb);
    let (_top, pkg) = build(
        &tb,
        &dir,
        "h",
        "{ pkgs, ... }: { environment.systemPackages = [ pkgs.git pkgs.htop ]; }",
    )
    .await;
    let store = LocalStore::system();
    let infos = closure_infos(&store, &[StorePath::new(&pkg).unwrap()])
        .await
        .unwrap();
    let all: BTreeSet<StorePath> = infos.iter().map(|i| i.path.clone()).collect();
    let c1 = c.connect(&target(&tb, "h1")).await.unwrap();
    let c2 = c.connect(&target(&tb, "h2")).await.unwrap();
    let ev = |h: &str| {
        HostEvents::new(
            h,
            Instant::now(),
            EventSink::discard(),
            CancellationToken::new(),
        )
    };
    let targets = vec![
        deploy::ImportTarget {
            pending_roots: None,
            measured: None,
            conn: &c1,
            privilege: &Privilege::None,
            missing: all.clone(),
            events: ev("h1"),
        },
        deploy::ImportTarget {
            pending_roots: None,
            measured: None,
            conn: &c2,
            privilege: &Privilege::None,
            missing: all.clone(),
            events: ev("h2"),
        },
    ];
    let results = deploy::copy_compressed(&store, &infos, targets, 3).await;
    let nar: u64 = infos.iter().map(|i| i.nar_size).sum();
    for r in results {
        let done = r.expect("compressed copy");
        assert_eq!(done.paths, all.len());
        let wire = done.wire_bytes.unwrap();
        eprintln!(
            "{} paths, {nar} bytes of NAR, {wire} bytes sent",
            done.paths
        );
        assert!(wire < nar, "compressed: {wire} < {nar}");
    }
    for h in ["h1", "h2"] {
        for p in &all {
            sh(&tb, h, &format!("nix-store --verify-path {p}")).await;
        }
        let local = infos
            .iter()
            .find(|i| i.path.as_str() == pkg)
            .unwrap()
            .nar_hash
            .clone();
        let remote = sh(&tb, h, &format!("nix-store -q --hash {pkg}")).await;
        assert_eq!(remote, local, "same NAR hash on {h}");
    }
}

/// Hosts that lack different sets of paths (their own systems, a shared part, one host already
/// holding some of it) each get exactly what they lack, in an order their import accepts, and
/// the shared part is compressed once: fewer bytes per host than the compressed closure when
/// hosts get it separately.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_copy_of_different_missing_sets() {
    let tb = Testbed::start([
        HostSpec::new("h1"),
        HostSpec::new("h2"),
        HostSpec::new("h3"),
    ])
    .unwrap();
    let dir = Utf8PathBuf::from_path_buf(tempfile::tempdir().unwrap().keep()).unwrap();
    let c = connector(&tb);
    let mut packages = Vec::new();
    for (h, pkgs) in [
        ("h1", "pkgs.git pkgs.htop"),
        ("h2", "pkgs.git pkgs.tmux"),
        ("h3", "pkgs.jq"),
    ] {
        let (_top, pkg) = build(
            &tb,
            &dir,
            h,
            &format!(
                "{{ pkgs, ... }}: {{ networking.hostName = \"{h}\"; environment.systemPackages = [ {pkgs} ]; }}"
            ),
        )
        .await;
        packages.push(pkg);
    }
    let store = LocalStore::system();
    let roots: Vec<StorePath> = packages
        .iter()
        .map(|p| StorePath::new(p).unwrap())
        .collect();
    let infos = closure_infos(&store, &roots).await.unwrap();
    let mut closures = Vec::new();
    for root in &roots {
        closures.push(
            closure_infos(&store, std::slice::from_ref(root))
                .await
                .unwrap()
                .into_iter()
                .map(|i| i.path)
                .collect::<BTreeSet<StorePath>>(),
        );
    }
    // h3 already holds git's closure (copied over the serve protocol first).
    let conns = [
        c.connect(&target(&tb, "h1")).await.unwrap(),
        c.connect(&target(&tb, "h2")).await.unwrap(),
        c.connect(&target(&tb, "h3")).await.unwrap(),
    ];
    let git = infos
        .iter()
        .find(|i| i.path.name().starts_with("git-"))
        .expect("git in the closure")
        .path
        .clone();
    copy(&conns[2], git.as_str()).await;
    let git_closure: BTreeSet<StorePath> = closure_infos(&store, &[git])
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.path)
        .collect();
    let mut missing = closures.clone();
    missing[2] = closures[2].difference(&git_closure).cloned().collect();
    // h3 lacks its own system and h1's, except git's closure, which it holds.
    missing[2].extend(closures[0].difference(&git_closure).cloned());
    let ev = |h: &str| {
        HostEvents::new(
            h,
            Instant::now(),
            EventSink::discard(),
            CancellationToken::new(),
        )
    };
    let targets: Vec<deploy::ImportTarget> = conns
        .iter()
        .zip(&missing)
        .zip(["h1", "h2", "h3"])
        .map(|((conn, m), h)| deploy::ImportTarget {
            pending_roots: None,
            measured: None,
            conn,
            privilege: &Privilege::None,
            missing: m.clone(),
            events: ev(h),
        })
        .collect();
    let results = deploy::copy_compressed(&store, &infos, targets, 3).await;
    for ((r, m), h) in results.into_iter().zip(&missing).zip(["h1", "h2", "h3"]) {
        let done = r.unwrap_or_else(|e| panic!("{h}: {e}"));
        assert_eq!(done.paths, m.len(), "{h}");
        for p in m {
            sh(&tb, h, &format!("nix-store --verify-path {p}")).await;
            let local = infos
                .iter()
                .find(|i| &i.path == p)
                .unwrap()
                .nar_hash
                .clone();
            assert_eq!(
                sh(&tb, h, &format!("nix-store -q --hash {p}")).await,
                local,
                "{h}: {p}"
            );
        }
    }
    // h2 never got h1's system.
    let h1_only: Vec<&StorePath> = closures[0].difference(&closures[1]).collect();
    assert!(!h1_only.is_empty());
    for p in h1_only {
        let out = tb
            .exec("h2", &format!("nix-store --check-validity {p}"))
            .unwrap();
        assert!(!out.status.success(), "h2 got {p}");
    }
}

/// What `nix-store --import` adds is unreferenced once it exits, and a garbage collection before
/// the profile holds it would take it: the compressed copy roots the paths under
/// `fleet-pending/<id>` first. h1 gets the roots; h2, the control, does not (the collection
/// takes its paths, proving the collection would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_paths_stay_rooted_until_the_pending_roots_are_dropped() {
    let tb = Testbed::start([HostSpec::new("h1"), HostSpec::new("h2")]).unwrap();
    let dir = Utf8PathBuf::from_path_buf(tempfile::tempdir().unwrap().keep()).unwrap();
    let c = connector(&tb);
    let (_top, pkg) = build(
        &tb,
        &dir,
        "h",
        "{ pkgs, ... }: { environment.systemPackages = [ pkgs.jq ]; }",
    )
    .await;
    let store = LocalStore::system();
    let infos = closure_infos(&store, &[StorePath::new(&pkg).unwrap()])
        .await
        .unwrap();
    let all: BTreeSet<StorePath> = infos.iter().map(|i| i.path.clone()).collect();
    let c1 = c.connect(&target(&tb, "h1")).await.unwrap();
    let c2 = c.connect(&target(&tb, "h2")).await.unwrap();
    let ev = |h: &str| {
        HostEvents::new(
            h,
            Instant::now(),
            EventSink::discard(),
            CancellationToken::new(),
        )
    };
    let id = deploy::deployment_id();
    let targets = vec![
        deploy::ImportTarget {
            pending_roots: Some(id.clone()),
            measured: None,
            conn: &c1,
            privilege: &Privilege::None,
            missing: all.clone(),
            events: ev("h1"),
        },
        deploy::ImportTarget {
            pending_roots: None,
            measured: None,
            conn: &c2,
            privilege: &Privilege::None,
            missing: all.clone(),
            events: ev("h2"),
        },
    ];
    for r in deploy::copy_compressed(&store, &infos, targets, 3).await {
        r.expect("compressed copy");
    }
    let valid = |h: &'static str| {
        let (tb, all) = (&tb, &all);
        async move {
            let mut n = 0;
            for p in all {
                if sh(
                    tb,
                    h,
                    &format!("nix-store --check-validity {p} 2>/dev/null && echo y || true"),
                )
                .await
                    == "y"
                {
                    n += 1;
                }
            }
            n
        }
    };
    // The import's own process may still hold temporary roots for a moment after the copy
    // returned: collect until what can go is gone (at most ~10 s).
    let collect_until_none_left = |h: &'static str| {
        let (tb, valid) = (&tb, &valid);
        async move {
            for _ in 0..20 {
                tb.collect_garbage(h, "-d").unwrap();
                if valid(h).await == 0 {
                    return 0;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            valid(h).await
        }
    };
    tb.collect_garbage("h1", "-d").unwrap();
    assert_eq!(
        collect_until_none_left("h2").await,
        0,
        "the control: all of it collected"
    );
    tb.collect_garbage("h1", "-d").unwrap();
    assert_eq!(valid("h1").await, all.len(), "rooted: nothing collected");
    deploy::drop_pending_roots(&c1, &Privilege::None, &id)
        .await
        .unwrap();
    assert_eq!(
        collect_until_none_left("h1").await,
        0,
        "the roots were the only thing holding them"
    );
}
