//! A fleet run: finished ([`Run`], its exit code, output and JSON events) or running in the
//! background ([`Running`], its events as they come, Ctrl-C, the end).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::check_envelope;

/// A finished fleet run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    /// Panics with both streams unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// stdout parsed as one JSON document in fleet's envelope (docs/cli.md, "JSON output"):
    /// checked to have `format` 1 and a `type`.
    #[track_caller]
    pub fn envelope(&self) -> serde_json::Value {
        let doc: serde_json::Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout));
        check_envelope(&doc);
        doc
    }

    /// The payload of the envelope on stdout: the value under the key named like its `type`
    /// (`plan`, `hosts`, `generations`), else under `hosts` (`status`, `exec`, `gc`), else the
    /// whole document (`diff`).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        let doc = self.envelope();
        let ty = doc["type"].as_str().unwrap_or_default().to_owned();
        [ty.as_str(), "hosts"]
            .iter()
            .find_map(|k| doc.get(*k).cloned())
            .unwrap_or(doc)
    }

    /// stdout as JSON lines (`apply --json`, `rollback --json`), each checked to be in the
    /// envelope.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}"));
                check_envelope(&v);
                v
            })
            .collect()
    }

    /// The hosts of the `summary` line of a `--json` run.
    #[track_caller]
    fn summary_hosts(&self) -> Vec<serde_json::Value> {
        let lines = self.json_lines();
        let summary = lines
            .into_iter()
            .find(|v| v["type"] == "summary")
            .unwrap_or_else(|| panic!("no summary line in:\n{}", self.stdout));
        summary["hosts"].as_array().unwrap().clone()
    }

    /// The summary's `detail` of `host` in a `--json` run (why it did not succeed; empty if
    /// it did).
    #[track_caller]
    pub fn detail(&self, host: &str) -> String {
        self.summary_hosts()
            .iter()
            .find(|h| h["name"] == host)
            .and_then(|h| h["detail"].as_str())
            .unwrap_or_default()
            .to_owned()
    }

    /// The `summary` line of a `--json` run: host name → outcome.
    #[track_caller]
    pub fn outcomes(&self) -> std::collections::BTreeMap<String, String> {
        self.summary_hosts()
            .iter()
            .map(|h| {
                (
                    h["name"].as_str().unwrap().to_owned(),
                    h["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

/// Polls `cond` every 50 ms until it holds; panics after `timeout` saying `what` was awaited.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `fleet` process running in the background ([`Fleet::spawn`]): its stdout is collected line
/// by line while it runs (for `--json` events), its stderr at the end.
pub struct Running {
    child: Child,
    args: String,
    started: Instant,
    lines: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<u8>>>,
    stdout: Option<std::thread::JoinHandle<()>>,
    stderr: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Collects the stdout lines and the stderr of `child` (spawned with both piped, or stderr
    /// not) while it runs; `args` is what it was started with, for messages.
    pub(crate) fn start(mut child: Child, args: String) -> Running {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let err = Arc::new(Mutex::new(Vec::new()));
        let to = err.clone();
        let stderr = child.stderr.take().map(|mut from| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    to.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        });
        Running {
            child,
            args,
            started: Instant::now(),
            lines,
            err,
            stdout: Some(stdout),
            stderr,
        }
    }

    /// The fleet process's id (also its process group's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The JSON lines printed so far (lines that are not JSON are skipped).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// What fleet printed on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    /// Waits until an event satisfies `pred` and returns it; panics after `timeout` or when
    /// fleet exits first.
    #[track_caller]
    pub fn wait_for_event(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // One last look: the line may have arrived with the exit.
                std::thread::sleep(Duration::from_millis(100));
                if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                    return e;
                }
                panic!(
                    "fleet {} exited ({status}) before {what}; stdout so far:\n{}",
                    self.args,
                    self.lines.lock().unwrap().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; stdout so far:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT to fleet's process group, as Ctrl-C in a terminal does (fleet and the local
    /// processes it started get it).
    pub fn interrupt(&self) {
        let st = Command::new("kill")
            .args(["-INT", "--", &format!("-{}", self.pid())])
            .status()
            .expect("kill runs");
        assert!(st.success(), "kill -INT failed");
    }

    /// Whether fleet is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for fleet to exit (at most `timeout`, then kills it and panics).
    #[track_caller]
    pub fn finish(mut self, timeout: Duration) -> Run {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("fleet {} did not exit within {timeout:?}", self.args);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(t) = self.stdout.take() {
            let _ = t.join();
        }
        if let Some(t) = self.stderr.take() {
            let _ = t.join();
        }
        let stderr = self.stderr_so_far();
        let mut stdout = self.lines.lock().unwrap().join("\n");
        stdout.push('\n');
        let run = Run {
            code: status.code(),
            stdout,
            stderr,
            took: self.started.elapsed(),
        };
        eprintln!(
            "$ fleet {} -> {:?} in {:.1?}\n{}{}",
            self.args, run.code, run.took, run.stderr, run.stdout
        );
        run
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
