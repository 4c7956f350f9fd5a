//! fleet.toml's `checks` of a host, as the executor's probes.

use fleet_executor::health::{HealthSpec, Probe};
use fleet_inventory::{host_port, http_url, Host};

/// The host's health checks, in the order units, tcp, http, commands; `None` without any.
pub fn spec(host: &Host) -> Option<HealthSpec> {
    let c = host.checks.as_ref()?;
    let mut probes: Vec<Probe> = c.units.iter().cloned().map(Probe::Unit).collect();
    // The inventory checked every address and URL; one that does not split is left out.
    probes.extend(
        c.tcp
            .iter()
            .filter_map(|a| host_port(a).ok())
            .map(|(host, port)| Probe::Tcp { host, port }),
    );
    probes.extend(c.http.iter().filter_map(|u| {
        http_url(u).ok().map(|(host, port, path)| Probe::Http {
            url: u.clone(),
            host,
            port,
            path,
        })
    }));
    probes.extend(c.commands.iter().cloned().map(Probe::Command));
    (!probes.is_empty()).then_some(HealthSpec {
        probes,
        timeout: c.timeout,
    })
}

/// The checks' labels, for the plan (`unit sshd.service, tcp 127.0.0.1:22`).
pub fn labels(host: &Host) -> Vec<String> {
    spec(host)
        .map(|s| s.probes.iter().map(Probe::label).collect())
        .unwrap_or_default()
}

/// The plan's lines about checks: per host to change, the checks that will run after its
/// activation (`switch`, `test`), or none when no host has any.
pub fn plan_text(hosts: &[&Host], changing: impl Fn(&str) -> bool) -> String {
    let mut out = String::new();
    for h in hosts.iter().filter(|h| changing(h.name.as_str())) {
        let labels = labels(h);
        if labels.is_empty() {
            continue;
        }
        if out.is_empty() {
            out.push_str("\nhealth checks after activation, before confirmation:\n");
        }
        let timeout = h.checks.as_ref().map_or(0, |c| c.timeout.as_secs());
        out.push_str(&format!(
            "  {}: {} (within {timeout}s)\n",
            h.name,
            labels.join(", ")
        ));
    }
    out
}
