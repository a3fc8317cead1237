//! Table output: cells, aligned ASCII tables, the `.nodes` table.

use serde_json::Value;
use unicode_width::UnicodeWidthStr;

use super::CmdError;

/// Text of one cell: `NULL` for null, strings as they are (blobs arrive base64-encoded) with
/// control characters escaped so they cannot break the table, everything else as JSON.
pub(super) fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_owned(),
        Value::String(s) => {
            let mut out = String::with_capacity(s.len());
            for c in s.chars() {
                match c {
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                    c => out.push(c),
                }
            }
            out
        }
        other => other.to_string(),
    }
}

/// An aligned ASCII table: border, headers, border, rows, border.
pub(super) fn render_table(columns: &[String], rows: &[Vec<String>]) -> String {
    let ncols = rows
        .iter()
        .map(Vec::len)
        .chain(std::iter::once(columns.len()))
        .max()
        .unwrap_or(0);
    fn cell(row: &[String], i: usize) -> &str {
        row.get(i).map(String::as_str).unwrap_or("")
    }
    let widths: Vec<usize> = (0..ncols)
        .map(|i| {
            rows.iter()
                .map(|r| cell(r, i).width())
                .chain(std::iter::once(cell(columns, i).width()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let border: String = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    let line = |row: &[String]| {
        let mut s = String::from("|");
        for (i, w) in widths.iter().enumerate() {
            let text = cell(row, i);
            s.push(' ');
            s.push_str(text);
            s.push_str(&" ".repeat(w - text.width().min(*w) + 1));
            s.push('|');
        }
        s.push('\n');
        s
    };
    let mut out = String::new();
    out.push_str(&border);
    out.push_str(&line(columns));
    out.push_str(&border);
    for row in rows {
        out.push_str(&line(row));
    }
    if !rows.is_empty() {
        out.push_str(&border);
    }
    out
}

/// `/nodes?ver=2` as table columns and rows, sorted by node id.
pub(super) fn nodes_table(body: &Value) -> Result<(Vec<String>, Vec<Vec<String>>), CmdError> {
    let nodes = body["nodes"]
        .as_array()
        .ok_or_else(|| CmdError::Failed(format!("unexpected /nodes?ver=2 answer: {body}")))?;
    let keys = ["id", "api_addr", "addr", "voter", "reachable", "leader"];
    let mut rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            keys.iter()
                .map(|k| match &n[*k] {
                    Value::Null => String::new(),
                    v => cell_text(v),
                })
                .collect()
        })
        .collect();
    rows.sort_by_key(|r| {
        let id = r.first().cloned().unwrap_or_default();
        (id.parse::<u64>().unwrap_or(u64::MAX), id)
    });
    Ok((keys.iter().map(|k| k.to_string()).collect(), rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn table_is_aligned_with_headers_and_separators() {
        let t = render_table(
            &s(&["id", "name"]),
            &[s(&["1", "fiona"]), s(&["22", "NULL"])],
        );
        assert_eq!(
            t,
            "+----+-------+\n\
             | id | name  |\n\
             +----+-------+\n\
             | 1  | fiona |\n\
             | 22 | NULL  |\n\
             +----+-------+\n"
        );
    }

    #[test]
    fn table_without_rows_and_with_wide_and_short_rows() {
        assert_eq!(render_table(&s(&["a"]), &[]), "+---+\n| a |\n+---+\n");
        // Double-width characters count twice; a short row is padded.
        let t = render_table(&s(&["x", "y"]), &[s(&["日本", "1"]), s(&["a"])]);
        assert_eq!(
            t,
            "+------+---+\n| x    | y |\n+------+---+\n| 日本 | 1 |\n| a    |   |\n+------+---+\n"
        );
    }

    #[test]
    fn cells_render_null_numbers_and_escape_control_characters() {
        assert_eq!(cell_text(&Value::Null), "NULL");
        assert_eq!(cell_text(&json!(42)), "42");
        assert_eq!(cell_text(&json!(1.5)), "1.5");
        assert_eq!(cell_text(&json!("AAEC")), "AAEC");
        assert_eq!(cell_text(&json!("a\nb\tc\u{1}")), "a\\nb\\tc\\u{1}");
        assert_eq!(cell_text(&json!([1, 2])), "[1,2]");
    }

    #[test]
    fn nodes_table_is_sorted_by_id() {
        let body = json!({"nodes": [
            {"id": "10", "api_addr": "http://b", "addr": "b:2", "voter": true, "reachable": true, "leader": false},
            {"id": "2", "api_addr": "http://a", "addr": "a:2", "voter": false, "reachable": false, "leader": true},
        ]});
        let (cols, rows) = nodes_table(&body).unwrap();
        assert_eq!(
            cols,
            s(&["id", "api_addr", "addr", "voter", "reachable", "leader"])
        );
        assert_eq!(
            rows[0],
            s(&["2", "http://a", "a:2", "false", "false", "true"])
        );
        assert_eq!(rows[1][0], "10");
        assert!(nodes_table(&json!({"1": {}})).is_err());
    }
}
