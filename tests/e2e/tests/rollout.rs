//! Safe rollouts end to end: health checks after activation (a failing unit, port, HTTP
//! endpoint or command rolls back its host and only it), `fleet check`, and waves (a failing
//! canary stops everything else; `--max-failures` stops starting hosts; `--rollback-succeeded`
//! returns the applied ones to their old systems).

use fleet_e2e::{config, config_with, current, Fleet, HostSpec};

/// Appends a `[hosts.NAME.checks]` table to fleet.toml.
fn add_checks(f: &Fleet, host: &str, body: &str) {
    f.edit_toml(|t| format!("{t}\n[hosts.{host}.checks]\ntimeout = 2\n{body}\n"));
}

/// Deploys every host once (their "old" system), then gives each a new configuration.
fn deployed_then_changed(f: &Fleet, hosts: &[&str]) -> Vec<String> {
    f.fleet(&["apply"]).expect_code(0);
    let old: Vec<String> = hosts.iter().map(|h| current(f, h).unwrap()).collect();
    for h in hosts {
        f.set_config(h, &config(h, &["git"]));
    }
    old
}

/// Serves `dir` over HTTP on 127.0.0.1:8080 inside `host` (python3's http.server); returns a
/// command that stops it.
fn serve_http(f: &Fleet, host: &str, dir: &std::path::Path) -> String {
    let pid = dir.join("server.pid");
    f.sh(
        host,
        &format!(
            "setsid python3 -m http.server 8080 --bind 127.0.0.1 --directory '{}' \
             </dev/null >/dev/null 2>&1 & echo $! > '{}'",
            dir.display(),
            pid.display()
        ),
    );
    fleet_e2e::wait_until(
        "the HTTP server listens",
        std::time::Duration::from_secs(20),
        || {
            f.tb.exec_ok(
                host,
                "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8080), 1)'",
            )
            .is_ok()
        },
    );
    format!("kill $(cat '{}') 2>/dev/null || true", pid.display())
}

#[test]
fn a_failing_unit_port_http_endpoint_and_command_each_roll_back_their_host_only() {
    let hosts = ["unit", "port", "web", "cmd", "good"];
    let f = Fleet::start(hosts.map(HostSpec::new));
    let old = deployed_then_changed(&f, &hosts);
    f.set_config(
        "unit",
        &config_with(
            "unit",
            "environment.systemPackages = [ pkgs.git ]; fleet.failingUnits = [ \"web.service\" ];",
        ),
    );
    let (ok_dir, bad_dir) = (f.dir.join("www-good"), f.dir.join("www-web"));
    std::fs::create_dir_all(&ok_dir).unwrap();
    std::fs::create_dir_all(&bad_dir).unwrap();
    std::fs::write(ok_dir.join("health"), "ok\n").unwrap();
    let stop_good = serve_http(&f, "good", &ok_dir);
    let stop_web = serve_http(&f, "web", &bad_dir);

    add_checks(&f, "unit", "units = [\"sshd.service\", \"web.service\"]");
    add_checks(&f, "port", "tcp = [\"127.0.0.1:9\"]");
    add_checks(&f, "web", "http = [\"http://127.0.0.1:8080/health\"]");
    add_checks(
        &f,
        "cmd",
        "commands = [\"echo no marker >&2; test -e /etc/fleet-marker\"]",
    );
    add_checks(
        &f,
        "good",
        "units = [\"sshd.service\"]\ntcp = [\"127.0.0.1:8080\"]\n\
         http = [\"http://127.0.0.1:8080/health\"]\n\
         commands = [\"test -x /run/current-system/sw/bin/git\"]",
    );

    // The plan lists the checks of every host to change.
    let plan = f.fleet(&["plan"]);
    assert!(
        plan.stdout.contains("health checks after activation")
            && plan.stdout.contains(
                "good: unit sshd.service, tcp 127.0.0.1:8080, http http://127.0.0.1:8080/health"
            ),
        "{}",
        plan.stdout
    );
    // And so does its JSON, per host.
    let json = f.fleet(&["plan", "--json"]).json();
    let good = json["hosts"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["name"] == "good"))
        .expect("host good in the plan");
    assert_eq!(good["checks"][0], "unit sshd.service", "{good}");

    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(1);
    let outcomes = run.outcomes();
    for h in ["unit", "port", "web", "cmd"] {
        assert_eq!(outcomes[h], "check-failed", "{h}: {}", run.stderr);
    }
    assert_eq!(outcomes["good"], "applied", "{}", run.stderr);
    for (h, check, said) in [
        ("unit", "unit web.service", "failed"),
        ("port", "tcp 127.0.0.1:9", "refused"),
        ("web", "http http://127.0.0.1:8080/health", "404"),
        ("cmd", "command `echo no marker", "exit 1: no marker"),
    ] {
        let d = run.detail(h);
        assert!(
            d.contains(check) && d.contains(said) && d.contains("rolled back"),
            "{h}: {d}"
        );
    }
    for (h, old) in hosts.iter().zip(&old) {
        if *h == "good" {
            let new = f
                .link("good", "/etc/nixos/current-configuration/system")
                .unwrap();
            assert_ne!(&new, old);
            assert_eq!(current(&f, "good").as_deref(), Some(new.as_str()));
            f.assert_sound(h, &[Some(&new)]);
        } else {
            assert_eq!(current(&f, h).as_deref(), Some(old.as_str()), "{h}");
            f.assert_sound(h, &[Some(old)]);
        }
    }

    // `fleet check` runs them alone, against what runs now.
    let run = f.fleet(&["check", "--json", "--on", "good,cmd"]);
    run.expect_code(1);
    assert_eq!(run.outcomes()["good"], "ok");
    assert_eq!(run.outcomes()["cmd"], "failed");
    assert!(run.detail("cmd").contains("no marker"), "{}", run.stdout);

    // With --no-rollback a failing check leaves the host on its new system, and says so.
    let run = f.fleet(&["apply", "--json", "--on", "cmd", "--no-rollback"]);
    run.expect_code(1);
    assert_eq!(run.outcomes()["cmd"], "check-failed");
    assert!(
        run.detail("cmd").contains("--no-rollback"),
        "{}",
        run.detail("cmd")
    );
    let new = f.link("cmd", "/etc/nixos/current-configuration/system");
    assert_ne!(current(&f, "cmd").as_deref(), Some(old[3].as_str()));
    assert_eq!(current(&f, "cmd"), new);
    f.assert_sound("cmd", &[new.as_deref()]);
    f.sh("good", &stop_good);
    f.sh("web", &stop_web);
}

#[test]
fn a_canary_whose_check_fails_stops_the_rollout_with_everyone_else_untouched() {
    let hosts = ["canary", "a", "b"];
    let f = Fleet::start(hosts.map(HostSpec::new));
    let old = deployed_then_changed(&f, &hosts);
    add_checks(&f, "canary", "commands = [\"false\"]");
    let run = f.fleet(&["apply", "--json", "--canary", "canary"]);
    run.expect_code(1);
    let outcomes = run.outcomes();
    assert_eq!(outcomes["canary"], "check-failed", "{}", run.stderr);
    for h in ["a", "b"] {
        assert_eq!(outcomes[h], "skipped", "{h}");
        assert!(
            run.detail(h).contains("the canary failed"),
            "{}",
            run.detail(h)
        );
    }
    let waves = run
        .json_lines()
        .into_iter()
        .find(|l| l["type"] == "waves")
        .expect("a waves line");
    assert_eq!(waves["waves"]["waves"][0]["canary"], true);
    assert_eq!(waves["waves"]["waves"][1]["started"], false);
    for (h, old) in hosts.iter().zip(&old) {
        assert_eq!(current(&f, h).as_deref(), Some(old.as_str()), "{h}");
        // Untouched: nothing of the new system was even copied to the others.
        if *h != "canary" {
            assert!(
                !f.store_paths(h).iter().any(|p| p.ends_with("-git-2.44.0")),
                "{h} received the new system"
            );
        }
        f.assert_sound(h, &[Some(old)]);
    }
}

#[test]
fn max_failures_stops_after_the_first_bad_host_and_rollback_succeeded_restores_the_applied() {
    let hosts = ["g1", "bad1", "bad2", "g2"];
    let f = Fleet::start(hosts.map(HostSpec::new));
    let old = deployed_then_changed(&f, &hosts);
    for h in ["bad1", "bad2"] {
        add_checks(&f, h, "commands = [\"exit 7\"]");
    }
    // `test` leaves the profile alone: rolling back a generation would go too far.
    let refused = f.fleet(&["apply", "test", "--rollback-succeeded"]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("cannot undo `apply test`"),
        "{}",
        refused.stderr
    );
    let run = f.fleet(&[
        "apply",
        "--json",
        "--batch",
        "1",
        "--max-failures",
        "1",
        "--rollback-succeeded",
    ]);
    run.expect_code(1);
    let outcomes = run.outcomes();
    assert_eq!(outcomes["g1"], "rolled-back", "{}", run.stderr);
    assert!(run.detail("g1").contains("--rollback-succeeded"));
    assert_eq!(outcomes["bad1"], "check-failed");
    assert!(
        run.detail("bad1").contains("exit 7"),
        "{}",
        run.detail("bad1")
    );
    for h in ["bad2", "g2"] {
        assert_eq!(outcomes[h], "skipped", "{h}");
        assert!(
            run.detail(h).contains("--max-failures 1"),
            "{}",
            run.detail(h)
        );
    }
    for (h, old) in hosts.iter().zip(&old) {
        assert_eq!(current(&f, h).as_deref(), Some(old.as_str()), "{h}");
        f.assert_sound(h, &[Some(old)]);
    }
    // The same rollout without a limit applies every good host and fails only the bad ones.
    let run = f.fleet(&["apply", "--json", "--batch", "50%"]);
    run.expect_code(1);
    let outcomes = run.outcomes();
    assert_eq!(outcomes["g1"], "applied");
    assert_eq!(outcomes["g2"], "applied");
    assert_eq!(outcomes["bad1"], "check-failed");
    assert_eq!(outcomes["bad2"], "check-failed");
    for (h, old) in hosts.iter().zip(&old) {
        let new = f.link(h, "/etc/nixos/current-configuration/system");
        f.assert_sound(h, &[Some(old), new.as_deref()]);
    }
}
