# Evaluates a list of modules ({ module; file; }) into a NixOS-like system: the configuration's
# modules plus the stand-in's own (modules/misc/defaults.nix), then the toplevel (build.nix).
# Specialisations are the same modules plus one more, evaluated again.
# `systemDefault`: the modules that stand for nixos/default.nix's `system` argument.
{ modules, isSpecialisation ? false, systemDefault ? [ ], specialArgs ? { } }:
let
  lib = import ../../lib;

  base = [
    { module = ../modules/misc/defaults.nix; file = toString ../modules/misc/defaults.nix; }
    { module = { config, ... }: { system.build = builtins.deepSeq heavy build; }; file = toString ./eval-config.nix; }
  ];

  eval = lib.evalModules {
    modules = base ++ modules;
    inherit specialArgs;
    extraArgs = { inherit pkgs; modulesPath = toString ../modules; };
  };
  inherit (eval) config;

  hostPlatform = config.nixpkgs.hostPlatform;
  buildPlatform = config.nixpkgs.buildPlatform;

  pkgs = import ../../pkgs {
    system = buildPlatform.system;
    crossSystem = if buildPlatform.system != hostPlatform.system then hostPlatform.system else null;
    versions = config.fleet.packageVersions;
    inherit hostPlatform buildPlatform;
  };

  specialisations =
    if isSpecialisation then { }
    else
      builtins.mapAttrs
        (name: s:
          (import ./eval-config.nix {
            # inheritParentConfig = false: only the specialisation's module (and the `system`
            # argument's default), as nixpkgs does.
            modules = (if s.inheritParentConfig or true then modules else systemDefault)
              ++ [ { module = s.configuration or { }; file = "specialisation.${name}.configuration"; } ];
            isSpecialisation = true;
            inherit systemDefault specialArgs;
          }).config.system.build.toplevel)
        config.specialisation;

  # fleet.evalMemoryMB: a real NixOS evaluation holds 1–4 GB, and nix-instantiate keeps much of
  # it until it exits. Model it: a list of about that many MB, built from a file of this host's
  # own (imports are cached for the life of the process, so it stays allocated), forced whenever
  # the system is.
  heavy =
    if config.fleet.evalMemoryMB == 0 then null
    else import (builtins.toFile "fleet-eval-memory-${config.networking.hostName}.nix"
      "builtins.genList (i: \"${config.networking.hostName}-\" + toString i) ${toString (config.fleet.evalMemoryMB * 5200)}");

  build = import ./build.nix { inherit config pkgs lib specialisations; };
in
{
  inherit config pkgs;
  inherit (eval) options;
  system = config.system.build.toplevel;
}
