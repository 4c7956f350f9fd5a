# The system toplevel, laid out like NixOS's.
set -eu
mkdir -p "$out/bin"
ln -s "$kernel/$kernelImage" "$out/kernel"
ln -s "$initrd/initrd" "$out/initrd"
ln -s "$modules" "$out/kernel-modules"
ln -s "$etc/etc" "$out/etc"
ln -s "$systemPath" "$out/sw"
ln -s "$firmware/lib/firmware" "$out/firmware"
[ -z "$dtbs" ] || ln -s "$dtbs" "$out/dtbs"
[ -z "$configurationNix" ] || ln -s "$configurationNix" "$out/configuration.nix"
printf '%s' "$nixosVersion" > "$out/nixos-version"
printf '%s' "$hostPlatform" > "$out/system"
printf '%s' "$kernelParams" > "$out/kernel-params"
printf '%s' "$initInterfaceVersion" > "$out/init-interface-version"
# fleet.bootBreaksSshd: the testbed's simulated reboot starts no sshd when it boots this system.
[ -z "$bootBreaksSshd" ] || printf 'sshd does not start when this system boots\n' > "$out/fleet-standin-boot-breaks-sshd"
if [ -n "$specialisationNames" ]; then
  mkdir -p "$out/specialisation"
  set -- $specialisationPaths
  for name in $specialisationNames; do
    ln -s "$1" "$out/specialisation/$name"
    shift
  done
fi
{
  echo '#!/bin/sh'
  echo "# stage 2 init of $out (the stand-in never boots it)"
  echo "exec $out/bin/switch-to-configuration boot"
} > "$out/init"
chmod +x "$out/init"
sed -e "s|@toplevel@|$out|g" \
    -e "s|@nixosVersion@|$nixosVersion|g" \
    -e "s|@kernelVersion@|$kernelVersion|g" \
    -e "s|@activationFails@|$activationFails|g" \
    -e "s|@failingUnits@|$failingUnits|g" \
    -e "s|@preSwitchCheckFails@|$preSwitchCheckFails|g" \
    -e "s|@network@|$network|g" \
    -e "s|@systemd@|$systemd|g" \
    "$switchTemplate" > "$out/bin/switch-to-configuration"
chmod +x "$out/bin/switch-to-configuration"
