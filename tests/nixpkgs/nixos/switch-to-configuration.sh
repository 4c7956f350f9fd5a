#!/bin/sh
# switch-to-configuration of the fleet nixpkgs stand-in: what NixOS's does, as seen from outside.
# Simulated hosts share /bin and /usr/bin with the deployer but have their own /nix, /run, /boot.
toplevel='@toplevel@'
nixos_version='@nixosVersion@'
kernel_version='@kernelVersion@'
activation_fails='@activationFails@'
network='@network@'
profile=/nix/var/nix/profiles/system
log_dir=/run/fleet-standin
action="${1-}"

usage() {
  cat >&2 <<USAGE
Usage: $0 [switch|boot|test|dry-activate]

switch:       make the configuration the boot default and activate now
boot:         make the configuration the boot default
test:         activate the configuration, but don't make it the boot default
dry-activate: show what would be done if this configuration were activated
USAGE
  exit 1
}

log() {
  mkdir -p "$log_dir" 2>/dev/null &&
    printf '%s %s %s exit=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$action" "$toplevel" "$1" \
      >> "$log_dir/activations.log" 2>/dev/null
  return 0
}

finish() {
  log "$1"
  exit "$1"
}

# Point $1 at $2 atomically (a new link, then rename over the old one).
atomic_link() {
  tmp="$1.fleet-tmp.$$"
  ln -sfn "$2" "$tmp" && mv -T "$tmp" "$1"
}

install_bootloader() {
  echo "updating systemd-boot entries..."
  mkdir -p /boot/loader/entries || return 1
  found=
  for link in "$profile"-*-link; do
    [ -L "$link" ] || continue
    gen="${link##*/system-}"
    gen="${gen%-link}"
    target="$(readlink -f "$link")"
    found=1
    entry="/boot/loader/entries/nixos-generation-$gen.conf"
    {
      echo "title NixOS"
      kdir="$(basename "$(dirname "$(readlink "$target/kernel")")")"
      echo "version Generation $gen NixOS $(cat "$target/nixos-version" 2>/dev/null), Linux Kernel ${kdir#*-linux-}"
      echo "linux $(readlink "$target/kernel")"
      echo "initrd $(readlink "$target/initrd")"
      echo "options init=$link/init $(cat "$target/kernel-params" 2>/dev/null)"
      echo "toplevel $target"
    } > "$entry.tmp" && mv -T "$entry.tmp" "$entry" || return 1
  done
  # Entries of generations that were deleted go away, as with the real installers.
  for entry in /boot/loader/entries/nixos-generation-*.conf; do
    [ -e "$entry" ] || continue
    gen="${entry##*/nixos-generation-}"
    gen="${gen%.conf}"
    [ -L "$profile-$gen-link" ] || rm -f "$entry"
  done
  if [ -L "$profile" ]; then
    current="$(readlink "$profile")"
    gen="${current##*system-}"
    gen="${gen%-link}"
    default_system="$(readlink -f "$profile")"
  else
    # No system profile (switch-to-configuration run by hand): boot this configuration.
    echo "warning: $profile does not exist; the boot entry points at $toplevel" >&2
    gen=0
    default_system="$toplevel"
    entry=/boot/loader/entries/nixos-generation-0.conf
    {
      echo "title NixOS"
      echo "version Generation 0 NixOS $nixos_version, Linux Kernel $kernel_version"
      echo "linux $(readlink "$toplevel/kernel")"
      echo "initrd $(readlink "$toplevel/initrd")"
      echo "options init=$toplevel/init $(cat "$toplevel/kernel-params" 2>/dev/null)"
      echo "toplevel $toplevel"
    } > "$entry.tmp" && mv -T "$entry.tmp" "$entry" || return 1
  fi
  [ -n "$found" ] || [ "$gen" = 0 ] || return 1
  printf 'timeout 5\ndefault nixos-generation-%s.conf\n' "$gen" > /boot/loader/loader.conf.tmp &&
    mv -T /boot/loader/loader.conf.tmp /boot/loader/loader.conf &&
    atomic_link /boot/loader/default-system "$default_system"
}

# `fleet.network = "down"` stands for a configuration that breaks the host's network: activating it
# takes every link but lo down (the host's own network namespace), and activating a configuration
# with the network up again brings back exactly the links it took down.
set_network() {
  marker="$log_dir/links-down"
  if [ "$network" = down ]; then
    mkdir -p "$log_dir" || return 1
    for l in $(ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'); do
      [ "$l" = lo ] && continue
      echo "$l" >> "$marker"
      echo "taking network link $l down"
      ip link set dev "$l" down || return 1
    done
  elif [ -s "$marker" ]; then
    while read -r l; do
      echo "bringing network link $l up"
      ip link set dev "$l" up || return 1
    done < "$marker"
    rm -f "$marker"
  fi
  return 0
}

case "$action" in
  switch | boot | test | dry-activate) ;;
  *) usage ;;
esac

if [ "$(id -u)" != 0 ] && [ -z "${FLEET_STANDIN_ALLOW_NON_ROOT-}" ]; then
  echo "switch-to-configuration: this program must be run as root" >&2
  exit 1
fi

current="$(readlink /run/current-system 2>/dev/null || echo none)"
booted="$(readlink /run/booted-system 2>/dev/null || echo none)"

if [ "$action" = dry-activate ]; then
  echo "would activate the configuration..."
  if [ "$current" = "$toplevel" ]; then
    echo "nothing would change: $toplevel is already the current system"
  else
    echo "would switch /run/current-system from $current to $toplevel"
    echo "would restart the following units: fleet-standin.service"
  fi
  if [ "$booted" != none ] && [ "$(readlink "$booted/kernel")" != "$(readlink "$toplevel/kernel")" ]; then
    echo "would need a reboot to use Linux $kernel_version (the kernel differs from the booted one)"
  fi
  finish 0
fi

if [ "$activation_fails" = early ]; then
  echo "Activation script snippet 'fleet-standin' failed (1)" >&2
  echo "error: installing the configuration failed" >&2
  finish 1
fi

if [ "$action" = switch ] || [ "$action" = boot ]; then
  install_bootloader || { echo "error: failed to install the boot loader" >&2; finish 1; }
fi

if [ "$action" = switch ] || [ "$action" = test ]; then
  echo "activating the configuration..."
  mkdir -p /run || finish 1
  # The first activation of a simulated host stands for its boot.
  if [ ! -e /run/booted-system ] && [ ! -L /run/booted-system ]; then
    atomic_link /run/booted-system "$toplevel" || finish 1
  fi
  # Like NixOS: the activation script sets /run/current-system before units are (re)started.
  atomic_link /run/current-system "$toplevel" || finish 1
  echo "setting up /etc..."
  if [ "$activation_fails" = units ]; then
    echo "warning: the following units failed: fleet-standin-failing.service" >&2
    echo "× fleet-standin-failing.service - a unit the configuration asked to fail" >&2
    finish 4
  fi
  echo "the following new units were started: fleet-standin.service"
  set_network || finish 1
fi

finish 0
