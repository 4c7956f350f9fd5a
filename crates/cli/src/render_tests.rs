//! Snapshot tests of the reporter: one scripted run (evaluation, build, reaching hosts, reading
//! their state, then copy, activation and every outcome kind) rendered live, plain and as JSON
//! lines, with a fixed clock and width, compared with `src/snapshots/` (update: see
//! docs/testing.md, "Snapshots").

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleet_executor::{
    Event, EventKind, HostOutcome, LogStream, Phase, RebootReason, RollbackReason, SkipReason,
};
use fleet_planner::Goal;

use super::Reporter;
use crate::events::{RunEvent, RunKind};
use crate::report::Mode;

/// A `Write` the test reads back.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

const HOSTS: [&str; 10] = [
    "pi1", "pi2", "nas", "web1", "web2", "db", "dev", "old", "same", "probe",
];

/// 2026-11-30T10:00:00Z.
fn started() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_032_800)
}

fn run(ms: u64, kind: RunKind) -> RunEvent {
    RunEvent::Run {
        at: Duration::from_millis(ms),
        kind,
    }
}

fn host(ms: u64, host: &str, kind: EventKind) -> RunEvent {
    RunEvent::Host(Event {
        host: host.into(),
        at: Duration::from_millis(ms),
        kind,
    })
}

fn phase(ms: u64, h: &str, phase: Phase) -> RunEvent {
    host(ms, h, EventKind::Phase { phase })
}

fn outcome(ms: u64, h: &str, outcome: HostOutcome) -> RunEvent {
    host(ms, h, EventKind::Outcome { outcome })
}

fn names(hosts: &[&str]) -> Vec<String> {
    hosts.iter().map(|h| h.to_string()).collect()
}

const SYS: &str = "/nix/store/0c2dxgq1ya2y2zz2p7qy5j1yvx3xs3i0-nixos-system-pi1-25.05";

/// The run before the executor: evaluation, build, reaching hosts.
fn before() -> Vec<RunEvent> {
    vec![
        run(
            0,
            RunKind::Reaching {
                hosts: names(&HOSTS),
            },
        ),
        run(
            5,
            RunKind::EvalStarted {
                hosts: names(&["pi1", "pi2", "nas"]),
            },
        ),
        run(40, RunKind::Connected { host: "pi1".into() }),
        run(
            41,
            RunKind::HostKeyRecorded {
                host: "pi1".into(),
                key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0".into(),
            },
        ),
        run(
            60,
            RunKind::Facts {
                host: "pi1".into(),
                current: Some(SYS.into()),
                booted: Some(SYS.into()),
                generation: Some(7),
                system: Some("aarch64-linux".into()),
            },
        ),
        run(
            900,
            RunKind::Unreachable {
                host: "web1".into(),
                error: "unreachable: connecting to 10.0.0.9:22: connection refused".into(),
            },
        ),
        run(
            6,
            RunKind::EvalCached {
                hosts: names(&["same"]),
            },
        ),
        run(
            7,
            RunKind::BuildRoute {
                host: "pi1".into(),
                system: "aarch64-linux".into(),
                route: "builder".into(),
                builder: Some("ssh-ng://builder".into()),
            },
        ),
        run(
            1100,
            RunKind::EvalSplit {
                hosts: names(&["pi1", "pi2", "nas"]),
                limit: 3 << 30,
            },
        ),
        run(
            1200,
            RunKind::EvalBatchFailed {
                hosts: names(&["pi1", "pi2", "nas"]),
            },
        ),
        run(
            1300,
            RunKind::Warning {
                host: "pi2".into(),
                message: "reads /etc/secret.key, which is not in the deployment package".into(),
            },
        ),
        run(
            2000,
            RunKind::EvalFinished {
                hosts: names(&["pi1", "pi2", "nas"]),
                failed: Vec::new(),
            },
        ),
        run(
            2100,
            RunKind::BuildStarted {
                hosts: names(&["pi1", "pi2", "nas"]),
            },
        ),
        run(
            2200,
            RunKind::Building {
                derivation: "/nix/store/5n0ykkpqx4v6mk0i0s7ab5a0p3a2f0l9-htop-3.4.1.drv".into(),
            },
        ),
        run(
            9000,
            RunKind::BuildFinished {
                built: vec!["/nix/store/5n0ykkpqx4v6mk0i0s7ab5a0p3a2f0l9-htop-3.4.1.drv".into()],
                failed_hosts: Vec::new(),
            },
        ),
    ]
}

/// The executor's part: a copy with progress, activation output, every outcome kind.
fn hosts() -> Vec<RunEvent> {
    let mut evs = vec![
        phase(10_000, "pi1", Phase::Queued),
        phase(10_001, "pi1", Phase::Copying),
        host(
            10_500,
            "pi1",
            EventKind::Progress {
                done_bytes: 1 << 20,
                total_bytes: 4 << 20,
                done_paths: 3,
                total_paths: 17,
            },
        ),
        // Within 2 s of the last: not a plain line.
        host(
            11_000,
            "pi1",
            EventKind::Progress {
                done_bytes: 2 << 20,
                total_bytes: 4 << 20,
                done_paths: 9,
                total_paths: 17,
            },
        ),
        host(
            11_200,
            "pi1",
            EventKind::Progress {
                done_bytes: 4 << 20,
                total_bytes: 4 << 20,
                done_paths: 17,
                total_paths: 17,
            },
        ),
        host(
            11_210,
            "pi1",
            EventKind::Log {
                stream: LogStream::Fleet,
                line: "copied 17 paths (4194304 bytes of NAR, 1048576 bytes sent compressed)"
                    .into(),
            },
        ),
        phase(11_300, "pi1", Phase::Activating),
        host(
            11_900,
            "pi1",
            EventKind::Log {
                stream: LogStream::Stderr,
                line: "restarting the following units: sshd.service".into(),
            },
        ),
        phase(12_000, "pi1", Phase::Confirming),
        outcome(12_500, "pi1", HostOutcome::Applied),
        phase(10_000, "pi2", Phase::Activating),
        outcome(
            13_000,
            "pi2",
            HostOutcome::UnitsFailed {
                units: names(&["nginx.service", "acme-x.service"]),
            },
        ),
        phase(10_000, "nas", Phase::Activating),
        phase(14_000, "nas", Phase::RollingBack),
        outcome(
            15_000,
            "nas",
            HostOutcome::RolledBack {
                reason: RollbackReason::ActivationFailed {
                    goal: Goal::Switch,
                    said: "sshd.service failed\nsecond line".into(),
                },
            },
        ),
        outcome(
            10_000,
            "web1",
            HostOutcome::Failed {
                error: "unreachable: connecting to 10.0.0.9:22: connection refused".into(),
            },
        ),
        phase(10_000, "web2", Phase::Checking),
        outcome(
            16_000,
            "web2",
            HostOutcome::CheckFailed {
                check: "http http://web2/health".into(),
                output: "503".into(),
                rolled_back: true,
            },
        ),
        outcome(
            10_100,
            "db",
            HostOutcome::RebootRequired {
                reason: RebootReason::NewInitInterface {
                    goal: Goal::Switch,
                    said: String::new(),
                },
            },
        ),
        outcome(
            10_200,
            "dev",
            HostOutcome::DryRun {
                output: "would restart the following units: sshd.service\n".into(),
            },
        ),
        outcome(
            10_300,
            "old",
            HostOutcome::Skipped {
                reason: SkipReason::CancelledBeforeActivation,
            },
        ),
        outcome(10_000, "same", HostOutcome::Unchanged),
        phase(10_000, "probe", Phase::Connecting),
        outcome(10_400, "probe", HostOutcome::Ok),
    ];
    evs.sort_by_key(RunEvent::at);
    evs
}

fn reporter(mode: Mode) -> (Reporter, Buf) {
    let buf = Buf::default();
    let r = Reporter::new(
        mode,
        names(&HOSTS),
        Box::new(buf.clone()),
        started(),
        Box::new(|| 72),
    );
    (r, buf)
}

fn render(mode: Mode) -> (String, Reporter) {
    let (mut r, buf) = reporter(mode);
    for ev in before().iter().chain(&hosts()) {
        r.handle(ev);
    }
    r.tick(Duration::from_millis(17_000));
    (buf.text(), r)
}

/// What a terminal shows after `text`: the live block's cursor-up and erase-line escapes
/// applied (the only ones the reporter writes).
fn screen(text: &str) -> String {
    let mut lines: Vec<String> = vec![String::new()];
    let mut row = 0usize;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(esc) = rest.strip_prefix("\x1b[") {
            let end = esc.find(|c: char| c.is_ascii_alphabetic()).unwrap();
            match &esc[end..=end] {
                "A" => row -= esc[..end].parse::<usize>().unwrap(),
                "K" => lines[row].clear(),
                other => panic!("unexpected escape {other}"),
            }
            rest = &esc[end + 1..];
            continue;
        }
        if c == '\n' {
            row += 1;
            if row == lines.len() {
                lines.push(String::new());
            }
        } else {
            lines[row].push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    lines.join("\n")
}

#[test]
fn plain() {
    let (text, r) = render(Mode::Plain);
    assert!(!text.contains('\x1b'));
    // What the summary's times are made of.
    assert_eq!(r.tracks()["pi1"].seconds(), Some(2.5));
    insta::assert_snapshot!(text);
}

#[test]
fn json() {
    let (text, _) = render(Mode::Json);
    // Warnings and recorded keys also reach a person (stderr).
    let notices = Buf::default();
    let (r, _) = reporter(Mode::Json);
    let mut r = r.with_notices(Box::new(notices.clone()));
    for ev in before() {
        r.handle(&ev);
    }
    let notices = notices.text();
    assert_eq!(notices.lines().count(), 2, "{notices}");
    assert!(notices.contains("fleet: pi1: recorded its new host key"));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), before().len() + hosts().len());
    for l in &lines {
        assert_eq!(l["format"], 1, "{l}");
        assert!(l["time"].as_str().unwrap().starts_with("2026-11-30T10:00:"));
    }
    // Evaluation, build, connect and state before the copy.
    let pos = |t: &str| lines.iter().position(|l| l["type"] == t).unwrap();
    for t in ["eval-started", "build-finished", "connected", "facts"] {
        assert!(pos(t) < pos("progress"), "{t}");
    }
    insta::assert_snapshot!(text);
}

#[test]
fn live() {
    let (text, _) = render(Mode::Live);
    insta::assert_snapshot!("live_screen", screen(&text));
    // The stream itself: lines before the block, then the block redrawn in place.
    insta::assert_snapshot!("live_stream", text.replace('\x1b', "<ESC>"));
}

#[test]
fn live_mid_run() {
    let (mut r, buf) = reporter(Mode::Live);
    for ev in before().iter().chain(hosts().iter().take(4)) {
        r.handle(ev);
    }
    r.tick(Duration::from_millis(11_100));
    insta::assert_snapshot!(screen(&buf.text()));
}

#[test]
fn live_line_above_the_block() {
    let (mut r, buf) = reporter(Mode::Live);
    r.handle(&hosts()[0]);
    r.handle(&run(
        10_050,
        RunKind::Warning {
            host: "pi1".into(),
            message: "late".into(),
        },
    ));
    let s = screen(&buf.text());
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[0], "fleet: warning: pi1: late", "{s}");
    assert_eq!(lines.len(), 1 + HOSTS.len(), "{s}");
}

#[test]
fn quiet_shows_only_warnings_and_recorded_keys() {
    let (text, _) = render(Mode::Quiet);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("recorded its new host key"));
    assert!(lines[1].starts_with("fleet: warning: pi2: "));
}
