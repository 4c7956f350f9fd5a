//! The command line as a new user meets it (issue 17): Ctrl-C always cancels, even with stderr
//! into a dead pipe; hosts are reached while the systems build, so a down host or an unknown
//! host key is reported before the build ends; `plan` needs no sudo password; on a terminal
//! `apply` asks once and "n" changes nothing; Ctrl-C at the sudo password prompt exits 130.
//! Terminal tests run fleet under `script` (util-linux), which gives it a pseudo-terminal.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_e2e::{current, fleet_bin, wait_until, Fleet, HostSpec};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(180);

fn bench_config(name: &str, paths: u32, mb: u32) -> String {
    format!(
        "{{ pkgs, ... }}: {{\n  networking.hostName = \"{name}\";\n  \
         environment.systemPackages = [ pkgs.htop ];\n  \
         fleet.bench = {{ paths = {paths}; totalMB = {mb}; }};\n}}\n"
    )
}

/// A configuration whose build takes `secs` seconds (one derivation that sleeps).
fn slow_config(name: &str, secs: u32) -> String {
    format!(
        "{{ pkgs, config, ... }}: {{\n  networking.hostName = \"{name}\";\n  \
         environment.systemPackages = [ (derivation {{\n    name = \"slow-{secs}\";\n    \
         system = config.nixpkgs.hostPlatform.system;\n    builder = \"/bin/sh\";\n    \
         args = [ \"-c\" \"/bin/sleep {secs}; /bin/echo slow > $out\" ];\n  }}) ];\n}}\n"
    )
}

fn mid_copy(e: &Value, host: &str) -> bool {
    e["host"] == host
        && e["type"] == "progress"
        && e["done_bytes"].as_u64().unwrap_or(0) > 0
        && e["done_bytes"].as_u64() < e["total_bytes"].as_u64()
}

/// Ctrl-C with stderr into a pipe whose reader is gone (`fleet apply 2>&1 | tee log`, then
/// `tee` dies): the interruption still cancels (nothing new is activated), no panic, exit 130.
#[test]
fn ctrl_c_with_stderr_into_a_dead_pipe_still_cancels_and_exits_130() {
    let f = Fleet::start([
        HostSpec::new("pi").rate_mbit(8),
        HostSpec::new("nas").rate_mbit(8),
    ]);
    f.fleet(&["apply"]).expect_code(0);
    let old = [current(&f, "pi").unwrap(), current(&f, "nas").unwrap()];
    for h in ["pi", "nas"] {
        f.set_config(h, &bench_config(h, 20, 20));
    }
    let mut run = f.spawn_stderr_closed(&["apply", "--json"]);
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
    for (i, h) in ["pi", "nas"].iter().enumerate() {
        f.assert_store_clean(h);
        f.assert_sound(h, &[Some(&old[i])]);
    }
}

/// A down host is reported while the systems still build, not after.
#[test]
fn a_down_host_is_reported_before_the_build_finishes() {
    let f = Fleet::start([HostSpec::new("builds"), HostSpec::new("down")]);
    f.set_config("builds", &slow_config("builds", 120));
    f.tb.stop_sshd("down").unwrap();
    let mut run = f.spawn(&["plan"]);
    let t = Instant::now();
    wait_until("the down host is reported", Duration::from_secs(60), || {
        run.stderr_so_far().contains("fleet: down: unreachable")
    });
    let reported = t.elapsed();
    assert!(run.running(), "fleet is still building");
    let so_far = run.stderr_so_far();
    assert!(!so_far.contains("fleet: built"), "{so_far}");
    assert!(reported < Duration::from_secs(60), "{reported:?}");
    // Ctrl-C during the build stops it at once.
    run.interrupt();
    let run = run.finish(Duration::from_secs(30));
    run.expect_code(130);
    f.tb.start_sshd("down").unwrap();
}

/// An unknown host key is reported (with the exact line to pin) while the systems build.
#[test]
fn an_unknown_host_key_is_reported_with_its_pin_line_before_the_build_finishes() {
    let f = Fleet::start([HostSpec::new("builds"), HostSpec::new("new")]);
    f.set_config("builds", &slow_config("builds", 120));
    // Forget the hosts' keys: no pins, and a known_hosts file that knows nobody.
    let known = f.dir.join("known_hosts");
    std::fs::write(&known, "").unwrap();
    f.edit_toml(|t| {
        t.lines()
            .filter(|l| !l.starts_with("host-key"))
            .map(|l| {
                if l.starts_with("known-hosts") {
                    format!("known-hosts = {:?}", known.display().to_string())
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    let key = f.tb.host("new").host_key_line.clone();
    let key: Vec<&str> = key.split_whitespace().take(2).collect();
    let pin = format!("host-key = \"{}\"", key.join(" "));
    let mut run = f.spawn(&["plan"]);
    wait_until(
        "the unknown key is reported",
        Duration::from_secs(60),
        || run.stderr_so_far().contains("fleet: new: unreachable"),
    );
    assert!(run.running(), "fleet is still building");
    let so_far = run.stderr_so_far();
    assert!(
        so_far.contains(&pin),
        "says the line to pin: {pin}\n{so_far}"
    );
    assert!(!so_far.contains("fleet: built"), "{so_far}");
    run.interrupt();
    run.finish(Duration::from_secs(30)).expect_code(130);
}

/// `fleet plan` reads a `sudo = "password"` host's store as the login user through the Nix
/// daemon (as on NixOS): no password is asked, and the host is planned.
#[test]
fn plan_asks_no_sudo_password() {
    let mut f = Fleet::start([HostSpec::new("nas").sudo_password()]);
    f.sh(
        "nas",
        "setsid nix-daemon </dev/null >/dev/null 2>&1 & \
         for i in $(seq 100); do [ -S /nix/var/nix/daemon-socket/socket ] && break; sleep 0.1; done; \
         [ -S /nix/var/nix/daemon-socket/socket ]",
    );
    let asked = f.dir.join("password-asked");
    f.env = vec![(
        "FLEET_SUDO_PASSWORD_COMMAND".into(),
        format!("echo asked >> '{}'; echo x", asked.display()),
    )];
    let run = f.fleet(&["plan", "--json"]);
    run.expect_code(0);
    assert!(!asked.exists(), "no password was asked");
    let plan = run.json();
    assert_eq!(plan["hosts"][0]["action"], "install", "{plan}");
    assert!(
        !plan["hosts"][0]["copy"]["paths"]
            .as_array()
            .unwrap()
            .is_empty(),
        "what to copy was read from the host's store: {plan}"
    );
}

/// fleet under a pseudo-terminal (`script`): what it printed so far, and its stdin (keys).
struct Terminal {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    fn start(f: &Fleet, args: &[&str]) -> Terminal {
        let mut cmdline = format!("exec {}", fleet_bin().display());
        for a in args {
            cmdline.push_str(&format!(" '{a}'"));
        }
        let fleet = f.command(args);
        let mut c = Command::new("script");
        c.args(["-qfec", &cmdline, "/dev/null"])
            .current_dir(fleet.get_current_dir().unwrap())
            .envs(
                fleet
                    .get_envs()
                    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
            )
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("script starts");
        let mut from = child.stdout.take().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let to = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                to.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal { child, output }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.text().contains(what) {
            assert!(
                Instant::now() < deadline,
                "no `{what}` on the terminal within {timeout:?}:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn keys(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// The exit code, waiting at most `timeout`.
    fn exit(mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                eprintln!("terminal:\n{}", self.text());
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("fleet did not exit within {timeout:?}:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Ctrl-C at the sudo password prompt exits 130 at once, and nothing happens on the host.
#[test]
fn ctrl_c_at_the_sudo_password_prompt_exits_130_at_once() {
    let mut f = Fleet::start([HostSpec::new("nas").sudo_password()]);
    f.env.clear(); // no FLEET_SUDO_PASSWORD_COMMAND: fleet asks on the terminal
    let mut t = Terminal::start(&f, &["apply"]);
    t.wait_for("sudo password for nas", LONG);
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    t.keys(b"\x03");
    assert_eq!(t.exit(Duration::from_secs(10)), Some(130));
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );
    assert!(f.store_paths("nas").is_empty(), "nothing was copied");
}

/// On a terminal, `apply` shows the plan and asks once for the whole fleet; "n" changes
/// nothing on any host and exits 1. `--yes` skips the question. `rollback` shows what each
/// host goes back to and asks too; Enter (no) changes nothing.
#[test]
fn answering_no_to_the_confirmation_changes_nothing() {
    let f = Fleet::start([HostSpec::new("pi"), HostSpec::new("nas")]);
    let mut t = Terminal::start(&f, &["apply"]);
    t.wait_for("Apply to 2 hosts? [y/N]", LONG);
    t.keys(b"n\r");
    assert_eq!(t.exit(LONG), Some(1));
    for h in ["pi", "nas"] {
        assert!(current(&f, h).is_none(), "{h} was not touched");
        assert!(f.store_paths(h).is_empty(), "{h}: nothing was copied");
    }
    let t = Terminal::start(&f, &["apply", "--yes"]);
    assert_eq!(t.exit(LONG), Some(0));
    let first: Vec<String> = ["pi", "nas"]
        .iter()
        .map(|h| current(&f, h).unwrap())
        .collect();
    // A second generation (no terminal on stdin: no question, as before).
    for h in ["pi", "nas"] {
        f.set_config(h, &fleet_e2e::config(h, &["htop", "git"]));
    }
    f.fleet(&["apply"]).expect_code(0);
    let second: Vec<String> = ["pi", "nas"]
        .iter()
        .map(|h| current(&f, h).unwrap())
        .collect();
    assert_ne!(first, second);

    // rollback shows where each host would go back to and asks; "n" changes nothing.
    let mut t = Terminal::start(&f, &["rollback"]);
    t.wait_for("Roll back 2 hosts? [y/N]", LONG);
    let shown = t.text();
    for (i, h) in ["pi", "nas"].iter().enumerate() {
        let line = shown
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{h}:")))
            .unwrap_or_else(|| panic!("{h} is shown:\n{shown}"));
        assert!(line.contains("generation 2"), "{line}");
        assert!(line.contains("→ generation 1"), "{line}");
        let short = |p: &str| p.rsplit('/').next().unwrap()[..7].to_owned();
        assert!(
            line.contains(&short(&first[i])),
            "{line} names {}",
            first[i]
        );
    }
    t.keys(b"\r");
    assert_eq!(t.exit(LONG), Some(1));
    for (i, h) in ["pi", "nas"].iter().enumerate() {
        assert_eq!(current(&f, h).as_deref(), Some(second[i].as_str()), "{h}");
    }
}
