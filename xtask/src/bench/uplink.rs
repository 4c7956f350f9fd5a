//! Hosts behind one slow deployer uplink (issue 23): a laptop on Wi-Fi or a VPN in front of a
//! switch of Pis. The deployer's side of the test bridge is limited (`tc tbf`,
//! [`fleet_testbed::Testbed::limit_uplink`]); the hosts reach each other at full speed.
//!
//! Three runs on fresh beds of the same hosts: parallel `nix-copy-closure` (every byte crosses
//! the uplink once per host), `fleet apply` copying directly (compressed, still once per host),
//! and `fleet apply` with the first host as the relay of the others (`relay = "h1"`: the
//! closure crosses the uplink once, the relay forwards it over the LAN).

use super::*;

/// The relay of the relay run: the first host, itself deployed too.
const RELAY: &str = "h1";

impl Ctx {
    pub(super) fn uplink_runs(&mut self) -> Result<()> {
        let n = self.scale.max_fresh();
        let rate = self.scale.uplink;

        self.check()?;
        let bed = self.uplink_bed(n, rate, false)?;
        let packages = self.packages_of(&bed, Variant::Base)?;
        let nar = self.nar_to_send(&packages, None)?;
        let mut m = self.ncc(&bed, &packages, Tool::NccPar)?;
        m.nar = nar;
        self.record_uplink(&bed, rate, Tool::NccPar, m);
        drop_bed(bed)?;

        for relay in [false, true] {
            self.check()?;
            let bed = self.uplink_bed(n, rate, relay)?;
            let plan = self.plan(&bed, "plan")?;
            let m = self.fleet_apply(&bed, &plan, "applied")?;
            let tool = if relay { Tool::FleetRelay } else { Tool::Fleet };
            self.record_uplink(&bed, rate, tool, m);
            drop_bed(bed)?;
        }
        Ok(())
    }

    /// A fresh bed of `n` hosts behind a `rate` Mbit/s uplink; with `relay`, every host but
    /// the first names the first as its relay.
    fn uplink_bed(&mut self, n: usize, rate: u32, relay: bool) -> Result<Bed> {
        let bed = self.bed(n, None, Variant::Base)?;
        bed.tb.limit_uplink(rate)?;
        if relay {
            let path = bed.dir.join("fleet.toml");
            let toml = std::fs::read_to_string(&path)?;
            std::fs::write(&path, with_relay(&toml, RELAY))?;
        }
        Ok(bed)
    }

    fn record_uplink(&mut self, bed: &Bed, rate: u32, tool: Tool, m: Measured) {
        let s = Sample {
            scenario: UPLINK,
            hosts: bed.names.len(),
            rate: Some(rate),
            tool,
            m,
        };
        eprintln!("xtask bench: {}", report::line(&s));
        self.samples.push(s);
    }
}

/// The scenario's name in the tables.
pub(super) const UPLINK: &str = "fresh, one uplink";

/// `toml` (the testbed's fleet.toml) with `relay = "<relay>"` in every host's table but the
/// relay's own.
fn with_relay(toml: &str, relay: &str) -> String {
    let own = format!("[hosts.{relay}]");
    let mut out = String::with_capacity(toml.len() + 64);
    for line in toml.lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("[hosts.") && line != own {
            out.push_str(&format!("relay = \"{relay}\"\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_host_but_the_relay_names_it() {
        let toml = "[defaults]\npin = \"p\"\n\n[hosts.h1]\naddress = \"a\"\n\n[hosts.h2]\naddress = \"b\"\n\n[hosts.h10]\naddress = \"c\"\n";
        let t = with_relay(toml, "h1");
        assert_eq!(t.matches("relay = \"h1\"").count(), 2);
        assert!(t.contains("[hosts.h2]\nrelay = \"h1\"\naddress"));
        assert!(t.contains("[hosts.h10]\nrelay = \"h1\"\n"));
        assert!(t.contains("[hosts.h1]\naddress"));
    }
}
