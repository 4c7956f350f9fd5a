//! How a host ended ([`HostOutcome`]) and why, as values: the reasons are enums, and the
//! words for them are the CLI's (its reporter renders them). A failed host is a value, never
//! a panic.
//!
//! In JSON an outcome is `{"kind": "rolled-back", "reason_kind": "not-confirmed", ...}`: the
//! reason's own fields sit next to its kind.

use serde::Serialize;

use fleet_planner::Goal;

/// How a host ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum HostOutcome {
    /// Already running the wanted system.
    Unchanged,
    /// Switched to the new system.
    Applied,
    /// The new system is active, but switch-to-configuration reported failed units (its exit 4);
    /// kept, as nixos-rebuild does.
    UnitsFailed {
        units: Vec<String>,
    },
    /// The new system is the boot default but takes effect only after a reboot (a new init
    /// interface: switch-to-configuration's exit 100); nothing was activated.
    RebootRequired {
        #[serde(flatten)]
        reason: RebootReason,
    },
    /// `dry-activate`: what switch-to-configuration would do; nothing changed.
    DryRun {
        output: String,
    },
    /// Activation failed or was not confirmed; the previous generation is back.
    RolledBack {
        #[serde(flatten)]
        reason: RollbackReason,
    },
    Failed {
        error: String,
    },
    /// A health check did not pass after activation. `rolled_back`: the host is back on its
    /// previous system (else, with `--no-rollback`, it was left on the new one).
    CheckFailed {
        check: String,
        output: String,
        rolled_back: bool,
    },
    /// Not attempted (cancelled, or excluded).
    Skipped {
        #[serde(flatten)]
        reason: SkipReason,
    },
    /// A simple command or a reachability check succeeded.
    Ok,
}

/// Why a host is back on its previous system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason_kind", rename_all = "kebab-case")]
pub enum RollbackReason {
    /// `switch-to-configuration GOAL` failed and the helper undid it; `said`: the lines of its
    /// log that tell why (before the undo's own output).
    ActivationFailed { goal: Goal, said: String },
    /// The confirmation came too late: the host's watchdog had reverted it. `timeout_secs`:
    /// the confirm timeout, when the confirmation was the first one (not after a reconnect).
    NotConfirmed { timeout_secs: Option<u64> },
    /// The host could not be reached again within its confirm timeout after activation; it
    /// reverts by itself.
    Unreachable {
        timeout_secs: u64,
        last_error: String,
    },
    /// Reached again after the connection dropped during activation: it had reverted.
    Reverted,
    /// Applied, then rolled back because the rollout stopped (`--rollback-succeeded`).
    RolloutStopped,
}

/// Why a host was not attempted (or not to its end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason_kind", rename_all = "kebab-case")]
pub enum SkipReason {
    /// The run was cancelled before the host's turn ([`crate::run_hosts`]).
    CancelledBeforeStart,
    /// Cancelled while its copy ran: nothing was activated.
    CancelledWhileCopying,
    /// Cancelled after its copy, before its activation started.
    CancelledBeforeActivation,
    /// Its wave was not started: the rollout stopped (`stopped`: the rollout's own account).
    RolloutStopped { stopped: String },
}

/// Why a host needs a reboot before its new system runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason_kind", rename_all = "kebab-case")]
pub enum RebootReason {
    /// The new system has a new init interface (switch-to-configuration exit 100). With
    /// `test`, nothing was changed; otherwise it is the boot default. `said`: what
    /// switch-to-configuration said about it, if anything.
    NewInitInterface { goal: Goal, said: String },
}

impl HostOutcome {
    /// `Unchanged`, `Applied`, `DryRun` and `Ok` count as success.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            HostOutcome::Unchanged
                | HostOutcome::Applied
                | HostOutcome::Ok
                | HostOutcome::DryRun { .. }
        )
    }

    /// `Failed` from any error, with its `source()` chain joined by ": ".
    pub fn failed(err: &(dyn std::error::Error + 'static)) -> Self {
        HostOutcome::Failed {
            error: error_chain(err),
        }
    }

    pub fn rolled_back(reason: RollbackReason) -> Self {
        HostOutcome::RolledBack { reason }
    }

    pub fn skipped(reason: SkipReason) -> Self {
        HostOutcome::Skipped { reason }
    }
}

/// An error and its `source()` chain joined by ": ", leaving out causes its text already says.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_sit_next_to_the_kind_in_json() {
        let o = HostOutcome::rolled_back(RollbackReason::NotConfirmed {
            timeout_secs: Some(30),
        });
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"kind":"rolled-back","reason_kind":"not-confirmed","timeout_secs":30}"#
        );
        let o = HostOutcome::skipped(SkipReason::CancelledBeforeStart);
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"kind":"skipped","reason_kind":"cancelled-before-start"}"#
        );
        let o = HostOutcome::RebootRequired {
            reason: RebootReason::NewInitInterface {
                goal: Goal::Test,
                said: String::new(),
            },
        };
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"kind":"reboot-required","reason_kind":"new-init-interface","goal":"test","said":""}"#
        );
    }
}
