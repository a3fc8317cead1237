//! What a request says beyond its statements: query-string flags, durations in Go's syntax, the
//! time it may take, read levels, and its body.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::Query;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use raftlite_consensus::node::RaftNode;
use raftlite_consensus::NodeId;

use crate::error::ApiError;
use crate::limits::MAX_BODY_BYTES;

pub(crate) type Params = Query<HashMap<String, String>>;

pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        ApiError::BadRequest(format!(
            "cannot read the request body ({e}); bodies are limited to {} MiB",
            MAX_BODY_BYTES / (1024 * 1024)
        ))
    })
}

pub(crate) fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

pub(crate) fn flag(params: &HashMap<String, String>, key: &str) -> bool {
    params
        .get(key)
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("false"))
}

/// Reads the duration query parameter `key` with Go's `time.ParseDuration` syntax, as rqlite
/// does (`http/query_params.go`, `NewQueryParams`): `500ms`, `1.5s`, `1m30s`, `1h2m3.5s`, `0`.
/// A value Go refuses, and a negative one, is a 400 that says why.
pub(crate) fn duration_param(
    params: &HashMap<String, String>,
    key: &str,
) -> Result<Option<Duration>, ApiError> {
    match params.get(key) {
        None => Ok(None),
        Some(t) => raftlite_store::go_duration::parse_go_duration(t)
            .map(Some)
            .map_err(|e| ApiError::BadRequest(format!("{key} is not a valid duration: {e}"))),
    }
}

/// The duration parameters rqlite checks on every request (`http/query_params.go`,
/// `NewQueryParams`), whatever the endpoint.
const DURATION_PARAMS: [&str; 4] = ["timeout", "freshness", "db_timeout", "linearizable_timeout"];

/// Refuses, with a 400 naming it, any request whose duration parameter Go's
/// `time.ParseDuration` would refuse (or that is negative), as rqlite does before any handler
/// runs; handlers then read them with [`duration_param`].
pub(crate) async fn check_duration_params(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Ok(Query(params)) = Query::<HashMap<String, String>>::try_from_uri(request.uri()) {
        for key in DURATION_PARAMS {
            if let Err(e) = duration_param(&params, key) {
                return e.into_response();
            }
        }
    }
    next.run(request).await
}

/// The time a request may still take: what is left of its deadline (`?timeout` from its
/// arrival, see [`crate::limits`]), or `?timeout` itself (default 10 s) on exempt endpoints.
pub(crate) fn timeout_of(params: &HashMap<String, String>) -> Result<Duration, ApiError> {
    let given = duration_param(params, "timeout")?.unwrap_or(crate::limits::DEFAULT_TIMEOUT);
    Ok(crate::limits::remaining().unwrap_or(given))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    None,
    Weak,
    Linearizable,
}

/// How a read may be served (rqlite's `level`, `freshness`, `freshness_strict`, `db_timeout`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadOptions {
    pub(crate) level: Level,
    /// With `level=none`: the most time allowed since this node last heard from the leader.
    pub(crate) freshness: Option<Duration>,
    /// Also require the last applied write to be no older than `freshness`.
    pub(crate) freshness_strict: bool,
    pub(crate) db_timeout: Option<Duration>,
}

/// rqlite's rules: unknown or missing levels mean `weak`; `auto` means `none` on a non-voter
/// (read-only node) and `weak` on a voter.
pub(crate) fn level_of(params: &HashMap<String, String>, node: &RaftNode) -> Level {
    match params
        .get("level")
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        Some("none") => Level::None,
        Some("strong") | Some("linearizable") => Level::Linearizable,
        Some("auto") => {
            let voters: Vec<NodeId> = node
                .metrics()
                .membership_config
                .membership()
                .voter_ids()
                .collect();
            if voters.contains(&node.id()) {
                Level::Weak
            } else {
                Level::None
            }
        }
        _ => Level::Weak,
    }
}

pub(crate) fn read_options(
    params: &HashMap<String, String>,
    node: &RaftNode,
) -> Result<ReadOptions, ApiError> {
    Ok(ReadOptions {
        level: level_of(params, node),
        freshness: duration_param(params, "freshness")?,
        freshness_strict: flag(params, "freshness_strict"),
        db_timeout: {
            // Checked as rqlite checks it (a 400 when malformed); reads here never wait on a
            // leader's commit index, so its value is not used.
            duration_param(params, "linearizable_timeout")?;
            duration_param(params, "db_timeout")?
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Every duration parameter takes Go's syntax (the parser's own tests are in
    /// `raftlite_store::go_duration`); a malformed or negative one is a 400 naming the parameter.
    #[test]
    fn duration_parameters_take_go_syntax() {
        for key in ["timeout", "db_timeout", "freshness", "linearizable_timeout"] {
            for (text, want) in [
                ("1m30s", Duration::from_secs(90)),
                ("1h2m3.5s", Duration::from_millis(3_723_500)),
                ("250us", Duration::from_micros(250)),
                ("250\u{b5}s", Duration::from_micros(250)),
                (".5s", Duration::from_millis(500)),
                ("0", Duration::ZERO),
            ] {
                let got = duration_param(&params(&[(key, text)]), key);
                assert_eq!(got.ok().flatten(), Some(want), "{key}={text}");
            }
            for text in ["10", "-1s", "soon", "1d", "", " 1s"] {
                match duration_param(&params(&[(key, text)]), key) {
                    Err(ApiError::BadRequest(m)) => {
                        assert!(
                            m.starts_with(&format!("{key} is not a valid duration")),
                            "{m}"
                        )
                    }
                    other => panic!("{key}={text:?}: {:?}", other.map_err(|e| e.to_string())),
                }
            }
        }
        assert_eq!(
            timeout_of(&params(&[])).ok(),
            Some(crate::limits::DEFAULT_TIMEOUT)
        );
    }
}
