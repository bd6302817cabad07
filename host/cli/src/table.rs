//! Aligned tables for people, JSON for scripts.

use comfy_table::{ContentArrangement, Table, presets};

/// A table with uppercase headers and no borders, like `wwctl`'s; empty cells show `--`.
pub(crate) fn print(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    table.set_header(headers.iter().map(|h| h.to_uppercase()));
    for row in rows {
        table.add_row(row.into_iter().map(|cell| {
            if cell.is_empty() {
                "--".to_string()
            } else {
                cell
            }
        }));
    }
    let text = table.to_string();
    for line in text.lines() {
        println!("{}", line.trim_end());
    }
}

/// Pretty JSON on stdout.
pub(crate) fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}
