//! Shared helpers for the inventory tests.
#![allow(dead_code)]

use camino::Utf8Path;
use fleet_inventory::{parse, Inventory, InventoryError, ParseOptions};
use miette::{GraphicalReportHandler, GraphicalTheme, ThemeCharacters, ThemeStyles};

/// Renders a diagnostic the way the CLI does, minus colours and unicode, at a fixed width.
pub fn render(err: &dyn miette::Diagnostic) -> String {
    let mut out = String::new();
    let theme = GraphicalTheme {
        characters: ThemeCharacters::ascii(),
        styles: ThemeStyles::none(),
    };
    GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false)
        .render_report(&mut out, err)
        .expect("rendering into a String cannot fail");
    // Trailing spaces vary with the theme; they mean nothing.
    out.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path under `/fleet` exists except those containing `missing`.
pub fn fake_exists(path: &Utf8Path) -> bool {
    !path.as_str().contains("missing")
}

/// Parses `source` as `/fleet/fleet.toml` with [`fake_exists`].
pub fn parse_str(source: &str) -> Result<Inventory, InventoryError> {
    parse(
        source,
        &ParseOptions {
            file_name: "fleet.toml",
            base_dir: Utf8Path::new("/fleet"),
            exists: &fake_exists,
        },
    )
}

/// Parses `source`, which must fail, and renders the diagnostics.
pub fn errors(source: &str) -> String {
    match parse_str(source) {
        Ok(inv) => panic!("expected errors, parsed: {inv:#?}"),
        Err(e) => render(&e),
    }
}
