# Package set of the stand-in. Every package is its own store path named
# `<pname>-<version>`, so closure diffs between configurations mean something.
{ system
, crossSystem ? null
, versions ? { }
, bench ? { }
  # A mass rebuild (a nixpkgs bump): every derivation gets this attribute, so every hash
  # changes while the bytes differ only where store paths are embedded.
, rebuild ? ""
  # Elaborated platforms (lib.systems.elaborate), when the caller has them.
, hostPlatform ? null
, buildPlatform ? null
}:
let
  lib = import ../lib;
  isCross = crossSystem != null && crossSystem != system;
  hostSystem = if isCross then crossSystem else system;
  hostElaborated = if hostPlatform != null then hostPlatform else lib.systems.elaborate hostSystem;
  buildElaborated = if buildPlatform != null then buildPlatform else lib.systems.elaborate system;

  # Attributes common to every derivation. A cross build runs on `system` (the build
  # platform) and records the host platform, which changes every derivation hash.
  common = {
    inherit system;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    hostPlatform = hostSystem;
  } // (if isCross then { crossSystem = crossSystem; } else { })
    // (if rebuild != "" then { fleetRebuild = rebuild; } else { });

  version = pname: default: versions.${pname} or default;

  mkPackage = { pname, defaultVersion, deps ? [ ] }:
    derivation (common // {
      name = "${pname}-${version pname defaultVersion}";
      inherit pname deps;
      version = version pname defaultVersion;
      args = [ ./builders/package.sh ];
    });

  kernelImage =
    if hostElaborated.isAarch64 then "Image"
    else if hostElaborated.isAarch32 then "zImage"
    else "bzImage";

  # A firmware package (hardware.firmware = [ "name" ] makes one of these).
  mkFirmware = pname: derivation (common // {
    name = "${pname}-firmware-${version "${pname}-firmware" "1"}";
    inherit pname;
    version = version "${pname}-firmware" "1";
    args = [ ./builders/fw-package.sh ];
  });

  mkKernel = kernelVersion: rec {
    kernel = derivation (common // {
      name = "linux-${kernelVersion}";
      version = kernelVersion;
      image = kernelImage;
      dtbs = if hostElaborated.linux-kernel.DTB or false then "1" else "";
      args = [ ./builders/kernel.sh ];
    });
    modules = derivation (common // {
      name = "linux-${kernelVersion}-modules";
      version = kernelVersion;
      inherit kernel;
      args = [ ./builders/modules.sh ];
    });
    initrd = derivation (common // {
      name = "initrd-linux-${kernelVersion}";
      version = kernelVersion;
      inherit modules;
      args = [ ./builders/initrd.sh ];
    });
  };

  # `paths` blobs made of real shared libraries of the deployer (totalMB in all).
  # `offset` shifts the libraries each blob starts at (new contents under the same names).
  # Built with genList (not recursion): see NOTES.md.
  benchBlobs = { paths ? 200, totalMB ? 150, seed ? "0", libDir ? "/usr/lib/x86_64-linux-gnu", offset ? 0 }:
    builtins.genList
      (i: derivation (common // {
        name = "bench-blob-${toString i}-${toString seed}";
        index = i;
        inherit seed libDir;
        bytes = (totalMB * 1024 * 1024) / paths;
        args = [ ./builders/blob.sh ];
      } // (if offset != 0 then { inherit offset; } else { })))
      paths;

  pkgs = rec {
    inherit lib system isCross mkPackage mkKernel mkFirmware benchBlobs;
    hostPlatform = hostElaborated;
    buildPlatform = buildElaborated;
    stdenv = { hostPlatform = hostElaborated; buildPlatform = buildElaborated; };
    path = ../.;

    bash = mkPackage { pname = "bash"; defaultVersion = "5.2.26"; };
    coreutils = mkPackage { pname = "coreutils"; defaultVersion = "9.5"; };
    gzip = mkPackage { pname = "gzip"; defaultVersion = "1.13"; };
    xz = mkPackage { pname = "xz"; defaultVersion = "5.4.6"; };
    zstd = mkPackage { pname = "zstd"; defaultVersion = "1.5.6"; };
    systemd = mkPackage { pname = "systemd"; defaultVersion = "255.4"; deps = [ bash ]; };
    openssl = mkPackage { pname = "openssl"; defaultVersion = "3.0.13"; };
    openssh = mkPackage { pname = "openssh"; defaultVersion = "9.7p1"; deps = [ openssl ]; };
    curl = mkPackage { pname = "curl"; defaultVersion = "8.7.1"; deps = [ openssl ]; };
    git = mkPackage { pname = "git"; defaultVersion = "2.44.0"; deps = [ curl openssl ]; };
    htop = mkPackage { pname = "htop"; defaultVersion = "3.3.0"; };
    nano = mkPackage { pname = "nano"; defaultVersion = "7.2"; };
    vim = mkPackage { pname = "vim"; defaultVersion = "9.1.0083"; };
    tmux = mkPackage { pname = "tmux"; defaultVersion = "3.4"; };
    jq = mkPackage { pname = "jq"; defaultVersion = "1.7.1"; };
    ripgrep = mkPackage { pname = "ripgrep"; defaultVersion = "14.1.0"; };
    linux-firmware = derivation (common // {
      name = "linux-firmware-${version "linux-firmware" "20240312"}";
      pname = "linux-firmware";
      version = version "linux-firmware" "20240312";
      args = [ ./builders/fw-package.sh ];
    });
    raspberrypiWirelessFirmware = mkFirmware "raspberrypi-wireless";

    # What every system gets (like environment.corePackages in NixOS).
    corePackages = [ bash coreutils gzip xz zstd systemd openssh ];
  };
in
pkgs
