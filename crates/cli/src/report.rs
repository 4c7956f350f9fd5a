//! Showing a run as it goes and how it ended: the executor's events rendered as one live line
//! per host (stderr is a terminal), plain `[host] …` lines (it is not), or JSON lines on stdout
//! (`--json`); then a summary table (or a JSON summary) and the exit code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::time::{Duration, Instant};

use fleet_executor::{Event, EventKind, HostOutcome, LogStream, Phase};
use fleet_planner::{human_size, short_path};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::exit;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A live line per host, redrawn in place (stderr is a terminal).
    Live,
    /// `[host] …` lines on stderr.
    Plain,
    /// Every event as a JSON line on stdout.
    Json,
}

impl Mode {
    /// JSON when asked; live lines when stderr is a terminal tall enough for one line per host
    /// (a block taller than the screen cannot be redrawn in place); plain lines otherwise.
    pub fn pick(json: bool, hosts: usize) -> Mode {
        if json {
            Mode::Json
        } else if crate::term::stderr_is_tty() && hosts + 2 <= terminal_size().1 {
            Mode::Live
        } else {
            Mode::Plain
        }
    }
}

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

/// Starts reporting a run over `hosts`: when it started (event times are relative to it), the
/// sink its events go to, and the reporter ([`spawn`], rendering as [`Mode::pick`] says).
pub fn start_run(
    json: bool,
    hosts: &[&fleet_inventory::Host],
) -> (
    Instant,
    fleet_executor::EventSink,
    JoinHandle<BTreeMap<String, Track>>,
) {
    let start = Instant::now();
    let (sink, rx) = fleet_executor::EventSink::channel(1024);
    let names: Vec<String> = hosts.iter().map(|h| h.name.to_string()).collect();
    let reporter = spawn(Mode::pick(json, hosts.len()), names, rx, start);
    (start, sink, reporter)
}

/// Drains `rx` until every sender is gone, rendering as `mode`; returns what it saw per host.
/// `start` is the run's start (event times are relative to it).
pub fn spawn(
    mode: Mode,
    hosts: Vec<String>,
    mut rx: mpsc::Receiver<Event>,
    start: Instant,
) -> JoinHandle<BTreeMap<String, Track>> {
    tokio::spawn(async move {
        let mut tracks: BTreeMap<String, Track> = hosts
            .iter()
            .map(|h| (h.clone(), Track::default()))
            .collect();
        let width = hosts.iter().map(|h| h.chars().count()).max().unwrap_or(4);
        let mut live = Live {
            drawn: 0,
            order: hosts,
            width,
        };
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    let track = tracks.entry(ev.host.clone()).or_default();
                    match mode {
                        Mode::Json => print_json(&ev),
                        Mode::Plain => plain(&ev, track, live.width),
                        Mode::Live => {}
                    }
                    update(track, &ev);
                }
                _ = tick.tick() => {}
            }
            if mode == Mode::Live {
                live.draw(&tracks, start.elapsed());
            }
        }
        if mode == Mode::Live {
            live.draw(&tracks, start.elapsed());
        }
        tracks
    })
}

fn update(track: &mut Track, ev: &Event) {
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
    }
}

fn print_json(ev: &Event) {
    if let Ok(line) = serde_json::to_string(&crate::reasons::event_json(ev)) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}

pub fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Queued => "queued",
        Phase::Connecting => "connecting",
        Phase::Connected => "connected",
        Phase::GatheringFacts => "reading state",
        Phase::Copying => "copying",
        Phase::SettingProfile => "setting profile",
        Phase::Activating => "activating",
        Phase::Linking => "linking package",
        Phase::Checking => "checking",
        Phase::Rebooting => "rebooting",
        Phase::Confirming => "confirming",
        Phase::RollingBack => "rolling back",
        Phase::Running => "running",
    }
}

fn progress_text((done, total, done_paths, total_paths): (u64, u64, u64, u64)) -> String {
    format!(
        "{} / {} ({done_paths}/{total_paths} paths)",
        human_size(done),
        human_size(total)
    )
}

/// `[host] …` lines: phases, fleet's remarks, remote output, progress at most every 2 s.
fn plain(ev: &Event, track: &mut Track, width: usize) {
    let line = match &ev.kind {
        EventKind::Phase {
            phase: Phase::Queued,
        } => return,
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
                return;
            }
            track.plain_progress_at = Some(ev.at);
            format!(
                "copying {}",
                progress_text((*done_bytes, *total_bytes, *done_paths, *total_paths))
            )
        }
        EventKind::Outcome { outcome } => outcome_text(outcome),
    };
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[{:<width$}] {line}", ev.host);
}

/// The live block: one line per host, redrawn in place.
struct Live {
    drawn: usize,
    order: Vec<String>,
    width: usize,
}

impl Live {
    fn draw(&mut self, tracks: &BTreeMap<String, Track>, now: Duration) {
        let cols = terminal_size().0;
        let mut out = String::new();
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A", self.drawn);
        }
        for name in &self.order {
            let t = tracks.get(name).cloned().unwrap_or_default();
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
                _ => String::new(),
            };
            let mut line = format!("{name:<w$}  {secs}  {state}", w = self.width);
            if line.chars().count() > cols.saturating_sub(1) {
                line = line
                    .chars()
                    .take(cols.saturating_sub(2))
                    .collect::<String>()
                    + "…";
            }
            let _ = writeln!(out, "\x1b[2K{line}");
        }
        self.drawn = self.order.len();
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
    }
}

/// Columns and rows of the terminal on stderr (100 × 24 when unknown).
fn terminal_size() -> (usize, usize) {
    match terminal_size::terminal_size_of(std::io::stderr()) {
        Some((terminal_size::Width(w), terminal_size::Height(h))) if w > 0 && h > 0 => {
            (usize::from(w), usize::from(h))
        }
        _ => (100, 24),
    }
}

/// The outcome's one-word kind (as in JSON).
pub fn outcome_kind(o: &HostOutcome) -> &'static str {
    match o {
        HostOutcome::Unchanged => "unchanged",
        HostOutcome::Applied => "applied",
        HostOutcome::UnitsFailed { .. } => "units-failed",
        HostOutcome::RebootRequired { .. } => "reboot-required",
        HostOutcome::DryRun { .. } => "dry-run",
        HostOutcome::RolledBack { .. } => "rolled-back",
        HostOutcome::Failed { .. } => "failed",
        HostOutcome::Skipped { .. } => "skipped",
        HostOutcome::CheckFailed { .. } => "check-failed",
        HostOutcome::Ok => "ok",
    }
}

fn outcome_text(o: &HostOutcome) -> String {
    match o {
        HostOutcome::RolledBack { reason } => {
            format!(
                "rolled-back: {}",
                first_line(&crate::reasons::rollback(reason))
            )
        }
        HostOutcome::Failed { error } => format!("failed: {}", first_line(error)),
        HostOutcome::Skipped { reason } => {
            format!("skipped: {}", first_line(&crate::reasons::skip(reason)))
        }
        HostOutcome::UnitsFailed { units } => format!("units-failed: {}", units.join(", ")),
        HostOutcome::CheckFailed { check, .. } => format!("check-failed: {check}"),
        other => outcome_kind(other).to_owned(),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// One host's line of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    /// The outcome's kind, in the words of the command (`applied`, `rolled-back`, …).
    pub outcome: String,
    /// Why, for hosts that did not succeed.
    pub detail: Option<String>,
    /// The system before and after (`None`: unknown or none).
    pub old: Option<String>,
    pub new: Option<String>,
    pub seconds: Option<f64>,
    #[serde(skip)]
    pub success: bool,
}

/// Prints the summary: a table on stdout, or `{"type": "summary", "hosts": [...]}` as the
/// last JSON line.
pub fn summary(rows: &[Row], json: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({ "type": "summary", "hosts": rows });
        let _ = writeln!(out, "{v}");
        return;
    }
    let arrow = |r: &Row| -> String {
        let show = |p: &Option<String>| p.as_deref().map_or("-".to_owned(), short_path);
        match (&r.old, &r.new) {
            (None, None) => "-".to_owned(),
            (o, n) if o == n => show(n),
            (o, n) => format!("{} → {}", show(o), show(n)),
        }
    };
    let header = ["HOST", "OUTCOME", "SYSTEM", "TIME"];
    let table: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.outcome.clone(),
                arrow(r),
                r.seconds.map_or(String::new(), |s| format!("{s:.1}s")),
            ]
        })
        .collect();
    let mut text = crate::table::render(header, &table);
    for r in rows.iter().filter(|r| r.detail.is_some()) {
        let detail = r.detail.as_deref().unwrap_or_default();
        let _ = writeln!(text, "\n{} {}:", r.name, r.outcome);
        for l in detail.lines() {
            let _ = writeln!(text, "  {l}");
        }
    }
    let _ = out.write_all(text.as_bytes());
}

/// Splits an outcome into the summary's kind and detail.
pub fn outcome_row(o: &HostOutcome) -> (String, Option<String>, bool) {
    let detail = match o {
        HostOutcome::RolledBack { reason } => Some(crate::reasons::rollback(reason)),
        HostOutcome::Failed { error } => Some(error.clone()),
        HostOutcome::Skipped { reason } => Some(crate::reasons::skip(reason)),
        HostOutcome::UnitsFailed { units } => Some(format!(
            "the new system is active, but these units failed: {} (kept, as nixos-rebuild \
             does; --rollback-on-failed-units rolls back instead)",
            units.join(", ")
        )),
        HostOutcome::RebootRequired { reason } => Some(crate::reasons::reboot(reason)),
        HostOutcome::DryRun { output } => Some(output.trim_end().to_owned()),
        HostOutcome::CheckFailed {
            check,
            output,
            rolled_back,
        } => Some(format!(
            "{check} failed: {output}; {}",
            if *rolled_back {
                "rolled back to the previous system"
            } else {
                "left on the new system (--no-rollback)"
            }
        )),
        _ => None,
    };
    (outcome_kind(o).to_owned(), detail, o.is_success())
}

/// The summary rows of a command run over hosts: each host's outcome, named `success_word` when
/// it succeeded (the command's own word: `rolled-back`, `pushed`, `rebooted`; `None` keeps the
/// outcome's kind), with the systems before and after where `systems` knows them.
pub fn rows_of(
    outcomes: Vec<(String, HostOutcome)>,
    tracks: &BTreeMap<String, Track>,
    success_word: Option<&str>,
    systems: impl Fn(&str) -> (Option<String>, Option<String>),
) -> Vec<Row> {
    outcomes
        .into_iter()
        .map(|(name, o)| {
            let (kind, detail, success) = outcome_row(&o);
            let (old, new) = systems(&name);
            Row {
                outcome: match success_word {
                    Some(word) if success => word.to_owned(),
                    _ => kind,
                },
                detail,
                old,
                new,
                seconds: tracks.get(&name).and_then(Track::seconds),
                success,
                name,
            }
        })
        .collect()
}

/// The exit code of a run over hosts (docs/cli.md): 130 when interrupted, else 1 when a host
/// did not succeed, else 3 when a saved plan was refused for some host, else 0.
pub fn exit_code(rows: &[Row], interrupted: bool, refused: bool) -> u8 {
    if interrupted {
        exit::INTERRUPTED
    } else if rows.iter().any(|r| !r.success && r.outcome != "refused") {
        exit::FAILURE
    } else if refused {
        exit::PLAN_OUT_OF_DATE
    } else {
        exit::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(outcome: &str, success: bool) -> Row {
        Row {
            name: "h".into(),
            outcome: outcome.into(),
            detail: None,
            old: None,
            new: None,
            seconds: None,
            success,
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&[row("applied", true)], false, false), 0);
        assert_eq!(
            exit_code(&[row("applied", true), row("failed", false)], false, false),
            1
        );
        assert_eq!(
            exit_code(&[row("applied", true), row("refused", false)], false, true),
            3
        );
        assert_eq!(
            exit_code(
                &[row("rolled-back", false), row("refused", false)],
                false,
                true
            ),
            1
        );
        assert_eq!(exit_code(&[row("applied", true)], true, false), 130);
    }
}
