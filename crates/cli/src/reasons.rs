//! The words for the executor's typed outcome reasons: the only place they become English.
//! The texts are the ones fleet has always printed (the e2e tests read some of them).

use fleet_executor::{Event, EventKind, HostOutcome, RebootReason, RollbackReason, SkipReason};
use fleet_planner::Goal;

/// Why a host is back on its previous system.
pub fn rollback(r: &RollbackReason) -> String {
    match r {
        RollbackReason::ActivationFailed { goal, said } => {
            format!("switch-to-configuration {} failed: {said}", goal.as_str())
        }
        RollbackReason::NotConfirmed {
            timeout_secs: Some(t),
        } => format!("not confirmed within {t}s; the host reverted"),
        RollbackReason::NotConfirmed { timeout_secs: None } => {
            "not confirmed in time; the host reverted".to_owned()
        }
        RollbackReason::Unreachable {
            timeout_secs,
            last_error,
        } => format!(
            "could not reach the host again within {timeout_secs}s after activation \
             ({last_error}); it reverted to its previous system by itself"
        ),
        RollbackReason::Reverted => "the host reverted to its previous system".to_owned(),
        RollbackReason::RolloutStopped => "applied, then rolled back to its previous generation \
                                           because the rollout stopped (--rollback-succeeded)"
            .to_owned(),
    }
}

/// Why a host was not attempted.
pub fn skip(r: &SkipReason) -> String {
    match r {
        SkipReason::CancelledBeforeStart => "cancelled before start".to_owned(),
        SkipReason::CancelledWhileCopying => {
            "interrupted while copying; nothing was activated".to_owned()
        }
        SkipReason::CancelledBeforeActivation => "interrupted before activation".to_owned(),
        SkipReason::RolloutStopped { stopped } => {
            format!("not started: the rollout {stopped}; nothing was changed")
        }
    }
}

/// Why a host needs a reboot before its new system runs.
pub fn reboot(r: &RebootReason) -> String {
    match r {
        RebootReason::NewInitInterface { goal, said } => {
            let what = match goal {
                Goal::Test => {
                    "the new system has a new init interface and cannot be tested without a \
                     reboot; nothing was changed (apply boot, then reboot)"
                }
                _ => {
                    "the new system has a new init interface: it is the boot default and takes \
                     effect at the next reboot"
                }
            };
            if said.is_empty() {
                what.to_owned()
            } else {
                format!("{what} ({said})")
            }
        }
    }
}

/// The outcome's reason in words, for the outcomes that have a typed one.
pub fn of(o: &HostOutcome) -> Option<String> {
    match o {
        HostOutcome::RolledBack { reason } => Some(rollback(reason)),
        HostOutcome::Skipped { reason } => Some(skip(reason)),
        HostOutcome::RebootRequired { reason } => Some(reboot(reason)),
        _ => None,
    }
}

/// An event as a JSON value; an outcome with a typed reason also carries it in words, as
/// `reason` (next to its `reason_kind`).
pub fn event_json(ev: &Event) -> serde_json::Value {
    let mut v = serde_json::to_value(ev).unwrap_or_default();
    if let EventKind::Outcome { outcome } = &ev.kind {
        if let (Some(text), Some(o)) = (of(outcome), v.get_mut("outcome")) {
            o["reason"] = serde_json::Value::String(text);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_events_carry_the_reason_in_words_and_its_kind() {
        let ev = Event {
            host: "h".into(),
            at: std::time::Duration::from_millis(5),
            kind: EventKind::Outcome {
                outcome: HostOutcome::RolledBack {
                    reason: RollbackReason::NotConfirmed {
                        timeout_secs: Some(30),
                    },
                },
            },
        };
        let v = event_json(&ev);
        assert_eq!(v["outcome"]["kind"], "rolled-back");
        assert_eq!(v["outcome"]["reason_kind"], "not-confirmed");
        assert_eq!(
            v["outcome"]["reason"],
            "not confirmed within 30s; the host reverted"
        );
        let ev = Event {
            kind: EventKind::Outcome {
                outcome: HostOutcome::Applied,
            },
            ..ev
        };
        assert!(event_json(&ev)["outcome"].get("reason").is_none());
    }

    #[test]
    fn reboot_reasons_say_what_switch_to_configuration_said() {
        let r = RebootReason::NewInitInterface {
            goal: Goal::Switch,
            said: "new init".into(),
        };
        assert!(reboot(&r).ends_with("at the next reboot (new init)"));
        let r = RebootReason::NewInitInterface {
            goal: Goal::Test,
            said: String::new(),
        };
        assert!(reboot(&r).ends_with("(apply boot, then reboot)"));
    }
}
