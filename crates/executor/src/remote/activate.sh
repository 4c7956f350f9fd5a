# fleet's activation helper, run as root on the target by `sh /run/fleet/activate.sh <mode> ...`.
# Written by fleet before each activation; POSIX sh; no bashisms (targets are NixOS, but be safe).
#
# Modes:
#   apply GOAL TOPLEVEL PACKAGE CONFIRM_SECS ID META_JSON AUTO_ROLLBACK(1|0)
#       set the profile (switch|boot), run switch-to-configuration GOAL; on failure roll back and exit 100
#       (with AUTO_ROLLBACK=0: leave the host as it is and exit 102);
#       on success link the deployment package + GC root, record META_JSON, and (CONFIRM_SECS > 0 and
#       GOAL is switch|test) arm a watchdog that rolls back unless `confirm ID` runs in time.
#   link PACKAGE META_JSON
#       the host already runs the system: link the deployment package + GC root and record META_JSON.
#   confirm ID       disarm the watchdog of deployment ID (exit 0), exit 3 if it already rolled back.
#   rollback         switch to the previous system profile generation (fleet rollback).
#   watchdog ID SECS (internal) wait, then roll back if ID is still pending.
#
# Exit codes: 0 ok; 100 activation failed and the host was rolled back; 101 activation failed and the
# rollback failed too; 102 activation failed, no rollback asked for; 10 bad input; 3 confirm came too
# late (already rolled back).
set -u
PATH=/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin:$PATH
export PATH
profile=/nix/var/nix/profiles/system
state=/run/fleet
umask 022
mkdir -p "$state" || exit 10

log() { printf 'fleet: %s\n' "$*" >&2; }

gen_number() { # system-12-link -> 12
  l=$(readlink "$profile" 2>/dev/null) || return 1
  l=${l#system-}; l=${l%-link}; printf '%s\n' "$l"
}

run_stc() { # SYSTEM GOAL
  if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then
    systemd-run -E LOCALE_ARCHIVE -E NIXOS_INSTALL_BOOTLOADER=0 --collect --no-ask-password --pipe \
      --quiet --service-type=exec --unit=nixos-rebuild-switch-to-configuration --wait \
      "$1/bin/switch-to-configuration" "$2"
  else
    NIXOS_INSTALL_BOOTLOADER=0 "$1/bin/switch-to-configuration" "$2"
  fi
}

# Saved state of one deployment, so the watchdog (a separate process) can undo it.
save_state() { # ID
  {
    printf 'prev_gen=%s\n' "$prev_gen"
    printf 'new_gen=%s\n' "$new_gen"
    printf 'prev_system=%s\n' "$prev_system"
    printf 'prev_package=%s\n' "$prev_package"
    printf 'goal=%s\n' "$goal"
  } > "$state/deploy-$1.tmp" && mv -f "$state/deploy-$1.tmp" "$state/deploy-$1"
}

# Undo: profile back to prev_gen (dropping new_gen), current system back to prev_system, package link back.
undo() {
  ok=0
  if [ -n "$new_gen" ] && [ "$new_gen" != "$prev_gen" ]; then
    if [ -n "$prev_gen" ]; then
      nix-env -p "$profile" --switch-generation "$prev_gen" >&2 || ok=1
    else
      rm -f "$profile" || ok=1
    fi
    nix-env -p "$profile" --delete-generations "$new_gen" >&2 2>/dev/null || rm -f "$profile-$new_gen-link"
  fi
  case "$goal" in
    switch|test)
      if [ -n "$prev_system" ] && [ -x "$prev_system/bin/switch-to-configuration" ]; then
        run_stc "$prev_system" switch >&2 || ok=1
      elif [ -z "$prev_system" ]; then
        rm -f /run/current-system
      fi ;;
    boot)
      if [ -n "$prev_gen" ]; then
        sys=$(readlink -f "$profile")
        [ -x "$sys/bin/switch-to-configuration" ] && { run_stc "$sys" boot >&2 || ok=1; }
      fi ;;
  esac
  if [ -n "$prev_package" ]; then
    ln -sfn "$prev_package" /etc/nixos/current-configuration.tmp && mv -fT /etc/nixos/current-configuration.tmp /etc/nixos/current-configuration
    ln -sfn "$prev_package" /nix/var/nix/gcroots/fleet-current-configuration
  fi
  return $ok
}

# Link the deployment package at /etc/nixos/current-configuration, make it a GC root (also per
# generation, for `fleet rollback`), and record what was deployed.
link_package() { # PACKAGE GENERATION META_JSON
  mkdir -p /etc/nixos
  ln -sfn "$1" /etc/nixos/current-configuration.tmp && mv -fT /etc/nixos/current-configuration.tmp /etc/nixos/current-configuration
  ln -sfn "$1" /nix/var/nix/gcroots/fleet-current-configuration
  if [ -n "$2" ]; then
    mkdir -p /nix/var/nix/gcroots/fleet
    ln -sfn "$1" "/nix/var/nix/gcroots/fleet/system-$2-package"
  fi
  printf '%s\n' "$3" > /etc/nixos/fleet-deployment.json.tmp && mv -f /etc/nixos/fleet-deployment.json.tmp /etc/nixos/fleet-deployment.json
}

mode=${1:-}
case "$mode" in
apply)
  [ $# -eq 8 ] || { log "usage: apply GOAL TOPLEVEL PACKAGE CONFIRM_SECS ID META_JSON AUTO_ROLLBACK"; exit 10; }
  goal=$2 toplevel=$3 package=$4 confirm=$5 id=$6 meta=$7 auto=$8
  case "$goal" in switch|boot|test|dry-activate) ;; *) log "unknown goal $goal"; exit 10;; esac
  [ -x "$toplevel/bin/switch-to-configuration" ] || { log "$toplevel is not a NixOS system (no bin/switch-to-configuration)"; exit 10; }
  [ -f "$toplevel/nixos-version" ] || { log "$toplevel has no nixos-version; refusing to set the profile"; exit 10; }
  if [ "$goal" = dry-activate ]; then run_stc "$toplevel" dry-activate; exit $?; fi
  prev_gen=$(gen_number || true)
  prev_system=$(readlink -f /run/current-system 2>/dev/null || true)
  prev_package=$(readlink /etc/nixos/current-configuration 2>/dev/null || true)
  new_gen=$prev_gen
  if [ "$goal" = switch ] || [ "$goal" = boot ]; then
    nix-env -p "$profile" --set "$toplevel" >&2 || { log "setting the system profile failed"; exit 101; }
    new_gen=$(gen_number || true)
  fi
  save_state "$id"
  if ! run_stc "$toplevel" "$goal"; then
    if [ "$auto" != 1 ]; then
      log "switch-to-configuration $goal failed; not rolling back (--no-rollback)"
      echo failed > "$state/result-$id"; exit 102
    fi
    log "switch-to-configuration $goal failed; rolling back"
    if undo; then echo rolled-back > "$state/result-$id"; exit 100; fi
    echo rollback-failed > "$state/result-$id"; exit 101
  fi
  link_package "$package" "$new_gen" "$meta"
  if [ "$confirm" -gt 0 ] 2>/dev/null && { [ "$goal" = switch ] || [ "$goal" = test ]; }; then
    : > "$state/pending-$id"
    setsid sh "$state/activate.sh" watchdog "$id" "$confirm" </dev/null >>"$state/watchdog-$id.log" 2>&1 &
    echo $! > "$state/watchdog-$id.pid"
  fi
  echo applied > "$state/result-$id"
  exit 0 ;;
link)
  # The host already runs the system: only the deployment package is new.
  [ $# -eq 3 ] || { log "usage: link PACKAGE META_JSON"; exit 10; }
  [ -x "$2/switch" ] || { log "$2 is not a fleet deployment package (no switch script)"; exit 10; }
  link_package "$2" "$(gen_number || true)" "$3"
  exit 0 ;;
run-detached)
  # Runs `apply ...` in its own session with output to a file, so a dropped SSH connection
  # cannot kill it halfway; waits for it and replays its log.
  shift; id=$5
  setsid sh "$state/activate.sh" apply "$@" </dev/null >"$state/log-$id" 2>&1 &
  child=$!
  wait "$child"; rc=$?
  cat "$state/log-$id" >&2
  exit "$rc" ;;
result)
  cat "$state/result-$2" 2>/dev/null || echo unknown; exit 0 ;;
confirm)
  id=$2
  if [ -e "$state/pending-$id" ] && rm "$state/pending-$id" 2>/dev/null; then
    [ -f "$state/watchdog-$id.pid" ] && kill "$(cat "$state/watchdog-$id.pid")" 2>/dev/null
    rm -f "$state/watchdog-$id.pid" "$state/deploy-$id"
    echo confirmed > "$state/result-$id"; exit 0
  fi
  log "deployment $id is not pending (result: $(cat "$state/result-$id" 2>/dev/null || echo unknown))"; exit 3 ;;
watchdog)
  id=$2; sleep "$3"
  # Atomic claim: whoever removes the marker first (confirm or watchdog) wins.
  rm "$state/pending-$id" 2>/dev/null || exit 0
  . "$state/deploy-$id"
  log "deployment $id not confirmed within $3 s; rolling back"
  if undo; then echo rolled-back > "$state/result-$id"; else echo rollback-failed > "$state/result-$id"; fi ;;
rollback)
  cur=$(gen_number) || { log "no system profile"; exit 10; }
  prev=$(nix-env -p "$profile" --list-generations | awk -v c="$cur" '$1 < c { p = $1 } END { print p }')
  [ -n "$prev" ] || { log "no generation before $cur to roll back to"; exit 10; }
  nix-env -p "$profile" --switch-generation "$prev" >&2 || exit 101
  run_stc "$(readlink -f "$profile")" switch || exit 101
  pkg=$(readlink "/nix/var/nix/gcroots/fleet/system-$prev-package" 2>/dev/null || true)
  if [ -n "$pkg" ] && [ -e "$pkg" ]; then
    ln -sfn "$pkg" /etc/nixos/current-configuration.tmp && mv -fT /etc/nixos/current-configuration.tmp /etc/nixos/current-configuration
    ln -sfn "$pkg" /nix/var/nix/gcroots/fleet-current-configuration
  fi
  log "rolled back from generation $cur to $prev" ;;
*) log "unknown mode ${mode}"; exit 10 ;;
esac
