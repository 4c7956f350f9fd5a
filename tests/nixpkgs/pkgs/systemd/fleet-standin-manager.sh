#!/bin/bash
# fleet-standin-manager: runs one unit, detached (started with setsid by systemd-run or a timer),
# as PID 1 and systemd-executor would
# (the nixpkgs stand-in's systemd, `fleet.systemd = true`; lib.sh says what is modelled).
. '@lib@'

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
  local killed=exited
  if [ $rc -eq 0 ]; then
    result=success status=0
  elif [ -n "$stopped" ] && [ $rc -gt 128 ]; then
    # SIGTERM (or SIGKILL after the timeout) sent by `systemctl stop`: a clean stop.
    result=success status=$((rc - 128)) killed=killed
    [ "$stopped" = killed ] && result=timeout
  elif [ $rc -gt 128 ]; then
    # (bash cannot tell a death by signal N from an exit with 128+N: the stand-in takes it as
    # the signal.)
    result=signal status=$((rc - 128)) killed=killed
  else
    result=exit-code status=$rc
  fi
  trace "$name" exited "result=$result" "status=$status"
  lock
  if [ -e "$d/wait" ]; then
    # result, exit status or signal number, whether it was killed (code=killed), runtime in ms
    printf '%s %s %s %s\n' "$result" "$status" "$killed" "$(($(date +%s%N) / 1000000 - $(get "$name" started)))" \
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

manager_main() {
  close_fds
  case ${1-} in
    service) run_service "$2" ;;
    timer) run_timer "$2" ;;
    *) err "fleet-standin-manager: internal program of the systemd stand-in"; exit 2 ;;
  esac
}

manager_main "$@"
