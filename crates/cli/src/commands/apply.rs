//! `fleet apply [GOAL|PLAN.json]`: plan (or load a saved plan and check every host against it),
//! then per host in parallel: copy what it lacks, activate with automatic rollback and
//! confirmation, link the deployment package, record the deployment. One summary at the end;
//! the exit code says whether any host failed (docs/cli.md).

use std::collections::BTreeSet;
use std::time::Duration;

use fleet_executor::apply::{ApplyHost, ApplyOptions, Run};
use fleet_executor::deploy::{self, Activation, DeploymentRecord, Goal, OnFailedUnits};
use fleet_executor::reboot::RebootSpec;
use fleet_executor::{CancellationToken, EventKind, HostEvents, HostOutcome};
use fleet_inventory::Host;
use fleet_planner::{
    check_still_valid, decide, render, Action, ApplyPolicy, CopyRoute, Decision, HostPolicy, Plan,
    RebootWhen, RenderOptions,
};
use fleet_store::StorePath;

use crate::args::{self, ApplyArgs, ApplyTarget, GlobalArgs};
use crate::desired::fleet_dir;
use crate::error::{CliError, CommandError};
use crate::events::Events;
use crate::planning::{self, Source};
use crate::record::Provenance;
use crate::remote::Remote;
use crate::report::{self, Row};
use crate::rollout::{self, apply_in_waves, Rollout};
use crate::{checks, exit, load, signals, term};

pub fn run(global: &GlobalArgs, args: &ApplyArgs) -> Result<u8, CommandError> {
    let (goal, saved) = match args.target() {
        ApplyTarget::Goal(g) => (g, None),
        ApplyTarget::Plan(path) => {
            if !path.is_file() {
                return Err(CliError::NoSuchPlan { target: path }.into());
            }
            let bad = |source: Box<dyn std::error::Error + Send + Sync>| CliError::BadPlan {
                path: path.clone(),
                source,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| bad(Box::new(e)))?;
            let plan = Plan::from_json(&text).map_err(|e| bad(Box::new(e)))?;
            let goal = match plan.hosts.first().map(|h| h.goal) {
                Some(fleet_planner::Goal::Boot) => args::Goal::Boot,
                Some(fleet_planner::Goal::Test) => args::Goal::Test,
                Some(fleet_planner::Goal::DryActivate) => args::Goal::DryActivate,
                _ => args::Goal::Switch,
            };
            (goal, Some(plan))
        }
    };
    if args.rollback_succeeded && goal == args::Goal::Test {
        return Err(CliError::RollbackSucceededWithTest.into());
    }
    let inventory = load::inventory(global)?;
    let mut hosts = load::selected(&inventory, global)?;
    if let Some(plan) = &saved {
        hosts = hosts_of_plan(plan, hosts, !global.on.is_empty())?;
    }
    let mut rollout = Rollout {
        batch: args.batch,
        canary: match &args.canary {
            Some(sel) => inventory
                .select(Some(sel))?
                .iter()
                .map(|h| h.name.to_string())
                .collect(),
            None => Vec::new(),
        },
        max_failures: args.max_failures,
        rollback_succeeded: args.rollback_succeeded,
        reboots: Default::default(),
    };
    let dir = fleet_dir(&global.file);
    let provenance = Provenance::now(&dir);
    let mut secrets = crate::secrets::for_hosts(&inventory, &hosts, &dir)?;
    signals::runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        signals::on_ctrl_c(cancel.clone());
        let remote = Remote::new(global, &hosts, true).await?;
        let events = Events::for_hosts(global.json, &hosts);
        let source = match &saved {
            Some(plan) => Source::Saved(plan),
            None => Source::Build,
        };
        let options = planning::options(goal, args.specialisation.as_deref());
        let goal = options.goal;
        let mut planned = planning::make(
            global, &inventory, &hosts, &dir, &remote, &events, source, &options, true, &cancel,
        )
        .await?;
        crate::secrets::plan(&mut planned.plan, &planned.gathered, &secrets).await;
        crate::relay::assign(&mut planned.plan, &inventory, args.no_relay);
        if global.json {
            outln!("{}", report::json_line("plan", "plan", &planned.plan));
        } else {
            let changing = |name: &str| {
                planned
                    .plan
                    .host(name)
                    .is_some_and(|h| matches!(h.action, Action::Install | Action::Update))
            };
            errp!(
                "{}{}{}",
                render(&planned.plan, RenderOptions::default()),
                checks::plan_text(&hosts, changing),
                rollout::reboot_text(&planned.plan, args.reboot, goal, |name| {
                    planned
                        .gathered
                        .iter()
                        .find(|(n, _)| n == name)
                        .and_then(|(_, r)| r.as_ref().ok())
                        .and_then(|r| r.facts.bootloader.as_deref())
                })
            );
        }
        let changing = planned
            .plan
            .hosts
            .iter()
            .filter(|h| {
                matches!(h.action, Action::Install | Action::Update)
                    || h.secrets
                        .iter()
                        .any(|s| s.change != fleet_planner::SecretChange::Unchanged)
            })
            .count();
        if changing > 0 && !args.yes && term::stdin_is_tty() {
            let question = format!(
                "Apply to {changing} host{}?",
                if changing == 1 { "" } else { "s" }
            );
            if !term::confirm_async(question).await {
                planning::close_all(planned.gathered).await;
                errln!("fleet: nothing was changed");
                return Ok(exit::DECLINED);
            }
        }
        let (start, sink, reporter) = events.start_hosts();

        // Decide per host (fleet_planner::decide): apply, or an outcome known now (unchanged,
        // error, refused).
        let policy = ApplyPolicy {
            goal,
            reboot: args.reboot.map(|w| match w {
                args::RebootWhen::Needed => RebootWhen::Needed,
                args::RebootWhen::Always => RebootWhen::Always,
            }),
            rollback: !args.no_rollback,
            confirm_timeout: args.confirm_timeout.map(Duration::from_secs),
            compress: !args.no_compress,
        };
        let mut decided: Vec<Option<(HostOutcome, &'static str)>> = Vec::new();
        let mut to_apply = Vec::new();
        let mut refused = false;
        for ((host, hp), (_, reached)) in
            hosts.iter().zip(&planned.plan.hosts).zip(planned.gathered)
        {
            let drift = match (&saved, &reached) {
                (Some(plan), Ok(r)) => plan
                    .host(&hp.name)
                    .map(|saved_host| check_still_valid(saved_host, &r.remote_state()))
                    .transpose()
                    .err(),
                _ => None,
            };
            let checks = checks::spec(host);
            let decision = decide(
                hp,
                drift,
                &policy,
                HostPolicy {
                    confirm_timeout: host.confirm_timeout,
                    checks_timeout: checks.as_ref().map(|c| c.timeout),
                },
            );
            // Known now: an outcome. To apply: its steps.
            let known = match decision {
                Decision::Refused { drift } => {
                    refused = true;
                    let outcome = HostOutcome::Failed {
                        error: format!("{drift}; make a new plan"),
                    };
                    Ok((outcome, "refused"))
                }
                Decision::Unchanged => Ok((HostOutcome::Unchanged, "unchanged")),
                Decision::Failed { error } => Ok((HostOutcome::Failed { error }, "failed")),
                Decision::Apply(steps) => Err(steps),
            };
            let mut host_secrets = secrets.remove(hp.name.as_str()).unwrap_or_default();
            match (known, reached) {
                (Ok(k), reached) => {
                    let k = match (&k.0, &reached) {
                        // The system is unchanged, its secrets may not be.
                        (HostOutcome::Unchanged, Ok(r)) if goal != Goal::DryActivate => {
                            let ev = HostEvents::new(
                                hp.name.as_str(),
                                start,
                                sink.clone(),
                                cancel.clone(),
                            );
                            match fleet_executor::secrets::push(
                                &r.conn,
                                &r.privilege,
                                &host_secrets,
                                &ev,
                            )
                            .await
                            {
                                Ok(()) => k,
                                Err(e) => (HostOutcome::failed(&e), "failed"),
                            }
                        }
                        _ => k,
                    };
                    if let Ok(r) = reached {
                        if let Some(s) = r.store {
                            let _ = s.close().await;
                        }
                        r.conn.close().await;
                    }
                    decided.push(Some(k));
                }
                (Err(_), Err(e)) => decided.push(Some((
                    HostOutcome::Failed {
                        error: e.to_string(),
                    },
                    "failed",
                ))),
                (Err(steps), Ok(r)) => {
                    decided.push(None);
                    let (toplevel, package) = (
                        hp.target.clone().unwrap_or_default(),
                        hp.package.clone().unwrap_or_default(),
                    );
                    let goal = steps.goal;
                    if steps.reboot {
                        rollout.reboots.insert(
                            hp.name.to_string(),
                            RebootSpec {
                                toplevel: toplevel.clone(),
                                timeout: Duration::from_secs(args.reboot_timeout),
                                checks: checks.clone(),
                                id: deploy::deployment_id(),
                                undo_profile: true,
                            },
                        );
                    }
                    let missing: BTreeSet<StorePath> = hp
                        .copy
                        .paths
                        .iter()
                        .filter_map(|p| StorePath::new(p.clone()).ok())
                        .collect();
                    to_apply.push(ApplyHost {
                        name: hp.name.to_string(),
                        target: r.target,
                        conn: r.conn,
                        privilege: r.privilege,
                        store: r.store,
                        zstd: steps.route == CopyRoute::Compressed,
                        has: r
                            .current_closure
                            .iter()
                            .filter_map(|p| StorePath::new(p.clone()).ok())
                            .collect(),
                        missing,
                        activation: Activation {
                            goal,
                            record: record(
                                &provenance,
                                &toplevel,
                                &package,
                                goal,
                                planned.desired.get(&hp.name).and_then(|d| d.flake.as_ref()),
                            ),
                            toplevel,
                            package,
                            confirm_timeout: steps.confirm_timeout,
                            auto_rollback: !args.no_rollback,
                            on_failed_units: if args.rollback_on_failed_units {
                                OnFailedUnits::Rollback
                            } else {
                                OnFailedUnits::Keep
                            },
                            install_bootloader: args.install_bootloader,
                            specialisation: hp.specialisation.clone(),
                            activate: hp.activate,
                        },
                        checks,
                        secrets: std::mem::take(&mut host_secrets),
                        relay: steps.relay.clone(),
                    });
                }
            }
        }
        for (host, d) in hosts.iter().zip(&decided) {
            if let Some((outcome, _)) = d {
                let ev = HostEvents::new(host.name.as_str(), start, sink.clone(), cancel.clone());
                let _ = ev
                    .emit(EventKind::Outcome {
                        outcome: outcome.clone(),
                    })
                    .await;
            }
        }
        crate::scale::substitute_first(
            &mut to_apply,
            &planned.plan,
            &planned.desired.infos,
            global.parallel,
            (start, sink.clone(), cancel.clone()),
        )
        .await;
        let relays = crate::relay::connect(
            &remote,
            &inventory,
            to_apply.iter().filter_map(|h| h.relay.clone()).collect(),
        )
        .await;
        let opts = ApplyOptions {
            parallel: global.parallel,
            compress: if args.no_compress {
                None
            } else {
                Some(args.zstd_level.unwrap_or(3))
            },
            adaptive: args.zstd_level.is_none(),
            deltas: !args.no_deltas,
            relays,
            ..ApplyOptions::default()
        };
        let (applied, waves) = apply_in_waves(
            remote.connector.clone(),
            &planned.desired.infos,
            to_apply,
            &opts,
            Run {
                cancel: cancel.clone(),
                sink,
                start,
            },
            &rollout,
        )
        .await;
        opts.relays.close().await;
        let tracks = reporter.await.unwrap_or_default();

        let mut applied = applied.into_iter();
        let rows: Vec<Row> = hosts
            .iter()
            .zip(&planned.plan.hosts)
            .zip(decided)
            .map(|((host, hp), d)| {
                let (outcome, label) = match d {
                    Some((o, label)) => (o, label.to_owned()),
                    None => {
                        let o = applied
                            .next()
                            .map(|(_, o)| o)
                            .unwrap_or(HostOutcome::Failed {
                                error: "no outcome".into(),
                            });
                        let label = report::outcome_kind(&o).to_owned();
                        (o, label)
                    }
                };
                let (_, detail, success) = report::outcome_row(&outcome);
                let new = if success {
                    hp.target.clone()
                } else {
                    hp.current.clone()
                };
                Row {
                    name: host.name.to_string(),
                    outcome: label,
                    detail,
                    old: hp.current.clone(),
                    new,
                    seconds: tracks
                        .get(host.name.as_str())
                        .and_then(report::Track::seconds),
                    success,
                }
            })
            .collect();
        report::summary(&rows, global.json);
        if global.json {
            outln!("{}", report::json_line("waves", "waves", &waves));
        } else {
            errp!("{}", rollout::describe(&waves));
        }
        Ok(report::exit_code(&rows, cancel.is_cancelled(), refused))
    })
}

/// The hosts a saved plan is applied to: the plan's hosts (all of them, or those `--on`
/// selects). A selected host that is not in the plan is an error.
fn hosts_of_plan<'i>(
    plan: &Plan,
    selected: Vec<&'i Host>,
    explicit: bool,
) -> Result<Vec<&'i Host>, CliError> {
    let (in_plan, missing): (Vec<&Host>, Vec<&Host>) = selected
        .into_iter()
        .partition(|h| plan.host(h.name.as_str()).is_some());
    if explicit && !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|h| h.name.as_str()).collect();
        return Err(CliError::NotInPlan {
            hosts: names.join(", "),
        });
    }
    Ok(in_plan)
}

fn record(
    p: &Provenance,
    toplevel: &str,
    package: &str,
    goal: Goal,
    flake: Option<&fleet_planner::FlakeLock>,
) -> DeploymentRecord {
    DeploymentRecord {
        commit: p.commit.clone(),
        dirty: p.dirty,
        by: p.by.clone(),
        at: p.at.clone(),
        toplevel: toplevel.to_owned(),
        package: package.to_owned(),
        goal,
        fleet_version: env!("CARGO_PKG_VERSION").to_owned(),
        id: deploy::deployment_id(),
        flake: flake.and_then(|f| serde_json::to_value(f).ok()),
    }
}
