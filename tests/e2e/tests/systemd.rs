//! fleet's host contract on hosts that run systemd (the stand-in's `systemd-run`/`systemctl`,
//! `fleet.systemd = true`), the path every real NixOS host takes: the activation as the unit
//! `fleet-activate-<id>`, switch-to-configuration as nixos-rebuild's
//! `nixos-rebuild-switch-to-configuration` unit (its exit 4 through `systemd-run --wait`), a held
//! lock or a running nixos-rebuild unit, the watchdog as a transient timer that fires when the
//! deployer dies, a connection cut during the activation, a new apply that takes over a deploy
//! still awaiting confirmation, and no unit, timer or process left after a confirmed deploy.
//! Every test ends with [`Fleet::assert_sound`].

use std::time::Duration;

use fleet_e2e::{config_with, current, planned_target, profile, wait_until, Fleet, HostSpec};

const LONG: Duration = Duration::from_secs(180);
const SYSTEMCTL: &str = "/run/current-system/sw/bin/systemctl";
const SYSTEMD_RUN: &str = "/run/current-system/sw/bin/systemd-run";

/// A stand-in configuration that runs systemd, with `packages` and extra lines of Nix.
fn sd(name: &str, packages: &[&str], extra: &str) -> String {
    let pkgs: Vec<String> = packages.iter().map(|p| format!("pkgs.{p}")).collect();
    config_with(
        name,
        &format!(
            "fleet.systemd = true;\n  environment.systemPackages = [ {} ];\n  {extra}",
            pkgs.join(" ")
        ),
    )
}

/// Starts `hosts` and brings each to a first system that runs systemd (that first activation
/// stands for the boot: it has no systemd to use yet, from then on every one has).
fn start(hosts: &[&str]) -> Fleet {
    let f = Fleet::start(hosts.iter().map(|h| HostSpec::new(*h)));
    for h in hosts {
        f.set_config(h, &sd(h, &["htop"], ""));
    }
    f.fleet(&["apply"]).expect_code(0);
    for h in hosts {
        assert_eq!(f.sh(h, "[ -d /run/systemd/system ] && echo up"), "up");
        assert_eq!(units(&f, h), "", "{h}: the first deploy left units");
        f.sh(h, "rm -f /run/systemd/fleet-standin/units.log");
    }
    f
}

/// The stand-in's trace of the units that ran (`<time> <unit> <event> ...` lines).
fn units_log(f: &Fleet, host: &str) -> String {
    f.sh(
        host,
        "cat /run/systemd/fleet-standin/units.log 2>/dev/null || true",
    )
}

/// The units systemd has loaded (none once everything ended and was collected).
fn units(f: &Fleet, host: &str) -> String {
    f.sh(host, &format!("{SYSTEMCTL} list-units --all --no-legend"))
}

/// The processes of the host (its network namespace) other than the holder of its mount
/// namespace and sshd, as `pid cmdline`.
fn strays(f: &Fleet, host: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", &f.tb.host(host).netns])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            Some(format!("{pid} {}", cmd.trim()))
        })
        .filter(|p| !p.ends_with("sleep infinity") && !p.contains("sshd"))
        .collect()
}

/// Nothing of a deploy is left: no loaded unit or timer, no process.
#[track_caller]
fn assert_nothing_left(f: &Fleet, host: &str) {
    // An elapsed timer goes once its service ended, a moment after.
    wait_until("the units to be collected", Duration::from_secs(10), || {
        units(f, host).is_empty()
    });
    wait_until(
        "the host's processes to end",
        Duration::from_secs(10),
        || strays(f, host).is_empty(),
    );
}

/// The deployment id of the (only) `fleet-activate-<id>` unit in a trace.
fn activation_id(log: &str) -> String {
    let ids: std::collections::BTreeSet<&str> = log
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("fleet-activate-"))
        .filter_map(|w| w.strip_suffix(".service"))
        .collect();
    assert_eq!(ids.len(), 1, "one activation unit in\n{log}");
    ids.into_iter().next().unwrap().to_owned()
}

#[test]
fn apply_and_confirm_run_as_units_and_leave_no_unit_timer_or_process() {
    let f = start(&["h"]);
    let a = current(&f, "h").unwrap();
    f.set_config("h", &sd("h", &["htop", "jq"], ""));
    let run = f.fleet(&["apply", "--json", "--install-bootloader"]);
    run.expect_code(0);
    assert_eq!(run.outcomes()["h"], "applied");
    let b = planned_target(&run.json_lines(), "h");
    assert_ne!(a, b);

    let log = units_log(&f, "h");
    let id = activation_id(&log);
    for line in [
        format!("fleet-activate-{id}.service started "),
        "sh /run/fleet/activate.sh apply goal=switch".to_owned(),
        format!("nixos-rebuild-switch-to-configuration.service started {b}/bin/switch-to-configuration switch"),
        "nixos-rebuild-switch-to-configuration.service exited result=success status=0".to_owned(),
        format!("fleet-activate-{id}.service exited result=success status=0"),
        format!("fleet-watchdog-{id}.timer started"),
        format!("fleet-watchdog-{id}.timer stopped"),
    ] {
        assert!(
            log.lines().any(|l| l.contains(&line)),
            "`{line}` not in\n{log}"
        );
    }
    assert!(
        !log.contains(&format!("fleet-watchdog-{id}.service started")),
        "the watchdog never ran:\n{log}"
    );
    assert_eq!(
        f.sh("h", "cat /boot/loader/installs"),
        "1",
        "NIXOS_INSTALL_BOOTLOADER=1 reached switch-to-configuration through -E"
    );
    assert_nothing_left(&f, "h");
    assert_eq!(profile(&f, "h").as_deref(), Some(b.as_str()));
    f.assert_sound("h", &[Some(&b)]);

    // `fleet rollback` switches through the same unit, from the SSH session (--pipe --wait).
    f.sh("h", "rm -f /run/systemd/fleet-standin/units.log");
    let run = f.fleet(&["rollback", "--json"]);
    run.expect_code(0);
    assert_eq!(run.outcomes()["h"], "rolled-back");
    assert_eq!(current(&f, "h").as_deref(), Some(a.as_str()));
    let log = units_log(&f, "h");
    assert!(
        log.contains(&format!(
            "nixos-rebuild-switch-to-configuration.service started {a}/bin/switch-to-configuration switch"
        )),
        "{log}"
    );
    assert_nothing_left(&f, "h");
    f.assert_sound("h", &[Some(&a)]);
}

#[test]
fn failed_units_exit_4_through_systemd_run_wait_and_rollback_on_request() {
    let f = start(&["h", "r"]);
    let old_r = current(&f, "r").unwrap();
    for h in ["h", "r"] {
        f.set_config(h, &sd(h, &["htop"], "fleet.activationFails = \"units\";"));
    }
    let run = f.fleet(&["apply", "--json", "--on", "h"]);
    run.expect_code(1);
    assert_eq!(run.outcomes()["h"], "units-failed");
    assert!(
        run.detail("h").contains("fleet-standin-failing.service"),
        "{}",
        run.detail("h")
    );
    let new = planned_target(&run.json_lines(), "h");
    let log = units_log(&f, "h");
    assert!(
        log.contains(
            "nixos-rebuild-switch-to-configuration.service exited result=exit-code status=4"
        ),
        "{log}"
    );
    assert_eq!(current(&f, "h").as_deref(), Some(new.as_str()), "kept");
    assert_nothing_left(&f, "h");

    let run = f.fleet(&["apply", "--json", "--on", "r", "--rollback-on-failed-units"]);
    run.expect_code(1);
    assert_eq!(run.outcomes()["r"], "rolled-back");
    // The undo ran through the same unit name, which --collect had freed: `boot` of the
    // profile's system, then `test` of the previous one.
    let log = units_log(&f, "r");
    assert!(
        log.contains("switch-to-configuration boot")
            && log.contains(&format!("{old_r}/bin/switch-to-configuration test")),
        "{log}"
    );
    assert_nothing_left(&f, "r");
    f.assert_sound("h", &[Some(&new)]);
    f.assert_sound("r", &[Some(&old_r)]);
}

#[test]
fn a_held_lock_or_a_running_nixos_rebuild_unit_fails_the_host_before_the_profile_changes() {
    let f = start(&["h"]);
    let a = current(&f, "h").unwrap();
    let generations = || f.sh("h", "ls /nix/var/nix/profiles | grep -c '^system-'");
    let before = generations();
    let boot = || f.sh("h", "cat /boot/loader/loader.conf; ls /boot/loader/entries");
    let boot_before = boot();
    f.set_config("h", &sd("h", &["htop", "jq"], ""));

    // Another switch holds the lock.
    let holder = f.sh(
        "h",
        "mkdir -p /run/nixos; setsid flock /run/nixos/switch-to-configuration.lock sleep 300 \
         </dev/null >/dev/null 2>&1 & echo $!",
    );
    f.sh("h", "sleep 0.3");
    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(1);
    assert_eq!(run.outcomes()["h"], "failed");
    assert!(run.detail("h").contains("lock"), "{}", run.detail("h"));
    assert_eq!(profile(&f, "h").as_deref(), Some(a.as_str()));
    assert_eq!(generations(), before);
    f.sh("h", &format!("kill -TERM -{holder}"));

    // A nixos-rebuild has started its unit, whose switch-to-configuration has not taken the
    // lock yet: systemd-run would refuse a second unit of that name.
    f.sh(
        "h",
        &format!(
            "{SYSTEMD_RUN} --unit=nixos-rebuild-switch-to-configuration --collect --quiet sleep 300"
        ),
    );
    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(1);
    assert_eq!(run.outcomes()["h"], "failed");
    let detail = run.detail("h");
    assert!(
        detail.contains("nixos-rebuild-switch-to-configuration")
            && detail.contains("nothing was changed"),
        "refused up front, not failed and (not) rolled back: {detail}"
    );
    assert_eq!(boot(), boot_before, "the boot entries are untouched");
    assert_eq!(current(&f, "h").as_deref(), Some(a.as_str()));
    assert_eq!(profile(&f, "h").as_deref(), Some(a.as_str()), "untouched");
    assert_eq!(generations(), before);
    f.sh(
        "h",
        &format!("{SYSTEMCTL} stop nixos-rebuild-switch-to-configuration.service"),
    );

    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(0);
    let b = planned_target(&run.json_lines(), "h");
    assert_nothing_left(&f, "h");
    f.assert_sound("h", &[Some(&b)]);
}

#[test]
fn the_watchdog_timer_undoes_a_deploy_whose_deployer_died() {
    let f = start(&["h"]);
    let a = current(&f, "h").unwrap();
    f.set_config("h", &sd("h", &["htop", "jq"], ""));
    // A health check that cannot pass holds the deployer before its confirmation, so killing it
    // while it checks can never race a confirmation that already went out. The watchdog waits
    // for the confirmation timeout plus the checks' (6 + 5 s).
    f.edit_toml(|t| format!("{t}\n[hosts.h.checks]\ntimeout = 5\ncommands = [\"sleep 30\"]\n"));
    let mut running = f.spawn(&["apply", "--json", "--confirm-timeout", "6"]);
    running.wait_for_event("checking", LONG, |e| {
        e["type"] == "phase" && e["host"] == "h" && e["phase"] == "checking"
    });
    let b = current(&f, "h").unwrap();
    assert_ne!(a, b, "the new system was active");
    let id = activation_id(&units_log(&f, "h"));
    assert_eq!(
        f.sh(
            "h",
            &format!("{SYSTEMCTL} is-active fleet-watchdog-{id}.timer")
        ),
        "active"
    );
    std::process::Command::new("kill")
        .args(["-KILL", &running.pid().to_string()])
        .status()
        .unwrap();
    wait_until("the host reverts", Duration::from_secs(60), || {
        current(&f, "h").as_deref() == Some(a.as_str())
    });
    wait_until("the watchdog unit ends", Duration::from_secs(20), || {
        units_log(&f, "h").contains(&format!("fleet-watchdog-{id}.service exited"))
    });
    let log = units_log(&f, "h");
    for line in [
        format!("fleet-watchdog-{id}.timer elapsed"),
        format!("fleet-watchdog-{id}.service started "),
        format!("sh /run/fleet/activate.sh watchdog-fire {id}"),
        format!("fleet-watchdog-{id}.service exited result=success status=0"),
    ] {
        assert!(log.contains(&line), "`{line}` not in\n{log}");
    }
    assert_eq!(
        f.sh("h", &format!("cat /run/fleet/result-{id}")),
        "rolled-back"
    );
    assert_nothing_left(&f, "h");
    f.assert_sound("h", &[Some(&a)]);
}

#[test]
fn a_connection_cut_during_the_activation_unit_lets_it_finish() {
    let f = start(&["h"]);
    f.set_config("h", &sd("h", &["htop", "tmux"], ""));
    // switch-to-configuration waits at its end until released (a FIFO as its log).
    f.sh(
        "h",
        "mkdir -p /run/fleet-standin && rm -f /run/fleet-standin/activations.log \
         && mkfifo /run/fleet-standin/activations.log",
    );
    let mut run = f.spawn(&["apply", "--json", "--confirm-timeout", "60"]);
    run.wait_for_event("h to activate", LONG, |e| {
        e["type"] == "phase" && e["host"] == "h" && e["phase"] == "activating"
    });
    let new = planned_target(&run.events(), "h");
    wait_until("the switch", LONG, || {
        current(&f, "h").as_deref() == Some(new.as_str())
    });
    // Every SSH session dies while the units run.
    f.tb.stop_sshd("h").unwrap();
    f.tb.start_sshd("h").unwrap();
    f.sh(
        "h",
        "timeout 120 cat /run/fleet-standin/activations.log >/dev/null; \
         rm -f /run/fleet-standin/activations.log",
    );
    let run = run.finish(LONG);
    run.expect_code(0);
    assert_eq!(run.outcomes()["h"], "applied");
    assert!(
        run.stdout.contains("connection lost during activation"),
        "{}",
        run.stdout
    );
    let log = units_log(&f, "h");
    let id = activation_id(&log);
    assert!(
        log.contains(&format!(
            "fleet-activate-{id}.service exited result=success"
        )),
        "{log}"
    );
    assert_nothing_left(&f, "h");
    f.assert_sound("h", &[Some(&new)]);
}

#[test]
fn a_new_apply_before_the_watchdog_fired_takes_over_the_unconfirmed_deploy() {
    let f = start(&["h"]);
    let a = current(&f, "h").unwrap();
    // Deploy B; the deployer dies before it confirms (its watchdog timer is armed).
    f.set_config("h", &sd("h", &["htop", "jq"], ""));
    let mut running = f.spawn(&["apply", "--json", "--confirm-timeout", "8"]);
    running.wait_for_event("confirming", LONG, |e| {
        e["type"] == "phase" && e["host"] == "h" && e["phase"] == "confirming"
    });
    let b = current(&f, "h").unwrap();
    assert_ne!(a, b);
    let first = activation_id(&units_log(&f, "h"));
    std::process::Command::new("kill")
        .args(["-KILL", &running.pid().to_string()])
        .status()
        .unwrap();
    drop(running);
    // At once, a new deploy of C: it reached the host running B over a new connection (what
    // confirming B would prove) and must not be undone by B's watchdog afterwards.
    f.set_config("h", &sd("h", &["htop", "tmux"], ""));
    let run = f.fleet(&["apply", "--json", "--confirm-timeout", "8"]);
    run.expect_code(0);
    let c = planned_target(&run.json_lines(), "h");
    assert_eq!(current(&f, "h").as_deref(), Some(c.as_str()));
    // Past B's timeout: C still runs, and B's watchdog is gone without having run.
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        current(&f, "h").as_deref(),
        Some(c.as_str()),
        "B's watchdog undid C"
    );
    assert_eq!(profile(&f, "h").as_deref(), Some(c.as_str()));
    let log = units_log(&f, "h");
    assert!(
        !log.contains(&format!("fleet-watchdog-{first}.service started")),
        "{log}"
    );
    assert_eq!(
        f.sh("h", &format!("cat /run/fleet/result-{first}")),
        "confirmed"
    );
    assert_nothing_left(&f, "h");
    f.assert_sound("h", &[Some(&c)]);
}
