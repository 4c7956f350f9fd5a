# hardware.deviceTree.overlays: the kernel's device trees with the overlays "applied".
set -eu
mkdir -p "$out"
cp -R "$dtbs/." "$out/"
chmod -R u+w "$out"
for f in $(cd "$out" && find . -name '*.dtb'); do
  for o in $overlays; do
    printf 'overlay %s\n' "$o" >> "$out/$f"
  done
done
printf '%s\n' $overlays > "$out/overlays"
