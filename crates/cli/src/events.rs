//! The run's one typed event stream: the run-level events the CLI owns (evaluation, build,
//! reaching hosts and reading their state), and the executor's per-host [`Event`]s (copy,
//! activate, confirm, outcome). Every command that works on hosts sends both kinds to one
//! [`Events`] handle, whose reporter ([`crate::render::Reporter`]) shows them live, as plain
//! lines or as JSON lines, in the order they happened.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fleet_executor::{Event, EventSink};
use fleet_nix_build::BuildEvent;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::render::{Reporter, Track};
use crate::report::Mode;

/// Something that happened to the run as a whole, or to a host before the executor took it
/// over (reaching it and reading its state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum RunKind {
    /// One Nix process started evaluating these hosts.
    EvalStarted { hosts: Vec<String> },
    /// These hosts' inputs did not change since their last evaluation: its result is reused.
    EvalCached { hosts: Vec<String> },
    /// Evaluating these hosts in one process went past the memory limit (bytes): they are
    /// evaluated in smaller groups.
    EvalSplit { hosts: Vec<String>, limit: u64 },
    /// A batch failed as a whole; its hosts are evaluated one by one.
    EvalBatchFailed { hosts: Vec<String> },
    /// Evaluation of these hosts finished (`failed` is a subset of `hosts`).
    EvalFinished {
        hosts: Vec<String>,
        failed: Vec<String>,
    },
    /// Where a host's system gets built when not natively here: `route` is `builder` (with
    /// `builder`, its store URI), `emulated` or `native`.
    BuildRoute {
        host: String,
        system: String,
        route: String,
        builder: Option<String>,
    },
    /// A build of these hosts' systems started (one per round: hosts are built as their
    /// evaluation returns, while later batches still evaluate).
    BuildStarted { hosts: Vec<String> },
    /// Nix started building this derivation (a store path ending in `.drv`).
    Building { derivation: String },
    /// The build finished: the derivations actually built, the hosts whose build failed.
    BuildFinished {
        built: Vec<String>,
        failed_hosts: Vec<String>,
    },
    /// Something about a host that does not stop it.
    Warning { host: String, message: String },
    /// fleet starts reaching these hosts (connect, log in, read their state).
    Reaching { hosts: Vec<String> },
    /// Connected and logged in.
    Connected { host: String },
    /// The host's key was not known and was recorded (`--accept-new-host-keys`); `key` is
    /// the `host-key` value that pins it in fleet.toml.
    HostKeyRecorded { host: String, key: String },
    /// The host's state was read: what it runs, boots, and its profile's generation.
    Facts {
        host: String,
        current: Option<String>,
        booted: Option<String>,
        generation: Option<u64>,
        system: Option<String>,
    },
    /// The host could not be reached or its state not read; `error` says which.
    Unreachable { host: String, error: String },
}

impl From<BuildEvent> for RunKind {
    fn from(e: BuildEvent) -> Self {
        match e {
            BuildEvent::EvalStarted { hosts } => RunKind::EvalStarted { hosts },
            BuildEvent::EvalBatchFailed { hosts } => RunKind::EvalBatchFailed { hosts },
            BuildEvent::EvalCached { hosts } => RunKind::EvalCached { hosts },
            BuildEvent::EvalSplit { hosts, limit } => RunKind::EvalSplit { hosts, limit },
            BuildEvent::BuildRoute {
                host,
                system,
                route,
            } => {
                use fleet_nix_build::capability::BuildRoute as R;
                let (route, builder) = match route {
                    R::Native => ("native", None),
                    R::Builder(uri) => ("builder", Some(uri)),
                    R::Emulated => ("emulated", None),
                };
                RunKind::BuildRoute {
                    host,
                    system,
                    route: route.to_owned(),
                    builder,
                }
            }
            BuildEvent::EvalFinished { hosts, failed } => RunKind::EvalFinished { hosts, failed },
            BuildEvent::BuildStarted { hosts } => RunKind::BuildStarted { hosts },
            BuildEvent::Building { drv } => RunKind::Building { derivation: drv },
            BuildEvent::BuildFinished {
                built,
                failed_hosts,
            } => RunKind::BuildFinished {
                built,
                failed_hosts,
            },
            BuildEvent::Warning { host, message } => RunKind::Warning { host, message },
        }
    }
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEvent {
    /// About the run; `at` is since its start.
    Run { at: Duration, kind: RunKind },
    /// About one host, from the executor.
    Host(Event),
}

impl RunEvent {
    /// Since the start of the run.
    pub fn at(&self) -> Duration {
        match self {
            RunEvent::Run { at, .. } => *at,
            RunEvent::Host(e) => e.at,
        }
    }
}

/// The run's event stream: cheap to clone, safe to use from any task. Run-level events are
/// rendered at once, in order with everything else the command prints.
#[derive(Clone)]
pub struct Events {
    reporter: Arc<Mutex<Reporter>>,
    start: Instant,
}

impl Events {
    /// A stream for a run over `hosts`, rendered as `mode` (stdout for JSON, else stderr).
    pub fn new(mode: Mode, hosts: Vec<String>) -> Self {
        let out: Box<dyn std::io::Write + Send> = match mode {
            Mode::Json => Box::new(std::io::stdout()),
            _ => Box::new(std::io::stderr()),
        };
        let mut reporter = Reporter::new(
            mode,
            hosts,
            out,
            SystemTime::now(),
            Box::new(|| crate::report::terminal_size().0),
        );
        if mode == Mode::Json {
            // Warnings and recorded host keys are for a person too.
            reporter = reporter.with_notices(Box::new(std::io::stderr()));
        }
        Events {
            reporter: Arc::new(Mutex::new(reporter)),
            start: Instant::now(),
        }
    }

    /// For a run over `hosts`: JSON lines when `json`, else [`Mode::pick`].
    pub fn for_hosts(json: bool, hosts: &[&fleet_inventory::Host]) -> Self {
        let names: Vec<String> = hosts.iter().map(|h| h.name.to_string()).collect();
        Events::new(Mode::pick(json, names.len()), names)
    }

    /// Shows only warnings, on stderr (a command whose stdout is one JSON document).
    pub fn quiet() -> Self {
        Events::new(Mode::Quiet, Vec::new())
    }

    pub fn mode(&self) -> Mode {
        self.lock().mode()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reporter> {
        self.reporter.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports a run-level event now.
    pub fn emit(&self, kind: impl Into<RunKind>) {
        let ev = RunEvent::Run {
            at: self.start.elapsed(),
            kind: kind.into(),
        };
        self.lock().handle(&ev);
    }

    /// The build's progress callback: every [`BuildEvent`] becomes a run event.
    pub fn build_sink(&self) -> fleet_nix_build::EventSink {
        let me = self.clone();
        Arc::new(move |e: BuildEvent| me.emit(e))
    }

    /// Starts the per-host part of the run: the start (event times are relative to it), the
    /// sink the executor's events go to, and the task rendering them, which ends with what it
    /// saw per host once every sender of the sink is gone.
    pub fn start_hosts(&self) -> (Instant, EventSink, JoinHandle<BTreeMap<String, Track>>) {
        let (sink, mut rx) = EventSink::channel(1024);
        let me = self.clone();
        let live = self.mode() == Mode::Live;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    ev = rx.recv() => {
                        let Some(ev) = ev else { break };
                        me.lock().handle(&RunEvent::Host(ev));
                    }
                    _ = tick.tick(), if live => me.lock().tick(me.start.elapsed()),
                }
            }
            let mut r = me.lock();
            r.tick(me.start.elapsed());
            r.tracks().clone()
        });
        (self.start, sink, task)
    }
}
