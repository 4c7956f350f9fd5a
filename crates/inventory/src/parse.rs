//! `fleet.toml` text → [`Inventory`], collecting every problem on the way.

use std::collections::BTreeMap;
use std::ops::Range;

use camino::Utf8Path;
use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;

use crate::checks;
use crate::error::{InventoryError, Problem};
#[path = "build.rs"]
mod build;
#[path = "health.rs"]
mod health;
pub use health::{host_port, http_url, DEFAULT_CHECK_TIMEOUT_SECS};
#[path = "host.rs"]
mod host;
#[path = "nix_path.rs"]
mod nix_path;
#[path = "pin.rs"]
mod pin;
#[path = "relay.rs"]
mod relay;
#[path = "secrets.rs"]
mod secrets;
#[path = "source.rs"]
mod source;
#[path = "values.rs"]
mod values;
pub use secrets::{DEFAULT_SECRETS_DIR, DEFAULT_SECRET_MODE};

use crate::types::Inventory;
use host::{Scope, Settings};
use values::normalize;

/// What [`parse`] needs besides the text.
pub struct ParseOptions<'a> {
    /// The name diagnostics show for the file, e.g. `fleet.toml`.
    pub file_name: &'a str,
    /// The directory relative paths in the file are relative to (should be absolute).
    pub base_dir: &'a Utf8Path,
    /// Whether a path (already joined with `base_dir`) exists. The crate does no I/O itself.
    pub exists: &'a dyn Fn(&Utf8Path) -> bool,
}

/// Default `port`.
pub const DEFAULT_PORT: u16 = 22;
/// Default `user`.
pub const DEFAULT_USER: &str = "root";
/// Default `confirm-timeout`, in seconds.
pub const DEFAULT_CONFIRM_TIMEOUT_SECS: u64 = 30;
/// Largest `confirm-timeout`, in seconds (one day).
pub const MAX_CONFIRM_TIMEOUT_SECS: u64 = 86_400;

const TOP_KEYS: &[&str] = &["defaults", "pins", "hosts", "secrets", "build"];

/// Parses and checks a `fleet.toml`. Returns every problem at once on failure; never panics.
pub fn parse(source: &str, opts: &ParseOptions) -> Result<Inventory, InventoryError> {
    let (root, errors) = DeTable::parse_recoverable(source);
    if !errors.is_empty() {
        // What the parser recovered is a guess; checking it would report mistakes the user did not
        // make (a key lost to the syntax error looks "missing"). Report the syntax errors alone.
        let mut problems: Vec<Problem> = errors
            .iter()
            .map(|e| Problem::Syntax {
                message: e.message().trim().to_owned(),
                span: clamp(e.span().unwrap_or(0..0), source).into(),
            })
            .collect();
        problems.sort_by_key(|p| p.span().offset());
        return Err(InventoryError::new(opts.file_name, source, problems));
    }
    let mut cx = Checker {
        problems: Vec::new(),
        opts,
        relays: Vec::new(),
    };
    let inventory = cx.document(root.get_ref());
    let mut problems = cx.problems;
    if problems.is_empty() {
        return Ok(inventory);
    }
    let mut unique: Vec<Problem> = Vec::with_capacity(problems.len());
    problems.sort_by_key(|p| p.span().offset());
    for p in problems {
        if !unique.contains(&p) {
            unique.push(p);
        }
    }
    Err(InventoryError::new(opts.file_name, source, unique))
}

fn clamp(span: Range<usize>, source: &str) -> Range<usize> {
    let end = span.end.min(source.len());
    span.start.min(end)..end
}

/// A value and where it was written.
#[derive(Debug, Clone)]
struct At<T> {
    value: T,
    span: Range<usize>,
}

type Entry<'t, 'i> = (&'t Spanned<DeString<'i>>, &'t Spanned<DeValue<'i>>);

/// A table's entries in file order (the parser's map is sorted by key).
fn entries<'t, 'i>(table: &'t DeTable<'i>) -> Vec<Entry<'t, 'i>> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

fn type_name(value: &DeValue) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

struct Checker<'o, 'a> {
    problems: Vec<Problem>,
    opts: &'o ParseOptions<'a>,
    /// Each host's `relay` as written, checked once every host is known.
    relays: Vec<relay::Written>,
}

impl Checker<'_, '_> {
    fn document(&mut self, root: &DeTable) -> Inventory {
        let (mut defaults, mut pins, mut hosts, mut secrets) = (None, None, None, None);
        let mut build = Default::default();
        for (key, value) in entries(root) {
            match key.get_ref().as_ref() {
                "defaults" => defaults = self.table("defaults", value).map(|t| (key, t)),
                "pins" => pins = self.table("pins", value),
                "hosts" => hosts = self.table("hosts", value),
                "secrets" => secrets = self.table("secrets", value),
                "build" => build = self.build_table(value),
                other => self.unknown_key(other, "the file's top level", key.span(), TOP_KEYS),
            }
        }
        let defaults = match defaults {
            Some((_, table)) => self.settings(table, "[defaults]", Scope::Defaults),
            None => Settings::default(),
        };
        let mut pin_names = Vec::new();
        let mut parsed_pins = BTreeMap::new();
        for (key, value) in pins.map(entries).unwrap_or_default() {
            let name = key.get_ref().as_ref();
            pin_names.push(name.to_owned());
            if let Some(pin) = self.pin(name, key.span(), value) {
                parsed_pins.insert(name.to_owned(), pin);
            }
        }
        let mut parsed_hosts = Vec::new();
        for (key, value) in hosts.map(entries).unwrap_or_default() {
            if let Some(host) = self.host(key, value, &defaults, &pin_names) {
                parsed_hosts.push(host);
            }
        }
        self.check_relays(&mut parsed_hosts);
        let mut written = Vec::new();
        for (key, value) in secrets.map(entries).unwrap_or_default() {
            if let Some(w) = self.secret(key.get_ref().as_ref(), key.span(), value) {
                written.push(w);
            }
        }
        let mut inventory = Inventory {
            pins: parsed_pins,
            hosts: parsed_hosts,
            secrets: Vec::new(),
            build,
        };
        self.secret_hosts(&inventory, &written);
        inventory.secrets = written.into_iter().map(|w| w.secret).collect();
        inventory
    }

    fn table<'t, 'i>(
        &mut self,
        key: &str,
        value: &'t Spanned<DeValue<'i>>,
    ) -> Option<&'t DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.wrong_type(key, "a table", other, value.span());
                None
            }
        }
    }

    fn wrong_type(
        &mut self,
        key: &str,
        expected: &'static str,
        found: &DeValue,
        span: Range<usize>,
    ) {
        self.problems.push(Problem::WrongType {
            key: key.to_owned(),
            expected,
            found: type_name(found),
            span: span.into(),
        });
    }

    fn unknown_key(&mut self, key: &str, table: &str, span: Range<usize>, known: &[&'static str]) {
        let help = checks::closest(key, known.iter().copied())
            .map(|k| format!("did you mean `{k}`?"))
            .or_else(|| Some(format!("known keys: {}", known.join(", "))));
        self.problems.push(Problem::UnknownKey {
            key: key.to_owned(),
            table: table.to_owned(),
            span: span.into(),
            help,
        });
    }

    fn invalid(&mut self, key: &str, reason: impl Into<String>, span: Range<usize>) {
        self.invalid_with_help(key, reason, span, None);
    }

    fn invalid_with_help(
        &mut self,
        key: &str,
        reason: impl Into<String>,
        span: Range<usize>,
        help: Option<String>,
    ) {
        self.problems.push(Problem::InvalidValue {
            key: key.to_owned(),
            reason: reason.into(),
            span: span.into(),
            help,
        });
    }
}
