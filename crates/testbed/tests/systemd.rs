//! The stand-in's `systemd-run` and `systemctl` (`fleet.systemd = true`) behave, and fail, like
//! systemd 255's for what fleet and nixos-rebuild use: unknown options, `--wait` exit statuses,
//! unit names taken by running or failed units and freed by `--collect`, `--pipe`, a clean
//! environment with `-E`, `StandardOutput=file:`, a detached session without the caller's file
//! descriptors, timers, `systemctl stop` (exit 5 for units not loaded) and `is-active`, and
//! `/run/systemd/system` at activation and after a reboot.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fleet_testbed::{HostSpec, Testbed};

const SR: &str = "/run/current-system/sw/bin/systemd-run";
const SC: &str = "/run/current-system/sw/bin/systemctl";

/// Runs `cmd` in `host`: (exit code, stdout, stderr).
fn run(tb: &Testbed, cmd: &str) -> (i32, String, String) {
    let o = tb.exec("h", cmd).expect("exec in host");
    (
        o.status.code().unwrap_or(-1),
        text(&o.stdout).trim().to_owned(),
        text(&o.stderr).trim().to_owned(),
    )
}

/// The processes of the host that are neither its mount-namespace holder nor sshd.
fn strays(tb: &Testbed) -> Vec<String> {
    host_processes(tb, "h")
        .into_iter()
        .filter(|p| !p.contains("sleep infinity") && !p.contains("sshd") && !p.is_empty())
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn systemd_run_and_systemctl_behave_like_systemds() {
    let started = Instant::now();
    let plain = build_system(
        "{ ... }: { networking.hostName = \"plain\"; }",
        "x86_64-linux",
    );
    let sd = build_system(
        "{ ... }: { networking.hostName = \"sd\"; fleet.systemd = true; }",
        "x86_64-linux",
    );
    assert!(!std::path::Path::new(&format!("{plain}/sw/bin/systemd-run")).exists());
    let tb = Testbed::start([HostSpec::new("h")]).expect("starting");
    copy(&tb, "h", &plain);
    copy(&tb, "h", &sd);
    check("test plain", &switch(&tb, "h", "", &plain, "test"));
    assert_eq!(
        run(&tb, "[ -d /run/systemd/system ] && echo yes || echo no").1,
        "no"
    );
    set_profile(&tb, "h", &sd);
    check("switch sd", &switch(&tb, "h", "", &sd, "switch"));
    assert_eq!(
        run(&tb, "[ -d /run/systemd/system ] && echo yes || echo no").1,
        "yes",
        "activation makes /run/systemd/system, as booting systemd does"
    );

    // Options: unknown ones fail, as getopt does; a command is required.
    let (rc, _, e) = run(&tb, &format!("{SR} --bogus true"));
    assert_eq!(rc, 1, "{e}");
    assert!(e.contains("unrecognized option '--bogus'"), "{e}");
    let (rc, _, e) = run(&tb, &format!("{SR} --collect=yes true"));
    assert_eq!(rc, 1, "{e}");
    let (rc, _, e) = run(&tb, &format!("{SR} --wait --quiet"));
    assert_eq!((rc, e.as_str()), (1, "Command line to execute required."));
    let (rc, _, e) = run(&tb, &format!("{SR} --wait no-such-program-here"));
    assert_eq!(rc, 1);
    assert!(
        e.contains("Failed to find executable no-such-program-here"),
        "{e}"
    );
    let (rc, _, e) = run(&tb, &format!("{SR} -p Bogus=1 true"));
    assert_eq!(rc, 1, "{e}");

    // --wait: the unit's exit status; a signal is 255; the summary unless --quiet.
    assert_eq!(
        run(
            &tb,
            &format!("{SR} --wait --quiet --collect sh -c 'exit 7'")
        )
        .0,
        7
    );
    let (rc, _, e) = run(&tb, &format!("{SR} --wait -G sh -c 'kill -KILL $$'"));
    assert_eq!(rc, 255);
    assert!(e.contains("Finished with result: signal"), "{e}");
    assert!(e.contains("code=killed/status=KILL"), "{e}");
    let (rc, _, e) = run(
        &tb,
        &format!("{SR} --wait --collect --unit=loud sh -c 'exit 4'"),
    );
    assert_eq!(rc, 4);
    assert!(e.contains("Running as unit: loud.service"), "{e}");
    assert!(e.contains("Finished with result: exit-code"), "{e}");
    assert!(e.contains("status=4"), "{e}");

    // A failed unit keeps its name until reset-failed, unless --collect; a successful one
    // is unloaded at once.
    assert_eq!(
        run(&tb, &format!("{SR} -q --wait --unit=t1 sh -c 'exit 3'")).0,
        3
    );
    let (rc, out, _) = run(&tb, &format!("{SC} is-failed t1"));
    assert_eq!((rc, out.as_str()), (0, "failed"));
    let (rc, _, e) = run(&tb, &format!("{SR} -q --wait --unit=t1 true"));
    assert_eq!(rc, 1);
    assert_eq!(
        e,
        "Failed to start transient service unit: Unit t1.service was already loaded or has a fragment file."
    );
    check(
        "reset-failed",
        &tb.exec("h", &format!("{SC} reset-failed t1.service"))
            .unwrap(),
    );
    assert_eq!(run(&tb, &format!("{SR} -q --wait --unit=t1 true")).0, 0);
    assert_eq!(run(&tb, &format!("{SR} -q --wait --unit=t1 true")).0, 0);
    assert_eq!(run(&tb, &format!("{SR} -q --wait -G --unit=t2 false")).0, 1);
    assert_eq!(run(&tb, &format!("{SR} -q --wait -G --unit=t2 true")).0, 0);

    // A running unit's name is taken; it runs detached (no --wait: systemd-run returns).
    let t = Instant::now();
    let (rc, _, e) = run(&tb, &format!("{SR} --unit=busy --quiet sleep 300"));
    assert_eq!(rc, 0, "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let (rc, out, _) = run(&tb, &format!("{SC} is-active busy.service"));
    assert_eq!((rc, out.as_str()), (0, "active"));
    let (rc, _, e) = run(&tb, &format!("{SR} --unit=busy --quiet true"));
    assert_eq!(rc, 1);
    assert!(e.contains("Unit busy.service was already loaded"), "{e}");
    assert!(run(&tb, &format!("{SC} list-units --no-legend"))
        .1
        .contains("busy.service"));
    check(
        "stop busy",
        &tb.exec("h", &format!("{SC} stop busy")).unwrap(),
    );
    let (rc, out, _) = run(&tb, &format!("{SC} is-active busy.service"));
    assert_eq!((rc, out.as_str()), (3, "inactive"));
    // Stopping what is not loaded fails (exit 5), as systemd's does.
    let (rc, _, e) = run(&tb, &format!("{SC} stop busy.service"));
    assert_eq!(rc, 5);
    assert_eq!(
        e,
        "Failed to stop busy.service: Unit busy.service not loaded."
    );

    // A client that stops waiting (killed with its SSH session) leaves the unit running.
    let (rc, _, _) = run(&tb, &format!("timeout 1 {SR} --unit=w --wait -q sleep 300"));
    assert_eq!(rc, 124);
    assert_eq!(run(&tb, &format!("{SC} is-active w")).1, "active");
    check(
        "stop w",
        &tb.exec("h", &format!("{SC} stop w.service")).unwrap(),
    );
    // A unit stopped while a client waits: a clean stop (SIGTERM), exit 0.
    run(
        &tb,
        &format!(
            "({SR} --unit=ws --wait sleep 300 2>/run/ws.err; echo $? > /run/ws.rc) \
             </dev/null >/dev/null 2>&1 &"
        ),
    );
    wait_for("ws to run", Duration::from_secs(10), || {
        run(&tb, &format!("{SC} is-active ws")).1 == "active"
    });
    check("stop ws", &tb.exec("h", &format!("{SC} stop ws")).unwrap());
    wait_for("the client to end", Duration::from_secs(10), || {
        run(&tb, "cat /run/ws.rc 2>/dev/null").1 == "0"
    });
    let e = run(&tb, "cat /run/ws.err").1;
    assert!(
        e.contains("Finished with result: success") && e.contains("code=killed/status=TERM"),
        "{e}"
    );

    // --pipe passes stdin, stdout and stderr; the environment is clean but for -E.
    let (rc, out, e) = run(
        &tb,
        &format!(
            "echo hi | {SR} --pipe --wait -q sh -c 'read x; echo got $x; echo oops >&2; exit 2'"
        ),
    );
    assert_eq!((rc, out.as_str(), e.as_str()), (2, "got hi", "oops"));
    let (_, env, _) = run(
        &tb,
        &format!(
            "FOO=bar LOCALE_ARCHIVE=/la {SR} --pipe --wait -q -E LOCALE_ARCHIVE \
             -E NIXOS_INSTALL_BOOTLOADER=1 --setenv=UNSET_HERE env"
        ),
    );
    let vars: Vec<&str> = env.lines().collect();
    for v in [
        "LOCALE_ARCHIVE=/la",
        "NIXOS_INSTALL_BOOTLOADER=1",
        "UNSET_HERE=",
    ] {
        assert!(vars.contains(&v), "{v} not in\n{env}");
    }
    assert!(!env.contains("FOO="), "{env}");
    assert!(
        vars.iter().any(|v| v.starts_with("INVOCATION_ID=")),
        "{env}"
    );
    // Its own session, none of the caller's file descriptors, cwd /.
    let (_, out, _) = run(
        &tb,
        &format!(
            "cd /tmp; exec 8>/tmp/fleet-standin-fd-test; echo $(ps -o sid= -p $$); \
             {SR} --pipe --wait -q sh -c 'echo $(ps -o sid= -p $$) $$; \
             [ -e /proc/$$/fd/8 ] && echo leaked || echo clean; pwd'"
        ),
    );
    let lines: Vec<&str> = out.lines().collect();
    let caller_sid = lines[0].trim();
    let unit: Vec<&str> = lines[1].split_whitespace().collect();
    assert_ne!(unit[0], caller_sid, "a session of its own");
    assert_eq!(unit[0], unit[1], "the unit leads its session");
    assert_eq!(&lines[2..], ["clean", "/"]);
    run(&tb, "rm -f /tmp/fleet-standin-fd-test");

    // StandardOutput=file: and StandardError=file: of one path (detach's log).
    let (rc, _, e) = run(
        &tb,
        &format!(
            "{SR} --unit=f --collect --quiet --service-type=exec --wait \
             -p StandardOutput=file:/run/f.log -p StandardError=file:/run/f.log \
             sh -c 'echo out; echo err >&2; exit 0' >/dev/null"
        ),
    );
    assert_eq!(rc, 0, "{e}");
    assert_eq!(run(&tb, "cat /run/f.log").1, "out\nerr");

    // A timer starts its service later; both are gone once it ran.
    let (rc, _, e) = run(
        &tb,
        &format!(
            "{SR} --unit=wd --on-active=1 --timer-property=AccuracySec=1s --collect --quiet \
             sh -c 'echo fired > /run/wd.fired'"
        ),
    );
    assert_eq!(rc, 0, "{e}");
    assert_eq!(run(&tb, &format!("{SC} is-active wd.timer")).1, "active");
    assert_eq!(
        run(&tb, &format!("{SC} is-active wd.service")).1,
        "inactive"
    );
    wait_for("the timer to fire", Duration::from_secs(10), || {
        run(&tb, "cat /run/wd.fired 2>/dev/null").1 == "fired"
    });
    wait_for(
        "the timer and its service to go",
        Duration::from_secs(5),
        || {
            run(&tb, &format!("{SC} list-units --all --no-legend 'wd*'"))
                .1
                .is_empty()
        },
    );
    // The failed --pipe unit above had no --collect: it is still there, failed.
    let units = run(&tb, &format!("{SC} list-units --no-legend")).1;
    assert!(
        units.contains("failed") && units.contains("echo got"),
        "{units}"
    );
    let (rc, _, e) = run(&tb, &format!("{SR} --wait --on-active=1 true"));
    assert_eq!(rc, 1, "{e}");
    let (rc, _, _) = run(&tb, &format!("{SR} --on-active=1x true"));
    assert_eq!(rc, 1);
    // A timer stopped before it fires: nothing runs, nothing is left.
    run(
        &tb,
        &format!("{SR} --unit=wd2 --on-active=2 --collect -q sh -c 'echo fired > /run/wd2.fired'"),
    );
    check(
        "stop wd2",
        &tb.exec("h", &format!("{SC} stop wd2.timer wd2.service"))
            .unwrap(),
    );
    assert_eq!(strays(&tb), Vec::<String>::new());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        run(&tb, "[ -e /run/wd2.fired ] && echo yes || echo no").1,
        "no"
    );
    assert_eq!(run(&tb, &format!("{SC} stop wd2.timer wd2.service")).0, 5);

    // Without systemd running, both refuse, as the real ones do.
    run(&tb, "mv /run/systemd/system /run/systemd/system.off");
    let (rc, _, e) = run(&tb, &format!("{SR} --wait true"));
    assert_eq!(rc, 1);
    assert!(e.contains("has not been booted with systemd"), "{e}");
    run(&tb, "mv /run/systemd/system.off /run/systemd/system");

    // A reboot ends every unit; the booted system's systemd makes /run/systemd/system again.
    run(&tb, &format!("{SR} --unit=gone -q sleep 300"));
    let r = tb
        .reboot_with_delay("h", Duration::from_millis(100))
        .unwrap();
    assert_eq!(r.toplevel.as_deref(), Some(sd.as_str()));
    assert_eq!(
        run(&tb, "[ -d /run/systemd/system ] && echo yes || echo no").1,
        "yes"
    );
    assert_eq!(run(&tb, &format!("{SC} is-active gone")).1, "inactive");
    assert_eq!(strays(&tb), Vec::<String>::new());
    tb.teardown().unwrap();
    eprintln!("systemd stand-in: {:.2?}", started.elapsed());
}
