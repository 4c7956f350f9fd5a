//! `[hosts.NAME]` and `[defaults]`: a host's settings, merged with the defaults into a [`Host`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use camino::Utf8PathBuf;
use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;

use super::{
    entries, health, At, Checker, DEFAULT_CONFIRM_TIMEOUT_SECS, DEFAULT_PORT, DEFAULT_USER,
};
use crate::checks;
use crate::error::Problem;
use crate::types::{host_name_problem, BuildMode, Host, HostName, SetInFile, SudoMode, System};

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
    "flake",
    "impure",
    "substitute",
    "relay",
];
/// Keys that name one machine and so only make sense per host.
const HOST_ONLY_KEYS: &[&str] = &["address", "host-key"];

/// Host settings as written in one table, each with its span.
#[derive(Debug, Default)]
pub(super) struct Settings {
    /// Keys written in the table, valid or not (an invalid value is not also "missing").
    pub(super) written: BTreeSet<&'static str>,
    pub(super) address: Option<At<String>>,
    pub(super) user: Option<At<String>>,
    pub(super) port: Option<At<u16>>,
    pub(super) system: Option<At<System>>,
    pub(super) pin: Option<At<String>>,
    pub(super) config: Option<At<String>>,
    pub(super) tags: Option<At<Vec<String>>>,
    pub(super) sudo: Option<At<SudoMode>>,
    pub(super) build: Option<At<BuildMode>>,
    pub(super) host_key: Option<At<String>>,
    pub(super) identity_file: Option<At<Utf8PathBuf>>,
    pub(super) known_hosts: Option<At<Utf8PathBuf>>,
    pub(super) confirm_timeout: Option<At<u64>>,
    pub(super) nix_path: Option<At<BTreeMap<String, Utf8PathBuf>>>,
    pub(super) checks: Option<At<health::CheckSettings>>,
    pub(super) flake: Option<At<String>>,
    pub(super) impure: Option<At<bool>>,
    pub(super) substitute: Option<At<bool>>,
    pub(super) relay: Option<At<String>>,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Scope {
    Defaults,
    Host,
}

impl Checker<'_, '_> {
    pub(super) fn settings(&mut self, table: &DeTable, table_name: &str, scope: Scope) -> Settings {
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
                "flake" => out.flake = self.flake_ref(value),
                "impure" => out.impure = self.boolean(known, value),
                "substitute" => out.substitute = self.boolean(known, value),
                "relay" => out.relay = self.word(known, value, &['@', ':', '/']),
                _ => unreachable_key(known),
            }
        }
        out
    }

    pub(super) fn host(
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

        let source = self.host_source(&mut own, defaults, key, pin_names);

        if self.problems.len() > errors_before {
            return None;
        }
        let (name, system, source) = (name?, system?, source?);
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
        let relay = self.relay_of(&name, own.relay.take(), defaults.relay.as_ref());
        Some(Host {
            relay,
            set_in_file,
            nix_path,
            checks,
            address: own.address.map_or_else(|| name.to_string(), |a| a.value),
            name,
            user: user_name,
            port: pick(own.port, &defaults.port).unwrap_or(DEFAULT_PORT),
            system: system.value,
            source,
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

/// The host's own value, else the default's.
fn pick<T: Clone>(own: Option<At<T>>, default: &Option<At<T>>) -> Option<T> {
    own.or_else(|| default.clone()).map(|v| v.value)
}

fn unreachable_key(key: &str) {
    debug_assert!(false, "key `{key}` is in HOST_KEYS but not handled");
}
