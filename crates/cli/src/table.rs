//! Plain text tables: a header and rows, columns aligned with two spaces, no trailing blanks.

/// Renders `header` and `rows`, each line ending in `\n`.
pub fn render<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.map(str::to_owned);
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligned_without_trailing_blanks() {
        let t = super::render(
            ["A", "LONG HEADER"],
            &[["xyz".into(), "1".into()], ["é".into(), String::new()]],
        );
        assert_eq!(t, "A    LONG HEADER\nxyz  1\né\n");
    }
}
