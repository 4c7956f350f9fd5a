//! The real NixOS contract on a host (issue "the real NixOS contract"): goals and the system
//! profile, switch-to-configuration's own exit codes (4: failed units, the lock), dry-activate,
//! garbage collection after several applies, reboot facts, and the magic-rollback watchdog when
//! the deployer vanishes (and a new apply taking over before it fires). Every test ends with
//! [`Fleet::assert_sound`].

use std::time::Duration;

use fleet_e2e::{config, config_with, current, planned_target, profile, Fleet, HostSpec};
use serde_json::Value;

fn status_of(f: &Fleet, host: &str) -> Value {
    fleet_e2e::named(&f.fleet(&["status", "--json"]).json(), host).clone()
}

fn plan_of(f: &Fleet, host: &str, goal: &str) -> Value {
    let run = f.fleet(&["plan", "--json", "--goal", goal]);
    run.expect_code(0);
    fleet_e2e::named(&run.json(), host).clone()
}

/// The processes of a simulated host (its network namespace) as `pid cmdline` lines.
fn processes(f: &Fleet, host: &str) -> Vec<String> {
    let netns = &f.tb.host(host).netns;
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            Some(format!("{pid} {}", cmd.trim()))
        })
        .collect()
}

#[test]
fn test_then_switch_sets_the_profile_and_the_boot_entry() {
    let f = Fleet::start([HostSpec::new("h")]);
    f.fleet(&["apply"]).expect_code(0);
    let a = current(&f, "h").unwrap();

    f.set_config("h", &config("h", &["htop", "jq"]));
    let run = f.fleet(&["apply", "test", "--json"]);
    run.expect_code(0);
    let b = planned_target(&run.json_lines(), "h");
    assert_eq!(current(&f, "h").as_deref(), Some(b.as_str()));
    assert_eq!(
        profile(&f, "h").as_deref(),
        Some(a.as_str()),
        "test leaves the profile"
    );
    assert_eq!(
        f.link("h", "/boot/loader/default-system").as_deref(),
        Some(a.as_str())
    );
    let st = status_of(&f, "h");
    assert_eq!(st["in_sync"], false, "{st}");
    assert!(f.fleet(&["status"]).stdout.contains("not boot default"));

    // The host runs B, but its next boot would run A: switch is not `unchanged`.
    let p = plan_of(&f, "h", "switch");
    assert_eq!(p["action"], "update", "{p}");
    assert_eq!(p["activate"], true);
    assert_eq!(plan_of(&f, "h", "test")["action"], "unchanged");
    let run = f.fleet(&["apply", "switch", "--json"]);
    run.expect_code(0);
    assert_eq!(run.outcomes()["h"], "applied");
    assert_eq!(profile(&f, "h").as_deref(), Some(b.as_str()));
    assert_eq!(
        f.link("h", "/boot/loader/default-system").as_deref(),
        Some(b.as_str())
    );
    assert_eq!(status_of(&f, "h")["in_sync"], true);
    for goal in ["switch", "boot", "test"] {
        let run = f.fleet(&["apply", goal, "--json"]);
        run.expect_code(0);
        assert_eq!(run.outcomes()["h"], "unchanged", "{goal}");
    }
    f.assert_sound("h", &[Some(&b)]);
}

#[test]
fn failed_units_keep_the_new_system_and_name_the_units() {
    let f = Fleet::start([HostSpec::new("h"), HostSpec::new("r")]);
    f.fleet(&["apply"]).expect_code(0);
    let old_r = current(&f, "r").unwrap();
    for h in ["h", "r"] {
        f.set_config(h, &config_with(h, "fleet.activationFails = \"units\";"));
    }
    let run = f.fleet(&["apply", "--on", "h"]);
    run.expect_code(1);
    // The summary names the outcome and the units; the activation's own output reaches the
    // user, per host.
    assert!(run.stdout.contains("units-failed"), "{}", run.stdout);
    assert!(
        run.stdout.contains("fleet-standin-failing.service"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("] | warning: the following units failed"),
        "{}",
        run.stderr
    );
    let new = f
        .link("h", "/etc/nixos/current-configuration/system")
        .unwrap();
    assert_eq!(current(&f, "h").as_deref(), Some(new.as_str()), "kept");
    assert_eq!(profile(&f, "h").as_deref(), Some(new.as_str()));
    let run = f.fleet(&["apply", "--json", "--on", "h"]);
    run.expect_code(0);
    assert_eq!(
        run.outcomes()["h"],
        "unchanged",
        "the units' state is not fleet's to fix"
    );

    let run = f.fleet(&["apply", "--json", "--on", "r", "--rollback-on-failed-units"]);
    run.expect_code(1);
    assert_eq!(run.outcomes()["r"], "rolled-back");
    f.assert_sound("h", &[Some(&new)]);
    f.assert_sound("r", &[Some(&old_r)]);
}

#[test]
fn a_held_switch_lock_fails_the_host_before_the_profile_changes() {
    let f = Fleet::start([HostSpec::new("h"), HostSpec::new("free")]);
    f.fleet(&["apply"]).expect_code(0);
    let a = current(&f, "h").unwrap();
    let generations = f.sh("h", "ls /nix/var/nix/profiles | grep -c '^system-'");
    // Another switch (a nixos-rebuild by hand) holds the lock.
    let holder = f.sh(
        "h",
        "mkdir -p /run/nixos; setsid flock /run/nixos/switch-to-configuration.lock sleep 300 \
         </dev/null >/dev/null 2>&1 & echo $!",
    );
    f.sh("h", "sleep 0.3");
    for h in ["h", "free"] {
        f.set_config(h, &config(h, &["htop", "jq"]));
    }
    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(1);
    assert_eq!(run.outcomes()["h"], "failed");
    assert_eq!(run.outcomes()["free"], "applied", "other hosts carry on");
    assert!(run.detail("h").contains("lock"), "{}", run.detail("h"));
    assert_eq!(current(&f, "h").as_deref(), Some(a.as_str()));
    assert_eq!(
        profile(&f, "h").as_deref(),
        Some(a.as_str()),
        "the profile was not touched"
    );
    assert_eq!(
        f.sh("h", "ls /nix/var/nix/profiles | grep -c '^system-'"),
        generations
    );
    f.sh("h", &format!("kill -TERM -{holder}"));
    let run = f.fleet(&["apply", "--json", "--on", "h"]);
    run.expect_code(0);
    let b = planned_target(&run.json_lines(), "h");
    f.assert_sound("h", &[Some(&b)]);
}

#[test]
fn dry_activate_shows_what_would_change_and_changes_nothing() {
    let f = Fleet::start([HostSpec::new("h")]);
    f.fleet(&["apply"]).expect_code(0);
    let a = current(&f, "h").unwrap();
    f.set_config("h", &config("h", &["htop", "jq"]));
    let run = f.fleet(&["apply", "dry-activate", "--json"]);
    run.expect_code(0);
    assert_eq!(run.outcomes()["h"], "dry-run");
    assert!(run.detail("h").contains("would"), "{}", run.detail("h"));
    let text = f.fleet(&["apply", "dry-activate"]);
    text.expect_code(0);
    assert!(text.stdout.contains("dry-run"), "{}", text.stdout);
    assert!(text.stdout.contains("would"), "{}", text.stdout);
    assert!(!text.stdout.contains("applied"), "{}", text.stdout);
    assert_eq!(current(&f, "h").as_deref(), Some(a.as_str()));
    assert_eq!(profile(&f, "h").as_deref(), Some(a.as_str()));
    f.assert_sound("h", &[Some(&a)]);
}

#[test]
fn garbage_collection_after_three_applies_keeps_only_the_running_system_and_its_package() {
    let f = Fleet::start([HostSpec::new("h")]);
    for extra in [&["htop"][..], &["htop", "jq"], &["htop", "tmux"]] {
        f.set_config("h", &config("h", extra));
        f.fleet(&["apply"]).expect_code(0);
    }
    let running = current(&f, "h").unwrap();
    assert_eq!(
        f.sh("h", "ls /nix/var/nix/profiles | grep -c '^system-'"),
        "3"
    );
    f.tb.collect_garbage("h", "-d").unwrap();
    let kept: std::collections::BTreeSet<String> = f
        .sh(
            "h",
            "nix-store -qR /run/current-system /etc/nixos/current-configuration | sort -u",
        )
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        f.store_paths("h"),
        kept,
        "only the running system's closure and its package are left"
    );
    assert_eq!(
        f.link("h", "/nix/var/nix/profiles/system").as_deref(),
        Some(running.as_str())
    );
    // The record and the package of the running system are still there.
    let st = status_of(&f, "h");
    assert_eq!(st["deployed"]["toplevel"], running.as_str(), "{st}");
    f.assert_sound("h", &[Some(&running)]);
}

#[test]
fn apply_boot_of_a_new_kernel_or_kernel_params_needs_a_reboot() {
    let f = Fleet::start([HostSpec::new("k"), HostSpec::new("p")]);
    f.fleet(&["apply"]).expect_code(0);
    let old_k = current(&f, "k").unwrap();
    let old_p = current(&f, "p").unwrap();
    assert_eq!(status_of(&f, "k")["needs_reboot"], false);

    f.set_config("k", &config_with("k", "boot.kernelVersion = \"6.6.31\";"));
    f.set_config("p", &config_with("p", "boot.kernelParams = [ \"quiet\" ];"));
    let plan = f.fleet(&["plan", "--json", "--goal", "boot"]);
    let hosts = plan.json()["hosts"].clone();
    let parts = |h: &str| -> Vec<String> {
        hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == h)
            .unwrap()["reboot_parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert!(parts("k").contains(&"kernel".to_owned()), "{hosts}");
    assert_eq!(parts("p"), ["kernel-params"], "{hosts}");

    let run = f.fleet(&["apply", "boot", "--json"]);
    run.expect_code(0);
    for (h, old, part) in [("k", &old_k, "kernel"), ("p", &old_p, "kernel-params")] {
        let new = planned_target(&run.json_lines(), h);
        assert_eq!(
            current(&f, h).as_deref(),
            Some(old.as_str()),
            "boot does not activate"
        );
        assert_eq!(profile(&f, h).as_deref(), Some(new.as_str()));
        let st = status_of(&f, h);
        assert_eq!(st["needs_reboot"], true, "{st}");
        assert!(
            st["reboot_parts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == part),
            "{st}"
        );
        f.assert_sound(h, &[Some(old), Some(&new)]);
    }
    assert!(f.fleet(&["status"]).stdout.contains("boots next"));
}

#[test]
fn the_watchdog_undoes_a_deploy_whose_deployer_vanished_and_nothing_outlives_a_confirmation() {
    let f = Fleet::start([HostSpec::new("h")]);
    f.fleet(&["apply"]).expect_code(0);
    let a = current(&f, "h").unwrap();
    let leftovers = |f: &Fleet| -> Vec<String> {
        processes(f, "h")
            .into_iter()
            .filter(|p| {
                p.contains("activate.sh") || (p.contains("sleep") && !p.contains("sleep infinity"))
            })
            .collect()
    };
    assert_eq!(
        leftovers(&f),
        Vec::<String>::new(),
        "a confirmed deploy leaves no process"
    );

    // The deployer dies (kill -9) while it waits to confirm: its SSH sessions end with it, and
    // the host's watchdog undoes the deploy by itself.
    f.set_config("h", &config("h", &["htop", "jq"]));
    let mut running = f.spawn(&["apply", "--json", "--confirm-timeout", "6"]);
    running.wait_for_event("confirming", Duration::from_secs(180), |e| {
        e["type"] == "phase" && e["host"] == "h" && e["phase"] == "confirming"
    });
    let b = current(&f, "h").unwrap();
    assert_ne!(a, b, "the new system was active");
    std::process::Command::new("kill")
        .args(["-KILL", &running.pid().to_string()])
        .status()
        .unwrap();
    fleet_e2e::wait_until("the host reverts", Duration::from_secs(60), || {
        current(&f, "h").as_deref() == Some(a.as_str())
    });
    fleet_e2e::wait_until("the watchdog is gone", Duration::from_secs(10), || {
        leftovers(&f).is_empty()
    });
    // The record shown is the running system's, not the reverted deploy's.
    assert_eq!(status_of(&f, "h")["deployed"]["toplevel"], a.as_str());
    f.assert_sound("h", &[Some(&a)]);
}

#[test]
fn a_new_init_interface_is_reboot_required_not_rolled_back_and_the_reboot_runs_it() {
    let f = Fleet::start([HostSpec::new("h")]);
    f.fleet(&["apply"]).expect_code(0);
    let a = current(&f, "h").unwrap();
    f.set_config(
        "h",
        &config_with("h", "system.initInterfaceVersion = \"systemd-next\";"),
    );
    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(1);
    assert_eq!(run.outcomes()["h"], "reboot-required");
    assert!(run.detail("h").contains("reboot"), "{}", run.detail("h"));
    let b = planned_target(&run.json_lines(), "h");
    assert_eq!(
        current(&f, "h").as_deref(),
        Some(a.as_str()),
        "nothing activated"
    );
    assert_eq!(
        profile(&f, "h").as_deref(),
        Some(b.as_str()),
        "the next boot runs it"
    );
    assert_eq!(
        f.link("h", "/boot/loader/default-system").as_deref(),
        Some(b.as_str())
    );
    let st = status_of(&f, "h");
    assert!(
        st["reboot_parts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "init-interface-version"),
        "{st}"
    );
    f.assert_sound("h", &[Some(&a), Some(&b)]);
    let booted = f.tb.reboot("h").unwrap();
    assert_eq!(booted.toplevel.as_deref(), Some(b.as_str()));
    let st = status_of(&f, "h");
    assert_eq!(st["in_sync"], true, "{st}");
    assert_eq!(st["needs_reboot"], false, "{st}");
    f.assert_sound("h", &[Some(&b)]);
}

#[test]
fn install_bootloader_passes_through() {
    let f = Fleet::start([HostSpec::new("h")]);
    f.fleet(&["apply"]).expect_code(0);
    let installs = || f.sh("h", "cat /boot/loader/installs 2>/dev/null || echo 0");
    assert_eq!(installs(), "0");
    f.set_config("h", &config("h", &["htop", "jq"]));
    f.fleet(&["apply", "--install-bootloader"]).expect_code(0);
    assert_eq!(
        installs(),
        "1",
        "NIXOS_INSTALL_BOOTLOADER=1 reached switch-to-configuration"
    );
    let now = current(&f, "h").unwrap();
    f.assert_sound("h", &[Some(&now)]);
}

#[test]
fn a_host_in_a_specialisation_keeps_it_or_is_told_how_to_leave_it() {
    let f = Fleet::start([HostSpec::new("h")]);
    let with_gpu = |pkgs: &str| {
        config_with(
            "h",
            &format!(
                "environment.systemPackages = [ {pkgs} ];\n  \
                 specialisation.gpu.configuration = {{ environment.etc.gpu.text = \"on\\n\"; }};"
            ),
        )
    };
    f.set_config("h", &with_gpu("pkgs.htop"));
    f.fleet(&["apply"]).expect_code(0);
    let base = current(&f, "h").unwrap();
    // Booted into the specialisation (picked in the boot menu, or by hand).
    f.sh(
        "h",
        "/nix/var/nix/profiles/system/specialisation/gpu/bin/switch-to-configuration test >/dev/null",
    );
    let gpu = current(&f, "h").unwrap();
    assert_ne!(gpu, base);
    let st = status_of(&f, "h");
    assert_eq!(st["specialisation"], "gpu", "{st}");

    // A new system: apply activates its `gpu` specialisation; the profile gets the base system.
    f.set_config("h", &with_gpu("pkgs.htop pkgs.jq"));
    let plan = plan_of(&f, "h", "switch");
    assert_eq!(plan["specialisation"], "gpu", "{plan}");
    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(0);
    let new_base = planned_target(&run.json_lines(), "h");
    assert_eq!(profile(&f, "h").as_deref(), Some(new_base.as_str()));
    let now = current(&f, "h").unwrap();
    assert_eq!(
        f.link("h", &format!("{new_base}/specialisation/gpu"))
            .as_deref(),
        Some(now.as_str()),
        "runs the new system's gpu specialisation"
    );
    assert_eq!(f.sh("h", "cat /run/current-system/etc/gpu"), "on");

    // The next system has no `gpu`: a plan error that says how to go on.
    f.set_config("h", &config("h", &["htop", "tmux"]));
    let run = f.fleet(&["plan"]);
    run.expect_code(1);
    assert!(
        run.stdout.contains("--specialisation base"),
        "{}",
        run.stdout
    );
    let run = f.fleet(&["apply", "--json", "--specialisation", "base"]);
    run.expect_code(0);
    let plain = planned_target(&run.json_lines(), "h");
    f.assert_sound("h", &[Some(&plain)]);
}

/// A collection while the copy runs: what was imported so far is held by the import's own
/// temporary roots, then by `fleet-pending/<id>` until the profile holds it (that window is
/// proved deterministically by the executor test
/// `imported_paths_stay_rooted_until_the_pending_roots_are_dropped`, with a control).
#[test]
fn garbage_collection_during_a_compressed_copy_takes_none_of_the_imported_paths() {
    let f = Fleet::start([HostSpec::new("h").rate_mbit(8)]);
    f.fleet(&["apply"]).expect_code(0);
    f.set_config(
        "h",
        "{ pkgs, ... }: {\n  networking.hostName = \"h\";\n  \
         fleet.bench = { paths = 20; totalMB = 16; };\n}\n",
    );
    let mut run = f.spawn(&["apply", "--json"]);
    run.wait_for_event(
        "h in the middle of its copy",
        Duration::from_secs(180),
        |e| {
            e["host"] == "h"
                && e["type"] == "progress"
                && e["done_paths"].as_u64().unwrap_or(0) > 2
                && e["done_paths"].as_u64() < e["total_paths"].as_u64()
        },
    );
    // The host's own nix.gc runs now: the paths imported so far are referenced by nothing yet.
    f.tb.collect_garbage("h", "-d").unwrap();
    let run = run.finish(Duration::from_secs(180));
    run.expect_code(0);
    assert_eq!(run.outcomes()["h"], "applied");
    let new = planned_target(&run.json_lines(), "h");
    f.assert_store_clean("h");
    f.assert_sound("h", &[Some(&new)]);
    assert_eq!(
        f.sh(
            "h",
            "ls /nix/var/nix/gcroots/fleet-pending 2>/dev/null | wc -l"
        ),
        "0",
        "the copy's roots are gone once the profile holds the paths"
    );
}

#[test]
fn a_new_apply_before_the_watchdog_fired_takes_over_and_is_not_undone_by_it() {
    // The setsid path (no systemd); tests/e2e/tests/systemd.rs has the same on a systemd host.
    let f = Fleet::start([HostSpec::new("h")]);
    f.fleet(&["apply"]).expect_code(0);
    f.set_config("h", &config("h", &["htop", "jq"]));
    let mut running = f.spawn(&["apply", "--json", "--confirm-timeout", "8"]);
    running.wait_for_event("confirming", Duration::from_secs(180), |e| {
        e["type"] == "phase" && e["host"] == "h" && e["phase"] == "confirming"
    });
    std::process::Command::new("kill")
        .args(["-KILL", &running.pid().to_string()])
        .status()
        .unwrap();
    drop(running);
    f.set_config("h", &config("h", &["htop", "tmux"]));
    let run = f.fleet(&["apply", "--json", "--confirm-timeout", "8"]);
    run.expect_code(0);
    let c = planned_target(&run.json_lines(), "h");
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        current(&f, "h").as_deref(),
        Some(c.as_str()),
        "the earlier deploy's watchdog undid the newer one"
    );
    assert!(
        processes(&f, "h")
            .iter()
            .all(|p| !p.contains("activate.sh")),
        "{:?}",
        processes(&f, "h")
    );
    f.assert_sound("h", &[Some(&c)]);
}
