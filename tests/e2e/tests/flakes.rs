//! Flake hosts (`flake = "."`) next to pinned hosts: plan, apply, status, rollback; an input
//! change in the plan; the package's flake rebuilds offline on the host; a wrong attribute;
//! untracked files stay out.

use std::time::Instant;

use fleet_e2e::flakes::{git, lock, make_flake, set_default_version, standin_copy};
use fleet_e2e::matrix::root_or_skip;
use fleet_e2e::{config, current, named, record_cmd, Fleet, HostSpec, Userland};

#[test]
fn pinned_and_flake_hosts_plan_apply_status_roll_back_and_rebuild_offline() {
    let started = Instant::now();
    let f = Fleet::start([
        HostSpec::new("pin1"),
        HostSpec::new("flk1"),
        HostSpec::new("flk2"),
    ]);
    let nixpkgs = standin_copy(&f);
    make_flake(
        &f,
        &nixpkgs,
        &[("flk1", "x86_64-linux"), ("flk2", "x86_64-linux")],
    );
    // Not tracked by git: Nix leaves it out of the flake's copy, so of the package.
    std::fs::write(f.dir.join("hosts/flk1/untracked.txt"), "secret notes").unwrap();
    // A change to a tracked file makes the tree dirty (an untracked file does not, for Nix).
    let flake_nix = std::fs::read_to_string(f.dir.join("flake.nix")).unwrap();
    std::fs::write(f.dir.join("flake.nix"), format!("{flake_nix}# edited\n")).unwrap();

    let run = f.fleet(&["plan", "--json"]);
    run.expect_code(0);
    let plan = run.json();
    let flake = &named(&plan, "flk1")["flake"];
    assert!(flake["revision"].as_str().unwrap().len() >= 10, "{flake}");
    assert_eq!(flake["dirty"], true, "flake.nix edited: {flake}");
    assert!(named(&plan, "pin1")["flake"].is_null());
    let text = f.fleet(&["plan"]);
    assert!(
        text.stdout.contains(&format!("flake {}", f.dir.display())),
        "{}",
        text.stdout
    );

    f.fleet(&["apply"]).expect_code(0);
    let gen1 = current(&f, "flk1").expect("flk1 runs a system");
    assert!(current(&f, "pin1").is_some() && current(&f, "flk2").is_some());
    // The package: the flake's tracked files with its lock, and the inputs.
    let pkg = "/etc/nixos/current-configuration";
    let listing = f.sh(
        "flk1",
        &format!("ls {pkg}/flake/ {pkg}/flake/hosts/flk1 {pkg}/inputs"),
    );
    assert!(
        listing.contains("flake.lock") && listing.contains("configuration.nix"),
        "{listing}"
    );
    assert!(!listing.contains("untracked.txt"), "{listing}");
    assert!(!listing.contains(".fleet"), "{listing}");
    let record = f.sh("flk1", &record_cmd(&gen1));
    assert!(
        record.contains("\"flake\"") && record.contains("\"nixpkgs\""),
        "{record}"
    );

    // status: in sync, from the flake, and without evaluation.
    let s = f.fleet(&["status", "--json"]);
    s.expect_code(0);
    for h in ["pin1", "flk1", "flk2"] {
        assert_eq!(named(&s.json(), h)["in_sync"], true, "{h}");
    }
    f.fleet(&["status", "--json", "--no-eval"]).expect_code(0);

    // On the host, without the deployer's checkout of the input (the path in flake.lock is
    // gone) and without the network: the package's flake evaluates to the running system.
    let away = nixpkgs.with_extension("away");
    std::fs::rename(&nixpkgs, &away).unwrap();
    let rebuilt = f.sh(
        "flk1",
        &format!(
            "NIX_CONFIG='substituters =' nix --extra-experimental-features 'nix-command flakes' \
             build --no-link --json \"$(readlink -f {pkg}/flake)#nixosConfigurations.flk1.config.system.build.toplevel\" 2>&1"
        ),
    );
    std::fs::rename(&away, &nixpkgs).unwrap();
    assert!(
        rebuilt.contains(&gen1),
        "offline rebuild on the host: {rebuilt}"
    );

    // A new version of the input: the plan names the input and shows the package diff.
    std::fs::remove_file(f.dir.join("hosts/flk1/untracked.txt")).unwrap();
    set_default_version(&nixpkgs, "htop", "3.4.0");
    lock(&f, &["--update-input", "nixpkgs"]);
    git(&f.dir, &["commit", "-qam", "nixpkgs update"]);
    let run = f.fleet(&["plan", "--json"]);
    run.expect_code(0);
    let plan = run.json();
    let flk1 = named(&plan, "flk1");
    assert_eq!(flk1["flake"]["dirty"], false, "{flk1}");
    let changed = flk1["flake"]["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{flk1}");
    assert_eq!(changed[0]["input"], "nixpkgs");
    assert_ne!(changed[0]["from"], changed[0]["to"]);
    assert!(flk1["diff"].to_string().contains("3.4.0"), "{flk1}");
    // The pinned host does not use the flake: unchanged.
    assert_eq!(named(&plan, "pin1")["action"], "unchanged");
    let text = f.fleet(&["plan"]).stdout;
    assert!(text.contains("nixpkgs ") && text.contains(" → "), "{text}");

    f.fleet(&["apply", "--on", "flk1"]).expect_code(0);
    let gen2 = current(&f, "flk1").unwrap();
    assert_ne!(gen1, gen2);
    f.fleet(&["rollback", "--on", "flk1"]).expect_code(0);
    assert_eq!(current(&f, "flk1").unwrap(), gen1);

    // A wrong attribute: the flake's attributes and a suggestion.
    f.edit_toml(|t| t.replacen("flake = \".\"", "flake = \".#flk3\"", 1));
    let run = f.fleet(&["plan"]);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("has no nixosConfigurations.flk3"), "{all}");
    assert!(all.contains("it has: flk1, flk2"), "{all}");
    assert!(all.contains("did you mean `flk1`?"), "{all}");
    let _ = config;
    eprintln!("flakes e2e: {:.1?}", started.elapsed());
}

/// The package's flake on hosts running Nix 2.26 (trixie) and 2.34 (sid): their Nix evaluates it
/// offline to the system fleet deployed (the input's folder does not exist in their userland).
/// The link is resolved first, as the package's README says.
#[test]
fn the_package_flake_rebuilds_offline_on_nix_226_and_234() {
    let started = Instant::now();
    let hosts: Vec<(&str, Userland)> = [("f226", Userland::Trixie), ("f234", Userland::Sid)]
        .into_iter()
        .filter(|(n, u)| root_or_skip(*u, &format!("flake package on {n}")).is_some())
        .collect();
    if hosts.is_empty() {
        return;
    }
    let f = Fleet::start(hosts.iter().map(|(n, u)| HostSpec::new(*n).userland(*u)));
    let nixpkgs = standin_copy(&f);
    let systems: Vec<(&str, &str)> = hosts.iter().map(|(n, _)| (*n, "x86_64-linux")).collect();
    make_flake(&f, &nixpkgs, &systems);
    f.fleet(&["apply"]).expect_code(0);
    for (h, _) in &hosts {
        let running = current(&f, h).expect("runs a system");
        let cmd = format!(
            "nix --version; NIX_CONFIG=\"$(printf 'substituters =\\nbuild-users-group =')\" \
             nix --extra-experimental-features 'nix-command flakes' build --no-link --json \
             \"$(readlink -f /etc/nixos/current-configuration/flake)#nixosConfigurations.{h}.config.system.build.toplevel\" 2>&1"
        );
        let o = f.tb.exec(h, &cmd).expect("exec");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(out.contains(&running), "{h}: {out}");
    }
    eprintln!("flakes on Nix 2.26/2.34: {:.1?}", started.elapsed());
}
