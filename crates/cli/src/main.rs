//! `fleet`: the command line. The only crate that prints.
//!
//! # Layout
//! - `args`: the clap definitions (also the source of `--help`, the man page, completions).
//! - `commands`: one module per command.
//! - `load`: reading fleet.toml from disk and selecting hosts.
//! - `error`: [`error::CliError`], whose kind picks the exit code.
//! - `exit`: the named exit codes (documented in docs/cli.md).

mod args;
mod commands;
mod error;
mod exit;
mod load;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            let code = err.exit_code();
            eprintln!("{:?}", miette::Report::new(err));
            ExitCode::from(code)
        }
    }
}
