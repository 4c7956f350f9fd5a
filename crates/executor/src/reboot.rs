//! Rebooting a host into a system and waiting for it (`fleet apply --reboot`, `fleet reboot`).
//!
//! Order (docs/rollout.md): find the system's boot entry (its system profile generation,
//! `nixos-generation-N.conf`); where the bootloader supports a one-time boot (systemd-boot:
//! `bootctl` and the entry in `/boot/loader/entries`), keep the running system's entry the
//! default and boot the new one **once** (`bootctl set-oneshot`), so a system that never comes up
//! is undone by the next power cycle; leave a marker in `/run/fleet` (a tmpfs: gone after a
//! reboot); run the host's own `/run/current-system/sw/bin/systemctl reboot`; wait for SSH to
//! answer and the marker to be gone; check that `/run/booted-system` is the intended system; run
//! the health checks; then make the entry the default (`bootctl set-default`). Checks that fail
//! after a one-shot boot reboot the host again into its previous default.

use std::time::{Duration, Instant};

use crate::fanout::{HostEvents, HostOutcome, LogStream, Phase};
use crate::health::{run_checks, HealthSpec};
use crate::sudo::Privilege;
use crate::{quote, Connection, Connector, SshTarget, Stdin};

/// The host side, run as root with `sh -s MODE ARGS` (POSIX sh).
const SCRIPT: &str = r#"set -u
PATH=/run/current-system/sw/bin:/usr/bin:/bin:$PATH
mode=$1 top=$2 id=$3
gen_of() { # SYSTEM -> the newest system profile generation that is it
  for l in /nix/var/nix/profiles/system-*-link; do
    [ -e "$l" ] || continue
    [ "$(readlink -f "$l")" = "$1" ] || continue
    n=${l##*/system-}; echo "${n%-link}"
  done | sort -n | tail -n 1
}
case $mode in
prepare)
  new=$(gen_of "$top")
  [ -n "$new" ] || { echo "$top is not a generation of the system profile (apply boot first)" >&2; exit 10; }
  old=$(gen_of "$(readlink -f /run/booted-system 2>/dev/null)")
  entry=nixos-generation-$new.conf
  mkdir -p /run/fleet && : > "/run/fleet/reboot-$id" || exit 11
  if command -v bootctl >/dev/null 2>&1 && [ -e "/boot/loader/entries/$entry" ]; then
    if [ -n "$old" ] && [ "$old" != "$new" ] && [ -e "/boot/loader/entries/nixos-generation-$old.conf" ]; then
      bootctl set-default "nixos-generation-$old.conf" >&2 || exit 11
      echo "oneshot $entry nixos-generation-$old.conf"
    else
      echo "default $entry"
    fi
    bootctl set-oneshot "$entry" >&2 || exit 11
  else
    echo "plain $entry"
  fi ;;
reboot)
  command -v systemctl >/dev/null 2>&1 || { echo "no systemctl in /run/current-system/sw/bin" >&2; exit 12; }
  setsid sh -c 'sleep 1; exec systemctl reboot' </dev/null >/dev/null 2>&1 &
  exit 0 ;;
after)
  if [ -e "/run/fleet/reboot-$id" ]; then echo "not-rebooted"; else echo "rebooted $(readlink -f /run/booted-system 2>/dev/null)"; fi ;;
default)
  bootctl set-default "$top" >&2 ;;
undo)
  # Back on the previous system after $top failed: the profile generation that names $top goes
  # (only when it is the newest, i.e. the one this deploy made), the profile points at what
  # booted, and the bootloader is installed again from it (as `nixos-rebuild boot --rollback`).
  booted=$(readlink -f /run/booted-system 2>/dev/null)
  new=$(gen_of "$top"); old=$(gen_of "$booted")
  cur=$(readlink /nix/var/nix/profiles/system); cur=${cur#system-}; cur=${cur%-link}
  [ -n "$new" ] && [ -n "$old" ] && [ "$new" = "$cur" ] && [ "$new" != "$old" ] || exit 0
  nix-env -p /nix/var/nix/profiles/system --switch-generation "$old" >&2 || exit 13
  nix-env -p /nix/var/nix/profiles/system --delete-generations "$new" >&2 || exit 13
  "$booted/bin/switch-to-configuration" boot >&2 || exit 13
  echo "undone generation $new" ;;
esac
"#;

/// How a reboot goes.
#[derive(Debug, Clone)]
pub struct RebootSpec {
    /// The system the host must boot (a generation of its system profile).
    pub toplevel: String,
    /// How long to wait for it to come back (per reboot).
    pub timeout: Duration,
    pub checks: Option<HealthSpec>,
    pub id: String,
    /// This run made the system profile's generation of `toplevel` (`apply --reboot`): when
    /// the host has to go back, that generation goes too, so nothing makes the failed system
    /// the default later. `fleet reboot` leaves the profile as it found it.
    pub undo_profile: bool,
}

async fn script(
    conn: &Connection,
    privilege: &Privilege,
    mode: &str,
    top: &str,
    id: &str,
) -> Result<crate::Output, String> {
    let cmd = format!("sh -s {} {} {}", quote(mode), quote(top), quote(id));
    conn.exec(
        &cmd,
        privilege,
        Stdin::Bytes(bytes::Bytes::from_static(SCRIPT.as_bytes())),
    )
    .await
    .map_err(|e| e.to_string())
}

/// Reboots the host into `spec.toplevel`, waits, verifies, checks, and makes it the default.
pub async fn reboot_into(
    connector: &Connector,
    target: &SshTarget,
    privilege: &Privilege,
    spec: &RebootSpec,
    ev: &HostEvents,
) -> HostOutcome {
    let failed = |error: String| HostOutcome::Failed { error };
    let _ = ev.phase(Phase::Rebooting).await;
    let conn = match connector.connect(target).await {
        Ok(c) => c,
        Err(e) => return HostOutcome::failed(&e),
    };
    let prep = match script(&conn, privilege, "prepare", &spec.toplevel, &spec.id).await {
        Ok(o) if o.success() => o.stdout_lossy(),
        Ok(o) => {
            conn.close().await;
            return failed(format!(
                "could not set the boot entry: {}",
                o.stderr_lossy().trim()
            ));
        }
        Err(e) => return failed(e),
    };
    let words: Vec<&str> = prep.split_whitespace().collect();
    let (oneshot, entry, old_entry) = match words.as_slice() {
        ["oneshot", e, old] => (true, e.to_string(), Some(old.to_string())),
        [_, e] => (false, e.to_string(), None),
        _ => (false, String::from("?"), None),
    };
    let how = if oneshot {
        format!(
            "rebooting into {entry} once (bootctl set-oneshot; the default stays {})",
            old_entry.as_deref().unwrap_or("?")
        )
    } else if words.first() == Some(&"plain") {
        format!(
            "rebooting into {entry}: the bootloader has no one-time boot (no systemd-boot), so a \
             system that does not come up stays the default"
        )
    } else {
        format!("rebooting into {entry}")
    };
    let _ = ev.log(LogStream::Fleet, how).await;
    let booted = reboot_and_wait(&conn, connector, target, privilege, spec).await;
    let conn = match booted {
        Ok((conn, booted)) if booted == spec.toplevel => conn,
        Ok((conn, booted)) => {
            conn.close().await;
            return failed(format!(
                "rebooted, but it booted {booted} instead of {} ({entry})",
                spec.toplevel
            ));
        }
        Err(e) => {
            let then = match (&old_entry, oneshot) {
                (Some(old), true) => format!(
                    "the one-shot entry {entry} was booted once: the next power cycle boots the \
                     previous default {old}; then `fleet rollback` sets the system profile back \
                     too"
                ),
                _ => format!("{entry} is the boot default"),
            };
            return failed(format!("{e}; {then}"));
        }
    };
    let _ = ev
        .log(LogStream::Fleet, format!("booted {}", spec.toplevel))
        .await;
    if let Some(checks) = &spec.checks {
        let _ = ev.phase(Phase::Checking).await;
        if let Err(f) = run_checks(&conn, privilege, checks).await {
            if !oneshot {
                conn.close().await;
                return HostOutcome::CheckFailed {
                    check: f.check,
                    output: f.output,
                    rolled_back: false,
                };
            }
            // The default is still the previous entry: one more reboot returns to it.
            let _ = ev.phase(Phase::RollingBack).await;
            let again = RebootSpec {
                id: format!("{}-back", spec.id),
                ..spec.clone()
            };
            let back = reboot_and_wait(&conn, connector, target, privilege, &again).await;
            return match back {
                Ok((c, booted)) => {
                    let undone = if spec.undo_profile {
                        match script(&c, privilege, "undo", &spec.toplevel, &spec.id).await {
                            Ok(o) if o.success() => String::new(),
                            Ok(o) => format!(
                                "; setting the system profile back failed: {}",
                                o.stderr_lossy().trim()
                            ),
                            Err(e) => format!("; setting the system profile back failed: {e}"),
                        }
                    } else {
                        String::new()
                    };
                    c.close().await;
                    HostOutcome::CheckFailed {
                        check: f.check,
                        output: format!(
                            "{}; rebooted into the previous default again (booted {booted}){undone}",
                            f.output
                        ),
                        rolled_back: undone.is_empty(),
                    }
                }
                Err(e) => failed(format!(
                    "health check {} failed after the reboot ({}), and the reboot back failed: {e}",
                    f.check, f.output
                )),
            };
        }
    }
    if oneshot {
        match script(&conn, privilege, "default", &entry, &spec.id).await {
            Ok(o) if o.success() => {}
            Ok(o) => {
                conn.close().await;
                return failed(format!(
                    "booted and checked, but making {entry} the default failed: {}",
                    o.stderr_lossy().trim()
                ));
            }
            Err(e) => return failed(e),
        }
    }
    conn.close().await;
    HostOutcome::Applied
}

/// Asks the host to reboot over `conn`, then reconnects until it is back (the marker of
/// `spec.id` gone). Returns the new connection and `/run/booted-system`.
async fn reboot_and_wait(
    conn: &Connection,
    connector: &Connector,
    target: &SshTarget,
    privilege: &Privilege,
    spec: &RebootSpec,
) -> Result<(Connection, String), String> {
    // The marker: prepare wrote it for the first reboot; a second one needs it again.
    let marker = format!(
        "mkdir -p /run/fleet && : > /run/fleet/reboot-{}",
        quote(&spec.id)
    );
    let _ = conn.exec(&marker, privilege, Stdin::None).await;
    match script(conn, privilege, "reboot", &spec.toplevel, &spec.id).await {
        Ok(o) if o.success() => {}
        Ok(o) => return Err(format!("could not reboot: {}", o.stderr_lossy().trim())),
        Err(e) => return Err(format!("could not reboot: {e}")),
    }
    conn.close().await;
    let deadline = Instant::now() + spec.timeout;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_secs(5), connector.connect(target)).await
        else {
            last = "SSH does not answer".into();
            continue;
        };
        match script(&c, privilege, "after", &spec.toplevel, &spec.id).await {
            Ok(o) => {
                let out = o.stdout_lossy();
                if let Some(booted) = out.trim().strip_prefix("rebooted ") {
                    return Ok((c, booted.trim().to_owned()));
                }
                if out.trim() == "rebooted" {
                    return Ok((c, String::new()));
                }
                last = "it has not rebooted yet".into();
            }
            Err(e) => last = e,
        }
        c.close().await;
    }
    Err(format!(
        "the host did not come back within {}s after the reboot ({last})",
        spec.timeout.as_secs()
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_script_is_posix_sh() {
        crate::quote::assert_posix_sh(super::SCRIPT);
    }
}
