//! The relay end to end (docs/relay.md): hosts behind `relay = "nas"` get their closure from
//! nas over the LAN, the deployer sending it once; a relay that dies mid-run leaves its hosts
//! to direct copies in the same run; and neither the sudo password nor the run's private key is
//! ever in a process's argv or environment, on the relay or the hosts. After every run, no key,
//! `authorized_keys` line or temporary folder is left.
//!
//! The tests share `/tmp` (the simulated hosts' is the machine's), so they run one at a time.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;
use std::time::Duration;

use fleet_e2e::scan::scanning;
use fleet_e2e::{config_with, current, named, Fleet, HostSpec, Run};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const DOWNSTREAM: [&str; 3] = ["pi1", "pi2", "pi3"];

/// A system of about 6 MB of NAR (real shared libraries: about 2 MB compressed), the same
/// packages on every host.
fn big(name: &str) -> String {
    config_with(name, "fleet.bench = { paths = 6; totalMB = 6; };")
}

fn fleet_with_relay(nas: HostSpec, pis: impl Fn(&str) -> HostSpec) -> Fleet {
    let mut specs = vec![nas];
    specs.extend(DOWNSTREAM.iter().map(|n| pis(n)));
    let f = Fleet::start(specs);
    for h in ["nas"].iter().chain(DOWNSTREAM.iter()) {
        f.set_config(h, &big(h));
    }
    f.edit_toml(|t| {
        let mut t = t;
        for pi in DOWNSTREAM {
            t = t.replace(
                &format!("[hosts.{pi}]\n"),
                &format!("[hosts.{pi}]\nrelay = \"nas\"\n"),
            );
        }
        t
    });
    f
}

fn relay_dirs() -> Vec<String> {
    std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("fleet-relay."))
        .collect()
}

fn authorized_keys(f: &Fleet, host: &str, user_home: &str) -> String {
    f.sh(
        host,
        &format!("cat {user_home}/.ssh/authorized_keys 2>/dev/null || true"),
    )
}

/// Nothing of the run is left: no line in any `authorized_keys`, no temporary folder.
fn assert_nothing_left(f: &Fleet, home: &str) {
    for h in ["nas"].iter().chain(DOWNSTREAM.iter()) {
        let keys = authorized_keys(f, h, home);
        assert!(!keys.contains("fleet-relay-"), "{h} keeps a line: {keys}");
    }
    assert_eq!(relay_dirs(), Vec::<String>::new(), "temporary folders left");
}

fn counter(dev: &str, what: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{dev}/statistics/{what}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes through the bridge: (the deployer's uplink, hosts → deployer, per host (into, from)).
fn counters(f: &Fleet) -> (u64, u64, Vec<(u64, u64)>) {
    let n = f.tb.instance();
    let bridge = format!("fltbr{n}");
    let per_host = (0..f.tb.hosts().len())
        .map(|i| {
            let veth = format!("flt{n}h{i}");
            (counter(&veth, "tx_bytes"), counter(&veth, "rx_bytes"))
        })
        .collect();
    (
        counter(&bridge, "tx_bytes"),
        counter(&bridge, "rx_bytes"),
        per_host,
    )
}

fn events_of(run: &Run, kind: &str) -> Vec<serde_json::Value> {
    run.json_lines()
        .into_iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

#[test]
fn hosts_behind_a_relay_get_the_closure_from_it_and_nothing_is_left() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let f = fleet_with_relay(HostSpec::new("nas"), |n| HostSpec::new(n).tag("pi"));

    // Saved, then applied from the file (as the benchmark does).
    let plan = f.fleet(&["plan", "--out", "plan.json"]);
    plan.expect_code(0);
    for pi in DOWNSTREAM {
        let line = plan
            .stdout
            .lines()
            .find(|l| l.contains(pi))
            .unwrap_or_else(|| panic!("{pi} not in the plan: {}", plan.stdout));
        assert!(line.contains("via nas"), "{line}");
    }
    let direct = f.fleet(&["plan", "--no-relay"]);
    assert!(!direct.stdout.contains("via nas"), "{}", direct.stdout);

    let before = counters(&f);
    let run = f.fleet(&["apply", "plan.json", "--json"]);
    let after = counters(&f);
    eprintln!("{}", run.stderr);
    run.expect_code(0);
    let plan = events_of(&run, "plan");
    for pi in DOWNSTREAM {
        assert_eq!(named(&plan[0]["plan"], pi)["relay"], "nas");
        assert_eq!(run.outcomes()[pi], "applied");
        let toplevel = current(&f, pi).expect("activated");
        f.assert_sound(pi, &[Some(&toplevel)]);
    }
    assert_eq!(run.outcomes()["nas"], "applied");
    assert!(named(&plan[0]["plan"], "nas").get("relay").is_none());
    let relayed: BTreeSet<String> = events_of(&run, "relayed")
        .iter()
        .filter(|e| e["relay"] == "nas")
        .map(|e| e["host"].as_str().unwrap().to_owned())
        .collect();
    let mut all: BTreeSet<String> = DOWNSTREAM.iter().map(|s| s.to_string()).collect();
    all.insert("nas".into());
    assert_eq!(relayed, all);
    assert!(events_of(&run, "relay-failed").is_empty());

    // Bytes: the relay sent the three hosts their closures over the LAN; the deployer sent
    // them only control traffic.
    let delta = |a: u64, b: u64| b.saturating_sub(a);
    let uplink = delta(before.0, after.0);
    let to_deployer = delta(before.1, after.1);
    let relay_sent = delta(before.2[0].1, after.2[0].1);
    let into_pis: u64 = (1..=3).map(|i| delta(before.2[i].0, after.2[i].0)).sum();
    let one_closure = relay_sent / 3;
    // An upper bound of the deployer's bytes to pi1..3: what they received, less what the
    // relay sent (to them, or to the deployer).
    let from_deployer = (into_pis + to_deployer).saturating_sub(relay_sent);
    eprintln!(
        "uplink {uplink}, relay sent {relay_sent}, into pis {into_pis}, hosts to deployer \
         {to_deployer}, deployer to pis ≤ {from_deployer}"
    );
    assert!(
        one_closure > 1_000_000,
        "the hops carried {relay_sent} bytes"
    );
    assert!(
        from_deployer < one_closure / 4,
        "the deployer sent the relayed hosts {from_deployer} bytes (one closure: {one_closure})"
    );
    // nas, deployed too, imports from the files it holds for the others: the closure crosses
    // the uplink once (fleet direct: four times).
    assert!(
        uplink < one_closure * 3 / 2,
        "the uplink carried {uplink} bytes for a closure of {one_closure}"
    );

    assert_nothing_left(&f, "/root");
}

#[test]
fn a_relay_that_dies_mid_run_leaves_its_hosts_to_direct_copies() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // nas's link is slow, so the copy to it is still running when it dies.
    let f = fleet_with_relay(HostSpec::new("nas").rate_mbit(8), |n| {
        HostSpec::new(n).tag("pi")
    });
    let dirs_before: BTreeSet<String> = relay_dirs().into_iter().collect();
    // Only the pis: fleet connects to nas just to relay.
    let mut running = f.spawn(&["apply", "--json", "--on", "@pi"]);
    fleet_e2e::wait_until(
        "the first segment to be on its way to nas",
        Duration::from_secs(300),
        || {
            relay_dirs().iter().any(|d| {
                !dirs_before.contains(d)
                    && std::fs::metadata(format!("/tmp/{d}/s0")).is_ok_and(|m| m.len() > 100_000)
            })
        },
    );
    f.tb.stop_sshd("nas").unwrap();
    let _ = running.running();
    let run = running.finish(Duration::from_secs(300));
    // The dead relay's own folder could not be removed (fleet could not reach it any more): it
    // holds the key, which no host accepts any more. Removed here for the next test.
    let left: Vec<String> = relay_dirs()
        .into_iter()
        .filter(|d| !dirs_before.contains(d))
        .collect();
    for d in &left {
        let _ = std::fs::remove_dir_all(format!("/tmp/{d}"));
    }
    assert!(left.len() <= 1, "{left:?}");
    eprintln!("{}", run.stderr);
    run.expect_code(0);
    let failed = events_of(&run, "relay-failed");
    let hosts: BTreeSet<&str> = failed.iter().filter_map(|e| e["host"].as_str()).collect();
    assert_eq!(hosts, DOWNSTREAM.into_iter().collect(), "{failed:?}");
    for e in &failed {
        assert_eq!(e["relay"], "nas");
        // It died mid-run: it was reached first.
        assert!(
            !e["error"].as_str().unwrap().starts_with("unreachable"),
            "{e}"
        );
    }
    for pi in DOWNSTREAM {
        assert_eq!(run.outcomes()[pi], "applied");
        let toplevel = current(&f, pi).expect("activated");
        f.assert_sound(pi, &[Some(&toplevel)]);
        let keys = authorized_keys(&f, pi, "/root");
        assert!(!keys.contains("fleet-relay-"), "{pi} keeps a line: {keys}");
    }
    assert_eq!(current(&f, "nas"), None, "nas was not deployed");
}

/// Runs `fleet ARGS` while scanning every process of the run, the relay's and the hosts'
/// (their network namespaces) for `needles`, plus a control on the relay.
fn apply_scanned(f: &Fleet, args: &[&str], needles: &[&str]) -> (Run, Vec<(usize, String)>) {
    let netns: BTreeSet<u64> = ["nas"]
        .iter()
        .chain(DOWNSTREAM.iter())
        .map(|h| {
            std::fs::metadata(format!("/run/netns/{}", f.tb.host(h).netns))
                .unwrap()
                .ino()
        })
        .collect();
    let mut needles: Vec<Vec<u8>> = needles.iter().map(|s| s.as_bytes().to_vec()).collect();
    needles.push(b"control-relay-77".to_vec());
    f.sh(
        "nas",
        "FLEET_CONTROL=control-relay-77 setsid sleep 120 >/dev/null 2>&1 </dev/null &",
    );
    let mut run = f.spawn(args);
    let pid = run.pid();
    let ((), scans, hits) = scanning(needles, pid, netns, Duration::from_millis(5), || {
        fleet_e2e::wait_until("fleet to finish", Duration::from_secs(400), || {
            !run.running()
        })
    });
    assert!(scans >= 10, "{scans} scans");
    (run.finish(Duration::from_secs(10)), hits)
}

#[test]
fn the_password_and_the_key_are_in_no_argv_or_environment() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut f = fleet_with_relay(HostSpec::new("nas").sudo_password(), |n| {
        HostSpec::new(n).sudo_password()
    });
    let password = f.tb.sudo_password().to_owned();
    // The password comes from a file through a command (as in CI), so it is in no
    // environment of the test's own making.
    let pw_file = f.dir.join("pw");
    std::fs::write(&pw_file, format!("{password}\n")).unwrap();
    f.env = vec![(
        "FLEET_SUDO_PASSWORD_COMMAND".into(),
        format!("cat '{}'", pw_file.display()),
    )];
    let home = f.sh(
        "pi1",
        &format!("getent passwd {} | cut -d: -f6", f.tb.sudo_user()),
    );
    let (run, hits) = apply_scanned(
        &f,
        &["apply", "--json"],
        &[&password, "OPENSSH PRIVATE KEY", "b3BlbnNzaC1rZXktdjEA"],
    );
    eprintln!("{}", run.stderr);
    run.expect_code(0);
    let control = 3;
    assert!(
        hits.iter().any(|(i, _)| *i == control),
        "control: the scanner sees processes on the relay"
    );
    let leaks: Vec<&(usize, String)> = hits.iter().filter(|(i, _)| *i < control).collect();
    assert!(leaks.is_empty(), "in argv or environ: {leaks:?}");
    assert!(!run.stdout.contains(&password) && !run.stderr.contains(&password));
    assert!(!run.stdout.contains("PRIVATE KEY") && !run.stderr.contains("PRIVATE KEY"));
    // pi1..3 through nas, and nas from the files it holds (as root, through sudo).
    let relayed = events_of(&run, "relayed");
    assert_eq!(relayed.len(), 4, "{relayed:?}");
    assert_eq!(run.outcomes()["nas"], "applied");
    for pi in DOWNSTREAM {
        assert_eq!(run.outcomes()[pi], "applied");
        f.assert_sound(pi, &[current(&f, pi).as_deref()]);
    }
    assert_nothing_left(&f, home.trim());
}

/// A host whose sshd does not take the hop's key (as with NixOS's `authorizedKeysInHomedir =
/// false`: here its `authorized_keys` is `/dev/null`) falls back to a direct copy alone; the
/// others go through the relay.
#[test]
fn a_host_that_refuses_the_hop_is_copied_directly_alone() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let f = fleet_with_relay(HostSpec::new("nas"), |n| HostSpec::new(n).tag("pi"));
    f.sh(
        "pi3",
        "mkdir -p /root/.ssh && ln -sfn /dev/null /root/.ssh/authorized_keys",
    );
    let run = f.fleet(&["apply", "--json", "--on", "@pi"]);
    run.expect_code(0);
    let failed = events_of(&run, "relay-failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["host"], "pi3");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(
        error.contains("forwarding to pi3 failed (exit 255)")
            && error.contains("Permission denied"),
        "{error}"
    );
    let relayed: BTreeSet<String> = events_of(&run, "relayed")
        .iter()
        .map(|e| e["host"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(relayed, ["pi1".to_owned(), "pi2".to_owned()].into());
    for pi in DOWNSTREAM {
        assert_eq!(run.outcomes()[pi], "applied");
        f.assert_sound(pi, &[current(&f, pi).as_deref()]);
    }
    assert_nothing_left(&f, "/root");
}

/// Ctrl-C while the closure is on its way to the relay: the hosts end `skipped`, and fleet
/// removes what the run placed: the `authorized_keys` lines, the FIFOs (no import left waiting
/// on one), the relay's folder with the key.
#[test]
fn ctrl_c_during_a_relayed_copy_leaves_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let f = fleet_with_relay(HostSpec::new("nas").rate_mbit(4), |n| {
        HostSpec::new(n).tag("pi")
    });
    let dirs_before: BTreeSet<String> = relay_dirs().into_iter().collect();
    let running = f.spawn(&["apply", "--json", "--on", "@pi"]);
    fleet_e2e::wait_until(
        "the first segment to be on its way to nas",
        Duration::from_secs(300),
        || {
            relay_dirs().iter().any(|d| {
                !dirs_before.contains(d)
                    && std::fs::metadata(format!("/tmp/{d}/s0")).is_ok_and(|m| m.len() > 50_000)
            })
        },
    );
    running.interrupt();
    let run = running.finish(Duration::from_secs(120));
    for pi in DOWNSTREAM {
        assert_eq!(run.outcomes()[pi], "skipped", "{pi}");
        assert_eq!(current(&f, pi), None);
        let waiting = f.sh(
            pi,
            "me=$(readlink /proc/self/ns/net); for p in /proc/[0-9]*; do \
             [ \"$(readlink $p/ns/net 2>/dev/null)\" = \"$me\" ] || continue; \
             tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -q 'fleet-rela[y]' && echo $p; done; true",
        );
        assert_eq!(waiting.trim(), "", "{pi}: processes still on the FIFO");
    }
    assert_nothing_left(&f, "/root");
}
