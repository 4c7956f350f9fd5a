//! `fleet.toml` text → [`Inventory`], collecting every problem on the way.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};
use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;

use crate::checks;
use crate::error::{InventoryError, Problem};
#[path = "build.rs"]
mod build;
#[path = "health.rs"]
mod health;
pub use health::{host_port, http_url, DEFAULT_CHECK_TIMEOUT_SECS};
#[path = "nix_path.rs"]
mod nix_path;
#[path = "secrets.rs"]
mod secrets;
pub use secrets::{DEFAULT_SECRETS_DIR, DEFAULT_SECRET_MODE};

use crate::types::{
    host_name_problem, BuildMode, Host, HostName, Inventory, Pin, PinSource, SetInFile, SudoMode,
    System, LINUX_SYSTEMS,
};

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
const PIN_KEYS: &[&str] = &["url", "sha256", "path"];
const HOST_KEYS: &[&str] = &[
    "address",
    "user",
    "port",
    "system",
    "pin",
    "config",
    "tags",
    "sudo",
    "build",
    "host-key",
    "identity-file",
    "known-hosts",
    "confirm-timeout",
    "nix-path",
    "checks",
    "substitute",
];
/// Keys that name one machine and so only make sense per host.
const HOST_ONLY_KEYS: &[&str] = &["address", "host-key"];

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

/// Host settings as written in one table, each with its span.
#[derive(Debug, Default)]
struct Settings {
    /// Keys written in the table, valid or not (an invalid value is not also "missing").
    written: BTreeSet<&'static str>,
    address: Option<At<String>>,
    user: Option<At<String>>,
    port: Option<At<u16>>,
    system: Option<At<System>>,
    pin: Option<At<String>>,
    config: Option<At<String>>,
    tags: Option<At<Vec<String>>>,
    sudo: Option<At<SudoMode>>,
    build: Option<At<BuildMode>>,
    host_key: Option<At<String>>,
    identity_file: Option<At<Utf8PathBuf>>,
    known_hosts: Option<At<Utf8PathBuf>>,
    confirm_timeout: Option<At<u64>>,
    nix_path: Option<At<BTreeMap<String, Utf8PathBuf>>>,
    checks: Option<At<health::CheckSettings>>,
    substitute: Option<At<bool>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Scope {
    Defaults,
    Host,
}

struct Checker<'o, 'a> {
    problems: Vec<Problem>,
    opts: &'o ParseOptions<'a>,
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

    fn string(&mut self, key: &str, value: &Spanned<DeValue>) -> Option<At<String>> {
        match value.get_ref() {
            DeValue::String(s) => Some(At {
                value: s.to_string(),
                span: value.span(),
            }),
            other => {
                self.wrong_type(key, "a string", other, value.span());
                None
            }
        }
    }

    /// A string without whitespace, for user names and addresses.
    fn word(
        &mut self,
        key: &str,
        value: &Spanned<DeValue>,
        forbidden: &[char],
    ) -> Option<At<String>> {
        let s = self.string(key, value)?;
        if s.value.is_empty() {
            self.invalid(key, "it cannot be empty", s.span);
            None
        } else if let Some(c) = s
            .value
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || forbidden.contains(c))
        {
            self.invalid(key, format!("it cannot contain {c:?}"), s.span);
            None
        } else {
            Some(s)
        }
    }

    fn integer(&mut self, key: &str, value: &Spanned<DeValue>) -> Option<At<Result<i64, String>>> {
        match value.get_ref() {
            DeValue::Integer(i) => Some(At {
                value: i64::from_str_radix(i.as_str(), i.radix()).map_err(|_| i.to_string()),
                span: value.span(),
            }),
            other => {
                self.wrong_type(key, "an integer", other, value.span());
                None
            }
        }
    }

    /// A path as written: not empty, no `~`.
    fn path(&mut self, key: &str, value: &Spanned<DeValue>) -> Option<At<String>> {
        let s = self.string(key, value)?;
        if s.value.is_empty() {
            self.invalid(key, "a path cannot be empty", s.span);
            None
        } else if s.value.starts_with('~') {
            self.invalid_with_help(
                key,
                "`~` is not expanded",
                s.span,
                Some(
                    "write an absolute path, or one relative to the directory of fleet.toml".into(),
                ),
            );
            None
        } else {
            Some(s)
        }
    }

    fn resolve(&self, path: &str) -> Utf8PathBuf {
        normalize(&self.opts.base_dir.join(path))
    }

    fn choice<T: Copy>(
        &mut self,
        key: &str,
        value: &Spanned<DeValue>,
        choices: &[(&'static str, T)],
    ) -> Option<At<T>> {
        let s = self.string(key, value)?;
        if let Some((_, v)) = choices.iter().find(|(name, _)| *name == s.value) {
            return Some(At {
                value: *v,
                span: s.span,
            });
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let help = match checks::closest(&s.value, names.iter().copied()) {
            Some(c) => format!("did you mean `{c}`?"),
            None => format!("one of: {}", names.join(", ")),
        };
        self.invalid_with_help(
            key,
            format!("`{}` is not a choice", s.value),
            s.span,
            Some(help),
        );
        None
    }

    fn settings(&mut self, table: &DeTable, table_name: &str, scope: Scope) -> Settings {
        let mut out = Settings::default();
        for (key, value) in entries(table) {
            let name = key.get_ref().as_ref();
            let Some(&known) = HOST_KEYS.iter().find(|k| **k == name) else {
                // A misspelt key is not also a missing one.
                if let Some(meant) = checks::closest(name, HOST_KEYS.iter().copied()) {
                    out.written.insert(meant);
                }
                self.unknown_key(name, table_name, key.span(), HOST_KEYS);
                continue;
            };
            if scope == Scope::Defaults && HOST_ONLY_KEYS.contains(&known) {
                self.invalid_with_help(
                    known,
                    "it cannot be set in [defaults]",
                    key.span(),
                    Some(format!(
                        "`{known}` belongs to one machine; set it in its [hosts.NAME]"
                    )),
                );
                continue;
            }
            out.written.insert(known);
            match known {
                "address" => out.address = self.word(known, value, &['@', '/']),
                "user" => out.user = self.word(known, value, &['@', ':', '/']),
                "port" => out.port = self.port(value),
                "system" => out.system = self.system(value),
                "pin" => out.pin = self.string(known, value),
                "config" => out.config = self.path(known, value),
                "tags" => out.tags = self.tags(value),
                "sudo" => {
                    out.sudo = self.choice(
                        known,
                        value,
                        &[
                            ("none", SudoMode::None),
                            ("passwordless", SudoMode::Passwordless),
                            ("password", SudoMode::Password),
                        ],
                    )
                }
                "build" => {
                    out.build = self.choice(
                        known,
                        value,
                        &[("local", BuildMode::Local), ("cross", BuildMode::Cross)],
                    )
                }
                "host-key" => {
                    out.host_key = self.string(known, value).and_then(|s| {
                        match checks::host_key(&s.value) {
                            Ok(key) => Some(At { value: key, span: s.span }),
                            Err(reason) => {
                                self.invalid_with_help(
                                    known,
                                    reason,
                                    s.span,
                                    Some("copy the line from `ssh-keyscan -t ed25519 HOST` or the host's /etc/ssh/ssh_host_ed25519_key.pub".into()),
                                );
                                None
                            }
                        }
                    })
                }
                "identity-file" => {
                    out.identity_file = self.path(known, value).map(|p| At {
                        value: self.resolve(&p.value),
                        span: p.span,
                    })
                }
                "known-hosts" => {
                    out.known_hosts = self.path(known, value).map(|p| At {
                        value: self.resolve(&p.value),
                        span: p.span,
                    })
                }
                "confirm-timeout" => out.confirm_timeout = self.confirm_timeout(value),
                "nix-path" => out.nix_path = self.nix_path(value),
                "checks" => out.checks = self.checks(value),
                "substitute" => out.substitute = self.boolean(known, value),
                _ => unreachable_key(known),
            }
        }
        out
    }

    fn port(&mut self, value: &Spanned<DeValue>) -> Option<At<u16>> {
        let n = self.integer("port", value)?;
        match n
            .value
            .ok()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n != 0)
        {
            Some(port) => Some(At {
                value: port,
                span: n.span,
            }),
            None => {
                self.problems.push(Problem::PortOutOfRange {
                    port: integer_text(value),
                    span: n.span.into(),
                });
                None
            }
        }
    }

    fn confirm_timeout(&mut self, value: &Spanned<DeValue>) -> Option<At<u64>> {
        let n = self.integer("confirm-timeout", value)?;
        match n
            .value
            .ok()
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| (1..=MAX_CONFIRM_TIMEOUT_SECS).contains(n))
        {
            Some(secs) => Some(At {
                value: secs,
                span: n.span,
            }),
            None => {
                self.invalid_with_help(
                    "confirm-timeout",
                    format!("{} seconds is out of range", integer_text(value)),
                    n.span,
                    Some(format!(
                        "between 1 and {MAX_CONFIRM_TIMEOUT_SECS} seconds; to skip the confirmation use `fleet apply --no-rollback`"
                    )),
                );
                None
            }
        }
    }

    fn system(&mut self, value: &Spanned<DeValue>) -> Option<At<System>> {
        let s = self.string("system", value)?;
        match System::new(s.value.clone()) {
            Ok(system) => Some(At {
                value: system,
                span: s.span,
            }),
            Err(_) => {
                self.problems.push(Problem::UnknownSystem {
                    help: system_help(&s.value),
                    system: s.value,
                    span: s.span.into(),
                });
                None
            }
        }
    }

    fn tags(&mut self, value: &Spanned<DeValue>) -> Option<At<Vec<String>>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type("tags", "an array of strings", value.get_ref(), value.span());
            return None;
        };
        let mut tags = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let Some(tag) = self.string(&format!("tags[{i}]"), item) else {
                ok = false;
                continue;
            };
            if let Some(reason) = checks::tag_problem(&tag.value) {
                self.invalid("tags", reason, tag.span);
                ok = false;
            } else if !tags.contains(&tag.value) {
                tags.push(tag.value);
            }
        }
        ok.then_some(At {
            value: tags,
            span: value.span(),
        })
    }

    fn pin(&mut self, name: &str, span: Range<usize>, value: &Spanned<DeValue>) -> Option<Pin> {
        let table = self.table(&format!("pins.{name}"), value)?;
        let mut ok = true;
        if let Some(reason) = checks::pin_name_problem(name) {
            self.invalid(&format!("pins.{name}"), reason, span.clone());
            ok = false;
        }
        let (mut url, mut sha256, mut path) = (None, None, None);
        let table_name = format!("[pins.{name}]");
        for (key, value) in entries(table) {
            match key.get_ref().as_ref() {
                "url" => {
                    url = self.string("url", value);
                    ok &= url.is_some();
                }
                "sha256" => {
                    sha256 = self.string("sha256", value);
                    ok &= sha256.is_some();
                }
                "path" => {
                    path = self.path("path", value);
                    ok &= path.is_some();
                }
                other => {
                    self.unknown_key(other, &table_name, key.span(), PIN_KEYS);
                    ok = false;
                }
            }
        }
        let form_error = |reason| Problem::PinForm {
            pin: name.to_owned(),
            reason,
            span: span.clone().into(),
        };
        let source = match (url, sha256, path) {
            (Some(_), _, Some(_)) => {
                self.problems.push(form_error("has both `url` and `path`"));
                return None;
            }
            (None, Some(_), Some(_)) => {
                self.problems
                    .push(form_error("has a `sha256` but is a `path`"));
                return None;
            }
            (None, None, None) if ok => {
                self.problems
                    .push(form_error("has neither `url` nor `path`"));
                return None;
            }
            (None, Some(_), None) if ok => {
                self.problems.push(Problem::MissingKey {
                    table: table_name,
                    key: "url",
                    span: span.into(),
                    help: None,
                });
                return None;
            }
            (Some(_), None, None) if ok => {
                self.problems.push(Problem::MissingKey {
                    table: table_name,
                    key: "sha256",
                    span: span.into(),
                    help: Some("get the hash with `nix-prefetch-url --unpack URL`".into()),
                });
                return None;
            }
            (Some(url), Some(sha256), None) => {
                let mut valid = ok;
                if !["https://", "http://", "file://"]
                    .iter()
                    .any(|scheme| url.value.starts_with(scheme) && url.value.len() > scheme.len())
                {
                    self.invalid(
                        "url",
                        "expected an https://, http:// or file:// URL",
                        url.span,
                    );
                    valid = false;
                }
                if !checks::sha256(&sha256.value) {
                    self.invalid_with_help(
                        "sha256",
                        "not a SHA-256 hash",
                        sha256.span,
                        Some("52 characters of Nix base32, 64 hex digits or `sha256-<base64>`; get it with `nix-prefetch-url --unpack URL`".into()),
                    );
                    valid = false;
                }
                if !valid {
                    return None;
                }
                PinSource::Tarball {
                    url: url.value,
                    sha256: sha256.value,
                }
            }
            (None, None, Some(path)) => {
                let resolved = self.resolve(&path.value);
                if !(self.opts.exists)(&resolved) {
                    self.problems.push(Problem::MissingPath {
                        what: "pin path",
                        path: resolved,
                        span: path.span.into(),
                    });
                    return None;
                }
                if !ok {
                    return None;
                }
                PinSource::Path(resolved)
            }
            _ => return None,
        };
        Some(Pin {
            name: name.to_owned(),
            source,
        })
    }

    fn host(
        &mut self,
        key: &Spanned<DeString>,
        value: &Spanned<DeValue>,
        defaults: &Settings,
        pin_names: &[String],
    ) -> Option<Host> {
        let raw_name = key.get_ref().as_ref();
        let table_name = format!("[hosts.{raw_name}]");
        let name = match host_name_problem(raw_name) {
            None => HostName::new(raw_name).ok(),
            Some(reason) => {
                self.problems.push(Problem::InvalidHostName {
                    name: raw_name.to_owned(),
                    reason,
                    span: key.span().into(),
                });
                None
            }
        };
        let table = self.table(&format!("hosts.{raw_name}"), value)?;
        let errors_before = self.problems.len();
        let mut own = self.settings(table, &table_name, Scope::Host);
        let written = |k: &str| own.written.contains(k) || defaults.written.contains(k);
        let host_span = key.span();
        let missing = |key: &'static str, help: String| Problem::MissingKey {
            table: table_name.clone(),
            key,
            span: host_span.clone().into(),
            help: Some(help),
        };

        let user = own.user.take().or_else(|| defaults.user.clone());
        let sudo = own.sudo.take().or_else(|| defaults.sudo.clone());
        let user_name = user
            .as_ref()
            .map_or(DEFAULT_USER, |u| u.value.as_str())
            .to_owned();
        if let Some(At {
            value: SudoMode::None,
            span,
        }) = &sudo
        {
            if user_name != DEFAULT_USER {
                self.problems.push(Problem::SudoNoneNotRoot {
                    user: user_name.clone(),
                    span: span.clone().into(),
                    user_span: user.as_ref().map(|u| u.span.clone().into()),
                });
            }
        }

        let system = own.system.take().or_else(|| defaults.system.clone());
        if system.is_none() && !written("system") {
            self.problems.push(missing(
                "system",
                format!("set `system` (e.g. \"x86_64-linux\") in {table_name} or in [defaults]"),
            ));
        }

        let pin = own.pin.take().or_else(|| defaults.pin.clone()).or_else(|| {
            // With a single pin, there is nothing to choose.
            (pin_names.len() == 1 && !written("pin")).then(|| At {
                value: pin_names[0].clone(),
                span: key.span(),
            })
        });
        match &pin {
            Some(p) if !pin_names.contains(&p.value) => {
                let help = match checks::closest(&p.value, pin_names.iter().map(String::as_str)) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None if pin_names.is_empty() => "define it in a [pins.NAME] table".to_owned(),
                    None => format!("defined pins: {}", pin_names.join(", ")),
                };
                self.problems.push(Problem::UnknownPin {
                    pin: p.value.clone(),
                    span: p.span.clone().into(),
                    help,
                });
            }
            None if !written("pin") => {
                self.problems.push(missing(
                    "pin",
                    format!("set `pin` to one of the [pins] in {table_name} or in [defaults]"),
                ));
            }
            _ => {}
        }

        let config = own.config.take().or_else(|| defaults.config.clone());
        let config = match config {
            Some(c) => {
                let path = self.resolve(&c.value.replace("{name}", raw_name));
                if (self.opts.exists)(&path) {
                    Some(path)
                } else {
                    self.problems.push(Problem::MissingPath {
                        what: "config",
                        path,
                        span: c.span.into(),
                    });
                    None
                }
            }
            None => {
                if !written("config") {
                    self.problems.push(missing(
                        "config",
                        format!("set `config` to the host's configuration.nix in {table_name}, or `config = \"hosts/{{name}}/configuration.nix\"` in [defaults]"),
                    ));
                }
                None
            }
        };

        if self.problems.len() > errors_before {
            return None;
        }
        let (name, system, pin, config) = (name?, system?, pin?, config?);
        // `[defaults]` entries, then the host's own (which win for the same name).
        let mut nix_path = defaults
            .nix_path
            .as_ref()
            .map(|d| d.value.clone())
            .unwrap_or_default();
        nix_path.extend(own.nix_path.take().map(|o| o.value).unwrap_or_default());
        let set_in_file = SetInFile {
            address: own.address.is_some(),
            user: user.is_some(),
            port: own.port.is_some() || defaults.port.is_some(),
        };
        let checks = health::merge(defaults.checks.as_ref(), own.checks.take());
        Some(Host {
            set_in_file,
            nix_path,
            checks,
            address: own.address.map_or_else(|| name.to_string(), |a| a.value),
            name,
            user: user_name,
            port: pick(own.port, &defaults.port).unwrap_or(DEFAULT_PORT),
            system: system.value,
            pin: pin.value,
            config,
            tags: pick(own.tags, &defaults.tags).unwrap_or_default(),
            sudo: sudo.map(|s| s.value).unwrap_or(
                if user.is_none() || user.as_ref().is_some_and(|u| u.value == DEFAULT_USER) {
                    SudoMode::None
                } else {
                    SudoMode::Passwordless
                },
            ),
            build: pick(own.build, &defaults.build).unwrap_or(BuildMode::Local),
            substitute: pick(own.substitute, &defaults.substitute).unwrap_or(false),
            host_key: own.host_key.map(|k| k.value),
            identity_file: pick(own.identity_file, &defaults.identity_file),
            known_hosts: pick(own.known_hosts, &defaults.known_hosts),
            confirm_timeout: Duration::from_secs(
                pick(own.confirm_timeout, &defaults.confirm_timeout)
                    .unwrap_or(DEFAULT_CONFIRM_TIMEOUT_SECS),
            ),
        })
    }
}

/// Removes `.` and resolves `..` lexically (`/a/b/../c` → `/a/c`); symlinks are not consulted.
fn normalize(path: &Utf8Path) -> Utf8PathBuf {
    use camino::Utf8Component;
    let mut out = Utf8PathBuf::new();
    for component in path.components() {
        match component {
            Utf8Component::CurDir => {}
            Utf8Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Utf8Component::Normal(_))) {
                    out.pop();
                } else if !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other.as_str()),
        }
    }
    out
}

/// The host's own value, else the default's.
fn pick<T: Clone>(own: Option<At<T>>, default: &Option<At<T>>) -> Option<T> {
    own.or_else(|| default.clone()).map(|v| v.value)
}

fn integer_text(value: &Spanned<DeValue>) -> String {
    match value.get_ref() {
        DeValue::Integer(i) => i.to_string(),
        _ => String::new(),
    }
}

fn unreachable_key(key: &str) {
    debug_assert!(false, "key `{key}` is in HOST_KEYS but not handled");
}

fn system_help(written: &str) -> String {
    let lower = written.to_ascii_lowercase();
    let (arch, os) = lower.split_once('-').unwrap_or((lower.as_str(), ""));
    let arch = match arch {
        "arm64" => "aarch64",
        "amd64" | "x64" | "x86-64" => "x86_64",
        "x86" | "i386" | "i586" => "i686",
        other => other,
    };
    let guess = format!("{arch}-linux");
    const OTHER_OSES: &[&str] = &["darwin", "freebsd", "netbsd", "openbsd", "windows", "none"];
    if OTHER_OSES.contains(&os) && LINUX_SYSTEMS.contains(&guess.as_str()) {
        return format!(
            "fleet deploys NixOS, so the system ends in `-linux`: did you mean `{guess}`?"
        );
    }
    if LINUX_SYSTEMS.contains(&guess.as_str()) {
        return format!("did you mean `{guess}`?");
    }
    match checks::closest(written, LINUX_SYSTEMS.iter().copied()) {
        Some(c) => format!("did you mean `{c}`?"),
        None => "common Linux systems: x86_64-linux, aarch64-linux, armv7l-linux, armv6l-linux, i686-linux, riscv64-linux, powerpc64le-linux".to_owned(),
    }
}
