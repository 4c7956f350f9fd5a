#!/bin/sh
# Activate the NixOS system of this deployment package (made by fleet), without evaluating or
# building anything on this machine:
#   sudo ./switch [switch|boot|test|dry-activate]     (default: switch)
set -eu
toplevel='@toplevel@'
goal="${1:-switch}"
case "$goal" in
  switch | boot | test | dry-activate) ;;
  *)
    echo "usage: $0 [switch|boot|test|dry-activate]" >&2
    exit 1
    ;;
esac
if [ ! -f "$toplevel/nixos-version" ] || [ ! -x "$toplevel/bin/switch-to-configuration" ]; then
  echo "error: $toplevel is not a NixOS system (no nixos-version or bin/switch-to-configuration)" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "error: run as root (sudo $0 $goal)" >&2
  exit 1
fi
if [ "$goal" = switch ] || [ "$goal" = boot ]; then
  nix-env -p /nix/var/nix/profiles/system --set "$toplevel"
fi
if [ -d /run/systemd/system ]; then
  # Like nixos-rebuild: survives the loss of this terminal or SSH connection.
  exec systemd-run -E LOCALE_ARCHIVE -E NIXOS_INSTALL_BOOTLOADER=0 --collect --no-ask-password \
    --pipe --quiet --service-type=exec --unit=nixos-rebuild-switch-to-configuration --wait \
    "$toplevel/bin/switch-to-configuration" "$goal"
fi
exec env NIXOS_INSTALL_BOOTLOADER=0 "$toplevel/bin/switch-to-configuration" "$goal"
