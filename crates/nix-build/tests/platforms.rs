//! The configuration's platform against fleet.toml's `system`, `build = "cross"` with the
//! configuration's own (attrset) `hostPlatform`, and the search path fleet gives an evaluation.

mod common;

use common::*;
use fleet_nix_build::{evaluate, evaluate_and_build, BuildError};

#[tokio::test]
async fn cross_keeps_an_attrset_host_platform_and_a_mismatch_is_an_error() {
    let dir = tempdir();
    // lib.systems.examples.raspberryPi: armv6l-linux, set by the configuration itself.
    let pi = write(
        &dir.path,
        "hosts/pi/configuration.nix",
        "{ lib, pkgs, ... }: { nixpkgs.hostPlatform = lib.systems.examples.raspberryPi;\n  \
         networking.hostName = \"pi\"; environment.systemPackages = [ pkgs.htop ]; }\n",
    );
    let mut cross = spec("pi", "armv6l-linux", path_pin(), &pi);
    cross.cross = true;
    let mut wrong = spec("wrong", "aarch64-linux", path_pin(), &pi);
    wrong.cross = true;
    let (opts, _) = options(&dir.path, NIX_CONFIG_NO_EMULATION);
    let started = std::time::Instant::now();
    let results = evaluate_and_build(&[cross, wrong], &opts).await;
    eprintln!("cross eval+build: {:?}", started.elapsed());
    let built = results[0].1.as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        std::fs::read_to_string(format!("{}/system", built.toplevel)).unwrap(),
        "armv6l-linux"
    );
    match &results[1].1 {
        Err(e @ BuildError::PlatformMismatch { configured, system }) => {
            assert_eq!(
                (configured.as_str(), system.as_str()),
                ("armv6l-linux", "aarch64-linux")
            );
            assert!(e.to_string().contains("nixpkgs.hostPlatform"), "{e}");
        }
        other => panic!("expected a platform mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn the_deployers_nix_path_and_nixos_config_never_reach_evaluation() {
    let dir = tempdir();
    write(
        &dir.path,
        "poison/default.nix",
        "throw \"NIX_PATH was used\"\n",
    );
    write(
        &dir.path,
        "poison/lib/default.nix",
        "throw \"NIX_PATH was used\"\n",
    );
    let poison = dir.path.join("poison");
    let config = write(
        &dir.path,
        "hosts/a/configuration.nix",
        "{ ... }: let l = import <nixpkgs/lib>; in { networking.hostName = l.sanitizeName \"a b\"; }\n",
    );
    let missing = write(
        &dir.path,
        "hosts/b/configuration.nix",
        "{ ... }: { imports = [ <nixos-hardware/x.nix> ]; }\n",
    );
    let (mut opts, _) = options(&dir.path, NIX_CONFIG);
    opts.nix_env.push((
        "NIX_PATH".into(),
        format!("nixpkgs={poison}:nixos-hardware={poison}"),
    ));
    opts.nix_env.push((
        "NIXOS_CONFIG".into(),
        poison.join("default.nix").to_string(),
    ));
    let results = evaluate(
        &[
            spec("a", "x86_64-linux", path_pin(), &config),
            spec("b", "x86_64-linux", path_pin(), &missing),
        ],
        &opts,
    )
    .await;
    let a = results[0].1.as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        a.toplevel
            .ends_with("-nixos-system-a-b-24.05.20261124.fleet"),
        "{}",
        a.toplevel
    );
    let err = results[1].1.as_ref().unwrap_err().to_string();
    assert!(
        err.contains("hosts/b/configuration.nix:1 uses <nixos-hardware>"),
        "{err}"
    );
    assert!(err.contains("nix-path = { nixos-hardware = "), "{err}");

    // Named in fleet.toml: found there (and only there).
    write(
        &dir.path,
        "vendor/hw/x.nix",
        "{ networking.hostName = \"from-vendor\"; }\n",
    );
    let mut b = spec("b", "x86_64-linux", path_pin(), &missing);
    b.nix_path = vec![("nixos-hardware".into(), dir.path.join("vendor/hw"))];
    let results = evaluate(&[b], &opts).await;
    let b = results[0].1.as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        b.toplevel.contains("-nixos-system-from-vendor-"),
        "{}",
        b.toplevel
    );
}
