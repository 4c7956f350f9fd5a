//! One host's steps after its copy, over the [`Host`] seam: link or activate (with secrets
//! before and after), health checks, confirmation, and asking again over a new connection when
//! the first one dropped. Each step's result picks the outcome here; the host only acts.

use std::time::Duration;

use tokio::time::Instant;

use super::host::Host;
use super::ApplyOptions;
use crate::activation::{failure_lines, Activated, Activation, Confirmation, DeployState, Goal};
use crate::copy::CopyDone;
use crate::error::DeployError;
use crate::fanout::{HostEvents, HostOutcome, LogStream, Phase};
use crate::health::HealthSpec;
use crate::outcome::{RebootReason, RollbackReason};
use crate::ssh::error::ExecError;

/// What the plan says about one host's activation.
#[derive(Debug, Clone)]
pub(crate) struct Steps {
    pub activation: Activation,
    /// Health checks after activation, before confirmation.
    pub checks: Option<HealthSpec>,
}

/// Activates one host whose copy is complete, and returns its outcome.
pub(crate) async fn activate_one<H: Host>(
    host: &H,
    steps: &Steps,
    ev: &HostEvents,
    opts: &ApplyOptions,
) -> HostOutcome {
    let activation = &steps.activation;
    if !activation.activate && activation.goal == Goal::DryActivate {
        return HostOutcome::DryRun {
            output: "the host runs this system: only the deployment package would be linked".into(),
        };
    }
    if !activation.activate {
        let _ = ev.phase(Phase::Linking).await;
        if let Some(failed) = host.push_secrets(ev).await {
            return failed;
        }
        return match host.link_package(activation).await {
            Ok(()) => HostOutcome::Applied,
            Err(e) => HostOutcome::failed(&e),
        };
    }
    if activation.goal != Goal::DryActivate {
        if let Some(failed) = host.secrets_before(ev).await {
            return failed;
        }
    }
    let _ = ev.phase(Phase::Activating).await;
    let result = host.activate(activation).await;
    if let Ok(
        Activated::Done { log, .. }
        | Activated::RolledBack { log }
        | Activated::RebootRequired { log }
        | Activated::DryRun { log },
    ) = &result
    {
        // What switch-to-configuration said (units started, restarted, failed), per host.
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            let _ = ev.log(LogStream::Stderr, line).await;
        }
    }
    let id = activation.record.id.as_str();
    let activated = match result {
        Ok(a) => a,
        Err(DeployError::Exec(ExecError::UnknownOutcome { .. })) => {
            // The connection dropped while activating; the activation ran on detached. Ask
            // again over a new connection what became of it.
            let _ = ev
                .log(
                    LogStream::Fleet,
                    "connection lost during activation; asking the host what happened",
                )
                .await;
            return match reconnect_result(host, id, opts, activation).await {
                Some(o) => o,
                None => HostOutcome::Failed {
                    error: format!(
                        "lost the connection during activation and could not reach {} again; \
                         it either finished or reverted by itself",
                        ev.host()
                    ),
                },
            };
        }
        Err(e) => return HostOutcome::failed(&e),
    };
    let (failed_units, done) = match activated {
        Activated::RolledBack { log } => {
            return HostOutcome::rolled_back(RollbackReason::ActivationFailed {
                goal: activation.goal,
                said: failure_lines(&log),
            })
        }
        Activated::RebootRequired { log } => {
            return HostOutcome::RebootRequired {
                reason: RebootReason::NewInitInterface {
                    goal: activation.goal,
                    said: failure_lines(&log),
                },
            }
        }
        Activated::DryRun { log } => return HostOutcome::DryRun { output: log },
        Activated::Done {
            pending_confirmation,
            failed_units,
            ..
        } => (failed_units, !pending_confirmation),
    };
    let confirming = (!done).then(|| activation.confirm_timeout.unwrap_or_default());
    if let Some(failed) = host.secrets_after(ev, confirming).await {
        return failed;
    }
    let active = || {
        if failed_units.is_empty() {
            HostOutcome::Applied
        } else {
            HostOutcome::UnitsFailed {
                units: failed_units.clone(),
            }
        }
    };
    if let Some(spec) = &steps.checks {
        if let Some(failed) = host.check(ev, spec, id, activation.goal, done).await {
            return failed;
        }
    }
    if done {
        return active();
    }
    let _ = ev.phase(Phase::Confirming).await;
    let timeout = activation.confirm_timeout.unwrap_or_default();
    let deadline = Instant::now() + timeout;
    match host.confirm(id, deadline).await {
        Confirmation::Confirmed => active(),
        Confirmation::TooLate => HostOutcome::rolled_back(RollbackReason::NotConfirmed {
            timeout_secs: Some(timeout.as_secs()),
        }),
        Confirmation::Unreachable { last_error } => {
            let _ = ev.phase(Phase::RollingBack).await;
            match reconnect_result(host, id, opts, activation).await {
                Some(HostOutcome::RolledBack { .. }) | None => {
                    HostOutcome::rolled_back(RollbackReason::Unreachable {
                        timeout_secs: timeout.as_secs(),
                        last_error,
                    })
                }
                Some(HostOutcome::Applied) => active(),
                Some(other) => other,
            }
        }
    }
}

/// Reconnects (until confirm timeout + grace) and reads the deployment's result on the host;
/// confirms it if it still awaits confirmation. `None`: never reached, or no result.
async fn reconnect_result<H: Host>(
    host: &H,
    id: &str,
    opts: &ApplyOptions,
    activation: &Activation,
) -> Option<HostOutcome> {
    let wait = activation.confirm_timeout.unwrap_or_default() + opts.verify_grace;
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match host.result_anew(id).await {
            Some(DeployState::Confirmed) => return Some(HostOutcome::Applied),
            Some(DeployState::Applied | DeployState::UnitsFailed) => {
                // Activated, awaiting confirmation: confirm now, over a new connection.
                return Some(match host.confirm(id, deadline).await {
                    Confirmation::Confirmed => HostOutcome::Applied,
                    _ => HostOutcome::rolled_back(RollbackReason::NotConfirmed {
                        timeout_secs: None,
                    }),
                });
            }
            Some(DeployState::RebootRequired) => {
                return Some(HostOutcome::RebootRequired {
                    reason: RebootReason::NewInitInterface {
                        goal: activation.goal,
                        said: String::new(),
                    },
                })
            }
            Some(DeployState::RolledBack) => {
                return Some(HostOutcome::rolled_back(RollbackReason::Reverted))
            }
            Some(DeployState::RollbackFailed) => {
                return Some(HostOutcome::Failed {
                    error: "activation failed and so did the rollback".into(),
                })
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// The host's log line about its finished copy.
pub(crate) async fn copied(ev: &HostEvents, done: &CopyDone) {
    let wire = match done.wire_bytes {
        Some(w) => format!(", {w} bytes sent compressed"),
        None => String::new(),
    };
    let _ = ev
        .log(
            LogStream::Fleet,
            format!(
                "copied {} paths ({} bytes of NAR{wire})",
                done.paths, done.nar_bytes
            ),
        )
        .await;
}
