//! A `fleet.toml` for a running testbed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::host::{Login, SimHost};
use crate::testbed::Testbed;

impl Testbed {
    /// A `fleet.toml` for all hosts: one pin `standin` (a `path` pin of `nixpkgs`), the
    /// testbed's key and known_hosts, each host's address, user, sudo mode, system, tags,
    /// pinned host key, and `config = config_for(host)`.
    pub fn fleet_toml(&self, nixpkgs: &Path, config_for: impl Fn(&SimHost) -> PathBuf) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Written by fleet-testbed (instance {}).\n",
            self.number
        );
        let _ = writeln!(
            s,
            "[pins.standin]\npath = {}\n",
            toml_str(&nixpkgs.display().to_string())
        );
        let _ = writeln!(
            s,
            "[defaults]\npin = \"standin\"\nidentity-file = {}\nknown-hosts = {}\n",
            toml_str(&self.client_key.display().to_string()),
            toml_str(&self.known_hosts.display().to_string())
        );
        for h in &self.hosts {
            let _ = writeln!(s, "[hosts.{}]", h.name);
            let _ = writeln!(s, "address = \"{}\"", h.address);
            let _ = writeln!(s, "system = {}", toml_str(&h.system));
            let _ = writeln!(s, "user = {}", toml_str(&h.user));
            if h.login == Login::SudoPassword {
                let _ = writeln!(s, "sudo = \"password\"");
            }
            let _ = writeln!(
                s,
                "config = {}",
                toml_str(&config_for(h).display().to_string())
            );
            let tags: Vec<String> = h.tags.iter().map(|t| toml_str(t)).collect();
            let _ = writeln!(s, "tags = [{}]", tags.join(", "));
            let _ = writeln!(s, "host-key = {}\n", toml_str(&h.host_key_line));
        }
        s
    }
}

/// A TOML basic string holding exactly `s` (quotes, backslashes and control characters escaped),
/// for writing paths and names into fleet.toml.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_str("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
