//! `fleet rollback`: switch the selected hosts to their previous system profile generation
//! (or `--to GEN`)
//! (profile + `switch-to-configuration switch`, and the deployment package of that generation
//! back at `/etc/nixos/current-configuration`), with apply's progress, summary and exit codes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use fleet_executor::facts::read_facts;
use fleet_executor::{deploy, run_hosts, CancellationToken, HostOutcome, LogStream, Phase, Stdin};

use crate::args::{GlobalArgs, RollbackArgs};
use crate::error::{CliError, CommandError};
use crate::remote::{self, Remote};
use crate::report::{self};
use crate::{exit, gather, load, signals, term};

/// The current system before and after, per host.
type Systems = Arc<Mutex<BTreeMap<String, (Option<String>, Option<String>)>>>;

pub fn run(global: &GlobalArgs, args: &RollbackArgs) -> Result<u8, CommandError> {
    let inventory = load::inventory(global)?;
    let hosts = load::selected(&inventory, global)?;
    signals::runtime()?
        .block_on(async {
            let cancel = CancellationToken::new();
            signals::on_ctrl_c(cancel.clone());
            let remote = Remote::new(global, &hosts, true).await?;
            if !args.yes && term::stdin_is_tty() {
                let targets = preview(&remote, &hosts, args.to, global.parallel, &cancel).await;
                if cancel.is_cancelled() {
                    return Err(CliError::Interrupted);
                }
                let n = targets.iter().filter(|(_, t)| t.is_ok()).count();
                if n == 0 {
                    errln!("fleet: no host has a generation to roll back to; nothing was changed");
                    return Ok(exit::FAILURE);
                }
                let question = format!("Roll back {n} host{}?", if n == 1 { "" } else { "s" });
                if !term::confirm_async(question).await {
                    errln!("fleet: nothing was changed");
                    return Ok(exit::DECLINED);
                }
            }
            let (_, sink, reporter) = report::start_run(global.json, &hosts);
            let systems: Systems = Arc::default();
            let jobs = hosts.iter().map(|h| {
                (
                    h.name.to_string(),
                    (
                        remote::target(h),
                        remote.privilege(h),
                        remote.connector.clone(),
                    ),
                )
            });
            let seen = systems.clone();
            let to = args.to;
            let outcomes = run_hosts(jobs, global.parallel, cancel.clone(), sink, move |ctx| {
                let seen = seen.clone();
                async move {
                    let (target, privilege, connector) = ctx.host;
                    let ev = ctx.events;
                    let _ = ev.phase(Phase::Connecting).await;
                    let conn = match connector.connect(&target).await {
                        Ok(c) => c,
                        Err(e) => return HostOutcome::failed(&e),
                    };
                    let before = read_facts(&conn).await.ok().and_then(|f| f.current);
                    let _ = ev.phase(Phase::RollingBack).await;
                    let r = deploy::rollback_to(&conn, &privilege, to).await;
                    let after = read_facts(&conn).await.ok().and_then(|f| f.current);
                    conn.close().await;
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(ctx.name, (before, after));
                    match r {
                        Ok(log) => {
                            for line in log.lines().filter(|l| !l.trim().is_empty()) {
                                let _ = ev.log(LogStream::Stderr, line).await;
                            }
                            HostOutcome::Applied
                        }
                        Err(e) => HostOutcome::failed(&e),
                    }
                }
            })
            .await;
            let tracks = reporter.await.unwrap_or_default();
            let systems = systems.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let rows = report::rows_of(outcomes, &tracks, Some("rolled-back"), |name| {
                systems.get(name).cloned().unwrap_or_default()
            });
            report::summary(&rows, global.json);
            Ok(report::exit_code(&rows, cancel.is_cancelled(), false))
        })
        .map_err(Into::into)
}

/// The previous generation of the system profile: `GEN STORE-PATH` (read as the login user).
const PREVIOUS: &str = r#"p=/nix/var/nix/profiles/system
cur=$(readlink "$p" | sed -n 's/^system-\([0-9]*\)-link$/\1/p')
prev=$(for l in "$p"-*-link; do echo "${l##*/}"; done | sed -n 's/^system-\([0-9]*\)-link$/\1/p' | sort -n | awk -v c="$cur" '$1 < c { p = $1 } END { print p }')
[ -n "$prev" ] && echo "$prev $(readlink -f "$p-$prev-link")""#;

/// Generation `$1` of the system profile, if it exists: `GEN STORE-PATH`.
const CHOSEN: &str = r#"p=/nix/var/nix/profiles/system
[ -e "$p-$1-link" ] && echo "$1 $(readlink -f "$p-$1-link")""#;

/// Shows what each host would go back to (on stderr) and returns, per host, the previous
/// generation and its system, or why there is none.
async fn preview(
    remote: &Remote,
    hosts: &[&fleet_inventory::Host],
    to: Option<u64>,
    parallel: usize,
    cancel: &CancellationToken,
) -> Vec<(String, Result<(String, String), String>)> {
    let reached = gather::connect(remote, hosts, parallel, cancel, &|_| {}).await;
    let mut out = Vec::new();
    errln!("fleet rollback would switch:");
    for (name, r) in reached {
        let target = match r {
            Err(e) => Err(e.to_string()),
            Ok(r) => {
                let script = match to {
                    None => PREVIOUS.to_owned(),
                    Some(g) => format!("sh -c {} sh {g}", fleet_executor::quote(CHOSEN)),
                };
                let prev = r
                    .conn
                    .exec(&script, &fleet_executor::Privilege::None, Stdin::None)
                    .await;
                r.conn.close().await;
                let now = match (r.facts.generation, &r.facts.current) {
                    (Some(g), Some(c)) => {
                        format!("generation {g} {}", fleet_planner::short_path(c))
                    }
                    (_, Some(c)) => fleet_planner::short_path(c),
                    _ => "no system".to_owned(),
                };
                match prev {
                    Ok(o) if o.success() => {
                        let line = o.stdout_lossy();
                        let (g, sys) = line.trim().split_once(' ').unwrap_or(("?", ""));
                        Ok((
                            now,
                            format!("generation {g} {}", fleet_planner::short_path(sys)),
                        ))
                    }
                    Ok(_) => Err(match to {
                        None => format!("{now}, no earlier generation"),
                        Some(g) => format!("{now}, no generation {g}"),
                    }),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        match &target {
            Ok((now, back)) => errln!("  {name}: {now} → {back}"),
            Err(why) => errln!("  {name}: nothing to roll back to ({why})"),
        }
        out.push((name.to_string(), target));
    }
    out
}
