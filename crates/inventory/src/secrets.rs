//! `[secrets.NAME]`: files fleet uploads to hosts outside the Nix store (docs/secrets.md).

use std::ops::Range;

use camino::{Utf8Path, Utf8PathBuf};
use toml::de::DeValue;
use toml::Spanned;

use super::{entries, normalize, At, Checker};
use crate::error::Problem;
use crate::types::{Inventory, Secret, SecretSource, SecretWhen};

const SECRET_KEYS: &[&str] = &[
    "source", "command", "dest", "owner", "group", "mode", "hosts", "when",
];

/// Where secrets go unless `dest` says otherwise (a tmpfs on NixOS).
pub const DEFAULT_SECRETS_DIR: &str = "/run/keys";
/// Default `mode`.
pub const DEFAULT_SECRET_MODE: u32 = 0o400;

/// A `[secrets.NAME]` table as written, before its `hosts` selector is checked.
pub(super) struct Written {
    pub(super) secret: Secret,
    pub(super) hosts_span: Option<Range<usize>>,
}

impl Checker<'_, '_> {
    pub(super) fn secret(
        &mut self,
        name: &str,
        span: Range<usize>,
        value: &Spanned<DeValue>,
    ) -> Option<Written> {
        let table_key = format!("secrets.{name}");
        let table = self.table(&table_key, value)?;
        let mut ok = true;
        if let Some(reason) = name_problem(name) {
            self.invalid(&table_key, reason, span.clone());
            ok = false;
        }
        let table_name = format!("[secrets.{name}]");
        let (mut source, mut command, mut dest, mut owner, mut group) =
            (None, None, None, None, None);
        let (mut mode, mut hosts, mut when) = (None, None, None);
        for (key, value) in entries(table) {
            let k = key.get_ref().as_ref();
            let got = match k {
                "source" => {
                    source = self.path("source", value);
                    source.is_some()
                }
                "command" => {
                    command = self.string("command", value);
                    if let Some(c) = &command {
                        if c.value.trim().is_empty() {
                            self.invalid("command", "it cannot be empty", c.span.clone());
                            command = None;
                        }
                    }
                    command.is_some()
                }
                "dest" => {
                    dest = self.dest(value);
                    dest.is_some()
                }
                "owner" => {
                    owner = self.account("owner", value);
                    owner.is_some()
                }
                "group" => {
                    group = self.account("group", value);
                    group.is_some()
                }
                "mode" => {
                    mode = self.mode(value);
                    mode.is_some()
                }
                "hosts" => {
                    hosts = self.string("hosts", value);
                    hosts.is_some()
                }
                "when" => {
                    when = self.choice(
                        "when",
                        value,
                        &[
                            ("before-activation", SecretWhen::BeforeActivation),
                            ("after-activation", SecretWhen::AfterActivation),
                        ],
                    );
                    when.is_some()
                }
                other => {
                    self.unknown_key(other, &table_name, key.span(), SECRET_KEYS);
                    false
                }
            };
            ok &= got;
        }
        let source = match (source, command) {
            (Some(_), Some(c)) => {
                self.invalid_with_help(
                    "command",
                    "a secret has either `source` or `command`, not both",
                    c.span,
                    None,
                );
                return None;
            }
            (None, None) => {
                if ok {
                    self.problems.push(Problem::MissingKey {
                        table: table_name,
                        key: "source",
                        span: span.into(),
                        help: Some(
                            "give `source = \"path\"` (a file next to fleet.toml) or `command = \"pass show NAME\"`"
                                .into(),
                        ),
                    });
                }
                return None;
            }
            (Some(path), None) => {
                let resolved = self.resolve(&path.value);
                if !(self.opts.exists)(&resolved) {
                    self.problems.push(Problem::MissingPath {
                        what: "secret source",
                        path: resolved,
                        span: path.span.into(),
                    });
                    return None;
                }
                SecretSource::File(resolved)
            }
            (None, Some(c)) => SecretSource::Command(c.value),
        };
        if !ok {
            return None;
        }
        Some(Written {
            hosts_span: hosts.as_ref().map(|h| h.span.clone()),
            secret: Secret {
                name: name.to_owned(),
                source,
                dest: dest
                    .map(|d| d.value)
                    .unwrap_or_else(|| Utf8Path::new(DEFAULT_SECRETS_DIR).join(name)),
                owner: owner.map_or_else(|| "root".into(), |o| o.value),
                group: group.map_or_else(|| "root".into(), |g| g.value),
                mode: mode.map_or(DEFAULT_SECRET_MODE, |m| m.value),
                hosts: hosts.map(|h| h.value),
                when: when.map_or(SecretWhen::BeforeActivation, |w| w.value),
            },
        })
    }

    /// `dest`: an absolute path, normalised, no `..`, not a directory, not in the Nix store.
    fn dest(&mut self, value: &Spanned<DeValue>) -> Option<At<Utf8PathBuf>> {
        let s = self.string("dest", value)?;
        let problem = if !s.value.starts_with('/') {
            Some("it must be an absolute path on the host")
        } else if s.value.split('/').any(|c| c == "..") {
            Some("it cannot contain `..`")
        } else if s.value.ends_with('/') {
            Some("it names a directory; give the file's path")
        } else if s.value.chars().any(|c| c.is_control()) {
            Some("it cannot contain control characters")
        } else {
            None
        };
        if let Some(reason) = problem {
            self.invalid("dest", reason, s.span);
            return None;
        }
        let path = normalize(Utf8Path::new(&s.value));
        if path.starts_with("/nix/store") {
            self.invalid_with_help(
                "dest",
                "the Nix store is world-readable",
                s.span,
                Some("use a path outside /nix/store, e.g. under /run/keys".into()),
            );
            return None;
        }
        if path.as_str() == "/" {
            self.invalid("dest", "it names a directory; give the file's path", s.span);
            return None;
        }
        Some(At {
            value: path,
            span: s.span,
        })
    }

    /// `owner` / `group`: a user or group name (or a number), as `chown` takes it.
    fn account(&mut self, key: &str, value: &Spanned<DeValue>) -> Option<At<String>> {
        let s = self.string(key, value)?;
        let valid = !s.value.is_empty()
            && s.value.len() <= 32
            && !s.value.starts_with('-')
            && s.value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid {
            self.invalid_with_help(
                key,
                format!("`{}` is not a user or group name", s.value),
                s.span,
                Some("letters, digits, `_`, `-` and `.`, not starting with `-`".into()),
            );
            return None;
        }
        Some(s)
    }

    /// `mode`: an octal string such as `"0400"` or `"640"`.
    fn mode(&mut self, value: &Spanned<DeValue>) -> Option<At<u32>> {
        if let DeValue::Integer(_) = value.get_ref() {
            self.invalid_with_help(
                "mode",
                "write the mode as an octal string",
                value.span(),
                Some("e.g. `mode = \"0440\"`: TOML integers are decimal".into()),
            );
            return None;
        }
        let s = self.string("mode", value)?;
        let parsed = (!s.value.is_empty() && s.value.len() <= 4)
            .then(|| u32::from_str_radix(&s.value, 8).ok())
            .flatten();
        match parsed {
            Some(m) if m <= 0o7777 => Some(At {
                value: m,
                span: s.span,
            }),
            _ => {
                self.invalid_with_help(
                    "mode",
                    format!("`{}` is not an octal mode", s.value),
                    s.span,
                    Some("up to four octal digits, e.g. \"0400\" or \"0640\"".into()),
                );
                None
            }
        }
    }

    /// Checks each secret's `hosts` selector against the parsed hosts.
    pub(super) fn secret_hosts(&mut self, inventory: &Inventory, written: &[Written]) {
        for w in written {
            let (Some(sel), Some(span)) = (&w.secret.hosts, &w.hosts_span) else {
                continue;
            };
            if let Err(e) = inventory.select(Some(sel)) {
                self.invalid("hosts", e.to_string(), span.clone());
            }
        }
    }
}

/// Why a secret's name is unusable, if it is (it is the default file name under /run/keys).
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("a secret's name cannot be empty")
    } else if name.starts_with('.') || name.starts_with('-') {
        Some("a secret's name cannot start with `.` or `-`")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        Some("a secret's name may only contain letters, digits, `_`, `-` and `.`")
    } else {
        None
    }
}
