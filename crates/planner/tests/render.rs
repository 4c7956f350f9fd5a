//! Snapshots of the rendered plan and of its JSON, from fixed desired systems and host facts.

use std::collections::BTreeSet;

use fleet_planner::{
    plan, render, BootSpec, ClosurePath, DesiredError, DesiredHost, FactsError, HostInput, Plan,
    PlanOptions, RemoteState, RenderOptions,
};

/// A store path with a fake but well-formed 32-character hash made from `seed`.
fn sp(seed: &str, name: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut state: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes().chain(name.bytes()) {
        state = (state ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let hash: String = (0..32)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ALPHABET[(state >> 59) as usize] as char
        })
        .collect();
    format!("/nix/store/{hash}-{name}")
}

fn cp(path: &str, nar_size: u64) -> ClosurePath {
    ClosurePath {
        path: path.to_owned(),
        nar_size,
    }
}

fn boot(kernel_version: &str) -> BootSpec {
    BootSpec {
        kernel: Some(sp(kernel_version, &format!("linux-{kernel_version}"))),
        initrd: Some(sp(
            kernel_version,
            &format!("initrd-linux-{kernel_version}"),
        )),
        modules: Some(sp(
            kernel_version,
            &format!("linux-{kernel_version}-modules"),
        )),
        ..BootSpec::default()
    }
}

/// A desired host: a shared base, `extra` packages, then toplevel and deployment package.
fn desired(name: &str, generation: &str, kernel: &str, extra: &[(&str, u64)]) -> DesiredHost {
    let toplevel = sp(
        generation,
        &format!("nixos-system-{name}-24.05.20240601.abc1234"),
    );
    let package = sp(generation, &format!("fleet-deployment-{name}"));
    let mut closure = vec![
        cp(&sp("base", "glibc-2.39-52"), 30_000_000),
        cp(&sp("base", "bash-5.2p26"), 1_700_000),
        cp(&sp(generation, "etc"), 80_000),
    ];
    closure.extend(extra.iter().map(|(n, size)| cp(&sp("pkg", n), *size)));
    closure.extend([
        cp(&sp(kernel, &format!("linux-{kernel}")), 12_000_000),
        cp(&sp(kernel, &format!("initrd-linux-{kernel}")), 9_000_000),
        cp(&sp(kernel, &format!("linux-{kernel}-modules")), 60_000_000),
        cp(&toplevel, 40_000),
        cp(&sp("pin", "source"), 180_000_000),
        cp(&package, 12_000),
    ]);
    DesiredHost {
        name: name.parse().unwrap(),
        system: "aarch64-linux".parse().unwrap(),
        toplevel,
        package,
        closure,
        boot: boot(kernel),
        specialisations: vec![],
        nixpkgs: Some(sp("pin", "source")),
        flake: None,
    }
}

fn all_present(d: &DesiredHost) -> BTreeSet<String> {
    d.closure.iter().map(|p| p.path.clone()).collect()
}

fn fleet() -> Vec<HostInput> {
    // pi1: was at generation "g1" with nano, openssl 3.0.13 and kernel 6.6.30; now wants htop,
    // openssl 3.0.14, kernel 6.6.31.
    let pi1_old = desired(
        "pi1",
        "g1",
        "6.6.30",
        &[
            ("nano-7.2", 3_000_000),
            ("openssl-3.0.13", 7_000_000),
            ("xz-5.4.6", 500_000),
            ("xz-5.4.6-bin", 100_000),
        ],
    );
    let pi1_new = desired(
        "pi1",
        "g2",
        "6.6.31",
        &[
            ("htop-3.3.0", 400_000),
            ("openssl-3.0.14", 7_100_000),
            ("xz-5.4.6", 500_000),
            ("xz-5.4.6-bin", 100_000),
        ],
    );
    let pi1_facts = RemoteState {
        current: Some(pi1_old.toplevel.clone()),
        booted: Some(pi1_old.toplevel.clone()),
        generation: Some(41),
        // The current *system's* closure: without the old deployment package and its pin.
        current_closure: pi1_old
            .closure
            .iter()
            .map(|p| p.path.clone())
            .filter(|p| *p != pi1_old.package && !p.ends_with("-source"))
            .collect(),
        current_boot: pi1_old.boot.clone(),
        booted_boot: pi1_old.boot.clone(),
        profile: Some(pi1_old.toplevel.clone()),
        present: all_present(&pi1_old)
            .intersection(&all_present(&pi1_new))
            .cloned()
            .collect(),
        // The compressed route: the plan shows the compressed and delta estimates.
        zstd: true,
        mem_available: Some(8 << 30),
        ..RemoteState::default()
    };

    // pi2: a fresh host that has nothing.
    let pi2 = desired("pi2", "g1", "6.6.31", &[("htop-3.3.0", 400_000)]);

    // web1: runs exactly what is wanted.
    let web1 = desired("web1", "g7", "6.6.31", &[("nginx-1.26.1", 1_500_000)]);
    let web1_facts = RemoteState {
        current: Some(web1.toplevel.clone()),
        booted: Some(web1.toplevel.clone()),
        generation: Some(3),
        current_closure: web1.closure.iter().map(|p| p.path.clone()).collect(),
        current_boot: web1.boot.clone(),
        booted_boot: web1.boot.clone(),
        profile: Some(web1.toplevel.clone()),
        present: all_present(&web1),
        ..RemoteState::default()
    };

    // web2: runs what is wanted but lacks the deployment package.
    let web2 = desired("web2", "g7", "6.6.31", &[("nginx-1.26.1", 1_500_000)]);
    let web2_facts = RemoteState {
        current: Some(web2.toplevel.clone()),
        booted: Some(web2.toplevel.clone()),
        generation: Some(9),
        current_closure: vec![],
        current_boot: web2.boot.clone(),
        booted_boot: web2.boot.clone(),
        profile: Some(web2.toplevel.clone()),
        present: all_present(&web2)
            .into_iter()
            .filter(|p| *p != web2.package)
            .collect(),
        ..RemoteState::default()
    };

    let db1 = desired("db1", "g1", "6.6.31", &[]);
    vec![
        HostInput {
            name: "pi1".parse().unwrap(),
            desired: Ok(pi1_new),
            facts: Ok(pi1_facts),
        },
        HostInput {
            name: "pi2".parse().unwrap(),
            desired: Ok(pi2),
            facts: Ok(RemoteState::default()),
        },
        HostInput {
            name: "web1".parse().unwrap(),
            desired: Ok(web1),
            facts: Ok(web1_facts),
        },
        HostInput {
            name: "web2".parse().unwrap(),
            desired: Ok(web2),
            facts: Ok(web2_facts),
        },
        HostInput {
            name: "db1".parse().unwrap(),
            desired: Ok(db1),
            facts: Err(FactsError::Unreachable {
                reason: "ssh: connect to 10.0.0.5:22: connection refused".into(),
            }),
        },
        HostInput {
            name: "builder".parse().unwrap(),
            desired: Err(DesiredError::Build {
                reason: "error: attribute 'htpo' missing\n       at /etc/fleet/builder/configuration.nix:4:3:\n            3|   environment.systemPackages = [ pkgs.htpo ];".into(),
            }),
            facts: Ok(RemoteState::default()),
        },
    ]
}

#[test]
fn rendered_plan() {
    let plan = plan(&fleet(), &PlanOptions::default());
    insta::assert_snapshot!(render(&plan, RenderOptions { color: false }));
}

#[test]
fn rendered_plan_in_color() {
    let plan = plan(&fleet(), &PlanOptions::default());
    let text = render(&plan, RenderOptions { color: true });
    assert!(text.contains("\x1b["));
    insta::assert_snapshot!(text.replace('\x1b', "<ESC>"));
}

#[test]
fn rendered_plan_without_color_has_no_escapes() {
    let text = render(
        &plan(&fleet(), &PlanOptions::default()),
        RenderOptions { color: false },
    );
    assert!(!text.contains('\x1b'));
}

#[test]
fn plan_json() {
    let plan = plan(&fleet(), &PlanOptions::default());
    let json = plan.to_json();
    assert_eq!(Plan::from_json(&json).unwrap(), plan);
    insta::assert_snapshot!(json);
}

#[test]
fn empty_plan() {
    insta::assert_snapshot!(render(&plan(&[], &PlanOptions::default()), RenderOptions::default()), @"Plan: 0 to install, 0 to update, 0 unchanged, 0 errors.");
}
