//! Flake fixtures: the fleet directory as a git flake whose `nixosConfigurations` are some of
//! the hosts, with a copy of the stand-in nixpkgs as its `nixpkgs` input (a `path:` input
//! outside the flake, like a checkout next to it).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Fleet;

/// Runs a command in `dir`; panics with its output when it fails.
#[track_caller]
pub fn run_in(dir: &Path, program: &str, args: &[&str], env: &[(String, String)]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("command starts");
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `git` in `dir` with a fixed identity.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "-c",
        "commit.gpgsign=false",
    ];
    all.extend_from_slice(args);
    run_in(dir, "git", &all, &[])
}

/// A copy of the stand-in nixpkgs beside the fleet directory (its flake input).
pub fn standin_copy(f: &Fleet) -> PathBuf {
    let to = f.dir.parent().unwrap().join("nixpkgs");
    run_in(
        f.dir.parent().unwrap(),
        "cp",
        &[
            "-r",
            &fleet_testbed::nixpkgs_standin().display().to_string(),
            &to.display().to_string(),
        ],
        &[],
    );
    to
}

/// Sets the stand-in copy's default version of a package (`htop` "3.3.0" → `version`).
pub fn set_default_version(nixpkgs: &Path, pname: &str, version: &str) {
    let file = nixpkgs.join("pkgs/default.nix");
    let text = std::fs::read_to_string(&file).unwrap();
    let needle = format!("pname = \"{pname}\"; defaultVersion = \"");
    let at = text.find(&needle).expect("package in the stand-in") + needle.len();
    let end = at + text[at..].find('"').unwrap();
    std::fs::write(&file, format!("{}{version}{}", &text[..at], &text[end..])).unwrap();
}

/// Makes the fleet directory a git flake with `nixosConfigurations.<host>` for `hosts` (their
/// `hosts/<host>/configuration.nix` as module), locks it and commits everything; in fleet.toml
/// those hosts get `flake = "."` instead of `config` (the others keep the pin).
pub fn make_flake(f: &Fleet, nixpkgs: &Path, hosts: &[(&str, &str)]) {
    let configs: String = hosts
        .iter()
        .map(|(h, system)| {
            format!(
                "    {h} = nixpkgs.lib.nixosSystem {{ system = \"{system}\"; modules = [ ./hosts/{h}/configuration.nix ]; }};\n"
            )
        })
        .collect();
    std::fs::write(
        f.dir.join("flake.nix"),
        format!(
            "{{\n  inputs.nixpkgs.url = \"path:{}\";\n  outputs = {{ self, nixpkgs }}: {{\n  nixosConfigurations = {{\n{configs}  }};\n  }};\n}}\n",
            nixpkgs.display()
        ),
    )
    .unwrap();
    std::fs::write(f.dir.join(".gitignore"), ".fleet/\n").unwrap();
    git(&f.dir, &["init", "-q"]);
    git(&f.dir, &["add", "-A"]);
    lock(f, &[]);
    let names: Vec<&str> = hosts.iter().map(|(h, _)| *h).collect();
    f.edit_toml(|t| flake_hosts(&t, &names));
    git(&f.dir, &["add", "-A"]);
    git(&f.dir, &["commit", "-qm", "flake"]);
}

/// `nix flake lock` in the fleet directory (with `args`, e.g. `--update-input nixpkgs`).
pub fn lock(f: &Fleet, args: &[&str]) {
    let mut all = vec![
        "--extra-experimental-features",
        "nix-command flakes",
        "flake",
        "lock",
    ];
    all.extend_from_slice(args);
    run_in(&f.dir, "nix", &all, &f.tb.nix_env());
    git(&f.dir, &["add", "flake.lock"]);
}

/// fleet.toml with `config = …` of `hosts` replaced by `flake = "."`.
pub fn flake_hosts(toml: &str, hosts: &[&str]) -> String {
    let mut out = String::new();
    let mut current = String::new();
    for line in toml.lines() {
        if let Some(name) = line
            .strip_prefix("[hosts.")
            .and_then(|l| l.strip_suffix(']'))
        {
            current = name.to_owned();
        }
        if line.starts_with("config = ") && hosts.contains(&current.as_str()) {
            out.push_str("flake = \".\"\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
