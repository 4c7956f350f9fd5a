//! `flake = "REF#ATTR"`: hosts whose system comes from a flake's `nixosConfigurations`.

mod common;

use common::{errors, parse_str};
use fleet_inventory::{Flake, HostSource};

const PIN: &str = "[pins.nixpkgs]\npath = \"nixpkgs\"\n";

fn flake_of(source: &str, host: &str) -> Flake {
    let inv = parse_str(source).unwrap_or_else(|e| panic!("{}", common::render(&e)));
    let h = inv.hosts.iter().find(|h| h.name.as_str() == host).unwrap();
    h.flake()
        .cloned()
        .unwrap_or_else(|| panic!("{host} is not a flake host: {h:?}"))
}

#[test]
fn references_and_attributes() {
    let src = r#"
[defaults]
system = "x86_64-linux"
flake = "."

[hosts.nas]
[hosts.pi1]
flake = ".#raspberry"
[hosts.web]
flake = "path:./infra?dir=x#web1"
impure = true
[hosts.gh]
flake = "github:me/infra"
"#;
    assert_eq!(
        flake_of(src, "nas"),
        Flake {
            reference: "/fleet".into(),
            attribute: "nas".into(),
            impure: false
        }
    );
    assert_eq!(flake_of(src, "pi1").attribute, "raspberry");
    let web = flake_of(src, "web");
    assert_eq!(web.reference, "path:/fleet/infra?dir=x");
    assert_eq!(web.attribute, "web1");
    assert!(web.impure);
    assert_eq!(flake_of(src, "gh").reference, "github:me/infra");
}

#[test]
fn pinned_and_flake_hosts_mix_and_the_host_form_wins_over_defaults() {
    let src = format!(
        "{PIN}[defaults]\nsystem = \"x86_64-linux\"\nconfig = \"hosts/{{name}}.nix\"\n\
         [hosts.a]\n[hosts.b]\nflake = \".\"\n"
    );
    let inv = parse_str(&src).unwrap();
    assert!(matches!(inv.hosts[0].source, HostSource::Pinned { .. }));
    assert_eq!(inv.hosts[0].pin(), Some("nixpkgs"));
    assert_eq!(inv.hosts[1].flake().unwrap().attribute, "b");
    assert_eq!(inv.hosts[1].pin(), None);
    assert_eq!(inv.hosts[1].config(), None);
}

#[test]
fn both_forms_none_or_a_missing_flake_are_errors() {
    let both = errors(&format!(
        "{PIN}[hosts.a]\nsystem = \"x86_64-linux\"\nconfig = \"a.nix\"\nflake = \".\"\n"
    ));
    assert!(
        both.contains("sets both `flake` and `pin`/`config`"),
        "{both}"
    );
    let none = errors(&format!("{PIN}[hosts.a]\nsystem = \"x86_64-linux\"\n"));
    assert!(
        none.contains("missing `config`") || none.contains("`config`"),
        "{none}"
    );
    let missing = errors("[hosts.a]\nsystem = \"x86_64-linux\"\nflake = \"./missing\"\n");
    assert!(missing.contains("/fleet/missing/flake.nix"), "{missing}");
    let cross = errors("[hosts.a]\nsystem = \"x86_64-linux\"\nflake = \".\"\nbuild = \"cross\"\n");
    assert!(cross.contains("cannot be combined with `flake`"), "{cross}");
    let impure = errors(&format!(
        "{PIN}[hosts.a]\nsystem = \"x86_64-linux\"\nconfig = \"a.nix\"\nimpure = true\n"
    ));
    assert!(impure.contains("applies only to a flake host"), "{impure}");
    let empty = errors("[hosts.a]\nsystem = \"x86_64-linux\"\nflake = \"#x\"\n");
    assert!(empty.contains("names no flake"), "{empty}");
}
