//! Activation on one host: the goal, the helper script run as root (`remote/activate.sh`), its
//! named exit codes and what they mean, confirmation over a new connection (magic rollback),
//! and `fleet rollback`.
//!
//! The helper follows nixos-rebuild-ng: set the system profile for `switch`/`boot`, then run
//! `TOPLEVEL/bin/switch-to-configuration GOAL` (through `systemd-run` where systemd runs). Its
//! exit status is switch-to-configuration's own, sorted here: 4 (units failed, the system is
//! active) and 100 (a new init interface: reboot needed) are not failures to roll back. The
//! helper itself runs detached from the SSH session (a transient systemd unit, or `setsid`), so
//! a dropped connection never leaves a host half-activated.
//!
//! Modules: `script` (the helper, its modes and exit codes), `record` (the deployment record
//! and id), `confirm` (results and confirmation); this one: the goal, [`activate`],
//! [`link_package`], [`rollback`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::DeployError;
use crate::sudo::Privilege;
use crate::Connection;

mod confirm;
mod record;
mod script;

pub use confirm::{confirm, result_of, Confirmation, DeployState};
pub use record::{deployment_id, DeploymentRecord};
pub use script::{exit, ACTIVATE_SCRIPT};
pub(crate) use script::{run_script, Mode};

/// What `switch-to-configuration` is asked to do: the planner's goal (one definition).
pub use fleet_planner::Goal;

/// What to do when switch-to-configuration reports failed units (exit 4) after switching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailedUnits {
    /// Keep the new system (as nixos-rebuild does) and report the units.
    #[default]
    Keep,
    /// Roll back to the previous system.
    Rollback,
}

/// One activation.
#[derive(Debug, Clone)]
pub struct Activation {
    pub goal: Goal,
    /// The system to activate (and, for switch and boot, to set the profile to).
    pub toplevel: String,
    pub package: String,
    /// How long the host waits for [`confirm`] before reverting by itself; `None` disables the
    /// magic rollback (and `--no-rollback` also skips the automatic one).
    pub confirm_timeout: Option<Duration>,
    /// Roll back automatically when `switch-to-configuration` fails.
    pub auto_rollback: bool,
    pub on_failed_units: OnFailedUnits,
    /// `NIXOS_INSTALL_BOOTLOADER=1` (`--install-bootloader`).
    pub install_bootloader: bool,
    /// Activate this specialisation of `toplevel` (the profile still gets `toplevel`).
    pub specialisation: Option<String>,
    /// Run `switch-to-configuration`. `false` when the host already runs `toplevel` and only
    /// the deployment package is new: it is linked and recorded ([`link_package`]).
    pub activate: bool,
    pub record: DeploymentRecord,
}

/// How an activation ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activated {
    /// The new system is active (awaiting confirmation when `pending_confirmation`);
    /// `failed_units` is not empty when switch-to-configuration exited 4.
    Done {
        pending_confirmation: bool,
        failed_units: Vec<String>,
        log: String,
    },
    /// `switch-to-configuration` failed and the host is back on its previous system.
    RolledBack { log: String },
    /// The new init interface needs a reboot: the boot entry is installed (switch), nothing
    /// was activated.
    RebootRequired { log: String },
    /// `dry-activate`: what would change.
    DryRun { log: String },
}

/// The `key=value` arguments of the helper's `apply`.
fn apply_args(a: &Activation) -> Vec<String> {
    let confirm = match (a.goal.activates(), a.confirm_timeout) {
        (true, Some(t)) => t.as_secs().max(1),
        _ => 0,
    };
    let meta = serde_json::to_string(&a.record).expect("record serializes");
    vec![
        format!("goal={}", a.goal.as_str()),
        format!("toplevel={}", a.toplevel),
        format!("package={}", a.package),
        format!("confirm={confirm}"),
        format!("id={}", a.record.id),
        format!("meta={meta}"),
        format!("auto={}", u8::from(a.auto_rollback)),
        format!(
            "units={}",
            match a.on_failed_units {
                OnFailedUnits::Keep => "keep",
                OnFailedUnits::Rollback => "rollback",
            }
        ),
        format!("bootloader={}", u8::from(a.install_bootloader)),
        format!("spec={}", a.specialisation.as_deref().unwrap_or_default()),
    ]
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
    let args = apply_args(a);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_script(conn, privilege, Mode::Detach, &args).await?;
    let log = out.stderr_lossy();
    let pending_confirmation =
        a.goal.activates() && a.confirm_timeout.is_some_and(|t| !t.is_zero());
    let host = conn.name().to_owned();
    match out.status {
        Some(exit::APPLIED) if a.goal == Goal::DryActivate => Ok(Activated::DryRun { log }),
        Some(exit::APPLIED) => Ok(Activated::Done {
            pending_confirmation,
            failed_units: Vec::new(),
            log,
        }),
        Some(exit::UNITS_FAILED) => Ok(Activated::Done {
            pending_confirmation,
            failed_units: failed_units(&log),
            log,
        }),
        Some(exit::REBOOT_REQUIRED) => Ok(Activated::RebootRequired { log }),
        Some(exit::ROLLED_BACK) => Ok(Activated::RolledBack { log }),
        Some(exit::LOCKED) => Err(DeployError::Locked {
            host,
            stderr: log.trim().to_owned(),
        }),
        Some(exit::FAILED) => Err(DeployError::ActivationFailed { host, stderr: log }),
        Some(exit::ROLLBACK_FAILED) => Err(DeployError::RollbackFailed { host, stderr: log }),
        status => Err(DeployError::Refused {
            host,
            status,
            stderr: log,
        }),
    }
}

/// The units switch-to-configuration named as failed (`warning: the following units failed:
/// a.service, b.service`), in order, without duplicates.
pub fn failed_units(log: &str) -> Vec<String> {
    let mut units: Vec<String> = Vec::new();
    for line in log.lines() {
        let Some((_, rest)) = line.split_once("the following units failed:") else {
            continue;
        };
        for u in rest
            .split([',', ' '])
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            if !units.iter().any(|x| x == u) {
                units.push(u.to_owned());
            }
        }
    }
    units
}

/// Links `a.package` at `/etc/nixos/current-configuration` (with its GC roots) and records the
/// deployment, without touching the running system: for hosts that already run `a.toplevel`.
pub async fn link_package(
    conn: &Connection,
    privilege: &Privilege,
    a: &Activation,
) -> Result<(), DeployError> {
    let meta = serde_json::to_string(&a.record).expect("record serializes");
    let out = run_script(
        conn,
        privilege,
        Mode::Link,
        &[&a.package, &meta, &a.toplevel],
    )
    .await?;
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

/// Switches the host to its previous system profile generation (`fleet rollback`).
pub async fn rollback(conn: &Connection, privilege: &Privilege) -> Result<String, DeployError> {
    rollback_to(conn, privilege, None).await
}

/// Switches the host to system profile generation `to` (`fleet rollback --to`), or to the
/// previous one: the profile, `switch-to-configuration switch`, the recorded package.
pub async fn rollback_to(
    conn: &Connection,
    privilege: &Privilege,
    to: Option<u64>,
) -> Result<String, DeployError> {
    let to = to.map(|g| g.to_string());
    let args: Vec<&str> = to.iter().map(String::as_str).collect();
    let out = run_script(conn, privilege, Mode::Rollback, &args).await?;
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

/// What an activation log says about the failure: the lines before fleet's "failed; rolling
/// back" remark that mention a failure or an error (else the last three of them), joined by
/// " / ". The rollback's own output after the remark is left out.
pub(crate) fn failure_lines(log: &str) -> String {
    let before = log
        .lines()
        .take_while(|l| !(l.starts_with("fleet: ") && l.contains(" failed")))
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>();
    let telling: Vec<&str> = before
        .iter()
        .copied()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("fail") || l.contains("error")
        })
        .collect();
    let lines = if telling.is_empty() {
        &before[before.len().saturating_sub(3)..]
    } else {
        &telling[..]
    };
    lines.join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_and_test_are_confirmed_boot_is_not() {
        assert!(Goal::Switch.activates() && Goal::Test.activates());
        assert!(!Goal::Boot.activates() && !Goal::DryActivate.activates());
    }

    #[test]
    fn failed_units_are_read_from_the_log() {
        let log = "activating the configuration...\n\
                   warning: the following units failed: a.service, b.mount\n\
                   × a.service - A\nwarning: the following units failed: a.service\n";
        assert_eq!(failed_units(log), ["a.service", "b.mount"]);
        assert!(failed_units("all fine\n").is_empty());
    }

    #[test]
    fn failure_lines_come_from_before_the_rollback() {
        let log = "activating the configuration...\nwarning: the following units failed: x.service\n\
                   the following new units were started: y.service\n\
                   fleet: switch-to-configuration switch failed; rolling back\n\
                   activating the configuration...\nthe following new units were started: y.service\n";
        assert_eq!(
            failure_lines(log),
            "warning: the following units failed: x.service"
        );
        assert_eq!(failure_lines("a\nb\nc\nd\n"), "b / c / d");
    }
}
