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
# fleet.systemd: systemd-run, systemctl and the units' manager (pkgs/systemd), which source lib.sh.
if [ -n "${systemdStandin-}" ]; then
  mkdir -p "$out/lib/systemd"
  sd_sed() {
    sed -e "s|@lib@|$out/lib/systemd/fleet-standin-lib.sh|g" \
        -e "s|@manager@|$out/lib/systemd/fleet-standin-manager|g" "$systemdStandin/$1" > "$2"
    chmod +x "$2"
  }
  sd_sed lib.sh "$out/lib/systemd/fleet-standin-lib.sh"
  sd_sed fleet-standin-manager.sh "$out/lib/systemd/fleet-standin-manager"
  sd_sed systemd-run.sh "$out/bin/systemd-run"
  sd_sed systemctl.sh "$out/bin/systemctl"
fi
{
  echo '#!/bin/sh'
  echo 'case "${1-}" in'
  echo "  --revision) [ -n '$nixosRevision' ] || { echo 'nixos-version: no revision' >&2; exit 1; }; echo '$nixosRevision' ;;"
  echo "  --json) printf '{\"nixosVersion\": \"%s\", \"nixpkgsRevision\": \"%s\"}\\n' '$nixosVersion' '$nixosRevision' ;;"
  echo "  *) echo '$nixosVersion' ;;"
  echo 'esac'
} > "$out/bin/nixos-version"
chmod +x "$out/bin/nixos-version"
# Without fleet.systemd: systemctl, reduced to `is-active` (fleet's health checks) and `reboot`.
# is-active: a unit is active when the current system has its file and switch-to-configuration did
# not record it as failed; else "failed" (exit 3) or "inactive" (exit 3), as systemctl says.
# reboot (also bin/reboot): simulated hosts share /bin with the machine, so this never runs the
# machine's reboot: it leaves a request in /boot that the testbed turns into a simulated reboot.
if [ -z "${systemdStandin-}" ]; then
cat > "$out/bin/systemctl" <<'EOF'
#!/bin/sh
verb=${1-}
[ $# -gt 0 ] && shift
[ "${1-}" = -- ] && shift
case "$verb" in
  is-active)
    rc=0
    for u in "$@"; do
      if grep -qxF -- "$u" /run/fleet-standin/failed-units 2>/dev/null; then echo failed; rc=3
      elif [ -e "/run/current-system/etc/systemd/system/$u" ]; then echo active
      else echo inactive; rc=3; fi
    done
    exit $rc ;;
  reboot)
    date +%s > /boot/fleet-standin-reboot-request || exit 1
    exit 0 ;;
  *) echo "systemctl (fleet stand-in): only is-active and reboot are supported" >&2; exit 1 ;;
esac
EOF
chmod +x "$out/bin/systemctl"
printf '#!/bin/sh\nexec "%s/bin/systemctl" reboot\n' "$out" > "$out/bin/reboot"
chmod +x "$out/bin/reboot"
fi
