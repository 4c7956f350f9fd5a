//! Copy + activation + confirmation + rollback against the simulated fleet, with systems built
//! by fleet-nix-build from the nixpkgs stand-in. Needs root and namespaces; never skipped.

mod simulated;

use std::sync::Arc;
use std::time::{Duration, Instant};

use camino::Utf8PathBuf;
use fleet_executor::deploy::{self, Activated, Activation, Confirmation, Goal};
use fleet_executor::*;
use fleet_testbed::{HostSpec, Testbed};
use simulated::{build, connector, copy, sh, target};

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
