set -eu
mkdir -p "$out/lib/modules/$version/kernel"
printf 'kernel %s\n' "$kernel" > "$out/lib/modules/$version/modules.dep"
