#!/bin/bash
# systemd-run and systemctl of the nixpkgs stand-in (`fleet.systemd = true`): transient units as
# systemd 255 runs them, for the options fleet and nixos-rebuild use. Installed as
# sw/bin/systemd-run, sw/bin/systemctl and sw/lib/systemd/fleet-standin-manager (which runs the
# units: systemd's PID 1 and executor); the name it is called by picks the program.
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
prog=${0##*/}

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

# ---------------------------------------------------------------------------------------------
# The manager: runs one unit, detached (started with setsid by systemd-run or by a timer).
# ---------------------------------------------------------------------------------------------

close_fds() {
  local fd
  for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
  done
  return 0
}

# Opens fd 1 or 2 as a unit's StandardOutput=/StandardError= says.
open_output() { # FD SPEC [SAME_AS_STDOUT]
  case $2 in
    inherit) ;;
    null) eval "exec $1>/dev/null" ;;
    journal | '') eval "exec $1>>\"\$JOURNAL\"" ;;
    file:*) eval "exec $1<>\"\${2#file:}\"" ;; # created, not truncated, written from the start
    append:*) eval "exec $1>>\"\${2#append:}\"" ;;
    truncate:*) eval "exec $1>\"\${2#truncate:}\"" ;;
  esac
}

run_service() { # NAME
  local name=$1 d=$UNITS/$1 pipe main rc result status waiter inv stopped
  pipe=$(get "$name" pipe)
  if [ "$pipe" != 1 ]; then
    exec </dev/null
    open_output 1 "$(get "$name" stdout)"
    if [ "$(get "$name" stderr)" = "$(get "$name" stdout)" ] && [ "$(get "$name" stderr)" != journal ]; then
      exec 2>&1 # the same file: one open file description, as systemd does
    else
      open_output 2 "$(get "$name" stderr)"
    fi
  fi
  inv=$(get "$name" invocation)
  local -a argv=() envv=()
  mapfile -d '' argv < "$d/argv"
  [ -s "$d/env" ] && mapfile -d '' envv < "$d/env"
  cd "$(get "$name" workdir || echo /)" 2>/dev/null || cd /
  umask 0022
  # Its own session and process group: `systemctl stop` kills the group.
  setsid env -i PATH="$DEFAULT_PATH" INVOCATION_ID="$inv" "${envv[@]}" \
    /bin/sh -c 'export SYSTEMD_EXEC_PID=$$; exec "$@"' sh "${argv[@]}" 0<&0 &
  main=$!
  trace "$name" started "${argv[@]}"
  put "$name" mainpid "$main"
  put "$name" active active
  put "$name" sub running
  wait "$main"
  rc=$?
  stopped=$(get "$name" stopping)
  if [ $rc -eq 0 ]; then
    result=success status=0
  elif [ -n "$stopped" ] && [ $rc -gt 128 ]; then
    # SIGTERM (or SIGKILL after the timeout) sent by `systemctl stop`: a clean stop.
    result=success status=$rc
    [ "$stopped" = killed ] && result=timeout
  elif [ $rc -gt 128 ]; then
    result=signal status=$((rc - 128))
  else
    result=exit-code status=$rc
  fi
  trace "$name" exited "result=$result" "status=$status"
  lock
  if [ -e "$d/wait" ]; then
    printf '%s %s %s\n' "$result" "$status" "$(($(date +%s%N) / 1000000 - $(get "$name" started)))" \
      > "$STATE/invocations/$inv.tmp" && mv -f "$STATE/invocations/$inv.tmp" "$STATE/invocations/$inv"
  fi
  if [ "$result" = success ] || [ "$(get "$name" collect)" = 1 ]; then
    unload "$name"
  else
    put "$name" result "$result"
    put "$name" status "$status"
    put "$name" active failed
    put "$name" sub failed
    put "$name" mainpid 0
    rm -f "$d/stopping"
  fi
  unlock
}

run_timer() { # NAME
  local name=$1 svc secs inv
  exec </dev/null >>"$JOURNAL" 2>&1
  svc=$(get "$name" service)
  secs=$(get "$name" onactive)
  put "$name" active active
  put "$name" sub waiting
  sleep "$secs"
  lock
  loaded "$name" || { unlock; exit 0; }
  trace "$name" elapsed
  put "$name" sub running
  if loaded "$svc" && [ "$(get "$svc" active)" != active ]; then
    inv=$(invocation_id)
    put "$svc" invocation "$inv"
    put "$svc" started "$(($(date +%s%N) / 1000000))"
    put "$svc" active activating
    unlock
    setsid "$MANAGER" service "$svc" </dev/null >/dev/null 2>&1 9>&- &
    # The timer stays (elapsed) until its service ended, then goes (RemainAfterElapse=no).
    while loaded "$svc" && [ "$(get "$svc" invocation)" = "$inv" ] &&
      [ "$(get "$svc" active)" != failed ]; do
      sleep 0.1
    done
    lock
  fi
  unload "$name"
  unlock
}

invocation_id() { tr -d '-' < /proc/sys/kernel/random/uuid; }

manager_main() {
  close_fds
  case ${1-} in
    service) run_service "$2" ;;
    timer) run_timer "$2" ;;
    *) err "fleet-standin-manager: internal program of the systemd stand-in"; exit 2 ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# systemd-run
# ---------------------------------------------------------------------------------------------

run_usage() {
  cat <<'EOF'
systemd-run [OPTIONS...] COMMAND [ARGUMENTS...]

Run the specified command in a transient scope or service (fleet's stand-in of systemd 255:
--unit= -p/--property= -E/--setenv= --description= --service-type= --working-directory= -d
--collect -G --wait -W --pipe -P --quiet -q --no-ask-password --no-block -r/--remain-after-exit
--on-active= --timer-property= --system).
EOF
}

not_modelled() { err "systemd-run: $1 is not modelled by the fleet stand-in"; exit 1; }

systemd_run_main() {
  local unit='' description='' service_type=simple workdir='' collect=0 wait=0 pipe=0 quiet=0
  local no_block=0 on_active='' remain=0 a v name secs hadval
  local -a envv=() props=() tprops=()
  while [ $# -gt 0 ]; do
    a=$1 hadval=0
    case $a in
      --) shift; break ;;
      --*=*) v=${a#*=}; a=${a%%=*}; hadval=1 ;;
      --unit | --property | --setenv | --description | --service-type | --working-directory | \
        --on-active | --timer-property | --uid | --gid | --nice | --slice | --on-calendar | \
        --on-boot | --on-startup | --on-unit-active | --on-unit-inactive | --path-property | \
        --socket-property | --host | --machine)
        [ $# -ge 2 ] || { err "systemd-run: option '$a' requires an argument"; exit 1; }
        v=$2; shift ;;
      -[upEHM])
        [ $# -ge 2 ] || { err "systemd-run: option requires an argument -- '${a#-}'"; exit 1; }
        v=$2; shift ;;
      -[upEHM]?*) v=${a:2}; a=${a:0:2} ;;
      -[a-zA-Z][a-zA-Z]*)
        # Bundled short flags (-qG): one at a time.
        set -- "${a:0:2}" "-${a:2}" "${@:2}"; continue ;;
      -*) ;;
      *) break ;;
    esac
    case $a in
      --unit | --property | --setenv | --description | --service-type | --working-directory | \
        --on-active | --timer-property | --uid | --gid | --nice | --slice | --on-calendar | \
        --on-boot | --on-startup | --on-unit-active | --on-unit-inactive | --path-property | \
        --socket-property | --host | --machine | -?) ;;
      *) [ $hadval = 0 ] || { err "systemd-run: option '$a' doesn't allow an argument"; exit 1; } ;;
    esac
    case $a in
      -h | --help) run_usage; exit 0 ;;
      --version) echo "systemd 255 (255.4) fleet-standin"; exit 0 ;;
      -u | --unit) unit=$v ;;
      -p | --property) props+=("$v") ;;
      -E | --setenv)
        if [[ $v == *=* ]]; then
          [[ ${v%%=*} =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { err "Cannot assign environment variable $v: Invalid argument"; exit 1; }
          envv+=("$v")
        else
          [[ $v =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { err "Cannot assign environment variable $v: Invalid argument"; exit 1; }
          # Not set here: the empty string (systemd's "passthrough").
          envv+=("$v=$(printenv "$v" || true)")
        fi ;;
      --description) description=$v ;;
      --service-type)
        case $v in
          simple | exec | oneshot | idle) service_type=$v ;;
          forking | dbus | notify | notify-reload) not_modelled "--service-type=$v" ;;
          *) err "Failed to start transient service unit: Invalid service type: $v"; exit 1 ;;
        esac ;;
      --working-directory) workdir=$v ;;
      -d | --same-dir) workdir=$PWD ;;
      -G | --collect) collect=1 ;;
      -W | --wait) wait=1 ;;
      -P | --pipe) pipe=1 ;;
      -q | --quiet) quiet=1 ;;
      --no-ask-password | --system) ;;
      --no-block) no_block=1 ;;
      -r | --remain-after-exit) remain=1 ;;
      --on-active)
        secs=$(timespan "$v") || { err "Failed to parse timer value: $v"; exit 1; }
        on_active=$secs ;;
      --timer-property) tprops+=("$v") ;;
      --user | --scope | -t | --pty | --uid | --gid | --nice | --slice | --on-calendar | \
        --on-boot | --on-startup | --on-unit-active | --on-unit-inactive | --path-property | \
        --socket-property | -H | --host | -M | --machine | -S | --shell | --send-sighup)
        not_modelled "${a}" ;;
      *)
        if [[ $a == --* ]]; then err "systemd-run: unrecognized option '$a'"; else err "systemd-run: invalid option -- '${a#-}'"; fi
        exit 1 ;;
    esac
    shift
  done
  [ $# -gt 0 ] || { err "Command line to execute required."; exit 1; }
  [ $remain = 1 ] && not_modelled "--remain-after-exit"
  [ $wait = 1 ] && [ -n "$on_active" ] && { err "--wait may not be combined with path, socket or timer units."; exit 1; }
  [ $no_block = 1 ] && [ $wait = 1 ] && { err "--wait may not be combined with --no-block."; exit 1; }
  [ $pipe = 1 ] && [ -n "$on_active" ] && { err "--pipe is not supported in timer mode."; exit 1; }

  # Properties: the ones fleet and nixos-rebuild use, checked like systemd checks them.
  local stdout=journal stderr=inherit_stdout p pn pv
  for p in "${props[@]}"; do
    [[ $p == *=* ]] || { err "Not an assignment: $p"; exit 1; }
    pn=${p%%=*} pv=${p#*=}
    case $pn in
      StandardOutput | StandardError)
        case $pv in
          journal | null | inherit | kmsg | journal+console | tty) ;;
          file:/* | append:/* | truncate:/*) ;;
          file:* | append:* | truncate:*) err "Failed to parse $pn= value '$pv': path is not absolute"; exit 1 ;;
          *) err "Failed to parse $pn= value '$pv'"; exit 1 ;;
        esac
        case $pv in kmsg | journal+console | tty) pv=journal ;; esac
        if [ "$pn" = StandardOutput ]; then stdout=$pv; else stderr=$pv; fi ;;
      Environment) envv+=("$pv") ;;
      WorkingDirectory) workdir=$pv ;;
      Description) description=$pv ;;
      CollectMode)
        case $pv in inactive) collect=0 ;; inactive-or-failed) collect=1 ;; *) err "Failed to parse CollectMode= value '$pv'"; exit 1 ;; esac ;;
      Type) service_type=$pv ;;
      TimeoutStopSec | KillMode | SendSIGHUP | RemainAfterExit | User | Group | Nice | Slice) ;;
      *) err "systemd-run: property $pn= is not modelled by the fleet stand-in (Unknown assignment?)"; exit 1 ;;
    esac
  done
  [ "$stderr" = inherit_stdout ] || [ "$stderr" != inherit ] || stderr=inherit_stdout
  [ "$stderr" = inherit_stdout ] && stderr=$stdout
  for p in "${tprops[@]}"; do
    [[ $p == *=* ]] || { err "Not an assignment: $p"; exit 1; }
    pn=${p%%=*} pv=${p#*=}
    case $pn in
      AccuracySec | RandomizedDelaySec | OnActiveSec)
        timespan "$pv" >/dev/null || { err "Failed to parse $pn=$pv: Invalid argument"; exit 1; }
        [ "$pn" = OnActiveSec ] && on_active=$(timespan "$pv") ;;
      Persistent | WakeSystem | RemainAfterElapse | FixedRandomDelay) ;;
      *) err "systemd-run: timer property $pn= is not modelled by the fleet stand-in (Unknown assignment?)"; exit 1 ;;
    esac
  done

  if [ "$(id -u)" != 0 ]; then
    err "Failed to start transient ${on_active:+timer}${on_active:-service} unit: Interactive authentication required."
    exit 1
  fi
  need_systemd

  # The command is looked up with the caller's PATH, as systemd-run does, to fail early.
  local -a argv=("$@")
  if [[ ${argv[0]} != /* ]]; then
    local exe
    exe=$(type -P -- "${argv[0]}" 2>/dev/null) && [[ $exe == /* ]] ||
      { err "Failed to find executable ${argv[0]}: No such file or directory"; exit 1; }
    argv[0]=$exe
  elif [ ! -x "${argv[0]}" ]; then
    err "Failed to find executable ${argv[0]}: No such file or directory"; exit 1
  fi

  local base svc timer=''
  if [ -n "$unit" ]; then
    base=${unit%.service}; base=${base%.timer}
  else
    base=run-u$((RANDOM * 32768 + RANDOM))
  fi
  svc=$(mangle "$base")
  [ -n "$on_active" ] && timer=$base.timer
  valid_unit_name "$svc" || { err "Failed to mangle unit name: Invalid argument"; exit 1; }

  lock
  for name in $timer $svc; do
    if loaded "$name"; then
      unlock
      err "Failed to start transient ${timer:+timer}${timer:-service} unit: Unit $name was already loaded or has a fragment file."
      exit 1
    fi
  done
  mkdir -p "$UNITS/$svc"
  printf '%s\0' "${argv[@]}" > "$UNITS/$svc/argv"
  if [ ${#envv[@]} -gt 0 ]; then printf '%s\0' "${envv[@]}" > "$UNITS/$svc/env"; else : > "$UNITS/$svc/env"; fi
  put "$svc" kind service
  put "$svc" type "$service_type"
  put "$svc" stdout "$stdout"
  put "$svc" stderr "$stderr"
  put "$svc" pipe "$pipe"
  put "$svc" collect "$collect"
  put "$svc" active inactive
  put "$svc" sub dead
  [ -n "$workdir" ] && put "$svc" workdir "$workdir"
  put "$svc" description "${description:-${argv[*]}}"
  {
    echo "# This is a transient unit file, created programmatically via the systemd API. Do not edit."
    echo "[Unit]"
    echo "Description=${description:-${argv[*]}}"
    [ $collect = 1 ] && echo "CollectMode=inactive-or-failed"
    echo "[Service]"
    echo "Type=$service_type"
    for p in "${envv[@]}"; do printf 'Environment="%s"\n' "$p"; done
    [ -n "$workdir" ] && echo "WorkingDirectory=$workdir"
    [ $pipe = 1 ] || { echo "StandardOutput=$stdout"; echo "StandardError=$stderr"; }
    printf 'ExecStart='; printf '"%s" ' "${argv[@]}"; echo
  } > "$TRANSIENT/$svc"
  if [ -n "$timer" ]; then
    mkdir -p "$UNITS/$timer"
    put "$timer" kind timer
    put "$timer" service "$svc"
    put "$timer" onactive "$on_active"
    put "$timer" collect "$collect"
    put "$timer" active active
    put "$timer" sub waiting
    put "$timer" description "${description:-${argv[*]}}"
    put "$svc" timer "$timer"
    {
      echo "# This is a transient unit file, created programmatically via the systemd API. Do not edit."
      echo "[Unit]"
      echo "Description=${description:-${argv[*]}}"
      echo "[Timer]"
      echo "OnActiveSec=$on_active"
      for p in "${tprops[@]}"; do echo "$p"; done
      echo "RemainAfterElapse=no"
    } > "$TRANSIENT/$timer"
    trace "$timer" started "OnActiveSec=$on_active"
    setsid "$MANAGER" timer "$timer" </dev/null >/dev/null 2>&1 9>&- &
    put "$timer" pgid "$!"
    unlock
    if [ $quiet = 0 ]; then
      err "Running timer as unit: $timer"
      err "Will run service as unit: $svc"
    fi
    exit 0
  fi

  local inv
  inv=$(invocation_id)
  put "$svc" invocation "$inv"
  put "$svc" started "$(($(date +%s%N) / 1000000))"
  put "$svc" active activating
  [ $wait = 1 ] || [ $pipe = 1 ] || [ "$service_type" = oneshot ] && : > "$UNITS/$svc/wait"
  if [ $pipe = 1 ]; then
    # (An explicit 0<&0: bash gives background commands /dev/null otherwise.)
    setsid "$MANAGER" service "$svc" 0<&0 9>&- &
  else
    setsid "$MANAGER" service "$svc" </dev/null >/dev/null 2>&1 9>&- &
  fi
  unlock
  [ $quiet = 1 ] || err "Running as unit: $svc; invocation ID: $inv"
  [ $no_block = 1 ] && exit 0
  # Started: the start job ends once the process runs (exec, simple) or ended (oneshot).
  while [ "$(get "$svc" active)" = activating ] && [ "$(get "$svc" invocation)" = "$inv" ]; do sleep 0.02; done
  if [ $wait = 0 ] && [ $pipe = 0 ] && [ "$service_type" != oneshot ]; then
    exit 0
  fi
  # --wait, --pipe (and a oneshot's start job): until the unit is no longer active.
  local res
  while [ ! -e "$STATE/invocations/$inv" ]; do sleep 0.05; done
  res=$(cat "$STATE/invocations/$inv")
  rm -f "$STATE/invocations/$inv"
  set -- $res
  if [ $wait = 0 ] && [ $pipe = 0 ]; then
    [ "$1" = success ] && exit 0
    err "Job for $svc failed because the control process exited with error code."
    err "See \"systemctl status $svc\" and \"journalctl -xeu $svc\" for details."
    exit 1
  fi
  if [ $wait = 1 ] && [ $quiet = 0 ]; then
    err "Finished with result: $1"
    case $1 in
      signal) err "Main processes terminated with: code=killed/status=$2" ;;
      *) err "Main processes terminated with: code=exited/status=$2" ;;
    esac
    err "Service runtime: ${3}ms"
  fi
  case $1 in
    success) exit 0 ;;
    exit-code) [ "$2" -gt 0 ] && exit "$2"; exit 1 ;;
    signal) exit 255 ;;
    *) exit 1 ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# systemctl
# ---------------------------------------------------------------------------------------------

kill_group() { # PGID SIGNAL
  [ -n "$1" ] && [ "$1" -gt 1 ] 2>/dev/null && kill -"$2" -- "-$1" 2>/dev/null
  return 0
}

group_alive() { [ -n "$1" ] && [ "$1" -gt 1 ] 2>/dev/null && kill -0 -- "-$1" 2>/dev/null; }

stop_one() { # NAME -> 0, or 5 (not loaded)
  local name=$1 pg inv t i
  if ! loaded "$name"; then
    err "Failed to stop $name: Unit $name not loaded."
    return 5
  fi
  case $(get "$name" kind) in
    timer)
      pg=$(get "$name" pgid)
      lock
      trace "$name" stopped
      kill_group "$pg" TERM
      unload "$name"
      unlock
      for i in $(seq 1 100); do group_alive "$pg" || break; sleep 0.05; done
      kill_group "$pg" KILL ;;
    service)
      case $(get "$name" active) in
        active | activating)
          pg=$(get "$name" mainpid)
          inv=$(get "$name" invocation)
          put "$name" stopping 1
          put "$name" active deactivating
          trace "$name" stopping
          kill_group "$pg" TERM
          kill_group "$pg" CONT
          t=$(($(date +%s) + ${FLEET_STANDIN_TIMEOUT_STOP_SEC:-90}))
          while group_alive "$pg" && [ "$(date +%s)" -lt "$t" ]; do sleep 0.05; done
          if group_alive "$pg"; then put "$name" stopping killed; kill_group "$pg" KILL; fi
          # The manager records the end and unloads it.
          while loaded "$name" && [ "$(get "$name" invocation)" = "$inv" ] &&
            [ "$(get "$name" active)" = deactivating ]; do sleep 0.02; done ;;
        inactive) ;; # nothing to do; gc unloads it when no timer refers to it
      esac ;;
  esac
  return 0
}

# The manager's garbage collection after jobs: an inactive service that no loaded timer
# triggers is unloaded (a timer's service that never ran goes with its timer).
gc() {
  local n tm
  lock
  for n in "$UNITS"/*.service; do
    [ -d "$n" ] || continue
    n=${n##*/}
    [ "$(get "$n" active)" = inactive ] || continue
    tm=$(get "$n" timer)
    if [ -z "$tm" ] || ! loaded "$tm"; then unload "$n"; fi
  done
  unlock
}

ctl_usage() {
  cat <<'EOF'
systemctl [OPTIONS...] COMMAND ...

fleet's stand-in of systemd 255's systemctl: stop, is-active, is-failed, reset-failed,
list-units, show (-p/--property=, --value) of transient units; options -q/--quiet, -a/--all,
--no-legend, --plain, --no-pager, --no-block, --system.
EOF
}

systemctl_main() {
  local verb='' quiet=0 all=0 legend=1 value=0 a
  local -a names=() propsel=()
  while [ $# -gt 0 ]; do
    a=$1
    case $a in
      -h | --help) ctl_usage; exit 0 ;;
      -q | --quiet) quiet=1 ;;
      -a | --all) all=1 ;;
      --no-legend) legend=0 ;;
      --plain | --no-pager | --no-block | --system | --full | -l | --no-ask-password) ;;
      --value) value=1 ;;
      -p | --property) [ $# -ge 2 ] || { err "systemctl: option '$a' requires an argument"; exit 1; }
        IFS=, read -ra p <<< "$2"; propsel+=("${p[@]}"); shift ;;
      -p?*) IFS=, read -ra p <<< "${a:2}"; propsel+=("${p[@]}") ;;
      --property=* | -P) 
        if [ "$a" = -P ]; then value=1; IFS=, read -ra p <<< "${2-}"; shift; else IFS=, read -ra p <<< "${a#*=}"; fi
        propsel+=("${p[@]}") ;;
      --user | --type=* | -t | --state=* | --now | --kill-whom=* | --signal=* | -s | -H | -M)
        err "systemctl: $a is not modelled by the fleet stand-in"; exit 1 ;;
      --*) err "systemctl: unrecognized option '$a'"; exit 1 ;;
      -?*) err "systemctl: invalid option -- '${a:1:1}'"; exit 1 ;;
      *) if [ -z "$verb" ]; then verb=$a; else names+=("$(mangle "$a")"); fi ;;
    esac
    shift
  done
  [ -n "$verb" ] || verb=list-units
  need_systemd
  local n rc=0 st any=1
  case $verb in
    stop)
      [ ${#names[@]} -gt 0 ] || { err "Too few arguments."; exit 1; }
      [ "$(id -u)" = 0 ] || { err "Failed to stop ${names[0]}: Access denied"; exit 4; }
      for n in "${names[@]}"; do stop_one "$n" || rc=$?; done
      gc
      exit $rc ;;
    is-active | is-failed)
      [ ${#names[@]} -gt 0 ] || { err "Too few arguments."; exit 1; }
      for n in "${names[@]}"; do
        st=$(get "$n" active); st=${st:-inactive}
        [ $quiet = 1 ] || echo "$st"
        if [ "$verb" = is-active ] && [ "$st" = active ]; then any=0; fi
        if [ "$verb" = is-failed ] && [ "$st" = failed ]; then any=0; fi
      done
      if [ "$verb" = is-active ]; then [ $any = 0 ] && exit 0 || exit 3; fi
      exit $any ;;
    reset-failed)
      lock
      if [ ${#names[@]} -eq 0 ]; then
        for n in "$UNITS"/*; do [ -e "$n" ] && names+=("${n##*/}"); done
        for n in "${names[@]}"; do [ "$(get "$n" active)" = failed ] && unload "$n"; done
      else
        for n in "${names[@]}"; do
          if ! loaded "$n"; then err "Failed to reset failed state of unit $n: Unit $n not loaded."; rc=1; continue; fi
          [ "$(get "$n" active)" = failed ] && unload "$n"
        done
      fi
      unlock
      exit $rc ;;
    list-units)
      [ $legend = 1 ] && printf '%-50s %-9s %-12s %-9s %s\n' UNIT LOAD ACTIVE SUB DESCRIPTION
      local count=0
      for n in "$UNITS"/*; do
        [ -d "$n" ] || continue
        n=${n##*/}
        st=$(get "$n" active)
        if [ ${#names[@]} -gt 0 ]; then
          local m=1 pat
          for pat in "${names[@]}"; do [[ $n == $pat ]] && m=0; done
          [ $m = 0 ] || continue
        fi
        [ $all = 1 ] || [ "$st" != inactive ] || continue
        printf '%-50s %-9s %-12s %-9s %s\n' "$n" loaded "$st" "$(get "$n" sub)" "$(get "$n" description)"
        count=$((count + 1))
      done
      [ $legend = 1 ] && printf '\n%s loaded units listed.\n' "$count"
      exit 0 ;;
    show)
      [ ${#names[@]} -gt 0 ] || { err "systemctl show without a unit is not modelled by the fleet stand-in"; exit 1; }
      [ ${#propsel[@]} -gt 0 ] || propsel=(Id LoadState ActiveState SubState Result ExecMainStatus MainPID InvocationID)
      local first=1 pr val
      for n in "${names[@]}"; do
        [ $first = 1 ] || echo
        first=0
        for pr in "${propsel[@]}"; do
          case $pr in
            Id) val=$n ;;
            LoadState) if loaded "$n"; then val=loaded; else val=not-found; fi ;;
            ActiveState) val=$(get "$n" active); val=${val:-inactive} ;;
            SubState) val=$(get "$n" sub); val=${val:-dead} ;;
            Result) val=$(get "$n" result); val=${val:-success} ;;
            ExecMainStatus) val=$(get "$n" status); val=${val:-0} ;;
            MainPID) val=$(get "$n" mainpid); val=${val:-0} ;;
            InvocationID) val=$(get "$n" invocation) ;;
            Description) val=$(get "$n" description) ;;
            *) err "systemctl show: property $pr is not modelled by the fleet stand-in"; exit 1 ;;
          esac
          if [ $value = 1 ]; then echo "$val"; else echo "$pr=$val"; fi
        done
      done
      exit 0 ;;
    start | restart | status | kill | list-timers | daemon-reload | enable | disable | cat)
      err "systemctl: $verb is not modelled by the fleet stand-in"; exit 1 ;;
    *) err "Unknown command verb '$verb'."; exit 1 ;;
  esac
}

case $prog in
  systemd-run) systemd_run_main "$@" ;;
  systemctl) systemctl_main "$@" ;;
  fleet-standin-manager) manager_main "$@" ;;
  *) err "systemd stand-in called as $prog"; exit 1 ;;
esac
