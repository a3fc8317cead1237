//! Response bodies out: rqlite's documents, written byte for byte as Go writes them (see the
//! module documentation of [`super`]).

use std::collections::HashMap;

use raftlite_store::types::{Rows, StatementResult, Value};
use serde_json::{Map, Number, Value as Json};

/// URL query flags that shape the response body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponseOptions {
    pub pretty: bool,
    pub timings: bool,
    pub associative: bool,
    pub blob_array: bool,
}

/// Reads `pretty`, `timings`, `associative` and `blob_array` from the decoded URL query. As in
/// rqlite, a flag is on when its key is present with any value (`?pretty`, `?pretty=true`,
/// `?pretty=1`); unlike rqlite, `=false` (any case) turns it off.
pub fn response_options(query: &HashMap<String, String>) -> ResponseOptions {
    let flag = |key: &str| {
        query
            .get(key)
            .is_some_and(|v| !v.trim().eq_ignore_ascii_case("false"))
    };
    ResponseOptions {
        pretty: flag("pretty"),
        timings: flag("timings"),
        associative: flag("associative"),
        blob_array: flag("blob_array"),
    }
}

/// The whole response of `/db/execute` and `/db/query`:
/// `{"results":[...]}` plus `"time"` (with `timings` and a non-zero `total_time_secs`) and
/// `"raft_index"` (when given).
pub fn encode_results(
    results: &[StatementResult],
    opts: &ResponseOptions,
    total_time_secs: Option<f64>,
    raft_index: Option<u64>,
) -> Json {
    encode_response(results, opts, total_time_secs, raft_index, false)
}

/// Like [`encode_results`], for the unified endpoint `/db/request`: there, in associative mode,
/// rqlite gives execute results a `"rows": null` member so clients can tell them from queries.
pub fn encode_unified_results(
    results: &[StatementResult],
    opts: &ResponseOptions,
    total_time_secs: Option<f64>,
    raft_index: Option<u64>,
) -> Json {
    encode_response(results, opts, total_time_secs, raft_index, true)
}

fn encode_response(
    results: &[StatementResult],
    opts: &ResponseOptions,
    total_time_secs: Option<f64>,
    raft_index: Option<u64>,
    unified: bool,
) -> Json {
    let mut top = Map::new();
    let encoded = results
        .iter()
        .map(|r| encode_result(r, opts, unified))
        .collect();
    top.insert("results".into(), Json::Array(encoded));
    if let Some(t) = total_time_secs {
        insert_time(&mut top, opts, t);
    }
    if let Some(index) = raft_index {
        top.insert("raft_index".into(), Json::from(index));
    }
    Json::Object(top)
}

/// A body carrying only an error message: `{"error": msg}`. The options do not change it.
pub fn encode_error(msg: &str, _opts: &ResponseOptions) -> Json {
    let mut m = Map::new();
    m.insert("error".into(), Json::String(msg.to_string()));
    Json::Object(m)
}

/// rqlite's body when the request as a whole failed after its statements were accepted (no
/// leader, Raft apply failed, ...): `{"results":[],"error":msg}` plus `"time"` with `timings`.
pub fn encode_request_failure(
    msg: &str,
    opts: &ResponseOptions,
    total_time_secs: Option<f64>,
) -> Json {
    let mut top = Map::new();
    top.insert("results".into(), Json::Array(Vec::new()));
    top.insert("error".into(), Json::String(msg.to_string()));
    if let Some(t) = total_time_secs {
        insert_time(&mut top, opts, t);
    }
    Json::Object(top)
}

/// Go's `float64` with `omitempty`: zero is left out; only present with `timings`.
fn insert_time(m: &mut Map<String, Json>, opts: &ResponseOptions, secs: f64) {
    if opts.timings && secs != 0.0 {
        if let Some(n) = Number::from_f64(secs) {
            m.insert("time".into(), Json::Number(n));
        }
    }
}

fn encode_result(r: &StatementResult, opts: &ResponseOptions, unified: bool) -> Json {
    let mut m = Map::new();
    match r {
        StatementResult::Execute {
            last_insert_id,
            rows_affected,
            time_secs,
        } => {
            if *last_insert_id != 0 {
                m.insert("last_insert_id".into(), Json::from(*last_insert_id));
            }
            if *rows_affected != 0 {
                m.insert("rows_affected".into(), Json::from(*rows_affected));
            }
            insert_time(&mut m, opts, *time_secs);
            if unified && opts.associative {
                m.insert("rows".into(), Json::Null);
            }
        }
        StatementResult::Rows(rows) => encode_rows(&mut m, rows, opts),
        StatementResult::Error(msg) => {
            m.insert("error".into(), Json::String(msg.clone()));
        }
    }
    Json::Object(m)
}

fn encode_rows(m: &mut Map<String, Json>, rows: &Rows, opts: &ResponseOptions) {
    let strings = |v: &[String]| Json::Array(v.iter().cloned().map(Json::String).collect());
    if opts.associative {
        let types: Map<String, Json> = rows
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let t = rows.types.get(i).cloned().unwrap_or_default();
                (c.clone(), Json::String(t))
            })
            .collect();
        if !types.is_empty() {
            m.insert("types".into(), Json::Object(types));
        }
        let out = rows
            .values
            .iter()
            .map(|row| {
                let obj: Map<String, Json> = rows
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let v = row
                            .get(i)
                            .map_or(Json::Null, |v| encode_value(v, opts.blob_array));
                        (c.clone(), v)
                    })
                    .collect();
                Json::Object(obj)
            })
            .collect();
        m.insert("rows".into(), Json::Array(out));
    } else {
        if !rows.columns.is_empty() {
            m.insert("columns".into(), strings(&rows.columns));
        }
        if !rows.types.is_empty() {
            m.insert("types".into(), strings(&rows.types));
        }
        if !rows.values.is_empty() {
            let values = rows
                .values
                .iter()
                .map(|row| {
                    Json::Array(
                        row.iter()
                            .map(|v| encode_value(v, opts.blob_array))
                            .collect(),
                    )
                })
                .collect();
            m.insert("values".into(), Json::Array(values));
        }
    }
    insert_time(m, opts, rows.time_secs);
}

/// One SQLite value as rqlite writes it: blobs are base64 (standard alphabet, padded, like Go's
/// `[]byte`), or an array of byte numbers with `blob_array`; NaN and infinities become `null`.
pub fn encode_value(v: &Value, blob_array: bool) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => Json::from(*i),
        Value::Real(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Text(s) => Json::String(s.clone()),
        Value::Blob(b) if blob_array => Json::Array(b.iter().map(|&x| Json::from(x)).collect()),
        Value::Blob(b) => Json::String(base64_std(b)),
        Value::Bool(b) => Json::Bool(*b),
    }
}

/// RFC 4648 base64, standard alphabet, with `=` padding.
pub fn base64_std(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextet = |n: u32, shift: u32| char::from(ALPHABET[((n >> shift) & 0x3f) as usize]);
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = u32::from(chunk[0]);
        let b1 = chunk.get(1).map_or(0, |&b| u32::from(b));
        let b2 = chunk.get(2).map_or(0, |&b| u32::from(b));
        let n = (b0 << 16) | (b1 << 8) | b2;
        out.push(sextet(n, 18));
        out.push(sextet(n, 12));
        out.push(if chunk.len() > 1 { sextet(n, 6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(n, 0) } else { '=' });
    }
    out
}

/// Writes a response document the way rqlite does: compact like Go's `json.Marshal`, or with
/// `pretty` like `json.MarshalIndent(v, "", "    ")` (4 spaces, no trailing newline).
pub fn to_body(v: &Json, pretty: bool) -> String {
    let mut out = String::new();
    write_json(&mut out, v, Ctx::Top, pretty, 0);
    out
}

/// Where an object sits in an rqlite response, which decides its key order: rqlite's Go structs
/// keep field order, Go maps (associative rows and types) are sorted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Top,
    ResultList,
    Result,
    Map,
}

fn key_rank(ctx: Ctx, key: &str, obj: &Map<String, Json>) -> u8 {
    const TOP: &[&str] = &["results", "error", "time", "sequence_number", "raft_index"];
    // Result / Rows / AssociativeRows fields, in their Go order.
    const RESULT: &[&str] = &[
        "last_insert_id",
        "rows_affected",
        "columns",
        "types",
        "values",
        "rows",
        "error",
        "time",
    ];
    // ResultWithRows (unified endpoint, associative): Result's fields, then "rows".
    const RESULT_WITH_ROWS: &[&str] = &["last_insert_id", "rows_affected", "error", "time", "rows"];
    let order = match ctx {
        Ctx::Top => TOP,
        Ctx::Result if obj.get("rows").is_some_and(Json::is_null) => RESULT_WITH_ROWS,
        Ctx::Result => RESULT,
        Ctx::ResultList | Ctx::Map => &[],
    };
    order
        .iter()
        .position(|k| *k == key)
        .map_or(u8::MAX, |p| p as u8)
}

fn write_json(out: &mut String, v: &Json, ctx: Ctx, pretty: bool, depth: usize) {
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => write_number(out, n),
        Json::String(s) => write_string(out, s),
        Json::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            let child = if ctx == Ctx::ResultList {
                Ctx::Result
            } else {
                Ctx::Map
            };
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, pretty, depth + 1);
                write_json(out, item, child, pretty, depth + 1);
            }
            newline(out, pretty, depth);
            out.push(']');
        }
        Json::Object(obj) => {
            if obj.is_empty() {
                out.push_str("{}");
                return;
            }
            let mut entries: Vec<(&String, &Json)> = obj.iter().collect();
            entries.sort_by(|a, b| {
                (key_rank(ctx, a.0, obj), a.0.as_bytes())
                    .cmp(&(key_rank(ctx, b.0, obj), b.0.as_bytes()))
            });
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, pretty, depth + 1);
                write_string(out, key);
                out.push_str(if pretty { ": " } else { ":" });
                let child = if ctx == Ctx::Top && key == "results" {
                    Ctx::ResultList
                } else {
                    Ctx::Map
                };
                write_json(out, value, child, pretty, depth + 1);
            }
            newline(out, pretty, depth);
            out.push('}');
        }
    }
}

fn newline(out: &mut String, pretty: bool, depth: usize) {
    if pretty {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("    ");
        }
    }
}

fn write_number(out: &mut String, n: &Number) {
    match n.as_f64() {
        Some(f) if n.is_f64() => write_go_float(out, f),
        _ => out.push_str(&n.to_string()),
    }
}

/// Go's encoding/json float64 format: shortest round-trip digits, plain decimal unless the
/// magnitude is below 1e-6 or at least 1e21, then `1e-7` / `1e+21` style.
fn write_go_float(out: &mut String, f: f64) {
    if !f.is_finite() {
        out.push_str("null");
        return;
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => {
                out.push_str(mantissa);
                out.push_str("e+");
                out.push_str(exp);
            }
            _ => out.push_str(&s),
        }
    } else {
        out.push_str(&f.to_string());
    }
}

/// A JSON string escaped as Go's `json.Marshal` escapes it (HTML-safe).
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => push_unicode_escape(out, c),
            c if u32::from(c) < 0x20 => push_unicode_escape(out, c),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_unicode_escape(out: &mut String, c: char) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let code = u32::from(c);
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        out.push(char::from(HEX[((code >> shift) & 0xf) as usize]));
    }
}
