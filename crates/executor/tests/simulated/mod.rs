//! Test helpers for the simulated hosts of `fleet-testbed`: a connector that trusts the
//! testbed's known_hosts and key, and a host's SSH target.
#![allow(dead_code)]

use std::sync::Arc;

use fleet_executor::{ConnectOptions, Connector, NoPassphrase, SshTarget};
use fleet_testbed::Testbed;

pub fn connector(tb: &Testbed) -> Arc<Connector> {
    let mut o = ConnectOptions::from_env();
    o.ssh_config = None;
    o.use_agent = false;
    o.known_hosts = tb.known_hosts_path().to_owned();
    o.default_identity_files = vec![tb.client_key_path().to_owned()];
    Arc::new(Connector::new(o, Arc::new(NoPassphrase)).unwrap())
}

pub fn target(tb: &Testbed, name: &str) -> SshTarget {
    let h = tb.host(name);
    SshTarget {
        name: name.to_owned(),
        address: Some(h.address.to_string()),
        port: Some(h.port),
        user: Some(h.user.clone()),
        identity_file: Some(tb.client_key_path().to_owned()),
        ..Default::default()
    }
}
