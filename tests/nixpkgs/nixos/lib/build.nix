# The system of an evaluated configuration: etc, system-path, firmware, device trees and the
# toplevel, laid out like NixOS's (see ../../README.md).
{ config, pkgs, lib, specialisations }:
let
  hostPlatform = config.nixpkgs.hostPlatform;
  buildPlatform = config.nixpkgs.buildPlatform;

  k = pkgs.mkKernel config.boot.kernelVersion;

  benchPaths = if config.fleet.bench == null then [ ] else pkgs.benchBlobs config.fleet.bench;

  packages = pkgs.corePackages ++ config.environment.systemPackages ++ benchPaths;

  common = {
    system = buildPlatform.system;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
  } // (if pkgs.isCross then { crossSystem = hostPlatform.system; } else { });

  nixos = config.system.nixos;
  revision = if nixos.revision == null then "" else nixos.revision;

  systemPath = derivation (common // {
    name = "system-path";
    paths = packages;
    bootctl = ../../pkgs/builders/bootctl.sh;
    nixosVersion = nixos.version;
    nixosRevision = revision;
    args = [ ../../pkgs/builders/system-path.sh ];
  } // (if config.fleet.systemd then {
    # fleet.systemd: systemd-run and systemctl (the stand-in's, see README.md).
    systemdStandin = ../../pkgs/systemd;
  } else { }));

  activationFails =
    if config.fleet.activationFails == true then "units"
    else if config.fleet.activationFails == false then "no"
    else config.fleet.activationFails;
  failingUnits = config.fleet.failingUnits
    ++ lib.optional (activationFails == "units") "fleet-standin-failing.service";

  # Units: what `switch-to-configuration` starts, restarts (their file changed) or stops.
  unitText = name: s:
    if builtins.isString s then s
    else "[Service]\n" + lib.concatMapStrings
      (n: let v = s.${n}; in
        if builtins.isString v || builtins.isInt v || builtins.isBool v || builtins.isPath v || lib.isDerivation v
        then "X-${n}=${if builtins.isBool v then (if v then "true" else "false") else toString v}\n"
        else "X-${n}=${builtins.hashString "sha256" (builtins.toJSON v)}\n")
      (builtins.attrNames s);
  units = {
    "sshd.service" = "[Service]\nExecStart=${pkgs.openssh}/bin/openssh -D\n";
    "systemd-journald.service" = "[Service]\nExecStart=${pkgs.systemd}/bin/systemd journald\n";
  }
  // lib.genAttrs failingUnits (n: "[Service]\nExecStart=/bin/false\n# fails on every start\n")
  // builtins.listToAttrs (map
    (n: { name = "${n}.service"; value = unitText n config.systemd.services.${n}; })
    (builtins.attrNames config.systemd.services));

  etcEntries = { hostname.text = config.networking.hostName + "\n"; }
    // {
      "os-release".text = "NAME=NixOS\nID=nixos\nVERSION_ID=\"${nixos.release}\"\nBUILD_ID=\"${nixos.version}\"\n";
    }
    // lib.mapAttrs' (n: text: { name = "systemd/system/${n}"; value = { inherit text; }; }) units
    # users.users: the names activation creates (see switch-to-configuration.sh).
    // lib.mapAttrs' (n: _: { name = "fleet-standin/users/${n}"; value = { text = n + "\n"; }; }) config.users.users
    // lib.filterAttrs (_: e: e.enable or true) config.environment.etc;
  etcNames = builtins.attrNames etcEntries;
  # `text`, or the contents of `source` (a file).
  etcText = e: if e ? text then e.text else builtins.readFile e.source;
  etcVars = builtins.genList (i: "etc_${toString i}") (builtins.length etcNames);

  etc = derivation (common // {
    name = "etc";
    count = builtins.length etcNames;
    passAsFile = etcVars;
    args = [ ../../pkgs/builders/etc.sh ];
  } // builtins.listToAttrs (builtins.genList
    (i: { name = "etc_${toString i}"; value = etcText etcEntries.${builtins.elemAt etcNames i}; })
    (builtins.length etcNames))
  // builtins.listToAttrs (builtins.genList
    (i: { name = "etcname_${toString i}"; value = builtins.elemAt etcNames i; })
    (builtins.length etcNames)));

  # hardware.firmware: packages, or names of stand-in firmware packages.
  firmware = derivation (common // {
    name = "firmware";
    paths = map (f: if builtins.isString f then pkgs.mkFirmware f else f) config.hardware.firmware;
    args = [ ../../pkgs/builders/firmware.sh ];
  });

  overlayNames = map (o: if builtins.isString o then o else o.name) config.hardware.deviceTree.overlays;
  dtbs =
    if !config.hardware.deviceTree.enable then null
    else if overlayNames == [ ] then "${k.kernel}/dtbs"
    else "${derivation (common // {
      name = "device-tree-overlays";
      dtbs = "${k.kernel}/dtbs";
      overlays = overlayNames;
      args = [ ../../pkgs/builders/dtb-overlays.sh ];
    })}";

  # system.copySystemConfiguration, as nixpkgs' top-level.nix: NIXOS_CONFIG or <nixos-config>.
  configurationNix =
    let fromEnv = builtins.getEnv "NIXOS_CONFIG"; in
    if !config.system.copySystemConfiguration then ""
    else if fromEnv != "" then fromEnv
    else "${<nixos-config>}";

  toplevel = derivation (common // {
    name = "nixos-system-${lib.sanitizeName config.networking.hostName}-${nixos.label}";
    inherit (k) kernel initrd modules;
    kernelImage = k.kernel.image;
    kernelVersion = config.boot.kernelVersion;
    kernelParams = lib.concatStringsSep " " config.boot.kernelParams;
    inherit etc systemPath activationFails firmware configurationNix;
    dtbs = if dtbs == null then "" else dtbs;
    nixosVersion = nixos.version;
    hostPlatform = hostPlatform.system;
    initInterfaceVersion = config.system.initInterfaceVersion;
    failingUnits = lib.concatStringsSep " " failingUnits;
    preSwitchCheckFails = if config.fleet.preSwitchCheckFails then "1" else "";
    bootBreaksSshd = if config.fleet.bootBreaksSshd then "1" else "";
    specialisationNames = builtins.attrNames specialisations;
    specialisationPaths = builtins.attrValues specialisations;
    network = config.fleet.network;
    systemd = if config.fleet.systemd then "1" else "";
    switchTemplate = ../switch-to-configuration.sh;
    args = [ ../../pkgs/builders/toplevel.sh ];
  });
in
{
  inherit toplevel etc firmware systemPath;
}
