//! Helpers for the stand-in and reboot tests: build a stand-in system on the deployer, copy it
//! into a simulated host, activate it there.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use fleet_testbed::{nix_config, nixpkgs_standin, Testbed};

/// The deployer's Nix settings (no substituters, aarch64 "emulation").
pub fn nix_env() -> [(&'static str, String); 1] {
    [("NIX_CONFIG", nix_config(Some("aarch64-linux")))]
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts success; returns stdout.
pub fn check(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The Nix expression of the stand-in NixOS system of `configuration` (a Nix expression: an
/// attrset, a function or a path) for `system`.
pub fn system_expr(nixpkgs: &Path, configuration: &str, system: &str) -> String {
    format!(
        "(import {}/nixos {{ configuration = {configuration}; system = \"{system}\"; }})",
        nixpkgs.display()
    )
}

/// Builds `expr` on the deployer (with `extra` arguments for nix-build); returns the output.
pub fn nix_build(expr: &str, extra: &[&str]) -> Output {
    Command::new("nix-build")
        .args(["--no-out-link", "-E", expr])
        .args(extra)
        .envs(nix_env())
        .stdin(Stdio::null())
        .output()
        .expect("running nix-build")
}

/// Builds the stand-in system of `configuration` for `system`; returns its toplevel.
pub fn build_system(configuration: &str, system: &str) -> String {
    let expr = format!(
        "{}.system",
        system_expr(&nixpkgs_standin(), configuration, system)
    );
    check(&format!("nix-build {expr}"), &nix_build(&expr, &[]))
        .trim()
        .to_owned()
}

/// Evaluates `expr` (strictly) on the deployer with `extra` arguments.
pub fn nix_eval(expr: &str, extra: &[&str]) -> Output {
    Command::new("nix-instantiate")
        .args(["--eval", "--strict", "-E", expr])
        .args(extra)
        .envs(nix_env())
        .stdin(Stdio::null())
        .output()
        .expect("running nix-instantiate")
}

/// Copies `path`'s closure into `host` with nix-copy-closure.
pub fn copy(tb: &Testbed, host: &str, path: &str) {
    let out = Command::new("nix-copy-closure")
        .arg("--to")
        .arg(tb.host(host).ssh_target())
        .arg(path)
        .envs(tb.nix_env())
        .env("NIX_SSHOPTS", tb.nix_sshopts())
        .stdin(Stdio::null())
        .output()
        .expect("running nix-copy-closure");
    check("nix-copy-closure", &out);
}

/// Runs `cmd` as root in `host`; requires success, returns stdout, trimmed.
pub fn sh(tb: &Testbed, host: &str, cmd: &str) -> String {
    let out = tb.exec(host, cmd).expect("exec in host");
    check(&format!("`{cmd}` in {host}"), &out).trim().to_owned()
}

/// `nix-env -p /nix/var/nix/profiles/system --set <toplevel>` in `host`.
pub fn set_profile(tb: &Testbed, host: &str, toplevel: &str) {
    sh(
        tb,
        host,
        &format!("nix-env -p /nix/var/nix/profiles/system --set {toplevel}"),
    );
}

/// `<toplevel>/bin/switch-to-configuration <action>` in `host` with environment `env`
/// (`VAR=value ...`, may be empty); any exit status.
pub fn switch(tb: &Testbed, host: &str, env: &str, toplevel: &str, action: &str) -> Output {
    tb.exec(
        host,
        &format!("{env} {toplevel}/bin/switch-to-configuration {action}"),
    )
    .expect("exec in host")
}

/// Where `link` points in `host` (`none` when it does not exist).
pub fn readlink(tb: &Testbed, host: &str, link: &str) -> String {
    sh(tb, host, &format!("readlink -e {link} || echo none"))
}

/// Whether `ssh root@host true` works.
pub fn ssh_ok(tb: &Testbed, host: &str) -> bool {
    tb.ssh(host, "root", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The command lines of the processes of `host` (its network namespace), the holder included.
pub fn host_processes(tb: &Testbed, host: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "pids", &tb.host(host).netns])
        .output()
        .expect("ip netns pids");
    text(&out.stdout)
        .split_whitespace()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|c| text(&c).replace('\0', " ").trim().to_owned())
        .collect()
}
