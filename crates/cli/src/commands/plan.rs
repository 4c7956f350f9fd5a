//! `fleet plan`: build the selected hosts here, read each host's state, and show what `apply`
//! would do (`--json`: the plan as JSON; `--out FILE`: also save it for `fleet apply FILE`).
//! Exit 1 when a host could not be planned (the others are planned anyway).

use std::io::Write;

use fleet_executor::CancellationToken;
use fleet_planner::{render, Action, RenderOptions};

use crate::args::{GlobalArgs, PlanArgs};
use crate::desired::fleet_dir;
use crate::error::{output, CliError, CommandError};
use crate::events::Events;
use crate::planning::{self, Source};
use crate::remote::Remote;
use crate::{exit, load, signals, term};

pub fn run(global: &GlobalArgs, args: &PlanArgs) -> Result<u8, CommandError> {
    let inventory = load::inventory(global)?;
    let hosts = load::selected(&inventory, global)?;
    let dir = fleet_dir(&global.file);
    let secrets = crate::secrets::for_hosts(&inventory, &hosts, &dir)?;
    let planned = signals::runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        signals::on_ctrl_c(cancel.clone());
        let remote = Remote::new(global, &hosts, false).await?;
        let mut planned = planning::make(
            global,
            &inventory,
            &hosts,
            &dir,
            &remote,
            &if global.json {
                Events::quiet()
            } else {
                Events::new(crate::report::Mode::Plain, Vec::new())
            },
            Source::Build,
            &planning::options(args.goal, args.specialisation.as_deref()),
            false,
            &cancel,
        )
        .await?;
        crate::secrets::plan(&mut planned.plan, &planned.gathered, &secrets).await;
        crate::relay::assign(&mut planned.plan, &inventory, args.no_relay);
        for (hp, host) in planned.plan.hosts.iter_mut().zip(&hosts) {
            if matches!(hp.action, Action::Install | Action::Update) && hp.goal.activates() {
                hp.checks = crate::checks::labels(host);
            }
        }
        for (_, reached) in &planned.gathered {
            if let Ok(r) = reached {
                r.conn.close().await;
            }
        }
        Ok::<_, CliError>(planned)
    })?;
    let plan = planned.plan;
    if let Some(path) = &args.out {
        std::fs::write(path, plan.to_json()).map_err(|source| CliError::WriteFile {
            path: path.clone(),
            source,
        })?;
        errln!("fleet: plan saved to {path}; apply it with `fleet apply {path}`");
    }
    let text = if global.json {
        crate::envelope::document("plan", Some("plan"), &plan)
    } else {
        let changing = |name: &str| {
            plan.host(name)
                .is_some_and(|h| matches!(h.action, Action::Install | Action::Update))
        };
        render(
            &plan,
            RenderOptions {
                color: term::stdout_color(global.color),
            },
        ) + &crate::checks::plan_text(&hosts, changing)
    };
    output(std::io::stdout().lock().write_all(text.as_bytes()))?;
    Ok(if plan.hosts.iter().any(|h| h.action == Action::Error) {
        exit::FAILURE
    } else {
        exit::OK
    })
}
