//! `/db/execute`, `/db/query` and `/db/request`: statements in rqlite's shapes, writes through
//! the log, reads at the level the request asks for.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use raftlite_consensus::node::{RaftNode, WriteError};
use raftlite_store::{Statement, StatementResult, WriteRequest};
use serde_json::json;

use crate::error::ApiError;
use crate::forward::{to_leader, LeaderOnly};
use crate::params::{
    body_bytes, content_type, flag, read_options, timeout_of, Level, Params, ReadOptions,
};
use crate::respond::{disallowed_pragma, json_response};
use crate::state::ApiState;
use crate::writes::write_with_timeout;
use crate::{pragma, rqlite};

/// What `/db/execute` and `/db/request` read first: the body, its statements and the request's
/// timeout.
fn posted(
    body: Result<Bytes, BytesRejection>,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(Bytes, Vec<Statement>, Duration), ApiError> {
    let body = body_bytes(body)?;
    let statements = rqlite::parse_statements(&body, content_type(headers))?;
    let timeout = timeout_of(params)?;
    Ok((body, statements, timeout))
}

pub(crate) async fn execute(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    metrics::counter!("raftlite_http_requests_total", "endpoint" => "execute").increment(1);
    let started = Instant::now();
    let opts = rqlite::response_options(&params);
    let result: Result<Response, ApiError> = async {
        let (body, statements, timeout) = posted(body, &headers, &params)?;
        if pragma::has_disallowed_pragma(&statements) {
            return Ok(disallowed_pragma(&opts, started));
        }
        let request = WriteRequest {
            statements,
            transaction: flag(&params, "transaction"),
        };
        if flag(&params, "queue") && state.node.is_leader() {
            return Ok(queue_write(&state, request, &params, &opts, timeout).await);
        }
        match write_with_timeout(&state.node, request, timeout).await {
            Ok(outcome) => Ok(json_response(
                StatusCode::OK,
                &rqlite::encode_results(
                    &outcome.results,
                    &opts,
                    Some(started.elapsed().as_secs_f64()),
                    flag(&params, "raft_index").then_some(outcome.raft_index),
                ),
                opts.pretty,
            )),
            Err(err) => {
                let req = LeaderOnly::of(method, &uri, &headers, body, &params);
                Ok(to_leader(&state, req, err).await)
            }
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Why a read cannot be served here.
enum ReadRefusal {
    /// Only the leader may serve it (forward or redirect).
    Leader(WriteError),
    /// `freshness` is not met: rqlite answers with an error instead of stale data.
    Stale(String),
}

/// Checks that this node may serve a read with these options.
async fn read_allowed(
    node: &RaftNode,
    opts: &ReadOptions,
    timeout: Duration,
) -> Result<(), ReadRefusal> {
    match opts.level {
        Level::None => {
            match opts.freshness {
                // The leader is always within any freshness bound.
                Some(limit) if !node.is_leader() => {
                    match node.since_leader_contact() {
                        Some(since) if since <= limit => {}
                        Some(since) => {
                            return Err(ReadRefusal::Stale(format!(
                            "stale read: last contact with the leader was {since:?} ago, more than \
                             freshness {limit:?}"
                        )))
                        }
                        None => return Err(ReadRefusal::Stale(
                            "stale read: this node has not heard from a leader since it started"
                                .to_string(),
                        )),
                    }
                    if opts.freshness_strict {
                        let age_ms = node
                            .store()
                            .last_write_at_ms()
                            .map(|at| (raftlite_consensus::node::unix_ms() - at).max(0) as u128);
                        if let Some(age_ms) = age_ms.filter(|a| *a > limit.as_millis()) {
                            return Err(ReadRefusal::Stale(format!(
                                "stale read: the last write applied here is {age_ms} ms old, more \
                             than freshness {limit:?} (freshness_strict)"
                            )));
                        }
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        Level::Weak => {
            if node.is_leader() {
                Ok(())
            } else {
                Err(ReadRefusal::Leader(WriteError::NotLeader {
                    leader: node.leader(),
                }))
            }
        }
        Level::Linearizable => {
            match tokio::time::timeout(timeout, node.ensure_linearizable()).await {
                Ok(r) => r.map_err(ReadRefusal::Leader),
                Err(_) => Err(ReadRefusal::Leader(WriteError::Unavailable(format!(
                    "could not confirm leadership within {timeout:?}"
                )))),
            }
        }
    }
}

async fn run_query(
    state: &ApiState,
    statements: Vec<Statement>,
    db_timeout: Option<Duration>,
) -> Result<Vec<StatementResult>, ApiError> {
    let store = state.node.store();
    let max_bytes = state.limits.max_response_bytes;
    tokio::task::spawn_blocking(move || {
        store.query_within(&statements, db_timeout, Some(max_bytes))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(ApiError::from)
}

pub(crate) async fn query(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    metrics::counter!("raftlite_http_requests_total", "endpoint" => "query").increment(1);
    let started = Instant::now();
    let opts = rqlite::response_options(&params);
    let result: Result<Response, ApiError> = async {
        let body = body_bytes(body)?;
        let statements = if method == Method::GET {
            let q = params.get("q").map(String::as_str).unwrap_or("");
            let statements = rqlite::parse_query_param(q);
            if statements.is_empty() {
                return Err(ApiError::BadRequest(
                    "query parameter q is not set: use /db/query?q=SELECT...".into(),
                ));
            }
            statements
        } else {
            rqlite::parse_statements(&body, content_type(&headers))?
        };
        let read = read_options(&params, &state.node)?;
        let timeout = timeout_of(&params)?;
        if pragma::has_disallowed_pragma(&statements) {
            return Ok(disallowed_pragma(&opts, started));
        }
        match read_allowed(&state.node, &read, timeout).await {
            Ok(()) => {}
            Err(ReadRefusal::Stale(msg)) => {
                return Ok(json_response(
                    StatusCode::OK,
                    &rqlite::encode_request_failure(&msg, &opts, None),
                    opts.pretty,
                ))
            }
            Err(ReadRefusal::Leader(err)) => {
                let req = LeaderOnly::of(method, &uri, &headers, body, &params);
                return Ok(to_leader(&state, req, err).await);
            }
        }
        let results = run_query(&state, statements, read.db_timeout).await?;
        Ok(json_response(
            StatusCode::OK,
            &rqlite::encode_results(&results, &opts, Some(started.elapsed().as_secs_f64()), None),
            opts.pretty,
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `/db/request`: reads go the read path, anything that writes goes through the log.
pub(crate) async fn request(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    metrics::counter!("raftlite_http_requests_total", "endpoint" => "request").increment(1);
    let started = Instant::now();
    let opts = rqlite::response_options(&params);
    let result: Result<Response, ApiError> = async {
        let (body, statements, timeout) = posted(body, &headers, &params)?;
        if pragma::has_disallowed_pragma(&statements) {
            return Ok(disallowed_pragma(&opts, started));
        }
        let store = state.node.store();
        let probe = statements.clone();
        let read_only = tokio::task::spawn_blocking(move || store.is_read_only(&probe))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        let redirect = flag(&params, "redirect");
        let outcome = if read_only {
            let read = read_options(&params, &state.node)?;
            match read_allowed(&state.node, &read, timeout).await {
                Ok(()) => Ok((run_query(&state, statements, read.db_timeout).await?, None)),
                Err(ReadRefusal::Stale(msg)) => {
                    return Ok(json_response(
                        StatusCode::OK,
                        &rqlite::encode_request_failure(&msg, &opts, None),
                        opts.pretty,
                    ))
                }
                Err(ReadRefusal::Leader(e)) => Err(e),
            }
        } else {
            let request = WriteRequest {
                statements,
                transaction: flag(&params, "transaction"),
            };
            write_with_timeout(&state.node, request, timeout)
                .await
                .map(|o| (o.results, Some(o.raft_index)))
        };
        match outcome {
            Ok((results, index)) => Ok(json_response(
                StatusCode::OK,
                &rqlite::encode_unified_results(
                    &results,
                    &opts,
                    Some(started.elapsed().as_secs_f64()),
                    index.filter(|_| flag(&params, "raft_index")),
                ),
                opts.pretty,
            )),
            Err(err) => {
                let req = LeaderOnly {
                    method,
                    uri: &uri,
                    headers: &headers,
                    body,
                    redirect,
                };
                Ok(to_leader(&state, req, err).await)
            }
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// rqlite's queued writes: the leader answers at once with a sequence number and applies the
/// request in the background (through the same group commit as every write); `?wait` answers
/// only once it is applied.
async fn queue_write(
    state: &ApiState,
    request: WriteRequest,
    params: &HashMap<String, String>,
    opts: &rqlite::ResponseOptions,
    timeout: Duration,
) -> Response {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_SEQUENCE: AtomicU64 = AtomicU64::new(0);
    // Like rqlite: nanoseconds since the epoch, strictly increasing.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let sequence = LAST_SEQUENCE
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last + 1))
        })
        .map(|last| now.max(last + 1))
        .unwrap_or(now);
    // Queued now, so a refusal (too large, queue full) is the client's answer, not a log line.
    let outcome = match state.node.submit(request) {
        Ok(outcome) => outcome,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let applied = tokio::spawn(async move {
        match outcome.await {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                metrics::counter!("raftlite_queued_write_failures_total").increment(1);
                tracing::warn!(sequence, error = %e, "queued write failed");
                Err(e)
            }
        }
    });
    if flag(params, "wait") {
        match tokio::time::timeout(timeout, applied).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => return ApiError::from(e).into_response(),
            Ok(Err(e)) => return ApiError::Internal(e.to_string()).into_response(),
            Err(_) => {
                return ApiError::Unavailable(format!(
                    "queued write {sequence} was not applied within {timeout:?}"
                ))
                .into_response()
            }
        }
    }
    json_response(
        StatusCode::OK,
        &json!({"results": [], "sequence_number": sequence}),
        opts.pretty,
    )
}
