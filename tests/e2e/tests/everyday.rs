//! The everyday commands end to end: `fleet exec`.

use fleet_e2e::{Fleet, HostSpec};

fn host<'a>(runs: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    runs.as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {runs}"))
}

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
