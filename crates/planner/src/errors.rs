//! Why a host has no desired system or no facts: which stage failed, typed. The planner is pure
//! and knows neither Nix's nor SSH's error types, so the cause from those crates comes as its
//! rendered chain (`reason`); the stage is the variant. The plan shows [`std::fmt::Display`] as is.

use fleet_types::{InvalidStorePath, StorePath};

/// Why a host's facts could not be read (the planner's `HostInput::facts`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactsError {
    /// Connecting failed (address, host key, authentication, sudo).
    #[error("unreachable: {reason}")]
    Unreachable { reason: String },
    /// Connected, but the facts command failed.
    #[error("reading the host's state failed: {reason}")]
    State { reason: String },
    /// The store session (valid paths, current closure) failed.
    #[error("reading the host's store failed: {reason}")]
    Store { reason: String },
    /// Ctrl-C before fleet connected to the host.
    #[error("interrupted before connecting")]
    NotStarted,
    /// Ctrl-C while connecting.
    #[error("interrupted")]
    Interrupted,
}

/// Why a host has no desired system (the planner's `HostInput::desired`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesiredError {
    /// Evaluation or build failed; `reason` is Nix's error.
    #[error("{reason}")]
    Build { reason: String },
    /// A saved plan was given and the host is not in it.
    #[error("not in the saved plan")]
    NotInPlan,
    /// The saved plan has no system for the host: why it could not be planned then, if it says.
    #[error("{}", .planned.as_deref().unwrap_or("nothing to apply"))]
    NothingPlanned { planned: Option<String> },
    /// The deployment package is not a store path.
    #[error(transparent)]
    InvalidPackage(#[from] InvalidStorePath),
    /// The package of a saved plan was garbage-collected on this machine.
    #[error("deployment package {package} is not in the local store any more; plan again")]
    PackageGone { package: StorePath },
    /// The query of the closures in the local store failed.
    #[error("reading the local closure failed: {reason}")]
    LocalClosure { reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_says_what_failed() {
        let e = FactsError::Unreachable {
            reason: "connection refused".into(),
        };
        assert_eq!(e.to_string(), "unreachable: connection refused");
        assert_eq!(
            DesiredError::NothingPlanned { planned: None }.to_string(),
            "nothing to apply"
        );
        assert_eq!(
            DesiredError::NothingPlanned {
                planned: Some("cannot evaluate or build: x".into())
            }
            .to_string(),
            "cannot evaluate or build: x"
        );
    }
}
