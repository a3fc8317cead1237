//! `POST /backups`: backups on request, taken by the leader's backup service
//! ([`raftlite_backup::service`], which also runs the schedule, retention and restore drills).
//!
//! - Only the leader takes backups. A follower forwards `POST /backups` to the leader (or
//!   answers 301 under `?redirect`), like writes.
//! - One backup at a time per node: a second request meanwhile gets 409.
//! - Answers: 200 `{"backup": {"id": ..., "destination": ..., "manifest": {...}}}`; 400 when
//!   backups are off (`--backup-to off`); 503 (with `Retry-After`) when the destination fails,
//!   the message naming it without credentials; 409 while another backup runs.
//! - The request runs as its own task, so a client that goes away does not cancel an upload
//!   halfway (which could leave an unfinished multipart upload behind).
//!
//! `/status` shows the service's state under `backup` ([`status_json`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use raftlite_backup::service::{destination_failed, BackupRunError};
use serde_json::{json, Value as Json};

use crate::error::ApiError;
use crate::forward::backup_to_leader;
use crate::params::flag;
use crate::respond::json_response;
use crate::state::ApiState;

type Params = Query<HashMap<String, String>>;

/// The routes of this module, merged into [`crate::server::router`].
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/backups", post(create))
}

impl From<BackupRunError> for ApiError {
    fn from(e: BackupRunError) -> ApiError {
        match &e {
            BackupRunError::NotLeader { leader: None, .. } => ApiError::NoLeader,
            BackupRunError::NotLeader { .. } => ApiError::Unavailable(format!(
                "{e}; leadership changed while the request was being handled, retry"
            )),
            BackupRunError::InProgress { .. } => ApiError::Conflict(e.to_string()),
            BackupRunError::Snapshot { .. } => ApiError::Internal(e.to_string()),
            BackupRunError::Backup(inner) if destination_failed(inner) => {
                ApiError::Unavailable(e.to_string())
            }
            BackupRunError::Backup(_) => ApiError::Internal(e.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// POST /backups
// ---------------------------------------------------------------------------------------------

async fn create(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    metrics::counter!("raftlite_http_requests_total", "endpoint" => "backups").increment(1);
    let redirect = flag(&params, "redirect");
    if !state.node.is_leader() {
        return backup_to_leader(&state, Method::POST, &uri, &headers, redirect).await;
    }
    let Some(service) = state.backups.clone() else {
        return ApiError::BadRequest(format!(
            "backups are not configured on node {} (the leader, which takes them): start the \
             server with --backup-to DEST (file:///dir, s3://bucket/prefix, gs://bucket/prefix \
             or az://container/prefix)",
            state.node.id()
        ))
        .into_response();
    };
    let node = state.node.clone();
    let run = tokio::spawn(async move {
        let result = service.run_once(&node).await;
        (result, service)
    });
    match run.await {
        Ok((Ok(manifest), service)) => {
            let id = match manifest.id() {
                Ok(id) => Json::String(id.to_string()),
                Err(_) => Json::Null,
            };
            let body = json!({
                "backup": {
                    "id": id,
                    "destination": service.label(),
                    "manifest": manifest,
                }
            });
            json_response(StatusCode::OK, &body, flag(&params, "pretty"))
        }
        // Leadership moved between the check above and the backup: send it on.
        Ok((Err(BackupRunError::NotLeader { .. }), _)) => {
            backup_to_leader(&state, Method::POST, &uri, &headers, redirect).await
        }
        Ok((Err(e), _)) => ApiError::from(e).into_response(),
        Err(e) => ApiError::Internal(format!("the backup task failed: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftlite_backup::BackupError;

    #[test]
    fn errors_map_to_statuses() {
        let busy = BackupRunError::InProgress {
            node: 1,
            dest: "file:///x".into(),
        };
        assert_eq!(ApiError::from(busy).status(), StatusCode::CONFLICT);
        let meta = BackupRunError::Backup(BackupError::InvalidMeta {
            reason: "no timeline".into(),
        });
        assert!(meta.is_retryable());
        assert_eq!(
            ApiError::from(meta).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let snap = BackupRunError::Snapshot {
            dest: "file:///x".into(),
            reason: "disk full".into(),
        };
        assert_eq!(
            ApiError::from(snap).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
