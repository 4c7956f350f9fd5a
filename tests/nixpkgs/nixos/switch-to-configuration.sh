#!/bin/sh
# switch-to-configuration of the fleet nixpkgs stand-in: what NixOS's (switch-to-configuration-ng)
# does, in its order, as seen from outside. Simulated hosts share /bin and /usr/bin with the
# deployer but have their own /nix, /run, /boot.
toplevel='@toplevel@'
nixos_version='@nixosVersion@'
kernel_version='@kernelVersion@'
activation_fails='@activationFails@'
failing_units='@failingUnits@'
pre_switch_check_fails='@preSwitchCheckFails@'
network='@network@'
systemd='@systemd@'
profile=/nix/var/nix/profiles/system
log_dir=/run/fleet-standin
action="${1-}"

usage() {
  cat >&2 <<USAGE
Usage: $0 [check|switch|boot|test|dry-activate]
check:        run pre-switch checks and exit
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

write_entry() { # <entry file> <generation> <toplevel> <init link>
  {
    echo "title NixOS"
    kdir="$(basename "$(dirname "$(readlink "$3/kernel")")")"
    echo "version Generation $2 NixOS $(cat "$3/nixos-version" 2>/dev/null), Linux Kernel ${kdir#*-linux-}"
    echo "linux $(readlink "$3/kernel")"
    echo "initrd $(readlink "$3/initrd")"
    echo "options init=$4/init $(cat "$3/kernel-params" 2>/dev/null)"
    if [ -L "$3/dtbs" ]; then echo "devicetree-dir $(readlink "$3/dtbs")"; fi
    echo "toplevel $3"
  } > "$1.tmp" && mv -T "$1.tmp" "$1"
}

install_bootloader() {
  if [ "${NIXOS_INSTALL_BOOTLOADER-}" = 1 ]; then
    # A full install (bootctl install): counted in /boot/loader/installs.
    echo "installing systemd-boot..."
    mkdir -p /boot/loader /boot/EFI/systemd || return 1
    n="$(cat /boot/loader/installs 2>/dev/null || echo 0)"
    echo "$((n + 1))" > /boot/loader/installs.tmp && mv -T /boot/loader/installs.tmp /boot/loader/installs || return 1
    printf 'fake systemd-boot\n' > /boot/EFI/systemd/systemd-bootx64.efi || return 1
  fi
  echo "updating systemd-boot entries..."
  mkdir -p /boot/loader/entries || return 1
  found=
  for link in "$profile"-*-link; do
    [ -L "$link" ] || continue
    gen="${link##*/system-}"
    gen="${gen%-link}"
    found=1
    write_entry "/boot/loader/entries/nixos-generation-$gen.conf" "$gen" "$(readlink -f "$link")" "$link" || return 1
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
    write_entry /boot/loader/entries/nixos-generation-0.conf 0 "$toplevel" "$toplevel" || return 1
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

# Units: the files in etc/systemd/system of the current and the new system. New ones are
# started, changed ones restarted, missing ones stopped. Sets $to_start, $to_restart, $to_stop
# (", "-separated).
join() { sed -e ':a' -e 'N' -e '$!ba' -e 's/\n/, /g'; }
diff_units() {
  new="$toplevel/etc/systemd/system"
  cur=/run/current-system/etc/systemd/system
  [ -e /run/current-system ] || cur=/nonexistent
  to_start="$(for u in $(ls -1 "$new" 2>/dev/null); do [ -e "$cur/$u" ] || echo "$u"; done | join)"
  to_restart="$(for u in $(ls -1 "$new" 2>/dev/null); do
    [ -e "$cur/$u" ] && ! cmp -s "$cur/$u" "$new/$u" && echo "$u"; done | join)"
  to_stop="$(for u in $(ls -1 "$cur" 2>/dev/null); do [ -e "$new/$u" ] || echo "$u"; done | join)"
}

case "$action" in
  switch | boot | test | dry-activate | check) ;;
  *) usage ;;
esac

if [ "$(id -u)" != 0 ] && [ -z "${FLEET_STANDIN_ALLOW_NON_ROOT-}" ]; then
  echo "switch-to-configuration: this program must be run as root" >&2
  exit 1
fi

# One switch at a time: an exclusive, non-blocking lock, held until this process exits.
mkdir -p /run/nixos && chmod 755 /run/nixos || { echo "Failed to create /run/nixos directory" >&2; finish 1; }
exec 9>>/run/nixos/switch-to-configuration.lock || { echo "Could not open lock" >&2; finish 1; }
flock -n 9 || { echo "Could not acquire lock" >&2; finish 1; }

if [ "${NIXOS_NO_CHECK-}" != 1 ] && [ -n "$pre_switch_check_fails" ]; then
  echo "Pre-switch checks failed" >&2
  finish 1
fi
[ "$action" = check ] && finish 0

if [ "$activation_fails" = early ] && [ "$action" != dry-activate ]; then
  echo "Activation script snippet 'fleet-standin' failed (1)" >&2
  echo "error: installing the configuration failed" >&2
  finish 1
fi

if [ "$action" = switch ] || [ "$action" = boot ]; then
  install_bootloader || { echo "Failed to install bootloader" >&2; finish 1; }
fi
[ "$action" = boot ] && finish 0

# A new init interface cannot be switched to at runtime (the first activation of a simulated host
# stands for its boot, so there is nothing to compare with then).
if [ -e /run/current-system ] &&
  [ "$(cat /run/current-system/init-interface-version 2>/dev/null)" != "$(cat "$toplevel/init-interface-version")" ]; then
  cat >&2 <<'WARNING'
Warning: the new NixOS configuration has an ‘init’ that is
incompatible with the current configuration.  The new configuration
won't take effect until you reboot the system.

WARNING
  finish 100
fi

current="$(readlink /run/current-system 2>/dev/null || echo none)"
booted="$(readlink /run/booted-system 2>/dev/null || echo none)"
diff_units

if [ "$action" = dry-activate ]; then
  [ -z "$to_stop" ] || echo "would stop the following units: $to_stop" >&2
  echo "would activate the configuration..." >&2
  [ -z "$to_restart" ] || echo "would restart the following units: $to_restart" >&2
  [ -z "$to_start" ] || echo "would start the following units: $to_start" >&2
  if [ "$current" = "$toplevel" ]; then
    echo "nothing would change: $toplevel is already the current system" >&2
  fi
  if [ "$booted" != none ] && [ "$(readlink "$booted/kernel")" != "$(readlink "$toplevel/kernel")" ]; then
    echo "would need a reboot to use Linux $kernel_version (the kernel differs from the booted one)" >&2
  fi
  finish 0
fi

# switch, test
[ -z "$to_stop" ] || echo "stopping the following units: $to_stop" >&2
echo "activating the configuration..." >&2
# The first activation of a simulated host stands for its boot.
if [ ! -e /run/booted-system ] && [ ! -L /run/booted-system ]; then
  atomic_link /run/booted-system "$toplevel" || finish 1
fi
# fleet.systemd: systemd runs (PID 1 made /run/systemd/system when it booted; the first
# activation of a simulated host stands for its boot).
if [ -n "$systemd" ]; then mkdir -p /run/systemd/system || finish 1; fi
# Like NixOS: the activation script sets /run/current-system before units are (re)started.
atomic_link /run/current-system "$toplevel" || finish 1
echo "setting up /etc..." >&2
set_network || finish 1
# users.users: like NixOS's update-users-groups.pl, activation creates the users the new system
# declares. Simulated hosts share the machine's /etc/passwd, so the user exists on every host
# from then on (tests use names unique to the run and remove them).
for u in "$toplevel"/etc/fleet-standin/users/*; do
  [ -e "$u" ] || continue
  n="$(basename "$u")"
  id -u "$n" >/dev/null 2>&1 ||
    PATH="$PATH:/usr/sbin:/sbin" useradd --system --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --user-group "$n" >/dev/null 2>&1 ||
    id -u "$n" >/dev/null 2>&1 || { echo "failed to create user $n" >&2; finish 1; }
done
[ -z "$to_restart" ] || echo "restarting the following units: $to_restart" >&2
[ -z "$to_start" ] || echo "starting the following units: $to_start" >&2
started="$(for u in $(echo "$to_start" | tr -d ,); do
  case " $failing_units " in *" $u "*) ;; *) echo "$u" ;; esac; done | join)"
[ -z "$started" ] || echo "the following new units were started: $started" >&2
# The units' state, for the stand-in's `systemctl is-active` (sw/bin/systemctl).
mkdir -p "$log_dir" && printf '%s\n' $failing_units > "$log_dir/failed-units"
if [ -n "$failing_units" ]; then
  echo "warning: the following units failed: $(printf '%s\n' $failing_units | sort | join)" >&2
  for u in $failing_units; do
    echo "× $u - a unit the configuration asked to fail" >&2
    echo "     Active: failed (Result: exit-code)" >&2
  done
  finish 4
fi
finish 0
