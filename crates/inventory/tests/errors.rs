//! One test per kind of mistake, each with a snapshot of the rendered diagnostics.

mod common;

use common::errors;
use insta::assert_snapshot;

const PINS: &str = r#"
[pins.nixpkgs]
url = "https://github.com/NixOS/nixpkgs/archive/0123456789abcdef.tar.gz"
sha256 = "0c5m4xbmsjsgwiy4xwlm3ngqchfhpnw8iarvjbgk3qmd1lgb4vvz"
"#;

fn with_pins(hosts: &str) -> String {
    format!("{PINS}{hosts}")
}

#[test]
fn toml_syntax() {
    assert_snapshot!(errors(
        "[hosts.pi1]\nsystem = \"aarch64-linux\nport = 22\n[hosts.pi2\n"
    ));
}

#[test]
fn unknown_keys_with_suggestions() {
    assert_snapshot!(errors(&with_pins(
        r#"
[defualts]
user = "admin"

[hosts.pi1]
sytem = "aarch64-linux"
host_key = "ssh-ed25519 AAAA"
config = "pi1.nix"
colour = "blue"
"#
    )));
}

#[test]
fn wrong_types() {
    assert_snapshot!(errors(&with_pins(
        r#"
[hosts.pi1]
system = "aarch64-linux"
config = "pi1.nix"
port = "22"
tags = "pi"
user = 0
sudo = true

[hosts.pi2]
system = "aarch64-linux"
config = "pi2.nix"
tags = ["pi", 2]
"#
    )));
}

#[test]
fn pins_section_of_the_wrong_type() {
    assert_snapshot!(errors("pins = [\"nixpkgs\"]\nhosts = 3\n"));
}

#[test]
fn host_using_missing_pin() {
    assert_snapshot!(errors(&with_pins(
        r#"
[hosts.pi1]
system = "aarch64-linux"
config = "pi1.nix"
pin = "nixpkg"

[hosts.nas]
system = "x86_64-linux"
config = "nas.nix"
pin = "unstable"
"#
    )));
}

#[test]
fn bad_system() {
    assert_snapshot!(errors(&with_pins(
        r#"
[hosts.pi1]
system = "arm64-linux"
config = "pi1.nix"

[hosts.mac]
system = "aarch64-darwin"
config = "mac.nix"

[hosts.odd]
system = "x86_64-linx"
config = "odd.nix"

[hosts.weird]
system = "z80"
config = "weird.nix"
"#
    )));
}

#[test]
fn missing_config_and_pin_paths() {
    assert_snapshot!(errors(
        r#"
[defaults]
config = "hosts/{name}/configuration.nix"

[pins.local]
path = "../missing-nixpkgs"

[hosts.pi1]
system = "aarch64-linux"
pin = "local"

[hosts.missing-host]
system = "aarch64-linux"
pin = "local"

[hosts.nas]
system = "x86_64-linux"
pin = "local"
config = "/etc/missing.nix"
"#
    ));
}

#[test]
fn invalid_host_names() {
    assert_snapshot!(errors(&with_pins(
        r#"
[defaults]
system = "x86_64-linux"
config = "host.nix"

[hosts."-pi"]
[hosts.pi_1]
[hosts."nas.lan"]
[hosts.a123456789012345678901234567890123456789012345678901234567890123]
"#
    )));
}

#[test]
fn port_out_of_range() {
    assert_snapshot!(errors(&with_pins(
        r#"
[defaults]
system = "x86_64-linux"
config = "host.nix"
port = 0

[hosts.a]
port = 65536

[hosts.b]
port = -22

[hosts.c]
port = 99999999999999999999
"#
    )));
}

#[test]
fn sudo_none_with_non_root_user() {
    assert_snapshot!(errors(&with_pins(
        r#"
[defaults]
system = "x86_64-linux"
config = "host.nix"
sudo = "none"

[hosts.nas]
user = "admin"

[hosts.pi1]
user = "pi"
sudo = "none"

[hosts.root-ok]
"#
    )));
}

#[test]
fn missing_required_keys() {
    assert_snapshot!(errors(
        r#"
[pins.a]
path = "a"
[pins.b]
path = "b"

[hosts.pi1]
"#
    ));
}

#[test]
fn pin_forms() {
    assert_snapshot!(errors(
        r#"
[pins.both]
url = "https://example.org/nixpkgs.tar.gz"
sha256 = "0c5m4xbmsjsgwiy4xwlm3ngqchfhpnw8iarvjbgk3qmd1lgb4vvz"
path = "nixpkgs"

[pins.neither]

[pins.no-hash]
url = "https://example.org/nixpkgs.tar.gz"

[pins.bad-hash]
url = "ftp://example.org/nixpkgs.tar.gz"
sha256 = "0123"

[pins.extra]
path = "nixpkgs"
branch = "main"

[pins."9lives"]
path = "nixpkgs"
"#
    ));
}

#[test]
fn bad_values() {
    assert_snapshot!(errors(&with_pins(
        r#"
[defaults]
address = "shared.example.org"
system = "x86_64-linux"
config = "~/fleet/host.nix"

[hosts.nas]
config = "nas.nix"
user = "admin@nas"
address = ""
sudo = "sometimes"
build = "remote"
tags = ["storage", "has space"]
host-key = "nas ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
confirm-timeout = 0
identity-file = ""
"#
    )));
}

#[test]
fn bad_host_keys() {
    assert_snapshot!(errors(&with_pins(
        r#"
[defaults]
system = "x86_64-linux"
config = "host.nix"

[hosts.a]
host-key = "ssh-ed25519"
[hosts.b]
host-key = "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ=="
[hosts.c]
host-key = "ssh-dss AAAAB3NzaC1kc3M="
[hosts.d]
host-key = "ssh-ed25519 %%%%"
"#
    )));
}
