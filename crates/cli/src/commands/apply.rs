//! `fleet apply`: not implemented yet. It checks its target, fleet.toml and `--on` already, so
//! mistakes there are reported the same way they will be once it works.

use crate::args::{ApplyArgs, ApplyTarget, GlobalArgs};
use crate::error::CliError;
use crate::load;

pub fn run(global: &GlobalArgs, args: &ApplyArgs) -> Result<(), CliError> {
    if let ApplyTarget::Plan(path) = args.target() {
        if !path.is_file() {
            return Err(CliError::NoSuchPlan { target: path });
        }
    }
    let inventory = load::inventory(global)?;
    load::selected(&inventory, global)?;
    Err(CliError::NotImplemented { command: "apply" })
}
