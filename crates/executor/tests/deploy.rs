//! Copy + activation + confirmation + rollback against the simulated fleet, with systems built
//! by fleet-nix-build from the nixpkgs stand-in. Needs root and namespaces; never skipped.

mod simulated;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use camino::Utf8PathBuf;
use fleet_executor::deploy::{self, Activated, Activation, Confirmation, CopyTarget, Goal};
use fleet_executor::store::StoreSession;
use fleet_executor::*;
use fleet_nix_build::{BuildOptions, HostBuildSpec, PinSpec};
use fleet_store::local::{closure_infos, LocalStore};
use fleet_store::StorePath;
use fleet_testbed::{HostSpec, Testbed};
use simulated::{connector, target};

/// Builds `config` (a stand-in configuration) for `system`; returns (toplevel, package).
async fn build(tb: &Testbed, dir: &Utf8PathBuf, name: &str, config: &str) -> (String, String) {
    let cfg = dir.join(format!("{name}.nix"));
    std::fs::write(&cfg, config).unwrap();
    let spec = HostBuildSpec {
        name: name.into(),
        system: "x86_64-linux".into(),
        pin: PinSpec::Path(Utf8PathBuf::from_path_buf(fleet_testbed::nixpkgs_standin()).unwrap()),
        config: cfg,
        cross: false,
        nix_path: Vec::new(),
        flake: None,
    };
    let mut opts = BuildOptions::new(dir.clone());
    opts.nix_env = tb.nix_env();
    let mut r = fleet_nix_build::evaluate_and_build(&[spec], &opts).await;
    let built = r.remove(0).1.expect("build");
    (built.toplevel, built.package)
}

fn record(id: &str, toplevel: &str, package: &str) -> deploy::DeploymentRecord {
    deploy::DeploymentRecord {
        commit: None,
        dirty: None,
        by: "test@deployer".into(),
        at: "2026-11-24T00:00:00Z".into(),
        toplevel: toplevel.into(),
        package: package.into(),
        goal: Goal::Switch,
        fleet_version: "test".into(),
        id: id.into(),
        flake: None,
    }
}

/// Copies the package closure to the host (only what it lacks) and returns how many paths went.
async fn copy(conn: &Connection, package: &str) -> usize {
    let store = LocalStore::system();
    let infos = closure_infos(&store, &[StorePath::new(package).unwrap()])
        .await
        .unwrap();
    let all: Vec<StorePath> = infos.iter().map(|i| i.path.clone()).collect();
    let mut session = StoreSession::open(conn, &Privilege::None).await.unwrap();
    let valid = session.valid_paths(&all, true).await.unwrap();
    let missing: BTreeSet<StorePath> = all.into_iter().filter(|p| !valid.contains(p)).collect();
    let n = missing.len();
    let events = HostEvents::new(
        "h1",
        Instant::now(),
        EventSink::discard(),
        CancellationToken::new(),
    );
    let results = deploy::copy_closures(
        &store,
        &infos,
        vec![CopyTarget {
            session: &mut session,
            missing,
            events,
        }],
    )
    .await;
    results.into_iter().next().unwrap().expect("copy");
    session.close().await.unwrap();
    n
}

async fn sh(tb: &Testbed, host: &str, cmd: &str) -> String {
    tb.exec_ok(host, cmd).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_activate_confirm_and_roll_back() {
    let tb = Testbed::start([HostSpec::new("h1")]).unwrap();
    let dir = Utf8PathBuf::from_path_buf(tempfile::tempdir().unwrap().keep()).unwrap();
    let c = connector(&tb);
    let t = target(&tb, "h1");
    let conn = c.connect(&t).await.unwrap();

    // First system: a fresh host gets everything.
    let (top1, pkg1) = build(&tb, &dir, "h1", "{ pkgs, ... }: { networking.hostName = \"h1\"; environment.systemPackages = [ pkgs.htop ]; }").await;
    let sent = copy(&conn, &pkg1).await;
    assert!(sent > 5, "a fresh host lacks the whole closure ({sent})");
    assert_eq!(
        copy(&conn, &pkg1).await,
        0,
        "nothing copied the second time"
    );
    let id1 = deploy::deployment_id();
    let a = Activation {
        install_bootloader: false,
        on_failed_units: deploy::OnFailedUnits::Keep,
        specialisation: None,
        goal: Goal::Switch,
        toplevel: top1.clone(),
        package: pkg1.clone(),
        confirm_timeout: Some(Duration::from_secs(20)),
        auto_rollback: true,
        activate: true,
        record: record(&id1, &top1, &pkg1),
    };
    match deploy::activate(&conn, &Privilege::None, &a).await.unwrap() {
        Activated::Done {
            pending_confirmation,
            ..
        } => assert!(pending_confirmation),
        other => panic!("{other:?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    assert_eq!(
        deploy::confirm(&c, &t, &Privilege::None, &id1, deadline).await,
        Confirmation::Confirmed
    );
    assert_eq!(sh(&tb, "h1", "readlink -f /run/current-system").await, top1);
    assert_eq!(
        sh(&tb, "h1", "readlink -f /etc/nixos/current-configuration").await,
        pkg1
    );
    assert_eq!(
        sh(
            &tb,
            "h1",
            "readlink -f /nix/var/nix/profiles/fleet/deployment"
        )
        .await,
        pkg1
    );
    let record_file = format!(
        "cat /nix/var/fleet/records/{}.json",
        top1.trim_start_matches("/nix/store/")
    );
    assert!(sh(&tb, "h1", &record_file).await.contains(&id1));

    // Second system whose activation fails: the host goes back to the first.
    let (top2, pkg2) = build(
        &tb,
        &dir,
        "h1",
        "{ pkgs, ... }: { networking.hostName = \"h1\"; fleet.activationFails = true; }",
    )
    .await;
    copy(&conn, &pkg2).await;
    let id2 = deploy::deployment_id();
    // Its units fail (switch-to-configuration exits 4): kept by default, rolled back as asked.
    let a2 = Activation {
        install_bootloader: false,
        on_failed_units: deploy::OnFailedUnits::Rollback,
        specialisation: None,
        record: record(&id2, &top2, &pkg2),
        toplevel: top2.clone(),
        package: pkg2.clone(),
        ..a.clone()
    };
    match deploy::activate(&conn, &Privilege::None, &a2)
        .await
        .unwrap()
    {
        Activated::RolledBack { log } => assert!(log.contains("rolling back"), "{log}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(sh(&tb, "h1", "readlink -f /run/current-system").await, top1);
    assert_eq!(
        sh(&tb, "h1", "readlink -f /nix/var/nix/profiles/system").await,
        top1
    );
    assert_eq!(
        sh(&tb, "h1", "readlink -f /etc/nixos/current-configuration").await,
        pkg1
    );

    // Third system, never confirmed: the host reverts by itself.
    let (top3, pkg3) = build(&tb, &dir, "h1", "{ pkgs, ... }: { networking.hostName = \"h1\"; environment.systemPackages = [ pkgs.nano ]; }").await;
    copy(&conn, &pkg3).await;
    let id3 = deploy::deployment_id();
    let a3 = Activation {
        install_bootloader: false,
        on_failed_units: deploy::OnFailedUnits::Keep,
        specialisation: None,
        record: record(&id3, &top3, &pkg3),
        toplevel: top3.clone(),
        package: pkg3.clone(),
        confirm_timeout: Some(Duration::from_secs(2)),
        ..a.clone()
    };
    assert!(matches!(
        deploy::activate(&conn, &Privilege::None, &a3)
            .await
            .unwrap(),
        Activated::Done { .. }
    ));
    assert_eq!(sh(&tb, "h1", "readlink -f /run/current-system").await, top3);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        deploy::result_of(&conn, &Privilege::None, &id3)
            .await
            .unwrap(),
        deploy::DeployState::RolledBack
    );
    assert_eq!(sh(&tb, "h1", "readlink -f /run/current-system").await, top1);
    assert_eq!(
        sh(&tb, "h1", "readlink -f /etc/nixos/current-configuration").await,
        pkg1
    );
    let late = deploy::confirm(
        &c,
        &t,
        &Privilege::None,
        &id3,
        Instant::now() + Duration::from_secs(5),
    )
    .await;
    assert_eq!(late, Confirmation::TooLate);

    // Explicit rollback: generation 3 (top3) was deleted by the revert; apply top3 again, then
    // roll back to top1.
    let id4 = deploy::deployment_id();
    let a4 = Activation {
        install_bootloader: false,
        on_failed_units: deploy::OnFailedUnits::Keep,
        specialisation: None,
        record: record(&id4, &top3, &pkg3),
        confirm_timeout: None,
        ..a3.clone()
    };
    assert!(matches!(
        deploy::activate(&conn, &Privilege::None, &a4)
            .await
            .unwrap(),
        Activated::Done {
            pending_confirmation: false,
            ..
        }
    ));
    assert_eq!(sh(&tb, "h1", "readlink -f /run/current-system").await, top3);
    deploy::rollback(&conn, &Privilege::None).await.unwrap();
    assert_eq!(sh(&tb, "h1", "readlink -f /run/current-system").await, top1);
    assert_eq!(
        sh(&tb, "h1", "readlink -f /etc/nixos/current-configuration").await,
        pkg1
    );
    for p in [&top1, &pkg1] {
        sh(&tb, "h1", &format!("nix-store --verify-path {p}")).await;
    }
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_cannot_be_reached_after_activation_reverts_by_itself() {
    let tb = Testbed::start([HostSpec::new("h1")]).unwrap();
    let dir = Utf8PathBuf::from_path_buf(tempfile::tempdir().unwrap().keep()).unwrap();
    let mut o = ConnectOptions::from_env();
    o.ssh_config = None;
    o.use_agent = false;
    o.known_hosts = tb.known_hosts_path().to_owned();
    o.connect_timeout = Duration::from_secs(2);
    let c = Arc::new(Connector::new(o, Arc::new(NoPassphrase)).unwrap());
    let t = target(&tb, "h1");
    let conn = c.connect(&t).await.unwrap();

    let (top1, pkg1) = build(
        &tb,
        &dir,
        "h1",
        "{ ... }: { networking.hostName = \"h1\"; }",
    )
    .await;
    copy(&conn, &pkg1).await;
    let id1 = deploy::deployment_id();
    let a1 = Activation {
        install_bootloader: false,
        on_failed_units: deploy::OnFailedUnits::Keep,
        specialisation: None,
        goal: Goal::Switch,
        toplevel: top1.clone(),
        package: pkg1.clone(),
        confirm_timeout: None,
        auto_rollback: true,
        activate: true,
        record: record(&id1, &top1, &pkg1),
    };
    deploy::activate(&conn, &Privilege::None, &a1)
        .await
        .unwrap();

    // This configuration takes the host's network down when activated.
    let (top2, pkg2) = build(
        &tb,
        &dir,
        "h1",
        "{ ... }: { networking.hostName = \"h1\"; fleet.network = \"down\"; }",
    )
    .await;
    copy(&conn, &pkg2).await;
    let id2 = deploy::deployment_id();
    // Its units fail (switch-to-configuration exits 4): kept by default, rolled back as asked.
    let a2 = Activation {
        install_bootloader: false,
        on_failed_units: deploy::OnFailedUnits::Rollback,
        specialisation: None,
        toplevel: top2.clone(),
        package: pkg2.clone(),
        confirm_timeout: Some(Duration::from_secs(6)),
        record: record(&id2, &top2, &pkg2),
        ..a1.clone()
    };
    // The activation finishes on the host even though its network goes away under it: the
    // result is either Done (the reply made it out) or an unknown outcome.
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        deploy::activate(&conn, &Privilege::None, &a2),
    )
    .await;
    eprintln!("activation over a vanishing network: {r:?}");
    let deadline = started + Duration::from_secs(6);
    let confirmation = deploy::confirm(&c, &t, &Privilege::None, &id2, deadline).await;
    assert!(
        matches!(confirmation, Confirmation::Unreachable { .. }),
        "{confirmation:?}"
    );
    // The watchdog reverts and the old configuration brings the network back.
    let mut back = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(conn2) = c.connect(&t).await {
            back = Some(conn2);
            break;
        }
    }
    let conn2 = back.expect("the host came back after reverting");
    assert_eq!(
        deploy::result_of(&conn2, &Privilege::None, &id2)
            .await
            .unwrap(),
        deploy::DeployState::RolledBack
    );
    assert_eq!(sh(&tb, "h1", "readlink -f /run/current-system").await, top1);
    assert_eq!(
        sh(&tb, "h1", "readlink -f /nix/var/nix/profiles/system").await,
        top1
    );
    assert_eq!(
        sh(&tb, "h1", "readlink -f /etc/nixos/current-configuration").await,
        pkg1
    );
}

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
