//! `fleet completions SHELL`: a completion script generated from the clap definitions.

use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs};
use crate::error::{output, CliError};

pub fn run(args: &CompletionsArgs) -> Result<(), CliError> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "fleet", &mut out);
    output(std::io::Write::write_all(
        &mut std::io::stdout().lock(),
        &out,
    ))
}
