//! Whatever the text, `parse` returns; it never panics.

mod common;

use proptest::prelude::*;

const VALID: &str = r#"
[defaults]
system = "aarch64-linux"
config = "hosts/{name}.nix"
tags = ["pi"]

[pins.nixpkgs]
url = "https://example.org/nixpkgs.tar.gz"
sha256 = "0c5m4xbmsjsgwiy4xwlm3ngqchfhpnw8iarvjbgk3qmd1lgb4vvz"

[pins.local]
path = "nixpkgs"

[hosts.pi1]
address = "10.0.0.2"
port = 2222
user = "pi"
sudo = "password"
pin = "nixpkgs"
host-key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

[hosts.nas]
system = "x86_64-linux"
pin = "local"
build = "cross"
confirm-timeout = 90
"#;

/// Parses and, on failure, renders: rendering must not panic either.
fn check(source: &str) {
    if let Err(e) = common::parse_str(source) {
        let _ = common::render(&e);
    }
}

#[test]
fn the_base_document_is_valid() {
    common::parse_str(VALID).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text(source in any::<String>()) {
        check(&source);
    }

    #[test]
    fn toml_ish_text(source in r#"(\[[a-z.\-"]{0,12}\]\n|[a-z\-_]{1,10} = ("[^"\n]{0,20}"|[0-9\-]{1,6}|\[[^\n]{0,10}\]|true)\n){0,12}"#) {
        check(&source);
    }

    #[test]
    fn mutations_of_a_valid_file(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0usize..4, any::<char>()), 1..8)
    ) {
        let mut text: Vec<char> = VALID.chars().collect();
        for (at, op, c) in edits {
            let i = at.index(text.len() + 1);
            match op {
                0 => text.insert(i, c),
                1 if i < text.len() => { text.remove(i); }
                2 if i < text.len() => text[i] = c,
                // Truncate: an unfinished file.
                _ => text.truncate(i),
            }
        }
        check(&text.into_iter().collect::<String>());
    }
}
