# systemd-run and systemctl of the nixpkgs stand-in (`fleet.systemd = true`): transient units as
# systemd 255 runs them, for the options fleet and nixos-rebuild use. Installed in the system's
# sw/ as bin/systemd-run, bin/systemctl and lib/systemd/fleet-standin-manager (which runs the
# units: systemd's PID 1 and executor), each sourcing this file (lib/systemd/fleet-standin-lib.sh).
#
# What is modelled (see tests/nixpkgs/README.md): a unit is "loaded" while
# /run/systemd/fleet-standin/units/<name> exists (its unit file in /run/systemd/transient/<name>).
# A service runs in its own session and process group, detached from the caller, with a clean
# environment (PATH, INVOCATION_ID, SYSTEMD_EXEC_PID and -E variables), cwd /, stdin /dev/null,
# stdout/stderr to the stand-in's journal (/run/systemd/fleet-standin/journal) unless --pipe or
# StandardOutput=/StandardError= say otherwise, and no other file descriptor of the caller.
# A successful service is unloaded when it ends; a failed one stays `failed` (its name taken)
# unless --collect. A timer (--on-active=) starts its service later and is unloaded once that
# ended (systemd-run sets RemainAfterElapse=no). `systemctl stop` kills the unit's process group
# (SIGTERM, SIGKILL after TimeoutStopSec) and fails with exit 5 for units not loaded.
# Not modelled: cgroups (a process that leaves its process group escapes stop), $VAR expansion in
# the command line, scopes, --user, --pty, other unit types, long-option abbreviations.
set -u

STATE=/run/systemd/fleet-standin
UNITS=$STATE/units
TRANSIENT=/run/systemd/transient
JOURNAL=$STATE/journal
DEFAULT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
MANAGER='@manager@'

err() { printf '%s\n' "$*" >&2; }

need_systemd() {
  if [ ! -d /run/systemd/system ]; then
    err "System has not been booted with systemd as init system (PID 1). Can't operate."
    err "Failed to connect to bus: Host is down"
    exit 1
  fi
  mkdir -p "$UNITS" "$TRANSIENT" "$STATE/invocations"
}

lock() { exec 9>>"$STATE/.lock" && flock 9; }
unlock() { exec 9>&-; }

# A timespan as systemd parses it (`10`, `10s`, `500ms`, `2min`, `1h 30s`) -> seconds (decimal).
timespan() {
  local s=${1// /} total=0 n u
  [ -n "$s" ] || return 1
  while [ -n "$s" ]; do
    [[ $s =~ ^([0-9]+(\.[0-9]+)?)([a-z]*)(.*)$ ]] || return 1
    n=${BASH_REMATCH[1]} u=${BASH_REMATCH[3]} s=${BASH_REMATCH[4]}
    case $u in
      '' | s | sec | second | seconds) ;;
      ms | msec) n=$(awk -v n="$n" 'BEGIN { print n / 1000 }') ;;
      us | usec) n=$(awk -v n="$n" 'BEGIN { print n / 1000000 }') ;;
      m | min | minute | minutes) n=$(awk -v n="$n" 'BEGIN { print n * 60 }') ;;
      h | hr | hour | hours) n=$(awk -v n="$n" 'BEGIN { print n * 3600 }') ;;
      d | day | days) n=$(awk -v n="$n" 'BEGIN { print n * 86400 }') ;;
      *) return 1 ;;
    esac
    total=$(awk -v a="$total" -v b="$n" 'BEGIN { print a + b }')
  done
  printf '%s\n' "$total"
}

UNIT_RE='^[A-Za-z0-9:_.@\-]+[.](service|timer)$'
valid_unit_name() { [[ $1 =~ $UNIT_RE ]] && [ ${#1} -le 255 ]; }

# `foo` -> `foo.service` (systemctl's and systemd-run's mangling, for the names fleet uses).
mangle() {
  case $1 in *.service | *.timer | *.socket | *.target | *.path | *.scope | *.slice | *.mount) printf '%s' "$1" ;; *) printf '%s.service' "$1" ;; esac
}

get() { cat "$UNITS/$1/$2" 2>/dev/null; }
# The stand-in's trace of what ran (for tests): <UTC time> <unit> <event> [details].
trace() { printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$*" >> "$STATE/units.log" 2>/dev/null; return 0; }
put() { printf '%s' "$3" > "$UNITS/$1/$2.tmp" && mv -f "$UNITS/$1/$2.tmp" "$UNITS/$1/$2"; }
loaded() { [ -d "$UNITS/$1" ]; }
unload() { rm -rf "${UNITS:?}/$1" "$TRANSIENT/$1"; }
invocation_id() { tr -d '-' < /proc/sys/kernel/random/uuid; }
