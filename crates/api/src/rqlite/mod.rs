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

#[cfg(doc)]
use raftlite_store::types::{Params, Value};

mod encode;
mod parse;
#[cfg(test)]
mod tests;

pub use encode::{
    base64_std, encode_error, encode_request_failure, encode_results, encode_unified_results,
    encode_value, response_options, to_body, ResponseOptions,
};
pub use parse::{parse_query_param, parse_statements, ParamRef, RequestError};
