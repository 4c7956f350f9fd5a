//! The apply orchestration on in-memory hosts (`double.rs`): the bound, cancellation, a host
//! failing alone, lost connections, the order of outcomes. Paused time: no sleeps, no SSH.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::double::{activation, copied, Act, FakeCopy, FakeHost, Record, Script};
use super::steps::Steps;
use super::{orchestrate, ApplyOptions, CopyState, Planned};
use crate::activation::{Confirmation, DeployState};
use crate::fanout::{Event, EventKind, EventSink, HostEvents, HostOutcome};
use crate::outcome::{RollbackReason, SkipReason};
use crate::CancellationToken;

/// Fake hosts `h0`.. with these scripts and copy states, the record they share, and the
/// events they sent.
struct World {
    record: Arc<Record>,
    cancel: CancellationToken,
    sink: EventSink,
    rx: tokio::sync::mpsc::Receiver<Event>,
}

impl World {
    fn new() -> Self {
        let (sink, rx) = EventSink::channel(4096);
        World {
            record: Arc::default(),
            cancel: CancellationToken::new(),
            sink,
            rx,
        }
    }

    fn hosts(&self, scripts: Vec<(Script, CopyState)>) -> Vec<Planned<FakeHost>> {
        let start = std::time::Instant::now();
        scripts
            .into_iter()
            .enumerate()
            .map(|(i, (script, copy))| {
                let name = format!("h{i}");
                Planned {
                    events: HostEvents::new(&name, start, self.sink.clone(), self.cancel.clone()),
                    host: FakeHost {
                        name: name.clone(),
                        script,
                        record: self.record.clone(),
                    },
                    steps: Steps {
                        activation: activation(&format!("id-{name}")),
                        checks: None,
                    },
                    copy,
                }
            })
            .collect()
    }

    /// The outcome events sent, per host, in order.
    fn outcome_events(mut self) -> Vec<(String, HostOutcome)> {
        drop(self.sink);
        let mut out = Vec::new();
        while let Ok(ev) = self.rx.try_recv() {
            if let EventKind::Outcome { outcome } = ev.kind {
                out.push((ev.host, outcome));
            }
        }
        out
    }
}

fn opts(parallel: usize) -> ApplyOptions {
    ApplyOptions {
        parallel,
        ..ApplyOptions::default()
    }
}

fn names(out: &[(String, HostOutcome)]) -> Vec<&str> {
    out.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test(start_paused = true)]
async fn the_parallel_limit_bounds_activations() {
    let w = World::new();
    let hosts = w.hosts(vec![(Script::default(), CopyState::Nothing); 10]);
    let out = orchestrate(hosts, FakeCopy(Vec::new()), &opts(3), &w.cancel).await;
    assert_eq!(w.record.peak.load(Ordering::SeqCst), 3);
    assert!(
        out.iter().all(|(_, o)| *o == HostOutcome::Applied),
        "{out:?}"
    );
    assert_eq!(w.record.did("activate").len(), 10);
    assert_eq!(w.record.did("confirm").len(), 10);
    assert_eq!(w.record.did("close").len(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_host_activates_as_soon_as_its_own_copy_is_done() {
    // h0's copy is slow; h1 and h2 must not wait for it, and h0 still takes only one place.
    let w = World::new();
    let hosts = w.hosts(vec![(Script::default(), CopyState::Pending); 3]);
    let copy = FakeCopy(vec![
        (0, Duration::from_secs(100), copied()),
        (1, Duration::from_secs(1), copied()),
        (2, Duration::from_secs(2), copied()),
    ]);
    let start = tokio::time::Instant::now();
    let out = orchestrate(hosts, copy, &opts(1), &w.cancel).await;
    assert!(
        out.iter().all(|(_, o)| *o == HostOutcome::Applied),
        "{out:?}"
    );
    // h1 (1 s + 10 s) then h2 (10 s) while h0 copies; h0 at 100 s + 10 s.
    assert_eq!(start.elapsed(), Duration::from_secs(110));
    let order: Vec<String> = w
        .record
        .steps
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, s)| *s == "activate")
        .map(|(h, _)| h.clone())
        .collect();
    assert_eq!(order, ["h1", "h2", "h0"]);
}

#[tokio::test(start_paused = true)]
async fn cancelling_skips_the_hosts_not_yet_activated() {
    let w = World::new();
    let mut scripts = vec![(Script::default(), CopyState::Nothing); 5];
    scripts.push((Script::default(), CopyState::Pending));
    let hosts = w.hosts(scripts);
    // h5 is still copying when Ctrl-C comes, 5 s in; h0 and h1 are activating.
    let copy = FakeCopy(vec![(5, Duration::from_secs(60), copied())]);
    let cancel = w.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        cancel.cancel();
    });
    let out = orchestrate(hosts, copy, &opts(2), &w.cancel).await;
    assert_eq!(names(&out), ["h0", "h1", "h2", "h3", "h4", "h5"]);
    // Activations already started run to their end and are reported.
    assert_eq!(out[0].1, HostOutcome::Applied);
    assert_eq!(out[1].1, HostOutcome::Applied);
    for (_, o) in &out[2..5] {
        assert_eq!(
            *o,
            HostOutcome::skipped(SkipReason::CancelledBeforeActivation)
        );
    }
    assert_eq!(
        out[5].1,
        HostOutcome::skipped(SkipReason::CancelledWhileCopying)
    );
    assert_eq!(w.record.did("activate").len(), 2);
    // Every host is closed, skipped or not.
    assert_eq!(w.record.did("close").len(), 6);
}

#[tokio::test(start_paused = true)]
async fn a_failing_host_fails_alone() {
    let w = World::new();
    let refuse = Script {
        act: Act::Refuse,
        ..Script::default()
    };
    let broken = Script {
        act: Act::RolledBack(
            "starting foo.service\nerror: foo.service failed\nfleet: switch-to-configuration switch failed; rolling back\n"
                .into(),
        ),
        ..Script::default()
    };
    let secrets = Script {
        secrets_fail: true,
        ..Script::default()
    };
    let panics = Script {
        act: Act::Panic,
        ..Script::default()
    };
    let hosts = w.hosts(vec![
        (Script::default(), CopyState::Pending),
        (refuse, CopyState::Nothing),
        (Script::default(), CopyState::Pending),
        (broken, CopyState::Nothing),
        (secrets, CopyState::Nothing),
        (panics, CopyState::Nothing),
        (
            Script::default(),
            CopyState::Failed(HostOutcome::Failed {
                error: "no store session to copy over".into(),
            }),
        ),
        (Script::default(), CopyState::Nothing),
    ]);
    let copy = FakeCopy(vec![
        (0, Duration::from_secs(1), copied()),
        (
            2,
            Duration::from_secs(2),
            Err(HostOutcome::Failed {
                error: "importing failed".into(),
            }),
        ),
    ]);
    let out = orchestrate(hosts, copy, &opts(2), &w.cancel).await;
    let o: Vec<&HostOutcome> = out.iter().map(|(_, o)| o).collect();
    assert_eq!(*o[0], HostOutcome::Applied);
    assert!(matches!(o[1], HostOutcome::Failed { error } if error.contains("refused")));
    assert_eq!(
        *o[2],
        HostOutcome::Failed {
            error: "importing failed".into()
        }
    );
    assert_eq!(
        *o[3],
        HostOutcome::rolled_back(RollbackReason::ActivationFailed {
            goal: crate::activation::Goal::Switch,
            said: "error: foo.service failed".into(),
        })
    );
    assert!(matches!(o[4], HostOutcome::Failed { error } if error.contains("not activated")));
    assert!(matches!(o[5], HostOutcome::Failed { error } if error.contains("panicked")));
    assert!(matches!(o[6], HostOutcome::Failed { error } if error.contains("no store session")));
    assert_eq!(*o[7], HostOutcome::Applied);
    // Neither the failed copies nor the refused secrets reached activation.
    let activated = w.record.did("activate");
    for h in ["h2", "h4", "h6"] {
        assert!(!activated.contains(h), "{h}");
    }
    assert_eq!(w.record.did("close").len(), 8);
}

#[tokio::test(start_paused = true)]
async fn a_connection_lost_at_confirmation_ends_rolled_back() {
    let w = World::new();
    let unreachable = Confirmation::Unreachable {
        last_error: "connection refused".into(),
    };
    let scripts = vec![
        // Never reachable again: it reverts by itself.
        Script {
            confirm: unreachable.clone(),
            result_anew: None,
            ..Script::default()
        },
        // Reached again: it had reverted.
        Script {
            confirm: unreachable.clone(),
            result_anew: Some(DeployState::RolledBack),
            ..Script::default()
        },
        // Reached again: it had been confirmed after all.
        Script {
            confirm: unreachable,
            result_anew: Some(DeployState::Confirmed),
            ..Script::default()
        },
        // The watchdog was first.
        Script {
            confirm: Confirmation::TooLate,
            ..Script::default()
        },
    ];
    let hosts = w.hosts(
        scripts
            .into_iter()
            .map(|s| (s, CopyState::Nothing))
            .collect(),
    );
    let start = tokio::time::Instant::now();
    let out = orchestrate(hosts, FakeCopy(Vec::new()), &opts(4), &w.cancel).await;
    let unreachable = HostOutcome::rolled_back(RollbackReason::Unreachable {
        timeout_secs: 30,
        last_error: "connection refused".into(),
    });
    assert_eq!(out[0].1, unreachable);
    assert_eq!(out[1].1, unreachable);
    assert_eq!(out[2].1, HostOutcome::Applied);
    assert_eq!(
        out[3].1,
        HostOutcome::rolled_back(RollbackReason::NotConfirmed {
            timeout_secs: Some(30)
        })
    );
    // The unreachable host was asked until its confirm timeout and the grace were over.
    assert!(start.elapsed() >= Duration::from_secs(10 + 30 + 5));
    assert!(start.elapsed() < Duration::from_secs(10 + 30 + 5 + 2));
}

#[tokio::test(start_paused = true)]
async fn a_connection_lost_during_activation_is_asked_again() {
    let w = World::new();
    let lost = |result_anew| Script {
        act: Act::LoseConnection,
        result_anew,
        ..Script::default()
    };
    let hosts = w.hosts(vec![
        (lost(Some(DeployState::Applied)), CopyState::Nothing),
        (lost(Some(DeployState::RolledBack)), CopyState::Nothing),
        (lost(None), CopyState::Nothing),
    ]);
    let out = orchestrate(hosts, FakeCopy(Vec::new()), &opts(3), &w.cancel).await;
    // Still awaiting confirmation: confirmed over the new connection.
    assert_eq!(out[0].1, HostOutcome::Applied);
    assert!(w.record.did("confirm").contains("h0"));
    assert_eq!(out[1].1, HostOutcome::rolled_back(RollbackReason::Reverted));
    assert!(
        matches!(&out[2].1, HostOutcome::Failed { error } if error.contains("could not reach h2 again")),
        "{:?}",
        out[2].1
    );
}

#[tokio::test(start_paused = true)]
async fn outcomes_come_in_input_order_once_each() {
    // Later hosts finish first; the result is still in input order, and each host sent
    // exactly one outcome event, the same as its result.
    let w = World::new();
    let scripts = (0..6)
        .map(|i| {
            let s = Script {
                activate_for: Duration::from_secs(60 - 10 * i),
                ..Script::default()
            };
            (s, CopyState::Nothing)
        })
        .collect();
    let hosts = w.hosts(scripts);
    let out = orchestrate(hosts, FakeCopy(Vec::new()), &opts(6), &w.cancel).await;
    assert_eq!(names(&out), ["h0", "h1", "h2", "h3", "h4", "h5"]);
    let mut events = w.outcome_events();
    assert_eq!(events[0].0, "h5", "the fastest host reports first");
    events.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(events, out);
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_system_only_links_the_package() {
    let w = World::new();
    let mut hosts = w.hosts(vec![(Script::default(), CopyState::Nothing)]);
    hosts[0].steps.activation.activate = false;
    let out = orchestrate(hosts, FakeCopy(Vec::new()), &opts(1), &w.cancel).await;
    assert_eq!(out[0].1, HostOutcome::Applied);
    assert!(w.record.did("link").contains("h0"));
    assert!(w.record.did("activate").is_empty());
}
