//! Health checks after activation, before confirmation (fleet.toml's `checks`).
//!
//! They run **from the deployer over the host's SSH connection**, so they need nothing on the
//! host that NixOS might lack (no curl, no bash `/dev/tcp`):
//! - a unit: `systemctl is-active UNIT` on the host (`/run/current-system/sw/bin` first);
//! - `tcp`: a `direct-tcpip` channel to `HOST:PORT` as the host sees it (sshd connects, as for
//!   `ssh -L`); the check passes when the connection is accepted;
//! - `http`: the same channel, a plain `GET` (HTTP/1.0), a 2xx status passes;
//! - a command: `sh -c CMD` as root (through sudo where configured), exit 0 passes.
//!
//! All of them must pass within the timeout; a round that fails is retried with back-off
//! (0.25 s doubling to 5 s). The last failure (which check, what it said) is returned.
//! [`abort`] then undoes the activation on the host at once (the watchdog's undo, claimed
//! instead of confirmation).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::activation::{exit, run_script, DeployState, Goal, Mode};
use crate::fanout::{HostEvents, HostOutcome, LogStream, Phase};
use crate::sudo::Privilege;
use crate::{quote, Connection, Connector, SshTarget, Stdin};

/// One check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Unit(String),
    Tcp {
        host: String,
        port: u16,
    },
    Http {
        url: String,
        host: String,
        port: u16,
        path: String,
    },
    Command(String),
}

impl Probe {
    /// How reports name it: `unit sshd.service`, `tcp 127.0.0.1:22`, `http URL`, `command CMD`.
    pub fn label(&self) -> String {
        match self {
            Probe::Unit(u) => format!("unit {u}"),
            Probe::Tcp { host, port } if host.contains(':') => format!("tcp [{host}]:{port}"),
            Probe::Tcp { host, port } => format!("tcp {host}:{port}"),
            Probe::Http { url, .. } => format!("http {url}"),
            Probe::Command(c) => format!("command `{c}`"),
        }
    }
}

/// A host's checks and the time they have to pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    pub probes: Vec<Probe>,
    pub timeout: Duration,
}

/// A check that did not pass in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    /// [`Probe::label`].
    pub check: String,
    /// What it said the last time (status line, output, error).
    pub output: String,
}

/// Longest a single probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs every check until all pass in one round, or `spec.timeout` is over.
pub async fn run_checks(
    conn: &Connection,
    privilege: &Privilege,
    spec: &HealthSpec,
) -> Result<(), CheckFailure> {
    let deadline = Instant::now() + spec.timeout;
    let mut delay = Duration::from_millis(250);
    loop {
        let mut failed = None;
        for p in &spec.probes {
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = PROBE_TIMEOUT.min(left).max(Duration::from_millis(500));
            let r = match tokio::time::timeout(limit, probe(conn, privilege, p)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {}s", limit.as_secs_f32())),
            };
            if let Err(output) = r {
                failed = Some(CheckFailure {
                    check: p.label(),
                    output,
                });
                break;
            }
        }
        let Some(f) = failed else { return Ok(()) };
        if Instant::now() + delay >= deadline || conn.is_closed() {
            return Err(f);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// One check, once: `Err` says why it failed.
async fn probe(conn: &Connection, privilege: &Privilege, p: &Probe) -> Result<(), String> {
    match p {
        Probe::Unit(unit) => {
            let cmd = format!(
                "PATH=/run/current-system/sw/bin:$PATH; export PATH; systemctl is-active {}",
                quote(unit)
            );
            let out = conn
                .exec(&cmd, &Privilege::None, Stdin::None)
                .await
                .map_err(|e| e.to_string())?;
            if out.success() {
                Ok(())
            } else {
                let said = last_lines(&format!("{}{}", out.stdout_lossy(), out.stderr_lossy()));
                Err(if said.is_empty() {
                    format!("not active (exit {:?})", out.status)
                } else {
                    said
                })
            }
        }
        Probe::Command(c) => {
            let cmd = format!("sh -c {}", quote(c));
            let out = conn
                .exec(&cmd, privilege, Stdin::None)
                .await
                .map_err(|e| e.to_string())?;
            if out.success() {
                Ok(())
            } else {
                let said = last_lines(&format!("{}{}", out.stdout_lossy(), out.stderr_lossy()));
                let code = match (out.status, &out.signal) {
                    (Some(s), _) => format!("exit {s}"),
                    (None, Some(sig)) => format!("killed by {sig}"),
                    _ => "no exit status".to_owned(),
                };
                Err(if said.is_empty() {
                    code
                } else {
                    format!("{code}: {said}")
                })
            }
        }
        Probe::Tcp { host, port } => match conn.open_tcp(host, *port).await {
            Ok(mut s) => {
                let _ = s.shutdown().await;
                Ok(())
            }
            Err(e) => Err(format!("connection refused or unreachable ({e})")),
        },
        Probe::Http {
            host, port, path, ..
        } => {
            let mut s = conn
                .open_tcp(host, *port)
                .await
                .map_err(|e| format!("connection refused or unreachable ({e})"))?;
            let authority = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let req = format!(
                "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: fleet-check\r\n\
                 Connection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("sending the request: {e}"))?;
            let _ = s.flush().await;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.contains(&b'\n') && buf.len() < 4096 {
                match s.read(&mut chunk).await {
                    Ok(0) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) => return Err(format!("reading the answer: {e}")),
                }
            }
            let _ = s.shutdown().await;
            let line = String::from_utf8_lossy(&buf);
            let line = line.lines().next().unwrap_or("").trim().to_owned();
            match status_code(&line) {
                Some(c) if (200..300).contains(&c) => Ok(()),
                Some(_) => Err(line),
                None if line.is_empty() => Err("closed without an answer".to_owned()),
                None => Err(format!("not an HTTP answer: {line}")),
            }
        }
    }
}

/// Where an activation awaits its checks.
pub(crate) struct OnHost<'a> {
    pub connector: &'a Connector,
    pub target: &'a SshTarget,
    pub privilege: &'a Privilege,
    pub id: &'a str,
    pub goal: Goal,
}

/// Runs the host's health checks over a new connection (so they also prove that the new system
/// lets fleet in). `None`: they passed, or the host could not be reached (the confirmation then
/// decides). A failure is undone on the host at once unless nothing awaits confirmation
/// (`--no-rollback`), then reported as `check-failed`.
pub(crate) async fn check_host(
    p: &OnHost<'_>,
    ev: &HostEvents,
    spec: &HealthSpec,
    unconfirmed: bool,
) -> Option<HostOutcome> {
    if !p.goal.activates() || spec.probes.is_empty() {
        return None;
    }
    let _ = ev.phase(Phase::Checking).await;
    let conn =
        match tokio::time::timeout(Duration::from_secs(10), p.connector.connect(p.target)).await {
            Ok(Ok(c)) => c,
            _ => return None,
        };
    let r = run_checks(&conn, p.privilege, spec).await;
    let outcome = match r {
        Ok(()) => {
            let _ = ev
                .log(
                    LogStream::Fleet,
                    format!("{} health checks passed", spec.probes.len()),
                )
                .await;
            None
        }
        Err(f) => {
            let _ = ev
                .log(
                    LogStream::Fleet,
                    format!("health check {} failed: {}", f.check, f.output),
                )
                .await;
            if unconfirmed {
                Some(HostOutcome::CheckFailed {
                    check: f.check,
                    output: f.output,
                    rolled_back: false,
                })
            } else {
                let _ = ev.phase(Phase::RollingBack).await;
                let id = p.id;
                Some(match abort(&conn, p.privilege, id).await {
                    Ok(true) => HostOutcome::CheckFailed {
                        check: f.check,
                        output: f.output,
                        rolled_back: true,
                    },
                    Ok(false) => match crate::activation::result_of(&conn, p.privilege, id).await {
                        Ok(DeployState::RolledBack) => HostOutcome::CheckFailed {
                            check: f.check,
                            output: f.output,
                            rolled_back: true,
                        },
                        other => HostOutcome::Failed {
                            error: format!(
                                "health check {} failed ({}), and the deployment could not be                                  undone: it is no longer pending ({other:?})",
                                f.check, f.output
                            ),
                        },
                    },
                    Err(e) => HostOutcome::Failed {
                        error: format!(
                            "health check {} failed ({}), and so did the rollback: {}",
                            f.check,
                            f.output,
                            crate::error_chain(&e)
                        ),
                    },
                })
            }
        }
    };
    conn.close().await;
    outcome
}

/// The status of an HTTP status line (`HTTP/1.1 200 OK` → 200).
fn status_code(line: &str) -> Option<u16> {
    let mut w = line.split_whitespace();
    w.next().filter(|v| v.starts_with("HTTP/"))?;
    w.next()?.parse().ok()
}

/// The last three non-empty lines, joined by " / ".
fn last_lines(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

/// Undoes deployment `id` on the host now (its checks failed): claims it from the watchdog and
/// runs the same undo. `Ok(true)`: undone; `Ok(false)`: it was no longer pending (confirmed, or
/// the watchdog was first and undid it).
pub async fn abort(
    conn: &Connection,
    privilege: &Privilege,
    id: &str,
) -> Result<bool, crate::error::DeployError> {
    let out = run_script(conn, privilege, Mode::Abort, &[id]).await?;
    match out.status {
        Some(exit::ABORTED) => Ok(true),
        Some(exit::NOT_PENDING) => Ok(false),
        status => Err(crate::error::DeployError::Rollback {
            host: conn.name().to_owned(),
            status,
            stderr: out.stderr_lossy().trim().to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_and_labels() {
        assert_eq!(status_code("HTTP/1.0 200 OK"), Some(200));
        assert_eq!(status_code("HTTP/1.1 404 File not found"), Some(404));
        assert_eq!(status_code("SSH-2.0-OpenSSH"), None);
        assert_eq!(
            Probe::Tcp {
                host: "::1".into(),
                port: 22
            }
            .label(),
            "tcp [::1]:22"
        );
        assert_eq!(last_lines("a\n\nb\nc\nd\n"), "b / c / d");
    }
}
