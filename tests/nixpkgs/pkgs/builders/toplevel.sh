# The system toplevel, laid out like NixOS's.
set -eu
mkdir -p "$out/bin"
ln -s "$kernel/$kernelImage" "$out/kernel"
ln -s "$initrd/initrd" "$out/initrd"
ln -s "$modules" "$out/kernel-modules"
ln -s "$etc/etc" "$out/etc"
ln -s "$systemPath" "$out/sw"
printf '%s' "$nixosVersion" > "$out/nixos-version"
printf '%s' "$hostPlatform" > "$out/system"
printf 'loglevel=4' > "$out/kernel-params"
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
    -e "s|@network@|$network|g" \
    "$switchTemplate" > "$out/bin/switch-to-configuration"
chmod +x "$out/bin/switch-to-configuration"
