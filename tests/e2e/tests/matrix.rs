//! The Nix version matrix: the core cases (plan, apply over both copy routes, status, rollback,
//! a failing activation rolled back) on hosts running Debian 12's Nix 2.8, trixie's Nix 2.26 and
//! sid's Nix 2.34 (OpenSSH 10), from a deployer on Nix 2.8 and from one on Nix 2.34, and sshd
//! killed in the middle of a copy into Nix 2.34. Each case
//! ends with `Fleet::assert_sound` on every host. A userland whose root cannot be built because
//! the Debian registry cannot be reached is skipped, saying so; nothing else is.

use fleet_e2e::matrix::root_or_skip;
use fleet_e2e::{named as find, Fleet, HostSpec, Userland};

/// Generous bound for anything that takes seconds.
const LONG: std::time::Duration = std::time::Duration::from_secs(180);

/// A configuration of host `name` with `packages` and extra module text; `run` (unique per
/// test run) goes into `/etc`, so the deployer's Nix builds the systems in every run, even when
/// the machine's store holds those of an earlier run.
fn conf(name: &str, packages: &[&str], extra: &str, run: &str) -> String {
    let pkgs: Vec<String> = packages.iter().map(|p| format!("pkgs.{p}")).collect();
    format!(
        "{{ pkgs, ... }}: {{\n  networking.hostName = \"{name}\";\n  \
         environment.systemPackages = [ {} ];\n  \
         environment.etc.\"fleet-matrix-run\".text = \"{run}\";\n  {extra}\n}}\n",
        pkgs.join(" ")
    )
}

fn run_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}-{}", t.as_nanos(), std::process::id())
}

/// The `copied ...` log lines of a `--json` apply.
fn copied_lines(run: &fleet_e2e::Run) -> Vec<String> {
    run.json_lines()
        .iter()
        .filter(|e| e["type"] == "log" && e["stream"] == "fleet")
        .filter_map(|e| e["line"].as_str())
        .filter(|l| l.starts_with("copied "))
        .map(str::to_owned)
        .collect()
}

/// Which Nix a host runs (`nix-store --version` in its userland), for the log.
fn nix_of(f: &Fleet, host: &str) -> String {
    f.sh(host, "nix-store --version")
}

/// The core cases on every host of `f`, from empty hosts to a failed activation rolled back.
fn core_cases(f: &Fleet, hosts: &[&str]) {
    let id = run_id();
    for h in hosts {
        eprintln!("{h}: {}", nix_of(f, h));
        f.set_config(h, &conf(h, &["htop"], "", &id));
    }
    // plan: everything to install, nothing copied.
    let run = f.fleet(&["plan", "--json"]);
    run.expect_code(0);
    let plan = run.json();
    for h in hosts {
        let p = find(&plan["hosts"], h);
        assert_eq!(p["action"], "install", "{h}");
        assert!(p["current"].is_null(), "{h}");
        assert!(f.store_paths(h).is_empty(), "{h}: plan copies nothing");
    }

    // apply, compressed import (`zstd -dc | nix-store --import` on the host).
    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(0);
    let copied = copied_lines(&run);
    assert_eq!(copied.len(), hosts.len(), "{copied:?}");
    assert!(
        copied.iter().all(|l| l.contains("compressed")),
        "{copied:?}"
    );
    let gen1: Vec<String> = hosts
        .iter()
        .map(|h| {
            assert_eq!(run.outcomes()[*h], "applied", "{h}");
            let cur = f.link(h, "/run/current-system").expect("a system");
            assert_eq!(
                f.link(h, "/etc/nixos/current-configuration/system"),
                Some(cur.clone()),
                "{h}: the deployment package names it"
            );
            f.assert_store_clean(h);
            f.assert_sound(h, &[Some(&cur)]);
            cur
        })
        .collect();

    // status: in sync.
    let run = f.fleet(&["status", "--json"]);
    run.expect_code(0);
    let status = run.json();
    for (h, g) in hosts.iter().zip(&gen1) {
        let st = find(&status, h);
        assert_eq!(st["in_sync"], true, "{h}");
        assert_eq!(st["current"], g.as_str(), "{h}");
        assert_eq!(st["generation"], 1, "{h}");
    }

    // A change, planned as an update, applied over the serve protocol (`--no-compress`).
    for h in hosts {
        f.set_config(h, &conf(h, &["htop", "nano"], "", &id));
    }
    let run = f.fleet(&["plan", "--json"]);
    run.expect_code(0);
    let plan = run.json();
    for (h, g) in hosts.iter().zip(&gen1) {
        let p = find(&plan["hosts"], h);
        assert_eq!(p["action"], "update", "{h}");
        assert_eq!(p["current"], g.as_str(), "{h}");
    }
    let run = f.fleet(&["apply", "--json", "--no-compress"]);
    run.expect_code(0);
    let copied = copied_lines(&run);
    assert_eq!(copied.len(), hosts.len(), "{copied:?}");
    assert!(
        copied.iter().all(|l| !l.contains("compressed")),
        "{copied:?}"
    );
    let gen2: Vec<String> = hosts
        .iter()
        .zip(&gen1)
        .map(|(h, g1)| {
            assert_eq!(run.outcomes()[*h], "applied", "{h}");
            let cur = f.link(h, "/run/current-system").expect("a system");
            assert_ne!(&cur, g1, "{h}");
            assert!(f.sh(h, &format!("ls {cur}/sw/bin")).contains("nano"), "{h}");
            f.assert_store_clean(h);
            f.assert_sound(h, &[Some(&cur)]);
            cur
        })
        .collect();

    // rollback: every host back to its first generation.
    let run = f.fleet(&["rollback", "--json"]);
    run.expect_code(0);
    for (h, g1) in hosts.iter().zip(&gen1) {
        assert_eq!(run.outcomes()[*h], "rolled-back", "{h}");
        f.assert_sound(h, &[Some(g1)]);
    }
    let run = f.fleet(&["status", "--json"]);
    run.expect_code(0);
    let status = run.json();
    for (h, g2) in hosts.iter().zip(&gen2) {
        let st = find(&status, h);
        assert_eq!(st["in_sync"], false, "{h}: fleet.toml still wants {g2}");
        assert_eq!(st["desired"], g2.as_str(), "{h}");
    }

    // A fault: an activation that switches and then fails (a failed unit) is rolled back, as
    // asked.
    for h in hosts {
        f.set_config(h, &conf(h, &[], "fleet.activationFails = \"units\";", &id));
    }
    let run = f.fleet(&["apply", "--json", "--rollback-on-failed-units"]);
    run.expect_code(1);
    for (h, g1) in hosts.iter().zip(&gen1) {
        assert_eq!(run.outcomes()[*h], "rolled-back", "{h}");
        assert!(run.detail(h).contains("failed"), "{h}: {}", run.detail(h));
        f.assert_store_clean(h);
        f.assert_sound(h, &[Some(g1)]);
        assert_eq!(
            f.link(h, "/nix/var/nix/profiles/system").as_deref(),
            Some(g1.as_str()),
            "{h}"
        );
    }
}

/// The hosts of a case: each `(name, userland, sudo)` whose userland is available.
fn specs(case: &str, hosts: &[(&str, Userland, bool)]) -> Vec<HostSpec> {
    hosts
        .iter()
        .filter(|(_, u, _)| {
            *u == Userland::Machine || root_or_skip(*u, &format!("{case} on {u}")).is_some()
        })
        .map(|(n, u, sudo)| {
            let s = HostSpec::new(*n).userland(*u);
            if *sudo {
                s.sudo_password()
            } else {
                s
            }
        })
        .collect()
}

#[test]
fn deployer_nix_2_8_on_hosts_nix_2_8_2_26_and_2_34() {
    let specs = specs(
        "deployer 2.8",
        &[
            ("nix28", Userland::Machine, false),
            ("nix226", Userland::Trixie, false),
            ("nix234", Userland::Sid, true),
        ],
    );
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let f = Fleet::start(specs);
    core_cases(&f, &names);
}

#[test]
fn deployer_nix_2_34_on_hosts_nix_2_8_and_2_34() {
    let Some(sid) = root_or_skip(Userland::Sid, "the Nix 2.34 deployer") else {
        return;
    };
    let mut f = Fleet::start([
        HostSpec::new("from234-nix28").sudo_password(),
        HostSpec::new("from234-nix234").userland(Userland::Sid),
    ]);
    f.use_deployer_nix(&sid);
    let hosts = ["from234-nix28", "from234-nix234"];
    core_cases(&f, &hosts);
    // fleet evaluated, built and read its store through the 2.34 wrappers.
    let log = std::fs::read_to_string(f.deployer_nix_log()).expect("the wrappers ran");
    for call in [
        "/usr/bin/nix-instantiate",
        "/usr/bin/nix-store --realise",
        "/usr/bin/nix-store --serve",
    ] {
        assert!(log.contains(call), "fleet never ran {call}:\n{log}");
    }
    // The machine's Nix 2.8 still reads the store 2.34 wrote.
    let out = std::process::Command::new("nix-store")
        .args(["--verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Nix 2.34 behind OpenSSH 10 (sessions are `sshd-session` processes): sshd killed in the middle
/// of a serve-protocol copy fails that host, 2.34 registers no partial path, and a re-run
/// completes it.
#[test]
fn sshd_killed_mid_copy_into_nix_2_34_leaves_no_partial_path() {
    if root_or_skip(Userland::Sid, "sshd killed mid-copy on sid").is_none() {
        return;
    }
    let f = Fleet::start([HostSpec::new("cut234").userland(Userland::Sid).rate_mbit(8)]);
    let id = run_id();
    f.set_config(
        "cut234",
        &conf(
            "cut234",
            &["htop"],
            "fleet.bench = { paths = 10; totalMB = 10; };",
            &id,
        ),
    );
    let mut run = f.spawn(&["apply", "--json", "--no-compress"]);
    run.wait_for_event("cut234 in the middle of its copy", LONG, |e| {
        e["host"] == "cut234"
            && e["type"] == "progress"
            && e["done_bytes"].as_u64().unwrap_or(0) > 0
            && e["done_bytes"].as_u64() < e["total_bytes"].as_u64()
    });
    f.tb.stop_sshd("cut234").unwrap();
    let run = run.finish(LONG);
    run.expect_code(1);
    assert_eq!(run.outcomes()["cut234"], "failed");
    assert!(
        run.detail("cut234").contains("lost the connection"),
        "{}",
        run.detail("cut234")
    );
    f.assert_store_clean("cut234");
    f.assert_sound("cut234", &[None]);

    f.tb.start_sshd("cut234").unwrap();
    let again = f.fleet(&["apply", "--json", "--no-compress"]);
    again.expect_code(0);
    assert_eq!(again.outcomes()["cut234"], "applied");
    let cur = f.link("cut234", "/run/current-system").expect("a system");
    f.assert_store_clean("cut234");
    f.assert_sound("cut234", &[Some(&cur)]);
}
