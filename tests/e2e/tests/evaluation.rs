//! Evaluation like `nixos-rebuild` on the host (docs/evaluation.md): the pin and the host's
//! own files only, whatever the deployer's NIX_PATH says; the configuration's platform checked;
//! a package per host that holds that host's files and no other's.

use std::path::Path;
use std::time::Instant;

use fleet_e2e::{config, config_with, named as host, Fleet, HostSpec};

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A nixpkgs that must never be used: every entry point throws.
fn poisoned_nixpkgs(dir: &Path) -> String {
    for f in ["default.nix", "lib/default.nix", "nixos/default.nix"] {
        write(dir, f, "throw \"the deployer's NIX_PATH was used\"\n");
    }
    format!(
        "nixpkgs={p}:nixos-config={p}/nixos/default.nix",
        p = dir.display()
    )
}

#[test]
fn evaluation_ignores_nix_path_packages_hold_own_files_and_neighbours_stay_unchanged() {
    let started = Instant::now();
    let mut f = Fleet::start([
        HostSpec::new("pi1").system("aarch64-linux"),
        HostSpec::new("web1"),
    ]);
    let poison = poisoned_nixpkgs(&f.dir.parent().unwrap().join("poison"));
    f.env.push(("NIX_PATH".into(), poison));
    // Both import a shared file and read the pin through <nixpkgs/...> (pi1 as most Pi
    // configurations do, the SD image module); web1 copies its own configuration into the
    // system (<nixos-config>).
    write(
        &f.dir,
        "shared/base.nix",
        "{ environment.etc.\"base\".text = \"base\\n\"; }\n",
    );
    write(
        &f.dir,
        "hosts/web1/extra.nix",
        "# web1's extra module\n{ environment.etc.\"extra\".text = builtins.readFile ./motd; }\n",
    );
    write(&f.dir, "hosts/web1/motd", "hello from web1\n");
    write(
        &f.dir,
        "secret.key",
        "an untracked secret next to fleet.toml\n",
    );
    f.set_config(
        "web1",
        "{ pkgs, ... }:\nlet l = import <nixpkgs/lib>; in {\n  imports = [ ./extra.nix ../../shared/base.nix ];\n  \
         networking.hostName = l.sanitizeName \"web1\";\n  environment.systemPackages = [ pkgs.htop ];\n  \
         system.copySystemConfiguration = true;\n}\n",
    );
    f.set_config(
        "pi1",
        "{ pkgs, ... }: {\n  imports = [ <nixpkgs/nixos/modules/installer/sd-card/sd-image-aarch64.nix> ../../shared/base.nix ];\n  networking.hostName = \"pi1\";\n  \
         environment.systemPackages = [ pkgs.htop ];\n}\n",
    );

    f.fleet(&["apply"]).expect_code(0);
    let pkg = "/etc/nixos/current-configuration";
    let files = |h: &str| f.sh(h, &format!("cd {pkg}/config && find . | sort"));
    assert_eq!(
        files("web1"),
        ".\n./hosts\n./hosts/web1\n./hosts/web1/configuration.nix\n./hosts/web1/extra.nix\n\
         ./hosts/web1/motd\n./shared\n./shared/base.nix"
    );
    assert_eq!(
        files("pi1"),
        ".\n./hosts\n./hosts/pi1\n./hosts/pi1/configuration.nix\n./shared\n./shared/base.nix"
    );
    assert_eq!(
        f.link("web1", &format!("{pkg}/configuration.nix")).unwrap(),
        f.link(
            "web1",
            &format!("{pkg}/config/hosts/web1/configuration.nix")
        )
        .unwrap()
    );
    // copySystemConfiguration: the toplevel holds the configuration, read from <nixos-config>.
    let copied = f.sh("web1", "cat /run/current-system/configuration.nix");
    assert!(
        copied.contains("system.copySystemConfiguration = true;"),
        "{copied}"
    );
    assert_eq!(
        f.sh("web1", "cat /run/current-system/etc/extra"),
        "hello from web1"
    );

    // The package's own switch script and nixos-rebuild's -I from the package work without
    // fleet: nix-instantiate of the package's nixpkgs and configuration gives the same system.
    let again = f.sh(
        "web1",
        &format!(
            "cd {pkg} && NIX_PATH= nix-instantiate --option nix-path '' --eval --read-write-mode \
             -I nixpkgs=$(readlink -f nix-path/nixpkgs) -I nixos-config=$(readlink -f configuration.nix) \
             -E 'let n = import <nixpkgs/nixos> {{ configuration = <nixos-config>; system = \"x86_64-linux\"; }}; \
             in n.config.system.build.toplevel.outPath' 2>/dev/null"
        ),
    );
    assert_eq!(
        again.trim_matches('"'),
        f.link("web1", "/run/current-system").unwrap()
    );

    // Editing pi1 leaves web1 unchanged in the plan, and in apply's summary and exit code.
    f.set_config(
        "pi1",
        "{ pkgs, ... }: {\n  imports = [ <nixpkgs/nixos/modules/installer/sd-card/sd-image-aarch64.nix> ../../shared/base.nix ];\n  networking.hostName = \"pi1\";\n  \
         environment.systemPackages = [ pkgs.htop pkgs.jq ];\n}\n",
    );
    let plan = f.fleet(&["plan", "--json"]);
    plan.expect_code(0);
    assert_eq!(host(&plan.json(), "web1")["action"], "unchanged");
    assert_eq!(host(&plan.json(), "pi1")["action"], "update");
    // A plan asks no store of a host whose facts show it runs its desired system and package
    // (web1: their closures are in its store); pi1's new system is looked up in pi1's store.
    let traced = f.fleet(&["-v", "plan"]);
    traced.expect_code(0);
    let sessions = |h: &str| {
        traced
            .stderr
            .lines()
            .filter(|l| l.contains(&format!("host={h} ")) && l.contains("nix-store --serve"))
            .count()
    };
    assert_eq!(sessions("web1"), 0, "{}", traced.stderr);
    assert!(sessions("pi1") > 0, "{}", traced.stderr);
    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(0);
    assert_eq!(run.outcomes()["web1"], "unchanged");
    assert_eq!(run.outcomes()["pi1"], "applied");

    // A comment in web1's own file: its package changes, its system does not.
    write(&f.dir, "hosts/web1/extra.nix", "# web1's extra module, edited\n{ environment.etc.\"extra\".text = builtins.readFile ./motd; }\n");
    let plan = f.fleet(&["plan", "--json"]);
    plan.expect_code(0);
    let web1 = host(&plan.json(), "web1").clone();
    assert_eq!(web1["action"], "update");
    assert_eq!(web1["activate"], false);
    assert_eq!(host(&plan.json(), "pi1")["action"], "unchanged");
    let human = f.fleet(&["plan"]);
    assert!(
        human
            .stdout
            .contains("(configuration files changed, system unchanged)"),
        "{}",
        human.stdout
    );
    let before = f.sh("web1", "cat /run/fleet-standin/activations.log | wc -l");
    f.fleet(&["apply"]).expect_code(0);
    assert_eq!(
        f.sh("web1", "cat /run/fleet-standin/activations.log | wc -l"),
        before,
        "relinked without activating"
    );
    assert!(f
        .sh("web1", &format!("cat {pkg}/config/hosts/web1/extra.nix"))
        .contains("edited"));
    f.assert_sound("web1", &[web1["target"].as_str()]);
    eprintln!("evaluation e2e: {:?}", started.elapsed());
}

#[test]
fn platform_search_path_and_architecture_errors_stop_only_their_host() {
    let f = Fleet::start([
        HostSpec::new("pi1").system("aarch64-linux"),
        HostSpec::new("web1"),
    ]);
    // The configuration says aarch64; fleet.toml says x86_64.
    f.set_config(
        "web1",
        "{ ... }: { networking.hostName = \"web1\"; nixpkgs.hostPlatform = \"aarch64-linux\"; }",
    );
    let plan = f.fleet(&["plan", "--json"]);
    plan.expect_code(1);
    let web1 = host(&plan.json(), "web1").clone();
    assert_eq!(web1["action"], "error");
    let err = web1["error"].as_str().unwrap();
    assert!(
        err.contains("aarch64-linux") && err.contains("x86_64-linux"),
        "{err}"
    );
    assert_eq!(host(&plan.json(), "pi1")["action"], "install");

    // A <name> fleet.toml does not provide: the error says which key to add.
    f.set_config(
        "web1",
        "{ ... }: { imports = [ <nixos-hardware/common.nix> ]; networking.hostName = \"web1\"; }",
    );
    let plan = f.fleet(&["plan", "--json"]);
    plan.expect_code(1);
    let err = host(&plan.json(), "web1")["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(err.contains("<nixos-hardware>"), "{err}");
    assert!(err.contains("nix-path = { nixos-hardware = "), "{err}");
    // Provided: it resolves to the checkout named in fleet.toml (copied to the store).
    write(
        &f.dir,
        "vendor/nixos-hardware/common.nix",
        "{ environment.etc.\"hw\".text = \"vendored\\n\"; }\n",
    );
    f.edit_toml(|t| {
        t.replace(
            "[hosts.web1]\n",
            "[hosts.web1]\nnix-path = { nixos-hardware = \"vendor/nixos-hardware\" }\n",
        )
    });
    let plan = f.fleet(&["plan", "--json"]);
    plan.expect_code(0);
    assert_eq!(host(&plan.json(), "web1")["action"], "install");

    // fleet.toml says x86_64 for pi1, which runs (claims) aarch64: refused before any copy.
    f.set_config("pi1", &config("pi1", &["htop"]));
    f.edit_toml(|t| {
        let at = t.find("[hosts.pi1]").unwrap();
        let (head, tail) = t.split_at(at);
        format!(
            "{head}{}",
            tail.replacen("system = \"aarch64-linux\"", "system = \"x86_64-linux\"", 1)
        )
    });
    let run = f.fleet(&["apply", "--json"]);
    run.expect_code(1);
    assert!(
        run.detail("pi1")
            .contains("pi1 runs aarch64-linux, the configuration is for x86_64-linux"),
        "{}",
        run.detail("pi1")
    );
    assert_eq!(run.outcomes()["web1"], "applied");
    assert!(f.store_paths("pi1").is_empty(), "nothing copied to pi1");
    assert_eq!(f.sh("web1", "cat /run/current-system/etc/hw"), "vendored");
    // The package carries the search path for plain nixos-rebuild.
    let hw = f
        .link(
            "web1",
            "/etc/nixos/current-configuration/nix-path/nixos-hardware",
        )
        .expect("nix-path/nixos-hardware in the package");
    assert!(f
        .sh("web1", &format!("cat {hw}/common.nix"))
        .contains("vendored"));
}

#[test]
fn a_path_pin_ships_its_tracked_files_once() {
    let f = Fleet::start([HostSpec::new("web1")]);
    // A git checkout of the stand-in with a large .git, an untracked file and a result link.
    let pin = f.dir.parent().unwrap().join("nixpkgs");
    let sh = |cmd: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&pin)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::create_dir_all(&pin).unwrap();
    sh(&format!(
        "cp -R {}/. .",
        fleet_testbed::nixpkgs_standin().display()
    ));
    sh("git init -q . && git add -A && git -c user.name=t -c user.email=t@t commit -qm pin");
    sh("head -c 30000000 /dev/urandom > .git/big-pack && echo junk > untracked.txt");
    sh("ln -s /nix/store/00000000000000000000000000000000-huge result");
    f.edit_toml(|t| {
        let start = t.find("[pins.standin]\npath = ").unwrap();
        let end = start + t[start..].find('\n').unwrap() + 1;
        let end = end + t[end..].find('\n').unwrap();
        format!(
            "{}[pins.standin]\npath = \"{}\"{}",
            &t[..start],
            pin.display(),
            &t[end..]
        )
    });
    let plan = f.fleet(&["plan", "--json"]);
    plan.expect_code(0);
    let bytes = host(&plan.json(), "web1")["copy"]["bytes"]
        .as_u64()
        .unwrap();
    assert!(bytes < 10_000_000, "the .git is not copied: {bytes} bytes");
    let pin_bytes = host(&plan.json(), "web1")["pin_bytes"].as_u64().unwrap();
    assert!(pin_bytes > 0 && pin_bytes < bytes, "{pin_bytes}");
    assert!(f.fleet(&["plan"]).stdout.contains("(nixpkgs source "));
    f.fleet(&["apply"]).expect_code(0);
    let np = "/etc/nixos/current-configuration/nixpkgs";
    assert_eq!(
        f.sh(
            "web1",
            &format!("ls -A {np} | grep -c -e '^.git$' -e '^result$' -e untracked || true")
        ),
        "0"
    );
    assert!(f
        .sh("web1", &format!("ls {np}/nixos"))
        .contains("default.nix"));
    // The version label: the checkout's commit, as nixos-version reports it.
    let rev = String::from_utf8(
        std::process::Command::new("git")
            .args(["-C", pin.to_str().unwrap(), "rev-parse", "HEAD"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let version = f.sh("web1", "cat /run/current-system/nixos-version");
    assert!(
        version.ends_with(&format!(".git.{}", &rev.trim()[..7])),
        "{version}"
    );

    // Another deploy of a changed configuration copies the system, not the pin again.
    f.set_config("web1", &config("web1", &["htop", "jq"]));
    let plan = f.fleet(&["plan", "--json"]);
    let paths: Vec<String> = host(&plan.json(), "web1")["copy"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert!(!paths.iter().any(|p| p.ends_with("-source")), "{paths:?}");
    assert!(host(&plan.json(), "web1")["pin_bytes"].is_null());
}

/// The evaluation cache (docs/evaluation.md): a host whose inputs did not change is not
/// evaluated again; a changed file, `--no-eval-cache` or a collected `.drv` evaluate it again;
/// and the cached answer is the evaluated one. (Progress, and so the cache's line, is on stderr
/// without `--json`.)
#[test]
fn unchanged_hosts_reuse_their_evaluation_until_an_input_changes() {
    let f = Fleet::start([HostSpec::new("web1"), HostSpec::new("web2")]);
    // Plans with and without --json: the hosts the cache answered, and the plan.
    let plan = |extra: &[&str]| -> (String, serde_json::Value) {
        let mut args = vec!["plan"];
        args.extend_from_slice(extra);
        let text = f.fleet(&args);
        text.expect_code(0);
        assert!(
            text.stderr.contains("fleet: reading the state"),
            "{}",
            text.stderr
        );
        let cached = text
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("fleet: unchanged since their last evaluation: "))
            .unwrap_or("")
            .to_owned();
        let json = f.fleet(&["plan", "--json"]);
        json.expect_code(0);
        (cached, json.json())
    };
    let target = |plan: &serde_json::Value, h: &str| host(plan, h)["target"].clone();

    let (cached, first) = plan(&[]);
    assert_eq!(cached, "");
    let (cached, again) = plan(&[]);
    assert_eq!(cached, "web1, web2");
    for h in ["web1", "web2"] {
        assert_eq!(target(&first, h), target(&again, h));
    }

    // A changed file of web2: web2 is evaluated again, web1 still comes from the cache.
    f.set_config("web2", &config("web2", &["htop", "git"]));
    let (cached, changed) = plan(&[]);
    assert_eq!(cached, "web1");
    assert_ne!(target(&first, "web2"), target(&changed, "web2"));

    // --no-eval-cache evaluates everything.
    let (cached, _) = plan(&["--no-eval-cache"]);
    assert_eq!(cached, "");

    // A cached `.drv` the deployer's GC deleted is never used.
    let package = host(&changed, "web1")["package"]
        .as_str()
        .unwrap()
        .to_owned();
    let sh = |cmd: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (_, deriver, _) = sh(&format!("nix-store --query --deriver {package}"));
    assert!(deriver.ends_with(".drv"), "{deriver}");
    std::fs::remove_file(f.dir.join(".fleet/gcroots/web1")).unwrap();
    let (deleted, _, err) = sh(&format!("nix-store --delete {package} {deriver}"));
    assert!(deleted, "{err}");
    let (valid, _, _) = sh(&format!("nix-store --check-validity {deriver}"));
    assert!(!valid, "{deriver} was deleted");
    let (cached, after_gc) = plan(&[]);
    assert_eq!(cached, "web2");
    assert_eq!(target(&changed, "web1"), target(&after_gc, "web1"));
}

/// Bounded evaluation (docs/evaluation.md): an evaluation process that grows past
/// `--eval-max-memory` is stopped and its hosts are evaluated in smaller groups; a host that
/// alone needs more fails alone, with the remedy; the others are planned as usual.
#[test]
fn an_evaluation_over_its_memory_limit_is_split_and_only_the_host_too_big_fails() {
    let f = Fleet::start([
        HostSpec::new("small1"),
        HostSpec::new("small2"),
        HostSpec::new("fat"),
        HostSpec::new("small3"),
    ]);
    for h in ["small1", "small2", "small3"] {
        f.set_config(h, &config_with(h, "fleet.evalMemoryMB = 20;"));
    }
    f.set_config("fat", &config_with("fat", "fleet.evalMemoryMB = 200;"));
    let run = f.fleet(&["plan", "--no-eval-cache", "--eval-max-memory", "150M"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("in smaller groups"),
        "the batch of four is split: {}",
        run.stderr
    );
    let plan = f.fleet(&["plan", "--json", "--eval-max-memory", "150M"]);
    let json = plan.json();
    for h in ["small1", "small2", "small3"] {
        assert_eq!(host(&json, h)["action"], "install", "{h}: {}", plan.stdout);
    }
    let error = host(&json, "fat")["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("evaluating this host alone took more than 150 MiB")
            && error.contains("--eval-max-memory"),
        "{error}"
    );
    // With room enough, everything evaluates (from the cache for the small ones).
    let roomy = f.fleet(&["plan", "--json", "--eval-max-memory", "1G"]);
    roomy.expect_code(0);
    assert_eq!(host(&roomy.json(), "fat")["action"], "install");
}
