//! `fleet reboot`: reboot the selected hosts into their boot default (the system profile's
//! system), wait for each to come back, verify that it booted that system, run its health checks.
//! The order of steps is `fleet apply --reboot`'s (docs/rollout.md).

use std::time::Duration;

use fleet_executor::reboot::{reboot_into, RebootSpec};
use fleet_executor::{deploy, run_hosts, CancellationToken, HostOutcome, Phase, Privilege, Stdin};

use crate::args::{GlobalArgs, RebootArgs};
use crate::error::CliError;
use crate::remote::{self, Remote};
use crate::report::{self};
use crate::{checks, load, signals};

pub fn run(global: &GlobalArgs, args: &RebootArgs) -> Result<u8, CliError> {
    let inventory = load::inventory(global)?;
    let hosts = load::selected(&inventory, global)?;
    let timeout = Duration::from_secs(args.timeout);
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
                    timeout,
                ),
            )
        });
        let outcomes = run_hosts(
            jobs,
            global.parallel,
            cancel.clone(),
            sink,
            |ctx| async move {
                let (target, privilege, connector, checks, timeout) = ctx.host;
                let ev = ctx.events;
                let _ = ev.phase(Phase::Connecting).await;
                let toplevel = match profile_system(&connector, &target, &privilege).await {
                    Ok(t) => t,
                    Err(e) => return HostOutcome::Failed { error: e },
                };
                let spec = RebootSpec {
                    toplevel,
                    timeout,
                    checks,
                    id: deploy::deployment_id(),
                    undo_profile: false,
                };
                reboot_into(&connector, &target, &privilege, &spec, &ev).await
            },
        )
        .await;
        let tracks = reporter.await.unwrap_or_default();
        let rows = report::rows_of(outcomes, &tracks, Some("rebooted"), |_| (None, None));
        report::summary(&rows, global.json);
        Ok(report::exit_code(&rows, cancel.is_cancelled(), false))
    })
}

/// What the host's next boot runs: the system profile's system.
async fn profile_system(
    connector: &fleet_executor::Connector,
    target: &fleet_executor::SshTarget,
    privilege: &Privilege,
) -> Result<String, String> {
    let conn = connector.connect(target).await.map_err(|e| e.to_string())?;
    let out = conn
        .exec(
            "readlink -f /nix/var/nix/profiles/system",
            privilege,
            Stdin::None,
        )
        .await;
    conn.close().await;
    let out = out.map_err(|e| e.to_string())?;
    let sys = out.stdout_lossy().trim().to_owned();
    if out.success() && sys.starts_with("/nix/store/") {
        Ok(sys)
    } else {
        Err("the host has no system profile (/nix/var/nix/profiles/system): nothing to boot".into())
    }
}
