//! Why a backup run did not produce a backup.

use raftlite_consensus::{NodeAddr, NodeId};

use crate::BackupError;

/// Why [`BackupService::run_once`](super::BackupService::run_once) did not produce a backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupRunError {
    /// Only the leader takes backups; `leader` is who to ask instead, when known.
    #[error("node {node} is not the leader; only the leader takes backups")]
    NotLeader {
        node: NodeId,
        leader: Option<(NodeId, NodeAddr)>,
    },
    #[error(
        "a backup to {dest} is already in progress on node {node}; wait for it to finish and \
         retry"
    )]
    InProgress { node: NodeId, dest: String },
    #[error("cannot take a consistent copy of the database for the backup to {dest}: {reason}")]
    Snapshot { dest: String, reason: String },
    #[error(transparent)]
    Backup(#[from] BackupError),
}

impl BackupRunError {
    /// Whether running again later may succeed without anyone changing anything (the
    /// destination or the cluster was unavailable, another backup was running).
    pub fn is_retryable(&self) -> bool {
        match self {
            BackupRunError::NotLeader { .. } | BackupRunError::InProgress { .. } => true,
            BackupRunError::Snapshot { .. } => false,
            BackupRunError::Backup(e) => destination_failed(e),
        }
    }
}

/// Errors where the destination (or the network to it) failed, or the cluster is not ready
/// yet: retrying later can work. (The HTTP API answers 503 for these.)
pub fn destination_failed(e: &BackupError) -> bool {
    matches!(
        e,
        BackupError::OpenDestination { .. }
            | BackupError::Upload { .. }
            | BackupError::ManifestWrite { .. }
            | BackupError::List { .. }
            | BackupError::Download { .. }
            | BackupError::AlreadyExists { .. }
            | BackupError::InvalidMeta { .. }
            | BackupError::Fenced { .. }
    )
}
