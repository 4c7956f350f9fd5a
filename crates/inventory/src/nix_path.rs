//! `nix-path = { NAME = "PATH", … }`: further entries of a host's evaluation search path
//! (`<NAME>` in its configuration), on a host or in `[defaults]`.

use std::collections::BTreeMap;

use camino::Utf8PathBuf;
use toml::de::DeValue;
use toml::Spanned;

use super::{entries, At, Checker};
use crate::error::Problem;

/// Names fleet sets itself.
const RESERVED: &[(&str, &str)] = &[
    ("nixpkgs", "`<nixpkgs>` is the host's pin: set `pin`"),
    (
        "nixos-config",
        "`<nixos-config>` is the host's configuration: set `config`",
    ),
];

impl Checker<'_, '_> {
    /// A `nix-path` table: names to existing paths (relative to fleet.toml's folder).
    pub(super) fn nix_path(
        &mut self,
        value: &Spanned<DeValue>,
    ) -> Option<At<BTreeMap<String, Utf8PathBuf>>> {
        let table = self.table("nix-path", value)?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, value) in entries(table) {
            let name = key.get_ref().as_ref();
            let key_name = format!("nix-path.{name}");
            if let Some((_, why)) = RESERVED.iter().find(|(n, _)| *n == name) {
                self.invalid_with_help(
                    &key_name,
                    "fleet sets it for every host",
                    key.span(),
                    Some((*why).to_owned()),
                );
                ok = false;
                continue;
            }
            if name.is_empty()
                || name.contains(['=', ':', '/', '<', '>'])
                || name.contains(char::is_whitespace)
            {
                self.invalid_with_help(
                    &key_name,
                    "not a search path name",
                    key.span(),
                    Some("a name as in `<name>`: no `=`, `:`, `/`, `<`, `>` or spaces".into()),
                );
                ok = false;
                continue;
            }
            let Some(p) = self.path(&key_name, value) else {
                ok = false;
                continue;
            };
            let path = self.resolve(&p.value);
            if !(self.opts.exists)(&path) {
                self.problems.push(Problem::MissingPath {
                    what: "nix-path",
                    path,
                    span: p.span.into(),
                });
                ok = false;
                continue;
            }
            out.insert(name.to_owned(), path);
        }
        ok.then(|| At {
            value: out,
            span: value.span(),
        })
    }
}
