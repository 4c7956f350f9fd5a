//! `[pins.NAME]`: a nixpkgs pinned by tarball URL and hash, or a local path.

use std::ops::Range;

use toml::de::DeValue;
use toml::Spanned;

use super::{entries, Checker};
use crate::checks;
use crate::error::Problem;
use crate::types::{Pin, PinSource};

const PIN_KEYS: &[&str] = &["url", "sha256", "path"];

impl Checker<'_, '_> {
    pub(super) fn pin(
        &mut self,
        name: &str,
        span: Range<usize>,
        value: &Spanned<DeValue>,
    ) -> Option<Pin> {
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
}
