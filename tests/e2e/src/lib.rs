//! End-to-end test support: the real `fleet` binary against a simulated fleet
//! (`fleet-testbed`: real sshd, a private `/nix` per host) with configurations built from the
//! nixpkgs stand-in.
//!
//! - [`fleet_bin`]: builds the `fleet` binary once (cargo) and returns its path.
//! - [`Fleet`]: a testbed plus a fleet directory (`fleet.toml`, `hosts/<name>/configuration.nix`),
//!   an empty `HOME` (no `~/.ssh/config` of the machine leaks in), and helpers to run fleet,
//!   look inside hosts and check the invariant every test ends with ([`Fleet::assert_sound`]).
//! - [`matrix`]: hosts and deployers on other Nix versions ([`Fleet::use_deployer_nix`]).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod flakes;
pub mod matrix;
pub mod scan;

pub use fleet_testbed::{HostSpec, Testbed, Userland};

/// The `fleet` binary, built once per test process with the same cargo and profile.
pub fn fleet_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(fleet_testbed::repo_root())
            .args([
                "build",
                "--quiet",
                "-p",
                "fleet",
                "--bin",
                "fleet",
                "--message-format=json",
            ])
            .stderr(Stdio::inherit())
            .output()
            .expect("cargo runs");
        assert!(out.status.success(), "building fleet failed");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "fleet")
            .find_map(|v| v["executable"].as_str().map(PathBuf::from))
            .expect("cargo names the fleet executable")
    })
}

/// A finished fleet run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    /// Panics with both streams unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// stdout parsed as one JSON document in fleet's envelope (docs/cli.md, "JSON output"):
    /// checked to have `format` 1 and a `type`.
    #[track_caller]
    pub fn envelope(&self) -> serde_json::Value {
        let doc: serde_json::Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout));
        check_envelope(&doc);
        doc
    }

    /// The payload of the envelope on stdout: the value under the key named like its `type`
    /// (`plan`, `hosts`, `generations`), else under `hosts` (`status`, `exec`, `gc`), else the
    /// whole document (`diff`).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        let doc = self.envelope();
        let ty = doc["type"].as_str().unwrap_or_default().to_owned();
        [ty.as_str(), "hosts"]
            .iter()
            .find_map(|k| doc.get(*k).cloned())
            .unwrap_or(doc)
    }

    /// stdout as JSON lines (`apply --json`, `rollback --json`), each checked to be in the
    /// envelope.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}"));
                check_envelope(&v);
                v
            })
            .collect()
    }

    /// The hosts of the `summary` line of a `--json` run.
    #[track_caller]
    fn summary_hosts(&self) -> Vec<serde_json::Value> {
        let lines = self.json_lines();
        let summary = lines
            .into_iter()
            .find(|v| v["type"] == "summary")
            .unwrap_or_else(|| panic!("no summary line in:\n{}", self.stdout));
        summary["hosts"].as_array().unwrap().clone()
    }

    /// The summary's `detail` of `host` in a `--json` run (why it did not succeed; empty if
    /// it did).
    #[track_caller]
    pub fn detail(&self, host: &str) -> String {
        self.summary_hosts()
            .iter()
            .find(|h| h["name"] == host)
            .and_then(|h| h["detail"].as_str())
            .unwrap_or_default()
            .to_owned()
    }

    /// The `summary` line of a `--json` run: host name → outcome.
    #[track_caller]
    pub fn outcomes(&self) -> std::collections::BTreeMap<String, String> {
        self.summary_hosts()
            .iter()
            .map(|h| {
                (
                    h["name"].as_str().unwrap().to_owned(),
                    h["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

/// Polls `cond` every 50 ms until it holds; panics after `timeout` saying `what` was awaited.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `fleet` process running in the background ([`Fleet::spawn`]): its stdout is collected line
/// by line while it runs (for `--json` events), its stderr at the end.
pub struct Running {
    child: Child,
    args: String,
    started: Instant,
    lines: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<u8>>>,
    stdout: Option<std::thread::JoinHandle<()>>,
    stderr: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// The fleet process's id (also its process group's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The JSON lines printed so far (lines that are not JSON are skipped).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// What fleet printed on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    /// Waits until an event satisfies `pred` and returns it; panics after `timeout` or when
    /// fleet exits first.
    #[track_caller]
    pub fn wait_for_event(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // One last look: the line may have arrived with the exit.
                std::thread::sleep(Duration::from_millis(100));
                if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                    return e;
                }
                panic!(
                    "fleet {} exited ({status}) before {what}; stdout so far:\n{}",
                    self.args,
                    self.lines.lock().unwrap().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; stdout so far:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT to fleet's process group, as Ctrl-C in a terminal does (fleet and the local
    /// processes it started get it).
    pub fn interrupt(&self) {
        let st = Command::new("kill")
            .args(["-INT", "--", &format!("-{}", self.pid())])
            .status()
            .expect("kill runs");
        assert!(st.success(), "kill -INT failed");
    }

    /// Whether fleet is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for fleet to exit (at most `timeout`, then kills it and panics).
    #[track_caller]
    pub fn finish(mut self, timeout: Duration) -> Run {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("fleet {} did not exit within {timeout:?}", self.args);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(t) = self.stdout.take() {
            let _ = t.join();
        }
        if let Some(t) = self.stderr.take() {
            let _ = t.join();
        }
        let stderr = self.stderr_so_far();
        let mut stdout = self.lines.lock().unwrap().join("\n");
        stdout.push('\n');
        let run = Run {
            code: status.code(),
            stdout,
            stderr,
            took: self.started.elapsed(),
        };
        eprintln!(
            "$ fleet {} -> {:?} in {:.1?}\n{}{}",
            self.args, run.code, run.took, run.stderr, run.stdout
        );
        run
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A simulated fleet with its fleet.toml.
pub struct Fleet {
    pub tb: Testbed,
    pub dir: PathBuf,
    pub home: PathBuf,
    _tmp: tempfile::TempDir,
    /// Extra environment for every fleet run.
    pub env: Vec<(String, String)>,
}

/// A configuration of the stand-in for host `name` with `packages` (attribute names of pkgs).
pub fn config(name: &str, packages: &[&str]) -> String {
    let pkgs: Vec<String> = packages.iter().map(|p| format!("pkgs.{p}")).collect();
    format!(
        "{{ pkgs, ... }}: {{\n  networking.hostName = \"{name}\";\n  environment.systemPackages = [ {} ];\n}}\n",
        pkgs.join(" ")
    )
}

/// The entry called `name` of a JSON list of hosts (`status --json`), or of a document's `hosts`
/// list (a plan, a summary); panics with the list when there is none.
#[track_caller]
pub fn named<'a>(json: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let list = if json.is_array() {
        json
    } else {
        &json["hosts"]
    };
    list.as_array()
        .unwrap_or_else(|| panic!("not a list of hosts: {json}"))
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

/// A configuration of the stand-in for host `name` with extra lines of Nix.
pub fn config_with(name: &str, extra: &str) -> String {
    format!("{{ pkgs, ... }}: {{\n  networking.hostName = \"{name}\";\n  {extra}\n}}\n")
}

/// What a host runs now (`/run/current-system`, resolved).
pub fn current(f: &Fleet, host: &str) -> Option<String> {
    f.link(host, "/run/current-system")
}

/// Panics unless `v` is in fleet's JSON envelope: `format` 1, a `type`, and, on a line of an
/// event stream, an RFC 3339 UTC `time`.
#[track_caller]
pub fn check_envelope(v: &serde_json::Value) {
    assert_eq!(v["format"], 1, "no format 1: {v}");
    assert!(v["type"].is_string(), "no type: {v}");
    if let Some(t) = v.get("time") {
        let t = t.as_str().unwrap_or_default();
        assert!(
            t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "time is not RFC 3339 UTC: {v}"
        );
    }
}

/// What the system profile points at.
pub fn profile(f: &Fleet, host: &str) -> Option<String> {
    f.link(host, "/nix/var/nix/profiles/system")
}

/// The toplevel a `--json` run planned for `host`.
#[track_caller]
pub fn planned_target(events: &[serde_json::Value], host: &str) -> String {
    let plan = events
        .iter()
        .find(|v| v["type"] == "plan")
        .expect("plan line");
    plan["plan"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == host)
        .and_then(|h| h["target"].as_str())
        .unwrap_or_else(|| panic!("no target for {host}"))
        .to_owned()
}

/// A shell command printing fleet's record of the deployment of `toplevel` on a host.
pub fn record_cmd(toplevel: &str) -> String {
    format!(
        "cat /nix/var/fleet/records/{}.json",
        toplevel.trim_start_matches("/nix/store/")
    )
}

impl Fleet {
    /// Starts the hosts; each gets `config(name, ["htop"])` and the testbed's fleet.toml.
    pub fn start(specs: impl IntoIterator<Item = HostSpec>) -> Fleet {
        Self::start_with(Testbed::builder().hosts(specs))
    }

    pub fn start_with(builder: fleet_testbed::TestbedBuilder) -> Fleet {
        let tb = builder.start().expect("testbed starts");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("fleet");
        let home = tmp.path().join("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        for h in tb.hosts() {
            let d = dir.join("hosts").join(&h.name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("configuration.nix"), config(&h.name, &["htop"])).unwrap();
        }
        let toml = tb.fleet_toml(&fleet_testbed::nixpkgs_standin(), |h| {
            dir.join("hosts").join(&h.name).join("configuration.nix")
        });
        std::fs::write(dir.join("fleet.toml"), toml).unwrap();
        let password = tb.sudo_password().to_owned();
        Fleet {
            tb,
            dir,
            home,
            _tmp: tmp,
            env: vec![(
                "FLEET_SUDO_PASSWORD_COMMAND".into(),
                format!("printf '%s\\n' '{password}'"),
            )],
        }
    }

    pub fn toml_path(&self) -> PathBuf {
        self.dir.join("fleet.toml")
    }

    /// Replaces a host's configuration.nix.
    pub fn set_config(&self, host: &str, text: &str) {
        std::fs::write(
            self.dir.join("hosts").join(host).join("configuration.nix"),
            text,
        )
        .unwrap();
    }

    /// `fleet ARGS` in the fleet directory, not yet spawned.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(fleet_bin());
        c.args(args)
            .current_dir(&self.dir)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("FLEET_FILE")
            .env_remove("FLEET_SUDO_PASSWORD_COMMAND")
            .env("HOME", &self.home)
            .env("USER", "tester")
            .env("NO_COLOR", "1")
            .envs(self.tb.nix_env())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }

    /// Starts `fleet ARGS` in the background, in its own process group (so
    /// [`Running::interrupt`] is a terminal's Ctrl-C).
    pub fn spawn(&self, args: &[&str]) -> Running {
        self.spawn_inner(args, false)
    }

    /// [`spawn`](Self::spawn) with stderr a pipe whose reader has exited (as in
    /// `fleet apply 2>&1 | tee log` once `tee` is gone): every write to it fails with EPIPE.
    pub fn spawn_stderr_closed(&self, args: &[&str]) -> Running {
        self.spawn_inner(args, true)
    }

    fn spawn_inner(&self, args: &[&str], stderr_closed: bool) -> Running {
        let mut c = self.command(args);
        c.stdout(Stdio::piped()).process_group(0);
        if stderr_closed {
            // The write end of a pipe into a process that has exited.
            let mut reader = Command::new("true")
                .stdin(Stdio::piped())
                .spawn()
                .expect("true starts");
            let writer = reader.stdin.take().expect("piped");
            reader.wait().expect("true exits");
            c.stderr(Stdio::from(writer));
        } else {
            c.stderr(Stdio::piped());
        }
        let mut child = c.spawn().expect("fleet starts");
        drop(c);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let err = Arc::new(Mutex::new(Vec::new()));
        let to = err.clone();
        let stderr = child.stderr.take().map(|mut from| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    to.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        });
        Running {
            child,
            args: args.join(" "),
            started: Instant::now(),
            lines,
            err,
            stdout: Some(stdout),
            stderr,
        }
    }

    /// Rewrites fleet.toml.
    pub fn edit_toml(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(self.toml_path()).unwrap();
        std::fs::write(self.toml_path(), edit(text)).unwrap();
    }

    /// The host's store holds no partial or corrupt path: `nix-store --verify --check-contents`
    /// (every valid path's contents against its registered hash) is clean.
    #[track_caller]
    pub fn assert_store_clean(&self, host: &str) {
        let out = self
            .tb
            .exec(host, "nix-store --verify --check-contents 2>&1")
            .expect("exec");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && !text.contains("was modified")
                && !text.contains("disappeared")
                && !text.contains("error"),
            "{host}: the store does not verify:\n{text}"
        );
    }

    /// Runs `fleet ARGS` to the end.
    pub fn fleet(&self, args: &[&str]) -> Run {
        let started = Instant::now();
        let out: Output = self.command(args).output().expect("fleet runs");
        let run = Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: started.elapsed(),
        };
        eprintln!(
            "$ fleet {} -> {:?} in {:.1?}\n{}{}",
            args.join(" "),
            run.code,
            run.took,
            run.stderr,
            run.stdout
        );
        run
    }

    /// Runs a shell command as root inside the host (not over SSH); its stdout, trimmed.
    #[track_caller]
    pub fn sh(&self, host: &str, cmd: &str) -> String {
        self.tb
            .exec_ok(host, cmd)
            .unwrap_or_else(|e| panic!("{host}: `{cmd}` failed: {e}"))
            .trim()
            .to_owned()
    }

    /// Where a link on the host resolves to, or `None` when it does not exist.
    pub fn link(&self, host: &str, path: &str) -> Option<String> {
        let out = self.sh(
            host,
            &format!("[ -e {path} ] && readlink -f {path} || true"),
        );
        (!out.is_empty()).then_some(out)
    }

    /// Every valid path in the host's store.
    pub fn store_paths(&self, host: &str) -> std::collections::BTreeSet<String> {
        self.sh(
            host,
            "nix --extra-experimental-features nix-command path-info --all",
        )
        .lines()
        .map(str::to_owned)
        .collect()
    }

    /// The invariant every test ends with, on every host: the system profile and
    /// `/run/current-system` point at complete closures (`nix-store --verify-path` of every path
    /// is clean), and the host runs one of `allowed` (its old or its new system; `None` for "no
    /// system yet"), never something in between.
    #[track_caller]
    pub fn assert_sound(&self, host: &str, allowed: &[Option<&str>]) {
        let current = self.link(host, "/run/current-system");
        assert!(
            allowed.contains(&current.as_deref()),
            "{host} runs {current:?}, expected one of {allowed:?}"
        );
        let profile = self.link(host, "/nix/var/nix/profiles/system");
        for (what, p) in [("current system", &current), ("system profile", &profile)] {
            let Some(p) = p else { continue };
            let out = self.tb.exec(
                host,
                &format!(
                    "set -e; for p in $(nix-store -qR {p}); do nix-store --verify-path $p; done"
                ),
            );
            let out = out.expect("exec");
            assert!(
                out.status.success(),
                "{host}: {what} {p} is not a complete, valid closure: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some(p) = &profile {
            assert!(
                allowed.contains(&Some(p.as_str())),
                "{host}: the system profile points at {p}, expected one of {allowed:?}"
            );
        }
    }
}
