//! One module per command. Each takes the parsed arguments and returns its exit code, or a
//! [`CliError`] (whose kind picks the exit code).

pub mod add;
pub mod apply;
pub mod build;
pub mod check;
pub mod completions;
pub mod diff;
pub mod exec;
pub mod gc;
pub mod generations;
pub mod hosts;
pub mod logs;
pub mod man;
pub mod plan;
pub mod reboot;
pub mod rollback;
pub mod secrets;
pub mod status;

use crate::args::{Cli, Command};
use crate::error::CliError;

pub fn run(cli: Cli) -> Result<u8, CliError> {
    let global = &cli.global;
    match &cli.command {
        Command::Hosts(args) => hosts::run(global, args).map(|()| crate::exit::OK),
        Command::Build(args) => build::run(global, args),
        Command::Plan(args) => plan::run(global, args),
        Command::Apply(args) => apply::run(global, args),
        Command::Status(args) => status::run(global, args),
        Command::Rollback(args) => rollback::run(global, args),
        Command::Exec(args) => exec::run(global, args),
        Command::Logs(args) => logs::run(global, args),
        Command::Generations(args) => generations::run(global, args),
        Command::Diff(args) => diff::run(global, args),
        Command::Gc(args) => gc::run(global, args),
        Command::Add(args) => add::run(global, args),
        Command::Check(args) => check::run(global, args),
        Command::Reboot(args) => reboot::run(global, args),
        Command::Secrets(args) => secrets::run(global, args),
        Command::Completions(args) => completions::run(args).map(|()| crate::exit::OK),
        Command::CompleteSelectors(args) => {
            completions::selectors(global, args).map(|()| crate::exit::OK)
        }
        Command::Man => man::run().map(|()| crate::exit::OK),
    }
}
