//! Single values of fleet.toml: strings, words, integers, paths, choices, ports, timeouts,
//! systems, tags.

use camino::{Utf8Path, Utf8PathBuf};
use toml::de::DeValue;
use toml::Spanned;

use super::{At, Checker, MAX_CONFIRM_TIMEOUT_SECS};
use crate::checks;
use crate::error::Problem;
use crate::types::{System, LINUX_SYSTEMS};

impl Checker<'_, '_> {
    pub(super) fn string(&mut self, key: &str, value: &Spanned<DeValue>) -> Option<At<String>> {
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
    pub(super) fn word(
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

    pub(super) fn integer(
        &mut self,
        key: &str,
        value: &Spanned<DeValue>,
    ) -> Option<At<Result<i64, String>>> {
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
    pub(super) fn path(&mut self, key: &str, value: &Spanned<DeValue>) -> Option<At<String>> {
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

    pub(super) fn resolve(&self, path: &str) -> Utf8PathBuf {
        normalize(&self.opts.base_dir.join(path))
    }

    pub(super) fn choice<T: Copy>(
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

    pub(super) fn port(&mut self, value: &Spanned<DeValue>) -> Option<At<u16>> {
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

    pub(super) fn confirm_timeout(&mut self, value: &Spanned<DeValue>) -> Option<At<u64>> {
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

    pub(super) fn system(&mut self, value: &Spanned<DeValue>) -> Option<At<System>> {
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

    pub(super) fn tags(&mut self, value: &Spanned<DeValue>) -> Option<At<Vec<String>>> {
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
}

/// Removes `.` and resolves `..` lexically (`/a/b/../c` → `/a/c`); symlinks are not consulted.
pub(super) fn normalize(path: &Utf8Path) -> Utf8PathBuf {
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

pub(super) fn integer_text(value: &Spanned<DeValue>) -> String {
    match value.get_ref() {
        DeValue::Integer(i) => i.to_string(),
        _ => String::new(),
    }
}

pub(super) fn system_help(written: &str) -> String {
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
