//! `[build]`: Nix remote builders for this deployer's builds (docs/scale.md), and the
//! per-host `substitute` switch.
//!
//! A builder is one line of Nix's machine format (`man nix.conf`, `builders`):
//! `URI [SYSTEMS [SSH-KEY [MAX-JOBS [SPEED-FACTOR [FEATURES [MANDATORY [HOST-KEY]]]]]]]`, fields
//! separated by spaces, `-` for "the default". fleet checks each line here so a mistake points
//! at fleet.toml, not at a Nix error in the middle of a build.

use std::ops::Range;

use toml::de::DeValue;
use toml::Spanned;

use super::{entries, At, Checker};
use crate::types::{BuildSettings, Builder, System};

const BUILD_KEYS: &[&str] = &["builders", "builders-use-substitutes"];

/// The URI schemes fleet accepts for a builder (Nix's SSH stores).
const SCHEMES: &[&str] = &["ssh://", "ssh-ng://"];

impl Checker<'_, '_> {
    /// The top-level `[build]` table.
    pub(super) fn build_table(&mut self, value: &Spanned<DeValue>) -> BuildSettings {
        let mut out = BuildSettings::default();
        let Some(table) = self.table("build", value) else {
            return out;
        };
        for (key, value) in entries(table) {
            match key.get_ref().as_ref() {
                "builders" => out.builders = self.builders(value),
                "builders-use-substitutes" => {
                    if let Some(b) = self.boolean("builders-use-substitutes", value) {
                        out.builders_use_substitutes = b.value;
                    }
                }
                other => self.unknown_key(other, "[build]", key.span(), BUILD_KEYS),
            }
        }
        out
    }

    /// A boolean value (`substitute`, `impure`, `builders-use-substitutes`).
    pub(super) fn boolean(&mut self, key: &str, value: &Spanned<DeValue>) -> Option<At<bool>> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(At {
                value: *b,
                span: value.span(),
            }),
            other => {
                self.wrong_type(key, "a boolean (true or false)", other, value.span());
                None
            }
        }
    }

    fn builders(&mut self, value: &Spanned<DeValue>) -> Vec<Builder> {
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(
                "builders",
                "an array of machine lines",
                value.get_ref(),
                value.span(),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            let Some(line) = self.string("builders", item) else {
                continue;
            };
            match parse_machine_line(&line.value) {
                Ok(b) => out.push(b),
                Err(BadLine { reason, help }) => {
                    self.invalid_with_help("builders", reason, line_span(&line), Some(help))
                }
            }
        }
        out
    }
}

fn line_span(line: &At<String>) -> Range<usize> {
    line.span.clone()
}

/// Why a machine line is refused, and what to write instead.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadLine {
    pub(crate) reason: String,
    pub(crate) help: String,
}

const FORMAT_HELP: &str = "a builder is `ssh-ng://USER@HOST SYSTEMS SSH-KEY MAX-JOBS SPEED-FACTOR FEATURES MANDATORY-FEATURES HOST-KEY` (Nix's machine format; `-` for a default), e.g. \"ssh-ng://nix@builder aarch64-linux - 4\"";

/// Parses one line of Nix's machine format.
pub(crate) fn parse_machine_line(line: &str) -> Result<Builder, BadLine> {
    let bad = |reason: String| BadLine {
        reason,
        help: FORMAT_HELP.to_owned(),
    };
    if line.contains(['\n', ';']) {
        return Err(bad(
            "one builder per string: it cannot contain `;` or a newline".into(),
        ));
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    let Some(&uri) = fields.first() else {
        return Err(bad("a builder cannot be empty".into()));
    };
    if uri.starts_with('@') {
        return Err(bad(
            "`@FILE` (a machines file) is not read from fleet.toml; list the builders here".into(),
        ));
    }
    if fields.len() > 8 {
        return Err(bad(format!(
            "{} fields; a machine line has at most 8",
            fields.len()
        )));
    }
    let Some(scheme) = SCHEMES.iter().find(|s| uri.starts_with(*s)) else {
        return Err(BadLine {
            reason: format!("`{uri}` is not an SSH store URI"),
            help: format!(
                "write `ssh-ng://{uri}` (or `ssh://`): fleet's builders are reached over SSH"
            ),
        });
    };
    let authority = uri[scheme.len()..].split('?').next().unwrap_or_default();
    if authority.is_empty() || authority.ends_with('@') || authority.starts_with('@') {
        return Err(bad(format!("`{uri}` names no host")));
    }
    let field = |i: usize| fields.get(i).copied().filter(|f| *f != "-");
    let mut systems = Vec::new();
    if let Some(list) = field(1) {
        for s in list.split(',') {
            match System::new(s) {
                Ok(sys) => systems.push(sys),
                Err(e) => return Err(BadLine {
                    reason: format!("unknown system `{s}`: {}", e.reason),
                    help:
                        "systems are comma-separated Nix doubles, e.g. aarch64-linux,armv7l-linux"
                            .into(),
                }),
            }
        }
    }
    let number = |i: usize, what: &str| -> Result<Option<u32>, BadLine> {
        match field(i) {
            None => Ok(None),
            Some(f) => match f.parse::<u32>() {
                Ok(n) if n > 0 || what == "max jobs" => Ok(Some(n)),
                _ => Err(bad(format!(
                    "the {what} (field {}) must be a positive number, not `{f}`",
                    i + 1
                ))),
            },
        }
    };
    let max_jobs = number(3, "max jobs")?;
    let speed_factor = number(4, "speed factor")?;
    let features = |i: usize| -> Vec<String> {
        field(i)
            .map(|f| {
                f.split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(key) = field(7) {
        if !is_base64(key) {
            return Err(BadLine {
                reason: "the host key (field 8) is not base64".into(),
                help: "write the builder's host key line base64-encoded: `base64 -w0 /etc/ssh/ssh_host_ed25519_key.pub` on the builder".into(),
            });
        }
    }
    Ok(Builder {
        uri: uri.to_owned(),
        systems,
        ssh_key: field(2).map(String::from),
        max_jobs,
        speed_factor,
        supported_features: features(5),
        mandatory_features: features(6),
        host_key: field(7).map(String::from),
    })
}

/// Standard base64 with padding (what `base64 -w0` writes).
fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !s.is_empty()
        && s.len() % 4 == 0
        && s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_short_lines() {
        let b = parse_machine_line("ssh-ng://nix@builder aarch64-linux - 4").unwrap();
        assert_eq!(b.uri, "ssh-ng://nix@builder");
        assert_eq!(b.systems, vec![System::new("aarch64-linux").unwrap()]);
        assert_eq!(
            (b.ssh_key.clone(), b.max_jobs, b.speed_factor),
            (None, Some(4), None)
        );
        assert_eq!(
            b.machine_line(),
            "ssh-ng://nix@builder aarch64-linux - 4 - - - -"
        );
        let b = parse_machine_line(
            "ssh://root@10.0.0.2?ssh-key=/root/k aarch64-linux,armv7l-linux /k 2 3 big-parallel,kvm kvm c3NoLWVkMjU1MTk=",
        )
        .unwrap();
        assert_eq!(b.systems.len(), 2);
        assert_eq!(b.supported_features, vec!["big-parallel", "kvm"]);
        assert_eq!(b.host_key.as_deref(), Some("c3NoLWVkMjU1MTk="));
        assert_eq!(parse_machine_line(&b.machine_line()).unwrap(), b);
        assert!(parse_machine_line("ssh://b").unwrap().systems.is_empty());
    }

    #[test]
    fn bad_lines_say_why() {
        let reason = |l: &str| parse_machine_line(l).unwrap_err().reason;
        assert_eq!(reason(""), "a builder cannot be empty");
        assert!(reason("builder aarch64-linux").contains("not an SSH store URI"));
        assert_eq!(
            parse_machine_line("builder").unwrap_err().help,
            "write `ssh-ng://builder` (or `ssh://`): fleet's builders are reached over SSH"
        );
        assert!(reason("ssh-ng://b arm64-linux").contains("unknown system `arm64-linux`"));
        assert!(reason("ssh-ng://b - - four").contains("max jobs (field 4)"));
        assert!(reason("ssh-ng://b - - 1 0").contains("speed factor"));
        assert!(reason("ssh-ng://a ; ssh-ng://b").contains("one builder per string"));
        assert!(reason("ssh-ng://").contains("names no host"));
        assert!(reason("ssh-ng://b - - 1 1 - - not*base64").contains("not base64"));
        assert!(reason("@/etc/nix/machines").contains("machines file"));
        assert!(reason("ssh://b - - 1 1 - - - extra").contains("at most 8"));
    }
}
