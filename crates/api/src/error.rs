//! Errors of the HTTP API and, in one place, the HTTP status each maps to.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::rqlite;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong; nothing was applied.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with work in progress (e.g. a backup already running): retry later.
    #[error("{0}")]
    Conflict(String),
    /// Missing or wrong credentials, or a user without the needed permission (as rqlite: 401).
    #[error("{0}")]
    Unauthorized(String),
    /// No leader is known (an election is under way): retry shortly.
    #[error("no leader is known right now (an election may be in progress); retry shortly")]
    NoLeader,
    /// The cluster could not complete the request in time or at all; retrying may work.
    #[error("{0}")]
    Unavailable(String),
    /// The request, or its answer, is larger than a configured limit that the message names.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Not enough disk space for the request; nothing was changed.
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NoLeader | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<rqlite::RequestError> for ApiError {
    fn from(e: rqlite::RequestError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<raftlite_consensus::node::WriteError> for ApiError {
    fn from(e: raftlite_consensus::node::WriteError) -> Self {
        use raftlite_consensus::node::WriteError;
        match e {
            WriteError::NotLeader { leader: None } => ApiError::NoLeader,
            WriteError::NotLeader {
                leader: Some((id, _)),
            } => ApiError::Unavailable(format!(
                "node {id} is the leader but the request could not be forwarded to it; retry"
            )),
            WriteError::Unavailable(m) => ApiError::Unavailable(m),
            e @ WriteError::TooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
            e @ WriteError::QueueFull(_) => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<raftlite_consensus::restore::RestoreError> for ApiError {
    fn from(e: raftlite_consensus::restore::RestoreError) -> Self {
        use raftlite_consensus::restore::RestoreError;
        match e {
            RestoreError::NotLeader { leader } => {
                ApiError::from(raftlite_consensus::node::WriteError::NotLeader { leader })
            }
            // The file itself is bad: the client must send another one.
            RestoreError::Invalid { .. } => ApiError::BadRequest(format!(
                "the uploaded file was refused: {e}. Check that the file is complete and \
                 undamaged (sqlite3 FILE 'PRAGMA integrity_check')"
            )),
            RestoreError::Refused { .. } => ApiError::BadRequest(e.to_string()),
            RestoreError::Busy => ApiError::Conflict(e.to_string()),
            RestoreError::NoSpace { .. } => ApiError::InsufficientStorage(e.to_string()),
            RestoreError::Read { .. } => ApiError::Internal(e.to_string()),
            // The cluster could not finish (all-old), or cannot tell yet (the message names
            // the timeline id that /status shows if it took effect).
            RestoreError::Failed { .. } | RestoreError::Unknown { .. } => {
                ApiError::Unavailable(e.to_string())
            }
        }
    }
}

impl From<raftlite_store::StoreError> for ApiError {
    fn from(e: raftlite_store::StoreError) -> Self {
        match e {
            raftlite_store::StoreError::ResultTooLarge { limit } => {
                ApiError::PayloadTooLarge(format!(
                    "the query's results are larger than --max-response-bytes ({limit} bytes); \
                     reading stopped there. Select fewer rows or columns (LIMIT and OFFSET, a \
                     narrower WHERE), or raise --max-response-bytes"
                ))
            }
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        }
        let body = rqlite::to_body(
            &rqlite::encode_error(&self.to_string(), &Default::default()),
            false,
        );
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
