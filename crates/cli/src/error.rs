//! The CLI's error type: every failure has a kind, and the kind picks the exit code.

use camino::Utf8PathBuf;
use miette::Diagnostic;

use crate::exit;

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum CliError {
    #[error("cannot read {path}")]
    #[diagnostic(
        code(fleet::file),
        help("pass the inventory with `--file PATH` (default: ./fleet.toml)")
    )]
    ReadFile {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Inventory(#[from] fleet_inventory::InventoryError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Select(#[from] fleet_inventory::SelectError),

    #[error("`{target}` is neither a goal nor a plan file")]
    #[diagnostic(
        code(fleet::apply::target),
        help(
            "goals: switch, boot, test, dry-activate; plan files come from `fleet plan --out FILE`"
        )
    )]
    NoSuchPlan { target: Utf8PathBuf },

    #[error("`fleet {command}` is not implemented yet")]
    #[diagnostic(code(fleet::not_implemented))]
    NotImplemented { command: &'static str },

    #[error("cannot write output")]
    #[diagnostic(code(fleet::output))]
    Output(#[source] std::io::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::ReadFile { .. }
            | CliError::Inventory(_)
            | CliError::Select(_)
            | CliError::NoSuchPlan { .. } => exit::USAGE,
            CliError::NotImplemented { .. } | CliError::Output(_) => exit::FAILURE,
        }
    }
}

/// Writes to stdout; a closed pipe (`fleet hosts | head`) is not an error.
pub fn output(result: std::io::Result<()>) -> Result<(), CliError> {
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Output(e)),
        _ => Ok(()),
    }
}
