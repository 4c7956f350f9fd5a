//! The CLI's errors. [`CliError`] says what went wrong (library errors stay typed until here);
//! [`CommandError`], what every command returns, adds its [`ErrorKind`], which picks the exit
//! code, and hints for what to do. `main` turns one into the exit code and the rendered report
//! ([`CommandError::report`]): kinds and hints are mapped and shown in this one module.

use camino::Utf8PathBuf;
use miette::Diagnostic;

use crate::exit;

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum CliError {
    #[error("cannot read {path}")]
    #[diagnostic(code(fleet::file))]
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
    #[diagnostic(code(fleet::apply::target))]
    NoSuchPlan { target: Utf8PathBuf },

    #[error("cannot read the plan {path}")]
    #[diagnostic(code(fleet::apply::plan))]
    BadPlan {
        path: Utf8PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("hosts {hosts} are not in the saved plan")]
    #[diagnostic(code(fleet::apply::plan_hosts))]
    NotInPlan { hosts: String },

    #[error("--rollback-succeeded cannot undo `apply test`")]
    #[diagnostic(code(fleet::apply::rollback_succeeded))]
    RollbackSucceededWithTest,

    #[error("{hosts} need a sudo password, and there is no terminal to ask it on")]
    #[diagnostic(code(fleet::sudo::no_tty))]
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
    #[diagnostic(code(fleet::one_host))]
    NotOneHost { given: String, matched: String },

    #[error("`--older-than {given}` is not an age")]
    #[diagnostic(code(fleet::gc::age))]
    BadAge { given: String },

    #[error("fleet add: {0}")]
    #[diagnostic(code(fleet::add))]
    Add(String),

    #[error("{host}: {message}")]
    #[diagnostic(code(fleet::host))]
    Host { host: String, message: String },
    #[error("cannot read secret `{name}`: {reason}")]
    #[diagnostic(code(fleet::secret))]
    Secret { name: String, reason: String },

    #[error("cannot write output")]
    #[diagnostic(code(fleet::output))]
    Output(#[source] std::io::Error),
}

/// Writes to stdout; a closed pipe (`fleet hosts | head`) is not an error.
pub fn output(result: std::io::Result<()>) -> Result<(), CliError> {
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Output(e)),
        _ => Ok(()),
    }
}

/// What kind of failure an error is. The kind alone picks the exit code
/// ([`ErrorKind::exit_code`], documented in docs/cli.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The command line is wrong: an argument, a selector that matches nothing, a plan file
    /// that is not one, no way to ask a needed sudo password.
    Usage,
    /// fleet.toml cannot be read or has errors.
    Config,
    /// A host could not be reached or failed (for commands that stop at a host's error).
    Host,
    /// Something on this machine failed: a file that cannot be written, a secret that cannot
    /// be read, the sudo password command, the SSH setup.
    Local,
    /// Ctrl-C.
    Interrupted,
    /// fleet itself could not run (its async runtime did not start).
    Internal,
}

impl ErrorKind {
    /// The exit code of a run that ends with an error of this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Usage | ErrorKind::Config => exit::USAGE,
            ErrorKind::Interrupted => exit::INTERRUPTED,
            ErrorKind::Host | ErrorKind::Local | ErrorKind::Internal => exit::FAILURE,
        }
    }
}

impl CliError {
    /// The kind of each error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CliError::ReadFile { .. } | CliError::Inventory(_) => ErrorKind::Config,
            CliError::Select(_)
            | CliError::NoSuchPlan { .. }
            | CliError::BadPlan { .. }
            | CliError::NotInPlan { .. }
            | CliError::NotOneHost { .. }
            | CliError::BadAge { .. }
            | CliError::RollbackSucceededWithTest
            | CliError::NoSudoPassword { .. } => ErrorKind::Usage,
            CliError::Interrupted => ErrorKind::Interrupted,
            CliError::Host { .. } => ErrorKind::Host,
            CliError::SudoPassword(_)
            | CliError::Ssh(_)
            | CliError::Add(_)
            | CliError::WriteFile { .. }
            | CliError::Secret { .. }
            | CliError::Output(_) => ErrorKind::Local,
            CliError::Runtime(_) => ErrorKind::Internal,
        }
    }

    /// What the user can do about it, where fleet knows.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            CliError::ReadFile { .. } => {
                "pass the inventory with `--file PATH` (default: ./fleet.toml)".into()
            }
            CliError::NoSuchPlan { .. } => {
                "goals: switch, boot, test, dry-activate; plan files come from `fleet plan --out FILE`".into()
            }
            CliError::BadPlan { path, .. } => format!("make a new plan with `fleet plan --out {path}`"),
            CliError::NotInPlan { .. } => {
                "select hosts of the plan with `--on`, or make a new plan that includes them".into()
            }
            CliError::RollbackSucceededWithTest => "`test` leaves the system profile as it is, so going back a generation would go too far; use it with switch or boot".into(),
            CliError::NoSudoPassword { .. } => "pass `--sudo-password-command CMD` (or set FLEET_SUDO_PASSWORD_COMMAND): its first line of output is the password".into(),
            CliError::NotOneHost { .. } => {
                "name one host as fleet.toml does (`fleet hosts` lists them)".into()
            }
            CliError::BadAge { .. } => "a number and a unit: s, m, h, d or w (e.g. `30d`)".into(),
            CliError::Secret { name, .. } => format!(
                "check `[secrets.{name}]` in fleet.toml: its `source` file or `command` (see docs/secrets.md)"
            ),
            _ => return None,
        })
    }
}

/// What every command returns on failure: the error, its kind (the exit code) and hints.
#[derive(Debug)]
pub struct CommandError {
    kind: ErrorKind,
    /// Boxed: a command's `Result` stays small.
    error: Box<CliError>,
    hints: Vec<String>,
}

impl CommandError {
    /// The kind: picks the exit code.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// One more hint, shown after the error's own.
    #[allow(dead_code)] // for commands that know more than the error does
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// The hints, in the order they are shown.
    pub fn hints(&self) -> &[String] {
        &self.hints
    }

    /// The exit code, and the error as the user sees it on stderr (the miette report: the
    /// error, its causes, spans in fleet.toml, then the hints as `help:`).
    pub fn report(self) -> (u8, String) {
        let code = self.kind().exit_code();
        (code, format!("{:?}", miette::Report::new(self)))
    }
}

impl From<CliError> for CommandError {
    fn from(error: CliError) -> Self {
        CommandError {
            kind: error.kind(),
            hints: error.hint().into_iter().collect(),
            error: Box::new(error),
        }
    }
}

impl From<fleet_inventory::InventoryError> for CommandError {
    fn from(e: fleet_inventory::InventoryError) -> Self {
        CliError::from(e).into()
    }
}

impl From<fleet_inventory::SelectError> for CommandError {
    fn from(e: fleet_inventory::SelectError) -> Self {
        CliError::from(e).into()
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for CommandError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// The error's own diagnostic (code, spans, its library's help), with the hints as its help.
impl Diagnostic for CommandError {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.error.code()
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        let own = self.error.help().map(|h| h.to_string());
        let all: Vec<&str> = own
            .iter()
            .map(String::as_str)
            .chain(self.hints().iter().map(String::as_str))
            .collect();
        (!all.is_empty()).then(|| Box::new(all.join("\n")) as Box<dyn std::fmt::Display>)
    }

    fn severity(&self) -> Option<miette::Severity> {
        self.error.severity()
    }

    fn url<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.error.url()
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.error.source_code()
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        self.error.labels()
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        self.error.related()
    }

    fn diagnostic_source(&self) -> Option<&dyn Diagnostic> {
        self.error.diagnostic_source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_documented_exit_code() {
        for (kind, code) in [
            (ErrorKind::Usage, 2),
            (ErrorKind::Config, 2),
            (ErrorKind::Host, 1),
            (ErrorKind::Local, 1),
            (ErrorKind::Interrupted, 130),
            (ErrorKind::Internal, 1),
        ] {
            assert_eq!(kind.exit_code(), code, "{kind:?}");
        }
    }

    #[test]
    fn errors_pick_their_kind() {
        let read = CliError::ReadFile {
            path: "fleet.toml".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let cases = [
            (read, ErrorKind::Config, exit::USAGE),
            (
                CliError::BadAge { given: "x".into() },
                ErrorKind::Usage,
                exit::USAGE,
            ),
            (
                CliError::Interrupted,
                ErrorKind::Interrupted,
                exit::INTERRUPTED,
            ),
            (
                CliError::Host {
                    host: "pi1".into(),
                    message: "down".into(),
                },
                ErrorKind::Host,
                exit::FAILURE,
            ),
            (
                CliError::Runtime(std::io::Error::other("no threads")),
                ErrorKind::Internal,
                exit::FAILURE,
            ),
        ];
        for (error, kind, code) in cases {
            let e = CommandError::from(error);
            assert_eq!(e.kind(), kind);
            assert_eq!(e.report().0, code);
        }
    }

    #[test]
    fn hints_are_shown_as_help_after_the_error() {
        let e = CommandError::from(CliError::BadAge { given: "3x".into() })
            .with_hint("see `fleet gc --help`");
        assert_eq!(
            e.hints(),
            [
                "a number and a unit: s, m, h, d or w (e.g. `30d`)",
                "see `fleet gc --help`"
            ]
        );
        let (code, text) = e.report();
        assert_eq!(code, exit::USAGE);
        let text = crate::out::strip_ansi(&text);
        let error = text.find("`--older-than 3x` is not an age").unwrap();
        let first = text.find("a number and a unit").unwrap();
        let second = text.find("see `fleet gc --help`").unwrap();
        assert!(error < first && first < second, "{text}");
        assert!(text.contains("help:"), "{text}");
    }

    #[test]
    fn errors_without_hints_have_no_help() {
        let e = CommandError::from(CliError::Interrupted);
        assert!(e.hints().is_empty());
        assert!(Diagnostic::help(&e).is_none());
    }
}
