//! rqlite's `GET /db/backup` and `POST /db/load`: a consistent copy of the database out
//! (`backup.rs`), a SQLite file or SQL text in (`load.rs`); both stream through scratch files
//! under `<data-dir>/snapshots/` (`scratch.rs`) so memory stays bounded whatever the size.

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::state::ApiState;

mod backup;
mod load;
mod scratch;

pub use load::{EXPECT_SHA256_HEADER, MAX_LOAD_BYTES, SQLITE_MAGIC};

/// The routes of this module, merged into [`crate::server::router`].
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/db/backup", get(backup::backup))
        .route("/db/load", post(load::load))
}
