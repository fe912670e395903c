//! Column-aligned text tables, as Consul's CLI prints them, and the `-format` switch between
//! such a table and the API's JSON that every listing command offers.

use serde_json::Value;

use super::Format;

/// Prints what the API returned as `format` asks: the JSON itself, pretty, or the text
/// `table` makes of it.
pub fn print(v: &Value, format: Format, table: impl FnOnce(&Value) -> String) {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Format::Pretty => println!("{}", table(v)),
    }
}

/// One row per element of the JSON array `items` (none when it is not an array).
pub fn rows(items: &Value, row: impl FnMut(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    items.as_array().into_iter().flatten().map(row).collect()
}

/// A string field as a cell (empty when absent or not a string).
pub fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// Renders rows under a header with columns padded to the widest cell.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<w$}  ", c, w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(header.to_vec())];
    for r in rows {
        out.push(line(r.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_columns() {
        let t = super::render(
            &["Node", "ID"],
            &[
                vec!["a".into(), "1".into()],
                vec!["long-name".into(), "22".into()],
            ],
        );
        assert_eq!(t, "Node       ID\na          1\nlong-name  22");
    }
}
