# buildEnv-like: bin/ links to every package's programs, and a list of the packages.
set -eu
mkdir -p "$out/bin" "$out/share"
: > "$out/share/fleet-packages"
for p in $paths; do
  printf '%s\n' "$p" >> "$out/share/fleet-packages"
  if [ -d "$p/bin" ]; then
    for f in "$p"/bin/*; do
      [ -e "$f" ] || continue
      ln -sfn "$f" "$out/bin/$(basename "$f")"
    done
  fi
done
