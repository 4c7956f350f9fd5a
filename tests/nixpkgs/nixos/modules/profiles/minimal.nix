# This module defines a small NixOS configuration. It does not contain any graphical stuff.
# (The stand-in has no documentation or X11 to leave out; the definitions are kept so
# configurations that read them evaluate.)
{ lib, ... }:
{
  documentation.enable = lib.mkDefault false;
  documentation.man.enable = lib.mkDefault false;
  documentation.nixos.enable = lib.mkDefault false;
  environment.defaultPackages = lib.mkDefault [ ];
  xdg.mime.enable = lib.mkDefault false;
  xdg.sounds.enable = lib.mkDefault false;
}
