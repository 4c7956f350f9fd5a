//! `fleet apply --reboot` end to end on simulated reboots: the host asks for its reboot through
//! its own `systemctl reboot` (the stand-in's, which leaves a request the testbed serves; never
//! the machine's). A kernel change reboots once into a one-shot entry, is verified, checked and
//! made the default; a system that never brings sshd up is reported, and the next power cycle
//! returns to the previous default.

use std::sync::atomic::{AtomicBool, Ordering};

use fleet_e2e::{config_with, current, profile, Fleet, HostSpec, Run};

/// Runs fleet with the testbed serving the hosts' reboot requests meanwhile; returns the run
/// and how many reboots were served.
fn with_reboots(f: &Fleet, args: &[&str]) -> (Run, usize) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| f.tb.serve_reboot_requests(&stop));
        let run = f.fleet(args);
        stop.store(true, Ordering::SeqCst);
        (run, watcher.join().unwrap())
    })
}

fn booted(f: &Fleet, host: &str) -> Option<String> {
    f.link(host, "/run/booted-system")
}

#[test]
fn a_kernel_change_with_reboot_reboots_waits_verifies_checks_and_confirms() {
    let f = Fleet::start([HostSpec::new("k"), HostSpec::new("other")]);
    f.fleet(&["apply"]).expect_code(0);
    let old = current(&f, "k").unwrap();
    let other = current(&f, "other").unwrap();
    f.set_config("k", &config_with("k", "boot.kernelVersion = \"6.6.31\";"));
    f.edit_toml(|t| {
        format!("{t}\n[hosts.k.checks]\nunits = [\"sshd.service\"]\ncommands = [\"test -e /run/booted-system\"]\n")
    });
    // Plain output: the plan says who reboots, the progress how.
    let (run, served) = with_reboots(&f, &["apply", "--reboot"]);
    run.expect_code(0);
    assert_eq!(served, 1, "one reboot, of k only");
    assert!(
        run.stderr
            .contains("will reboot after `boot` (the new entry booted once first where the host has systemd-boot): k\n"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("warning: k has"), "k has systemd-boot");
    assert!(
        run.stderr.contains(
            "rebooting into nixos-generation-2.conf once (bootctl set-oneshot; the default stays \
             nixos-generation-1.conf)"
        ),
        "{}",
        run.stderr
    );
    let summary_line = |h: &str| {
        run.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(h))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(summary_line("k").contains("applied"), "{}", run.stdout);
    assert!(
        summary_line("other").contains("unchanged"),
        "{}",
        run.stdout
    );
    let new = f
        .link("k", "/etc/nixos/current-configuration/system")
        .unwrap();
    assert_ne!(new, old);
    assert_eq!(
        booted(&f, "k").as_deref(),
        Some(new.as_str()),
        "booted the new system"
    );
    assert_eq!(current(&f, "k").as_deref(), Some(new.as_str()));
    assert_eq!(profile(&f, "k").as_deref(), Some(new.as_str()));
    assert!(
        f.sh("k", "cat /boot/loader/loader.conf")
            .contains("default nixos-generation-2.conf"),
        "made the default after the checks"
    );
    assert_eq!(
        f.sh("k", "[ -e /boot/loader/oneshot ] && echo set || echo none"),
        "none"
    );
    f.assert_sound("k", &[Some(&new)]);
    f.assert_sound("other", &[Some(&other)]);
}

#[test]
fn a_system_that_never_brings_sshd_up_is_reported_and_undone_by_a_power_cycle() {
    let f = Fleet::start([HostSpec::new("b")]);
    f.fleet(&["apply"]).expect_code(0);
    let old = current(&f, "b").unwrap();
    f.set_config(
        "b",
        &config_with(
            "b",
            "boot.kernelVersion = \"6.6.31\"; fleet.bootBreaksSshd = true;",
        ),
    );
    let (run, served) = with_reboots(
        &f,
        &["apply", "--json", "--reboot", "--reboot-timeout", "6"],
    );
    run.expect_code(1);
    assert_eq!(served, 1);
    assert_eq!(run.outcomes()["b"], "failed");
    let d = run.detail("b");
    assert!(
        d.contains("did not come back within 6s")
            && d.contains(
                "the next power cycle boots the previous default nixos-generation-1.conf"
            ),
        "{d}"
    );
    let new = f.link("b", "/nix/var/nix/profiles/system").unwrap();
    assert_eq!(
        booted(&f, "b").as_deref(),
        Some(new.as_str()),
        "it booted the new system once"
    );

    // The power cycle: the one-shot entry is consumed, the default is still the old one.
    let r = f.tb.reboot("b").unwrap();
    assert!(!r.oneshot && r.sshd, "{r:?}");
    assert_eq!(booted(&f, "b").as_deref(), Some(old.as_str()));
    assert_eq!(current(&f, "b").as_deref(), Some(old.as_str()));
    // fleet reaches it again; the profile still names the system that never came up, until
    // `fleet rollback` sets it back (and the boot default with it).
    f.fleet(&["status"]).expect_code(0);
    assert_eq!(profile(&f, "b").as_deref(), Some(new.as_str()));
    f.fleet(&["rollback", "--yes"]).expect_code(0);
    assert_eq!(profile(&f, "b").as_deref(), Some(old.as_str()));
    assert_eq!(current(&f, "b").as_deref(), Some(old.as_str()));
    f.assert_sound("b", &[Some(&old)]);
}

/// A health check that fails after the reboot: the host boots the previous default again (a
/// second reboot), the new system is never made the default, and the outcome says which check
/// failed. Then `fleet reboot` alone reboots into the boot default, verifies and checks.
#[test]
fn a_check_failing_after_the_reboot_reboots_back_and_fleet_reboot_alone_verifies() {
    let f = Fleet::start([HostSpec::new("c")]);
    f.edit_toml(|t| format!("{t}\n[hosts.c.checks]\ncommands = [\"test ! -e /run/current-system/etc/broken\"]\ntimeout = 5\n"));
    f.fleet(&["apply"]).expect_code(0);
    let old = current(&f, "c").unwrap();
    f.set_config(
        "c",
        &config_with(
            "c",
            "boot.kernelVersion = \"6.6.31\"; environment.etc.\"broken\".text = \"yes\";",
        ),
    );
    let (run, served) = with_reboots(&f, &["apply", "--json", "--reboot"]);
    run.expect_code(1);
    assert_eq!(served, 2, "into the new system once, and back");
    assert_eq!(run.outcomes()["c"], "check-failed", "{}", run.stdout);
    let d = run.detail("c");
    assert!(
        d.contains("test ! -e /run/current-system/etc/broken"),
        "{d}"
    );
    assert_eq!(
        booted(&f, "c").as_deref(),
        Some(old.as_str()),
        "back on the old system"
    );
    assert_eq!(current(&f, "c").as_deref(), Some(old.as_str()));
    assert!(
        f.sh("c", "cat /boot/loader/loader.conf")
            .contains("default nixos-generation-1.conf"),
        "the new entry never became the default"
    );
    // Undone as a whole: the profile generation this apply made is gone too, so nothing (the
    // next `nixos-rebuild boot`, `fleet reboot`) can make the failed system the default.
    assert_eq!(profile(&f, "c").as_deref(), Some(old.as_str()));

    // `fleet reboot`: into the boot default (the old system here), verified and checked.
    let (run, served) = with_reboots(&f, &["reboot", "--json"]);
    run.expect_code(0);
    assert_eq!(served, 1);
    assert_eq!(booted(&f, "c").as_deref(), Some(old.as_str()));
}
