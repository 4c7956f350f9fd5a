set -eu
mkdir -p "$out"
printf 'fake initrd for Linux %s (modules %s)\n' "$version" "$modules" > "$out/initrd"
