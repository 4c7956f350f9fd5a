//! Saved plans: is a host still in the state the plan was made for?

use crate::input::RemoteState;
use crate::plan::{Action, HostPlan};

/// How a host changed since its plan was made; apply refuses the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Drift {
    /// `/run/current-system` points elsewhere than when the plan was made.
    #[error(
        "host `{host}` changed since the plan: current system was {}, is now {}",
        show(planned),
        show(now)
    )]
    CurrentChanged {
        host: String,
        planned: Option<String>,
        now: Option<String>,
    },
    /// The system profile got another generation (someone deployed, or rolled back, with the
    /// same running system, e.g. `switch-to-configuration boot`).
    #[error(
        "host `{host}` changed since the plan: system profile generation was {}, is now {}",
        show_gen(planned),
        show_gen(now)
    )]
    GenerationChanged {
        host: String,
        planned: Option<u64>,
        now: Option<u64>,
    },
    /// The saved plan has nothing to apply for this host: it could not be planned.
    #[error("host `{host}` has no plan to apply: {reason}")]
    NotPlanned { host: String, reason: String },
}

fn show(path: &Option<String>) -> String {
    match path {
        Some(p) => p.clone(),
        None => "none".to_owned(),
    }
}

fn show_gen(generation: &Option<u64>) -> String {
    match generation {
        Some(g) => g.to_string(),
        None => "unknown".to_owned(),
    }
}

/// Check that a host is still in the state `saved` was planned from: the same current system and
/// the same system profile generation. Apply calls this right before touching the host and
/// refuses the host on `Err`.
///
/// Which store paths the host has is *not* checked: apply asks again which paths are missing and
/// copies those (the host may have collected garbage since).
pub fn check_still_valid(saved: &HostPlan, now: &RemoteState) -> Result<(), Drift> {
    if saved.action == Action::Error {
        return Err(Drift::NotPlanned {
            host: saved.name.to_string(),
            reason: saved.error.clone().unwrap_or_else(|| "error".to_owned()),
        });
    }
    if saved.current != now.current {
        return Err(Drift::CurrentChanged {
            host: saved.name.to_string(),
            planned: saved.current.clone(),
            now: now.current.clone(),
        });
    }
    if saved.generation != now.generation {
        return Err(Drift::GenerationChanged {
            host: saved.name.to_string(),
            planned: saved.generation,
            now: now.generation,
        });
    }
    Ok(())
}
