//! What apply does with the new system (the goal), and when a host needs it: the rules of
//! nixos-rebuild, made explicit. `switch` and `boot` set the system profile and the boot entry;
//! `switch` and `test` change the running system.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::input::{DesiredHost, RemoteState};

/// What `switch-to-configuration` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Goal {
    /// Make it the boot default and activate it now.
    #[default]
    Switch,
    /// Make it the boot default only.
    Boot,
    /// Activate now, not the boot default.
    Test,
    /// Show what activation would do; change nothing.
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

    /// Whether the goal sets the system profile and the boot entry.
    pub fn sets_profile(self) -> bool {
        matches!(self, Goal::Switch | Goal::Boot)
    }

    /// Whether the goal changes the running system (and so needs confirming: magic rollback).
    pub fn activates(self) -> bool {
        matches!(self, Goal::Switch | Goal::Test)
    }
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which specialisation to activate (`--specialisation`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SpecialisationChoice {
    /// Keep the specialisation the host runs, when the new system has one of that name.
    #[default]
    Keep,
    /// The base system.
    Base,
    /// This specialisation of the new system.
    Named(String),
}

/// Options of a plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub goal: Goal,
    pub specialisation: SpecialisationChoice,
}

/// What the host must do for the goal, beyond copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Need {
    /// Run switch-to-configuration.
    pub activate: bool,
    /// The specialisation to activate, if any.
    pub specialisation: Option<String>,
    /// The system `/run/current-system` should point at afterwards (the toplevel, or the
    /// specialisation's).
    pub running: String,
}

/// Decides whether `facts` already has what `goal` asks of `desired`, and which specialisation
/// to activate. `Err`: the host runs a specialisation the new system lacks.
pub(crate) fn need(
    desired: &DesiredHost,
    facts: &RemoteState,
    opts: &PlanOptions,
) -> Result<Need, String> {
    let spec = match (&opts.specialisation, &facts.specialisation) {
        (SpecialisationChoice::Base, _) | (SpecialisationChoice::Keep, None) => None,
        (SpecialisationChoice::Named(n), _) => Some(n.clone()),
        (SpecialisationChoice::Keep, Some(running)) => Some(running.clone()),
    };
    let running = match &spec {
        None => desired.toplevel.clone(),
        Some(name) => match desired.specialisations.iter().find(|s| &s.name == name) {
            Some(s) => s.toplevel.clone(),
            None if opts.specialisation == SpecialisationChoice::Keep => {
                return Err(format!(
                    "the host runs the specialisation `{name}`, which the new system does not \
                     have; pass --specialisation base to switch it to the base system"
                ))
            }
            None => {
                let known: Vec<&str> = desired
                    .specialisations
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect();
                return Err(format!(
                    "the new system has no specialisation `{name}` (it has: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ));
            }
        },
    };
    let runs = facts.current.as_deref() == Some(running.as_str());
    let profile = facts.profile.as_deref() == Some(desired.toplevel.as_str());
    // Unknown boot entry (GRUB, a container): the profile is what NixOS boots.
    let entry = facts
        .boot_default
        .as_deref()
        .is_none_or(|b| b == desired.toplevel);
    let activate = match opts.goal {
        Goal::Switch | Goal::DryActivate => !runs || !profile || !entry,
        Goal::Boot => !profile || !entry,
        Goal::Test => !runs,
    };
    Ok(Need {
        activate,
        specialisation: spec,
        running,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{BootSpec, Specialisation};

    fn desired() -> DesiredHost {
        DesiredHost {
            name: "pi1".into(),
            system: "aarch64-linux".into(),
            toplevel: "/nix/store/t".into(),
            package: "/nix/store/p".into(),
            closure: vec![],
            boot: BootSpec::default(),
            specialisations: vec![Specialisation {
                name: "gpu".into(),
                toplevel: "/nix/store/t-gpu".into(),
            }],
            nixpkgs: None,
            flake: None,
        }
    }

    fn facts(current: &str, profile: &str) -> RemoteState {
        RemoteState {
            current: Some(current.into()),
            profile: Some(profile.into()),
            ..RemoteState::default()
        }
    }

    fn needs(goal: Goal, f: &RemoteState) -> bool {
        let opts = PlanOptions {
            goal,
            ..PlanOptions::default()
        };
        need(&desired(), f, &opts).unwrap().activate
    }

    #[test]
    fn after_test_switch_and_boot_still_set_the_profile() {
        let tested = facts("/nix/store/t", "/nix/store/old");
        assert!(!needs(Goal::Test, &tested));
        assert!(needs(Goal::Switch, &tested));
        assert!(needs(Goal::Boot, &tested));
    }

    #[test]
    fn after_boot_switch_and_test_still_activate() {
        let booted = facts("/nix/store/old", "/nix/store/t");
        assert!(!needs(Goal::Boot, &booted));
        assert!(needs(Goal::Switch, &booted));
        assert!(needs(Goal::Test, &booted));
    }

    #[test]
    fn a_stale_boot_entry_needs_switch_or_boot() {
        let mut f = facts("/nix/store/t", "/nix/store/t");
        assert!(!needs(Goal::Switch, &f));
        f.boot_default = Some("/nix/store/old".into());
        assert!(needs(Goal::Switch, &f));
        assert!(needs(Goal::Boot, &f));
        assert!(!needs(Goal::Test, &f));
        f.boot_default = Some("/nix/store/t".into());
        assert!(!needs(Goal::Boot, &f));
    }

    #[test]
    fn a_running_specialisation_is_kept_or_refused() {
        let mut f = facts("/nix/store/old-gpu", "/nix/store/old");
        f.specialisation = Some("gpu".into());
        let n = need(&desired(), &f, &PlanOptions::default()).unwrap();
        assert_eq!(n.specialisation.as_deref(), Some("gpu"));
        assert_eq!(n.running, "/nix/store/t-gpu");
        f.specialisation = Some("kiosk".into());
        let e = need(&desired(), &f, &PlanOptions::default()).unwrap_err();
        assert!(e.contains("--specialisation base"), "{e}");
        let base = PlanOptions {
            specialisation: SpecialisationChoice::Base,
            ..PlanOptions::default()
        };
        assert_eq!(need(&desired(), &f, &base).unwrap().specialisation, None);
        let named = PlanOptions {
            specialisation: SpecialisationChoice::Named("nope".into()),
            ..PlanOptions::default()
        };
        assert!(need(&desired(), &f, &named)
            .unwrap_err()
            .contains("it has: gpu"));
    }
}
