//! Simulated reboots: processes and /run go, the default (or one-shot) boot entry boots, sshd
//! comes back, unless the booted system breaks it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fleet_testbed::{HostSpec, Testbed};

#[test]
fn reboot_boots_the_default_entry_and_ends_every_process() {
    let started = Instant::now();
    let old = build_system("{ networking.hostName = \"rb\"; }", "x86_64-linux");
    let new = build_system(
        "{ networking.hostName = \"rb\"; boot.kernelVersion = \"6.6.31\"; }",
        "x86_64-linux",
    );
    let tb = Testbed::start([HostSpec::new("rb")]).expect("starting");

    // A host that never had a system comes back with neither link.
    let r = tb
        .reboot_with_delay("rb", Duration::from_millis(100))
        .unwrap();
    assert_eq!((r.entry.as_deref(), r.toplevel.as_deref()), (None, None));
    assert!(r.sshd);
    assert!(ssh_ok(&tb, "rb"));
    assert_eq!(readlink(&tb, "rb", "/run/current-system"), "none");
    assert_eq!(readlink(&tb, "rb", "/run/booted-system"), "none");

    copy(&tb, "rb", &old);
    copy(&tb, "rb", &new);
    set_profile(&tb, "rb", &old);
    check("switch old", &switch(&tb, "rb", "", &old, "switch"));
    set_profile(&tb, "rb", &new);
    check("boot new", &switch(&tb, "rb", "", &new, "boot"));
    assert_eq!(readlink(&tb, "rb", "/run/current-system"), old);
    // Something running, and something in /run.
    sh(
        &tb,
        "rb",
        "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo x > /run/marker",
    );
    let mut session = tb
        .ssh("rb", "root", "sleep 600")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sleeping = |tb: &Testbed| {
        host_processes(tb, "rb")
            .iter()
            .filter(|c| c.contains("sleep 600"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while sleeping(&tb) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sleeping(&tb), 2, "{:?}", host_processes(&tb, "rb"));

    let t = Instant::now();
    let r = tb.reboot("rb").unwrap();
    eprintln!(
        "reboot with the default 1 s sshd delay: {:.2?}",
        t.elapsed()
    );
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert_eq!(r.entry.as_deref(), Some("nixos-generation-2.conf"));
    assert_eq!(r.toplevel.as_deref(), Some(new.as_str()));
    assert!(!r.oneshot && r.sshd);
    assert!(r.processes_ended >= 3, "{r:?}"); // sshd, the session, sleep
    let _ = session.wait();
    assert_eq!(readlink(&tb, "rb", "/run/booted-system"), new);
    assert_eq!(readlink(&tb, "rb", "/run/current-system"), new);
    assert_eq!(readlink(&tb, "rb", "/nix/var/nix/profiles/system"), new);
    assert!(ssh_ok(&tb, "rb"), "sshd answers after the reboot");
    assert_eq!(sleeping(&tb), 0, "{:?}", host_processes(&tb, "rb"));
    assert_eq!(
        sh(&tb, "rb", "ls -A /run"),
        "booted-system\ncurrent-system\nsshd\nsshd.pid"
    );
    // The booted system can be switched to again (same init interface, no lock left).
    check("switch new", &switch(&tb, "rb", "", &new, "switch"));
    tb.teardown().unwrap();
    eprintln!("reboot into a new kernel: {:.2?}", started.elapsed());
}

#[test]
fn a_system_that_breaks_sshd_and_a_oneshot_boot_then_a_power_cycle() {
    let started = Instant::now();
    let good = build_system("{ networking.hostName = \"os\"; }", "x86_64-linux");
    let broken = build_system(
        "{ networking.hostName = \"os\"; fleet.bootBreaksSshd = true; }",
        "x86_64-linux",
    );
    let tb = Testbed::start([HostSpec::new("os")]).expect("starting");
    copy(&tb, "os", &good);
    copy(&tb, "os", &broken);
    set_profile(&tb, "os", &good);
    check("switch good", &switch(&tb, "os", "", &good, "switch"));
    set_profile(&tb, "os", &broken);
    check("boot broken", &switch(&tb, "os", "", &broken, "boot"));
    // Try the new system once: the default stays the good one (bootctl of the system).
    sh(
        &tb,
        "os",
        "bootctl=/run/current-system/sw/bin/bootctl; \
         $bootctl set-default nixos-generation-1.conf && $bootctl set-oneshot nixos-generation-2",
    );
    assert_eq!(
        sh(&tb, "os", "/run/current-system/sw/bin/bootctl status"),
        "default: nixos-generation-1.conf\noneshot: nixos-generation-2.conf"
    );

    // The one-shot boot: sshd never comes back.
    let booting = tb.reboot_nowait("os", Duration::from_millis(100)).unwrap();
    assert!(booting.rebooted.oneshot);
    assert!(!booting.rebooted.sshd);
    let r = booting.wait().unwrap();
    assert_eq!(r.toplevel.as_deref(), Some(broken.as_str()));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!tb.sshd_running("os").unwrap());
    assert!(
        !ssh_ok(&tb, "os"),
        "sshd answers on a system that breaks it"
    );
    assert_eq!(readlink(&tb, "os", "/run/booted-system"), broken);
    sh(&tb, "os", "test ! -e /boot/loader/oneshot");

    // A power cycle: the default entry, sshd back after the delay (long enough that a loaded
    // machine cannot blur "before" and "after").
    let delay = Duration::from_secs(6);
    let t = Instant::now();
    let booting = tb.reboot_nowait("os", delay).unwrap();
    let h = tb.host("os");
    let refused = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::new(h.address, h.port),
        Duration::from_millis(200),
    )
    .is_err();
    assert!(refused, "sshd listens before its delay");
    assert_eq!(booting.rebooted.toplevel.as_deref(), Some(good.as_str()));
    assert!(!booting.rebooted.oneshot && booting.rebooted.sshd);
    booting.wait().unwrap();
    assert!(t.elapsed() >= delay);
    assert!(ssh_ok(&tb, "os"));
    assert_eq!(readlink(&tb, "os", "/run/booted-system"), good);
    assert_eq!(readlink(&tb, "os", "/run/current-system"), good);
    tb.teardown().unwrap();
    eprintln!("never-boots fault and one-shot: {:.2?}", started.elapsed());
}

#[test]
fn a_pending_boot_is_cancelled_by_another_reboot_and_by_teardown() {
    let tb = Testbed::start([HostSpec::new("p")]).expect("starting");
    let first = tb.reboot_nowait("p", Duration::from_millis(200)).unwrap();
    let second = tb.reboot_nowait("p", Duration::from_millis(1500)).unwrap();
    first.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !tb.sshd_running("p").unwrap(),
        "the first boot started sshd after a second reboot"
    );
    second.wait().unwrap();
    assert!(tb.sshd_running("p").unwrap());
    assert!(ssh_ok(&tb, "p"));
    let pending = tb.reboot_nowait("p", Duration::from_millis(300)).unwrap();
    tb.teardown().unwrap();
    pending.wait().unwrap();
}
