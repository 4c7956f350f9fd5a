//! What can be wrong with a `fleet.toml`: one [`Problem`] per mistake, all of them in one
//! [`InventoryError`] together with the source text, ready for miette to render.

use camino::Utf8PathBuf;
use miette::{Diagnostic, NamedSource, SourceSpan};

/// Every problem found in a `fleet.toml`, with the file's text for rendering.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{file_name} has {}", count(.problems.len()))]
#[diagnostic(code(fleet::inventory))]
pub struct InventoryError {
    file_name: String,
    #[source_code]
    source_code: NamedSource<String>,
    #[related]
    problems: Vec<Problem>,
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 error".to_owned()
    } else {
        format!("{n} errors")
    }
}

impl InventoryError {
    pub(crate) fn new(file_name: &str, source: &str, problems: Vec<Problem>) -> Self {
        InventoryError {
            file_name: file_name.to_owned(),
            source_code: NamedSource::new(file_name, source.to_owned()),
            problems,
        }
    }

    /// The problems, in the order they appear in the file.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

/// One mistake in a `fleet.toml`, pointing at where it was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Diagnostic)]
pub enum Problem {
    #[error("TOML syntax error: {message}")]
    #[diagnostic(code(fleet::toml::syntax))]
    Syntax {
        message: String,
        #[label("here")]
        span: SourceSpan,
    },

    #[error("unknown key `{key}` in {table}")]
    #[diagnostic(code(fleet::toml::unknown_key))]
    UnknownKey {
        key: String,
        table: String,
        #[label("not a key fleet knows")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("`{key}` must be {expected}, not {found}")]
    #[diagnostic(code(fleet::toml::wrong_type))]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
        #[label("{found}")]
        span: SourceSpan,
    },

    #[error("{table} has no `{key}`")]
    #[diagnostic(code(fleet::toml::missing_key))]
    MissingKey {
        table: String,
        key: &'static str,
        #[label("`{key}` is needed here")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("invalid `{key}`: {reason}")]
    #[diagnostic(code(fleet::toml::invalid_value))]
    InvalidValue {
        key: String,
        reason: String,
        #[label("invalid")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("invalid host name `{name}`: {reason}")]
    #[diagnostic(
        code(fleet::host::name),
        help("host names are DNS labels: letters, digits and `-`, at most 63 characters, no `-` at either end; put a full DNS name or an IP in `address`")
    )]
    InvalidHostName {
        name: String,
        reason: &'static str,
        #[label("invalid host name")]
        span: SourceSpan,
    },

    #[error("unknown system `{system}`")]
    #[diagnostic(code(fleet::host::system))]
    UnknownSystem {
        system: String,
        #[label("not a Nix system double of Linux")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("port {port} is out of range")]
    #[diagnostic(code(fleet::host::port), help("a port is between 1 and 65535"))]
    PortOutOfRange {
        /// The number as written.
        port: String,
        #[label("out of range")]
        span: SourceSpan,
    },

    #[error("pin `{pin}` is not defined")]
    #[diagnostic(code(fleet::host::unknown_pin))]
    UnknownPin {
        pin: String,
        #[label("no [pins.{pin}] in this file")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("`sudo = \"none\"` needs `user = \"root\"`, but the user is `{user}`")]
    #[diagnostic(
        code(fleet::host::sudo_none),
        help("use `sudo = \"passwordless\"` or `sudo = \"password\"`, or log in as root")
    )]
    SudoNoneNotRoot {
        user: String,
        #[label("sudo disabled here")]
        span: SourceSpan,
        #[label("user set here")]
        user_span: Option<SourceSpan>,
    },

    #[error("{what} `{path}` does not exist")]
    #[diagnostic(code(fleet::path::missing))]
    MissingPath {
        what: &'static str,
        path: Utf8PathBuf,
        #[label("no such file or directory")]
        span: SourceSpan,
    },

    #[error("pin `{pin}` {reason}")]
    #[diagnostic(
        code(fleet::pin::form),
        help("a pin is either `url` + `sha256` (a tarball) or `path` (a local checkout)")
    )]
    PinForm {
        pin: String,
        reason: &'static str,
        #[label("this pin")]
        span: SourceSpan,
    },
}

impl Problem {
    /// Where the problem was written (for ordering).
    pub fn span(&self) -> SourceSpan {
        match self {
            Problem::Syntax { span, .. }
            | Problem::UnknownKey { span, .. }
            | Problem::WrongType { span, .. }
            | Problem::MissingKey { span, .. }
            | Problem::InvalidValue { span, .. }
            | Problem::InvalidHostName { span, .. }
            | Problem::UnknownSystem { span, .. }
            | Problem::PortOutOfRange { span, .. }
            | Problem::UnknownPin { span, .. }
            | Problem::SudoNoneNotRoot { span, .. }
            | Problem::MissingPath { span, .. }
            | Problem::PinForm { span, .. } => *span,
        }
    }
}

/// A `--on` selector that does not select what the user meant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Diagnostic)]
pub enum SelectError {
    #[error("empty host selector")]
    #[diagnostic(
        code(fleet::select::empty),
        help("use names (`pi1`), globs (`web-*`) and tags (`@pi`), separated by commas")
    )]
    Empty,

    #[error("`{}` matched no host", .unmatched.join("`, `"))]
    #[diagnostic(code(fleet::select::no_match), help("{}", no_match_help(.hosts, .tags)))]
    NoMatch {
        /// The selector terms that matched nothing.
        unmatched: Vec<String>,
        /// The hosts that exist, in file order.
        hosts: Vec<String>,
        /// The tags that exist, sorted.
        tags: Vec<String>,
    },

    #[error("`{selector}` excludes every host it selects")]
    #[diagnostic(
        code(fleet::select::nothing_left),
        help("`!term` removes hosts from the selection: `@pi,!pi3` is every pi host but pi3")
    )]
    NothingLeft { selector: String },
}

fn no_match_help(hosts: &[String], tags: &[String]) -> String {
    let hosts = if hosts.is_empty() {
        "(none)".to_owned()
    } else {
        hosts.join(", ")
    };
    let tags = if tags.is_empty() {
        "(none)".to_owned()
    } else {
        tags.iter()
            .map(|t| format!("@{t}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("hosts: {hosts}\ntags: {tags}")
}
