//! `fleet rollback`: not implemented yet. It checks fleet.toml and `--on` already, so mistakes there
//! are reported the same way they will be once it works.

use crate::args::{GlobalArgs, RollbackArgs};
use crate::error::CliError;
use crate::load;

pub fn run(global: &GlobalArgs, _args: &RollbackArgs) -> Result<(), CliError> {
    let inventory = load::inventory(global)?;
    load::selected(&inventory, global)?;
    Err(CliError::NotImplemented {
        command: "rollback",
    })
}
