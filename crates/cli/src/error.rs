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

    #[error("cannot read the plan {path}")]
    #[diagnostic(
        code(fleet::apply::plan),
        help("make a new plan with `fleet plan --out {path}`")
    )]
    BadPlan {
        path: Utf8PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("hosts {hosts} are not in the saved plan")]
    #[diagnostic(
        code(fleet::apply::plan_hosts),
        help("select hosts of the plan with `--on`, or make a new plan that includes them")
    )]
    NotInPlan { hosts: String },

    #[error("--rollback-succeeded cannot undo `apply test`")]
    #[diagnostic(
        code(fleet::apply::rollback_succeeded),
        help("`test` leaves the system profile as it is, so going back a generation would go too far; use it with switch or boot")
    )]
    RollbackSucceededWithTest,

    #[error("{hosts} need a sudo password, and there is no terminal to ask it on")]
    #[diagnostic(
        code(fleet::sudo::no_tty),
        help("pass `--sudo-password-command CMD` (or set FLEET_SUDO_PASSWORD_COMMAND): its first line of output is the password")
    )]
    NoSudoPassword { hosts: String },

    #[error("{0}")]
    #[diagnostic(code(fleet::sudo::password))]
    SudoPassword(String),

    #[error("ssh setup: {0}")]
    #[diagnostic(code(fleet::ssh))]
    Ssh(String),

    #[error("cannot start the async runtime")]
    #[diagnostic(code(fleet::runtime))]
    Runtime(#[source] std::io::Error),

    #[error("interrupted")]
    #[diagnostic(code(fleet::interrupted))]
    Interrupted,

    #[error("cannot write {path}")]
    #[diagnostic(code(fleet::write))]
    WriteFile {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("`{given}` must name one host; it selects {matched}")]
    #[diagnostic(
        code(fleet::one_host),
        help("name one host as fleet.toml does (`fleet hosts` lists them)")
    )]
    NotOneHost { given: String, matched: String },

    #[error("`--older-than {given}` is not an age")]
    #[diagnostic(
        code(fleet::gc::age),
        help("a number and a unit: s, m, h, d or w (e.g. `30d`)")
    )]
    BadAge { given: String },

    #[error("fleet add: {0}")]
    #[diagnostic(code(fleet::add))]
    Add(String),

    #[error("{host}: {message}")]
    #[diagnostic(code(fleet::host))]
    Host { host: String, message: String },
    #[error("cannot read secret `{name}`: {reason}")]
    #[diagnostic(
        code(fleet::secret),
        help("check `[secrets.{name}]` in fleet.toml: its `source` file or `command` (see docs/secrets.md)")
    )]
    Secret { name: String, reason: String },

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
            | CliError::NoSuchPlan { .. }
            | CliError::BadPlan { .. }
            | CliError::NotInPlan { .. }
            | CliError::NotOneHost { .. }
            | CliError::BadAge { .. }
            | CliError::RollbackSucceededWithTest
            | CliError::NoSudoPassword { .. } => exit::USAGE,
            CliError::Interrupted => exit::INTERRUPTED,
            CliError::SudoPassword(_)
            | CliError::Ssh(_)
            | CliError::Host { .. }
            | CliError::Add(_)
            | CliError::Runtime(_)
            | CliError::WriteFile { .. }
            | CliError::Secret { .. }
            | CliError::Output(_) => exit::FAILURE,
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
