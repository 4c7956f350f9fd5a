//! Unit tests of `plan.rs` (in their own file to keep `plan.rs` readable).
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
        flake: None,
    }
}

fn input(desired: Result<DesiredHost, String>, facts: Result<RemoteState, String>) -> HostInput {
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

#[test]
fn substitute_splits_the_copy_and_is_rendered() {
    let mut facts = running_old();
    // The host lacks htop (20), toplevel (5) and package (1); its cache has htop only.
    facts.substitutable = Some([sp('h', "htop-3.3.0"), sp('z', "unrelated")].into());
    let p = one(Ok(desired()), Ok(facts));
    assert_eq!(p.copy.paths.len(), 3);
    assert_eq!(p.copy.bytes, 26);
    let sub = p.copy.substitute.clone().expect("asked");
    assert_eq!(sub.paths, vec![sp('h', "htop-3.3.0")]);
    assert_eq!(sub.bytes, 20);
    let plan = Plan {
        format: FORMAT,
        hosts: vec![p],
    };
    let text = crate::render(&plan, crate::RenderOptions::default());
    assert!(
        text.contains("substitute 1 path (20 B), copy 2 paths, 6 B"),
        "{text}"
    );
    // Not asked: no split, the plain copy line.
    let p = one(Ok(desired()), Ok(running_old()));
    assert_eq!(p.copy.substitute, None);
}
