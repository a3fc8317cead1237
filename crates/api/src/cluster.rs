//! Membership and leadership changes: `/join`, `/remove` and `POST /leader` (hand-over).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use raftlite_consensus::node::{RaftNode, WriteError};
use raftlite_consensus::{NodeAddr, NodeId};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use crate::error::ApiError;
use crate::forward::{api_base, to_leader, LeaderOnly};
use crate::params::{body_bytes, flag, timeout_of, Params};
use crate::respond::json_response;
use crate::state::ApiState;

#[derive(Deserialize)]
struct RemoveBody {
    id: Json,
}

fn node_id_of(v: &Json) -> Option<NodeId> {
    match v {
        Json::Number(n) => n.as_u64(),
        Json::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub(crate) async fn remove(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let body = body_bytes(body)?;
        let parsed: RemoveBody = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("expected {{\"id\": <node id>}}: {e}")))?;
        let id = node_id_of(&parsed.id)
            .ok_or_else(|| ApiError::BadRequest("node id must be a number".into()))?;
        let timeout = timeout_of(&params)?;
        let removed = tokio::time::timeout(timeout, state.node.remove_node(id))
            .await
            .unwrap_or_else(|_| {
                Err(WriteError::Unavailable(format!(
                    "node {id} was not removed within the request's timeout ({timeout:?}): the \
                     cluster may have no quorum; retry, it may already be under way"
                )))
            });
        match removed {
            Ok(()) => Ok(StatusCode::OK.into_response()),
            Err(WriteError::Unavailable(m)) if m.contains("not a member") => {
                Err(ApiError::NotFound(m))
            }
            Err(err) => {
                let req = LeaderOnly::of(Method::DELETE, &uri, &headers, body, &params);
                Ok(to_leader(&state, req, err).await)
            }
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Body of `POST /join`, sent by a starting node to any member.
#[derive(Debug, Deserialize, serde::Serialize)]
pub struct JoinRequest {
    pub id: Json,
    /// Raft address (rqlite calls it `addr`).
    #[serde(alias = "raft_addr")]
    pub addr: String,
    pub api_addr: String,
}

/// `POST /join`. Only the leader answers it: a 200 means the leader's committed membership
/// holds the joiner as a voter at the given address. Any other member forwards it (its own view
/// of the membership may be stale) or, without a known leader, answers 503 so the joiner retries.
pub(crate) async fn join(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let body = body_bytes(body)?;
        let parsed: JoinRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "expected {{\"id\": N, \"addr\": \"raft host:port\", \"api_addr\": \"host:port\"}}: {e}"
            ))
        })?;
        let id = node_id_of(&parsed.id)
            .ok_or_else(|| ApiError::BadRequest("node id must be a number".into()))?;
        let addr = NodeAddr {
            raft_addr: parsed.addr,
            api_addr: parsed.api_addr,
        };
        let timeout = timeout_of(&params)?;
        let joined = tokio::time::timeout(timeout, state.node.add_node(id, addr))
            .await
            .unwrap_or_else(|_| {
                Err(WriteError::Unavailable(format!(
                    "node {id} was not added within the request's timeout ({timeout:?}); the \
                     joining node retries"
                )))
            });
        match joined {
            Ok(()) => Ok(StatusCode::OK.into_response()),
            Err(err) => {
                let req = LeaderOnly {
                    method: Method::POST,
                    uri: &uri,
                    headers: &headers,
                    body,
                    redirect: false,
                };
                Ok(to_leader(&state, req, err).await)
            }
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize, Default)]
struct StepDownBody {
    id: Option<Json>,
}

/// `POST /leader`: the leader hands leadership to another voter (the given `{"id": N}`, or the
/// most up-to-date one) and answers with the new leader. `?elect` is the internal call that
/// asks the chosen node to campaign.
pub(crate) async fn step_down(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let body = body_bytes(body)?;
        if flag(&params, "elect") {
            let old_leader = params
                .get("from")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            state.node.campaign(old_leader);
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        if !state.node.is_leader() {
            let req = LeaderOnly::of(Method::POST, &uri, &headers, body, &params);
            let err = WriteError::NotLeader {
                leader: state.node.leader(),
            };
            return Ok(to_leader(&state, req, err).await);
        }
        let parsed: StepDownBody = if body.iter().all(|b| b.is_ascii_whitespace()) {
            StepDownBody::default()
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                ApiError::BadRequest(format!("expected an empty body or {{\"id\": N}}: {e}"))
            })?
        };
        let requested = match &parsed.id {
            None => None,
            Some(v) => Some(
                node_id_of(v)
                    .ok_or_else(|| ApiError::BadRequest("node id must be a number".into()))?,
            ),
        };
        let timeout = timeout_of(&params)?;
        let (target_id, target) = state.node.transfer_target(requested)?;
        let me = state.node.id();
        let deadline = tokio::time::Instant::now() + timeout;
        // Resumes leading however this ends, the request's deadline cutting it short included.
        let paused = PausedLeadership::new(&state.node);
        let mut ask = state
            .client
            .post(format!("{}/leader?elect&from={me}", api_base(&target)))
            .timeout(timeout.max(Duration::from_millis(1)));
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            ask = ask.header(header::AUTHORIZATION, auth);
        }
        let asked = ask.send().await;
        let new_leader = loop {
            match state.node.leader() {
                Some((id, addr)) if id != me => break Some((id, addr)),
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        drop(paused);
        match (new_leader, asked) {
            (Some((id, addr)), _) => Ok(json_response(
                StatusCode::OK,
                &json!({"leader": {"id": id.to_string(), "addr": addr.raft_addr, "api_addr": api_base(&addr)}}),
                flag(&params, "pretty"),
            )),
            (None, Err(e)) => Err(ApiError::Unavailable(format!(
                "could not reach node {target_id} to hand over leadership: {e}; this node stays leader"
            ))),
            (None, Ok(_)) => Err(ApiError::Unavailable(format!(
                "no new leader within {timeout:?}; this node resumes leading"
            ))),
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Leadership paused for a hand-over, resumed when dropped.
struct PausedLeadership<'a>(&'a RaftNode);

impl<'a> PausedLeadership<'a> {
    fn new(node: &'a RaftNode) -> PausedLeadership<'a> {
        node.pause_leadership(true);
        PausedLeadership(node)
    }
}

impl Drop for PausedLeadership<'_> {
    fn drop(&mut self) {
        self.0.pause_leadership(false);
    }
}
