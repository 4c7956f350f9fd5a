//! `fleet exec`: one command on every selected host, in parallel (at most `--parallel` at
//! once), over one SSH connection per host. The command's words are quoted for the remote
//! shell (`fleet exec -- echo 'a b'` runs `echo` with one argument `a b`); a pipeline is
//! `fleet exec -- sh -c 'a | b'`. With `--sudo` it runs as root through the host's
//! privilege (`sudo` in fleet.toml): a sudo password is asked once for the run and reaches
//! sudo through the channel's stdin, never argv. Output is grouped per host in selection
//! order (or each line prefixed with the host name, `--prefix`), then a summary of exit
//! codes. Exit 1 when any host failed (exit code not 0, a signal, or unreachable).

use fleet_executor::{command_line, error_chain, CancellationToken, Privilege, Stdin};
use fleet_inventory::Host;
use serde::Serialize;

use crate::args::{ExecArgs, GlobalArgs};
use crate::error::CommandError;
use crate::remote::{self, Remote};
use crate::{exit, load, signals};

/// One host's result (also the `--json` shape).
#[derive(Debug, Serialize)]
struct HostRun {
    name: String,
    /// The command's exit code; `null` when it was killed by a signal or never ran.
    exit_code: Option<u32>,
    /// The signal that killed the command (`TERM`, `KILL`, ...).
    signal: Option<String>,
    stdout: String,
    stderr: String,
    /// Why the command did not run or its end is unknown (unreachable, sudo refused, ...).
    error: Option<String>,
}

impl HostRun {
    fn ok(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// `exit 0`, `exit 3`, `killed by TERM`, `failed: …`.
    fn summary(&self) -> String {
        match (&self.error, self.exit_code, &self.signal) {
            (Some(e), _, _) => format!("failed: {e}"),
            (None, Some(c), _) => format!("exit {c}"),
            (None, None, Some(s)) => format!("killed by {s}"),
            (None, None, None) => "no exit status".to_owned(),
        }
    }
}

pub fn run(global: &GlobalArgs, args: &ExecArgs) -> Result<u8, CommandError> {
    let inventory = load::inventory(global)?;
    let hosts = load::selected(&inventory, global)?;
    let line = command_line(&args.command);
    let runs = signals::runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        signals::on_ctrl_c(cancel.clone());
        let remote = Remote::new(global, &hosts, args.sudo).await?;
        // In selection order, each host as soon as it (and those before it) finished.
        remote::each_host(
            &hosts,
            global.parallel,
            &cancel,
            |h| run_one(&remote, h, &line, args.sudo, &cancel),
            |r| {
                if !global.json {
                    print_host(r, args.prefix);
                }
            },
        )
        .await
    })?;
    if global.json {
        outln!(
            "{}",
            crate::envelope::document("exec", Some("hosts"), &runs).trim_end()
        );
    } else {
        print_summary(&runs);
    }
    Ok(if runs.iter().all(HostRun::ok) {
        exit::OK
    } else {
        exit::FAILURE
    })
}

async fn run_one(
    remote: &Remote,
    host: &Host,
    line: &str,
    sudo: bool,
    cancel: &CancellationToken,
) -> HostRun {
    let mut run = HostRun {
        name: host.name.to_string(),
        exit_code: None,
        signal: None,
        stdout: String::new(),
        stderr: String::new(),
        error: None,
    };
    if cancel.is_cancelled() {
        run.error = Some("interrupted before connecting".into());
        return run;
    }
    let privilege = if sudo {
        remote.privilege(host)
    } else {
        Privilege::None
    };
    let work = async {
        let conn = remote
            .connector
            .connect(&remote::target(host))
            .await
            .map_err(|e| format!("unreachable: {}", error_chain(&e)))?;
        let out = conn.exec(line, &privilege, Stdin::None).await;
        conn.close().await;
        out.map_err(|e| error_chain(&e))
    };
    let result = tokio::select! {
        r = work => r,
        () = cancel.cancelled() => Err("interrupted".to_owned()),
    };
    match result {
        Ok(out) => {
            run.exit_code = out.status;
            run.signal = out.signal.clone();
            run.stdout = out.stdout_lossy();
            run.stderr = out.stderr_lossy();
        }
        Err(e) => run.error = Some(e),
    }
    run
}

/// Grouped: a header line per host, its stdout on stdout and its stderr on stderr. Prefixed:
/// every line as `HOST: line`, on the stream it came from.
fn print_host(r: &HostRun, prefix: bool) {
    if prefix {
        for l in r.stdout.lines() {
            outln!("{}: {l}", r.name);
        }
        for l in r.stderr.lines() {
            errln!("{}: {l}", r.name);
        }
        if let Some(e) = &r.error {
            errln!("{}: fleet: {e}", r.name);
        }
        return;
    }
    outln!("── {} ({})", r.name, r.summary());
    if !r.stdout.is_empty() {
        crate::out::out(format_args!("{}", with_newline(&r.stdout)));
    }
    if !r.stderr.is_empty() {
        crate::out::err(format_args!("{}", with_newline(&r.stderr)));
    }
}

fn with_newline(s: &str) -> std::borrow::Cow<'_, str> {
    if s.ends_with('\n') {
        s.into()
    } else {
        format!("{s}\n").into()
    }
}

/// `3 hosts: 2 ok, 1 failed` and one line per host that failed.
fn print_summary(runs: &[HostRun]) {
    let failed: Vec<&HostRun> = runs.iter().filter(|r| !r.ok()).collect();
    outln!(
        "\n{} host{}: {} ok, {} failed",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        runs.len() - failed.len(),
        failed.len()
    );
    for r in failed {
        outln!("  {}: {}", r.name, r.summary());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(exit_code: Option<u32>, signal: Option<&str>, error: Option<&str>) -> HostRun {
        HostRun {
            name: "a".into(),
            exit_code,
            signal: signal.map(Into::into),
            stdout: String::new(),
            stderr: String::new(),
            error: error.map(Into::into),
        }
    }

    #[test]
    fn only_exit_zero_is_ok() {
        assert!(run(Some(0), None, None).ok());
        assert!(!run(Some(3), None, None).ok());
        assert!(!run(None, Some("TERM"), None).ok());
        assert!(!run(None, None, Some("unreachable: x")).ok());
        assert_eq!(run(Some(3), None, None).summary(), "exit 3");
        assert_eq!(run(None, Some("KILL"), None).summary(), "killed by KILL");
        assert_eq!(
            run(None, None, Some("unreachable: x")).summary(),
            "failed: unreachable: x"
        );
    }
}
