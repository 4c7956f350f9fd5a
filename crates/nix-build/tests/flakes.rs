//! Flake hosts: one evaluation per flake, the package's copy of the flake (tracked files and the
//! lock, every input referenced), a missing attribute with suggestions.

mod common;

use std::process::Command;

use common::*;
use fleet_nix_build::{evaluate_and_build, BuildError, BuildEvent, FlakeSpec, HostBuildSpec};

fn git(dir: &camino::Utf8Path, args: &[&str]) {
    let ok = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

fn flake_spec(name: &str, reference: &str, attribute: &str) -> HostBuildSpec {
    HostBuildSpec {
        flake: Some(FlakeSpec {
            reference: reference.into(),
            attribute: attribute.into(),
            impure: false,
        }),
        ..spec(
            name,
            "x86_64-linux",
            path_pin(),
            camino::Utf8Path::new("/unused"),
        )
    }
}

#[tokio::test]
async fn one_evaluation_per_flake_tracked_files_only_and_suggestions() {
    // Not `tempdir()`: Nix 2.8 cannot lock a git flake whose path has a space in it.
    let tmp = tempfile::tempdir().unwrap();
    let root = camino::Utf8PathBuf::from_path_buf(tmp.path().to_owned()).unwrap();
    let fl = root.join("infra");
    let u = unique();
    write(
        &fl,
        "flake.nix",
        &format!(
            "{{\n  inputs.nixpkgs.url = \"path:{}\";\n  outputs = {{ self, nixpkgs }}: {{\n    \
             nixosConfigurations = builtins.listToAttrs (map (n: {{ name = n; value = nixpkgs.lib.nixosSystem {{\n      \
             system = \"x86_64-linux\"; modules = [ ./common.nix {{ networking.hostName = n; }} ]; }}; }}) [ \"web\" \"db\" ]);\n  }};\n}}\n",
            standin()
        ),
    );
    write(
        &fl,
        "common.nix",
        &format!("{{ pkgs, ... }}: {{ environment.systemPackages = [ pkgs.htop ]; environment.etc.u.text = \"{u}\"; }}\n"),
    );
    git(&fl, &["init", "-q"]);
    git(&fl, &["add", "-A"]);
    let lock = Command::new("nix")
        .current_dir(&fl)
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "flake",
            "lock",
        ])
        .env("NIX_CONFIG", NIX_CONFIG)
        .status()
        .unwrap();
    assert!(lock.success());
    git(&fl, &["add", "flake.lock"]);
    git(&fl, &["commit", "-qm", "x"]);
    write(&fl, "untracked-secret.txt", "not for hosts");

    let (opts, events) = options(&root, NIX_CONFIG);
    let reference = fl.to_string();
    let specs = [
        flake_spec("web", &reference, "web"),
        flake_spec("db1", &reference, "db"),
        flake_spec("dbx", &reference, "dv"),
    ];
    let results = evaluate_and_build(&specs, &opts).await;
    let evals: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, BuildEvent::EvalStarted { .. }))
        .cloned()
        .collect();
    assert_eq!(
        evals.len(),
        1,
        "one evaluation for the flake's hosts: {evals:?}"
    );

    let web = results[0].1.as_ref().expect("web builds");
    let db = results[1].1.as_ref().expect("db builds");
    assert_ne!(web.toplevel, db.toplevel);
    let lock = web.flake.as_ref().expect("a flake host has its lock");
    assert!(
        lock.revision.as_deref().is_some_and(|r| r.len() == 40),
        "{lock:?}"
    );
    assert!(
        !lock.dirty,
        "an untracked file does not make the tree dirty"
    );
    assert!(lock.inputs.contains_key("nixpkgs"), "{lock:?}");
    let pkg = camino::Utf8Path::new(&web.package);
    assert!(pkg.join("flake/flake.lock").is_file());
    assert!(pkg.join("flake/common.nix").is_file());
    assert!(!pkg.join("flake/untracked-secret.txt").exists());
    assert_eq!(readlink(pkg.join("system")), web.toplevel);
    let inputs: Vec<_> = std::fs::read_dir(pkg.join("inputs")).unwrap().collect();
    assert_eq!(inputs.len(), 1, "the stand-in, referenced");
    let readme = std::fs::read_to_string(pkg.join("README.md")).unwrap();
    assert!(
        readme.contains("--flake \"$(readlink -f /etc/nixos/current-configuration/flake)#web\""),
        "{readme}"
    );

    match &results[2].1 {
        Err(e @ BuildError::FlakeAttribute { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("has no nixosConfigurations.dv; it has: db, web"),
                "{text}"
            );
            assert!(text.contains("did you mean `db`?"), "{text}");
        }
        other => panic!("expected a missing attribute: {other:?}"),
    }
}
