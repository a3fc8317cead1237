//! What `raftlite backup create` records about a node's consistent copy (downloaded with
//! [`NodeClient::download_snapshot`]): its applied position and timeline history, read from
//! the copy's own `_raftlite_meta` and cross-checked with the index the node announced.

use std::path::Path;

use raftlite_backup::BackupMeta;

use crate::node_client::{Downloaded, NodeClient};
use crate::{engine_error, EngineError};

/// Why the node's copy cannot be backed up.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("reading the snapshot's metadata failed: {0}")]
    Thread(String),
    #[error("the snapshot from {base} is not a readable SQLite database: {reason}")]
    Unreadable { base: String, reason: String },
    #[error("the snapshot from {base} vanished from {path}")]
    Vanished { base: String, path: String },
    #[error(
        "the snapshot from {base} records no applied Raft position in _raftlite_meta; is it a \
         raftlite node whose cluster has bootstrapped?"
    )]
    NoApplied { base: String },
    #[error(
        "the snapshot from {base} says it reflects log index {applied} but the node announced \
         {announced}; the copy is inconsistent, run the backup again"
    )]
    Inconsistent {
        base: String,
        applied: u64,
        announced: u64,
    },
}

/// What the backup of `db`, the copy `downloaded` from `node`, records about it.
pub async fn backup_meta(
    node: &NodeClient,
    db: &Path,
    downloaded: &Downloaded,
) -> Result<BackupMeta, SnapshotError> {
    let state = {
        let db = db.to_path_buf();
        tokio::task::spawn_blocking(move || raftlite_store::probe(&db))
            .await
            .map_err(|e| SnapshotError::Thread(e.to_string()))?
    }
    .map_err(|e| SnapshotError::Unreadable {
        base: node.base.clone(),
        reason: e.to_string(),
    })?
    .ok_or_else(|| SnapshotError::Vanished {
        base: node.base.clone(),
        path: db.display().to_string(),
    })?;
    let applied = state.applied.ok_or_else(|| SnapshotError::NoApplied {
        base: node.base.clone(),
    })?;
    if let Some(index) = downloaded.applied_header {
        if index != applied.index {
            return Err(SnapshotError::Inconsistent {
                base: node.base.clone(),
                applied: applied.index,
                announced: index,
            });
        }
    }
    Ok(BackupMeta::of_database(applied.leader_node, &state).map_err(engine_error)?)
}
