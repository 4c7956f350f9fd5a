//! Fan-out over hosts: one tokio task per host, at most `parallel` at once, one cancellation
//! token for the run, typed [`Event`]s into a bounded channel the CLI drains.
//!
//! A failed send (the receiver is gone) means the run is being torn down: the run's token is
//! cancelled and host tasks see it; nothing panics.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

pub use crate::outcome::{error_chain, HostOutcome, SkipReason};

/// What a host is doing. Every variant is emitted by some command (docs/cli.md lists them);
/// reaching a host and reading its state before a run are the CLI's run-level events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Queued,
    Connecting,
    Copying,
    Activating,
    /// Linking the deployment package only (the host already runs the system).
    Linking,
    /// Running the host's health checks.
    Checking,
    /// Rebooting the host and waiting for it to come back.
    Rebooting,
    Confirming,
    RollingBack,
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// fleet's own remark about this host.
    Fleet,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EventKind {
    Phase {
        phase: Phase,
    },
    Progress {
        done_bytes: u64,
        total_bytes: u64,
        done_paths: u64,
        total_paths: u64,
    },
    Log {
        stream: LogStream,
        line: String,
    },
    Outcome {
        outcome: HostOutcome,
    },
    /// The host's copy went through relay `relay` (docs/relay.md).
    Relayed {
        relay: String,
    },
    /// Relay `relay` (or its hop to this host) failed: the host is copied directly.
    RelayFailed {
        relay: String,
        error: String,
    },
    /// How the copy sends to this host (`copy/adaptive.rs`): its zstd level (`None`: the
    /// uncompressed serve stream), the SSH cipher, and the link's throughput as measured
    /// (bytes/s; `None`: not measured).
    Transport {
        zstd_level: Option<i32>,
        cipher: String,
        measured_bytes_per_s: Option<u64>,
    },
}

/// One event of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub host: String,
    /// Since the start of the run.
    #[serde(serialize_with = "ser_duration_ms", rename = "at_ms")]
    pub at: Duration,
    #[serde(flatten)]
    pub kind: EventKind,
}

fn ser_duration_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Where events go: a bounded channel the CLI drains.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: Option<mpsc::Sender<Event>>,
}

impl EventSink {
    /// A sink and the receiver to drain.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (EventSink { tx: Some(tx) }, rx)
    }

    /// Drops every event (tests, scripts that only want outcomes).
    pub fn discard() -> Self {
        EventSink { tx: None }
    }
}

/// A host's handle on the run's event stream.
#[derive(Debug, Clone)]
pub struct HostEvents {
    host: String,
    start: Instant,
    sink: EventSink,
    cancel: CancellationToken,
}

/// The receiver is gone: the run is being cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the run was cancelled")]
pub struct Cancelled;

impl HostEvents {
    /// The host these events are about.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// A handle for `host` outside [`run_hosts`] (a phase of a run that is not a per-host task,
    /// like a shared copy). `start` is the run's start, so `at` stays comparable.
    pub fn new(
        host: impl Into<String>,
        start: Instant,
        sink: EventSink,
        cancel: CancellationToken,
    ) -> Self {
        HostEvents {
            host: host.into(),
            start,
            sink,
            cancel,
        }
    }

    /// Sends an event; waits while the channel is full. A closed channel cancels the run.
    pub async fn emit(&self, kind: EventKind) -> Result<(), Cancelled> {
        let Some(tx) = &self.sink.tx else {
            return Ok(());
        };
        let ev = Event {
            host: self.host.clone(),
            at: self.start.elapsed(),
            kind,
        };
        tx.send(ev).await.map_err(|_| {
            self.cancel.cancel();
            Cancelled
        })
    }

    pub async fn phase(&self, phase: Phase) -> Result<(), Cancelled> {
        self.emit(EventKind::Phase { phase }).await
    }

    pub async fn log(&self, stream: LogStream, line: impl Into<String>) -> Result<(), Cancelled> {
        self.emit(EventKind::Log {
            stream,
            line: line.into(),
        })
        .await
    }

    pub async fn progress(
        &self,
        done_bytes: u64,
        total_bytes: u64,
        done_paths: u64,
        total_paths: u64,
    ) -> Result<(), Cancelled> {
        self.emit(EventKind::Progress {
            done_bytes,
            total_bytes,
            done_paths,
            total_paths,
        })
        .await
    }
}

/// What a host task gets.
#[derive(Debug)]
pub struct HostCtx<T> {
    /// The host's name (as given to [`run_hosts`]).
    pub name: String,
    /// The caller's per-host data.
    pub host: T,
    /// The run's token (a child token per host would hide a run-wide cancel; this is the same).
    pub cancel: CancellationToken,
    pub events: HostEvents,
}

/// Runs `f` for every host, at most `parallel` at once (0 is treated as 1), and returns the
/// outcomes in input order. Every host gets exactly one `Outcome` event. Hosts not started
/// when `cancel` fires end [`HostOutcome::Skipped`]; a panicking host task ends `Failed`.
pub async fn run_hosts<T, F, Fut>(
    hosts: impl IntoIterator<Item = (String, T)>,
    parallel: usize,
    cancel: CancellationToken,
    sink: EventSink,
    f: F,
) -> Vec<(String, HostOutcome)>
where
    T: Send + 'static,
    F: Fn(HostCtx<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HostOutcome> + Send + 'static,
{
    let start = Instant::now();
    let f = Arc::new(f);
    let jobs = hosts.into_iter().map(|(name, host)| {
        let events = HostEvents::new(name, start, sink.clone(), cancel.clone());
        let job = FnJob {
            host: Some(host),
            f: f.clone(),
        };
        (events, job)
    });
    let bound = Bound {
        parallel,
        cancel: cancel.clone(),
        queued: true,
        skipped: SkipReason::CancelledBeforeStart,
    };
    run_bounded(jobs, bound).await
}

/// A host's work in [`run_bounded`].
pub(crate) trait HostJob: Send + 'static {
    /// Before taking a place under the bound (waiting for a shared copy, say). `Err`: how the
    /// host ended without running.
    fn ready(&mut self, ev: &HostEvents) -> impl Future<Output = Result<(), HostOutcome>> + Send;
    /// The bounded part.
    fn run(&mut self, ev: &HostEvents) -> impl Future<Output = HostOutcome> + Send;
    /// After its `Outcome` event (closing what it holds), however it ended.
    fn finish(self) -> impl Future<Output = ()> + Send;
}

/// How [`run_bounded`] runs its hosts.
pub(crate) struct Bound {
    pub parallel: usize,
    pub cancel: CancellationToken,
    /// Announce [`Phase::Queued`] first.
    pub queued: bool,
    /// Why a host that was ready but got no place before `cancel` fired was skipped.
    pub skipped: SkipReason,
}

/// The bounded per-host runner: one task per host; each waits until it is
/// [`ready`](HostJob::ready), then for one of `parallel` places (or `cancel`: then it is
/// skipped), runs, sends its `Outcome` event and [finishes](HostJob::finish). A panic in `run`
/// ends the host `Failed`. Outcomes in input order.
pub(crate) async fn run_bounded<J: HostJob>(
    jobs: impl IntoIterator<Item = (HostEvents, J)>,
    bound: Bound,
) -> Vec<(String, HostOutcome)> {
    let Bound {
        parallel,
        cancel,
        queued,
        skipped,
    } = bound;
    let sem = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::new();
    for (events, mut job) in jobs {
        let (sem, cancel, skipped) = (sem.clone(), cancel.clone(), skipped.clone());
        let name = events.host().to_owned();
        let task = tokio::spawn(async move {
            if queued {
                let _ = events.phase(Phase::Queued).await;
            }
            let outcome = match job.ready(&events).await {
                Err(o) => o,
                Ok(()) => {
                    let permit = tokio::select! {
                        p = sem.acquire_owned() => p.ok(),
                        () = cancel.cancelled() => None,
                    };
                    match permit {
                        Some(_permit) if !cancel.is_cancelled() => {
                            let run = std::panic::AssertUnwindSafe(job.run(&events));
                            run.catch_unwind()
                                .await
                                .unwrap_or_else(|_| HostOutcome::Failed {
                                    error: "internal error: the host task panicked".into(),
                                })
                        }
                        _ => HostOutcome::Skipped { reason: skipped },
                    }
                }
            };
            let _ = events
                .emit(EventKind::Outcome {
                    outcome: outcome.clone(),
                })
                .await;
            job.finish().await;
            outcome
        });
        tasks.push((name, task));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for (name, task) in tasks {
        let outcome = task.await.unwrap_or_else(|_| HostOutcome::Failed {
            error: "internal error: the host task panicked".into(),
        });
        out.push((name, outcome));
    }
    out
}

/// [`run_hosts`]'s job: a closure over the caller's per-host data.
struct FnJob<T, F> {
    host: Option<T>,
    f: Arc<F>,
}

impl<T, F, Fut> HostJob for FnJob<T, F>
where
    T: Send + 'static,
    F: Fn(HostCtx<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HostOutcome> + Send + 'static,
{
    async fn ready(&mut self, _: &HostEvents) -> Result<(), HostOutcome> {
        Ok(())
    }

    async fn run(&mut self, ev: &HostEvents) -> HostOutcome {
        let Some(host) = self.host.take() else {
            return HostOutcome::Failed {
                error: "internal error: the host ran twice".into(),
            };
        };
        let ctx = HostCtx {
            name: ev.host().to_owned(),
            host,
            cancel: ev.cancel.clone(),
            events: ev.clone(),
        };
        (self.f)(ctx).await
    }

    async fn finish(self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn bounded_ordered_and_panic_safe() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (sink, mut rx) = EventSink::channel(4);
        let drain = tokio::spawn(async move {
            let mut n = 0;
            while let Some(ev) = rx.recv().await {
                serde_json::to_string(&ev).unwrap();
                n += 1;
            }
            n
        });
        let hosts = (0..10).map(|i| (format!("h{i}"), i));
        let (r2, p2) = (running.clone(), peak.clone());
        let out = run_hosts(hosts, 3, CancellationToken::new(), sink, move |ctx| {
            let (r, p) = (r2.clone(), p2.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                ctx.events.phase(Phase::Checking).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                if ctx.host == 7 {
                    panic!("boom");
                }
                HostOutcome::Ok
            }
        })
        .await;
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(out.len(), 10);
        assert_eq!(out[3].0, "h3");
        assert!(matches!(out[7].1, HostOutcome::Failed { .. }));
        assert_eq!(out.iter().filter(|o| o.1.is_success()).count(), 9);
        assert_eq!(drain.await.unwrap(), 30);
    }

    #[tokio::test]
    async fn dropped_receiver_cancels_instead_of_panicking() {
        let (sink, rx) = EventSink::channel(1);
        drop(rx);
        let cancel = CancellationToken::new();
        let out = run_hosts(
            (0..5).map(|i| (format!("h{i}"), ())),
            1,
            cancel.clone(),
            sink,
            |ctx| async move {
                if ctx.events.phase(Phase::Checking).await.is_err() {
                    return HostOutcome::skipped(SkipReason::CancelledBeforeStart);
                }
                HostOutcome::Ok
            },
        )
        .await;
        assert!(cancel.is_cancelled());
        assert!(out
            .iter()
            .all(|(_, o)| matches!(o, HostOutcome::Skipped { .. })));
    }

    #[test]
    fn event_json_shape() {
        let ev = Event {
            host: "web1".into(),
            at: Duration::from_millis(1500),
            kind: EventKind::Outcome {
                outcome: HostOutcome::Failed { error: "x".into() },
            },
        };
        assert_eq!(
            serde_json::to_string(&ev).unwrap(),
            r#"{"host":"web1","at_ms":1500,"type":"outcome","outcome":{"kind":"failed","error":"x"}}"#
        );
    }
}
