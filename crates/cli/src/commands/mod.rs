//! One module per command. Each takes the parsed arguments and returns `Ok` or a [`CliError`].

pub mod apply;
pub mod completions;
pub mod hosts;
pub mod man;
pub mod plan;
pub mod rollback;
pub mod status;

use crate::args::{Cli, Command};
use crate::error::CliError;

pub fn run(cli: Cli) -> Result<(), CliError> {
    let global = &cli.global;
    match &cli.command {
        Command::Hosts(args) => hosts::run(global, args),
        Command::Plan(args) => plan::run(global, args),
        Command::Apply(args) => apply::run(global, args),
        Command::Status(args) => status::run(global, args),
        Command::Rollback(args) => rollback::run(global, args),
        Command::Completions(args) => completions::run(args),
        Command::Man => man::run(),
    }
}
