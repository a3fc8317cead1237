//! The client-facing HTTP API (rqlite-compatible) and cluster management endpoints, assembled
//! into one router. The handlers live in `db.rs`, `status.rs`, `cluster.rs`, [`crate::transfer`]
//! and [`crate::backups`]; what they share in `state.rs`, `params.rs`, `forward.rs`, `respond.rs`
//! and `writes.rs`.
//!
//! Writes and leader-only reads that reach a follower are forwarded to the leader over HTTP
//! (or answered with 301 and `Location` under `?redirect`).

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;

use crate::limits::MAX_BODY_BYTES;
use crate::{auth, backups, cluster, db, limits, params, status, transfer};

pub use crate::cluster::JoinRequest;
pub use crate::state::{ApiState, HttpInfo};

pub fn router(state: Arc<ApiState>) -> Router {
    let auth = state.auth.clone();
    let admission = limits::Admission::new(state.limits);
    let app = Router::new()
        .route("/db/execute", post(db::execute))
        .route("/db/query", get(db::query).post(db::query))
        .route("/db/request", post(db::request))
        .route("/status", get(status::status))
        .route("/nodes", get(status::nodes))
        .route("/readyz", get(status::readyz))
        .route("/leader", get(status::leader).post(cluster::step_down))
        .route("/remove", delete(cluster::remove))
        .route("/join", post(cluster::join))
        .route("/metrics", get(status::metrics))
        .merge(transfer::routes())
        .merge(backups::routes());
    #[cfg(feature = "runtime-stats")]
    let app = app.route("/debug/raft-stats", get(status::raft_stats));
    let app = app
        .layer(axum::middleware::from_fn(params::check_duration_params))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    // Last, so that every route above (merged ones included) is checked.
    let app = auth::protect(app, auth);
    // Outside auth: a flood of unauthenticated requests is bounded too.
    limits::guard(app, admission)
}
