//! The rqlite wire format: request bodies in, JSON response bodies out. Pure functions, no I/O.
//!
//! # Requests
//!
//! [`parse_statements`] accepts what rqlite's `/db/execute`, `/db/query` and `/db/request` accept:
//!
//! * a JSON array of SQL strings: `["CREATE TABLE t (x)", "INSERT INTO t VALUES(1)"]`;
//! * parameterized elements `[sql, p1, p2, ...]` (positional) or `[sql, {"name": v, ...}]` (named;
//!   one leading `:`, `@` or `$` is stripped from each name, and named parameters are sorted by
//!   name so the result does not depend on the JSON object's key order);
//! * `Content-Type: text/plain`: the whole
//!   body (trimmed) is one statement.
//!
//! Parameter values map as rqlite maps them: an integer that fits `i64` is [`Value::Integer`]; any
//! other number (a fraction, an exponent, or an integer beyond `i64`, which rqlite also turns into
//! a float64) is [`Value::Real`]; booleans are `Integer` 0/1; `null` is `Null`; strings are `Text`
//! except `x'..'`/`X'..'` with an even number of hex digits, which is a `Blob`; an array of
//! integers 0..=255 is a `Blob`. Everything else is a [`RequestError`].
//!
//! Stricter than rqlite on purpose: empty SQL, mixing named and positional parameters in one
//! statement (our [`Params`] cannot hold both), and the same name given twice (after the sigil is
//! stripped) are errors.
//!
//! # Responses
//!
//! [`encode_results`] builds the same document rqlite builds from Go structs with `omitempty`
//! fields: zero `last_insert_id`/`rows_affected`/`time` and empty `columns`/`types`/`values` are
//! left out (so `CREATE TABLE` gives `{}`), the associative form always has `"rows"` (`[]` when
//! there are none). [`to_body`] then writes it byte for byte as rqlite's `json.Marshal` /
//! `json.MarshalIndent(v, "", "    ")` would: the keys of rqlite's structs in their Go field order,
//! map keys (associative rows and types) sorted, floats formatted like Go (`1` for 1.0, `1e-7`,
//! `1e+21`), and `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u003c` and so on. Serializing the
//! [`serde_json::Value`] another way yields equivalent JSON, just not byte-identical.

use std::collections::HashMap;
use std::fmt;

use raftlite_store::types::{Params, Rows, Statement, StatementResult, Value};
use serde_json::{Map, Number, Value as Json};

/// Which parameter of a statement an error is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamRef {
    /// 1-based position among the parameters, as in SQLite's `?NNN`.
    Position(usize),
    /// The name exactly as the client wrote it (sigil included, if any).
    Name(String),
}

impl fmt::Display for ParamRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamRef::Position(n) => write!(f, "parameter #{n}"),
            ParamRef::Name(name) => write!(f, "parameter {name:?}"),
        }
    }
}

/// Why a request body could not be turned into statements. Statement indexes are 0-based
/// positions in the request's JSON array.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(
        "request body is not valid UTF-8 (invalid byte at offset {offset}); expected a JSON \
         array of statements or plain-text SQL"
    )]
    InvalidUtf8 { offset: usize },
    #[error(
        "request body is empty; expected a JSON array of statements such as [\"SELECT 1\"], \
         or plain-text SQL with Content-Type: text/plain"
    )]
    EmptyBody,
    #[error(
        "invalid JSON body ({0}); expected a JSON array of statements such as [\"SELECT 1\"] or \
         [[\"INSERT INTO t VALUES(?)\", 1]], or plain-text SQL with Content-Type: text/plain"
    )]
    MalformedJson(String),
    #[error(
        "request body is {found}, not a JSON array; expected an array of statements such as \
         [\"SELECT 1\"] or [[\"INSERT INTO t VALUES(?)\", 1]]"
    )]
    NotAnArray { found: &'static str },
    #[error("no statements: the JSON array is empty; expected at least one SQL statement")]
    NoStatements,
    #[error(
        "statement {index} is {found}; expected a SQL string or an array [sql, params...] \
         whose first element is the SQL string"
    )]
    InvalidStatement { index: usize, found: &'static str },
    #[error(
        "statement {index} is an empty array; expected [sql, params...] with the SQL string first"
    )]
    EmptyStatementArray { index: usize },
    #[error(
        "statement {index}: the first element of the array is {found}; expected the SQL string \
         first, as in [sql, params...]"
    )]
    SqlNotString { index: usize, found: &'static str },
    #[error("statement {index}: the SQL is empty; expected a non-empty SQL statement")]
    EmptySql { index: usize },
    #[error(
        "statement {index}, {param}: {problem}; expected a number, a string, a boolean, null or \
         an array of byte values (integers 0-255)"
    )]
    InvalidParam {
        index: usize,
        param: ParamRef,
        problem: String,
    },
    #[error(
        "statement {index}, {param}: the name is empty; expected a name such as \"name\" or \
         \":name\""
    )]
    EmptyParamName { index: usize, param: ParamRef },
    #[error(
        "statement {index}: parameter name {name:?} is given more than once (with or without \
         its :, @ or $ sigil); expected each name once"
    )]
    DuplicateParam { index: usize, name: String },
    #[error(
        "statement {index} mixes positional and named parameters; expected either [sql, p1, \
         p2, ...] or [sql, {{\"name\": value, ...}}]"
    )]
    MixedParams { index: usize },
}

/// Parses an rqlite request body (see the module documentation for the accepted shapes).
pub fn parse_statements(
    body: &[u8],
    content_type: Option<&str>,
) -> Result<Vec<Statement>, RequestError> {
    let text = std::str::from_utf8(body).map_err(|e| RequestError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    if content_type.is_some_and(is_text_plain) {
        return plain_sql(text);
    }
    match serde_json::from_str::<Json>(text) {
        Ok(json) => statements_from_json(json),
        Err(err) => {
            let trimmed = text.trim_start();
            // A bare SQL string is accepted only when declared as text/plain: guessing would run
            // a malformed JSON body as SQL.
            if trimmed.is_empty() {
                Err(RequestError::EmptyBody)
            } else {
                Err(RequestError::MalformedJson(err.to_string()))
            }
        }
    }
}

/// The statement of `GET /db/query?q=...`. Empty (or blank) `q` gives no statement at all, which
/// the caller should reject the way rqlite does ("query parameter not set").
pub fn parse_query_param(q: &str) -> Vec<Statement> {
    if q.trim().is_empty() {
        Vec::new()
    } else {
        vec![Statement::new(q)]
    }
}

fn is_text_plain(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/plain"))
}

fn plain_sql(text: &str) -> Result<Vec<Statement>, RequestError> {
    let sql = text.trim();
    if sql.is_empty() {
        return Err(RequestError::EmptySql { index: 0 });
    }
    Ok(vec![Statement::new(sql)])
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn statements_from_json(json: Json) -> Result<Vec<Statement>, RequestError> {
    let items = match json {
        Json::Array(items) => items,
        other => {
            return Err(RequestError::NotAnArray {
                found: json_kind(&other),
            })
        }
    };
    if items.is_empty() {
        return Err(RequestError::NoStatements);
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| statement_from_json(index, item))
        .collect()
}

fn statement_from_json(index: usize, item: Json) -> Result<Statement, RequestError> {
    match item {
        Json::String(sql) => {
            check_sql(index, &sql)?;
            Ok(Statement::new(sql))
        }
        Json::Array(parts) => {
            let mut parts = parts.into_iter();
            let sql = match parts.next() {
                None => return Err(RequestError::EmptyStatementArray { index }),
                Some(Json::String(sql)) => sql,
                Some(other) => {
                    return Err(RequestError::SqlNotString {
                        index,
                        found: json_kind(&other),
                    })
                }
            };
            check_sql(index, &sql)?;
            let params = params_from_json(index, parts)?;
            Ok(Statement { sql, params })
        }
        other => Err(RequestError::InvalidStatement {
            index,
            found: json_kind(&other),
        }),
    }
}

fn check_sql(index: usize, sql: &str) -> Result<(), RequestError> {
    if sql.trim().is_empty() {
        Err(RequestError::EmptySql { index })
    } else {
        Ok(())
    }
}

fn params_from_json(
    index: usize,
    parts: impl Iterator<Item = Json>,
) -> Result<Params, RequestError> {
    let mut positional = Vec::new();
    let mut named: Vec<(String, Value)> = Vec::new();
    for (position, part) in parts.enumerate() {
        match part {
            Json::Object(map) => {
                for (raw_name, raw_value) in map {
                    let param = ParamRef::Name(raw_name.clone());
                    let name = strip_sigil(&raw_name);
                    if name.is_empty() {
                        return Err(RequestError::EmptyParamName { index, param });
                    }
                    if named.iter().any(|(n, _)| n == name) {
                        return Err(RequestError::DuplicateParam {
                            index,
                            name: name.to_string(),
                        });
                    }
                    let value =
                        param_value(raw_value).map_err(|problem| RequestError::InvalidParam {
                            index,
                            param,
                            problem,
                        })?;
                    named.push((name.to_string(), value));
                }
            }
            other => {
                let value = param_value(other).map_err(|problem| RequestError::InvalidParam {
                    index,
                    param: ParamRef::Position(position + 1),
                    problem,
                })?;
                positional.push(value);
            }
        }
    }
    match (positional.is_empty(), named.is_empty()) {
        (true, true) => Ok(Params::None),
        (false, true) => Ok(Params::Positional(positional)),
        (true, false) => {
            named.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(Params::Named(named))
        }
        (false, false) => Err(RequestError::MixedParams { index }),
    }
}

fn strip_sigil(name: &str) -> &str {
    name.strip_prefix([':', '@', '$']).unwrap_or(name)
}

/// One parameter value; the error describes what was wrong with it.
fn param_value(v: Json) -> Result<Value, String> {
    match v {
        Json::Null => Ok(Value::Null),
        Json::Bool(b) => Ok(Value::Integer(i64::from(b))),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Value::Integer(i))
            } else if let Some(f) = n.as_f64() {
                // Fractions, exponents, and integers beyond i64 (rqlite: json.Number.Float64()).
                Ok(Value::Real(f))
            } else {
                Err(format!("the number {n} cannot be represented"))
            }
        }
        Json::String(s) => Ok(match hex_blob(&s) {
            Some(bytes) => Value::Blob(bytes),
            None => Value::Text(s),
        }),
        Json::Array(items) => {
            let mut bytes = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_u64().and_then(|x| u8::try_from(x).ok()) {
                    Some(b) => bytes.push(b),
                    None => {
                        let what = match item {
                            Json::Number(n) => format!("the number {n}"),
                            other => json_kind(other).to_string(),
                        };
                        return Err(format!(
                            "an array whose element {i} is {what}, not a byte value"
                        ));
                    }
                }
            }
            Ok(Value::Blob(bytes))
        }
        Json::Object(_) => Err("a nested object".to_string()),
    }
}

/// `x'0aff'` / `X'0AFF'` with an even number of hex digits (possibly none) -> the bytes.
fn hex_blob(s: &str) -> Option<Vec<u8>> {
    let inner = s
        .strip_prefix("x'")
        .or_else(|| s.strip_prefix("X'"))?
        .strip_suffix('\'')?;
    let digits = inner.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?))
        .collect()
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Vec<Statement>, RequestError> {
        parse_statements(body.as_bytes(), Some("application/json"))
    }

    fn parse_err(body: &str) -> String {
        match parse(body) {
            Ok(stmts) => panic!("expected an error for {body:?}, got {stmts:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn opts() -> ResponseOptions {
        ResponseOptions::default()
    }

    fn body(results: &[StatementResult], opts: &ResponseOptions) -> String {
        to_body(&encode_results(results, opts, None, None), false)
    }

    fn exec(last_insert_id: i64, rows_affected: u64) -> StatementResult {
        StatementResult::Execute {
            last_insert_id,
            rows_affected,
            time_secs: 0.25,
        }
    }

    fn foo_rows(values: Vec<Vec<Value>>) -> StatementResult {
        StatementResult::Rows(Rows {
            columns: vec!["id".into(), "name".into(), "age".into()],
            types: vec!["integer".into(), "text".into(), "integer".into()],
            values,
            time_secs: 0.5,
        })
    }

    fn fiona() -> Vec<Value> {
        vec![
            Value::Integer(1),
            Value::Text("fiona".into()),
            Value::Integer(20),
        ]
    }

    // ---- request parsing ----

    #[test]
    fn parses_simple_strings() {
        let stmts =
            parse(r#"["CREATE TABLE foo (id INTEGER)", "INSERT INTO foo VALUES(1)"]"#).unwrap();
        assert_eq!(
            stmts,
            vec![
                Statement::new("CREATE TABLE foo (id INTEGER)"),
                Statement::new("INSERT INTO foo VALUES(1)"),
            ]
        );
    }

    #[test]
    fn parses_positional_params_of_every_type() {
        let stmts = parse(
            r#"[["INSERT INTO t VALUES(?,?,?,?,?,?,?)", 1, -7, 2.5, true, false, null, "fiona"],
                ["SELECT 1"]]"#,
        )
        .unwrap();
        assert_eq!(
            stmts,
            vec![
                Statement::with_params(
                    "INSERT INTO t VALUES(?,?,?,?,?,?,?)",
                    vec![
                        Value::Integer(1),
                        Value::Integer(-7),
                        Value::Real(2.5),
                        Value::Integer(1),
                        Value::Integer(0),
                        Value::Null,
                        Value::Text("fiona".into()),
                    ]
                ),
                Statement::new("SELECT 1"),
            ]
        );
    }

    #[test]
    fn parses_named_params_stripping_sigils_sorted_by_name() {
        let stmts = parse(
            r#"[["INSERT INTO foo VALUES(:name, @age, $x, :plain)",
                 {":name": "fiona", "@age": 20, "$x": null, "plain": 1.5}]]"#,
        )
        .unwrap();
        assert_eq!(
            stmts[0].params,
            Params::Named(vec![
                ("age".into(), Value::Integer(20)),
                ("name".into(), Value::Text("fiona".into())),
                ("plain".into(), Value::Real(1.5)),
                ("x".into(), Value::Null),
            ])
        );
        // Only one sigil is stripped; two maps merge.
        let stmts = parse(r#"[["SELECT ::a, :b", {"::a": 1}, {"b": 2}]]"#).unwrap();
        assert_eq!(
            stmts[0].params,
            Params::Named(vec![
                (":a".into(), Value::Integer(1)),
                ("b".into(), Value::Integer(2)),
            ])
        );
    }

    #[test]
    fn numbers_follow_rqlite_rules() {
        let stmts = parse(
            r#"[["SELECT ?,?,?,?,?", 9223372036854775807, -9223372036854775808,
                 9223372036854775808, 1.0, 1e3]]"#,
        )
        .unwrap();
        assert_eq!(
            stmts[0].params,
            Params::Positional(vec![
                Value::Integer(i64::MAX),
                Value::Integer(i64::MIN),
                Value::Real(9223372036854775808.0),
                Value::Real(1.0),
                Value::Real(1000.0),
            ])
        );
    }

    #[test]
    fn byte_arrays_and_hex_strings_are_blobs() {
        let stmts = parse(
            r#"[["SELECT ?,?,?,?,?,?,?", [0, 1, 255], [], "x'0aFF'", "X''",
                 "x'abc'", "x'zz'", "x'00"]]"#,
        )
        .unwrap();
        assert_eq!(
            stmts[0].params,
            Params::Positional(vec![
                Value::Blob(vec![0, 1, 255]),
                Value::Blob(vec![]),
                Value::Blob(vec![0x0a, 0xff]),
                Value::Blob(vec![]),
                Value::Text("x'abc'".into()),
                Value::Text("x'zz'".into()),
                Value::Text("x'00".into()),
            ])
        );
    }

    #[test]
    fn array_with_sql_only_has_no_params() {
        let stmts = parse(r#"[["SELECT 1"], ["SELECT 2", {}]]"#).unwrap();
        assert_eq!(
            stmts,
            vec![Statement::new("SELECT 1"), Statement::new("SELECT 2")]
        );
    }

    #[test]
    fn text_plain_body_is_one_statement() {
        let stmts = parse_statements(
            b"  INSERT INTO foo(name) VALUES('a; b')\n",
            Some("Text/Plain; charset=utf-8"),
        )
        .unwrap();
        assert_eq!(
            stmts,
            vec![Statement::new("INSERT INTO foo(name) VALUES('a; b')")]
        );
        // With text/plain even a JSON-looking body is SQL.
        let stmts = parse_statements(br#"["SELECT 1"]"#, Some("text/plain")).unwrap();
        assert_eq!(stmts, vec![Statement::new(r#"["SELECT 1"]"#)]);
        assert_eq!(
            parse_statements(b" \n", Some("text/plain"))
                .unwrap_err()
                .to_string(),
            "statement 0: the SQL is empty; expected a non-empty SQL statement"
        );
    }

    #[test]
    fn bare_sql_without_text_plain_is_malformed_json() {
        assert!(matches!(
            parse_statements(b"\n SELECT * FROM foo", None),
            Err(RequestError::MalformedJson(_))
        ));
        let stmts = parse_statements(b"\n SELECT * FROM foo", Some("text/plain")).unwrap();
        assert_eq!(stmts, vec![Statement::new("SELECT * FROM foo")]);
    }

    #[test]
    fn malformed_json_is_an_error() {
        assert_eq!(
            parse_err(r#"["SELECT 1""#),
            "invalid JSON body (EOF while parsing a list at line 1 column 11); expected a JSON \
             array of statements such as [\"SELECT 1\"] or [[\"INSERT INTO t VALUES(?)\", 1]], \
             or plain-text SQL with Content-Type: text/plain"
        );
        assert!(parse_err("[1,]").starts_with("invalid JSON body (trailing comma"));
    }

    #[test]
    fn empty_and_non_utf8_bodies_are_errors() {
        assert_eq!(
            parse_statements(b"", None).unwrap_err().to_string(),
            "request body is empty; expected a JSON array of statements such as [\"SELECT 1\"], \
             or plain-text SQL with Content-Type: text/plain"
        );
        assert_eq!(
            parse_statements(b"[\"\xff\"]", None).unwrap_err(),
            RequestError::InvalidUtf8 { offset: 2 }
        );
    }

    #[test]
    fn non_array_body_is_an_error() {
        assert_eq!(
            parse_err(r#"{"sql": "SELECT 1"}"#),
            "request body is an object, not a JSON array; expected an array of statements such \
             as [\"SELECT 1\"] or [[\"INSERT INTO t VALUES(?)\", 1]]"
        );
        assert_eq!(
            parse("true").unwrap_err(),
            RequestError::NotAnArray { found: "a boolean" }
        );
        assert_eq!(
            parse(r#""SELECT 1""#).unwrap_err(),
            RequestError::NotAnArray { found: "a string" }
        );
    }

    #[test]
    fn empty_array_is_an_error() {
        assert_eq!(
            parse_err("[]"),
            "no statements: the JSON array is empty; expected at least one SQL statement"
        );
    }

    #[test]
    fn element_that_is_not_string_or_array_is_an_error() {
        assert_eq!(
            parse_err(r#"["SELECT 1", 42]"#),
            "statement 1 is a number; expected a SQL string or an array [sql, params...] whose \
             first element is the SQL string"
        );
        assert_eq!(
            parse(r#"[{"SELECT 1": 1}]"#).unwrap_err(),
            RequestError::InvalidStatement {
                index: 0,
                found: "an object"
            }
        );
    }

    #[test]
    fn array_without_leading_sql_string_is_an_error() {
        assert_eq!(
            parse_err("[[]]"),
            "statement 0 is an empty array; expected [sql, params...] with the SQL string first"
        );
        assert_eq!(
            parse_err(r#"["SELECT 1", [1, "SELECT ?"]]"#),
            "statement 1: the first element of the array is a number; expected the SQL string \
             first, as in [sql, params...]"
        );
    }

    #[test]
    fn empty_sql_is_an_error() {
        assert_eq!(
            parse_err(r#"["SELECT 1", ""]"#),
            "statement 1: the SQL is empty; expected a non-empty SQL statement"
        );
        assert_eq!(
            parse(r#"["  \n"]"#).unwrap_err(),
            RequestError::EmptySql { index: 0 }
        );
        assert_eq!(
            parse(r#"[["", 1]]"#).unwrap_err(),
            RequestError::EmptySql { index: 0 }
        );
    }

    #[test]
    fn unsupported_param_values_name_statement_and_parameter() {
        assert_eq!(
            parse_err(r#"["SELECT 1", ["SELECT ?, ?", 1, {"a": {"b": 1}}]]"#),
            "statement 1, parameter \"a\": a nested object; expected a number, a string, a \
             boolean, null or an array of byte values (integers 0-255)"
        );
        assert_eq!(
            parse_err(r#"[["SELECT ?, ?", 1, [1, 256]]]"#),
            "statement 0, parameter #2: an array whose element 1 is the number 256, not a byte \
             value; expected a number, a string, a boolean, null or an array of byte values \
             (integers 0-255)"
        );
        assert_eq!(
            parse(r#"[["SELECT ?", ["a"]]]"#).unwrap_err(),
            RequestError::InvalidParam {
                index: 0,
                param: ParamRef::Position(1),
                problem: "an array whose element 0 is a string, not a byte value".into(),
            }
        );
        assert_eq!(
            parse(r#"[["SELECT :a", {":a": [-1]}]]"#).unwrap_err(),
            RequestError::InvalidParam {
                index: 0,
                param: ParamRef::Name(":a".into()),
                problem: "an array whose element 0 is the number -1, not a byte value".into(),
            }
        );
    }

    #[test]
    fn mixed_duplicate_and_empty_named_params_are_errors() {
        assert_eq!(
            parse_err(r#"[["SELECT ?, :a", 1, {"a": 2}]]"#),
            "statement 0 mixes positional and named parameters; expected either [sql, p1, p2, \
             ...] or [sql, {\"name\": value, ...}]"
        );
        assert_eq!(
            parse_err(r#"[["SELECT :a", {":a": 1, "a": 2}]]"#),
            "statement 0: parameter name \"a\" is given more than once (with or without its :, @ \
             or $ sigil); expected each name once"
        );
        assert_eq!(
            parse_err(r#"[["SELECT 1", {"$": 1}]]"#),
            "statement 0, parameter \"$\": the name is empty; expected a name such as \"name\" or \
             \":name\""
        );
    }

    #[test]
    fn query_param_is_one_statement() {
        assert_eq!(
            parse_query_param("SELECT * FROM foo WHERE x = 'a&b'"),
            vec![Statement::new("SELECT * FROM foo WHERE x = 'a&b'")]
        );
        assert_eq!(parse_query_param(""), Vec::<Statement>::new());
        assert_eq!(parse_query_param("  "), Vec::<Statement>::new());
    }

    #[test]
    fn response_options_from_query() {
        let q: HashMap<String, String> = [
            ("pretty", ""),
            ("timings", "true"),
            ("associative", "FALSE"),
            ("level", "strong"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            response_options(&q),
            ResponseOptions {
                pretty: true,
                timings: true,
                associative: false,
                blob_array: false,
            }
        );
        let q: HashMap<String, String> = [("blob_array".to_string(), "1".to_string())].into();
        assert_eq!(
            response_options(&q),
            ResponseOptions {
                blob_array: true,
                ..ResponseOptions::default()
            }
        );
        assert_eq!(
            response_options(&HashMap::new()),
            ResponseOptions::default()
        );
    }

    // ---- response encoding ----

    #[test]
    fn create_table_is_an_empty_object() {
        assert_eq!(body(&[exec(0, 0)], &opts()), r#"{"results":[{}]}"#);
    }

    #[test]
    fn inserts_report_last_insert_id_and_rows_affected() {
        assert_eq!(
            body(&[exec(1, 1), exec(0, 3), exec(-5, 0)], &opts()),
            r#"{"results":[{"last_insert_id":1,"rows_affected":1},{"rows_affected":3},{"last_insert_id":-5}]}"#
        );
    }

    #[test]
    fn query_has_columns_types_and_values() {
        let r = foo_rows(vec![
            fiona(),
            vec![Value::Integer(2), Value::Null, Value::Real(25.5)],
        ]);
        assert_eq!(
            body(&[r], &opts()),
            r#"{"results":[{"columns":["id","name","age"],"types":["integer","text","integer"],"values":[[1,"fiona",20],[2,null,25.5]]}]}"#
        );
    }

    #[test]
    fn empty_query_omits_values() {
        assert_eq!(
            body(&[foo_rows(vec![])], &opts()),
            r#"{"results":[{"columns":["id","name","age"],"types":["integer","text","integer"]}]}"#
        );
        // Nothing at all to say: like rqlite's omitempty fields, an empty object.
        assert_eq!(
            body(&[StatementResult::Rows(Rows::default())], &opts()),
            r#"{"results":[{}]}"#
        );
    }

    #[test]
    fn associative_rows_are_maps_with_sorted_keys() {
        let o = ResponseOptions {
            associative: true,
            ..opts()
        };
        let r = foo_rows(vec![
            fiona(),
            vec![
                Value::Integer(2),
                Value::Text("declan".into()),
                Value::Integer(25),
            ],
        ]);
        assert_eq!(
            body(&[r, exec(1, 1)], &o),
            r#"{"results":[{"types":{"age":"integer","id":"integer","name":"text"},"rows":[{"age":20,"id":1,"name":"fiona"},{"age":25,"id":2,"name":"declan"}]},{"last_insert_id":1,"rows_affected":1}]}"#
        );
    }

    #[test]
    fn associative_empty_query_has_empty_rows() {
        let o = ResponseOptions {
            associative: true,
            ..opts()
        };
        assert_eq!(
            body(&[foo_rows(vec![])], &o),
            r#"{"results":[{"types":{"age":"integer","id":"integer","name":"text"},"rows":[]}]}"#
        );
        assert_eq!(
            body(&[StatementResult::Rows(Rows::default())], &o),
            r#"{"results":[{"rows":[]}]}"#
        );
    }

    #[test]
    fn unified_associative_execute_has_null_rows() {
        let o = ResponseOptions {
            associative: true,
            timings: true,
            ..opts()
        };
        let v = encode_unified_results(&[exec(1, 1), exec(0, 0), foo_rows(vec![])], &o, None, None);
        assert_eq!(
            to_body(&v, false),
            r#"{"results":[{"last_insert_id":1,"rows_affected":1,"time":0.25,"rows":null},{"time":0.25,"rows":null},{"types":{"age":"integer","id":"integer","name":"text"},"rows":[],"time":0.5}]}"#
        );
        // Not associative: same as /db/execute.
        let v = encode_unified_results(&[exec(1, 1)], &opts(), None, None);
        assert_eq!(
            to_body(&v, false),
            r#"{"results":[{"last_insert_id":1,"rows_affected":1}]}"#
        );
    }

    /// rqlite command/encoding/json.go NewValuesFromQueryValues: a `Parameter_B` (what
    /// normalizeRowParameters makes of go-sqlite3's bool for a BOOLEAN column) is a JSON bool;
    /// a time is already its RFC 3339 text (`Parameter_S`).
    #[test]
    fn booleans_are_json_bools_and_times_strings() {
        let r = StatementResult::Rows(Rows {
            columns: vec!["ok".into(), "ts".into()],
            types: vec!["boolean".into(), "timestamp".into()],
            values: vec![
                vec![
                    Value::Bool(true),
                    Value::Text("2004-02-14T07:15:00Z".into()),
                ],
                vec![Value::Bool(false), Value::Null],
            ],
            time_secs: 0.0,
        });
        assert_eq!(
            body(std::slice::from_ref(&r), &opts()),
            r#"{"results":[{"columns":["ok","ts"],"types":["boolean","timestamp"],"values":[[true,"2004-02-14T07:15:00Z"],[false,null]]}]}"#
        );
        let o = ResponseOptions {
            associative: true,
            ..opts()
        };
        assert_eq!(
            body(std::slice::from_ref(&r), &o),
            r#"{"results":[{"types":{"ok":"boolean","ts":"timestamp"},"rows":[{"ok":true,"ts":"2004-02-14T07:15:00Z"},{"ok":false,"ts":null}]}]}"#
        );
    }

    #[test]
    fn blobs_are_base64_or_byte_arrays() {
        let r = StatementResult::Rows(Rows {
            columns: vec!["b".into(), "e".into()],
            types: vec!["blob".into(), "blob".into()],
            values: vec![vec![
                Value::Blob(vec![0, 1, 2, 254, 255]),
                Value::Blob(vec![]),
            ]],
            time_secs: 0.0,
        });
        assert_eq!(
            body(std::slice::from_ref(&r), &opts()),
            r#"{"results":[{"columns":["b","e"],"types":["blob","blob"],"values":[["AAEC/v8=",""]]}]}"#
        );
        let o = ResponseOptions {
            blob_array: true,
            ..opts()
        };
        assert_eq!(
            body(std::slice::from_ref(&r), &o),
            r#"{"results":[{"columns":["b","e"],"types":["blob","blob"],"values":[[[0,1,2,254,255],[]]]}]}"#
        );
        let o = ResponseOptions {
            blob_array: true,
            associative: true,
            ..opts()
        };
        assert_eq!(
            body(&[r], &o),
            r#"{"results":[{"types":{"b":"blob","e":"blob"},"rows":[{"b":[0,1,2,254,255],"e":[]}]}]}"#
        );
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64_std(input.as_bytes()), expected);
        }
        assert_eq!(base64_std(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    #[test]
    fn reals_are_formatted_like_go() {
        let r = StatementResult::Rows(Rows {
            columns: vec!["r".into()],
            types: vec!["real".into()],
            values: [
                1.0,
                -0.5,
                0.1,
                1.5e-7,
                1e-10,
                1e21,
                1.25e100,
                1e20,
                0.000001,
                f64::NAN,
                f64::INFINITY,
            ]
            .into_iter()
            .map(|f| vec![Value::Real(f)])
            .collect(),
            time_secs: 0.0,
        });
        assert_eq!(
            body(&[r], &opts()),
            r#"{"results":[{"columns":["r"],"types":["real"],"values":[[1],[-0.5],[0.1],[1.5e-7],[1e-10],[1e+21],[1.25e+100],[100000000000000000000],[0.000001],[null],[null]]}]}"#
        );
    }

    #[test]
    fn timings_add_time_fields_except_zero() {
        let o = ResponseOptions {
            timings: true,
            ..opts()
        };
        let results = [
            exec(1, 1),
            foo_rows(vec![fiona()]),
            StatementResult::Execute {
                last_insert_id: 0,
                rows_affected: 0,
                time_secs: 0.0,
            },
            StatementResult::Error("no such table: bar".into()),
        ];
        assert_eq!(
            to_body(&encode_results(&results, &o, Some(0.0152), None), false),
            r#"{"results":[{"last_insert_id":1,"rows_affected":1,"time":0.25},{"columns":["id","name","age"],"types":["integer","text","integer"],"values":[[1,"fiona",20]],"time":0.5},{},{"error":"no such table: bar"}],"time":0.0152}"#
        );
        // Without the flag, no time anywhere even when measured.
        assert_eq!(
            to_body(
                &encode_results(&results[..1], &opts(), Some(0.0152), None),
                false
            ),
            r#"{"results":[{"last_insert_id":1,"rows_affected":1}]}"#
        );
        // Tiny durations use Go's exponent form.
        assert_eq!(
            to_body(&encode_results(&[], &o, Some(4.2e-7), None), false),
            r#"{"results":[],"time":4.2e-7}"#
        );
    }

    #[test]
    fn error_results() {
        assert_eq!(
            body(
                &[
                    exec(1, 1),
                    StatementResult::Error("near \"nonsense\": syntax error".into())
                ],
                &opts()
            ),
            r#"{"results":[{"last_insert_id":1,"rows_affected":1},{"error":"near \"nonsense\": syntax error"}]}"#
        );
    }

    #[test]
    fn raft_index_comes_last() {
        let o = ResponseOptions {
            timings: true,
            ..opts()
        };
        assert_eq!(
            to_body(
                &encode_results(&[exec(2, 1)], &o, Some(0.5), Some(42)),
                false
            ),
            r#"{"results":[{"last_insert_id":2,"rows_affected":1,"time":0.25}],"time":0.5,"raft_index":42}"#
        );
        assert_eq!(
            to_body(
                &encode_results(&[exec(0, 0)], &opts(), None, Some(7)),
                false
            ),
            r#"{"results":[{}],"raft_index":7}"#
        );
    }

    #[test]
    fn whole_request_errors() {
        assert_eq!(
            to_body(&encode_error("leader not found", &opts()), false),
            r#"{"error":"leader not found"}"#
        );
        let o = ResponseOptions {
            timings: true,
            ..opts()
        };
        assert_eq!(
            to_body(
                &encode_request_failure("not leader", &o, Some(0.125)),
                false
            ),
            r#"{"results":[],"error":"not leader","time":0.125}"#
        );
        assert_eq!(
            to_body(
                &encode_request_failure("not leader", &opts(), Some(0.125)),
                false
            ),
            r#"{"results":[],"error":"not leader"}"#
        );
    }

    #[test]
    fn pretty_matches_go_marshal_indent() {
        let o = ResponseOptions {
            timings: true,
            pretty: true,
            ..opts()
        };
        let v = encode_results(
            &[foo_rows(vec![fiona()]), exec(0, 0)],
            &o,
            Some(0.0220043),
            None,
        );
        assert_eq!(
            to_body(&v, o.pretty),
            r#"{
    "results": [
        {
            "columns": [
                "id",
                "name",
                "age"
            ],
            "types": [
                "integer",
                "text",
                "integer"
            ],
            "values": [
                [
                    1,
                    "fiona",
                    20
                ]
            ],
            "time": 0.5
        },
        {
            "time": 0.25
        }
    ],
    "time": 0.0220043
}"#
        );
        assert_eq!(
            to_body(&encode_results(&[exec(0, 0)], &opts(), None, None), true),
            "{\n    \"results\": [\n        {}\n    ]\n}"
        );
        let o = ResponseOptions {
            associative: true,
            ..opts()
        };
        assert_eq!(
            to_body(&encode_results(&[foo_rows(vec![])], &o, None, None), true),
            "{\n    \"results\": [\n        {\n            \"types\": {\n                \"age\": \"integer\",\n                \"id\": \"integer\",\n                \"name\": \"text\"\n            },\n            \"rows\": []\n        }\n    ]\n}"
        );
    }

    #[test]
    fn strings_are_escaped_like_go() {
        let r = StatementResult::Rows(Rows {
            columns: vec!["<c>".into()],
            types: vec![String::new()],
            values: vec![vec![Value::Text(
                "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{1}i<j>k&l\u{2028}m\u{2029}n\u{7f}é😀".into(),
            )]],
            time_secs: 0.0,
        });
        assert_eq!(
            body(&[r], &opts()),
            "{\"results\":[{\"columns\":[\"\\u003cc\\u003e\"],\"types\":[\"\"],\"values\":[[\"a\\\"b\\\\c\\nd\\re\\tf\\bg\\fh\\u0001i\\u003cj\\u003ek\\u0026l\\u2028m\\u2029n\u{7f}é😀\"]]}]}"
        );
    }

    #[test]
    fn mismatched_row_lengths_do_not_panic() {
        let r = StatementResult::Rows(Rows {
            columns: vec!["a".into(), "b".into()],
            types: vec!["integer".into()],
            values: vec![vec![Value::Integer(1)]],
            time_secs: 0.0,
        });
        let o = ResponseOptions {
            associative: true,
            ..opts()
        };
        assert_eq!(
            body(&[r], &o),
            r#"{"results":[{"types":{"a":"integer","b":""},"rows":[{"a":1,"b":null}]}]}"#
        );
    }

    #[test]
    fn encoded_value_round_trips_through_serde() {
        // The Value itself is ordinary JSON: any serializer gives an equivalent document.
        let v = encode_results(&[foo_rows(vec![fiona()])], &opts(), None, None);
        let reparsed: Json = serde_json::from_str(&to_body(&v, false)).unwrap();
        assert_eq!(reparsed, v);
        let reparsed: Json = serde_json::from_str(&to_body(&v, true)).unwrap();
        assert_eq!(reparsed, v);
    }
}
