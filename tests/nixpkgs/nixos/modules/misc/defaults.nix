# The stand-in's option defaults (mkOptionDefault, like option declarations) and the
# definitions NixOS's own modules make (kernel.nix's loglevel, nixpkgs.nix's platform defaults,
# all-firmware.nix, device-tree.nix). See ../../../README.md for every option.
{ config, lib, pkgs, ... }:
let
  d = lib.mkOptionDefault;
  cfg = config.nixpkgs;
in
{
  networking.hostName = d "nixos";

  boot.kernelVersion = d "6.6.30";
  boot.consoleLogLevel = d 4;
  boot.kernelParams = [ "loglevel=${toString config.boot.consoleLogLevel}" ];

  environment.systemPackages = d [ ];
  environment.etc = d { };
  systemd.services = d { };
  specialisation = d { };
  users.users = d { };

  hardware.deviceTree.enable = d (config.nixpkgs.hostPlatform.linux-kernel.DTB or false);
  hardware.deviceTree.overlays = d [ ];
  hardware.enableRedistributableFirmware = d false;
  hardware.firmware = lib.mkMerge [
    (d [ ])
    (lib.mkIf config.hardware.enableRedistributableFirmware [ pkgs.linux-firmware ])
  ];

  system.nixos.release = d lib.trivial.release;
  system.nixos.versionSuffix = d lib.trivial.versionSuffix;
  system.nixos.version = d (config.system.nixos.release + config.system.nixos.versionSuffix);
  system.nixos.revision = d (lib.trivial.revisionWithDefault null);
  system.nixos.label = d config.system.nixos.version;
  system.initInterfaceVersion = d "systemd";
  system.copySystemConfiguration = d false;

  nixpkgs.localSystem = d { inherit (cfg) system; };
  nixpkgs.crossSystem = d null;
  nixpkgs.hostPlatform = d (if cfg.crossSystem != null then cfg.crossSystem else cfg.localSystem);
  nixpkgs.buildPlatform = d (if cfg.crossSystem != null then cfg.localSystem else cfg.hostPlatform);
  nixpkgs.config = d { };
  nixpkgs.overlays = d [ ];

  fleet.packageVersions = d { };
  fleet.activationFails = d false;
  fleet.failingUnits = d [ ];
  fleet.preSwitchCheckFails = d false;
  fleet.bootBreaksSshd = d false;
  fleet.network = d "up";
  fleet.systemd = d false;
  fleet.bench = d null;
  fleet.evalMemoryMB = d 0;
}
