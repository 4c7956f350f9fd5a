//! `fleet status`: not implemented yet. It checks fleet.toml and `--on` already, so mistakes there
//! are reported the same way they will be once it works.

use crate::args::{GlobalArgs, StatusArgs};
use crate::error::CliError;
use crate::load;

pub fn run(global: &GlobalArgs, _args: &StatusArgs) -> Result<(), CliError> {
    let inventory = load::inventory(global)?;
    load::selected(&inventory, global)?;
    Err(CliError::NotImplemented { command: "status" })
}
