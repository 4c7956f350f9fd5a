//! The deployer's uplink: a rate limit on the deployer's side of the bridge only, so the hosts
//! reach each other at full speed while everything the deployer sends shares one slow link (a
//! laptop on Wi-Fi or a VPN in front of a switch of Pis).

use std::process::Command;

use crate::cmd::run;
use crate::error::Result;
use crate::instance;
use crate::testbed::Testbed;

impl Testbed {
    /// Limits what the deployer sends into the bridge to `mbit` Mbit/s (`tc tbf` on the bridge
    /// device: it carries the deployer's own packets to every host, not the frames the bridge
    /// forwards between hosts). Replaces an earlier limit. Per-host limits
    /// ([`crate::HostSpec::rate_mbit`]) apply on top.
    pub fn limit_uplink(&self, mbit: u32) -> Result<()> {
        let bridge = instance::bridge_name(self.number);
        let mut c = Command::new("tc");
        c.args(["qdisc", "replace", "dev", &bridge, "root", "tbf", "rate"])
            .arg(format!("{mbit}mbit"))
            .args(["burst", "64kb", "latency", "200ms"]);
        run(&mut c)?;
        Ok(())
    }

    /// Bytes the deployer sent into the bridge (its uplink) so far.
    pub fn uplink_tx_bytes(&self) -> u64 {
        let bridge = instance::bridge_name(self.number);
        std::fs::read_to_string(format!("/sys/class/net/{bridge}/statistics/tx_bytes"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}
