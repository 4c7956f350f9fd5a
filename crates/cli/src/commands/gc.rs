//! `fleet gc`: on every selected host (as root, in parallel), delete old generations of the
//! system profile and of fleet's deployment-package profile, then collect garbage
//! (`nix-collect-garbage` semantics restricted to those two profiles), reporting what was
//! deleted and the space freed.
//!
//! Always kept: the generation the system profile points at (the boot default), the one
//! `fleet rollback` would go to (the one before it), and those of the running
//! (`/run/current-system`) and booted (`/run/booted-system`) systems; in the package profile,
//! the current generation and every generation holding the package recorded for a kept
//! system. `--older-than` keeps, besides, every generation younger than that.

use fleet_executor::{command_line, error_chain, CancellationToken, Stdin};
use fleet_inventory::Host;
use serde::Serialize;

use crate::args::{GcArgs, GlobalArgs};
use crate::error::{CliError, CommandError};
use crate::remote::{self, Remote};
use crate::{exit, load, signals};

/// Run as root: `sh -c GC sh AGE_SECONDS DRY(0|1)`. Prints `keep system N WHY`, `del system
/// N`, `del package N`, and after the collection `freed <nix's summary line>`.
const GC: &str = r#"set -u
p=/nix/var/nix/profiles/system pkg=/nix/var/nix/profiles/fleet/deployment
records=/nix/var/fleet/records
age=$1 dry=$2
now=$(date +%s)
gens() { for l in "$1"-*-link; do [ -L "$l" ] || continue; n=${l##*/}; n=${n%-link}; n=${n##*-}
  case "$n" in ''|*[!0-9]*) ;; *) echo "$n" ;; esac; done | sort -n; }
genof() { readlink "$1" 2>/dev/null | sed -n 's/.*-\([0-9]*\)-link$/\1/p'; }
young() { [ "$age" -gt 0 ] && [ $(( now - $(stat -c %Y "$1") )) -lt "$age" ]; }
cur=$(readlink -f /run/current-system 2>/dev/null) booted=$(readlink -f /run/booted-system 2>/dev/null)
def=$(genof "$p")
prev=$(gens "$p" | awk -v c="${def:-0}" '$1 < c { q = $1 } END { print q }')
del_sys= keep_pkgs=
for n in $(gens "$p"); do
  s=$(readlink -f "$p-$n-link")
  why=
  if [ "$n" = "$def" ]; then why=default
  elif [ "$n" = "$prev" ]; then why=rollback-target
  elif [ "$s" = "$cur" ]; then why=current
  elif [ "$s" = "$booted" ]; then why=booted
  elif young "$p-$n-link"; then why=younger
  fi
  if [ -n "$why" ]; then
    echo "keep system $n $why"
    k=$(sed -n 's/.*"package": *"\([^"]*\)".*/\1/p' "$records/${s##*/}.json" 2>/dev/null)
    [ -n "$k" ] && keep_pkgs="$keep_pkgs $k"
  else
    echo "del system $n"; del_sys="$del_sys $n"
  fi
done
pdef=$(genof "$pkg") del_pkg=
for n in $(gens "$pkg"); do
  t=$(readlink -f "$pkg-$n-link") keep=
  [ "$n" = "$pdef" ] && keep=1
  for k in $keep_pkgs; do [ "$k" = "$t" ] && keep=1; done
  young "$pkg-$n-link" && keep=1
  if [ -z "$keep" ]; then echo "del package $n"; del_pkg="$del_pkg $n"; fi
done
[ "$dry" = 1 ] && exit 0
if [ -n "$del_sys" ]; then nix-env -p "$p" --delete-generations $del_sys >&2 || exit 1; fi
if [ -n "$del_pkg" ]; then nix-env -p "$pkg" --delete-generations $del_pkg >&2 || exit 1; fi
out=$(nix-store --gc 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
echo "freed $(printf '%s\n' "$out" | grep 'freed' | tail -n 1)"
"#;

/// A generation kept, and why.
#[derive(Debug, Serialize)]
struct Kept {
    generation: u64,
    /// `default`, `rollback-target`, `current`, `booted` or `younger`.
    why: String,
}

/// One host's result (also the `--json` shape).
#[derive(Debug, Default, Serialize)]
struct HostGc {
    name: String,
    /// System generations deleted (or that would be, with `--dry-run`).
    deleted_system: Vec<u64>,
    /// Generations of the deployment-package profile deleted.
    deleted_packages: Vec<u64>,
    kept_system: Vec<Kept>,
    /// Nix's summary (`N store paths deleted, X MiB freed`); `null` with `--dry-run`.
    freed: Option<String>,
    error: Option<String>,
}

pub fn run(global: &GlobalArgs, args: &GcArgs) -> Result<u8, CommandError> {
    let age = match &args.older_than {
        None => 0,
        Some(s) => parse_age(s).ok_or_else(|| CliError::BadAge { given: s.clone() })?,
    };
    let inventory = load::inventory(global)?;
    let hosts = load::selected(&inventory, global)?;
    let cmd = format!(
        "sh -c {} sh {}",
        fleet_executor::quote(GC),
        command_line([age.to_string(), u8::from(args.dry_run).to_string()])
    );
    let results = signals::runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        signals::on_ctrl_c(cancel.clone());
        let remote = Remote::new(global, &hosts, true).await?;
        remote::each_host(
            &hosts,
            global.parallel,
            &cancel,
            |h| gc_one(&remote, h, &cmd, &cancel),
            |r| {
                if !global.json {
                    print_host(r, args.dry_run);
                }
            },
        )
        .await
    })?;
    if global.json {
        outln!(
            "{}",
            crate::envelope::document("gc", Some("hosts"), &results).trim_end()
        );
    }
    Ok(if results.iter().all(|r| r.error.is_none()) {
        exit::OK
    } else {
        exit::FAILURE
    })
}

/// `30d`, `12h`, `2w`, `90m`, `45s` → seconds.
fn parse_age(s: &str) -> Option<u64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&v| v > 0)
}

async fn gc_one(remote: &Remote, host: &Host, cmd: &str, cancel: &CancellationToken) -> HostGc {
    let mut r = HostGc {
        name: host.name.to_string(),
        ..HostGc::default()
    };
    let privilege = remote.privilege(host);
    let work = async {
        let conn = remote
            .connector
            .connect(&remote::target(host))
            .await
            .map_err(|e| format!("unreachable: {}", error_chain(&e)))?;
        let out = conn.exec(cmd, &privilege, Stdin::None).await;
        conn.close().await;
        out.map_err(|e| error_chain(&e))
    };
    let out = tokio::select! {
        o = work => o,
        () = cancel.cancelled() => Err("interrupted".to_owned()),
    };
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    for line in out.stdout_lossy().lines() {
        let w: Vec<&str> = line.splitn(4, ' ').collect();
        let num = |i: usize| w.get(i).and_then(|n| n.parse::<u64>().ok());
        match (w.first().copied(), w.get(1).copied()) {
            (Some("del"), Some("system")) => r.deleted_system.extend(num(2)),
            (Some("del"), Some("package")) => r.deleted_packages.extend(num(2)),
            (Some("keep"), Some("system")) => {
                if let (Some(generation), Some(why)) = (num(2), w.get(3)) {
                    r.kept_system.push(Kept {
                        generation,
                        why: (*why).to_owned(),
                    });
                }
            }
            (Some("freed"), _) => r.freed = Some(line["freed ".len()..].trim().to_owned()),
            _ => {}
        }
    }
    if !out.success() {
        r.error = Some(format!(
            "garbage collection failed: {}",
            out.stderr_lossy().trim()
        ));
    }
    r
}

fn list(v: &[u64]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

fn print_host(r: &HostGc, dry_run: bool) {
    if let Some(e) = &r.error {
        outln!("{}: failed: {e}", r.name);
        return;
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    let kept: Vec<String> = r
        .kept_system
        .iter()
        .map(|k| format!("{} ({})", k.generation, k.why))
        .collect();
    outln!(
        "{}: {verb} system generations {}, deployment generations {}; kept {}",
        r.name,
        list(&r.deleted_system),
        list(&r.deleted_packages),
        if kept.is_empty() {
            "none".to_owned()
        } else {
            kept.join(", ")
        }
    );
    match &r.freed {
        Some(f) if !f.is_empty() => outln!("{}: {f}", r.name),
        Some(_) => outln!("{}: garbage collected", r.name),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::parse_age;

    #[test]
    fn ages() {
        assert_eq!(parse_age("30d"), Some(30 * 86_400));
        assert_eq!(parse_age("12h"), Some(12 * 3_600));
        assert_eq!(parse_age("2w"), Some(14 * 86_400));
        assert_eq!(parse_age("45s"), Some(45));
        for bad in ["", "d", "30", "30x", "-1d", "0d", "1.5d"] {
            assert_eq!(parse_age(bad), None, "{bad}");
        }
    }
}
