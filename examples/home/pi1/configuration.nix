# pi1: a Raspberry Pi 4 running Home Assistant's helpers. Deployed by `fleet apply --on pi1`.
{ ... }:
{
  imports = [ ../common.nix ];
  networking.hostName = "pi1";
  boot.loader.grub.enable = false;
  boot.loader.generic-extlinux-compatible.enable = true;
  fileSystems."/" = { device = "/dev/disk/by-label/NIXOS_SD"; fsType = "ext4"; };
}
