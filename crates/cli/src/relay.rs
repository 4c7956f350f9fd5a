//! Relays (fleet.toml's `relay`, docs/relay.md): which host names which relay, and the run's
//! own connection to each relay a planned copy goes through (a relay that is deployed in the
//! same run keeps its apply's connection; relaying has its own, so neither closes the other's).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fleet_executor::apply::Relays;
use fleet_inventory::Inventory;
use fleet_planner::Plan;

use crate::remote::{self, Remote};

/// Host → the relay fleet.toml gives it.
pub fn of(inventory: &Inventory) -> BTreeMap<String, String> {
    inventory
        .hosts
        .iter()
        .filter_map(|h| {
            h.relay
                .as_ref()
                .map(|r| (h.name.to_string(), r.to_string()))
        })
        .collect()
}

/// Decides (in the planner) which planned hosts go through their relay: none with
/// `--no-relay`.
pub fn assign(plan: &mut Plan, inventory: &Inventory, no_relay: bool) {
    fleet_planner::assign_relays(plan, &of(inventory), !no_relay);
}

/// Connects to each relay in `names`, all at once. One that cannot be reached is kept with
/// its error: its hosts are copied directly (and say why).
pub async fn connect(remote: &Remote, inventory: &Inventory, names: BTreeSet<String>) -> Relays {
    let conns = futures::future::join_all(names.into_iter().map(|name| async move {
        let conn = match inventory.hosts.iter().find(|h| h.name.as_str() == name) {
            Some(host) => remote
                .connector
                .connect(&remote::target(host))
                .await
                .map(Arc::new)
                .map_err(|e| e.to_string()),
            None => Err("not a host of fleet.toml".to_owned()),
        };
        (name, conn)
    }))
    .await;
    Relays(conns.into_iter().collect())
}
