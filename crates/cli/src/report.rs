//! Showing a run as it goes and how it ended: how progress is shown ([`Mode`]; the rendering
//! is in `render.rs`), the words for phases and outcomes, then a summary table (or a JSON
//! summary) and the exit code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::time::Instant;

use fleet_executor::{HostOutcome, Phase};
use fleet_planner::short_path;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::events::Events;
use crate::exit;
pub use crate::render::Track;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A live line per host, redrawn in place (stderr is a terminal).
    Live,
    /// `[host] …` lines on stderr.
    Plain,
    /// Every event as a JSON line on stdout.
    Json,
    /// Only warnings, on stderr (stdout is one JSON document: `plan --json`, `status --json`).
    Quiet,
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

/// Starts reporting a run over `hosts`: when it started (event times are relative to it), the
/// sink its events go to, and the reporter (rendering as [`Mode::pick`] says;
/// [`Events::start_hosts`]).
pub fn start_run(
    json: bool,
    hosts: &[&fleet_inventory::Host],
) -> (
    Instant,
    fleet_executor::EventSink,
    JoinHandle<BTreeMap<String, Track>>,
) {
    Events::for_hosts(json, hosts).start_hosts()
}

pub fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Queued => "queued",
        Phase::Connecting => "connecting",
        Phase::Copying => "copying",
        Phase::Activating => "activating",
        Phase::Linking => "linking package",
        Phase::Checking => "checking",
        Phase::Rebooting => "rebooting",
        Phase::Confirming => "confirming",
        Phase::RollingBack => "rolling back",
    }
}

/// Columns and rows of the terminal on stderr (100 × 24 when unknown).
pub fn terminal_size() -> (usize, usize) {
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

pub fn outcome_text(o: &HostOutcome) -> String {
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

/// Prints the summary: a table on stdout, or `{"format":1,"type":"summary","hosts":[...]}`
/// as the last JSON line.
pub fn summary(rows: &[Row], json: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        let line = json_line("summary", "hosts", &rows);
        let _ = writeln!(out, "{line}");
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

/// A JSON line of a run's output other than an event (`plan`, `summary`, `waves`), stamped now.
pub fn json_line(ty: &str, key: &str, value: &impl Serialize) -> String {
    crate::envelope::line(ty, Some(key), value, std::time::SystemTime::now())
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
