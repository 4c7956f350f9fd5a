//! `fleet`: the command line. The only crate that prints.
//!
//! # Layout
//! - `args`: the clap definitions (also the source of `--help`, the man page, completions).
//! - `commands`: one module per command.
//! - `logs`: `-v`: `tracing` debug logs to stderr.
//! - `load`: reading fleet.toml from disk and selecting hosts.
//! - `desired`: the systems fleet.toml wants (built locally) or a saved plan names, with closures.
//! - `remote`: the SSH connector, targets, privileges, the sudo password (asked once).
//! - `gather`: each host's state over its connection, in parallel.
//! - `one_host`: the one host a command names (`logs`, `generations`, `diff`), connected.
//! - `planning`: desired + gathered → the plan (shared by `plan` and `apply`).
//! - `events`: the run's one typed event stream (evaluation, build, reaching hosts, then the
//!   executor's per-host events) and its handle [`events::Events`].
//! - `render`: the reporter: live, plain or JSON rendering of the events into any `Write`.
//! - `envelope`: the JSON envelope (`format`, `type`) of every `--json` output.
//! - `report`: progress modes, the summary table, exit codes of runs over hosts.
//! - `checks`: fleet.toml's health checks as the executor's probes.
//! - `waves`: `--canary`, `--batch`: the waves of a rollout.
//! - `rollout`: an apply in waves: stops on a failed canary or `--max-failures`.
//! - `record`: what apply records on a host (git commit, dirty, who, when).
//! - `signals`: the runtime and Ctrl-C (first: stop new work; second: abort).
//! - `table`: aligned plain-text tables (hosts, status, summaries).
//! - `term`: terminal prompts without echo (Ctrl-C at a prompt exits 130), TTY detection.
//! - `out`: `errln!`/`outln!`, printing that ignores a closed stdout/stderr.
//! - `error`: [`error::CliError`] (what failed) and [`error::CommandError`] (its kind, which
//!   picks the exit code, and hints), what every command returns.
//! - `exit`: the named exit codes (documented in docs/cli.md).

// Printing goes through `out` (never panics on a closed pipe); std's print macros are refused.
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
mod out;
mod args;
mod checks;
mod commands;
mod desired;
mod envelope;
mod error;
mod events;
mod exit;
mod gather;
mod load;
mod logs;
mod one_host;
mod planning;
mod reasons;
mod record;
mod relay;
mod remote;
mod render;
mod report;
mod rollout;
mod scale;
mod secrets;
mod signals;
mod table;
mod term;
mod waves;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    logs::init(cli.global.verbose);
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let (code, report) = err.report();
            errln!("{report}");
            ExitCode::from(code)
        }
    }
}
