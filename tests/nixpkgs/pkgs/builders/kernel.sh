set -eu
mkdir -p "$out"
printf 'fake Linux kernel %s for %s\n' "$version" "$hostPlatform" > "$out/$image"
printf '%s\n' "$version" > "$out/version"
# Device trees, as ARM kernels ship them.
if [ -n "$dtbs" ]; then
  mkdir -p "$out/dtbs/broadcom"
  for b in bcm2710-rpi-3-b bcm2711-rpi-4-b bcm2712-rpi-5-b; do
    printf 'fake device tree %s for Linux %s\n' "$b" "$version" > "$out/dtbs/broadcom/$b.dtb"
  done
fi
