#!/bin/bash
# systemctl
# (the nixpkgs stand-in's systemd, `fleet.systemd = true`; lib.sh says what is modelled).
. '@lib@'

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

systemctl_main "$@"
