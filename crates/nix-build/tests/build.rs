//! fleet-nix-build against the real Nix and the nixpkgs stand-in.

mod common;

use std::time::Instant;

use common::*;
use fleet_nix_build::{evaluate_and_build, BuildError, BuildEvent};

const CONFIG: &str = r#"{ pkgs, ... }: {
  imports = [ ./common.nix ];
  networking.hostName = "pi";
  environment.systemPackages = [ pkgs.htop ];
}
"#;

fn common_nix(id: &str) -> String {
    format!("{{ pkgs, ... }}: {{ environment.systemPackages = [ pkgs.nano ]; environment.etc.\"test-id\".text = \"{id}\"; }}\n")
}

#[tokio::test]
async fn two_hosts_path_and_tarball_pins() {
    let dir = tempdir();
    let id = unique();
    let pi = write(&dir.path, "hosts/pi 1/configuration.nix", CONFIG);
    write(&dir.path, "hosts/pi 1/common.nix", &common_nix(&id));
    let web = write(&dir.path, "hosts/web/configuration.nix", CONFIG);
    write(&dir.path, "hosts/web/common.nix", &common_nix(&id));
    let specs = vec![
        spec("pi 1", "aarch64-linux", path_pin(), &pi),
        spec("web", "x86_64-linux", tarball_pin(&dir.path), &web),
    ];
    let (opts, events) = options(&dir.path, NIX_CONFIG);
    let start = Instant::now();
    let results = evaluate_and_build(&specs, &opts).await;
    eprintln!("eval+build of 2 hosts: {:?}", start.elapsed());

    for (name, r) in &results {
        let b = r.as_ref().unwrap_or_else(|e| panic!("{name}: {e}"));
        let pkg = std::path::Path::new(&b.package);
        assert_eq!(readlink(pkg.join("system")), b.toplevel);
        assert!(readlink(pkg.join("nixpkgs")).ends_with("-source"));
        assert!(pkg.join("nixpkgs/nixos/default.nix").is_file());
        // config/ mirrors the fleet folder, with this host's files only.
        let own = if name == "web" {
            "hosts/web"
        } else {
            "hosts/pi 1"
        };
        let other = if name == "web" {
            "hosts/pi 1"
        } else {
            "hosts/web"
        };
        assert_eq!(
            readlink(pkg.join("configuration.nix")),
            format!("config/{own}/configuration.nix")
        );
        assert!(pkg.join("configuration.nix").is_file());
        assert!(pkg.join("config").join(own).join("common.nix").is_file());
        assert!(!pkg.join("config").join(other).exists(), "{name}");
        assert!(pkg.join("README.md").is_file());
        let switch = std::fs::read_to_string(pkg.join("switch")).unwrap();
        assert!(switch.contains(&format!("toplevel='{}'", b.toplevel)));
        assert!(switch.contains("nix-env -p /nix/var/nix/profiles/system --set"));
        assert_eq!(readlink(&b.gc_root), b.package);
        assert!(b.gc_root.starts_with(dir.path.join(".fleet/gcroots")));
        assert!(b.boot.kernel.as_deref().unwrap().contains("-linux-6.6.30/"));
        assert!(b
            .boot
            .initrd
            .as_deref()
            .unwrap()
            .contains("-initrd-linux-6.6.30/"));
        assert!(b
            .boot
            .modules
            .as_deref()
            .unwrap()
            .ends_with("-linux-6.6.30-modules"));
    }
    let pi = results[0].1.as_ref().unwrap();
    let web = results[1].1.as_ref().unwrap();
    assert_ne!(pi.toplevel, web.toplevel, "different systems");
    assert_eq!(
        std::fs::read_to_string(format!("{}/system", pi.toplevel)).unwrap(),
        "aarch64-linux"
    );
    assert!(dir.path.join(".fleet/gcroots/pi 1").is_symlink());
    assert!(dir.path.join(".fleet/gcroots/web").is_symlink());
    // No temporary roots left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path.join(".fleet/gcroots"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    let events = events.lock().unwrap();
    // The capability check says where the aarch64 host builds (emulated here: the test's
    // NIX_CONFIG has extra-platforms and no builders), before evaluation starts.
    assert_eq!(
        events.first(),
        Some(&BuildEvent::BuildRoute {
            host: "pi 1".into(),
            system: "aarch64-linux".into(),
            route: fleet_nix_build::BuildRoute::Emulated,
        }),
        "{events:?}"
    );
    assert!(matches!(
        events.get(1),
        Some(BuildEvent::EvalStarted { .. })
    ));
    // Both hosts are built, in one realise or in two (they are two batches: other pins).
    let mut building: Vec<&String> = events
        .iter()
        .flat_map(|e| match e {
            BuildEvent::BuildStarted { hosts } => hosts.iter().collect(),
            _ => Vec::new(),
        })
        .collect();
    building.sort();
    assert_eq!(building, ["pi 1", "web"]);
}

#[tokio::test]
async fn identical_hosts_are_built_once() {
    let dir = tempdir();
    let id = unique();
    let config = write(&dir.path, "shared/configuration.nix", CONFIG);
    write(&dir.path, "shared/common.nix", &common_nix(&id));
    let specs = vec![
        spec("a", "x86_64-linux", path_pin(), &config),
        spec("b", "x86_64-linux", path_pin(), &config),
    ];
    let (opts, events) = options(&dir.path, NIX_CONFIG);
    let results = evaluate_and_build(&specs, &opts).await;
    let a = results[0].1.as_ref().unwrap();
    let b = results[1].1.as_ref().unwrap();
    assert_eq!(a.toplevel_drv, b.toplevel_drv);
    assert_eq!(
        a.package, b.package,
        "the package does not depend on the host name"
    );
    assert_ne!(a.gc_root, b.gc_root);
    let built = built_drvs(&events);
    let count = |needle: &str| built.iter().filter(|d| d.contains(needle)).count();
    assert_eq!(count("-nixos-system-pi-"), 1, "{built:#?}");
    assert_eq!(count("-fleet-deployment.drv"), 1, "{built:#?}");
}

#[tokio::test]
async fn aarch64_without_extra_platforms_gets_remedies() {
    let dir = tempdir();
    let config = write(&dir.path, "c/configuration.nix", "{ ... }: { }\n");
    let specs = vec![
        spec("pi", "aarch64-linux", path_pin(), &config),
        spec("web", "x86_64-linux", path_pin(), &config),
    ];
    let (opts, _) = options(&dir.path, NIX_CONFIG_NO_EMULATION);
    let results = evaluate_and_build(&specs, &opts).await;
    match &results[0].1 {
        Err(BuildError::CannotBuild(c)) => {
            assert_eq!(c.system, "aarch64-linux");
            let text = c.to_string();
            eprintln!("{text}");
            assert!(text.contains("boot.binfmt.emulatedSystems = [ \"aarch64-linux\" ]"));
            assert!(text.contains("extra-platforms = aarch64-linux"));
            assert!(text.contains("builders = ssh://"));
            assert!(text.contains("build = \"cross\""));
        }
        other => panic!("expected CannotBuild, got {other:?}"),
    }
    assert!(results[1].1.is_ok(), "{:?}", results[1].1);
    assert!(
        fleet_nix_build::check_can_build("aarch64-linux", &opts.nix_env)
            .await
            .is_err()
    );
    assert!(fleet_nix_build::check_can_build(
        "aarch64-linux",
        &[("NIX_CONFIG".into(), NIX_CONFIG.into())]
    )
    .await
    .is_ok());
}

#[tokio::test]
async fn syntax_error_fails_only_that_host() {
    let dir = tempdir();
    let bad = write(
        &dir.path,
        "bad/configuration.nix",
        "{ pkgs, ... }: {\n  networking.hostName = \"bad\"\n  boot.kernelVersion = 1;\n}\n",
    );
    let good = write(
        &dir.path,
        "good/configuration.nix",
        "{ pkgs, ... }: { environment.systemPackages = [ pkgs.jq ]; }\n",
    );
    let specs = vec![
        spec("bad", "x86_64-linux", path_pin(), &bad),
        spec("good", "x86_64-linux", path_pin(), &good),
    ];
    let (opts, events) = options(&dir.path, NIX_CONFIG);
    let results = evaluate_and_build(&specs, &opts).await;
    match &results[0].1 {
        Err(BuildError::Eval { stderr }) => {
            eprintln!("{stderr}");
            assert!(stderr.contains("syntax error"), "{stderr}");
            assert!(stderr.contains("bad/configuration.nix"), "{stderr}");
        }
        other => panic!("expected an evaluation error, got {other:?}"),
    }
    assert!(results[1].1.is_ok(), "{:?}", results[1].1);
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, BuildEvent::EvalBatchFailed { .. })));
}

#[tokio::test]
async fn build_failure_fails_only_that_host() {
    let dir = tempdir();
    let id = unique();
    let broken = write(
        &dir.path,
        "broken/configuration.nix",
        &format!(
            r#"{{ pkgs, ... }}: {{
  environment.systemPackages = [ (derivation {{
    name = "broken-1.0"; system = pkgs.system; builder = "/bin/sh";
    args = [ "-c" "echo it broke {id} >&2; exit 3" ];
  }}) ];
}}
"#
        ),
    );
    let good = write(&dir.path, "good/configuration.nix", "{ pkgs, ... }: { }\n");
    let specs = vec![
        spec("broken", "x86_64-linux", path_pin(), &broken),
        spec("good", "x86_64-linux", path_pin(), &good),
    ];
    let (opts, _) = options(&dir.path, NIX_CONFIG);
    let results = evaluate_and_build(&specs, &opts).await;
    match &results[0].1 {
        Err(BuildError::Build { failed, stderr }) => {
            assert_eq!(failed.len(), 1, "{stderr}");
            assert!(failed[0].ends_with("-broken-1.0.drv"));
            assert!(stderr.contains("it broke"), "{stderr}");
        }
        other => panic!("expected a build error, got {other:?}"),
    }
    assert!(results[1].1.is_ok(), "{:?}", results[1].1);
}

#[tokio::test]
async fn cross_builds_with_the_deployers_system() {
    let dir = tempdir();
    let config = write(
        &dir.path,
        "c/configuration.nix",
        "{ pkgs, ... }: { environment.systemPackages = [ pkgs.tmux ]; }\n",
    );
    let mut cross = spec("cross", "aarch64-linux", path_pin(), &config);
    cross.cross = true;
    let native = spec("native", "aarch64-linux", path_pin(), &config);
    // Cross hosts need no emulation.
    let (opts, _) = options(&dir.path, NIX_CONFIG_NO_EMULATION);
    let results = evaluate_and_build(&[cross.clone()], &opts).await;
    let c = results[0].1.as_ref().unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("{}/system", c.toplevel)).unwrap(),
        "aarch64-linux"
    );
    let (opts, _) = options(&dir.path, NIX_CONFIG);
    let results = evaluate_and_build(&[native], &opts).await;
    let n = results[0].1.as_ref().unwrap();
    assert_ne!(c.toplevel, n.toplevel, "cross and native builds differ");
}

/// The package's `switch` script activates the system in a private mount namespace (private
/// /run, /boot and system profiles; the store is shared with the deployer). Needs root.
#[tokio::test]
async fn switch_script_activates_in_a_private_namespace() {
    if effective_uid() != 0 {
        eprintln!("skipped: needs root for unshare -m");
        return;
    }
    let dir = tempdir();
    let config = write(
        &dir.path,
        "c/configuration.nix",
        "{ pkgs, ... }: { networking.hostName = \"ns\"; }\n",
    );
    let (opts, _) = options(&dir.path, NIX_CONFIG);
    let results =
        evaluate_and_build(&[spec("ns", "x86_64-linux", path_pin(), &config)], &opts).await;
    let b = results[0].1.as_ref().unwrap();
    let boot = dir.path.join("boot");
    let profiles = dir.path.join("profiles");
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::create_dir_all(&profiles).unwrap();
    let script = r#"set -e
mount -t tmpfs none /run
mount --bind "$1" /boot
mount --bind "$2" /nix/var/nix/profiles
"$3/switch" switch
readlink /run/current-system
readlink /run/booted-system
cat /boot/loader/loader.conf
cat /run/fleet-standin/activations.log
"$3/switch" bogus || echo "bogus exit=$?"
"#;
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .args([boot.as_str(), profiles.as_str(), &b.package])
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&b.toplevel.as_str()), "{stdout}");
    assert!(
        stdout.contains("default nixos-generation-1.conf"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("switch {} exit=0", b.toplevel)),
        "{stdout}"
    );
    assert!(stdout.contains("bogus exit=1"), "{stdout}");
    assert_eq!(readlink(profiles.join("system-1-link")), b.toplevel);
    assert!(boot
        .join("loader/entries/nixos-generation-1.conf")
        .is_file());
}

fn effective_uid() -> u32 {
    // No libc dependency: the owner of /proc/self is the effective uid.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// Builds start as batches finish (docs/evaluation.md, "Steps"): the host of a fast batch is
/// being built while a slow batch still evaluates; the slow host is built by a later realise.
#[tokio::test]
async fn an_early_batch_builds_while_a_slow_one_still_evaluates() {
    let dir = tempdir();
    let id = unique();
    let fast = write(
        &dir.path,
        "hosts/fast/configuration.nix",
        &format!("{{ networking.hostName = \"fast\"; environment.etc.id.text = \"{id}\"; }}\n"),
    );
    // About two seconds of evaluation, deterministically (no I/O).
    let slow = write(
        &dir.path,
        "hosts/slow/configuration.nix",
        &format!(
            "let n = builtins.foldl' (acc: i: acc + builtins.foldl' builtins.add 0 \
             (builtins.genList (x: x) 1000)) 0 (builtins.genList (x: x) 4000); in\n\
             {{ networking.hostName = \"slow\"; environment.etc.id.text = \"{id}-${{toString n}}\"; }}\n"
        ),
    );
    let specs = vec![
        spec("fast", "x86_64-linux", path_pin(), &fast),
        spec("slow", "x86_64-linux", path_pin(), &slow),
    ];
    let (mut opts, events) = options(&dir.path, NIX_CONFIG);
    opts.max_hosts_per_eval = 1;
    opts.max_parallel_evals = 2;
    let results = evaluate_and_build(&specs, &opts).await;
    for (name, r) in &results {
        assert!(r.is_ok(), "{name}: {r:?}");
    }
    let events = events.lock().unwrap();
    let at = |what: &str, pred: &dyn Fn(&BuildEvent) -> bool| {
        events
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("no {what} in {events:#?}"))
    };
    let has = |hosts: &[String], h: &str| hosts.iter().any(|x| x == h);
    let slow_evaluating = at(
        "slow's evaluation",
        &|e| matches!(e, BuildEvent::EvalStarted { hosts } if has(hosts, "slow")),
    );
    let fast_build = at(
        "fast's build",
        &|e| matches!(e, BuildEvent::BuildStarted { hosts } if hosts == &["fast"]),
    );
    let fast_built = at(
        "fast's build's end",
        &|e| matches!(e, BuildEvent::BuildFinished { built, .. } if !built.is_empty()),
    );
    let slow_evaluated = at(
        "slow's evaluation's end",
        &|e| matches!(e, BuildEvent::EvalFinished { hosts, .. } if has(hosts, "slow")),
    );
    let slow_build = at(
        "slow's build",
        &|e| matches!(e, BuildEvent::BuildStarted { hosts } if has(hosts, "slow")),
    );
    assert!(
        slow_evaluating < fast_build && fast_build < slow_evaluated,
        "fast is built while slow evaluates: {events:#?}"
    );
    assert!(
        fast_built < slow_build && slow_evaluated < slow_build,
        "{events:#?}"
    );
}
