//! Requests only the leader can serve: forwarded to it over HTTP (its answer streamed back), or
//! answered with 301 and `Location` under `?redirect`.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use raftlite_consensus::node::{RaftNode, WriteError};
use raftlite_consensus::{NodeAddr, NodeId};

use crate::error::ApiError;
use crate::params::flag;
use crate::state::ApiState;

/// Marks a request a node forwarded to the leader, so a stale leader view never loops.
pub(crate) const FORWARDED_HEADER: &str = "x-raftlite-forwarded";

/// What a node does with a request that only the leader can serve.
pub(crate) struct LeaderOnly<'a> {
    pub(crate) method: Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) redirect: bool,
}

impl<'a> LeaderOnly<'a> {
    /// The request as it arrived; `?redirect` in `params` asks for a 301 instead of forwarding.
    pub(crate) fn of(
        method: Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        body: Bytes,
        params: &HashMap<String, String>,
    ) -> Self {
        LeaderOnly {
            method,
            uri,
            headers,
            body,
            redirect: flag(params, "redirect"),
        }
    }
}

pub(crate) async fn to_leader(state: &ApiState, req: LeaderOnly<'_>, err: WriteError) -> Response {
    to_leader_within(state, req, err, None).await
}

/// Headers of the leader's answer that a forwarded answer keeps.
const FORWARDED_RESPONSE_HEADERS: [&str; 7] = [
    "content-type",
    "content-disposition",
    "content-length",
    "retry-after",
    "www-authenticate",
    "x-raftlite-applied-index",
    "x-raftlite-timeline",
];

/// Like [`to_leader`], with a time limit for the whole forwarded exchange other than the
/// client's default (long operations such as backups). The leader's answer is streamed through,
/// so a large body (a database file) never sits in this node's memory.
pub(crate) async fn to_leader_within(
    state: &ApiState,
    req: LeaderOnly<'_>,
    err: WriteError,
    timeout: Option<Duration>,
) -> Response {
    let req = LeaderOnlyStream {
        method: req.method,
        uri: req.uri,
        headers: req.headers,
        body: reqwest::Body::from(req.body),
        redirect: req.redirect,
    };
    to_leader_streaming(state, req, err, timeout).await
}

/// How long a forwarded backup (`POST /backups`, `GET /db/backup`) may take in all: a large
/// database to a remote store, or streamed through; the shared client's 30 s limit is too short.
const FORWARDED_BACKUP_TIMEOUT: Duration = Duration::from_secs(3600);

/// A follower's answer to a backup request, which carries no body: the leader's answer streamed
/// through (bounded memory) within [`FORWARDED_BACKUP_TIMEOUT`], a 301 under `?redirect`, or 503
/// when no leader is known or leadership is moving.
pub(crate) async fn backup_to_leader(
    state: &ApiState,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    redirect: bool,
) -> Response {
    let req = LeaderOnly {
        method,
        uri,
        headers,
        body: Bytes::new(),
        redirect,
    };
    let err = WriteError::NotLeader {
        leader: state.node.leader(),
    };
    to_leader_within(state, req, err, Some(FORWARDED_BACKUP_TIMEOUT)).await
}

/// How long a leader may send nothing (not even a heartbeat) to this follower before a long
/// forwarded operation stops waiting for it: many heartbeat intervals, more than an election
/// timeout.
const LEADER_SILENCE_BOUND: Duration = Duration::from_secs(5);

/// Resolves, with the reason, once `leader_id` is no longer a leader this node hears from:
/// another node leads, none is known, or it sent nothing for [`LEADER_SILENCE_BOUND`].
async fn leader_lost(node: &RaftNode, leader_id: NodeId) -> String {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        match node.leader() {
            Some((id, _)) if id == leader_id => {
                if let Some(silent) = node
                    .since_leader_contact()
                    .filter(|s| *s > LEADER_SILENCE_BOUND)
                {
                    return format!("leader {leader_id} sent nothing for {silent:?}");
                }
            }
            Some((id, _)) => return format!("leadership moved from node {leader_id} to node {id}"),
            None => return format!("node {leader_id} stopped leading"),
        }
    }
}

/// [`LeaderOnly`] whose body is sent as it is produced (a database file read in chunks), so a
/// large upload never sits in this node's memory.
pub(crate) struct LeaderOnlyStream<'a> {
    pub(crate) method: Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: reqwest::Body,
    pub(crate) redirect: bool,
}

/// [`to_leader_within`] for a streamed request body. Under `?redirect` the body is dropped
/// unsent (the client sends it again to the leader).
pub(crate) async fn to_leader_streaming(
    state: &ApiState,
    req: LeaderOnlyStream<'_>,
    err: WriteError,
    timeout: Option<Duration>,
) -> Response {
    let WriteError::NotLeader {
        leader: Some((leader_id, leader)),
    } = err
    else {
        return ApiError::from(err).into_response();
    };
    if leader_id == state.node.id() || req.headers.contains_key(FORWARDED_HEADER) {
        return ApiError::Unavailable(
            "leadership is changing; retry the request shortly".to_string(),
        )
        .into_response();
    }
    let path = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let target = format!("{}{path}", api_base(&leader));
    if req.redirect {
        let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
        if let Ok(location) = HeaderValue::from_str(&target) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        return response;
    }
    // The leader gets what is left of this request's deadline, not the client's fixed limit:
    // a paused leader accepts connections and never answers.
    let limit = crate::limits::remaining().or(timeout);
    if limit == Some(Duration::ZERO) {
        return ApiError::Unavailable(format!(
            "the request's timeout ran out before it could be forwarded to leader {leader_id}; \
             retry (with a larger ?timeout if the cluster is busy)"
        ))
        .into_response();
    }
    let mut forwarded = state
        .client
        .request(req.method, &target)
        .header(FORWARDED_HEADER, state.node.id().to_string())
        .body(req.body);
    if let Some(limit) = limit {
        forwarded = forwarded.timeout(limit);
    }
    for name in [header::CONTENT_TYPE, header::AUTHORIZATION] {
        if let Some(v) = req.headers.get(&name) {
            forwarded = forwarded.header(name, v);
        }
    }
    // A long operation (a restore, a backup: minutes, on purpose without a deadline) is bounded
    // by the leader's life instead: it is answered once that leader stops being the one this
    // node hears from. A paused leader is replaced within an election timeout.
    let long = limit.is_none_or(|l| l > crate::limits::DEFAULT_TIMEOUT);
    let sent = if long {
        tokio::select! {
            sent = forwarded.send() => sent,
            lost = leader_lost(&state.node, leader_id) => {
                return ApiError::Unavailable(format!(
                    "{lost} while it handled this forwarded request; its outcome is unknown: \
                     check /status (a restore names its timeline there) before retrying"
                ))
                .into_response()
            }
        }
    } else {
        forwarded.send().await
    };
    let upstream = match sent {
        Ok(upstream) => upstream,
        Err(e) if e.is_timeout() => {
            return leader_timed_out(leader_id, &leader, limit.unwrap_or_default()).into_response()
        }
        Err(e) => {
            return ApiError::Unavailable(format!(
                "cannot forward to leader {leader_id} at {}: {e}; retry shortly",
                leader.api_addr
            ))
            .into_response()
        }
    };
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut kept = HeaderMap::new();
    for name in FORWARDED_RESPONSE_HEADERS {
        if let (Some(v), Ok(name)) = (
            upstream.headers().get(name),
            header::HeaderName::from_bytes(name.as_bytes()),
        ) {
            if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
                kept.insert(name, v);
            }
        }
    }
    let body = futures::stream::unfold(Some(upstream), move |upstream| async move {
        let mut upstream = upstream?;
        match upstream.chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(upstream))),
            Ok(None) => None,
            Err(e) => Some((
                Err(std::io::Error::other(format!(
                    "leader {leader_id} stopped answering the forwarded request ({e}); it may \
                     or may not have been applied"
                ))),
                None,
            )),
        }
    });
    let mut response = (status, axum::body::Body::from_stream(body)).into_response();
    response.headers_mut().extend(kept);
    response
}

/// The answer to a forwarded request that leader `leader_id` did not answer within `limit`.
pub(crate) fn leader_timed_out(leader_id: NodeId, leader: &NodeAddr, limit: Duration) -> ApiError {
    ApiError::Unavailable(format!(
        "leader {leader_id} at {} did not answer within the request's timeout ({limit:?}); a \
         write may or may not have been applied: retry shortly",
        leader.api_addr
    ))
}

pub(crate) fn api_base(addr: &NodeAddr) -> String {
    if addr.api_addr.starts_with("http://") || addr.api_addr.starts_with("https://") {
        addr.api_addr.clone()
    } else {
        format!("http://{}", addr.api_addr)
    }
}
