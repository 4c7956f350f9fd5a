# buildEnv-like: bin/ links to every package's programs, and a list of the packages. Also
# bin/bootctl (systemd's, reduced to what the stand-in needs) and bin/nixos-version.
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
cp "$bootctl" "$out/bin/bootctl"
chmod +x "$out/bin/bootctl"
{
  echo '#!/bin/sh'
  echo 'case "${1-}" in'
  echo "  --revision) [ -n '$nixosRevision' ] || { echo 'nixos-version: no revision' >&2; exit 1; }; echo '$nixosRevision' ;;"
  echo "  --json) printf '{\"nixosVersion\": \"%s\", \"nixpkgsRevision\": \"%s\"}\\n' '$nixosVersion' '$nixosRevision' ;;"
  echo "  *) echo '$nixosVersion' ;;"
  echo 'esac'
} > "$out/bin/nixos-version"
chmod +x "$out/bin/nixos-version"
# systemctl, reduced to `is-active` for hosts without systemd: a unit is active when the current
# system has its file and switch-to-configuration did not record it as failed; else "failed"
# (exit 3) or "inactive" (exit 3), as systemctl says.
cat > "$out/bin/systemctl" <<'EOF'
#!/bin/sh
[ "${1-}" = is-active ] || { echo "systemctl (fleet stand-in): only is-active is supported" >&2; exit 1; }
shift
[ "${1-}" = -- ] && shift
rc=0
for u in "$@"; do
  if grep -qxF -- "$u" /run/fleet-standin/failed-units 2>/dev/null; then echo failed; rc=3
  elif [ -e "/run/current-system/etc/systemd/system/$u" ]; then echo active
  else echo inactive; rc=3; fi
done
exit $rc
EOF
chmod +x "$out/bin/systemctl"
