//! Rendering the run's events ([`RunEvent`]): a live block of one line per host redrawn in
//! place, plain `[host] …` lines, or JSON lines (docs/cli.md, "JSON output"). The reporter
//! writes to any [`Write`] and is given the run's wall-clock start and the terminal's width,
//! so its output is a function of the events (the snapshot tests in `render_tests.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::time::{Duration, SystemTime};

use fleet_executor::{EventKind, HostOutcome, LogStream, Phase};
use fleet_planner::human_size;

use crate::envelope;
use crate::events::{RunEvent, RunKind};
use crate::report::{outcome_text, phase_name, Mode};

/// What the reporter saw of one host.
#[derive(Debug, Clone, Default)]
pub struct Track {
    phase: Option<Phase>,
    /// (done bytes, total bytes, done paths, total paths).
    progress: Option<(u64, u64, u64, u64)>,
    last: String,
    first_at: Option<Duration>,
    pub done_at: Option<Duration>,
    outcome: Option<HostOutcome>,
    plain_progress_at: Option<Duration>,
}

impl Track {
    /// Seconds from the host's first event to its outcome.
    pub fn seconds(&self) -> Option<f64> {
        Some((self.done_at? - self.first_at?).as_secs_f64())
    }
}

/// Renders events as they come.
pub struct Reporter {
    mode: Mode,
    out: Box<dyn Write + Send>,
    /// Where a person still reads warnings and recorded host keys when `out` gets JSON
    /// (stderr); `None`: nowhere else.
    notices: Option<Box<dyn Write + Send>>,
    /// The wall-clock time of the run's start: an event's `time` is this plus its `at`.
    started: SystemTime,
    /// The terminal's width, asked at every redraw.
    cols: Box<dyn Fn() -> usize + Send>,
    tracks: BTreeMap<String, Track>,
    /// The hosts, in the order of the live block.
    order: Vec<String>,
    width: usize,
    /// Lines of the live block on screen (0: not drawn yet).
    drawn: usize,
    /// The live block is drawn from the first event of the executor on.
    live_started: bool,
}

impl Reporter {
    pub fn new(
        mode: Mode,
        hosts: Vec<String>,
        out: Box<dyn Write + Send>,
        started: SystemTime,
        cols: Box<dyn Fn() -> usize + Send>,
    ) -> Self {
        Reporter {
            mode,
            out,
            notices: None,
            started,
            cols,
            tracks: hosts
                .iter()
                .map(|h| (h.clone(), Track::default()))
                .collect(),
            width: hosts.iter().map(|h| h.chars().count()).max().unwrap_or(4),
            order: hosts,
            drawn: 0,
            live_started: false,
        }
    }

    /// Also writes warnings and recorded host keys, as text, to `w` (for JSON on stdout, a
    /// person on stderr).
    pub fn with_notices(mut self, w: Box<dyn Write + Send>) -> Self {
        self.notices = Some(w);
        self
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// What was seen per host.
    pub fn tracks(&self) -> &BTreeMap<String, Track> {
        &self.tracks
    }

    /// Renders one event.
    pub fn handle(&mut self, ev: &RunEvent) {
        if self.mode == Mode::Json {
            let line = envelope::event_line(ev, self.started);
            self.write(&format!("{line}\n"));
        }
        match ev {
            RunEvent::Run { kind, .. } => {
                let notice = matches!(
                    kind,
                    RunKind::Warning { .. } | RunKind::HostKeyRecorded { .. }
                );
                if let Some(text) = run_text(kind) {
                    match self.mode {
                        Mode::Plain => self.write(&format!("{text}\n")),
                        Mode::Live => self.line_above(&text),
                        Mode::Quiet if notice => self.write(&format!("{text}\n")),
                        Mode::Json | Mode::Quiet => {}
                    }
                    if let (true, Some(w)) = (notice, &mut self.notices) {
                        let _ = writeln!(w, "{text}");
                        let _ = w.flush();
                    }
                }
            }
            RunEvent::Host(e) => {
                let track = self.tracks.entry(e.host.clone()).or_default();
                let plain = (self.mode == Mode::Plain)
                    .then(|| plain_text(e, track))
                    .flatten();
                update(track, e);
                if let Some(text) = plain {
                    let line = format!("[{:<w$}] {text}\n", e.host, w = self.width);
                    self.write(&line);
                }
                if self.mode == Mode::Live {
                    self.live_started = true;
                    self.draw(e.at);
                }
            }
        }
    }

    /// Redraws the live block (time goes on while nothing happens).
    pub fn tick(&mut self, now: Duration) {
        if self.mode == Mode::Live && self.live_started {
            self.draw(now);
        }
    }

    fn write(&mut self, text: &str) {
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    /// A line printed above the live block, which is redrawn below it.
    fn line_above(&mut self, text: &str) {
        if self.drawn == 0 {
            self.write(&format!("{text}\n"));
            return;
        }
        let up = format!("\x1b[{}A\x1b[2K{text}\n", self.drawn);
        self.drawn = 0;
        self.write(&up);
        // The block's own lines overwrite the rest of the old block.
        let now = self
            .tracks
            .values()
            .filter_map(|t| t.done_at.or(t.first_at))
            .max()
            .unwrap_or_default();
        self.draw(now);
    }

    /// The live block: one line per host, redrawn in place.
    fn draw(&mut self, now: Duration) {
        let cols = (self.cols)();
        let mut out = String::new();
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A", self.drawn);
        }
        for name in &self.order {
            let t = self.tracks.get(name).cloned().unwrap_or_default();
            let line = live_line(name, self.width, &t, now);
            let line = if line.chars().count() > cols.saturating_sub(1) {
                line.chars()
                    .take(cols.saturating_sub(2))
                    .collect::<String>()
                    + "…"
            } else {
                line
            };
            let _ = writeln!(out, "\x1b[2K{line}");
        }
        self.drawn = self.order.len();
        self.write(&out);
    }
}

/// One host's line of the live block.
fn live_line(name: &str, width: usize, t: &Track, now: Duration) -> String {
    let state = match (&t.outcome, t.phase) {
        (Some(o), _) => outcome_text(o),
        (None, Some(p)) => {
            let mut s = phase_name(p).to_owned();
            if p == Phase::Copying {
                if let Some(pr) = t.progress {
                    let _ = write!(s, " {}", progress_text(pr));
                }
            } else if !t.last.is_empty() {
                let _ = write!(s, ": {}", t.last);
            }
            s
        }
        (None, None) => "waiting".to_owned(),
    };
    let secs = match (t.first_at, t.done_at) {
        (Some(a), Some(b)) => format!("{:>6.1}s", (b - a).as_secs_f64()),
        (Some(a), None) => format!("{:>6.1}s", now.saturating_sub(a).as_secs_f64()),
        _ => " ".repeat(7),
    };
    format!("{name:<width$}  {secs}  {state}")
}

fn update(track: &mut Track, ev: &fleet_executor::Event) {
    track.first_at.get_or_insert(ev.at);
    match &ev.kind {
        EventKind::Phase { phase } => {
            track.phase = Some(*phase);
            track.last.clear();
        }
        EventKind::Progress {
            done_bytes,
            total_bytes,
            done_paths,
            total_paths,
        } => track.progress = Some((*done_bytes, *total_bytes, *done_paths, *total_paths)),
        EventKind::Log { line, .. } => {
            if !line.trim().is_empty() {
                track.last = line.trim().to_owned();
            }
        }
        EventKind::Outcome { outcome } => {
            track.outcome = Some(outcome.clone());
            track.done_at = Some(ev.at);
        }
        EventKind::Relayed { .. } | EventKind::RelayFailed { .. } => {
            if let Some(line) = relay_text(&ev.kind) {
                track.last = line;
            }
        }
        EventKind::Transport { .. } => {}
    }
}

fn progress_text((done, total, done_paths, total_paths): (u64, u64, u64, u64)) -> String {
    format!(
        "{} / {} ({done_paths}/{total_paths} paths)",
        human_size(done),
        human_size(total)
    )
}

/// A run-level event as a line (`None`: not shown to people).
fn run_text(kind: &RunKind) -> Option<String> {
    Some(match kind {
        RunKind::EvalStarted { hosts } => format!("fleet: evaluating {}", hosts.join(", ")),
        RunKind::EvalCached { hosts } => format!(
            "fleet: unchanged since their last evaluation: {}",
            hosts.join(", ")
        ),
        RunKind::EvalSplit { hosts, limit } => format!(
            "fleet: evaluating {} in one process took more than {}; evaluating them in smaller \
             groups",
            hosts.join(", "),
            fleet_nix_build::error::human_bytes(*limit)
        ),
        RunKind::BuildRoute {
            host,
            system,
            route,
            builder,
        } => {
            let how = match (route.as_str(), builder) {
                ("builder", Some(uri)) => format!("on remote builder {uri}"),
                ("emulated", _) => "on this machine, emulated (extra-platforms)".to_owned(),
                _ => "on this machine".to_owned(),
            };
            format!("fleet: {host} ({system}) builds {how}")
        }
        RunKind::EvalBatchFailed { hosts } => format!(
            "fleet: evaluating {} together failed; evaluating them one by one",
            hosts.join(", ")
        ),
        RunKind::BuildStarted { hosts } => {
            format!("fleet: building {} on this machine", hosts.join(", "))
        }
        RunKind::Building { derivation } => {
            let name = derivation.rsplit('/').next().unwrap_or(derivation);
            let name = name.get(33..).unwrap_or(name).trim_end_matches(".drv");
            format!("fleet:   building {name}")
        }
        RunKind::BuildFinished {
            built,
            failed_hosts,
        } => {
            let failed = if failed_hosts.is_empty() {
                String::new()
            } else {
                format!("; failed: {}", failed_hosts.join(", "))
            };
            format!("fleet: built {} derivation(s){failed}", built.len())
        }
        RunKind::Warning { host, message } => format!("fleet: warning: {host}: {message}"),
        RunKind::Reaching { hosts } => {
            format!("fleet: reading the state of {} host(s)", hosts.len())
        }
        RunKind::HostKeyRecorded { host, key } => format!(
            "fleet: {host}: recorded its new host key in known_hosts (--accept-new-host-keys); \
             to pin it, add under [hosts.{host}] in fleet.toml: host-key = \"{key}\""
        ),
        RunKind::Unreachable { host, error } => format!("fleet: {host}: {error}"),
        RunKind::EvalFinished { .. } | RunKind::Connected { .. } | RunKind::Facts { .. } => {
            return None
        }
    })
}

/// A host event as a plain line (`None`: not shown): phases, fleet's remarks, remote output,
/// copy progress at most every 2 s.
fn plain_text(ev: &fleet_executor::Event, track: &mut Track) -> Option<String> {
    Some(match &ev.kind {
        EventKind::Phase {
            phase: Phase::Queued,
        } => return None,
        EventKind::Phase { phase } => phase_name(*phase).to_owned(),
        EventKind::Log { stream, line } => match stream {
            LogStream::Fleet => line.clone(),
            LogStream::Stdout | LogStream::Stderr => format!("| {line}"),
        },
        EventKind::Progress {
            done_bytes,
            total_bytes,
            done_paths,
            total_paths,
        } => {
            let last_done = done_paths == total_paths;
            if !last_done
                && track
                    .plain_progress_at
                    .is_some_and(|t| ev.at.saturating_sub(t) < Duration::from_secs(2))
            {
                return None;
            }
            track.plain_progress_at = Some(ev.at);
            format!(
                "copying {}",
                progress_text((*done_bytes, *total_bytes, *done_paths, *total_paths))
            )
        }
        EventKind::Outcome { outcome } => outcome_text(outcome),
        EventKind::Relayed { .. } | EventKind::RelayFailed { .. } => relay_text(&ev.kind)?,
        // JSON and `-v` only.
        EventKind::Transport { .. } => return None,
    })
}

/// A relay event's words (docs/relay.md).
fn relay_text(kind: &EventKind) -> Option<String> {
    match kind {
        EventKind::Relayed { relay } => Some(format!("copied via {relay}")),
        EventKind::RelayFailed { relay, error } => {
            Some(format!("relay {relay} failed: {error}; copying directly"))
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;

#[cfg(test)]
mod relay_words {
    use super::*;

    #[test]
    fn relay_events_in_words() {
        let ok = EventKind::Relayed {
            relay: "nas".into(),
        };
        assert_eq!(relay_text(&ok).as_deref(), Some("copied via nas"));
        let failed = EventKind::RelayFailed {
            relay: "nas".into(),
            error: "no ssh client (openssh) on the relay".into(),
        };
        assert_eq!(
            relay_text(&failed).as_deref(),
            Some("relay nas failed: no ssh client (openssh) on the relay; copying directly")
        );
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["type"], "relay-failed");
        assert_eq!(json["relay"], "nas");
    }
}
