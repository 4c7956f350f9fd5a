//! Where a host's system comes from: `pin` + `config`, or `flake = "REF#ATTR"` (exclusive), on
//! the host or in `[defaults]`. The host's own form wins over the other form in `[defaults]`;
//! both forms at the same level are an error.

use toml::de::{DeString, DeValue};
use toml::Spanned;

use super::host::Settings;
use super::{At, Checker};
use crate::checks;
use crate::error::Problem;
use crate::types::{BuildMode, Flake, HostSource};

/// URL schemes (before `:`) whose relative paths are made absolute against fleet.toml's folder.
const PATH_SCHEMES: &[&str] = &["path", "git+file"];

impl Checker<'_, '_> {
    /// `flake = "REF"`: a non-empty string without whitespace.
    pub(super) fn flake_ref(&mut self, value: &Spanned<DeValue>) -> Option<At<String>> {
        let s = self.string("flake", value)?;
        if s.value.trim().is_empty() || s.value.starts_with('#') {
            self.invalid_with_help(
                "flake",
                "it names no flake",
                s.span,
                Some("`flake = \".\"` is the flake next to fleet.toml; `\".#NAME\"` picks nixosConfigurations.NAME".into()),
            );
            None
        } else if let Some(c) = s
            .value
            .chars()
            .find(|c| c.is_whitespace() || c.is_control())
        {
            self.invalid("flake", format!("it cannot contain {c:?}"), s.span);
            None
        } else if s.value.starts_with('~') {
            self.invalid_with_help(
                "flake",
                "`~` is not expanded",
                s.span,
                Some("write an absolute path, or one relative to the directory of fleet.toml (`.`, `./infra`)".into()),
            );
            None
        } else {
            Some(s)
        }
    }

    /// The host's source, or the problems with it (pushed; `None` returned).
    pub(super) fn host_source(
        &mut self,
        own: &mut Settings,
        defaults: &Settings,
        key: &Spanned<DeString>,
        pin_names: &[String],
    ) -> Option<HostSource> {
        let raw_name = key.get_ref().as_ref();
        let table_name = format!("[hosts.{raw_name}]");
        let own_pinned = own.written.contains("pin") || own.written.contains("config");
        let own_flake = own.written.contains("flake");
        let default_flake = defaults.written.contains("flake");
        let default_pinned =
            defaults.written.contains("pin") || defaults.written.contains("config");
        if own_flake && own_pinned {
            let span = own.flake.as_ref().map_or(key.span(), |f| f.span.clone());
            self.exclusive(span, &table_name);
            return None;
        }
        let flake = if own_flake {
            true
        } else if own_pinned {
            false
        } else if default_flake && default_pinned {
            let span = defaults
                .flake
                .as_ref()
                .map_or(key.span(), |f| f.span.clone());
            self.exclusive(span, "[defaults]");
            return None;
        } else {
            default_flake
        };
        let impure = own.impure.take().or_else(|| defaults.impure.clone());
        if !flake {
            if let Some(i) = impure.filter(|i| i.value) {
                self.invalid_with_help(
                    "impure",
                    "it applies only to a flake host",
                    i.span,
                    Some("a pinned host is always evaluated without the environment; remove `impure`".into()),
                );
                return None;
            }
            return self.pinned(own, defaults, key, pin_names);
        }
        let written = own.flake.take().or_else(|| defaults.flake.clone())?;
        let build = own.build.clone().or_else(|| defaults.build.clone());
        if let Some(b) = build.filter(|b| b.value == BuildMode::Cross) {
            self.invalid_with_help(
                "build",
                "`build = \"cross\"` cannot be combined with `flake`",
                b.span,
                Some("set `nixpkgs.buildPlatform` in the flake's configuration instead".into()),
            );
            return None;
        }
        let (reference, attribute) = match written.value.split_once('#') {
            Some((r, a)) => (r, a.to_owned()),
            None => (written.value.as_str(), raw_name.to_owned()),
        };
        if attribute.is_empty() {
            self.invalid("flake", "nothing follows `#`", written.span);
            return None;
        }
        let reference = self.flake_location(reference, written.span.clone())?;
        Some(HostSource::Flake {
            flake: Flake {
                reference,
                attribute,
                impure: impure.is_some_and(|i| i.value),
            },
        })
    }

    fn exclusive(&mut self, span: std::ops::Range<usize>, table: &str) {
        self.invalid_with_help(
            "flake",
            format!("{table} sets both `flake` and `pin`/`config`"),
            span,
            Some("a host's system comes from a flake or from a pin and a configuration.nix: keep one".into()),
        );
    }

    /// A relative path reference (`.`, `./x`, `path:./x`, `git+file:x`) made absolute against
    /// fleet.toml's folder, checked to hold a `flake.nix`; other references as written.
    fn flake_location(&mut self, reference: &str, span: std::ops::Range<usize>) -> Option<String> {
        let (scheme, rest) = match reference.split_once(':') {
            Some((s, r)) if PATH_SCHEMES.contains(&s) => (Some(s), r),
            Some(_) => return Some(reference.to_owned()),
            None => (None, reference),
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let path = path.strip_prefix("//").unwrap_or(path);
        let dir = self.resolve(path);
        if query.is_none_or(|q| !q.contains("dir=")) && !(self.opts.exists)(&dir.join("flake.nix"))
        {
            self.problems.push(Problem::MissingPath {
                what: "flake.nix of flake",
                path: dir.join("flake.nix"),
                span: span.into(),
            });
            return None;
        }
        let mut out = match scheme {
            Some(s) => format!("{s}:{dir}"),
            None => dir.to_string(),
        };
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        Some(out)
    }

    /// `pin` + `config` (a single `[pins]` entry needs no `pin`).
    fn pinned(
        &mut self,
        own: &mut Settings,
        defaults: &Settings,
        key: &Spanned<DeString>,
        pin_names: &[String],
    ) -> Option<HostSource> {
        let raw_name = key.get_ref().as_ref();
        let table_name = format!("[hosts.{raw_name}]");
        let written = |k: &str| own.written.contains(k) || defaults.written.contains(k);
        let host_span = key.span();
        let missing = |key: &'static str, help: String| Problem::MissingKey {
            table: table_name.clone(),
            key,
            span: host_span.clone().into(),
            help: Some(help),
        };
        let pin = own.pin.take().or_else(|| defaults.pin.clone()).or_else(|| {
            // With a single pin, there is nothing to choose.
            (pin_names.len() == 1 && !written("pin")).then(|| At {
                value: pin_names[0].clone(),
                span: key.span(),
            })
        });
        let mut ok = true;
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
                ok = false;
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
        let (pin, config) = (pin?, config?);
        ok.then_some(HostSource::Pinned {
            pin: pin.value,
            config,
        })
    }
}
