# fleet's activation helper, run as root on the target by `sh /run/fleet/activate.sh <mode> ...`.
# Written by fleet before each use; POSIX sh, no bashisms. It follows nixos-rebuild-ng step for step
# (docs/apply.md says where fleet differs and why).
#
# Modes:
#   apply KEY=VALUE...   (keys: goal toplevel package confirm id meta auto units bootloader spec)
#       Refuse early if another switch or fleet apply holds its lock. For switch|boot set the system
#       profile (`nix-env --set`; Nix reuses the last generation when it is the same path), run
#       TOPLEVEL/bin/switch-to-configuration GOAL, and sort its exit status (0, 4 units failed but
#       the system is active, 100 reboot needed for a new init interface, else failed). On failure
#       undo exactly what this apply did (auto=1), then link the package, record, and (confirm > 0,
#       switch|test) arm a watchdog that undoes it unless `confirm ID` comes in time. An earlier
#       deployment still awaiting confirmation is taken over (confirmed) before anything changes.
#   detach KEY=VALUE...  `apply` as a transient systemd unit (setsid where systemd does not run), so
#                        the end of the SSH session cannot kill it; waits, replays its log, exits
#                        with its code.
#   link PACKAGE META_JSON   the host runs the system already: link and record the package only.
#   confirm ID        disarm the watchdog (exit 0, also if it was confirmed already); exit 3 if it
#                     already rolled back.
#   abort ID          the health checks failed: claim the deployment from the watchdog and undo it
#                     now (exit 0; 101 if the undo failed); exit 3 if it is no longer pending.
#   result ID         print what became of deployment ID.
#   rollback          switch to the previous system profile generation (fleet rollback).
#   watchdog ID SECS / watchdog-fire ID   (internal) the magic rollback.
#
# Exit codes (crates/executor/src/activation.rs names them): 0 applied; 104 applied, units failed;
# 105 reboot required (new init interface; the boot entry is installed); 103 refused: a lock is
# held, nothing changed; 100 failed and undone; 101 failed and the undo failed too; 102 failed, not
# undone (auto=0); 10 bad input; 3 confirm too late. The result file /run/fleet/result-ID says the
# same in words (applied, units-failed, reboot-required, locked, rolled-back, rollback-failed,
# failed, dry-run, confirmed).
set -u
PATH=/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin:$PATH
export PATH
profile=/nix/var/nix/profiles/system
# The deployment packages form a Nix profile of their own, so `nix-collect-garbage -d` (and
# nix.gc) frees old packages with old systems, exactly as after nixos-rebuild.
pkg_profile=/nix/var/nix/profiles/fleet/deployment
# On /nix: writable with an immutable /etc, persistent under impermanence.
records=/nix/var/fleet/records
pending_roots=/nix/var/nix/gcroots/fleet-pending
test_root=/nix/var/nix/gcroots/fleet-test-package
state=/run/fleet
umask 022
mkdir -p "$state" || exit 10

log() { printf 'fleet: %s\n' "$*" >&2; }
warn() { printf 'fleet: warning: %s\n' "$*" >&2; }

has_systemd() { [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; }

gen_of() { # PROFILE -> its generation number (system -> system-12-link: 12)
  l=$(readlink "$1" 2>/dev/null) || return 1
  l=${l%-link}; printf '%s\n' "${l##*-}"
}

run_stc() { # SYSTEM GOAL [INSTALL_BOOTLOADER]
  ib=${3:-0}
  if has_systemd; then
    systemd-run -E LOCALE_ARCHIVE -E NIXOS_INSTALL_BOOTLOADER="$ib" --collect --no-ask-password --pipe \
      --quiet --service-type=exec --unit=nixos-rebuild-switch-to-configuration --wait \
      "$1/bin/switch-to-configuration" "$2"
  else
    NIXOS_INSTALL_BOOTLOADER="$ib" "$1/bin/switch-to-configuration" "$2"
  fi
}

link_to() { # TARGET LINK: atomically
  ln -sfn "$1" "$2.fleet-tmp" && mv -fT "$2.fleet-tmp" "$2"
}

# A lock held by another switch-to-configuration (another nixos-rebuild) fails the host before
# the profile is touched. switch-to-configuration takes it itself, so only probe it here.
stc_locked() {
  command -v flock >/dev/null 2>&1 || return 1
  mkdir -p /run/nixos || return 1
  ! flock -n /run/nixos/switch-to-configuration.lock true
}

# nixos-rebuild runs switch-to-configuration as the unit nixos-rebuild-switch-to-configuration;
# while that unit runs (before its switch-to-configuration took the lock, too), systemd-run
# refuses a second unit of that name.
stc_unit_busy() {
  has_systemd && systemctl is-active --quiet nixos-rebuild-switch-to-configuration.service 2>/dev/null
}

set_result() { echo "$1" > "$state/result-$id.tmp" && mv -f "$state/result-$id.tmp" "$state/result-$id"; }

save_state() {
  printf 'prev_gen=%s\nnew_gen=%s\nprev_system=%s\nprev_package=%s\nprev_pkg_gen=%s\nnew_pkg_gen=%s\ngoal=%s\n' \
    "$prev_gen" "$new_gen" "$prev_system" "$prev_package" "$prev_pkg_gen" "$new_pkg_gen" "$goal" \
    > "$state/deploy-$id.tmp" && mv -f "$state/deploy-$id.tmp" "$state/deploy-$id"
}

# Undo exactly what this apply did: the system profile generation it created (and the boot
# entries that follow it: `boot` of the profile's system, never `switch` of an older system, which
# would move the boot default); the running system (`test` of what ran before, only if it
# changed); the package profile generation and the package link.
undo() {
  ok=0
  if [ -n "$new_gen" ] && [ "$new_gen" != "$prev_gen" ]; then
    if [ -n "$prev_gen" ]; then
      nix-env -p "$profile" --switch-generation "$prev_gen" >&2 || ok=1
    else
      rm -f "$profile" || ok=1
    fi
    nix-env -p "$profile" --delete-generations "$new_gen" >&2 2>/dev/null || rm -f "$profile-$new_gen-link"
    sys=$(readlink -f "$profile" 2>/dev/null || true)
    if [ -n "$sys" ] && [ -x "$sys/bin/switch-to-configuration" ]; then
      run_stc "$sys" boot >&2 || ok=1
    fi
  fi
  case "$goal" in
    switch|test)
      now=$(readlink -f /run/current-system 2>/dev/null || true)
      if [ -n "$prev_system" ] && [ "$now" != "$prev_system" ]; then
        if [ -x "$prev_system/bin/switch-to-configuration" ]; then
          run_stc "$prev_system" test >&2 || ok=1
        else
          ok=1
        fi
      elif [ -z "$prev_system" ]; then
        rm -f /run/current-system
      fi ;;
  esac
  if [ -n "${new_pkg_gen:-}" ] && [ "$new_pkg_gen" != "${prev_pkg_gen:-}" ]; then
    if [ -n "${prev_pkg_gen:-}" ]; then
      nix-env -p "$pkg_profile" --switch-generation "$prev_pkg_gen" >&2 || ok=1
    else
      rm -f "$pkg_profile"
    fi
    nix-env -p "$pkg_profile" --delete-generations "$new_pkg_gen" >&2 2>/dev/null || rm -f "$pkg_profile-$new_pkg_gen-link"
  fi
  if [ -n "$prev_package" ]; then
    link_to "$prev_package" /etc/nixos/current-configuration 2>/dev/null || warn "could not link /etc/nixos/current-configuration back"
  fi
  return $ok
}

# Link the deployment package: the package profile for switch|boot (it follows the system
# generations), a single replaceable root for test; /etc/nixos/current-configuration for the
# user; the record beside the other records, keyed by the system it describes. Every write is
# checked; a failure is a warning (the system itself is fine).
link_package() { # PACKAGE GOAL META_JSON SYSTEM (the record is keyed by the system that runs)
  case "$2" in
    switch|boot)
      mkdir -p "${pkg_profile%/*}" || warn "could not create ${pkg_profile%/*}"
      prev_pkg_gen=$(gen_of "$pkg_profile" || true)
      if nix-env -p "$pkg_profile" --set "$1" >&2; then
        new_pkg_gen=$(gen_of "$pkg_profile" || true)
        rm -f "$test_root"
      else
        warn "setting the package profile $pkg_profile failed"
      fi ;;
    *) link_to "$1" "$test_root" || warn "could not root the package at $test_root" ;;
  esac
  mkdir -p /etc/nixos 2>/dev/null
  link_to "$1" /etc/nixos/current-configuration 2>/dev/null ||
    warn "could not link /etc/nixos/current-configuration (read-only /etc?); the package is $1"
  if mkdir -p "$records" && printf '%s\n' "$3" > "$records/${4##*/}.json.tmp" &&
    mv -f "$records/${4##*/}.json.tmp" "$records/${4##*/}.json"; then :; else
    warn "could not write the deployment record in $records"
  fi
  # Round 1 kept a root per generation, pinning every system forever; and a record in /etc.
  rm -rf /nix/var/nix/gcroots/fleet /nix/var/nix/gcroots/fleet-current-configuration \
    /etc/nixos/fleet-deployment.json 2>/dev/null
  # Records of systems that are gone from the store.
  for r in "$records"/*.json; do
    [ -e "$r" ] || continue
    b=${r##*/}; [ -e "/nix/store/${b%.json}" ] || rm -f "$r"
  done
  return 0
}

drop_pending_roots() {
  rm -rf "$pending_roots/$id" 2>/dev/null
  # Those of deployers that died long ago.
  [ -d "$pending_roots" ] && find "$pending_roots" -mindepth 1 -maxdepth 1 -mmin +720 -exec rm -rf {} + 2>/dev/null
  return 0
}

arm_watchdog() { # SECS
  : > "$state/pending-$id"
  if has_systemd; then
    # The units are noted, so confirm stops exactly what was armed.
    if systemd-run --unit="fleet-watchdog-$id" --on-active="$1" --timer-property=AccuracySec=1s \
      --collect --quiet sh "$state/activate.sh" watchdog-fire "$id" >&2; then
      echo "fleet-watchdog-$id" > "$state/watchdog-$id.unit"
      return 0
    fi
    warn "systemd-run refused the watchdog timer; using a detached process"
  fi
  # Its own session and process group, without the lock's file descriptor: confirm ends the
  # whole group, so no `sleep` outlives it.
  setsid sh "$state/activate.sh" watchdog "$id" "$1" </dev/null >>"$state/watchdog-$id.log" 2>&1 8>&- &
  echo $! > "$state/watchdog-$id.pid"
}

disarm_watchdog() {
  if [ -f "$state/watchdog-$id.pid" ]; then
    p=$(cat "$state/watchdog-$id.pid")
    # dash's kill takes no `--`: a negative pid right after the signal is its process group.
    kill -TERM "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null
    rm -f "$state/watchdog-$id.pid"
  fi
  if [ -f "$state/watchdog-$id.unit" ]; then
    # Both: the timer, and its service should it be starting. systemctl exits 5 for a unit
    # that is not loaded (the timer elapsed, the service ended), which is fine here.
    systemctl stop "fleet-watchdog-$id.timer" "fleet-watchdog-$id.service" 2>/dev/null
    rm -f "$state/watchdog-$id.unit"
  fi
  return 0
}

fire() { # the watchdog's undo
  # Never in the middle of an apply: one running now may take this deployment over (below).
  exec 8>"$state/apply.lock"
  command -v flock >/dev/null 2>&1 && flock -w 900 8
  # Atomic claim: whoever removes the marker first (confirm, a later apply, or the watchdog) wins.
  rm "$state/pending-$id" 2>/dev/null || exit 0
  rm -f "$state/watchdog-$id.pid" "$state/watchdog-$id.unit"
  . "$state/deploy-$id"
  log "deployment $id not confirmed in time; rolling back"
  if undo; then set_result rolled-back; else set_result rollback-failed; fi
}

# Deployments activated but never confirmed (their deployer died) whose watchdog still waits:
# this apply reached the host over a new connection, which is what confirming them proves. It
# takes over from them (they count as confirmed), so their watchdog cannot undo it afterwards.
take_over_pending() {
  for p in "$state"/pending-*; do
    [ -e "$p" ] || continue
    old=${p##*/pending-}
    [ "$old" != "$id" ] || continue
    if rm "$p" 2>/dev/null; then
      (id=$old; disarm_watchdog; rm -f "$state/deploy-$id"; set_result confirmed)
      log "deployment $old was never confirmed; this one takes over from it"
    fi
  done
  return 0
}

apply() {
  goal= toplevel= package= confirm=0 id= meta= auto=1 units=keep bootloader=0 spec=
  for a in "$@"; do
    case "$a" in
      goal=*) goal=${a#goal=} ;; toplevel=*) toplevel=${a#toplevel=} ;;
      package=*) package=${a#package=} ;; confirm=*) confirm=${a#confirm=} ;;
      id=*) id=${a#id=} ;; meta=*) meta=${a#meta=} ;; auto=*) auto=${a#auto=} ;;
      units=*) units=${a#units=} ;; bootloader=*) bootloader=${a#bootloader=} ;;
      spec=*) spec=${a#spec=} ;;
      *) log "unknown argument $a"; exit 10 ;;
    esac
  done
  [ -n "$id" ] && [ -n "$toplevel" ] || { log "apply needs id= and toplevel="; exit 10; }
  case "$goal" in switch|boot|test|dry-activate) ;; *) log "unknown goal $goal"; exit 10;; esac
  [ -x "$toplevel/bin/switch-to-configuration" ] || { log "$toplevel is not a NixOS system (no bin/switch-to-configuration)"; exit 10; }
  [ -f "$toplevel/nixos-version" ] || { log "$toplevel has no nixos-version; refusing to set the profile"; exit 10; }
  # The profile gets the toplevel; a specialisation is activated from its own directory.
  sys=$toplevel
  if [ -n "$spec" ]; then
    sys=$toplevel/specialisation/$spec
    [ -x "$sys/bin/switch-to-configuration" ] || { log "$toplevel has no specialisation $spec"; exit 10; }
  fi

  # One fleet apply at a time on this host; fd 8 is closed for everything that outlives us.
  exec 8>"$state/apply.lock"
  if command -v flock >/dev/null 2>&1 && ! flock -n 8; then
    log "another fleet apply is running on this host; nothing was changed"
    set_result locked; exit 103
  fi
  if stc_locked; then
    log "another switch-to-configuration holds /run/nixos/switch-to-configuration.lock (is nixos-rebuild running?); nothing was changed"
    set_result locked; drop_pending_roots; exit 103
  fi
  if stc_unit_busy; then
    log "another switch-to-configuration runs as nixos-rebuild-switch-to-configuration.service and takes its lock (is nixos-rebuild running?); nothing was changed"
    set_result locked; drop_pending_roots; exit 103
  fi

  if [ "$goal" = dry-activate ]; then
    run_stc "$sys" dry-activate; rc=$?
    drop_pending_roots
    if [ $rc -eq 0 ] || [ $rc -eq 100 ]; then set_result dry-run; exit 0; fi
    set_result failed; exit 102
  fi

  take_over_pending
  prev_gen=$(gen_of "$profile" || true)
  prev_system=$(readlink -f /run/current-system 2>/dev/null || true)
  prev_package=$(readlink /etc/nixos/current-configuration 2>/dev/null || true)
  prev_pkg_gen= new_pkg_gen=
  new_gen=$prev_gen
  if [ "$goal" = switch ] || [ "$goal" = boot ]; then
    nix-env -p "$profile" --set "$toplevel" >&2 || { log "setting the system profile failed"; set_result failed; drop_pending_roots; exit 102; }
    new_gen=$(gen_of "$profile" || true)
  fi
  save_state

  run_stc "$sys" "$goal" "$bootloader" > "$state/stc-$id.out" 2>&1; rc=$?
  cat "$state/stc-$id.out" >&2
  outcome=applied code=0
  case $rc in
    0) ;;
    4)
      # The new system is active; some units failed (nixos-rebuild keeps it too).
      outcome=units-failed code=104
      if [ "$units" = rollback ]; then rc=1; fi ;;
    100)
      # New init interface: the boot entry is installed (switch), nothing was activated.
      outcome=reboot-required code=105 ;;
  esac
  if [ $rc -ne 0 ] && [ $rc -ne 4 ] && [ $rc -ne 100 ]; then
    # The lock, or (systemd) the unit name, taken by another switch since the probe above.
    if grep -q -e 'Could not acquire lock' -e 'nixos-rebuild-switch-to-configuration.service was already loaded' \
      "$state/stc-$id.out" 2>/dev/null; then
      log "another switch-to-configuration took its lock first; undoing the profile change"
      failed=locked
    else
      failed=failed
    fi
    if [ "$auto" != 1 ]; then
      log "switch-to-configuration $goal failed (exit $rc); not rolling back (--no-rollback)"
      set_result "$failed"; drop_pending_roots; exit 102
    fi
    log "switch-to-configuration $goal failed (exit $rc); rolling back"
    if undo; then
      set_result rolled-back; drop_pending_roots
      [ "$failed" = locked ] && exit 103
      exit 100
    fi
    set_result rollback-failed; drop_pending_roots; exit 101
  fi
  rm -f "$state/stc-$id.out"
  if [ "$outcome" = reboot-required ] && [ "$goal" = test ]; then
    log "the new system has a new init interface: it can only take effect after a reboot (apply boot, then reboot)"
    set_result reboot-required; drop_pending_roots; exit 105
  fi
  link_package "$package" "$goal" "$meta" "$sys"
  save_state
  drop_pending_roots
  if [ "$outcome" != reboot-required ] && [ "$confirm" -gt 0 ] 2>/dev/null &&
    { [ "$goal" = switch ] || [ "$goal" = test ]; }; then
    arm_watchdog "$confirm"
  fi
  set_result "$outcome"
  exit $code
}

mode=${1:-}
[ $# -gt 0 ] && shift
case "$mode" in
apply) apply "$@" ;;
detach)
  id=
  for a in "$@"; do case "$a" in id=*) id=${a#id=} ;; esac; done
  [ -n "$id" ] || { log "detach needs id="; exit 10; }
  rm -f "$state/result-$id" "$state/log-$id"
  if has_systemd; then
    # Its own output is the unit's (the log); systemd-run's are its errors, if it could not
    # start the unit at all.
    systemd-run --unit="fleet-activate-$id" --collect --quiet --service-type=exec --wait \
      -p StandardOutput="file:$state/log-$id" -p StandardError="file:$state/log-$id" \
      sh "$state/activate.sh" apply "$@" >/dev/null 2>"$state/systemd-run-$id.err"
    if [ ! -e "$state/log-$id" ] && [ ! -e "$state/result-$id" ]; then
      log "systemd-run could not start the activation unit fleet-activate-$id; nothing was changed:"
      cat "$state/systemd-run-$id.err" >&2
      rm -f "$state/systemd-run-$id.err"
      exit 10
    fi
    rm -f "$state/systemd-run-$id.err"
  else
    setsid sh "$state/activate.sh" apply "$@" </dev/null >"$state/log-$id" 2>&1 &
    wait $!
  fi
  cat "$state/log-$id" >&2
  case "$(cat "$state/result-$id" 2>/dev/null)" in
    applied) exit 0 ;; units-failed) exit 104 ;; reboot-required) exit 105 ;; dry-run) exit 0 ;;
    locked) exit 103 ;; rolled-back) exit 100 ;; rollback-failed) exit 101 ;; failed) exit 102 ;;
    *) log "the activation ended without a result"; exit 101 ;;
  esac ;;
link)
  [ $# -eq 3 ] || { log "usage: link PACKAGE META_JSON TOPLEVEL"; exit 10; }
  [ -x "$1/switch" ] || { log "$1 is not a fleet deployment package (no switch script)"; exit 10; }
  id=link-$$
  if [ "$(readlink -f "$profile" 2>/dev/null)" = "$(readlink -f "$3")" ]; then g=switch; else g=test; fi
  link_package "$1" "$g" "$2" "$3"
  exit 0 ;;
result)
  cat "$state/result-$1" 2>/dev/null || echo unknown; exit 0 ;;
confirm)
  id=$1
  if [ -e "$state/pending-$id" ] && rm "$state/pending-$id" 2>/dev/null; then
    disarm_watchdog
    rm -f "$state/deploy-$id"
    set_result confirmed; exit 0
  fi
  # Confirmed already: by an earlier confirm whose answer was lost, or taken over by a later apply.
  [ "$(cat "$state/result-$id" 2>/dev/null)" = confirmed ] && exit 0
  log "deployment $id is not pending (result: $(cat "$state/result-$id" 2>/dev/null || echo unknown))"; exit 3 ;;
abort)
  id=$1
  # As the watchdog: never in the middle of an apply.
  exec 8>"$state/apply.lock"
  command -v flock >/dev/null 2>&1 && flock -w 900 8
  if [ -e "$state/pending-$id" ] && rm "$state/pending-$id" 2>/dev/null; then
    disarm_watchdog
    . "$state/deploy-$id"
    log "deployment $id failed its health checks; rolling back"
    if undo; then set_result rolled-back; exit 0; fi
    set_result rollback-failed; exit 101
  fi
  log "deployment $id is not pending (result: $(cat "$state/result-$id" 2>/dev/null || echo unknown))"; exit 3 ;;
watchdog)
  id=$1; sleep "$2"; fire ;;
watchdog-fire)
  id=$1; fire ;;
rollback)
  cur=$(gen_of "$profile") || { log "no system profile"; exit 10; }
  if [ -n "${1:-}" ]; then # `fleet rollback --to GEN`
    prev=$1
    case "$prev" in *[!0-9]*) log "not a generation number: $prev"; exit 10 ;; esac
    [ -e "$profile-$prev-link" ] || { log "$profile has no generation $prev (nix-env -p $profile --list-generations lists them)"; exit 10; }
  else
    prev=$(nix-env -p "$profile" --list-generations | awk -v c="$cur" '$1 < c { p = $1 } END { print p }')
    [ -n "$prev" ] || { log "no generation before $cur to roll back to"; exit 10; }
  fi
  nix-env -p "$profile" --switch-generation "$prev" >&2 || exit 101
  sys=$(readlink -f "$profile")
  run_stc "$sys" switch; rc=$?
  [ $rc -eq 0 ] || [ $rc -eq 4 ] || exit 101
  rec="$records/${sys##*/}.json"
  pkg=$(sed -n 's/.*"package": *"\([^"]*\)".*/\1/p' "$rec" 2>/dev/null)
  if [ -n "$pkg" ] && [ -e "$pkg" ]; then
    nix-env -p "$pkg_profile" --set "$pkg" >&2 || warn "setting the package profile failed"
    link_to "$pkg" /etc/nixos/current-configuration 2>/dev/null || warn "could not link /etc/nixos/current-configuration"
  else
    warn "no deployment package is known for generation $prev; /etc/nixos/current-configuration is left as it is"
  fi
  log "rolled back from generation $cur to $prev" ;;
*) log "unknown mode ${mode}"; exit 10 ;;
esac
