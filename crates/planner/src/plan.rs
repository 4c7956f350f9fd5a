//! The plan: per host what `fleet apply` will do, computed from desired systems and host facts.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::diff::{diff_closures, Diff};
use crate::goal::{need, Goal, PlanOptions};
use crate::input::{BootSpec, DesiredHost, HostInput, RemoteState};

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
}

/// A part of the boot chain whose change needs a reboot to take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootPart {
    Kernel,
    Initrd,
    KernelModules,
    KernelParams,
    /// Device trees (Raspberry Pis and other boards).
    Dtbs,
    Firmware,
    /// The init interface version (a new one needs a reboot; switch-to-configuration exits 100).
    InitInterface,
}

impl BootPart {
    pub fn as_str(self) -> &'static str {
        match self {
            BootPart::Kernel => "kernel",
            BootPart::Initrd => "initrd",
            BootPart::KernelModules => "kernel-modules",
            BootPart::KernelParams => "kernel-params",
            BootPart::Dtbs => "dtbs",
            BootPart::Firmware => "firmware",
            BootPart::InitInterface => "init-interface-version",
        }
    }
}

/// The plan for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPlan {
    pub name: String,
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
    pub system: Option<String>,
    /// The system profile generation at planning time, when known.
    pub generation: Option<u64>,
    /// Whether apply runs `switch-to-configuration`: `false` when the host already runs the target
    /// and only the deployment package is copied and linked.
    pub activate: bool,
    pub copy: Copy,
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

/// Boot parts that differ between two systems (as NixOS decides a reboot: the booted system
/// against the one the next boot runs).
pub fn reboot_parts(booted: &BootSpec, next: &BootSpec) -> Vec<BootPart> {
    [
        (BootPart::Kernel, &booted.kernel, &next.kernel),
        (BootPart::Initrd, &booted.initrd, &next.initrd),
        (BootPart::KernelModules, &booted.modules, &next.modules),
        (
            BootPart::KernelParams,
            &booted.kernel_params,
            &next.kernel_params,
        ),
        (BootPart::Dtbs, &booted.dtbs, &next.dtbs),
        (BootPart::Firmware, &booted.firmware, &next.firmware),
        (
            BootPart::InitInterface,
            &booted.init_interface,
            &next.init_interface,
        ),
    ]
    .into_iter()
    .filter(|(_, a, b)| a != b)
    .map(|(part, ..)| part)
    .collect()
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
        reboot: false,
        reboot_parts: Vec::new(),
        diff: Diff::default(),
        error: Some(error),
        pin_bytes: None,
        secrets: Vec::new(),
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
    let copy = Copy {
        paths: missing.iter().map(|p| p.path.clone()).collect(),
        bytes: missing.iter().map(|p| p.nar_size).sum(),
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
        reboot: !parts.is_empty(),
        reboot_parts: parts,
        diff,
        error: None,
        pin_bytes,
        secrets: Vec::new(),
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
            (Ok(_), Err(reach)) => error_plan(input, goal, reach.clone()),
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
mod tests {
    use super::*;
    use crate::check_still_valid;
    use crate::drift::Drift;
    use crate::input::ClosurePath;

    fn sp(hash: char, name: &str) -> String {
        format!("/nix/store/{}-{name}", hash.to_string().repeat(32))
    }

    fn boot(kernel: char, initrd: char, modules: char) -> BootSpec {
        BootSpec {
            kernel: Some(sp(kernel, "linux-6.6.30")),
            initrd: Some(sp(initrd, "initrd-linux-6.6.30")),
            modules: Some(sp(modules, "linux-6.6.30-modules")),
            ..BootSpec::default()
        }
    }

    /// Desired closure: glibc (100), htop (20), toplevel (5), package (1), in that order.
    fn desired() -> DesiredHost {
        let closure = vec![
            ClosurePath {
                path: sp('g', "glibc-2.39-52"),
                nar_size: 100,
            },
            ClosurePath {
                path: sp('h', "htop-3.3.0"),
                nar_size: 20,
            },
            ClosurePath {
                path: sp('t', "nixos-system-pi1-24.05"),
                nar_size: 5,
            },
            ClosurePath {
                path: sp('p', "fleet-deploy-pi1"),
                nar_size: 1,
            },
        ];
        DesiredHost {
            name: "pi1".into(),
            system: "aarch64-linux".into(),
            toplevel: sp('t', "nixos-system-pi1-24.05"),
            package: sp('p', "fleet-deploy-pi1"),
            closure,
            boot: boot('k', 'i', 'm'),
            specialisations: vec![],
            nixpkgs: None,
        }
    }

    fn input(
        desired: Result<DesiredHost, String>,
        facts: Result<RemoteState, String>,
    ) -> HostInput {
        HostInput {
            name: "pi1".into(),
            desired,
            facts,
        }
    }

    fn one(desired: Result<DesiredHost, String>, facts: Result<RemoteState, String>) -> HostPlan {
        let mut p = plan(&[input(desired, facts)], &PlanOptions::default());
        assert_eq!(p.format, FORMAT);
        p.hosts.remove(0)
    }

    fn running_old() -> RemoteState {
        RemoteState {
            current: Some(sp('o', "nixos-system-pi1-24.05")),
            booted: Some(sp('o', "nixos-system-pi1-24.05")),
            generation: Some(7),
            current_closure: vec![
                sp('g', "glibc-2.39-52"),
                sp('n', "nano-7.2"),
                sp('o', "nixos-system-pi1-24.05"),
            ],
            current_boot: boot('k', 'i', 'm'),
            booted_boot: boot('k', 'i', 'm'),
            profile: Some(sp('o', "nixos-system-pi1-24.05")),
            present: [sp('g', "glibc-2.39-52")].into(),
            ..RemoteState::default()
        }
    }

    #[test]
    fn fresh_host_is_installed_with_whole_missing_closure() {
        let h = one(Ok(desired()), Ok(RemoteState::default()));
        assert_eq!(h.action, Action::Install);
        assert_eq!(h.current, None);
        assert_eq!(
            h.target.as_deref(),
            Some(sp('t', "nixos-system-pi1-24.05").as_str())
        );
        assert_eq!(h.copy.paths.len(), 4);
        assert_eq!(h.copy.bytes, 126);
        assert!(h.activate);
        assert!(!h.reboot, "install never asks for a reboot");
        assert!(!h.diff.compared);
        assert_eq!(h.error, None);
    }

    #[test]
    fn other_system_is_updated_copying_missing_paths_in_order() {
        let h = one(Ok(desired()), Ok(running_old()));
        assert_eq!(h.action, Action::Update);
        assert_eq!(
            h.copy.paths,
            vec![
                sp('h', "htop-3.3.0"),
                sp('t', "nixos-system-pi1-24.05"),
                sp('p', "fleet-deploy-pi1"),
            ]
        );
        assert_eq!(h.copy.bytes, 26);
        assert_eq!(h.generation, Some(7));
        assert!(h.activate);
        assert!(!h.reboot);
        assert!(h.diff.compared);
        assert_eq!(h.diff.added.len(), 1);
        assert_eq!(h.diff.added[0].name, "htop");
        assert_eq!(h.diff.removed[0].name, "nano");
        assert!(h.diff.changed.is_empty());
        assert_eq!(h.diff.rebuilt, 0, "toplevels are not diffed");
    }

    #[test]
    fn same_system_with_everything_present_is_unchanged() {
        let d = desired();
        let facts = RemoteState {
            current: Some(d.toplevel.clone()),
            profile: Some(d.toplevel.clone()),
            present: d.closure.iter().map(|p| p.path.clone()).collect(),
            current_boot: BootSpec::default(),
            ..running_old()
        };
        let h = one(Ok(d), Ok(facts));
        assert_eq!(h.action, Action::Unchanged);
        assert!(h.copy.paths.is_empty());
        assert_eq!(h.copy.bytes, 0);
        assert!(!h.activate);
        assert!(
            !h.reboot,
            "boot parts are not compared when the system is the same"
        );
    }

    #[test]
    fn same_system_without_the_deployment_package_is_an_update_without_activation() {
        let d = desired();
        let facts = RemoteState {
            current: Some(d.toplevel.clone()),
            profile: Some(d.toplevel.clone()),
            present: d.closure[..3].iter().map(|p| p.path.clone()).collect(),
            ..running_old()
        };
        let h = one(Ok(d), Ok(facts));
        assert_eq!(h.action, Action::Update);
        assert!(!h.activate);
        assert_eq!(h.copy.paths, vec![sp('p', "fleet-deploy-pi1")]);
        assert_eq!(h.copy.bytes, 1);
        assert!(h.diff.compared && h.diff.is_empty());
    }

    #[test]
    fn unknown_current_closure_gives_no_diff() {
        let facts = RemoteState {
            current_closure: vec![],
            ..running_old()
        };
        let h = one(Ok(desired()), Ok(facts));
        assert_eq!(h.action, Action::Update);
        assert!(!h.diff.compared);
        assert!(h.diff.is_empty());
    }

    #[test]
    fn errors_keep_what_is_known() {
        let h = one(Err("attribute 'foo' missing".into()), Ok(running_old()));
        assert_eq!(h.action, Action::Error);
        assert_eq!(
            h.error.as_deref(),
            Some("cannot evaluate or build: attribute 'foo' missing")
        );
        assert_eq!(h.current, running_old().current);
        assert_eq!(h.target, None);
        assert_eq!(h.system, None);

        let h = one(Ok(desired()), Err("unreachable: connection refused".into()));
        assert_eq!(h.action, Action::Error);
        assert_eq!(h.error.as_deref(), Some("unreachable: connection refused"));
        assert_eq!(h.system.as_deref(), Some("aarch64-linux"));
        assert!(h.copy.paths.is_empty());

        let h = one(Err("x".into()), Err("unreachable: y".into()));
        assert_eq!(
            h.error.as_deref(),
            Some("cannot evaluate or build: x; unreachable: y")
        );
    }

    #[test]
    fn reboot_when_kernel_initrd_or_modules_change() {
        for (new, parts) in [
            (boot('K', 'i', 'm'), vec![BootPart::Kernel]),
            (boot('k', 'I', 'm'), vec![BootPart::Initrd]),
            (boot('k', 'i', 'M'), vec![BootPart::KernelModules]),
            (
                boot('K', 'I', 'M'),
                vec![BootPart::Kernel, BootPart::Initrd, BootPart::KernelModules],
            ),
            (boot('k', 'i', 'm'), vec![]),
        ] {
            let d = DesiredHost {
                boot: new,
                ..desired()
            };
            let h = one(Ok(d), Ok(running_old()));
            assert_eq!(h.reboot, !parts.is_empty());
            assert_eq!(h.reboot_parts, parts);
        }
        // An unknown boot part of the booted system counts as changed (conservative).
        let facts = RemoteState {
            booted_boot: BootSpec {
                initrd: None,
                ..boot('k', 'i', 'm')
            },
            ..running_old()
        };
        let h = one(Ok(desired()), Ok(facts));
        assert_eq!(h.reboot_parts, vec![BootPart::Initrd]);
    }

    #[test]
    fn hosts_keep_their_order_and_are_counted() {
        let mut inputs = vec![
            input(Ok(desired()), Ok(running_old())),
            input(Ok(desired()), Ok(RemoteState::default())),
            input(Ok(desired()), Err("timeout".into())),
        ];
        inputs[1].name = "b".into();
        inputs[2].name = "a".into();
        let p = plan(&inputs, &PlanOptions::default());
        let names: Vec<_> = p.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["pi1", "b", "a"]);
        let c = p.counts();
        assert_eq!((c.install, c.update, c.unchanged, c.error), (1, 1, 0, 1));
        assert_eq!(
            c.to_string(),
            "Plan: 1 to install, 1 to update, 0 unchanged, 1 error."
        );
        assert!(p.has_changes());
        assert_eq!(p.host("a").map(|h| h.action), Some(Action::Error));
    }

    #[test]
    fn json_round_trip_and_field_names() {
        let p = plan(
            &[input(Ok(desired()), Ok(running_old()))],
            &PlanOptions::default(),
        );
        let json = p.to_json();
        assert_eq!(Plan::from_json(&json).unwrap(), p);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["format"], 2);
        assert_eq!(v["hosts"][0]["goal"], "switch");
        let h = &v["hosts"][0];
        assert_eq!(h["name"], "pi1");
        assert_eq!(h["action"], "update");
        assert_eq!(h["current"], sp('o', "nixos-system-pi1-24.05").as_str());
        assert_eq!(h["target"], sp('t', "nixos-system-pi1-24.05").as_str());
        assert_eq!(h["copy"]["paths"].as_array().unwrap().len(), 3);
        assert_eq!(h["copy"]["bytes"], 26);
        assert_eq!(h["reboot"], false);
        assert_eq!(h["diff"]["added"][0]["name"], "htop");
        assert_eq!(h["diff"]["removed"][0]["version"], "7.2");
        assert!(h["diff"]["changed"].is_array());
        for action in ["install", "update", "unchanged", "error"] {
            let a: Action = serde_json::from_value(action.into()).unwrap();
            assert_eq!(a.as_str(), action);
        }
    }

    #[test]
    fn unknown_formats_are_refused_clearly() {
        let err = Plan::from_json(r#"{"format": 1, "hosts": []}"#).unwrap_err();
        assert!(matches!(
            err,
            PlanFileError::UnsupportedFormat {
                found: 1,
                supported: 2
            }
        ));
        assert!(err.to_string().contains("plan format 1 is not supported"));
        assert!(matches!(
            Plan::from_json(r#"{"hosts": []}"#),
            Err(PlanFileError::MissingFormat)
        ));
        assert!(matches!(
            Plan::from_json("not json"),
            Err(PlanFileError::Json(_))
        ));
        assert!(matches!(
            Plan::from_json(r#"{"format": 2, "hosts": [{"name": 3}]}"#),
            Err(PlanFileError::Invalid(_))
        ));
    }

    #[test]
    fn saved_plans_refuse_drifted_hosts() {
        let saved = one(Ok(desired()), Ok(running_old()));
        assert_eq!(check_still_valid(&saved, &running_old()), Ok(()));

        // Missing paths may differ: apply asks again.
        let now = RemoteState {
            present: Default::default(),
            ..running_old()
        };
        assert_eq!(check_still_valid(&saved, &now), Ok(()));

        let now = RemoteState {
            current: Some(sp('x', "nixos-system-pi1-24.05")),
            ..running_old()
        };
        let drift = check_still_valid(&saved, &now).unwrap_err();
        assert!(matches!(drift, Drift::CurrentChanged { .. }));
        assert!(drift.to_string().contains("current system was"));

        let now = RemoteState {
            generation: Some(8),
            ..running_old()
        };
        let drift = check_still_valid(&saved, &now).unwrap_err();
        assert_eq!(
            drift.to_string(),
            "host `pi1` changed since the plan: system profile generation was 7, is now 8"
        );

        // A planned install refuses a host that got a system meanwhile.
        let saved = one(Ok(desired()), Ok(RemoteState::default()));
        assert!(matches!(
            check_still_valid(&saved, &running_old()),
            Err(Drift::CurrentChanged { planned: None, .. })
        ));

        let saved = one(Ok(desired()), Err("down".into()));
        assert!(matches!(
            check_still_valid(&saved, &running_old()),
            Err(Drift::NotPlanned { .. })
        ));
    }
}
