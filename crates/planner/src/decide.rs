//! What `apply` does with each planned host, decided here and nowhere else: whether it is
//! applied, left alone, refused or failed; the goal it gets (`boot` when it reboots into the new
//! system); how its missing paths travel; how long its watchdog waits. The executor carries the
//! decision out and the CLI renders it; both stay free of rules.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::drift::Drift;
use crate::goal::Goal;
use crate::plan::{Action, HostPlan};

/// How the paths a host lacks reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyRoute {
    /// Nothing to copy.
    Nothing,
    /// `nix-store --serve --write`: NARs streamed one by one into the host's store.
    #[default]
    Serve,
    /// One zstd-compressed export stream into `zstd -dc | nix-store --import` on the host.
    Compressed,
}

impl CopyRoute {
    pub fn as_str(self) -> &'static str {
        match self {
            CopyRoute::Nothing => "nothing",
            CopyRoute::Serve => "serve",
            CopyRoute::Compressed => "compressed",
        }
    }
}

/// What the host says about itself that picks the route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteFacts {
    /// The host has `zstd`.
    pub zstd: bool,
    /// Its `MemAvailable`, in bytes, when known.
    pub mem_available: Option<u64>,
}

/// The route for a host lacking paths of these NAR sizes. The compressed route suits a host with
/// `zstd` and memory for the largest NAR it lacks (`nix-store --import` holds one whole NAR in
/// memory; 4× headroom); otherwise the serve protocol streams NARs into the store.
pub fn copy_route(missing_nar_sizes: &[u64], facts: RouteFacts, compress: bool) -> CopyRoute {
    let Some(&largest) = missing_nar_sizes.iter().max() else {
        return CopyRoute::Nothing;
    };
    let fits = facts
        .mem_available
        .is_some_and(|m| largest.saturating_mul(4) <= m);
    if compress && facts.zstd && fits {
        CopyRoute::Compressed
    } else {
        CopyRoute::Serve
    }
}

/// When `apply --reboot` reboots a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootWhen {
    /// Always, for `switch` and `boot`.
    Always,
    /// When the new system's boot parts differ from the booted system's.
    Needed,
}

/// The run's options that decide what happens to each host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyPolicy {
    pub goal: Goal,
    pub reboot: Option<RebootWhen>,
    /// Magic rollback: activation must be confirmed, else the host goes back.
    pub rollback: bool,
    /// `--confirm-timeout`, overriding each host's `confirm-timeout`.
    pub confirm_timeout: Option<Duration>,
    /// `--no-compress` clears it.
    pub compress: bool,
}

/// A host's own settings that enter the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPolicy {
    /// fleet.toml's `confirm-timeout`.
    pub confirm_timeout: Duration,
    /// How long its health checks may take, when it has any (the watchdog waits for them too).
    pub checks_timeout: Option<Duration>,
}

/// What apply does with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It already has what the goal needs.
    Unchanged,
    /// It could not be planned (evaluation, build, reaching it); the reason as planned.
    Failed { error: String },
    /// It changed since the saved plan was made.
    Refused { drift: Drift },
    /// Copy, activate, confirm.
    Apply(Steps),
}

/// How a host is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steps {
    /// The goal given to the host: `boot` when it reboots into the new system afterwards.
    pub goal: Goal,
    /// Reboot into the new system after it became the boot default.
    pub reboot: bool,
    /// How long the host's watchdog waits for confirmation (its checks included); `None`
    /// without magic rollback.
    pub confirm_timeout: Option<Duration>,
    /// How its missing paths travel (`serve` when `--no-compress` overrides the plan).
    pub route: CopyRoute,
    /// The relay that forwards the copy (`hp.relay`, kept only on the compressed route:
    /// the LAN hop ends in the same `zstd -dc | nix-store --import`).
    pub relay: Option<String>,
}

/// Decide what apply does with a planned host. `drift` is what a saved plan's host changed
/// since (always `None` for a fresh plan).
pub fn decide(
    hp: &HostPlan,
    drift: Option<Drift>,
    policy: &ApplyPolicy,
    host: HostPolicy,
) -> Decision {
    if let Some(drift) = drift {
        return Decision::Refused { drift };
    }
    match hp.action {
        Action::Unchanged => return Decision::Unchanged,
        Action::Error => {
            return Decision::Failed {
                error: hp.error.clone().unwrap_or_default(),
            }
        }
        Action::Install | Action::Update => {}
    }
    let reboot = policy.goal.sets_profile()
        && match policy.reboot {
            Some(RebootWhen::Always) => true,
            Some(RebootWhen::Needed) => hp.reboot,
            None => false,
        };
    let confirm_timeout = policy.rollback.then(|| {
        policy.confirm_timeout.unwrap_or(host.confirm_timeout)
            + host.checks_timeout.unwrap_or(Duration::ZERO)
    });
    let route = match hp.route {
        CopyRoute::Compressed if !policy.compress => CopyRoute::Serve,
        r => r,
    };
    let relay = hp.relay.clone().filter(|_| route == CopyRoute::Compressed);
    Decision::Apply(Steps {
        goal: if reboot { Goal::Boot } else { policy.goal },
        reboot,
        confirm_timeout,
        route,
        relay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::Diff;
    use crate::plan::Copy;

    fn planned(action: Action) -> HostPlan {
        HostPlan {
            name: "pi".parse().unwrap(),
            action,
            goal: Goal::Switch,
            current: Some("/nix/store/a-nixos-system-pi-1".into()),
            profile: None,
            specialisation: None,
            target: Some("/nix/store/b-nixos-system-pi-2".into()),
            package: Some("/nix/store/c-fleet-deployment-pi".into()),
            system: Some(fleet_types::System::new("aarch64-linux").unwrap()),
            generation: Some(3),
            activate: true,
            copy: Copy::default(),
            route: CopyRoute::Compressed,
            relay: Some("nas".into()),
            reboot: false,
            reboot_parts: Vec::new(),
            diff: Diff::default(),
            error: None,
            pin_bytes: None,
            secrets: Vec::new(),
            checks: Vec::new(),
            flake: None,
        }
    }

    fn policy() -> ApplyPolicy {
        ApplyPolicy {
            goal: Goal::Switch,
            reboot: None,
            rollback: true,
            confirm_timeout: None,
            compress: true,
        }
    }

    const HOST: HostPolicy = HostPolicy {
        confirm_timeout: Duration::from_secs(30),
        checks_timeout: None,
    };

    fn steps(d: Decision) -> Steps {
        match d {
            Decision::Apply(s) => s,
            other => panic!("expected apply, got {other:?}"),
        }
    }

    #[test]
    fn the_route_follows_zstd_and_memory() {
        let roomy = RouteFacts {
            zstd: true,
            mem_available: Some(1 << 30),
        };
        assert_eq!(copy_route(&[], roomy, true), CopyRoute::Nothing);
        assert_eq!(
            copy_route(&[10, 1 << 20], roomy, true),
            CopyRoute::Compressed
        );
        assert_eq!(copy_route(&[10], roomy, false), CopyRoute::Serve);
        let no_zstd = RouteFacts {
            zstd: false,
            ..roomy
        };
        assert_eq!(copy_route(&[10], no_zstd, true), CopyRoute::Serve);
        // A NAR bigger than a quarter of the free memory goes through the serve protocol.
        let tight = RouteFacts {
            zstd: true,
            mem_available: Some(4 << 20),
        };
        assert_eq!(copy_route(&[(1 << 20) + 1], tight, true), CopyRoute::Serve);
        assert_eq!(copy_route(&[1 << 20], tight, true), CopyRoute::Compressed);
        let unknown = RouteFacts {
            zstd: true,
            mem_available: None,
        };
        assert_eq!(copy_route(&[1], unknown, true), CopyRoute::Serve);
    }

    #[test]
    fn drift_refuses_before_anything_else() {
        let drift = Drift::CurrentChanged {
            host: "pi".into(),
            planned: None,
            now: Some("/nix/store/x".into()),
        };
        let d = decide(
            &planned(Action::Unchanged),
            Some(drift.clone()),
            &policy(),
            HOST,
        );
        assert_eq!(d, Decision::Refused { drift });
    }

    #[test]
    fn unchanged_and_error_are_not_applied() {
        assert_eq!(
            decide(&planned(Action::Unchanged), None, &policy(), HOST),
            Decision::Unchanged
        );
        let mut hp = planned(Action::Error);
        hp.error = Some("unreachable: timed out".into());
        assert_eq!(
            decide(&hp, None, &policy(), HOST),
            Decision::Failed {
                error: "unreachable: timed out".into()
            }
        );
    }

    #[test]
    fn the_watchdog_waits_for_the_checks_and_the_flag_wins() {
        let host = HostPolicy {
            confirm_timeout: Duration::from_secs(30),
            checks_timeout: Some(Duration::from_secs(20)),
        };
        let s = steps(decide(&planned(Action::Update), None, &policy(), host));
        assert_eq!(s.confirm_timeout, Some(Duration::from_secs(50)));
        let flag = ApplyPolicy {
            confirm_timeout: Some(Duration::from_secs(5)),
            ..policy()
        };
        let s = steps(decide(&planned(Action::Update), None, &flag, host));
        assert_eq!(s.confirm_timeout, Some(Duration::from_secs(25)));
        let no_rollback = ApplyPolicy {
            rollback: false,
            ..policy()
        };
        let s = steps(decide(&planned(Action::Update), None, &no_rollback, host));
        assert_eq!(s.confirm_timeout, None);
    }

    #[test]
    fn reboot_turns_the_goal_into_boot_only_when_asked_and_needed() {
        let mut hp = planned(Action::Update);
        let needed = ApplyPolicy {
            reboot: Some(RebootWhen::Needed),
            ..policy()
        };
        let s = steps(decide(&hp, None, &needed, HOST));
        assert!(!s.reboot);
        assert_eq!(s.goal, Goal::Switch);
        hp.reboot = true;
        let s = steps(decide(&hp, None, &needed, HOST));
        assert!(s.reboot);
        assert_eq!(s.goal, Goal::Boot);
        // `test` never sets the boot default, so it never reboots into the new system.
        let test = ApplyPolicy {
            goal: Goal::Test,
            reboot: Some(RebootWhen::Always),
            ..policy()
        };
        let s = steps(decide(&hp, None, &test, HOST));
        assert!(!s.reboot);
        assert_eq!(s.goal, Goal::Test);
    }

    #[test]
    fn no_compress_overrides_the_planned_route() {
        let no = ApplyPolicy {
            compress: false,
            ..policy()
        };
        let s = steps(decide(&planned(Action::Update), None, &no, HOST));
        assert_eq!(s.route, CopyRoute::Serve);
        // The relay's hop is a compressed import: no compression, no relay.
        assert_eq!(s.relay, None);
        let s = steps(decide(&planned(Action::Install), None, &policy(), HOST));
        assert_eq!(s.route, CopyRoute::Compressed);
        assert_eq!(s.relay.as_deref(), Some("nas"));
    }
}
