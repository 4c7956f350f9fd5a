//! `fleet man`: the man page (roff), generated from the clap definitions.
//! Install with `fleet man > ~/.local/share/man/man1/fleet.1`.

use clap::CommandFactory;

use crate::args::Cli;
use crate::error::{output, CliError, CommandError};

pub fn run() -> Result<(), CommandError> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .map_err(CliError::Output)?;
    Ok(output(std::io::Write::write_all(
        &mut std::io::stdout().lock(),
        &out,
    ))?)
}
