//! Every `tests/fixtures/valid/*.toml` must parse; every `tests/fixtures/invalid/*.toml` must not.
//! Both kinds are snapshotted (the inventory as JSON, the diagnostics as rendered).

mod common;

use camino::{Utf8Path, Utf8PathBuf};
use fleet_inventory::{parse, ParseOptions};

fn fixtures_root() -> Utf8PathBuf {
    Utf8PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn cases(kind: &str) -> Vec<Utf8PathBuf> {
    let dir = fixtures_root().join(kind);
    let mut files: Vec<Utf8PathBuf> = dir
        .read_dir_utf8()
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.extension() == Some("toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {dir}");
    files
}

fn run(path: &Utf8Path) -> Result<fleet_inventory::Inventory, fleet_inventory::InventoryError> {
    let source = std::fs::read_to_string(path).unwrap();
    let base_dir = path.parent().unwrap().canonicalize_utf8().unwrap();
    parse(
        &source,
        &ParseOptions {
            file_name: path.file_name().unwrap(),
            base_dir: &base_dir,
            exists: &|p: &Utf8Path| p.exists(),
        },
    )
}

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    let root = fixtures_root().canonicalize_utf8().unwrap();
    settings.add_filter(&regex_escape(root.as_str()), "[fixtures]");
    settings.set_prepend_module_to_snapshot(false);
    settings
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[test]
fn valid_fixtures_parse() {
    for path in cases("valid") {
        let name = path.file_stem().unwrap();
        match run(&path) {
            Ok(inventory) => settings().bind(|| {
                insta::assert_json_snapshot!(format!("valid-{name}"), inventory);
            }),
            Err(e) => panic!("{path} should parse:\n{}", common::render(&e)),
        }
    }
}

#[test]
fn invalid_fixtures_fail_with_diagnostics() {
    for path in cases("invalid") {
        let name = path.file_stem().unwrap();
        match run(&path) {
            Ok(inventory) => panic!("{path} should not parse, got {inventory:#?}"),
            Err(e) => settings().bind(|| {
                insta::assert_snapshot!(format!("invalid-{name}"), common::render(&e));
            }),
        }
    }
}
