//! Request bodies in: rqlite's statement shapes (see the module documentation of [`super`]).

use std::fmt;

use raftlite_store::types::{Params, Statement, Value};
use serde_json::Value as Json;

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
