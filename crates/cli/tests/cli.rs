//! The built `fleet` binary, run the way a user runs it.

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fleet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleet"))
        .args(args)
        .current_dir(repo_root())
        .env_remove("FLEET_FILE")
        .env("NO_COLOR", "1")
        .output()
        .expect("run fleet")
}

#[test]
fn hosts_on_pi_json_prints_just_the_pis() {
    let out = fleet(&[
        "--file",
        "fleet.example.toml",
        "hosts",
        "--on",
        "@pi",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The envelope every --json output has (docs/cli.md, "JSON output").
    assert_eq!(doc["format"], 1, "{doc}");
    assert_eq!(doc["type"], "hosts", "{doc}");
    let hosts = doc["hosts"].as_array().unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["pi1", "pi2"]);
    for host in hosts {
        for key in [
            "name",
            "address",
            "user",
            "port",
            "system",
            "pin",
            "config",
            "tags",
            "confirm_timeout",
        ] {
            assert!(host.get(key).is_some(), "missing `{key}` in {host}");
        }
        // One key case: snake_case, though fleet.toml's keys are kebab-case.
        for key in host.as_object().unwrap().keys() {
            assert!(!key.contains('-'), "`{key}` is not snake_case in {host}");
        }
        assert_eq!(host["system"], "aarch64-linux");
    }
}

#[test]
fn hosts_table_lists_everything() {
    let out = fleet(&["--file", "fleet.example.toml", "hosts"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("NAME"));
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    // A flake host shows its flake where a pinned host shows its configuration.
    assert!(
        stdout.lines().any(|l| l.starts_with("router")
            && l.contains("(flake)")
            && l.ends_with("github:me/infra#router")),
        "{stdout}"
    );
}

/// The write end of a pipe whose reader has exited: writes to it fail with EPIPE.
fn dead_pipe() -> std::process::Stdio {
    let mut reader = Command::new("true")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let writer = reader.stdin.take().unwrap();
    reader.wait().unwrap();
    writer.into()
}

/// `fleet hosts | head` (stdout closed) and an error with stderr closed: no panic, the
/// normal exit codes.
#[test]
fn closed_stdout_or_stderr_is_not_a_panic() {
    let run = |args: &[&str], stdout: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleet"));
        c.args(args)
            .current_dir(repo_root())
            .env_remove("FLEET_FILE");
        if stdout {
            c.stdout(dead_pipe()).stderr(std::process::Stdio::piped());
        } else {
            c.stderr(dead_pipe()).stdout(std::process::Stdio::piped());
        }
        c.output().unwrap()
    };
    let out = run(&["--file", "fleet.example.toml", "hosts"], true);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["--file", "fleet.example.toml", "hosts", "--json"], true);
    assert_eq!(out.status.code(), Some(0));
    // An error whose message cannot be shown still exits with its code.
    let out = run(&["--file", "does-not-exist.toml", "hosts"], false);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_file_exits_2_and_shows_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.toml");
    std::fs::write(
        &file,
        "[hosts.pi1]\nsystem = \"aarch64-linux\"\nport = 70000\n",
    )
    .unwrap();
    let out = fleet(&["--file", file.to_str().unwrap(), "hosts"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("port = 70000"), "{stderr}");
    assert!(stderr.contains("port 70000 is out of range"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_file_exits_2() {
    let out = fleet(&["--file", "no-such-fleet.toml", "hosts"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unmatched_selector_exits_2_listing_what_exists() {
    let out = fleet(&["-f", "fleet.example.toml", "hosts", "--on", "@gpu"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pi1, pi2, nas"), "{stderr}");
    assert!(stderr.contains("@pi"), "{stderr}");
}

#[test]
fn unreadable_or_foreign_plans_exit_2_before_touching_hosts() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, says) in [
        ("garbage.json", "not json", "not a fleet plan: invalid JSON"),
        (
            "future.json",
            r#"{"format": 99, "hosts": []}"#,
            "plan format 99 is not supported",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = fleet(&["-f", "fleet.example.toml", "apply", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cannot read the plan"), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(fleet(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        fleet(&["-f", "fleet.example.toml", "apply", "no-such-plan.json"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn completions_and_man_page() {
    let out = fleet(&["completions", "bash"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("fleet"));
    let out = fleet(&["man"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH fleet"));
}

/// The bash completion completes `--on` from fleet.toml (names, tags, after `,` and `!`) and
/// goals for apply, by calling the real binary.
#[test]
fn bash_completion_knows_hosts_tags_and_goals() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_fleet"));
    let complete = |words: &str, cword: usize| -> Vec<String> {
        let script = format!(
            "source <(fleet completions bash)\nCOMP_WORDS=({words}); COMP_CWORD={cword}\n_fleet_dynamic\nprintf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(repo_root())
            .env("FLEET_FILE", "fleet.example.toml")
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin.parent().unwrap().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        complete("fleet apply --on ''", 3),
        ["@pi", "@sensors", "@storage", "nas", "pi1", "pi2", "router"]
    );
    assert_eq!(
        complete("fleet exec --on '@pi,!p'", 3),
        ["@pi,!pi1", "@pi,!pi2"]
    );
    assert_eq!(complete("fleet apply dr", 2), ["dry-activate"]);
    assert_eq!(complete("fleet logs n", 2), ["nas"]);
}
