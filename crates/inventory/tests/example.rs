//! The repository's `fleet.example.toml` parses, with the hosts and pins the docs promise.

use camino::{Utf8Path, Utf8PathBuf};
use fleet_inventory::{parse, ParseOptions, PinSource, SudoMode};

#[test]
fn example_fleet_parses() {
    let root = Utf8PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize_utf8()
        .unwrap();
    let source = std::fs::read_to_string(root.join("fleet.example.toml")).unwrap();
    let inventory = parse(
        &source,
        &ParseOptions {
            file_name: "fleet.example.toml",
            base_dir: &root,
            exists: &|p: &Utf8Path| p.exists(),
        },
    )
    .unwrap_or_else(|e| panic!("{:?}", miette::Report::new(e)));

    let names: Vec<&str> = inventory.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["pi1", "pi2", "nas", "router"]);
    let pis: Vec<&str> = inventory
        .select(Some("@pi"))
        .unwrap()
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(pis, ["pi1", "pi2"]);
    assert!(inventory.hosts[..2]
        .iter()
        .all(|h| h.system.as_str() == "aarch64-linux"));
    let nas = inventory.host("nas").unwrap();
    assert_eq!(nas.system.as_str(), "x86_64-linux");
    assert_ne!(nas.user, "root");
    assert_eq!(nas.sudo, SudoMode::Password);
    assert!(matches!(
        inventory.pins["nixos-stable"].source,
        PinSource::Tarball { .. }
    ));
    assert!(matches!(inventory.pins["local"].source, PinSource::Path(_)));
    // The router's system comes from a flake (so it has no pin), despite `[defaults]`' pin.
    let router = inventory.host("router").unwrap();
    let flake = router.flake().expect("router is a flake host");
    assert_eq!(flake.reference, "github:me/infra");
    assert_eq!(flake.attribute, "router");
    assert_eq!(router.pin(), None);
}
