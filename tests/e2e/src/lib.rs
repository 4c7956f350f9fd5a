//! End-to-end test support: the real `fleet` binary against a simulated fleet
//! (`fleet-testbed`: real sshd, a private `/nix` per host) with configurations built from the
//! nixpkgs stand-in.
//!
//! - [`fleet_bin`]: builds the `fleet` binary once (cargo) and returns its path.
//! - [`Fleet`]: a testbed plus a fleet directory (`fleet.toml`, `hosts/<name>/configuration.nix`),
//!   an empty `HOME` (no `~/.ssh/config` of the machine leaks in), and helpers to run fleet,
//!   look inside hosts and check the invariant every test ends with ([`Fleet::assert_sound`]).
//! - [`matrix`]: hosts and deployers on other Nix versions ([`Fleet::use_deployer_nix`]).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

pub mod flakes;
pub mod matrix;
mod run;
pub mod scan;

pub use run::{wait_until, Run, Running};

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
        let child = c.spawn().expect("fleet starts");
        drop(c);
        Running::start(child, args.join(" "))
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
