//! Test helpers for the simulated hosts of `fleet-testbed`: a connector that trusts the
//! testbed's known_hosts and key, a host's SSH target, a system built from the stand-in, a
//! plain copy of its closure, and a shell command on a host.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use camino::Utf8PathBuf;
use fleet_executor::deploy::{self, CopyTarget};
use fleet_executor::store::StoreSession;
use fleet_executor::{
    CancellationToken, ConnectOptions, Connection, Connector, EventSink, HostEvents, NoPassphrase,
    Privilege, SshTarget,
};
use fleet_nix_build::{BuildOptions, HostBuildSpec, PinSpec};
use fleet_store::local::{closure_infos, LocalStore};
use fleet_store::StorePath;
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

/// Builds `config` (a stand-in configuration) for `system`; returns (toplevel, package).
pub async fn build(tb: &Testbed, dir: &Utf8PathBuf, name: &str, config: &str) -> (String, String) {
    let cfg = dir.join(format!("{name}.nix"));
    std::fs::write(&cfg, config).unwrap();
    let spec = HostBuildSpec {
        name: name.into(),
        system: "x86_64-linux".into(),
        pin: PinSpec::Path(Utf8PathBuf::from_path_buf(fleet_testbed::nixpkgs_standin()).unwrap()),
        config: cfg,
        cross: false,
        nix_path: Vec::new(),
        flake: None,
    };
    let mut opts = BuildOptions::new(dir.clone());
    opts.nix_env = tb.nix_env();
    let mut r = fleet_nix_build::evaluate_and_build(&[spec], &opts).await;
    let built = r.remove(0).1.expect("build");
    (built.toplevel, built.package)
}

/// Copies the package closure to the host (only what it lacks) and returns how many paths went.
pub async fn copy(conn: &Connection, package: &str) -> usize {
    let store = LocalStore::system();
    let infos = closure_infos(&store, &[StorePath::new(package).unwrap()])
        .await
        .unwrap();
    let all: Vec<StorePath> = infos.iter().map(|i| i.path.clone()).collect();
    let mut session = StoreSession::open(conn, &Privilege::None).await.unwrap();
    let valid = session.valid_paths(&all, true).await.unwrap();
    let missing: BTreeSet<StorePath> = all.into_iter().filter(|p| !valid.contains(p)).collect();
    let n = missing.len();
    let events = HostEvents::new(
        conn.name(),
        Instant::now(),
        EventSink::discard(),
        CancellationToken::new(),
    );
    let results = deploy::copy_closures(
        &store,
        &infos,
        vec![CopyTarget {
            session: &mut session,
            missing,
            events,
        }],
    )
    .await;
    results.into_iter().next().unwrap().expect("copy");
    session.close().await.unwrap();
    n
}

pub async fn sh(tb: &Testbed, host: &str, cmd: &str) -> String {
    tb.exec_ok(host, cmd).unwrap().trim().to_owned()
}
