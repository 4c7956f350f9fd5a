//! The plan: per host what `fleet apply` will do, computed from desired systems and host facts.

use std::collections::BTreeSet;
use std::fmt;

use fleet_types::{reboot_parts, BootPart, HostName, System};
use serde::{Deserialize, Serialize};

use crate::decide::{copy_route, CopyRoute, RouteFacts};
use crate::diff::{diff_closures, Diff};
use crate::estimate::{expected, Expected};
use crate::goal::{need, Goal, PlanOptions};
use crate::input::{ClosurePath, DesiredHost, HostInput, RemoteState};

/// Version of the plan's JSON format. Bumped on any incompatible change; [`Plan::from_json`]
/// refuses other versions.
pub const FORMAT: u32 = 2;

/// What apply will do to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The host runs no NixOS system yet (no `/run/current-system`).
    Install,
    /// The host runs another system than the desired one, or lacks part of the deployment
    /// package's closure.
    Update,
    /// The host runs the desired system and has the whole deployment package: apply does nothing.
    Unchanged,
    /// The host could not be evaluated, built or reached; apply skips it.
    Error,
}

impl Action {
    /// The lowercase name used in JSON and in the rendered plan.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Install => "install",
            Action::Update => "update",
            Action::Unchanged => "unchanged",
            Action::Error => "error",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The store paths apply sends to a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    /// Missing paths of the deployment package's closure, in topological order.
    pub paths: Vec<String>,
    /// Sum of the NAR sizes of `paths`.
    pub bytes: u64,
    /// With `substitute = true`: the part of `paths` the host's own substituters offer; it
    /// fetches them itself and fleet sends only the rest (all of `paths` if that fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substitute: Option<Substitute>,
    /// What fleet expects to send: NAR bytes, compressed and delta estimates
    /// (`estimate.rs`).
    #[serde(default)]
    pub expected: Expected,
}

/// Paths a host fetches from its own substituters instead of from fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Substitute {
    pub paths: Vec<String>,
    /// Sum of their NAR sizes.
    pub bytes: u64,
}

/// The plan for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPlan {
    pub name: HostName,
    pub action: Action,
    /// What apply does with the new system.
    pub goal: Goal,
    /// The host's current system toplevel (`/run/current-system`), when known.
    pub current: Option<String>,
    /// What the host's system profile points at (the next boot), when known. Differs from
    /// `current` after `apply test`, `apply boot` or a `switch-to-configuration test` by hand.
    pub profile: Option<String>,
    /// The specialisation of the new system apply activates, if any.
    pub specialisation: Option<String>,
    /// The desired system toplevel, when it was built.
    pub target: Option<String>,
    /// The desired deployment package, when it was built.
    pub package: Option<String>,
    /// The host's Nix system double, when evaluated.
    pub system: Option<System>,
    /// The system profile generation at planning time, when known.
    pub generation: Option<u64>,
    /// Whether apply runs `switch-to-configuration`: `false` when the host already runs the target
    /// and only the deployment package is copied and linked.
    pub activate: bool,
    pub copy: Copy,
    /// How `copy` reaches the host (decided from its facts; `apply --no-compress` may override).
    #[serde(default)]
    pub route: CopyRoute,
    /// The fleet host that forwards the copy over its LAN (`via nas`), decided by
    /// [`crate::assign_relays`] from fleet.toml's `relay`; `None`: fleet copies directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// Whether the new system only fully takes effect after a reboot: its boot parts differ
    /// from the booted system's.
    pub reboot: bool,
    /// Which boot parts differ (empty unless `reboot`).
    pub reboot_parts: Vec<BootPart>,
    pub diff: Diff,
    /// Why the host could not be planned (only for `error`).
    pub error: Option<String>,
    /// NAR size of the pinned nixpkgs when it is part of `copy` (the first deploy from a pin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_bytes: Option<u64>,
    /// The host's secrets (`[secrets.NAME]`) and what apply does with each; names and paths
    /// only. Filled by the caller, which asks the host to compare.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::SecretPlan>,
    /// The health checks apply runs after activating the host, before confirming it
    /// (`unit sshd.service`, `tcp 127.0.0.1:22`); filled by the caller from fleet.toml for the
    /// hosts apply changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// A flake host: its revision and the inputs changed since its last deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flake: Option<crate::FlakePlan>,
}

/// Plans for all hosts, in the order they were given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Version of this JSON format, see [`FORMAT`].
    pub format: u32,
    pub hosts: Vec<HostPlan>,
}

/// How many hosts get each action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub install: usize,
    pub update: usize,
    pub unchanged: usize,
    pub error: usize,
}

impl fmt::Display for Counts {
    /// `Plan: 1 to install, 2 to update, 3 unchanged, 1 error.`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Plan: {} to install, {} to update, {} unchanged, {} {}.",
            self.install,
            self.update,
            self.unchanged,
            self.error,
            if self.error == 1 { "error" } else { "errors" }
        )
    }
}

/// Why a saved plan could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("not a fleet plan: invalid JSON")]
    Json(#[source] serde_json::Error),
    #[error("not a fleet plan: no `format` field")]
    MissingFormat,
    #[error(
        "plan format {found} is not supported by this fleet (it reads format {supported}); \
         make the plan again with this version of fleet"
    )]
    UnsupportedFormat { found: u64, supported: u32 },
    #[error("invalid fleet plan (format {FORMAT})")]
    Invalid(#[source] serde_json::Error),
}

impl Plan {
    /// How many hosts get each action.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for h in &self.hosts {
            match h.action {
                Action::Install => c.install += 1,
                Action::Update => c.update += 1,
                Action::Unchanged => c.unchanged += 1,
                Action::Error => c.error += 1,
            }
        }
        c
    }

    /// The plan of the host called `name`.
    pub fn host(&self, name: &str) -> Option<&HostPlan> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Whether apply would change any host.
    pub fn has_changes(&self) -> bool {
        self.hosts
            .iter()
            .any(|h| matches!(h.action, Action::Install | Action::Update))
    }

    /// The plan as pretty-printed JSON (with a trailing newline).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a plan always serialises");
        s.push('\n');
        s
    }

    /// Read a plan saved with [`Plan::to_json`], checking its format version first.
    pub fn from_json(text: &str) -> Result<Plan, PlanFileError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(PlanFileError::Json)?;
        let found = value
            .get("format")
            .and_then(serde_json::Value::as_u64)
            .ok_or(PlanFileError::MissingFormat)?;
        if found != u64::from(FORMAT) {
            return Err(PlanFileError::UnsupportedFormat {
                found,
                supported: FORMAT,
            });
        }
        serde_json::from_value(value).map_err(PlanFileError::Invalid)
    }
}

fn error_plan(input: &HostInput, goal: Goal, error: String) -> HostPlan {
    let desired = input.desired.as_ref().ok();
    let facts = input.facts.as_ref().ok();
    HostPlan {
        name: input.name.clone(),
        action: Action::Error,
        goal,
        current: facts.and_then(|f| f.current.clone()),
        profile: facts.and_then(|f| f.profile.clone()),
        specialisation: None,
        target: desired.map(|d| d.toplevel.clone()),
        package: desired.map(|d| d.package.clone()),
        system: desired.map(|d| d.system.clone()),
        generation: facts.and_then(|f| f.generation),
        activate: false,
        copy: Copy::default(),
        route: CopyRoute::Nothing,
        relay: None,
        reboot: false,
        reboot_parts: Vec::new(),
        diff: Diff::default(),
        error: Some(error),
        pin_bytes: None,
        secrets: Vec::new(),
        checks: Vec::new(),
        flake: None,
    }
}

fn host_plan(
    input: &HostInput,
    desired: &DesiredHost,
    facts: &RemoteState,
    opts: &PlanOptions,
) -> HostPlan {
    let need = match need(desired, facts, opts) {
        Ok(n) => n,
        Err(e) => return error_plan(input, opts.goal, e),
    };
    let missing: Vec<_> = desired
        .closure
        .iter()
        .filter(|p| !facts.present.contains(&p.path))
        .collect();
    let substitute = facts.substitutable.as_ref().map(|offered| {
        let from_cache: Vec<_> = missing
            .iter()
            .filter(|p| offered.contains(&p.path))
            .collect();
        Substitute {
            paths: from_cache.iter().map(|p| p.path.clone()).collect(),
            bytes: from_cache.iter().map(|p| p.nar_size).sum(),
        }
    });
    let sizes: Vec<u64> = missing.iter().map(|p| p.nar_size).collect();
    let route = copy_route(
        &sizes,
        RouteFacts {
            zstd: facts.zstd,
            mem_available: facts.mem_available,
        },
        true,
    );
    let offered: BTreeSet<&str> = substitute
        .iter()
        .flat_map(|s| s.paths.iter().map(String::as_str))
        .collect();
    let sent: Vec<&ClosurePath> = missing
        .iter()
        .copied()
        .filter(|p| !offered.contains(p.path.as_str()))
        .collect();
    let copy = Copy {
        paths: missing.iter().map(|p| p.path.clone()).collect(),
        bytes: missing.iter().map(|p| p.nar_size).sum(),
        substitute,
        expected: expected(&sent, route, &facts.current_closure),
    };
    let pin_bytes = missing
        .iter()
        .find(|p| desired.nixpkgs.as_deref() == Some(p.path.as_str()))
        .map(|p| p.nar_size);
    let runs_target = facts.current.as_deref() == Some(need.running.as_str());
    let action = match &facts.current {
        None => Action::Install,
        Some(_) if !need.activate && copy.paths.is_empty() => Action::Unchanged,
        Some(_) => Action::Update,
    };
    // A reboot is needed when what boots next (the new system, for switch and boot) differs
    // from what was booted; before the first boot record, from what runs.
    let booted = if facts.booted.is_some() {
        &facts.booted_boot
    } else {
        &facts.current_boot
    };
    let parts = match action {
        Action::Update if opts.goal != Goal::Test => reboot_parts(booted, &desired.boot),
        _ => Vec::new(),
    };
    let diff = match (&facts.current, action) {
        (Some(current), Action::Update) if !runs_target && !facts.current_closure.is_empty() => {
            let skip: BTreeSet<&str> = [
                current.as_str(),
                desired.toplevel.as_str(),
                need.running.as_str(),
                desired.package.as_str(),
            ]
            .into();
            diff_closures(
                facts.current_closure.iter().map(String::as_str),
                desired.closure.iter().map(|p| p.path.as_str()),
                &skip,
            )
        }
        // Same system on both sides: nothing differs, and that is known.
        _ if runs_target => Diff {
            compared: true,
            ..Diff::default()
        },
        _ => Diff::default(),
    };
    HostPlan {
        name: input.name.clone(),
        action,
        goal: opts.goal,
        current: facts.current.clone(),
        profile: facts.profile.clone(),
        specialisation: need.specialisation,
        target: Some(desired.toplevel.clone()),
        package: Some(desired.package.clone()),
        system: Some(desired.system.clone()),
        generation: facts.generation,
        activate: need.activate,
        copy,
        route,
        relay: None,
        reboot: !parts.is_empty(),
        reboot_parts: parts,
        diff,
        error: None,
        pin_bytes,
        secrets: Vec::new(),
        checks: Vec::new(),
        flake: desired
            .flake
            .as_ref()
            .map(|d| crate::flake_plan(d, facts.flake.as_ref())),
    }
}

/// Plan every host for `opts.goal`. Hosts that cannot be planned become `error` entries; the
/// others are planned regardless. The order of `inputs` is kept.
pub fn plan(inputs: &[HostInput], opts: &PlanOptions) -> Plan {
    let goal = opts.goal;
    let hosts = inputs
        .iter()
        .map(|input| match (&input.desired, &input.facts) {
            (Ok(desired), Ok(facts)) => match crate::platform::mismatch(desired, facts) {
                Some(refused) => error_plan(input, goal, refused),
                None => host_plan(input, desired, facts, opts),
            },
            (Err(eval), Ok(_)) => {
                error_plan(input, goal, format!("cannot evaluate or build: {eval}"))
            }
            (Ok(_), Err(reach)) => error_plan(input, goal, reach.to_string()),
            (Err(eval), Err(reach)) => error_plan(
                input,
                goal,
                format!("cannot evaluate or build: {eval}; {reach}"),
            ),
        })
        .collect();
    Plan {
        format: FORMAT,
        hosts,
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
