//! A rollout in waves (`fleet apply --canary SEL --batch N|N% --max-failures K
//! --rollback-succeeded`): each wave is one `apply_all` (shared copy, bounded activations, checks,
//! confirmation); the next starts only when the whole wave has ended. After a wave the rollout
//! stops if a canary failed or `--max-failures` is reached: the hosts not started end `skipped`
//! (their connections closed, nothing copied), and with `--rollback-succeeded` the hosts this run
//! applied are switched back to their previous generation (`fleet rollback`'s step).

use std::sync::Arc;

use fleet_executor::apply::{apply_all, ApplyHost, ApplyOptions, Run};
use fleet_executor::reboot::{reboot_into, RebootSpec};
use fleet_executor::{
    deploy, Connector, EventKind, HostEvents, HostOutcome, LogStream, Phase, RollbackReason,
    SkipReason,
};
use fleet_store::local::LocalStore;
use fleet_store::PathInfo;
use serde::Serialize;

use crate::args::Batch;
use crate::waves::{self, Wave};

/// How the rollout is cut and when it stops.
#[derive(Debug, Clone, Default)]
pub struct Rollout {
    pub batch: Option<Batch>,
    /// Names of the canary hosts (`--canary`), among those selected.
    pub canary: Vec<String>,
    pub max_failures: Option<u64>,
    pub rollback_succeeded: bool,
    /// `--reboot`: the hosts to reboot after their activation (`boot`), by name.
    pub reboots: std::collections::BTreeMap<String, RebootSpec>,
}

/// What happened, wave by wave (for the summary).
#[derive(Debug, Clone, Default, Serialize)]
pub struct WavesReport {
    pub waves: Vec<WaveReport>,
    /// Why the rollout stopped early, if it did.
    pub stopped: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WaveReport {
    pub hosts: Vec<String>,
    pub canary: bool,
    /// `false`: skipped (the rollout had stopped).
    pub started: bool,
}

/// Applies `hosts` wave by wave. Returns one outcome per host, in input order.
pub async fn apply_in_waves(
    connector: Arc<Connector>,
    infos: &[PathInfo],
    hosts: Vec<ApplyHost>,
    opts: &ApplyOptions,
    run: Run,
    rollout: &Rollout,
) -> (Vec<(String, HostOutcome)>, WavesReport) {
    let order: Vec<usize> = (0..hosts.len()).collect();
    let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
    let plan = waves::plan(
        &order,
        |i| rollout.canary.contains(&names[i]),
        rollout.batch,
    );
    let mut slots: Vec<Option<ApplyHost>> = hosts.into_iter().map(Some).collect();
    let mut outcomes: Vec<Option<HostOutcome>> = vec![None; slots.len()];
    let mut report = WavesReport::default();
    let mut failed_total = 0u64;
    let mut applied: Vec<(usize, fleet_executor::SshTarget, fleet_executor::Privilege)> =
        Vec::new();
    let count = plan.len();
    for (n, wave) in plan.iter().enumerate() {
        let wave_names: Vec<String> = wave.hosts.iter().map(|&i| names[i].clone()).collect();
        if let Some(reason) = &report.stopped {
            skip_wave(&mut slots, &mut outcomes, wave, reason, &run).await;
            report.waves.push(WaveReport {
                hosts: wave_names,
                canary: wave.canary,
                started: false,
            });
            continue;
        }
        let mut members = Vec::new();
        for &i in &wave.hosts {
            if let Some(h) = slots[i].take() {
                if count > 1 {
                    let ev = events(&run, &h.name);
                    let what = if wave.canary { " (canary)" } else { "" };
                    let _ = ev
                        .log(LogStream::Fleet, format!("wave {} of {count}{what}", n + 1))
                        .await;
                }
                members.push((i, h.target.clone(), h.privilege.clone(), h));
            }
        }
        let (meta, wave_hosts): (Vec<_>, Vec<ApplyHost>) = members
            .into_iter()
            .map(|(i, t, p, h)| ((i, t, p), h))
            .unzip();
        let results = apply_all(
            connector.clone(),
            &LocalStore::system(),
            infos,
            wave_hosts,
            opts,
            run.clone(),
        )
        .await;
        let results = reboot_wave(&connector, &meta, results, &names, rollout, &run).await;
        let mut failed_in_wave = 0;
        for ((i, target, privilege), (_, o)) in meta.into_iter().zip(results) {
            match &o {
                HostOutcome::Applied | HostOutcome::UnitsFailed { .. } => {
                    applied.push((i, target, privilege))
                }
                _ => {}
            }
            if !o.is_success() {
                failed_in_wave += 1;
            }
            outcomes[i] = Some(o);
        }
        failed_total += failed_in_wave;
        report.waves.push(WaveReport {
            hosts: wave_names,
            canary: wave.canary,
            started: true,
        });
        if run.cancel.is_cancelled() {
            report.stopped = Some("interrupted".to_owned());
        } else if n + 1 < count {
            if let Some(why) =
                waves::stop_reason(wave, failed_in_wave, failed_total, rollout.max_failures)
            {
                report.stopped = Some(format!("stopped after wave {}: {why}", n + 1));
            }
        }
    }
    if rollout.rollback_succeeded && report.stopped.is_some() && !run.cancel.is_cancelled() {
        for (i, target, privilege) in applied {
            let o = roll_back(&connector, &target, &privilege, &names[i], &run).await;
            outcomes[i] = Some(o);
        }
    }
    let out = names
        .into_iter()
        .zip(outcomes)
        .map(|(n, o)| {
            (
                n,
                o.unwrap_or(HostOutcome::Failed {
                    error: "no outcome".into(),
                }),
            )
        })
        .collect();
    (out, report)
}

/// `--reboot`: the wave's applied hosts that need it reboot, in parallel; their outcome becomes
/// the reboot's.
async fn reboot_wave(
    connector: &Arc<Connector>,
    meta: &[(usize, fleet_executor::SshTarget, fleet_executor::Privilege)],
    results: Vec<(String, HostOutcome)>,
    names: &[String],
    rollout: &Rollout,
    run: &Run,
) -> Vec<(String, HostOutcome)> {
    let mut tasks = Vec::new();
    for ((i, target, privilege), (name, o)) in meta.iter().zip(results) {
        let spec = rollout.reboots.get(&names[*i]).cloned();
        let (connector, target, privilege, ev) = (
            connector.clone(),
            target.clone(),
            privilege.clone(),
            events(run, &names[*i]),
        );
        let cancelled = run.cancel.is_cancelled();
        tasks.push(tokio::spawn(async move {
            match (spec, &o) {
                (Some(spec), HostOutcome::Applied) if !cancelled => {
                    let o = reboot_into(&connector, &target, &privilege, &spec, &ev).await;
                    let _ = ev.emit(EventKind::Outcome { outcome: o.clone() }).await;
                    (name, o)
                }
                _ => (name, o),
            }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| {
            (
                String::new(),
                HostOutcome::Failed {
                    error: format!("internal error: {e}"),
                },
            )
        }));
    }
    out
}

fn events(run: &Run, name: &str) -> HostEvents {
    HostEvents::new(name, run.start, run.sink.clone(), run.cancel.clone())
}

/// The hosts of a wave that will not start: their connections closed, `skipped`.
async fn skip_wave(
    slots: &mut [Option<ApplyHost>],
    outcomes: &mut [Option<HostOutcome>],
    wave: &Wave,
    reason: &str,
    run: &Run,
) {
    for &i in &wave.hosts {
        let Some(h) = slots[i].take() else { continue };
        if let Some(s) = h.store {
            let _ = s.close().await;
        }
        h.conn.close().await;
        let o = HostOutcome::skipped(SkipReason::RolloutStopped {
            stopped: reason.to_owned(),
        });
        let _ = events(run, &h.name)
            .emit(EventKind::Outcome { outcome: o.clone() })
            .await;
        outcomes[i] = Some(o);
    }
}

/// `--rollback-succeeded`: switch an applied host back to its previous generation.
async fn roll_back(
    connector: &Connector,
    target: &fleet_executor::SshTarget,
    privilege: &fleet_executor::Privilege,
    name: &str,
    run: &Run,
) -> HostOutcome {
    let ev = events(run, name);
    let _ = ev.phase(Phase::RollingBack).await;
    let r = async {
        let conn = connector
            .connect(target)
            .await
            .map_err(|e| fleet_executor::error_chain(&e))?;
        let r = deploy::rollback(&conn, privilege).await;
        conn.close().await;
        r.map_err(|e| fleet_executor::error_chain(&e))
    }
    .await;
    let o = match r {
        Ok(_) => HostOutcome::rolled_back(RollbackReason::RolloutStopped),
        Err(e) => HostOutcome::Failed {
            error: format!(
                "applied, but rolling it back after the rollout stopped failed: {e} (it runs the \
                 new system)"
            ),
        },
    };
    let _ = ev.emit(EventKind::Outcome { outcome: o.clone() }).await;
    o
}

/// The plan's line about `--reboot`: which hosts will reboot after activation.
/// `bootloader(name)`: the host's bootloader as its facts say; hosts without one-time boot
/// (extlinux) get a warning.
pub fn reboot_text<'a>(
    plan: &fleet_planner::Plan,
    when: Option<crate::args::RebootWhen>,
    goal: fleet_executor::deploy::Goal,
    bootloader: impl Fn(&str) -> Option<&'a str>,
) -> String {
    use fleet_executor::deploy::Goal;
    use fleet_planner::Action;
    let Some(when) = when else {
        return String::new();
    };
    if !matches!(goal, Goal::Switch | Goal::Boot) {
        return "\n--reboot: nothing reboots with this goal (only switch and boot)\n".to_owned();
    }
    let hosts: Vec<&str> = plan
        .hosts
        .iter()
        .filter(|h| matches!(h.action, Action::Install | Action::Update))
        .filter(|h| when == crate::args::RebootWhen::Always || h.reboot)
        .map(|h| h.name.as_str())
        .collect();
    if hosts.is_empty() {
        return "\n--reboot: no host to change needs a reboot\n".to_owned();
    }
    let mut out = format!(
        "\nwill reboot after `boot` (the new entry booted once first where the host has \
         systemd-boot): {}\n",
        hosts.join(", ")
    );
    for h in hosts {
        if bootloader(h) != Some("systemd-boot") {
            out.push_str(&format!(
                "warning: {h} has {}: no one-time boot, so its new entry is the default at once; a \
                 system that does not come up stays the boot default until you choose another \
                 entry by hand\n",
                bootloader(h).unwrap_or("no bootloader fleet recognises")
            ));
        }
    }
    out
}

/// The waves in words, after the summary (text mode).
pub fn describe(report: &WavesReport) -> String {
    let mut s = String::new();
    if report.waves.len() <= 1 && report.stopped.is_none() {
        return s;
    }
    for (n, w) in report.waves.iter().enumerate() {
        let what = if w.canary { " (canary)" } else { "" };
        let state = if w.started { "" } else { ": skipped" };
        s.push_str(&format!(
            "wave {}{what}: {}{state}\n",
            n + 1,
            w.hosts.join(", ")
        ));
    }
    if let Some(why) = &report.stopped {
        s.push_str(&format!("rollout {why}\n"));
    }
    s
}
