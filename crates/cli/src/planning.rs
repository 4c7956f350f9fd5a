//! The step `fleet plan` and `fleet apply` share: the desired systems (built now, or from a
//! saved plan), each host's state, and the pure plan made of both.

use camino::Utf8Path;
use fleet_executor::CancellationToken;
use fleet_inventory::{Host, Inventory};
use fleet_planner::{HostInput, Plan, PlanOptions};

use crate::args::GlobalArgs;
use crate::desired::{self, Desired};
use crate::error::CliError;
use crate::events::{Events, RunKind};
use crate::gather::{self, Gathered};
use crate::remote::Remote;
use crate::report::Mode;

/// The planner's options for a goal and a `--specialisation` argument.
pub fn options(goal: crate::args::Goal, specialisation: Option<&str>) -> PlanOptions {
    use fleet_planner::{Goal, SpecialisationChoice};
    PlanOptions {
        goal: match goal {
            crate::args::Goal::Switch => Goal::Switch,
            crate::args::Goal::Boot => Goal::Boot,
            crate::args::Goal::Test => Goal::Test,
            crate::args::Goal::DryActivate => Goal::DryActivate,
        },
        specialisation: match specialisation {
            None => SpecialisationChoice::Keep,
            Some("base") => SpecialisationChoice::Base,
            Some(name) => SpecialisationChoice::Named(name.to_owned()),
        },
    }
}

/// Where the desired systems come from.
pub enum Source<'a> {
    /// Evaluate and build fleet.toml now.
    Build,
    /// Exactly the targets of a saved plan.
    Saved(&'a Plan),
}

/// A plan with what it was made from.
pub struct Planned {
    pub plan: Plan,
    pub desired: Desired,
    pub gathered: Gathered,
}

/// Builds (or loads) the desired systems while reaching every host (and opening its store
/// session), then reads each host's store for its desired closure, and plans. Hosts that cannot be
/// built or reached are `error` entries of the plan; only an interruption is an `Err`.
#[allow(clippy::too_many_arguments)]
pub async fn make(
    global: &GlobalArgs,
    inventory: &Inventory,
    hosts: &[&Host],
    fleet_dir: &Utf8Path,
    remote: &Remote,
    events: &Events,
    source: Source<'_>,
    options: &PlanOptions,
    keep_store: bool,
    cancel: &CancellationToken,
) -> Result<Planned, CliError> {
    // The hosts are reached (host keys, login, sudo, facts) while the systems build, so a down
    // host or an unknown host key is reported in seconds; only the store query needs the
    // built closures.
    events.emit(RunKind::Reaching {
        hosts: hosts.iter().map(|h| h.name.to_string()).collect(),
    });
    // Each host's store is asked about its desired closure as soon as the closures are known
    // (its session opened while they build).
    let (closures_tx, closures) = tokio::sync::watch::channel(None);
    let build = async {
        let closures_tx = closures_tx;
        let desired = tokio::select! {
            d = async {
                match source {
                    Source::Build => {
                        desired::build(
                            inventory,
                            hosts,
                            fleet_dir,
                            events,
                            &desired::EvalSettings::of(global),
                        )
                        .await
                    }
                    Source::Saved(plan) => desired::from_plan(plan, hosts).await,
                }
            } => Some(d),
            () = cancel.cancelled() => None,
        };
        if let Some(d) = &desired {
            let _ = closures_tx.send(Some(std::sync::Arc::new(gather::closures(d))));
        }
        // Dropped here: hosts waiting for closures that never come stop waiting.
        desired
    };
    let on = |kind| events.emit(kind);
    let connect = gather::reach_and_query(
        remote,
        hosts,
        global.parallel,
        cancel,
        &on,
        closures,
        keep_store,
    );
    let (desired, mut gathered) = tokio::join!(build, connect);
    let desired = match desired {
        Some(d) if !cancel.is_cancelled() => d,
        _ => {
            close_all(gathered).await;
            return Err(CliError::Interrupted);
        }
    };
    let quiet = matches!(events.mode(), Mode::Json | Mode::Quiet);
    crate::scale::ask_substitutable(&mut gathered, &desired, hosts, global.parallel, quiet).await;
    if cancel.is_cancelled() {
        close_all(gathered).await;
        return Err(CliError::Interrupted);
    }
    let inputs: Vec<HostInput> = desired
        .hosts
        .iter()
        .zip(&gathered)
        .map(|((name, d), (_, g))| HostInput {
            name: name.clone(),
            desired: d.clone(),
            facts: g
                .as_ref()
                .map(gather::Reached::remote_state)
                .map_err(Clone::clone),
        })
        .collect();
    let plan = fleet_planner::plan(&inputs, options);
    Ok(Planned {
        plan,
        desired,
        gathered,
    })
}

/// Ends the sessions of the hosts reached, when the run stops before using them.
pub async fn close_all(gathered: Gathered) {
    for (_, r) in gathered {
        if let Ok(r) = r {
            if let Some(s) = r.store {
                let _ = s.close().await;
            }
            r.conn.close().await;
        }
    }
}
