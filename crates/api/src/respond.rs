//! Answers in rqlite's shapes: JSON bodies written as rqlite writes them, and rqlite's answer to
//! a disallowed PRAGMA.

use std::time::Instant;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value as Json;

use crate::error::ApiError;
use crate::{pragma, rqlite};

pub(crate) fn json_response(status: StatusCode, value: &Json, pretty: bool) -> Response {
    let mut response = (status, rqlite::to_body(value, pretty)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// A struct as JSON in its field order (Go's `encoding/json` order for structs, sorted keys for
/// maps); `?pretty` indents by four spaces as rqlite does.
pub(crate) fn struct_response<T: serde::Serialize>(value: &T, pretty: bool) -> Response {
    let mut out = Vec::new();
    let written = if pretty {
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
        value.serialize(&mut ser)
    } else {
        serde_json::to_writer(&mut out, value)
    };
    if let Err(e) = written {
        return ApiError::Internal(format!("encoding the answer: {e}")).into_response();
    }
    let mut response = (StatusCode::OK, out).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// rqlite's answer to a request with a PRAGMA that would break the database layer (see
/// [`pragma`]): 200, `{"results":[],"error":"disallowed pragma"}`, before anything is forwarded
/// or proposed, on a follower too (rqlite's store checks before it checks for leadership).
pub(crate) fn disallowed_pragma(opts: &rqlite::ResponseOptions, started: Instant) -> Response {
    json_response(
        StatusCode::OK,
        &rqlite::encode_request_failure(
            pragma::DISALLOWED_PRAGMA,
            opts,
            Some(started.elapsed().as_secs_f64()),
        ),
        opts.pretty,
    )
}
