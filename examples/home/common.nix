# Shared by every host of the example home fleet.
{ ... }:
{
  services.openssh.enable = true;
  time.timeZone = "Europe/Berlin";
  system.stateVersion = "25.05";
}
