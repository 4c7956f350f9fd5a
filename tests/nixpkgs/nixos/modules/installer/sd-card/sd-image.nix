# Stand-in for nixpkgs' sd-image.nix: the options an SD image configuration sets. No image is
# built (sdImage.* are accepted and ignored).
{ lib, ... }:
{
  boot.loader.grub.enable = lib.mkDefault false;
  sdImage.compressImage = lib.mkDefault true;
}
