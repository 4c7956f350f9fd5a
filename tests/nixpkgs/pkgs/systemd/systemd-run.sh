#!/bin/bash
# systemd-run
# (the nixpkgs stand-in's systemd, `fleet.systemd = true`; lib.sh says what is modelled).
. '@lib@'

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
    local st=$2
    [ "$3" = killed ] && st=$(kill -l "$2" 2>/dev/null || echo "$2")
    err "Main processes terminated with: code=$3/status=$st"
    err "Service runtime: ${4}ms"
  fi
  case $1 in
    success) exit 0 ;;
    exit-code) [ "$2" -gt 0 ] && exit "$2"; exit 1 ;;
    signal) exit 255 ;;
    *) exit 1 ;;
  esac
}

systemd_run_main "$@"
