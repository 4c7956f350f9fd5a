//! `fleet apply` end to end: real fleet binary, real sshd, a private Nix store per host.

use std::collections::BTreeSet;

use fleet_e2e::{config, Fleet, HostSpec};

/// The toplevel and package the host's deployment package names.
fn deployed(f: &Fleet, host: &str) -> (String, String) {
    let package = f
        .link(host, "/etc/nixos/current-configuration")
        .expect("deployment package linked");
    let toplevel = f
        .link(host, "/etc/nixos/current-configuration/system")
        .expect("package has a system link");
    (toplevel, package)
}

fn local_closure(path: &str) -> BTreeSet<String> {
    let out = std::process::Command::new("nix-store")
        .args(["--query", "--requisites", path])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn three_hosts_go_from_empty_to_running_in_one_apply_with_one_password() {
    let mut f = Fleet::start([
        HostSpec::new("pi1").system("aarch64-linux").tag("pi"),
        HostSpec::new("pi2").system("aarch64-linux").tag("pi"),
        HostSpec::new("nas").sudo_password(),
    ]);
    f.set_config("nas", &config("nas", &["git", "tmux"]));
    let asked = f.dir.join("password-asked");
    f.env = vec![(
        "FLEET_SUDO_PASSWORD_COMMAND".into(),
        format!(
            "echo asked >> '{}'; printf '%s\\n' '{}'",
            asked.display(),
            f.tb.sudo_password()
        ),
    )];
    for h in ["pi1", "pi2", "nas"] {
        assert!(
            f.store_paths(h).is_empty(),
            "{h} starts with an empty store"
        );
        assert_eq!(f.link(h, "/run/current-system"), None);
    }

    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(0);
    for (h, o) in run.outcomes() {
        assert_eq!(o, "applied", "{h}");
    }
    assert_eq!(
        std::fs::read_to_string(&asked).unwrap().lines().count(),
        1,
        "the sudo password is asked once for the whole run"
    );
    let events = run.json_lines();
    assert!(events
        .iter()
        .any(|e| e["host"] == "nas" && e["type"] == "progress"));
    // One event stream: evaluation, build, reaching the hosts and reading their state come
    // before the plan and the copy.
    let copy = events
        .iter()
        .position(|e| e["type"] == "phase" && e["phase"] == "copying")
        .expect("a copying phase");
    for t in [
        "reaching",
        "eval-started",
        "eval-finished",
        "build-started",
        "build-finished",
        "connected",
        "facts",
        "plan",
    ] {
        let at = events.iter().position(|e| e["type"] == t);
        assert!(
            at.is_some_and(|i| i < copy),
            "{t} before the copy:\n{}",
            run.stdout
        );
    }
    for h in ["pi1", "pi2", "nas"] {
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "facts" && e["host"] == h),
            "{h}'s state"
        );
    }

    for h in ["pi1", "pi2", "nas"] {
        let (toplevel, package) = deployed(&f, h);
        assert_eq!(
            f.link(h, "/run/current-system").as_deref(),
            Some(toplevel.as_str())
        );
        assert_eq!(
            f.link(h, "/nix/var/nix/profiles/system").as_deref(),
            Some(toplevel.as_str())
        );
        assert_eq!(
            f.link(h, "/nix/var/nix/profiles/fleet/deployment")
                .as_deref(),
            Some(package.as_str()),
            "the deployment package is a GC root: its own profile's generation"
        );
        // The package: configuration, pinned nixpkgs, system, switch script.
        let conf = f.sh(h, "cat /etc/nixos/current-configuration/configuration.nix");
        assert!(
            conf.contains(&format!("networking.hostName = \"{h}\"")),
            "{conf}"
        );
        assert!(f
            .sh(h, "ls /etc/nixos/current-configuration/nixpkgs/")
            .contains("nixos"));
        assert_eq!(
            f.sh(
                h,
                "test -x /etc/nixos/current-configuration/switch && echo yes"
            ),
            "yes"
        );
        let record: serde_json::Value =
            serde_json::from_str(&f.sh(h, &fleet_e2e::record_cmd(&toplevel))).unwrap();
        assert_eq!(record["toplevel"], toplevel.as_str());
        assert!(record["by"].as_str().unwrap().starts_with("tester@"));
        // Nothing was built on the target: its store holds exactly the package's closure,
        // which is what was copied.
        assert_eq!(
            f.store_paths(h),
            local_closure(&package),
            "{h}'s store gained only the copied paths"
        );
        f.assert_sound(h, &[Some(&toplevel)]);
    }
    // The deployment package works without fleet.
    let before = f.sh("pi1", "wc -l < /run/fleet-standin/activations.log");
    f.sh("pi1", "/etc/nixos/current-configuration/switch switch");
    let after = f.sh("pi1", "wc -l < /run/fleet-standin/activations.log");
    assert_eq!(
        after.parse::<u32>().unwrap(),
        before.parse::<u32>().unwrap() + 1
    );
    let (top_pi1, _) = deployed(&f, "pi1");
    f.assert_sound("pi1", &[Some(&top_pi1)]);

    // A second apply with no change: all unchanged, nothing copied.
    let stores: Vec<_> = ["pi1", "pi2", "nas"].map(|h| f.store_paths(h)).to_vec();
    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(0);
    for (h, o) in run.outcomes() {
        assert_eq!(o, "unchanged", "{h}");
    }
    assert!(
        !run.json_lines().iter().any(|e| e["type"] == "progress"),
        "nothing copied"
    );
    for (i, h) in ["pi1", "pi2", "nas"].iter().enumerate() {
        assert_eq!(f.store_paths(h), stores[i], "{h}: nothing copied");
    }
    assert_eq!(
        std::fs::read_to_string(&asked).unwrap().lines().count(),
        2,
        "once per run"
    );
}

#[test]
fn failed_activation_rolls_back_lost_host_reverts_down_host_fails_others_apply() {
    let f = Fleet::start([
        HostSpec::new("good"),
        HostSpec::new("breaks"),
        HostSpec::new("cutoff"),
        HostSpec::new("down"),
    ]);
    f.fleet(&["apply", "--on", "good,breaks,cutoff"])
        .expect_code(0);
    let old: Vec<String> = ["good", "breaks", "cutoff"]
        .iter()
        .map(|h| deployed(&f, h).0)
        .collect();

    f.set_config("good", &config("good", &["htop", "jq"]));
    f.set_config(
        "breaks",
        "{ ... }: { networking.hostName = \"breaks\"; fleet.activationFails = \"early\"; }",
    );
    f.set_config(
        "cutoff",
        "{ ... }: { networking.hostName = \"cutoff\"; fleet.network = \"down\"; }",
    );
    f.tb.stop_sshd("down").unwrap();

    let run = f.fleet(&["apply", "--json", "--confirm-timeout", "5"]);
    run.expect_code(1);
    let outcomes = run.outcomes();
    assert_eq!(outcomes["good"], "applied");
    assert_eq!(outcomes["breaks"], "rolled-back");
    assert_eq!(outcomes["cutoff"], "rolled-back");
    assert_eq!(outcomes["down"], "failed");

    let new_good = deployed(&f, "good").0;
    assert_ne!(new_good, old[0]);
    f.assert_sound("good", &[Some(&new_good)]);
    f.assert_sound("breaks", &[Some(&old[1])]);
    f.assert_sound("cutoff", &[Some(&old[2])]);
    assert_eq!(deployed(&f, "breaks").0, old[1], "package link back too");
    assert_eq!(deployed(&f, "cutoff").0, old[2]);
    f.tb.start_sshd("down").unwrap();
    f.assert_sound("down", &[None]);
}

#[test]
fn no_compress_copies_over_the_serve_protocol() {
    let f = Fleet::start([HostSpec::new("h1"), HostSpec::new("h2").sudo_password()]);
    let run = f.fleet(&["apply", "--json", "--no-compress"]);
    run.expect_code(0);
    let logs: Vec<String> = run
        .json_lines()
        .iter()
        .filter(|e| e["type"] == "log" && e["stream"] == "fleet")
        .map(|e| e["line"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        logs.iter().filter(|l| l.starts_with("copied ")).count(),
        2,
        "{logs:?}"
    );
    assert!(logs.iter().all(|l| !l.contains("compressed")), "{logs:?}");
    for h in ["h1", "h2"] {
        let (toplevel, package) = deployed(&f, h);
        assert_eq!(f.store_paths(h), local_closure(&package));
        f.assert_sound(h, &[Some(&toplevel)]);
    }
}
