//! The nixpkgs stand-in (`tests/nixpkgs`) keeps NixOS's contract: switch-to-configuration's lock,
//! pre-switch checks and exit codes (1, 4, 100), the toplevel's contents, the module system's
//! priorities and errors, platforms, copySystemConfiguration, modulesPath, specialisations.
//! Systems are built on the deployer, copied into simulated hosts and activated there.

mod common;

use std::fs;
use std::time::Instant;

use common::*;
use fleet_testbed::{nixpkgs_standin, HostSpec, Testbed};

const BASE: &str = "networking.hostName = \"standin\";";

fn config(extra: &str) -> String {
    format!("{{ pkgs, lib, ... }}: {{ {BASE} {extra} }}")
}

fn stderr(o: &std::process::Output) -> String {
    text(&o.stderr)
}

#[test]
fn switch_to_configuration_keeps_the_nixos_contract() {
    let started = Instant::now();
    let a = build_system(&config(""), "x86_64-linux");
    let b = build_system(
        &config(
            "fleet.failingUnits = [ \"foo.service\" ]; systemd.services.web = { script = \"serve\"; };",
        ),
        "x86_64-linux",
    );
    let c = build_system(
        &config("system.initInterfaceVersion = \"systemd-next\"; boot.kernelVersion = \"6.6.31\";"),
        "x86_64-linux",
    );
    let d = build_system(&config("fleet.preSwitchCheckFails = true;"), "x86_64-linux");
    let tb = Testbed::start([HostSpec::new("h")]).expect("starting");
    for s in [&a, &b, &c, &d] {
        copy(&tb, "h", s);
    }
    let boot_state = |tb: &Testbed| {
        sh(
            tb,
            "h",
            "cat /boot/loader/loader.conf; ls /boot/loader/entries",
        )
    };

    set_profile(&tb, "h", &a);
    let o = switch(&tb, "h", "", &a, "switch");
    check("switch to a", &o);
    assert!(
        stderr(&o).contains(
            "the following new units were started: sshd.service, systemd-journald.service"
        ),
        "{}",
        stderr(&o)
    );
    assert_eq!(readlink(&tb, "h", "/run/current-system"), a);
    assert_eq!(readlink(&tb, "h", "/run/booted-system"), a);
    let boot_a = boot_state(&tb);

    // Another switch holds the lock: exit 1 at once, nothing changed.
    let o = tb
        .exec(
            "h",
            &format!("flock /run/nixos/switch-to-configuration.lock {b}/bin/switch-to-configuration switch"),
        )
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Could not acquire lock"),
        "{}",
        stderr(&o)
    );
    assert_eq!(readlink(&tb, "h", "/run/current-system"), a);
    assert_eq!(boot_state(&tb), boot_a);

    // Pre-switch checks fail: exit 1, nothing changed; NIXOS_NO_CHECK=1 skips them.
    for action in ["switch", "test", "dry-activate", "check"] {
        let o = switch(&tb, "h", "", &d, action);
        assert_eq!(o.status.code(), Some(1), "{action}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("Pre-switch checks failed"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(readlink(&tb, "h", "/run/current-system"), a);
    assert_eq!(boot_state(&tb), boot_a);
    check(
        "check with NIXOS_NO_CHECK",
        &switch(&tb, "h", "NIXOS_NO_CHECK=1", &d, "check"),
    );

    // dry-activate says what would happen and changes nothing.
    let o = switch(&tb, "h", "", &b, "dry-activate");
    check("dry-activate b", &o);
    assert!(
        stderr(&o).contains("would start the following units: foo.service, web.service"),
        "{}",
        stderr(&o)
    );
    assert_eq!(readlink(&tb, "h", "/run/current-system"), a);
    assert_eq!(boot_state(&tb), boot_a);

    // Failing units: exit 4, and the new system is active.
    let o = switch(&tb, "h", "", &b, "test");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("warning: the following units failed: foo.service"),
        "{e}"
    );
    assert!(
        e.contains("the following new units were started: web.service"),
        "{e}"
    );
    assert_eq!(readlink(&tb, "h", "/run/current-system"), b);
    // Back to a: the units of b stop.
    let o = switch(&tb, "h", "", &a, "test");
    check("test a", &o);
    assert!(
        stderr(&o).contains("stopping the following units: foo.service, web.service"),
        "{}",
        stderr(&o)
    );

    // A new init interface: the boot entry is installed (a full install with
    // NIXOS_INSTALL_BOOTLOADER=1), exit 100, the current system stays.
    set_profile(&tb, "h", &c);
    let o = switch(&tb, "h", "NIXOS_INSTALL_BOOTLOADER=1", &c, "switch");
    assert_eq!(o.status.code(), Some(100), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("won't take effect until you reboot the system"),
        "{}",
        stderr(&o)
    );
    assert_eq!(readlink(&tb, "h", "/run/current-system"), a);
    assert!(boot_state(&tb).contains("default nixos-generation-2.conf"));
    assert!(
        sh(&tb, "h", "cat /boot/loader/entries/nixos-generation-2.conf")
            .contains(&format!("toplevel {c}"))
    );
    assert_eq!(sh(&tb, "h", "cat /boot/loader/installs"), "1");
    assert_eq!(readlink(&tb, "h", "/boot/loader/default-system"), c);
    // Without the variable the entries are only updated; `boot` succeeds.
    check("boot c", &switch(&tb, "h", "", &c, "boot"));
    assert_eq!(sh(&tb, "h", "cat /boot/loader/installs"), "1");
    let o = switch(&tb, "h", "", &c, "dry-activate");
    assert_eq!(o.status.code(), Some(100), "{}", stderr(&o));

    // Every run is logged.
    let log = sh(&tb, "h", "cat /run/fleet-standin/activations.log");
    for line in [
        format!("switch {a} exit=0"),
        format!("switch {b} exit=1"),
        format!("test {b} exit=4"),
        format!("switch {c} exit=100"),
        format!("boot {c} exit=0"),
    ] {
        assert!(log.contains(&line), "{line} not in\n{log}");
    }
    tb.teardown().unwrap();
    eprintln!(
        "switch-to-configuration contract: {:.2?}",
        started.elapsed()
    );
}

#[test]
fn toplevel_has_kernel_params_device_trees_firmware_and_specialisations() {
    let started = Instant::now();
    let read = |p: String| fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let link = |p: String| fs::canonicalize(&p).unwrap_or_else(|e| panic!("{p}: {e}"));

    let x86 = build_system(&config(""), "x86_64-linux");
    assert_eq!(read(format!("{x86}/kernel-params")), "loglevel=4");
    assert_eq!(read(format!("{x86}/init-interface-version")), "systemd");
    assert_eq!(read(format!("{x86}/system")), "x86_64-linux");
    assert_eq!(read(format!("{x86}/nixos-version")), "24.05.20261124.fleet");
    assert!(
        !std::path::Path::new(&format!("{x86}/dtbs")).exists(),
        "dtbs on x86"
    );
    for f in [
        "kernel",
        "initrd",
        "kernel-modules",
        "firmware",
        "init",
        "bin/switch-to-configuration",
        "sw/bin/bootctl",
    ] {
        assert!(
            std::path::Path::new(&format!("{x86}/{f}")).exists(),
            "{f} missing"
        );
    }

    let pi = build_system(&config(""), "aarch64-linux");
    let dtbs = link(format!("{pi}/dtbs"));
    assert!(dtbs.starts_with("/nix/store"), "{dtbs:?}");
    assert!(dtbs.join("broadcom/bcm2711-rpi-4-b.dtb").is_file());
    assert_eq!(read(format!("{pi}/system")), "aarch64-linux");
    assert!(link(format!("{pi}/kernel")).ends_with("Image"));

    let changed = build_system(
        &config(
            "boot.kernelParams = [ \"quiet\" ]; hardware.deviceTree.overlays = [ \"vc4-kms\" ]; \
             hardware.firmware = [ \"wifi\" pkgs.linux-firmware ]; \
             environment.etc.\"motd of the day\".text = \"${pkgs.htop}\"; \
             environment.etc.gone = { text = \"x\"; enable = false; };",
        ),
        "aarch64-linux",
    );
    assert_eq!(read(format!("{changed}/kernel-params")), "loglevel=4 quiet");
    assert!(read(format!("{changed}/etc/motd of the day")).ends_with("-htop-3.3.0"));
    assert!(!std::path::Path::new(&format!("{changed}/etc/gone")).exists());
    let dtbs2 = link(format!("{changed}/dtbs"));
    assert_ne!(dtbs, dtbs2);
    assert!(read(format!("{}/overlays", dtbs2.display())).contains("vc4-kms"));
    assert_ne!(
        link(format!("{pi}/firmware")),
        link(format!("{changed}/firmware"))
    );
    assert!(link(format!("{changed}/firmware/wifi/wifi.bin")).is_file());
    assert!(link(format!(
        "{changed}/firmware/linux-firmware/linux-firmware.bin"
    ))
    .is_file());
    assert_eq!(
        fs::read_dir(link(format!("{pi}/firmware")))
            .unwrap()
            .count(),
        1,
        "default firmware is empty (only the package list)"
    );
    // Device trees off.
    let off = build_system(
        &config("hardware.deviceTree.enable = false;"),
        "aarch64-linux",
    );
    assert!(!std::path::Path::new(&format!("{off}/dtbs")).exists());

    // Specialisations: the base plus a module, linked under specialisation/.
    let with = build_system(
        &config(
            "boot.kernelParams = [ \"base\" ]; \
             specialisation.quiet.configuration = { boot.kernelParams = [ \"quiet\" ]; }; \
             specialisation.alone = { inheritParentConfig = false; configuration = { }; };",
        ),
        "x86_64-linux",
    );
    let spec = link(format!("{with}/specialisation/quiet"));
    assert_eq!(
        read(format!("{}/kernel-params", spec.display())),
        "loglevel=4 base quiet"
    );
    assert_eq!(read(format!("{with}/kernel-params")), "loglevel=4 base");
    let alone = link(format!("{with}/specialisation/alone"));
    assert_eq!(
        read(format!("{}/kernel-params", alone.display())),
        "loglevel=4"
    );
    assert!(!spec.join("specialisation").exists());
    eprintln!("toplevel contents: {:.2?}", started.elapsed());
}

#[test]
fn specialisation_switch_makes_it_the_current_system() {
    let started = Instant::now();
    let base = build_system(
        &config("specialisation.big.configuration = { boot.kernelParams = [ \"big\" ]; };"),
        "x86_64-linux",
    );
    let tb = Testbed::start([HostSpec::new("s")]).expect("starting");
    copy(&tb, "s", &base);
    set_profile(&tb, "s", &base);
    check("switch base", &switch(&tb, "s", "", &base, "switch"));
    let spec = sh(&tb, "s", &format!("readlink -f {base}/specialisation/big"));
    assert_ne!(spec, base);
    check(
        "test big",
        &switch(&tb, "s", "", &format!("{base}/specialisation/big"), "test"),
    );
    assert_eq!(readlink(&tb, "s", "/run/current-system"), spec);
    assert_eq!(
        sh(&tb, "s", "cat /run/current-system/kernel-params"),
        "loglevel=4 big"
    );
    // The boot default is still the base system.
    assert_eq!(readlink(&tb, "s", "/boot/loader/default-system"), base);
    tb.teardown().unwrap();
    eprintln!("specialisation switch: {:.2?}", started.elapsed());
}

#[test]
fn evaluation_platforms_priorities_modules_and_copied_configuration() {
    let started = Instant::now();
    let nixpkgs = nixpkgs_standin();
    let eval_ok = |expr: &str, extra: &[&str]| {
        check(&format!("eval {expr}"), &nix_eval(expr, extra))
            .trim()
            .to_owned()
    };
    let eval_err = |expr: &str, extra: &[&str]| {
        let o = nix_eval(expr, extra);
        assert!(!o.status.success(), "{expr} evaluated: {}", text(&o.stdout));
        text(&o.stderr)
    };
    let sys = |configuration: &str, system: &str| system_expr(&nixpkgs, configuration, system);

    // hostPlatform as an attrset (lib.systems.examples), over the `system` argument.
    let e = sys(
        "{ lib, ... }: { nixpkgs.hostPlatform = lib.systems.examples.raspberryPi; }",
        "x86_64-linux",
    );
    assert_eq!(
        eval_ok(
            &format!("let s = {e}; in [ s.config.nixpkgs.hostPlatform.system s.config.nixpkgs.buildPlatform.system s.config.nixpkgs.system ]"),
            &[]
        ),
        "[ \"armv6l-linux\" \"armv6l-linux\" \"x86_64-linux\" ]"
    );
    // A string; a cross build (buildPlatform differs).
    let e = sys(
        "{ nixpkgs.hostPlatform = \"aarch64-linux\"; nixpkgs.buildPlatform = \"x86_64-linux\"; }",
        "x86_64-linux",
    );
    assert_eq!(
        eval_ok(
            &format!("let s = {e}; in [ s.config.nixpkgs.hostPlatform.system s.config.nixpkgs.buildPlatform.system s.system.system ]"),
            &[]
        ),
        "[ \"aarch64-linux\" \"x86_64-linux\" \"x86_64-linux\" ]"
    );
    // Two different definitions at the same priority: NixOS's error; mkForce / mkDefault decide.
    let conflicting = "{ imports = [ { nixpkgs.hostPlatform = \"aarch64-linux\"; } ]; nixpkgs.hostPlatform = \"x86_64-linux\"; }";
    let err = eval_err(
        &format!(
            "{}.config.nixpkgs.hostPlatform.system",
            sys(conflicting, "x86_64-linux")
        ),
        &[],
    );
    assert!(
        err.contains("The option `nixpkgs.hostPlatform' has conflicting definition values"),
        "{err}"
    );
    for (how, want) in [
        ("lib.mkForce", "x86_64-linux"),
        ("lib.mkDefault", "aarch64-linux"),
    ] {
        let c = format!("{{ lib, ... }}: {{ imports = [ {{ nixpkgs.hostPlatform = \"aarch64-linux\"; }} ]; nixpkgs.hostPlatform = {how} \"x86_64-linux\"; }}");
        assert_eq!(
            eval_ok(
                &format!(
                    "{}.config.nixpkgs.hostPlatform.system",
                    sys(&c, "x86_64-linux")
                ),
                &[]
            ),
            format!("\"{want}\"")
        );
    }
    // mkIf, mkOverride on lists.
    let c = "{ lib, config, ... }: { boot.kernelParams = lib.mkIf (config.networking.hostName == \"x\") [ \"a\" ]; \
             networking.hostName = \"x\"; environment.etc.gone = lib.mkIf false { text = \"\"; }; }";
    assert_eq!(
        eval_ok(
            &format!("let s = {}; in [ s.config.boot.kernelParams (builtins.attrNames s.config.environment.etc) ]", sys(c, "x86_64-linux")),
            &[]
        ),
        "[ [ \"loglevel=4\" \"a\" ] [ ] ]"
    );

    // Real module files, through modulesPath and through <nixpkgs/...>.
    let np = format!("nixpkgs={}", nixpkgs.display());
    let c = "{ modulesPath, ... }: { imports = [ \"${modulesPath}/installer/scan/not-detected.nix\" (modulesPath + \"/profiles/minimal.nix\") <nixpkgs/nixos/modules/installer/sd-card/sd-image-aarch64.nix> ]; }";
    let out = eval_ok(
        &format!("let s = {}; in [ s.config.boot.kernelParams s.config.hardware.enableRedistributableFirmware ]", sys(c, "aarch64-linux")),
        &["-I", &np],
    );
    assert_eq!(
        out,
        "[ [ \"loglevel=7\" \"console=ttyS0,115200n8\" \"console=ttyAMA0,115200n8\" \"console=tty0\" ] true ]"
    );

    // copySystemConfiguration: a copy of <nixos-config> in the toplevel, or Nix's own error.
    let dir = std::env::temp_dir().join(format!("fleet-standin-test-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("configuration.nix");
    fs::write(
        &file,
        "{ system.copySystemConfiguration = true; networking.hostName = \"copied\"; }\n",
    )
    .unwrap();
    let expr = format!(
        "{}.system",
        sys(&file.display().to_string(), "x86_64-linux")
    );
    let o = nix_build(&expr, &["-I", &format!("nixos-config={}", file.display())]);
    let top = check("build with copySystemConfiguration", &o)
        .trim()
        .to_owned();
    assert_eq!(
        fs::read_to_string(format!("{top}/configuration.nix")).unwrap(),
        fs::read_to_string(&file).unwrap()
    );
    assert!(fs::read_link(format!("{top}/configuration.nix"))
        .unwrap()
        .starts_with("/nix/store"));
    let o = nix_build(&expr, &[]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("file 'nixos-config' was not found in the Nix search path"),
        "{}",
        text(&o.stderr)
    );

    // system.nixos.versionSuffix / revision; .version-suffix and .git-revision in the source.
    let c = "{ system.nixos.versionSuffix = \".20240101.abcdef0\"; system.nixos.revision = \"abcdef0123\"; }";
    let top = build_system(c, "x86_64-linux");
    assert_eq!(
        fs::read_to_string(format!("{top}/nixos-version")).unwrap(),
        "24.05.20240101.abcdef0"
    );
    assert!(
        top.ends_with("-nixos-system-nixos-24.05.20240101.abcdef0"),
        "{top}"
    );
    let o = std::process::Command::new(format!("{top}/sw/bin/nixos-version"))
        .arg("--revision")
        .output()
        .unwrap();
    assert_eq!(check("nixos-version --revision", &o).trim(), "abcdef0123");
    let copy = dir.join("nixpkgs");
    let o = std::process::Command::new("cp")
        .arg("-R")
        .arg(&nixpkgs)
        .arg(&copy)
        .output()
        .unwrap();
    check("cp", &o);
    fs::write(copy.join(".version-suffix"), ".20250505.1234567\n").unwrap();
    fs::write(copy.join(".git-revision"), "1234567890\n").unwrap();
    let e = system_expr(&copy, "{ }", "x86_64-linux");
    assert_eq!(
        eval_ok(
            &format!(
                "let s = {e}; in [ s.config.system.nixos.version s.config.system.nixos.revision ]"
            ),
            &[]
        ),
        "[ \"24.05.20250505.1234567\" \"1234567890\" ]"
    );
    fs::remove_dir_all(&dir).unwrap();
    eprintln!("evaluation: {:.2?}", started.elapsed());
}
