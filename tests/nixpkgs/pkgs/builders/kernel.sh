set -eu
mkdir -p "$out"
printf 'fake Linux kernel %s for %s\n' "$version" "$hostPlatform" > "$out/$image"
printf '%s\n' "$version" > "$out/version"
