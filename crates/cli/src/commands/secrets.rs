//! `fleet secrets push`: place the selected hosts' secrets (and delete the stale ones) without
//! building or activating anything, with apply's progress, summary and exit codes. For hosts
//! that rebooted and lost `/run/keys` (a tmpfs); `fleet status` shows which miss secrets.

use std::sync::Arc;

use fleet_executor::{run_hosts, secrets, CancellationToken, HostOutcome, Phase};

use crate::args::{GlobalArgs, SecretsCommand};
use crate::desired::fleet_dir;
use crate::error::CommandError;
use crate::remote::{self, Remote};
use crate::report::{self};
use crate::{load, signals};

pub fn run(global: &GlobalArgs, command: &SecretsCommand) -> Result<u8, CommandError> {
    let SecretsCommand::Push = command;
    let inventory = load::inventory(global)?;
    let hosts = load::selected(&inventory, global)?;
    let dir = fleet_dir(&global.file);
    let mut contents = crate::secrets::for_hosts(&inventory, &hosts, &dir)?;
    signals::runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        signals::on_ctrl_c(cancel.clone());
        let remote = Remote::new(global, &hosts, true).await?;
        let (_, sink, reporter) = report::start_run(global.json, &hosts);
        let jobs: Vec<_> = hosts
            .iter()
            .map(|h| {
                let list = contents.remove(h.name.as_str()).unwrap_or_default();
                (
                    h.name.to_string(),
                    (
                        remote::target(h),
                        remote.privilege(h),
                        remote.connector.clone(),
                        Arc::new(list),
                    ),
                )
            })
            .collect();
        let outcomes = run_hosts(
            jobs,
            global.parallel,
            cancel.clone(),
            sink,
            |ctx| async move {
                let (target, privilege, connector, list) = ctx.host;
                let ev = ctx.events;
                let _ = ev.phase(Phase::Connecting).await;
                let conn = match connector.connect(&target).await {
                    Ok(c) => c,
                    Err(e) => return HostOutcome::failed(&e),
                };
                let r = secrets::push(&conn, &privilege, &list, &ev).await;
                conn.close().await;
                match r {
                    Ok(()) => HostOutcome::Applied,
                    Err(e) => HostOutcome::failed(&e),
                }
            },
        )
        .await;
        let tracks = reporter.await.unwrap_or_default();
        let rows = report::rows_of(outcomes, &tracks, Some("pushed"), |_| (None, None));
        report::summary(&rows, global.json);
        Ok(report::exit_code(&rows, cancel.is_cancelled(), false))
    })
}
