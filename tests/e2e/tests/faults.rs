//! Faults during `fleet apply`: a dying sshd, unreachable hosts, a full `/nix`, failing
//! activations, a lost connection, Ctrl-C, a wrong sudo password, a very slow host. Every test
//! ends with [`Fleet::assert_sound`] on every host: each is on its old or its new system, never
//! in between. docs/reliability.md lists what each test proves.

use std::time::Duration;

use fleet_e2e::{
    config, config_with, current, planned_target, profile, wait_until, Fleet, HostSpec,
};
use serde_json::Value;

/// Generous bound for anything that takes seconds.
const LONG: Duration = Duration::from_secs(180);

/// A configuration with a big closure: the stand-in's `fleet.bench` (`paths` store paths of
/// real shared libraries, `mb` MiB in all; about a third of that once zstd-compressed).
fn bench_config(name: &str, paths: u32, mb: u32) -> String {
    format!(
        "{{ pkgs, ... }}: {{\n  networking.hostName = \"{name}\";\n  \
         environment.systemPackages = [ pkgs.htop ];\n  \
         fleet.bench = {{ paths = {paths}; totalMB = {mb}; }};\n}}\n"
    )
}

fn is(e: &Value, host: &str, kind: &str) -> bool {
    e["host"] == host && e["type"] == kind
}

/// A progress event of `host` in the middle of its copy (what the host received so far).
fn mid_copy(e: &Value, host: &str) -> bool {
    is(e, host, "progress")
        && e["done_bytes"].as_u64().unwrap_or(0) > 0
        && e["done_bytes"].as_u64() < e["total_bytes"].as_u64()
}

fn phase(e: &Value, host: &str, phase: &str) -> bool {
    is(e, host, "phase") && e["phase"] == phase
}

/// When (ms into the run) the first event matching `pred` came.
fn at(events: &[Value], what: &str, pred: impl Fn(&Value) -> bool) -> u64 {
    events
        .iter()
        .find(|e| pred(e))
        .and_then(|e| e["at_ms"].as_u64())
        .unwrap_or_else(|| panic!("no event: {what}"))
}

/// Makes the host's activations stop at their very end until [`release_gate`]: the stand-in's
/// `switch-to-configuration` appends a line to `/run/fleet-standin/activations.log` as it
/// finishes (after `/run/current-system` is switched), and opening a FIFO there for writing
/// waits for a reader.
fn gate_activation(f: &Fleet, host: &str) {
    f.sh(
        host,
        "mkdir -p /run/fleet-standin && rm -f /run/fleet-standin/activations.log \
         && mkfifo /run/fleet-standin/activations.log",
    );
}

/// Lets the activation waiting at the gate finish, and removes the gate.
fn release_gate(f: &Fleet, host: &str) {
    f.sh(
        host,
        "timeout 120 cat /run/fleet-standin/activations.log >/dev/null; \
         rm -f /run/fleet-standin/activations.log",
    );
}

#[test]
fn sshd_killed_mid_copy_fails_that_host_leaves_no_partial_path_and_a_rerun_completes_it() {
    let f = Fleet::start([HostSpec::new("cut").rate_mbit(8), HostSpec::new("fine")]);
    for h in ["cut", "fine"] {
        f.set_config(h, &bench_config(h, 20, 20));
    }
    let mut run = f.spawn(&["apply", "--json"]);
    run.wait_for_event("cut to be in the middle of its copy", LONG, |e| {
        mid_copy(e, "cut")
    });
    f.tb.stop_sshd("cut").unwrap();
    let run = run.finish(LONG);
    run.expect_code(1);
    let outcomes = run.outcomes();
    assert_eq!(outcomes["cut"], "failed");
    assert_eq!(outcomes["fine"], "applied");
    assert!(
        run.detail("cut").contains("lost the connection"),
        "{}",
        run.detail("cut")
    );
    let fine = current(&f, "fine").expect("fine runs its new system");

    // Whatever arrived before the cut is a whole, valid path or not registered at all.
    f.assert_store_clean("cut");
    f.assert_sound("cut", &[None]);
    f.assert_sound("fine", &[Some(&fine)]);

    // sshd back: a re-run copies what is still missing and activates.
    f.tb.start_sshd("cut").unwrap();
    let again = f.fleet(&["apply", "--json"]);
    again.expect_code(0);
    assert_eq!(again.outcomes()["cut"], "applied");
    assert_eq!(again.outcomes()["fine"], "unchanged");
    let cut = current(&f, "cut").expect("cut runs its new system");
    assert_eq!(cut, planned_target(&again.json_lines(), "cut"));
    f.assert_store_clean("cut");
    f.assert_sound("cut", &[Some(&cut)]);
    f.assert_sound("fine", &[Some(&fine)]);
}

#[test]
fn unreachable_hosts_fail_alone_and_are_left_untouched() {
    let f = Fleet::start([
        HostSpec::new("refuses"),
        HostSpec::new("silent"),
        HostSpec::new("up"),
    ]);
    // No sshd (connection refused), and no network at all (nothing answers).
    f.tb.stop_sshd("refuses").unwrap();
    f.sh("silent", "ip link set eth0 down");

    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(1);
    let outcomes = run.outcomes();
    assert_eq!(outcomes["refuses"], "failed");
    assert_eq!(outcomes["silent"], "failed");
    assert_eq!(outcomes["up"], "applied");
    for h in ["refuses", "silent"] {
        let d = run.detail(h);
        assert!(!d.is_empty(), "{h} says why it failed");
    }
    let up = current(&f, "up").expect("up runs its new system");

    f.tb.start_sshd("refuses").unwrap();
    f.sh("silent", "ip link set eth0 up");
    for h in ["refuses", "silent"] {
        assert!(f.store_paths(h).is_empty(), "{h}: nothing was copied");
        f.assert_sound(h, &[None]);
    }
    f.assert_sound("up", &[Some(&up)]);

    // Reachable again: a re-run brings them up too.
    let again = f.fleet(&["apply", "--json"]);
    again.expect_code(0);
    assert_eq!(again.outcomes()["up"], "unchanged");
    for h in ["refuses", "silent"] {
        assert_eq!(again.outcomes()[h], "applied");
        let now = current(&f, h).expect("runs its new system");
        f.assert_sound(h, &[Some(&now)]);
    }
    f.assert_sound("up", &[Some(&up)]);
}

#[test]
fn a_full_nix_fails_that_host_cleanly_and_freeing_space_lets_a_rerun_finish() {
    let f = Fleet::start([
        // Filled to the last byte before the run.
        HostSpec::new("full").nix_tmpfs_mb(64),
        // Room for the first system, not for the second: runs out in the middle of the copy.
        HostSpec::new("small").nix_tmpfs_mb(24),
        HostSpec::new("roomy"),
    ]);
    f.fleet(&["apply"]).expect_code(0);
    let old: Vec<String> = ["full", "small", "roomy"]
        .iter()
        .map(|h| current(&f, h).expect("first system"))
        .collect();

    f.set_config("full", &bench_config("full", 10, 8));
    f.set_config("small", &bench_config("small", 20, 40));
    f.set_config("roomy", &bench_config("roomy", 10, 8));
    f.tb.fill_disk("full").unwrap();
    // Something the admin of `small` can delete afterwards (Nix itself cannot even open its
    // database on a completely full disk).
    f.sh(
        "small",
        "dd if=/dev/zero of=/nix/.reserve bs=1M count=2 2>/dev/null",
    );

    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(1);
    let outcomes = run.outcomes();
    assert_eq!(outcomes["full"], "failed");
    assert_eq!(outcomes["small"], "failed");
    assert_eq!(outcomes["roomy"], "applied");
    assert!(
        run.detail("small").contains("No space left"),
        "the error says why: {}",
        run.detail("small")
    );
    // SQLite's "disk I/O error" / "database or disk is full", or "No space left on device".
    let why = run.detail("full");
    assert!(
        why.contains("disk") || why.contains("space"),
        "the error says why: {why}"
    );
    let roomy = current(&f, "roomy").unwrap();
    assert_eq!(roomy, planned_target(&run.json_lines(), "roomy"));

    // Space again (the store itself is as the run left it): both are on their old system,
    // with no partial path; what `small` received in full is valid, unreferenced garbage.
    f.tb.free_disk("full").unwrap();
    f.sh("small", "rm /nix/.reserve");
    for (i, h) in ["full", "small"].iter().enumerate() {
        f.assert_store_clean(h);
        f.assert_sound(h, &[Some(&old[i])]);
        assert_eq!(profile(&f, h).as_deref(), Some(old[i].as_str()));
    }
    f.assert_sound("roomy", &[Some(&roomy)]);
    // The copy's roots went with it (they only hold imported paths until activation).
    assert_eq!(
        f.sh(
            "small",
            "ls /nix/var/nix/gcroots/fleet-pending 2>/dev/null | wc -l"
        ),
        "0"
    );
    // Collecting that garbage keeps the running system (the profile and fleet's package are
    // GC roots).
    f.tb.collect_garbage("small", "").unwrap();
    f.assert_sound("small", &[Some(&old[1])]);

    // Re-run (`small` with a system that fits).
    f.set_config("small", &bench_config("small", 4, 4));
    let again = f.fleet(&["apply", "--json"]);
    again.expect_code(0);
    assert_eq!(again.outcomes()["full"], "applied");
    assert_eq!(again.outcomes()["small"], "applied");
    assert_eq!(again.outcomes()["roomy"], "unchanged");
    for (i, h) in ["full", "small"].iter().enumerate() {
        let now = current(&f, h).unwrap();
        assert_ne!(now, old[i]);
        f.assert_store_clean(h);
        f.assert_sound(h, &[Some(&now)]);
    }
    f.assert_sound("roomy", &[Some(&roomy)]);
}

#[test]
fn failing_activation_is_rolled_back_and_with_no_rollback_fleet_rollback_recovers() {
    let f = Fleet::start([
        HostSpec::new("early"),
        HostSpec::new("units"),
        HostSpec::new("manual"),
    ]);
    f.fleet(&["apply"]).expect_code(0);
    let old: Vec<String> = ["early", "units", "manual"]
        .iter()
        .map(|h| current(&f, h).expect("first system"))
        .collect();
    let old_pkg = f.link("early", "/etc/nixos/current-configuration").unwrap();

    // Fails before changing anything / after switching /run/current-system (a failed unit).
    f.set_config(
        "early",
        &config_with("early", "fleet.activationFails = \"early\";"),
    );
    f.set_config(
        "units",
        &config_with("units", "fleet.activationFails = \"units\";"),
    );
    // Failed units keep the new system by default (as nixos-rebuild); asked, fleet rolls back.
    let run = f.fleet(&[
        "apply",
        "--json",
        "--on",
        "early,units",
        "--rollback-on-failed-units",
    ]);
    run.expect_code(1);
    assert_eq!(run.outcomes()["early"], "rolled-back");
    assert_eq!(run.outcomes()["units"], "rolled-back");
    assert!(
        run.detail("units").contains("failed"),
        "{}",
        run.detail("units")
    );
    for (i, h) in ["early", "units"].iter().enumerate() {
        f.assert_sound(h, &[Some(&old[i])]);
        assert_eq!(profile(&f, h).as_deref(), Some(old[i].as_str()));
    }
    assert_eq!(
        f.link("early", "/etc/nixos/current-configuration")
            .as_deref(),
        Some(old_pkg.as_str()),
        "the package link is back too"
    );
    assert_eq!(
        f.sh("units", "ls /nix/var/nix/profiles | grep -c '^system-'"),
        "1",
        "the failed generation is gone"
    );

    // Failed units without the flag: the host stays on the new system and the units are
    // named; `fleet rollback` brings it back.
    f.set_config(
        "manual",
        &config_with("manual", "fleet.activationFails = \"units\";"),
    );
    let run = f.fleet(&["apply", "--json", "--on", "manual", "--no-rollback"]);
    run.expect_code(1);
    assert_eq!(run.outcomes()["manual"], "units-failed");
    assert!(
        run.detail("manual")
            .contains("fleet-standin-failing.service"),
        "{}",
        run.detail("manual")
    );
    let new = planned_target(&run.json_lines(), "manual");
    f.assert_sound("manual", &[Some(&new)]);
    f.fleet(&["rollback", "--on", "manual"]).expect_code(0);
    f.assert_sound("manual", &[Some(&old[2])]);
    f.assert_sound("early", &[Some(&old[0])]);
    f.assert_sound("units", &[Some(&old[1])]);
}

#[test]
fn lost_connection_after_activation_reverts_by_itself_and_the_host_comes_back() {
    let f = Fleet::start([HostSpec::new("cutoff"), HostSpec::new("good")]);
    f.fleet(&["apply"]).expect_code(0);
    let old = [current(&f, "cutoff").unwrap(), current(&f, "good").unwrap()];

    f.set_config(
        "cutoff",
        &config_with("cutoff", "fleet.network = \"down\";"),
    );
    f.set_config("good", &config("good", &["htop", "jq"]));
    let run = f.fleet(&["apply", "--json", "--confirm-timeout", "4"]);
    run.expect_code(1);
    assert_eq!(run.outcomes()["cutoff"], "rolled-back");
    assert_eq!(run.outcomes()["good"], "applied");
    assert!(
        run.detail("cutoff").contains("reverted"),
        "{}",
        run.detail("cutoff")
    );
    let good = current(&f, "good").unwrap();
    assert_ne!(good, old[1]);
    f.assert_sound("cutoff", &[Some(&old[0])]);
    f.assert_sound("good", &[Some(&good)]);
    assert_eq!(
        f.sh(
            "cutoff",
            "ip -o link show eth0 | grep -c 'state UP' || true"
        ),
        "1",
        "the old system brought the network back"
    );

    // The host answers again: fixing the configuration and re-running works.
    f.set_config("cutoff", &config("cutoff", &["htop", "jq"]));
    let again = f.fleet(&["apply", "--json"]);
    again.expect_code(0);
    assert_eq!(again.outcomes()["cutoff"], "applied");
    let now = current(&f, "cutoff").unwrap();
    f.assert_sound("cutoff", &[Some(&now)]);
    f.assert_sound("good", &[Some(&good)]);
}

#[test]
fn connection_cut_during_activation_the_activation_finishes_and_fleet_finds_out() {
    let f = Fleet::start([HostSpec::new("flaky")]);
    f.fleet(&["apply"]).expect_code(0);
    let old = current(&f, "flaky").unwrap();
    f.set_config("flaky", &config("flaky", &["htop", "tmux"]));
    gate_activation(&f, "flaky");

    let mut run = f.spawn(&["apply", "--json", "--confirm-timeout", "60"]);
    run.wait_for_event("flaky to activate", LONG, |e| {
        phase(e, "flaky", "activating")
    });
    let new = planned_target(&run.events(), "flaky");
    wait_until("the activation to switch /run/current-system", LONG, || {
        current(&f, "flaky").as_deref() == Some(new.as_str())
    });
    // Every SSH session dies while switch-to-configuration is still running.
    f.tb.stop_sshd("flaky").unwrap();
    f.tb.start_sshd("flaky").unwrap();
    release_gate(&f, "flaky");
    let run = run.finish(LONG);
    run.expect_code(0);
    assert_eq!(run.outcomes()["flaky"], "applied");
    assert!(
        run.stdout.contains("connection lost during activation"),
        "fleet noticed the cut"
    );
    f.assert_sound("flaky", &[Some(&new)]);
    assert_ne!(new, old);
}

/// Ctrl-C while copying: nothing is activated, nothing partial is left, exit 130.
#[test]
fn ctrl_c_during_the_copy_activates_nothing_and_exits_130() {
    let f = Fleet::start([
        HostSpec::new("pi").rate_mbit(8),
        HostSpec::new("nas").rate_mbit(8),
    ]);
    f.fleet(&["apply"]).expect_code(0);
    let old = [current(&f, "pi").unwrap(), current(&f, "nas").unwrap()];
    for h in ["pi", "nas"] {
        f.set_config(h, &bench_config(h, 20, 20));
    }

    let mut run = f.spawn(&["apply", "--json"]);
    for h in ["pi", "nas"] {
        run.wait_for_event("both hosts in the middle of their copy", LONG, |e| {
            mid_copy(e, h)
        });
    }
    run.interrupt();
    let run = run.finish(LONG);
    run.expect_code(130);
    for (h, o) in run.outcomes() {
        assert_eq!(o, "skipped", "{h}");
    }
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    for (i, h) in ["pi", "nas"].iter().enumerate() {
        f.assert_store_clean(h);
        f.assert_sound(h, &[Some(&old[i])]);
    }

    // A re-run finishes the job.
    let again = f.fleet(&["apply", "--json"]);
    again.expect_code(0);
    for (i, h) in ["pi", "nas"].iter().enumerate() {
        assert_eq!(again.outcomes()[*h], "applied");
        let now = current(&f, h).unwrap();
        assert_ne!(now, old[i]);
        f.assert_sound(h, &[Some(&now)]);
    }
}

/// Ctrl-C while a host activates: that activation finishes (and is confirmed), nothing new
/// starts, exit 130. A second Ctrl-C aborts at once; the host still ends on one system.
#[test]
fn ctrl_c_during_activation_lets_it_finish_starts_nothing_new_and_a_second_one_aborts() {
    let f = Fleet::start([HostSpec::new("a"), HostSpec::new("b")]);
    f.fleet(&["apply"]).expect_code(0);
    let old = [current(&f, "a").unwrap(), current(&f, "b").unwrap()];
    for h in ["a", "b"] {
        f.set_config(h, &config(h, &["htop", "nano"]));
        gate_activation(&f, h);
    }

    // One activation at a time: whichever host activates first holds the only slot.
    let mut run = f.spawn(&["apply", "--json", "--parallel", "1"]);
    let first = run.wait_for_event("a host to activate", LONG, |e| {
        e["type"] == "phase" && e["phase"] == "activating"
    });
    let first = first["host"].as_str().unwrap().to_owned();
    let (i_first, other) = if first == "a" { (0, "b") } else { (1, "a") };
    let i_other = 1 - i_first;
    let new_first = planned_target(&run.events(), &first);
    wait_until("the activation to reach the gate", LONG, || {
        current(&f, &first).as_deref() == Some(new_first.as_str())
    });
    run.interrupt();
    wait_until("fleet to take the interruption", LONG, || {
        run.events().iter().any(|e| is(e, other, "outcome"))
    });
    release_gate(&f, &first);
    let run = run.finish(LONG);
    run.expect_code(130);
    assert_eq!(
        run.outcomes()[&first],
        "applied",
        "the running activation finished"
    );
    assert_eq!(run.outcomes()[other], "skipped", "nothing new was started");
    assert!(
        !run.json_lines()
            .iter()
            .any(|e| phase(e, other, "activating")),
        "{other} never started to activate"
    );
    f.assert_sound(&first, &[Some(&new_first)]);
    f.assert_sound(other, &[Some(&old[i_other])]);
    // Confirmed after the Ctrl-C, so it stays on the new system.
    assert_eq!(
        f.sh(&first, "cat /run/fleet/result-* | sort -u"),
        "confirmed",
        "the activation was confirmed"
    );
    f.sh(other, "rm -f /run/fleet-standin/activations.log");

    // Now `other`, with a second Ctrl-C: fleet exits at once; the detached activation goes
    // on, is never confirmed, and the host reverts by itself.
    gate_activation(&f, other);
    let mut run = f.spawn(&["apply", "--json", "--confirm-timeout", "3"]);
    run.wait_for_event("the other host to activate", LONG, |e| {
        phase(e, other, "activating")
    });
    let new_other = planned_target(&run.events(), other);
    wait_until("the activation to reach the gate", LONG, || {
        current(&f, other).as_deref() == Some(new_other.as_str())
    });
    run.interrupt();
    wait_until("the first Ctrl-C to be seen", LONG, || {
        run.stderr_so_far().contains("Ctrl-C again to abort")
    });
    // The second Ctrl-C (again until fleet is gone: one sent before fleet listens again would
    // count as nothing).
    wait_until("fleet to abort", LONG, || {
        run.interrupt();
        std::thread::sleep(Duration::from_millis(200));
        !run.running()
    });
    let run = run.finish(LONG);
    run.expect_code(130);
    release_gate(&f, other);
    wait_until("the unconfirmed host to revert by itself", LONG, || {
        f.sh(
            other,
            "cat /run/fleet/result-* 2>/dev/null | sort -u | tr '\\n' ' '",
        )
        .contains("rolled-back")
    });
    f.assert_sound(other, &[Some(&old[i_other])]);
    f.assert_sound(&first, &[Some(&new_first)]);
}

/// One host on a very slow link, two fast ones, the same closure (`mb` MiB of bench paths) for
/// all three: the fast ones are applied (outcome events) before the slow one has even received
/// its copy.
fn slow_host_run(mb: u32, extra: &[&str]) {
    let f = Fleet::start([
        HostSpec::new("slow").rate_mbit(4),
        HostSpec::new("fast1"),
        HostSpec::new("fast2"),
    ]);
    for h in ["slow", "fast1", "fast2"] {
        f.set_config(h, &bench_config(h, 20, mb));
    }
    let mut args = vec!["apply", "--json"];
    args.extend_from_slice(extra);
    let run = f.fleet(&args);
    run.expect_code(0);
    for (h, o) in run.outcomes() {
        assert_eq!(o, "applied", "{h}");
    }
    let events = run.json_lines();
    let slow_copied = at(&events, "slow starts to activate", |e| {
        phase(e, "slow", "activating")
    });
    for h in ["fast1", "fast2"] {
        let done = at(&events, "outcome of a fast host", |e| is(e, h, "outcome"));
        assert!(
            done < slow_copied,
            "{h} got its outcome at {done} ms, after the slow host's copy ended ({slow_copied} ms)"
        );
    }
    for h in ["slow", "fast1", "fast2"] {
        let now = current(&f, h).expect("runs its new system");
        assert_eq!(now, planned_target(&events, h));
        f.assert_sound(h, &[Some(&now)]);
    }
}

#[test]
fn a_very_slow_host_does_not_hold_back_the_others() {
    // About 6 MiB on the wire once compressed: 12 s at 4 Mbit/s.
    slow_host_run(20, &[]);
}

#[test]
fn a_very_slow_host_does_not_hold_back_the_others_over_the_serve_protocol() {
    // Uncompressed: 8 MiB, 16 s at 4 Mbit/s; the slow host falls more than the fan-out's
    // 4 MiB buffer behind, so it is detached and fed on its own.
    slow_host_run(8, &["--no-compress"]);
}

#[test]
fn a_wrong_sudo_password_fails_that_host_cleanly_asked_once_others_fine() {
    let mut f = Fleet::start([HostSpec::new("nas").sudo_password(), HostSpec::new("pi")]);
    let asked = f.dir.join("password-asked");
    let wrong = "not-the-sudo-password-71";
    f.env = vec![(
        "FLEET_SUDO_PASSWORD_COMMAND".into(),
        format!("echo asked >> '{}'; echo {wrong}", asked.display()),
    )];
    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(1);
    assert_eq!(run.outcomes()["nas"], "failed");
    assert_eq!(run.outcomes()["pi"], "applied");
    let why = run.detail("nas");
    assert!(why.contains("sudo"), "the error says sudo refused: {why}");
    assert_eq!(
        std::fs::read_to_string(&asked).unwrap().lines().count(),
        1,
        "asked once, not once per attempt or host"
    );
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains(wrong), "the password is never printed");
    }
    assert!(f.store_paths("nas").is_empty(), "nothing was copied");
    f.assert_sound("nas", &[None]);
    let pi = current(&f, "pi").unwrap();
    f.assert_sound("pi", &[Some(&pi)]);
}
