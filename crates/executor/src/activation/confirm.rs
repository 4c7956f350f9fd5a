//! After activation: what became of a deployment on the host ([`DeployState`], its result
//! word), and its confirmation over a new connection (magic rollback).

use std::time::{Duration, Instant};

use super::script::{exit, run_script, Mode};
use crate::error::DeployError;
use crate::ssh::error::ExecError;
use crate::sudo::Privilege;
use crate::{Connection, Connector, SshTarget};

/// What became of a deployment on the host, as its result file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployState {
    /// Active, awaiting confirmation.
    Applied,
    /// Active with failed units, awaiting confirmation.
    UnitsFailed,
    Confirmed,
    RebootRequired,
    RolledBack,
    RollbackFailed,
    Failed,
    Locked,
    DryRun,
    /// No result yet, or none known.
    Unknown,
}

impl DeployState {
    fn parse(word: &str) -> Self {
        match word {
            "applied" => DeployState::Applied,
            "units-failed" => DeployState::UnitsFailed,
            "confirmed" => DeployState::Confirmed,
            "reboot-required" => DeployState::RebootRequired,
            "rolled-back" => DeployState::RolledBack,
            "rollback-failed" => DeployState::RollbackFailed,
            "failed" => DeployState::Failed,
            "locked" => DeployState::Locked,
            "dry-run" => DeployState::DryRun,
            _ => DeployState::Unknown,
        }
    }
}

/// Reads what became of deployment `id` on the host.
pub async fn result_of(
    conn: &Connection,
    privilege: &Privilege,
    id: &str,
) -> Result<DeployState, ExecError> {
    let out = run_script(conn, privilege, Mode::Result, &[id]).await?;
    Ok(DeployState::parse(out.stdout_lossy().trim()))
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
            let out = run_script(&conn, privilege, Mode::Confirm, &[id]).await;
            conn.close().await;
            Ok::<_, DeployError>(out?)
        };
        match tokio::time::timeout(left, attempt).await {
            Ok(Ok(out)) if out.status == Some(exit::APPLIED) => return Confirmation::Confirmed,
            Ok(Ok(out)) if out.status == Some(exit::TOO_LATE) => return Confirmation::TooLate,
            Ok(Ok(out)) => last_error = out.stderr_lossy().trim().to_owned(),
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => return Confirmation::Unreachable { last_error },
        }
        tokio::time::sleep(Duration::from_millis(500).min(left)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_words() {
        assert_eq!(DeployState::parse("units-failed"), DeployState::UnitsFailed);
        assert_eq!(DeployState::parse("confirmed"), DeployState::Confirmed);
        assert_eq!(DeployState::parse("???"), DeployState::Unknown);
    }
}
