# Stand-in for `<nixpkgs/nixos>`: `import ./nixos { configuration; system; }`.
# Returns { config; pkgs; system; } with config.system.build.toplevel (see ../README.md).
{ configuration
, system ? builtins.currentSystem
}:
let
  lib = import ../lib;

  # A module is a path (to a file holding a function or an attrset), a function
  # `{ config, pkgs, lib, ... }: { ... }` or an attrset. `imports` are followed recursively.
  load = m: if builtins.isPath m || builtins.isString m then import m else m;
  call = m:
    let
      f = load m;
    in
    if builtins.isFunction f then f { inherit config pkgs lib; modulesPath = ./.; } else f;
  collect = m:
    let
      r = call m;
    in
    [ (builtins.removeAttrs r [ "imports" ]) ] ++ builtins.concatLists (map collect (r.imports or [ ]));

  defaults = {
    networking.hostName = "nixos";
    boot.kernelVersion = "6.6.30";
    environment.systemPackages = [ ];
    environment.etc = { };
    system.nixos.release = "24.05";
    fleet.packageVersions = { };
    fleet.activationFails = false;
    fleet.network = "up";
    fleet.bench = null;
    nixpkgs = { };
  };

  config = lib.mergeAll ([ defaults ] ++ collect configuration);
  # What modules see as `config` is the merge above; the result adds system.build.

  hostPlatform = config.nixpkgs.hostPlatform or system;
  buildPlatform = config.nixpkgs.buildPlatform or hostPlatform;

  pkgs = import ../pkgs {
    system = buildPlatform;
    crossSystem = if buildPlatform != hostPlatform then hostPlatform else null;
    versions = config.fleet.packageVersions;
  };

  k = pkgs.mkKernel config.boot.kernelVersion;

  benchPaths = if config.fleet.bench == null then [ ] else pkgs.benchBlobs config.fleet.bench;

  packages = pkgs.corePackages ++ config.environment.systemPackages ++ benchPaths;

  common = {
    system = buildPlatform;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
  } // (if pkgs.isCross then { crossSystem = hostPlatform; } else { });

  systemPath = derivation (common // {
    name = "system-path";
    paths = packages;
    args = [ ../pkgs/builders/system-path.sh ];
  });

  etcEntries = { hostname.text = config.networking.hostName + "\n"; }
    // { "os-release".text = "NAME=NixOS\nID=nixos\nVERSION_ID=\"${config.system.nixos.release}\"\n"; }
    // config.environment.etc;
  etcScript = lib.concatMapStrings
    (name:
      let
        file = builtins.toFile "etc-file" etcEntries.${name}.text;
      in
      "install_etc ${lib.escapeShellArg name} ${file}\n")
    (builtins.attrNames etcEntries);

  etc = derivation (common // {
    name = "etc";
    inherit etcScript;
    args = [ ../pkgs/builders/etc.sh ];
  });

  activationFails =
    if config.fleet.activationFails == true then "units"
    else if config.fleet.activationFails == false then "no"
    else config.fleet.activationFails;

  nixosVersion = "${config.system.nixos.release}.20261124.fleet";

  toplevel = derivation (common // {
    name = "nixos-system-${lib.sanitizeName config.networking.hostName}-${nixosVersion}";
    inherit (k) kernel initrd modules;
    kernelImage = k.kernel.image;
    kernelVersion = config.boot.kernelVersion;
    inherit etc systemPath nixosVersion activationFails hostPlatform;
    network = config.fleet.network;
    switchTemplate = ./switch-to-configuration.sh;
    args = [ ../pkgs/builders/toplevel.sh ];
  });
in
{
  inherit pkgs;
  system = toplevel;
  config = config // { system = config.system // { build = { inherit toplevel etc; }; }; };
}
