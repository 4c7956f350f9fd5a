//! `relay = "NAME"`: the fleet host that receives a host's copy once over the deployer's link
//! and forwards it over its LAN (docs/relay.md). Checked once every host is known: the relay is
//! a host of the file (else "did you mean"), not the host itself, and not relayed itself (no
//! chains). A `[defaults]` relay does not apply to the relay host itself.

use super::{At, Checker};
use crate::checks;
use crate::types::{Host, HostName};

/// A host's `relay` as written.
#[derive(Debug, Clone)]
pub(super) struct Written {
    host: HostName,
    relay: At<String>,
    /// Written in `[defaults]` rather than in the host's table.
    from_defaults: bool,
}

impl Checker<'_, '_> {
    /// The relay host `name` gets (its own `relay`, else `[defaults]`'), remembered for
    /// [`Checker::check_relays`]. Naming itself in its own table is an error; a `[defaults]`
    /// relay simply does not apply to the relay host.
    pub(super) fn relay_of(
        &mut self,
        name: &HostName,
        own: Option<At<String>>,
        defaults: Option<&At<String>>,
    ) -> Option<HostName> {
        let (relay, from_defaults) = match (own, defaults) {
            (Some(own), _) => (own, false),
            (None, Some(d)) => (d.clone(), true),
            (None, None) => return None,
        };
        if relay.value == name.as_str() {
            if !from_defaults {
                self.invalid_with_help(
                    "relay",
                    format!("`{name}` cannot be its own relay"),
                    relay.span,
                    Some("name another host on the same LAN, or remove `relay`".into()),
                );
            }
            return None;
        }
        let parsed = HostName::new(&relay.value).ok();
        self.relays.push(Written {
            host: name.clone(),
            relay,
            from_defaults,
        });
        parsed
    }

    /// Checks every host's relay against the hosts of the file; drops what is wrong (the
    /// problems make the parse fail anyway).
    pub(super) fn check_relays(&mut self, hosts: &mut [Host]) {
        let names: Vec<String> = hosts.iter().map(|h| h.name.to_string()).collect();
        let relayed: Vec<(String, String)> = hosts
            .iter()
            .filter_map(|h| {
                h.relay
                    .as_ref()
                    .map(|r| (h.name.to_string(), r.to_string()))
            })
            .collect();
        for w in std::mem::take(&mut self.relays) {
            let target = w.relay.value.as_str();
            let problem = if !names.iter().any(|n| n == target) {
                Some((
                    format!("there is no host `{target}` in this file"),
                    match checks::closest(target, names.iter().map(String::as_str)) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => "a relay is one of the [hosts.NAME] of this file".into(),
                    },
                ))
            } else if let Some((_, next)) = relayed.iter().find(|(h, _)| h == target) {
                Some((
                    format!("`{target}` has a relay itself (`{next}`): relays do not chain"),
                    format!(
                        "name `{next}` as the relay of `{}`, or remove the relay of `{target}`",
                        w.host
                    ),
                ))
            } else {
                None
            };
            if let Some((reason, help)) = problem {
                let reason = if w.from_defaults {
                    format!("{reason} (the [defaults] relay of `{}`)", w.host)
                } else {
                    reason
                };
                self.invalid_with_help("relay", reason, w.relay.span.clone(), Some(help));
                if let Some(h) = hosts.iter_mut().find(|h| h.name == w.host) {
                    h.relay = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use camino::Utf8Path;

    use crate::{parse, Inventory, ParseOptions};

    fn run(toml: &str) -> Result<Inventory, String> {
        let opts = ParseOptions {
            file_name: "fleet.toml",
            base_dir: Utf8Path::new("/fleet"),
            exists: &|_| true,
        };
        parse(toml, &opts).map_err(|e| format!("{:?}", miette::Report::new(e)))
    }

    const HEAD: &str = "[pins.nixpkgs]\npath = \"/np\"\n[defaults]\nsystem = \"aarch64-linux\"\npin = \"nixpkgs\"\nconfig = \"c.nix\"\n";

    fn relay_of(inv: &Inventory, host: &str) -> Option<String> {
        inv.hosts
            .iter()
            .find(|h| h.name.as_str() == host)
            .and_then(|h| h.relay.as_ref().map(|r| r.to_string()))
    }

    #[test]
    fn a_host_names_a_relay_and_defaults_skip_the_relay_itself() {
        let inv = run(&format!(
            "{HEAD}[hosts.nas]\n[hosts.pi1]\nrelay = \"nas\"\n[hosts.pi2]\n"
        ))
        .unwrap();
        assert_eq!(relay_of(&inv, "pi1").as_deref(), Some("nas"));
        assert_eq!(relay_of(&inv, "pi2"), None);
        let inv = run(&format!(
            "{HEAD}relay = \"nas\"\n[hosts.nas]\n[hosts.pi1]\n[hosts.pi2]\n"
        ))
        .unwrap();
        assert_eq!(relay_of(&inv, "nas"), None);
        assert_eq!(relay_of(&inv, "pi2").as_deref(), Some("nas"));
    }

    #[test]
    fn unknown_relay_says_did_you_mean_at_the_value() {
        let text = format!("{HEAD}[hosts.nas]\n[hosts.pi1]\nrelay = \"nass\"\n");
        let err = run(&text).unwrap_err();
        assert!(
            err.contains("there is no host `nass` in this file"),
            "{err}"
        );
        assert!(err.contains("did you mean `nas`?"), "{err}");
        let span_at = text.find("\"nass\"").unwrap();
        let opts = ParseOptions {
            file_name: "fleet.toml",
            base_dir: Utf8Path::new("/fleet"),
            exists: &|_| true,
        };
        let e = parse(&text, &opts).unwrap_err();
        assert_eq!(e.problems()[0].span().offset(), span_at);
    }

    #[test]
    fn self_and_chains_are_errors() {
        let err = run(&format!("{HEAD}[hosts.nas]\nrelay = \"nas\"\n")).unwrap_err();
        assert!(err.contains("`nas` cannot be its own relay"), "{err}");
        let err = run(&format!(
            "{HEAD}[hosts.nas]\n[hosts.sw]\nrelay = \"nas\"\n[hosts.pi1]\nrelay = \"sw\"\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("`sw` has a relay itself (`nas`): relays do not chain"),
            "{err}"
        );
    }
}
