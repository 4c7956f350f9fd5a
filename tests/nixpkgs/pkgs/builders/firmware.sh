# hardware.firmware: lib/firmware with the files of every firmware package (like buildEnv).
set -eu
mkdir -p "$out/lib/firmware"
for p in $paths; do
  if [ -d "$p/lib/firmware" ]; then
    cp -R "$p/lib/firmware/." "$out/lib/firmware/"
  fi
  printf '%s\n' "$p" >> "$out/lib/firmware/.fleet-firmware-packages"
done
touch "$out/lib/firmware/.fleet-firmware-packages"
