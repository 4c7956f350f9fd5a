//! Which hosts' copies go through a relay (fleet.toml's `relay`, docs/relay.md): the relay
//! receives the compressed segments once over the deployer's link and forwards them over its
//! LAN into the same `zstd -dc | nix-store --import` as the direct compressed route. So only a
//! host on the compressed route goes through its relay; one on the serve route (no `zstd`,
//! too little memory, `--no-compress`) is copied directly, as is every host with `--no-relay`.

use std::collections::BTreeMap;

use crate::decide::CopyRoute;
use crate::plan::{Action, Plan};

/// The relay a host's copy goes through: its `relay` when it is on the compressed route and
/// relays are on.
pub fn relay_for(route: CopyRoute, relay: Option<&str>, enabled: bool) -> Option<String> {
    match (route, relay) {
        (CopyRoute::Compressed, Some(r)) if enabled => Some(r.to_owned()),
        _ => None,
    }
}

/// Sets each planned host's `relay` (`relays`: host → its fleet.toml `relay`; `enabled`:
/// not `--no-relay`). Hosts left unchanged or failed get none.
pub fn assign_relays(plan: &mut Plan, relays: &BTreeMap<String, String>, enabled: bool) {
    for hp in &mut plan.hosts {
        let changes = matches!(hp.action, Action::Install | Action::Update);
        hp.relay = relay_for(
            hp.route,
            relays.get(hp.name.as_str()).map(String::as_str),
            enabled && changes,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_compressed_copies_go_through_a_relay() {
        assert_eq!(
            relay_for(CopyRoute::Compressed, Some("nas"), true).as_deref(),
            Some("nas")
        );
        assert_eq!(relay_for(CopyRoute::Compressed, Some("nas"), false), None);
        assert_eq!(relay_for(CopyRoute::Serve, Some("nas"), true), None);
        assert_eq!(relay_for(CopyRoute::Nothing, Some("nas"), true), None);
        assert_eq!(relay_for(CopyRoute::Compressed, None, true), None);
    }
}
