//! The everyday commands end to end: `exec`, `logs`, `generations`, `diff`, `rollback --to`,
//! `gc`, `add`.

use fleet_e2e::{config, named as host, Fleet, HostSpec};

#[test]
fn exec_runs_quoted_words_everywhere_with_sudo_and_reports_failures() {
    let f = Fleet::start([HostSpec::new("a"), HostSpec::new("b").sudo_password()]);

    // Words reach the remote command as they were given: no splitting, no expansion.
    let run = f.fleet(&["exec", "--", "printf", "[%s]", "a b", "$HOME", "it's"]);
    run.expect_code(0);
    for h in ["a", "b"] {
        assert!(
            run.stdout
                .contains(&format!("── {h} (exit 0)\n[a b][$HOME][it's]\n")),
            "{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains("2 hosts: 2 ok, 0 failed"),
        "{}",
        run.stdout
    );

    // Per-host exit codes and both streams in --json; one failure makes the run fail.
    let run = f.fleet(&[
        "exec",
        "--json",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; [ \"$(id -un)\" = root ] || exit 3",
    ]);
    run.expect_code(1);
    let j = run.json();
    for h in ["a", "b"] {
        let r = host(&j, h);
        assert_eq!(r["stdout"], "out\n", "{h}");
        assert_eq!(r["stderr"], "err\n", "{h}");
    }
    // a logs in as root; b as the sudo user.
    assert_eq!(host(&j, "a")["exit_code"], 0);
    assert_eq!(host(&j, "b")["exit_code"], 3);

    // --sudo: root everywhere.
    let run = f.fleet(&["exec", "--sudo", "--prefix", "--", "id", "-u"]);
    run.expect_code(0);
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| *l == "a: 0" || *l == "b: 0")
            .count(),
        2,
        "{}",
        run.stdout
    );
    // b's password (asked once) goes through stdin, never argv: list every process's argv
    // while sudo runs the command.
    let password = f.tb.sudo_password().to_owned();
    let run = f.fleet(&[
        "exec",
        "--sudo",
        "--on",
        "b",
        "--",
        "sh",
        "-c",
        "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done 2>/dev/null",
    ]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("sudo -k -S -p FLEET-SUDO:"),
        "sudo is among the processes:\n{}",
        run.stdout
    );
    assert!(!run.stdout.contains(&password), "{}", run.stdout);
    assert!(!run.stderr.contains(&password));

    // --on repeated, with an exclusion.
    let run = f.fleet(&["exec", "--on", "a", "--on", "b,!a", "--json", "--", "true"]);
    run.expect_code(0);
    let json = run.json();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b"]);

    // An unreachable host: reported, the others still run, exit 1.
    f.tb.stop_sshd("a").unwrap();
    let run = f.fleet(&["exec", "--", "true"]);
    run.expect_code(1);
    assert!(run.stdout.contains("── b (exit 0)"), "{}", run.stdout);
    assert!(
        run.stdout.contains("a: failed: unreachable"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("2 hosts: 1 ok, 1 failed"),
        "{}",
        run.stdout
    );
    f.tb.start_sshd("a").unwrap();

    for h in ["a", "b"] {
        f.assert_sound(h, &[None]);
    }
}

#[test]
fn logs_show_the_last_activation_and_say_when_there_is_no_journal() {
    let f = Fleet::start([HostSpec::new("a"), HostSpec::new("b").sudo_password()]);
    let run = f.fleet(&["logs", "a"]);
    run.expect_code(1);
    assert!(run.stderr.contains("no activation log"), "{}", run.stderr);

    f.fleet(&["apply", "--on", "a,b"]).expect_code(0);
    let system_a = f.link("a", "/run/current-system").unwrap();
    let system_b = f.link("b", "/run/current-system").unwrap();
    for h in ["a", "b"] {
        let run = f.fleet(&["logs", h]);
        run.expect_code(0);
        let record: serde_json::Value = serde_json::from_str(&f.sh(
            h,
            &fleet_e2e::record_cmd(&f.link(h, "/run/current-system").unwrap()),
        ))
        .unwrap();
        let id = record["id"].as_str().unwrap();
        assert!(
            run.stderr.contains(&format!(
                "{h}: activation {id}, result confirmed, switch by tester@"
            )),
            "{}",
            run.stderr
        );
        let log = f.sh(h, &format!("cat /run/fleet/log-{id}"));
        assert!(!log.is_empty());
        assert_eq!(run.stdout.trim(), log.trim(), "{h}: the whole log");
    }
    // -n: the last lines only.
    let run = f.fleet(&["logs", "a", "-n", "1"]);
    run.expect_code(0);
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);

    // The simulated hosts have no journald: said, not an empty journal.
    let run = f.fleet(&["logs", "a", "--unit", "sshd.service"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("has no systemd journal"),
        "{}",
        run.stderr
    );
    // A selector that is not one host.
    let run = f.fleet(&["logs", "*"]);
    run.expect_code(2);
    assert!(run.stderr.contains("must name one host"), "{}", run.stderr);

    f.assert_sound("a", &[Some(&system_a)]);
    f.assert_sound("b", &[Some(&system_b)]);
}

#[test]
fn generations_diff_and_rollback_to_a_chosen_generation() {
    let f = Fleet::start([HostSpec::new("a"), HostSpec::new("b").sudo_password()]);
    let run = f.fleet(&["generations", "a", "--json"]);
    run.expect_code(0);
    assert_eq!(run.json(), serde_json::json!([]));

    f.fleet(&["apply"]).expect_code(0);
    let gen1 = f.link("a", "/run/current-system").unwrap();
    let pkg1 = f.link("a", "/etc/nixos/current-configuration").unwrap();
    f.set_config("a", &config("a", &["htop", "nano"]));
    f.set_config("b", &config("b", &["htop", "nano"]));
    f.fleet(&["apply"]).expect_code(0);
    let gen2 = f.link("a", "/run/current-system").unwrap();
    f.set_config("a", &config("a", &["nano"]));
    f.fleet(&["apply", "--on", "a"]).expect_code(0);
    let gen3 = f.link("a", "/run/current-system").unwrap();

    let run = f.fleet(&["generations", "a", "--json"]);
    run.expect_code(0);
    let g = run.json();
    let g = g.as_array().unwrap();
    assert_eq!(g.len(), 3, "{g:?}");
    for (i, sys) in [&gen1, &gen2, &gen3].into_iter().enumerate() {
        assert_eq!(g[i]["generation"], i as u64 + 1);
        assert_eq!(g[i]["system"], sys.as_str());
        assert!(g[i]["deployed_by"].as_str().unwrap().starts_with("tester@"));
        assert!(g[i]["date"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(g[2]["current"], true);
    assert_eq!(g[2]["profile"], true);
    assert_eq!(g[0]["current"], false);
    let table = f.fleet(&["generations", "a"]);
    table.expect_code(0);
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("3 ") && l.ends_with("current, default")),
        "{}",
        table.stdout
    );

    // The package diff between generations, as the plan shows it.
    let run = f.fleet(&["diff", "a", "1", "2", "--json"]);
    run.expect_code(0);
    assert_eq!(run.envelope()["type"], "diff");
    assert_eq!(run.envelope()["host"], "a");
    let d = &run.json();
    let names = |k: &str| -> Vec<String> {
        d[k].as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("added"), ["nano"], "{d}");
    assert!(names("removed").is_empty(), "{d}");
    let run = f.fleet(&["diff", "a", "2", "3"]);
    run.expect_code(0);
    assert!(run.stdout.contains("  - htop"), "{}", run.stdout);
    let run = f.fleet(&["diff", "a", "1", "7"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("has no system generation 7"),
        "{}",
        run.stderr
    );

    // Back to generation 1 (not the previous one): profile, running system, package.
    let run = f.fleet(&["rollback", "--on", "a", "--to", "1", "-y"]);
    run.expect_code(0);
    assert_eq!(f.link("a", "/run/current-system").unwrap(), gen1);
    assert_eq!(f.link("a", "/nix/var/nix/profiles/system").unwrap(), gen1);
    assert_eq!(
        f.link("a", "/etc/nixos/current-configuration").unwrap(),
        pkg1
    );
    let g = f.fleet(&["generations", "a", "--json"]).json();
    assert_eq!(g[0]["current"], true);
    assert_eq!(g[0]["profile"], true);
    assert_eq!(g[2]["current"], false);
    // A generation that does not exist: refused, nothing changed.
    let run = f.fleet(&["rollback", "--on", "a", "--to", "9", "-y"]);
    run.expect_code(1);
    assert!(
        run.stdout.contains("no generation 9") || run.stderr.contains("no generation 9"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(f.link("a", "/run/current-system").unwrap(), gen1);

    // b through its sudo password.
    let b1 = f.fleet(&["generations", "b", "--json"]).json()[0]["system"]
        .as_str()
        .unwrap()
        .to_owned();
    let b2 = f.link("b", "/run/current-system").unwrap();
    f.fleet(&["rollback", "--on", "b", "--to", "1", "-y"])
        .expect_code(0);
    assert_eq!(f.link("b", "/run/current-system").unwrap(), b1);

    f.assert_sound("a", &[Some(&gen1)]);
    f.assert_sound("b", &[Some(&b1), Some(&b2)]);
}

#[test]
fn gc_deletes_old_generations_but_keeps_running_booted_and_rollback_target() {
    // A host name no other test uses: its systems are its own. Nix keeps whatever any process
    // on the machine names in its environment (runtime roots), and the simulated hosts share
    // the machine's processes: a system of another test's "a" would be kept while it runs.
    let f = Fleet::start([HostSpec::new("gcd"), HostSpec::new("b").sudo_password()]);
    let mut systems = Vec::new();
    for pkgs in [
        &["htop"][..],
        &["htop", "nano"],
        &["nano"],
        &["htop", "nano", "jq"],
    ] {
        f.set_config("gcd", &config("gcd", pkgs));
        f.fleet(&["apply", "--on", "gcd"]).expect_code(0);
        systems.push(f.link("gcd", "/run/current-system").unwrap());
    }
    f.fleet(&["apply", "--on", "b"]).expect_code(0);
    let b1 = f.link("b", "/run/current-system").unwrap();
    // a boots generation 4, then runs generation 2 (switched by hand with `test`).
    f.tb.reboot("gcd").unwrap();
    assert_eq!(
        f.link("gcd", "/run/booted-system").as_ref(),
        Some(&systems[3])
    );
    f.sh(
        "gcd",
        &format!("{}/bin/switch-to-configuration test", systems[1]),
    );
    let pkg_gens = |h: &str| {
        f.sh(
            h,
            "ls /nix/var/nix/profiles/fleet | grep -c -- '-link$' || true",
        )
    };
    assert_eq!(pkg_gens("gcd"), "4");

    let run = f.fleet(&["gc", "--dry-run", "--json", "--on", "gcd"]);
    run.expect_code(0);
    let r = &run.json()[0];
    let mut kept: Vec<(u64, String)> = r["kept_system"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["generation"].as_u64().unwrap(),
                k["why"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    kept.sort();
    let want: Vec<(u64, String)> = vec![
        (2, "current".into()),
        (3, "rollback-target".into()),
        (4, "default".into()),
    ];
    assert_eq!(kept, want, "{r}");
    assert_eq!(r["deleted_system"], serde_json::json!([1]));
    assert_eq!(r["deleted_packages"], serde_json::json!([1]));
    assert!(r["freed"].is_null());
    // Nothing changed.
    assert!(f.sh("gcd", &format!("test -e {} && echo yes", systems[0])) == "yes");
    assert_eq!(pkg_gens("gcd"), "4");

    // Young generations are kept with --older-than.
    let run = f.fleet(&["gc", "--older-than", "30d", "--json"]);
    run.expect_code(0);
    for h in run.json().as_array().unwrap() {
        assert_eq!(h["deleted_system"], serde_json::json!([]), "{h}");
        assert_eq!(h["deleted_packages"], serde_json::json!([]), "{h}");
        assert!(h["freed"].as_str().unwrap().contains("freed"), "{h}");
    }
    let run = f.fleet(&["gc", "--older-than", "30x"]);
    run.expect_code(2);
    assert!(run.stderr.contains("is not an age"), "{}", run.stderr);

    // For real: generation 1 and its deployment package go, its system leaves the store.
    let run = f.fleet(&["gc"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("gcd: deleted system generations"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("MiB freed"), "{}", run.stdout);
    assert_eq!(
        f.sh("gcd", "ls /nix/var/nix/profiles | grep '^system-'"),
        "system-2-link\nsystem-3-link\nsystem-4-link"
    );
    assert_eq!(
        f.sh(
            "gcd",
            &format!("test -e {} && echo yes || echo gone", systems[0])
        ),
        "gone"
    );
    assert_eq!(pkg_gens("gcd"), "3");
    // b (sudo with a password) has one generation: kept.
    assert_eq!(f.link("b", "/nix/var/nix/profiles/system").unwrap(), b1);

    // The running system (not the profile's) is one of the kept ones.
    f.assert_sound("gcd", &[Some(&systems[1]), Some(&systems[3])]);
    f.assert_sound("b", &[Some(&b1)]);
}

#[test]
fn add_pins_the_key_fetches_the_hardware_configuration_and_deploys() {
    let f = Fleet::start([HostSpec::new("a"), HostSpec::new("b")]);
    // b runs NixOS already (a system of the stand-in, which has nixos-generate-config).
    f.fleet(&["apply"]).expect_code(0);
    let system_a = f.link("a", "/run/current-system").unwrap();
    let old_b = f.link("b", "/run/current-system").unwrap();
    // Forget b: fleet.toml without its table (b is the last), no hosts/b. A comment of ours.
    f.edit_toml(|t| {
        let cut = t.find("[hosts.b]").unwrap();
        t[..cut].replace("[hosts.a]", "# The first host.\n[hosts.a] # inline too")
    });
    std::fs::remove_dir_all(f.dir.join("hosts/b")).unwrap();
    let before = std::fs::read_to_string(f.toml_path()).unwrap();
    let (address, user, key) = {
        let h = f.tb.host("b");
        (
            h.address.to_string(),
            h.user.clone(),
            h.host_key_line.clone(),
        )
    };
    let key_fields: Vec<&str> = key.split_whitespace().collect();
    let pin = format!("{} {}", key_fields[0], key_fields[1]);

    // Without a terminal and without --yes: the fingerprint is shown, nothing is written.
    let args = ["add", "b", "--address", &address, "--user", &user];
    let run = f.fleet(&args);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("presents the host key ssh-ed25519 SHA256:"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(f.toml_path()).unwrap(), before);
    assert!(!f.dir.join("hosts/b").exists());

    let mut yes = args.to_vec();
    yes.push("--yes");
    let run = f.fleet(&yes);
    run.expect_code(0);
    let after = std::fs::read_to_string(f.toml_path()).unwrap();
    assert!(
        after.starts_with(&before),
        "the rest is kept as it was:\n{after}"
    );
    assert!(after.contains("# The first host.\n[hosts.a] # inline too"));
    let added = &after[before.len()..];
    assert!(added.contains("[hosts.b]"), "{added}");
    assert!(
        added.contains(&format!("address = \"{address}\"")),
        "{added}"
    );
    assert!(added.contains("system = \"x86_64-linux\""), "{added}");
    assert!(
        added.contains("config = \"hosts/b/configuration.nix\""),
        "{added}"
    );
    assert!(added.contains(&format!("host-key = \"{pin}\"")), "{added}");
    // Trusted for that connection only: nothing learned in known_hosts.
    let known = std::fs::read_to_string(f.home.join(".ssh/known_hosts")).unwrap_or_default();
    assert!(!known.contains(key_fields[1]));
    let hw = std::fs::read_to_string(f.dir.join("hosts/b/hardware-configuration.nix")).unwrap();
    assert!(hw.contains("generated by 'nixos-generate-config'"), "{hw}");
    assert!(
        hw.contains("nixpkgs.hostPlatform = lib.mkDefault \"x86_64-linux\""),
        "{hw}"
    );
    let conf = std::fs::read_to_string(f.dir.join("hosts/b/configuration.nix")).unwrap();
    assert!(
        conf.contains("imports = [ ./hardware-configuration.nix ];"),
        "{conf}"
    );
    assert!(conf.contains("networking.hostName = \"b\";"), "{conf}");

    // A second add of the same name is refused; nothing changes.
    let run = f.fleet(&yes);
    run.expect_code(1);
    assert!(
        run.stderr.contains("has a host `b` already"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_to_string(f.toml_path()).unwrap(), after);

    // The first deploy of the added machine.
    let run = f.fleet(&["plan", "--on", "b"]);
    run.expect_code(0);
    f.fleet(&["apply", "--on", "b"]).expect_code(0);
    let new_b = f.link("b", "/run/current-system").unwrap();
    assert_ne!(new_b, old_b);
    assert!(f.link("b", "/etc/nixos/current-configuration").is_some());

    f.assert_sound("a", &[Some(&system_a)]);
    f.assert_sound("b", &[Some(&new_b)]);
}
