//! `fleet check`: run the selected hosts' health checks (fleet.toml's `checks`) against what
//! they run now, without changing anything: `ok`, or `failed` naming the check and its output.

use fleet_executor::health::run_checks;
use fleet_executor::{run_hosts, CancellationToken, HostOutcome, LogStream, Phase};

use crate::args::{CheckArgs, GlobalArgs};
use crate::error::CommandError;
use crate::remote::{self, Remote};
use crate::report::{self};
use crate::{checks, load, signals};

pub fn run(global: &GlobalArgs, _args: &CheckArgs) -> Result<u8, CommandError> {
    let inventory = load::inventory(global)?;
    let hosts = load::selected(&inventory, global)?;
    signals::runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        signals::on_ctrl_c(cancel.clone());
        let remote = Remote::new(global, &hosts, true).await?;
        let (_, sink, reporter) = report::start_run(global.json, &hosts);
        let jobs = hosts.iter().map(|h| {
            (
                h.name.to_string(),
                (
                    remote::target(h),
                    remote.privilege(h),
                    remote.connector.clone(),
                    checks::spec(h),
                ),
            )
        });
        let outcomes = run_hosts(
            jobs,
            global.parallel,
            cancel.clone(),
            sink,
            |ctx| async move {
                let (target, privilege, connector, spec) = ctx.host;
                let ev = ctx.events;
                let Some(spec) = spec else {
                    let _ = ev.log(LogStream::Fleet, "no checks in fleet.toml").await;
                    return HostOutcome::Ok;
                };
                let _ = ev.phase(Phase::Connecting).await;
                let conn = match connector.connect(&target).await {
                    Ok(c) => c,
                    Err(e) => return HostOutcome::failed(&e),
                };
                let _ = ev.phase(Phase::Checking).await;
                let r = run_checks(&conn, &privilege, &spec).await;
                conn.close().await;
                match r {
                    Ok(()) => {
                        let _ = ev
                            .log(
                                LogStream::Fleet,
                                format!("{} health checks passed", spec.probes.len()),
                            )
                            .await;
                        HostOutcome::Ok
                    }
                    Err(f) => HostOutcome::Failed {
                        error: format!("check {} failed: {}", f.check, f.output),
                    },
                }
            },
        )
        .await;
        let tracks = reporter.await.unwrap_or_default();
        let rows = report::rows_of(outcomes, &tracks, None, |_| (None, None));
        report::summary(&rows, global.json);
        Ok(report::exit_code(&rows, cancel.is_cancelled(), false))
    })
}
