//! The server side of the Raft RPCs: [`raft_router`] decodes each request, hands it to the
//! local [`Raft`] and answers postcard-encoded; the snapshot route comes from `snapshot.rs`.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::snapshot::{snapshot_routes, SNAPSHOT_KEEPALIVE};
use super::transport::OCTET_STREAM;
use super::{APPEND_PATH, PRE_VOTE_PATH, RAFT_BODY_LIMIT, TRANSFER_LEADER_PATH, VOTE_PATH};
use crate::state_machine::Raft;
use crate::state_machine::SnapshotDir;
use crate::types::TypeConfig;

/// The Raft RPC endpoints (`POST` [`APPEND_PATH`], [`VOTE_PATH`], [`PRE_VOTE_PATH`],
/// [`TRANSFER_LEADER_PATH`] with a [`RAFT_BODY_LIMIT`] request body limit, and
/// [`SNAPSHOT_PATH`](super::SNAPSHOT_PATH) without one). Received snapshots are written into
/// `snapshots`. Merge it into the node's Raft listener.
pub fn raft_router(raft: Raft, snapshots: SnapshotDir) -> Router {
    let rpc = Router::new()
        .route(APPEND_PATH, post(handle_append))
        .route(VOTE_PATH, post(handle_vote))
        .route(PRE_VOTE_PATH, post(handle_pre_vote))
        .route(TRANSFER_LEADER_PATH, post(handle_transfer_leader))
        .with_state(raft.clone());
    with_body_limits(
        rpc,
        snapshot_routes(raft, snapshots, SNAPSHOT_KEEPALIVE),
        RAFT_BODY_LIMIT,
    )
}

/// `rpc`'s routes limited to `limit` body bytes, merged with the unlimited `snapshot` route.
fn with_body_limits(rpc: Router, snapshot: Router, limit: usize) -> Router {
    // The snapshot handler streams its body (axum's `Body` extractor ignores the limit anyway);
    // disabling it says that the route is unlimited on purpose.
    rpc.layer(DefaultBodyLimit::max(limit))
        .merge(snapshot.layer(DefaultBodyLimit::disable()))
}

async fn handle_append(State(raft): State<Raft>, body: Bytes) -> Response {
    match decode_request::<AppendEntriesRequest<TypeConfig>>(&body, APPEND_PATH) {
        Ok(req) => postcard_response(&raft.append_entries(req).await),
        Err(bad) => bad.into_response(),
    }
}

async fn handle_vote(State(raft): State<Raft>, body: Bytes) -> Response {
    match decode_request::<VoteRequest<TypeConfig>>(&body, VOTE_PATH) {
        Ok(req) => postcard_response(&raft.vote(req).await),
        Err(bad) => bad.into_response(),
    }
}

async fn handle_pre_vote(State(raft): State<Raft>, body: Bytes) -> Response {
    match decode_request::<VoteRequest<TypeConfig>>(&body, PRE_VOTE_PATH) {
        Ok(req) => postcard_response(&raft.pre_vote(req).await),
        Err(bad) => bad.into_response(),
    }
}

async fn handle_transfer_leader(State(raft): State<Raft>, body: Bytes) -> Response {
    match decode_request::<TransferLeaderRequest<TypeConfig>>(&body, TRANSFER_LEADER_PATH) {
        Ok(req) => postcard_response(&raft.handle_transfer_leader(req).await),
        Err(bad) => bad.into_response(),
    }
}

/// Decodes a postcard request body, or gives the 400 answer.
fn decode_request<T: DeserializeOwned>(body: &[u8], path: &str) -> Result<T, (StatusCode, String)> {
    postcard::from_bytes(body).map_err(|e| {
        tracing::warn!(path, len = body.len(), error = %e, "undecodable raft RPC body");
        (
            StatusCode::BAD_REQUEST,
            format!("cannot decode {path} request body: {e}"),
        )
    })
}

/// A postcard-encoded answer, or a 500 naming why it could not be encoded.
pub(crate) fn postcard_response<T: Serialize>(value: &T) -> Response {
    match postcard::to_allocvec(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, OCTET_STREAM)], bytes).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode raft RPC response");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode response: {e}"),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests;
