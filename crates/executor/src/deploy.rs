//! The steps of an apply on one host, after planning: copy the missing paths (fan-out over the
//! hosts' store sessions), activate (profile + `switch-to-configuration`, rolled back on
//! failure), confirm over a new connection (else the host reverts by itself), and roll back to
//! the previous generation on request.
//!
//! The remote side is one POSIX script, `remote/activate.sh`, written to `/run/fleet/` and run
//! as root. It runs detached from the SSH session (`setsid`, or `systemd-run` where the host
//! has systemd), so a dropped connection never leaves a host half-activated.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_store::copy::{fan_out_serve, FanOutOptions};
use fleet_store::local::LocalStore;
use fleet_store::serve::{AddEvent, AddSummary};
use fleet_store::{PathInfo, StorePath};
use serde::{Deserialize, Serialize};

use crate::fanout::HostEvents;
use crate::ssh::error::{ConnectError, ExecError};
use crate::store::{StoreError, StoreSession};
use crate::sudo::Privilege;
use crate::{quote, Connection, Connector, SshTarget, Stdin};

/// The activation script run on the target (see the module docs).
pub const ACTIVATE_SCRIPT: &str = include_str!("remote/activate.sh");

/// What `switch-to-configuration` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Goal {
    /// Make it the boot default and activate it now.
    #[default]
    Switch,
    /// Make it the boot default only.
    Boot,
    /// Activate now, not the boot default.
    Test,
    /// Show what would change.
    DryActivate,
}

impl Goal {
    pub fn as_str(self) -> &'static str {
        match self {
            Goal::Switch => "switch",
            Goal::Boot => "boot",
            Goal::Test => "test",
            Goal::DryActivate => "dry-activate",
        }
    }

    /// Goals after which the deployer must reach the host again (magic rollback).
    pub fn needs_confirmation(self) -> bool {
        matches!(self, Goal::Switch | Goal::Test)
    }
}

impl std::str::FromStr for Goal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "switch" => Ok(Goal::Switch),
            "boot" => Ok(Goal::Boot),
            "test" => Ok(Goal::Test),
            "dry-activate" => Ok(Goal::DryActivate),
            _ => Err(format!(
                "unknown goal `{s}` (expected switch, boot, test or dry-activate)"
            )),
        }
    }
}

/// Why a deploy step failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("importing into the store of {host} failed (exit {status:?}): {stderr}")]
    Import {
        host: String,
        status: Option<u32>,
        stderr: String,
    },
    #[error("reading the local store failed: {0}")]
    Source(String),
    #[error("activation on {host} was refused (exit {status:?}): {stderr}")]
    Refused {
        host: String,
        status: Option<u32>,
        stderr: String,
    },
    #[error("activation on {host} failed (not rolled back, as asked): {stderr}")]
    ActivationFailed { host: String, stderr: String },
    #[error("activation on {host} failed and so did the rollback: {stderr}")]
    RollbackFailed { host: String, stderr: String },
    #[error("rollback on {host} failed (exit {status:?}): {stderr}")]
    Rollback {
        host: String,
        status: Option<u32>,
        stderr: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Copy

/// One host's part of a copy.
pub struct CopyTarget<'a> {
    pub session: &'a mut StoreSession,
    /// The paths of the closure the host lacks.
    pub missing: BTreeSet<StorePath>,
    pub events: HostEvents,
}

/// What one host received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyDone {
    pub paths: usize,
    pub nar_bytes: u64,
    /// Bytes on the wire (after compression), where known.
    pub wire_bytes: Option<u64>,
}

/// Told, as soon as one target's copy is complete and before the others are, its index in
/// `targets` and what it received: an apply goes on to activate that host at once, so a slow
/// host never holds back the others' activations.
pub type OnCopied<'a> = &'a (dyn Fn(usize, CopyDone) + Sync);

/// Copies `infos` (every path some host lacks, in dependency order) to all `targets` at once:
/// each NAR is read once and streamed to every host that lacks it, as pipelined AddToStoreNar
/// requests (a constant number of round trips per host). Progress goes to each host's events
/// about every 250 ms. Results are in `targets` order.
pub async fn copy_closures(
    store: &LocalStore,
    infos: &[PathInfo],
    targets: Vec<CopyTarget<'_>>,
) -> Vec<Result<CopyDone, fleet_store::Error>> {
    copy_closures_each(store, infos, targets, &|_, _| {}).await
}

/// [`copy_closures`], calling `on_copied` for each target the moment its copy is complete.
pub async fn copy_closures_each(
    store: &LocalStore,
    infos: &[PathInfo],
    targets: Vec<CopyTarget<'_>>,
    on_copied: OnCopied<'_>,
) -> Vec<Result<CopyDone, fleet_store::Error>> {
    struct Counter {
        bytes: AtomicU64,
        paths: AtomicU64,
        total_bytes: u64,
        total_paths: u64,
        /// Its final progress was sent: the ticker leaves it alone.
        finished: std::sync::atomic::AtomicBool,
    }
    let mut counters = Vec::new();
    let mut events = Vec::new();
    let mut pairs = Vec::new();
    for t in targets {
        let total_bytes = infos
            .iter()
            .filter(|i| t.missing.contains(&i.path))
            .map(|i| i.nar_size)
            .sum();
        counters.push(Arc::new(Counter {
            bytes: AtomicU64::new(0),
            paths: AtomicU64::new(0),
            total_bytes,
            total_paths: t.missing.len() as u64,
            finished: std::sync::atomic::AtomicBool::new(false),
        }));
        events.push(t.events);
        pairs.push((&mut t.session.client, t.missing));
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let ticker = {
        let (counters, events, stop) = (counters.clone(), events.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last = vec![(u64::MAX, u64::MAX); counters.len()];
            loop {
                let done = tokio::select! {
                    () = stop.cancelled() => true,
                    () = tokio::time::sleep(Duration::from_millis(250)) => false,
                };
                for (i, c) in counters.iter().enumerate() {
                    if c.finished.load(Ordering::Relaxed) {
                        continue;
                    }
                    let now = (
                        c.bytes.load(Ordering::Relaxed),
                        c.paths.load(Ordering::Relaxed),
                    );
                    if now != last[i] {
                        last[i] = now;
                        let _ = events[i]
                            .progress(now.0, c.total_bytes, now.1, c.total_paths)
                            .await;
                    }
                }
                if done {
                    break;
                }
            }
        })
    };
    let progress = |i: usize, e: AddEvent| match e {
        AddEvent::Sent { nar_bytes, .. } => counters[i].bytes.store(nar_bytes, Ordering::Relaxed),
        AddEvent::Acked { done, .. } => counters[i].paths.store(done as u64, Ordering::Relaxed),
    };
    let on_done = |i: usize, s: AddSummary| {
        let (counter, ev) = (counters[i].clone(), events[i].clone());
        async move {
            counter.finished.store(true, Ordering::Relaxed);
            let _ = ev
                .progress(
                    counter.total_bytes,
                    counter.total_bytes,
                    counter.total_paths,
                    counter.total_paths,
                )
                .await;
            on_copied(i, copy_done(&s));
        }
    };
    let (_report, results) = fan_out_serve(
        store,
        infos,
        pairs,
        &FanOutOptions::default(),
        &progress,
        on_done,
    )
    .await;
    let results = results
        .into_iter()
        .map(|r| r.map(|s| copy_done(&s)))
        .collect();
    stop.cancel();
    let _ = ticker.await;
    results
}

fn copy_done(s: &AddSummary) -> CopyDone {
    CopyDone {
        paths: s.paths,
        nar_bytes: s.nar_bytes,
        wire_bytes: None,
    }
}

/// One host's part of a compressed copy.
pub struct ImportTarget<'a> {
    pub conn: &'a Connection,
    pub privilege: &'a Privilege,
    pub missing: BTreeSet<StorePath>,
    pub events: HostEvents,
}

/// The remote end of a compressed copy: decompress and import (as root, so no signatures are
/// needed). `nix-store --import` registers each path atomically after its NAR arrived whole.
pub const IMPORT_COMMAND: &str = "zstd -dc | nix-store --import > /dev/null";

/// Copies to hosts that have `zstd` as zstd-compressed export streams into `zstd -dc |
/// nix-store --import`: each path is read and compressed **once**, however many hosts lack it,
/// and the compressed bytes go to every host that lacks it (the paths are cut into segments of
/// paths lacked by the same hosts: typically one shared segment, then one small segment per
/// host; see `compressed.rs`). No replies to wait for, so it is one round trip, and a fraction
/// of the bytes on slow links. Each host gets up to 16 MiB of the compressed stream ahead in
/// memory; past that, the hosts of a segment move at the pace of the slowest. Progress is what
/// each host received. Results are in `targets` order.
pub async fn copy_compressed(
    store: &LocalStore,
    infos: &[PathInfo],
    targets: Vec<ImportTarget<'_>>,
    zstd_level: i32,
) -> Vec<Result<CopyDone, DeployError>> {
    copy_compressed_each(store, infos, targets, zstd_level, &|_, _| {}).await
}

/// [`copy_compressed`], calling `on_copied` for each target the moment its import is complete
/// (right after its last segment, not after every host's).
pub async fn copy_compressed_each(
    store: &LocalStore,
    infos: &[PathInfo],
    targets: Vec<ImportTarget<'_>>,
    zstd_level: i32,
    on_copied: OnCopied<'_>,
) -> Vec<Result<CopyDone, DeployError>> {
    crate::compressed::copy_compressed_each(store, infos, targets, zstd_level, on_copied).await
}

// ---------------------------------------------------------------------------------------------
// Activation

/// What fleet records on the host at each apply (`/etc/nixos/fleet-deployment.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// fleet.toml's git commit, if it is in a git repository.
    pub commit: Option<String>,
    /// Whether the work tree had uncommitted changes.
    pub dirty: Option<bool>,
    /// `user@machine` that ran the apply.
    pub by: String,
    /// RFC 3339 UTC.
    pub at: String,
    pub toplevel: String,
    pub package: String,
    pub goal: Goal,
    pub fleet_version: String,
    pub id: String,
}

/// One activation.
#[derive(Debug, Clone)]
pub struct Activation {
    pub goal: Goal,
    pub toplevel: String,
    pub package: String,
    /// How long the host waits for [`confirm`] before reverting by itself; `None` disables the
    /// magic rollback (and `--no-rollback` also skips the automatic one).
    pub confirm_timeout: Option<Duration>,
    /// Roll back automatically when `switch-to-configuration` fails.
    pub auto_rollback: bool,
    /// Run `switch-to-configuration`. `false` when the host already runs `toplevel` and only
    /// the deployment package is new: it is linked and recorded ([`link_package`]).
    pub activate: bool,
    pub record: DeploymentRecord,
}

/// How an activation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activated {
    /// The new system is active (awaiting confirmation when `pending_confirmation`).
    Done {
        pending_confirmation: bool,
        log: String,
    },
    /// `switch-to-configuration` failed and the host is back on its previous system.
    RolledBack { log: String },
}

/// A fresh, unique deployment id (time + pid + counter).
pub fn deployment_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}-{}-{}",
        t.as_secs(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The command that installs the activation script from stdin and runs `mode args...`.
fn script_command(mode: &str, args: &[&str]) -> String {
    let mut cmd = String::from(
        "umask 077 && mkdir -p /run/fleet && cat > /run/fleet/activate.sh.$$ && \
         mv -f /run/fleet/activate.sh.$$ /run/fleet/activate.sh && exec sh /run/fleet/activate.sh ",
    );
    cmd.push_str(&quote(mode));
    for a in args {
        cmd.push(' ');
        cmd.push_str(&quote(a));
    }
    cmd
}

async fn run_script(
    conn: &Connection,
    privilege: &Privilege,
    mode: &str,
    args: &[&str],
) -> Result<crate::Output, ExecError> {
    conn.exec(
        &script_command(mode, args),
        privilege,
        Stdin::Bytes(bytes::Bytes::from_static(ACTIVATE_SCRIPT.as_bytes())),
    )
    .await
}

/// Sets the profile and runs `switch-to-configuration` on the host, as root, detached from the
/// SSH session. With `confirm_timeout`, a watchdog on the host reverts unless [`confirm`] reaches
/// it in time. If the connection drops mid-way, the outcome is read back over a new connection
/// by the caller ([`result_of`]).
pub async fn activate(
    conn: &Connection,
    privilege: &Privilege,
    a: &Activation,
) -> Result<Activated, DeployError> {
    let confirm_secs = match (a.goal.needs_confirmation(), a.confirm_timeout) {
        (true, Some(t)) => t.as_secs().max(1).to_string(),
        _ => "0".to_owned(),
    };
    let meta = serde_json::to_string(&a.record).expect("record serializes");
    let out = run_script(
        conn,
        privilege,
        "run-detached",
        &[
            a.goal.as_str(),
            &a.toplevel,
            &a.package,
            &confirm_secs,
            &a.record.id,
            &meta,
            if a.auto_rollback { "1" } else { "0" },
        ],
    )
    .await?;
    let log = out.stderr_lossy();
    match out.status {
        Some(0) => Ok(Activated::Done {
            pending_confirmation: confirm_secs != "0",
            log,
        }),
        Some(100) => Ok(Activated::RolledBack { log }),
        Some(102) => Err(DeployError::ActivationFailed {
            host: conn.name().to_owned(),
            stderr: log,
        }),
        Some(101) => Err(DeployError::RollbackFailed {
            host: conn.name().to_owned(),
            stderr: log,
        }),
        status => Err(DeployError::Refused {
            host: conn.name().to_owned(),
            status,
            stderr: log,
        }),
    }
}

/// Links `a.package` at `/etc/nixos/current-configuration` (with its GC roots) and records the
/// deployment, without touching the running system: for hosts that already run `a.toplevel`.
pub async fn link_package(
    conn: &Connection,
    privilege: &Privilege,
    a: &Activation,
) -> Result<(), DeployError> {
    let meta = serde_json::to_string(&a.record).expect("record serializes");
    let out = run_script(conn, privilege, "link", &[&a.package, &meta]).await?;
    if out.success() {
        Ok(())
    } else {
        Err(DeployError::Refused {
            host: conn.name().to_owned(),
            status: out.status,
            stderr: out.stderr_lossy().trim().to_owned(),
        })
    }
}

/// Reads what became of deployment `id` on the host: `applied`, `confirmed`, `rolled-back`,
/// `rollback-failed` or `unknown`.
pub async fn result_of(
    conn: &Connection,
    privilege: &Privilege,
    id: &str,
) -> Result<String, ExecError> {
    let out = run_script(conn, privilege, "result", &[id]).await?;
    Ok(out.stdout_lossy().trim().to_owned())
}

/// How a confirmation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    Confirmed,
    /// The host had already reverted (the watchdog fired first).
    TooLate,
    /// The host could not be reached again before the deadline; it reverts by itself.
    Unreachable {
        last_error: String,
    },
}

/// Confirms deployment `id` over a NEW connection (proving the new system still lets fleet in),
/// retrying until `deadline`.
pub async fn confirm(
    connector: &Connector,
    target: &SshTarget,
    privilege: &Privilege,
    id: &str,
    deadline: Instant,
) -> Confirmation {
    let mut last_error = String::from("no attempt made");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Confirmation::Unreachable { last_error };
        }
        let attempt = async {
            let conn = connector.connect(target).await?;
            let out = run_script(&conn, privilege, "confirm", &[id]).await;
            conn.close().await;
            Ok::<_, DeployError>(out?)
        };
        match tokio::time::timeout(left, attempt).await {
            Ok(Ok(out)) if out.status == Some(0) => return Confirmation::Confirmed,
            Ok(Ok(out)) if out.status == Some(3) => return Confirmation::TooLate,
            Ok(Ok(out)) => last_error = out.stderr_lossy().trim().to_owned(),
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => return Confirmation::Unreachable { last_error },
        }
        tokio::time::sleep(Duration::from_millis(500).min(left)).await;
    }
}

/// Switches the host to its previous system profile generation (`fleet rollback`).
pub async fn rollback(conn: &Connection, privilege: &Privilege) -> Result<String, DeployError> {
    let out = run_script(conn, privilege, "rollback", &[]).await?;
    if out.success() {
        Ok(out.stderr_lossy())
    } else {
        Err(DeployError::Rollback {
            host: conn.name().to_owned(),
            status: out.status,
            stderr: out.stderr_lossy().trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_parse_and_print() {
        for g in ["switch", "boot", "test", "dry-activate"] {
            assert_eq!(g.parse::<Goal>().unwrap().as_str(), g);
        }
        assert!("reboot".parse::<Goal>().is_err());
        assert!(Goal::Switch.needs_confirmation() && !Goal::Boot.needs_confirmation());
    }

    #[test]
    fn script_command_quotes_every_argument() {
        let c = script_command("apply", &["switch", "/nix/store/x y", "it's"]);
        assert!(
            c.ends_with("apply switch '/nix/store/x y' 'it'\\''s'"),
            "{c}"
        );
    }

    #[test]
    fn ids_are_unique() {
        assert_ne!(deployment_id(), deployment_id());
    }

    #[test]
    fn the_script_is_valid_sh() {
        let dir = std::env::temp_dir().join(format!("fleet-activate-{}", std::process::id()));
        std::fs::write(&dir, ACTIVATE_SCRIPT).unwrap();
        let st = std::process::Command::new("sh")
            .arg("-n")
            .arg(&dir)
            .status()
            .unwrap();
        let _ = std::fs::remove_file(&dir);
        assert!(st.success());
    }
}
