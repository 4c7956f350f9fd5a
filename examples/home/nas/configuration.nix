# nas: the x86_64 file server. fleet logs in as `admin` and uses sudo with a password.
{ ... }:
{
  imports = [ ../common.nix ];
  networking.hostName = "nas";
  boot.loader.systemd-boot.enable = true;
  fileSystems."/" = { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };
  fileSystems."/srv" = { device = "/dev/disk/by-label/data"; fsType = "ext4"; };
  users.users.admin = { isNormalUser = true; extraGroups = [ "wheel" ]; };
  services.nfs.server.enable = true;
}
