//! Running the local Nix commands.

use std::process::Stdio;
use std::sync::Arc;

use tokio::process::Command;

use crate::error::BuildError;

/// A finished Nix process.
pub(crate) struct Output {
    pub success: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

pub(crate) fn command(program: &str, args: &[String], env: &[(String, String)]) -> Command {
    tracing::debug!(program, ?args, "running a Nix command");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        // The deployer's search path never reaches evaluation: `<nixpkgs>` is the host's pin,
        // given with `-I` (see `isolated_eval_args`). NIXOS_CONFIG would win over
        // `<nixos-config>` in nixpkgs' `from-env.nix`.
        .env("NIX_PATH", "")
        .env_remove("NIXOS_CONFIG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

pub(crate) fn spawn_error(program: &str, e: std::io::Error) -> BuildError {
    BuildError::Spawn {
        program: program.to_owned(),
        source: Arc::new(e),
    }
}

/// The start of every `nix-instantiate` fleet runs: `--option nix-path ''` empties the search
/// path that nix.conf or `NIX_CONFIG` may set (they win over `NIX_PATH`); fleet adds its own
/// entries with `-I`.
pub(crate) fn isolated_eval_args() -> Vec<String> {
    ["--option", "nix-path", "", "--eval", "--strict"]
        .map(str::to_owned)
        .to_vec()
}

/// Run a command to completion with `input` on its stdin, capturing both streams.
pub(crate) async fn run_with_stdin(
    program: &str,
    args: &[String],
    env: &[(String, String)],
    input: String,
) -> Result<Output, BuildError> {
    use tokio::io::AsyncWriteExt;
    let mut child = command(program, args, env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(program, e))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(input.as_bytes()).await;
        let _ = stdin.shutdown().await;
    });
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| spawn_error(program, e))?;
    let _ = writer.await;
    Ok(Output {
        success: out.status.success(),
        status: out.status.to_string(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// How a process run under a memory limit ended.
pub(crate) enum Limited {
    Done(Output),
    /// Its resident memory went past the limit; it was killed.
    OverMemory {
        rss: u64,
    },
}

/// How often the resident memory of a limited process is read.
const RSS_POLL: std::time::Duration = std::time::Duration::from_millis(25);

/// Resident memory of a process, in bytes (`VmRSS` of `/proc/PID/status`).
pub(crate) fn rss_of(pid: u32) -> Option<u64> {
    kb_field(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "VmRSS:",
    )
}

/// This machine's `MemAvailable` (`/proc/meminfo`), in bytes: what evaluation may use.
pub fn mem_available() -> Option<u64> {
    kb_field(
        &std::fs::read_to_string("/proc/meminfo").ok()?,
        "MemAvailable:",
    )
}

/// A `NAME:   123 kB` line of a `/proc` file, in bytes.
fn kb_field(text: &str, name: &str) -> Option<u64> {
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// [`run_with_stdin`], killing the process when its resident memory exceeds `max_rss` bytes
/// (read every 25 ms, as nix-eval-jobs checks its workers after each job; a process can
/// overshoot by what it allocates in that time).
pub(crate) async fn run_with_stdin_limited(
    program: &str,
    args: &[String],
    env: &[(String, String)],
    input: String,
    max_rss: Option<u64>,
) -> Result<Limited, BuildError> {
    let Some(limit) = max_rss else {
        return run_with_stdin(program, args, env, input)
            .await
            .map(Limited::Done);
    };
    use tokio::io::AsyncWriteExt;
    let mut child = command(program, args, env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(program, e))?;
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(input.as_bytes()).await;
        let _ = stdin.shutdown().await;
    });
    let watch = async {
        let Some(pid) = pid else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(RSS_POLL).await;
            if let Some(rss) = rss_of(pid).filter(|&rss| rss > limit) {
                return rss;
            }
        }
    };
    // Dropping the waiting future on the limit drops the child: `kill_on_drop` kills it.
    let out = tokio::select! {
        out = child.wait_with_output() => out.map_err(|e| spawn_error(program, e))?,
        rss = watch => {
            writer.abort();
            return Ok(Limited::OverMemory { rss });
        }
    };
    let _ = writer.await;
    Ok(Limited::Done(Output {
        success: out.status.success(),
        status: out.status.to_string(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }))
}

/// Run a command to completion, capturing both streams.
pub(crate) async fn run(
    program: &str,
    args: &[String],
    env: &[(String, String)],
) -> Result<Output, BuildError> {
    let out = command(program, args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| spawn_error(program, e))?;
    Ok(Output {
        success: out.status.success(),
        status: out.status.to_string(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Human form of a command line for error messages.
pub(crate) fn display(program: &str, args: &[String]) -> String {
    let mut s = program.to_owned();
    for a in args {
        s.push(' ');
        if a.len() > 200 {
            s.push_str("<expression>");
        } else {
            s.push_str(a);
        }
    }
    s
}

/// The end of a long stderr: Nix puts the error last.
pub(crate) fn excerpt(stderr: &str) -> String {
    const MAX_LINES: usize = 60;
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    if lines.len() <= MAX_LINES {
        lines.join("\n")
    } else {
        format!(
            "[… {} lines]\n{}",
            lines.len() - MAX_LINES,
            lines[lines.len() - MAX_LINES..].join("\n")
        )
    }
}
