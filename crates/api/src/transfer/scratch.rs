//! Scratch files under `<data-dir>/snapshots/` and the chunk sizes `/db/backup` and `/db/load`
//! stream in.

use std::path::{Path, PathBuf};

use raftlite_consensus::node::DataDirLayout;
use raftlite_consensus::state_machine::SnapshotDir;

use crate::error::ApiError;
use crate::state::ApiState;

/// Chunks a backup is streamed in, and how many may wait unsent (bounds memory per download).
pub(super) const CHUNK_BYTES: usize = 256 * 1024;
pub(super) const CHUNKS_IN_FLIGHT: usize = 4;

/// A file under `<data-dir>/snapshots/` removed when dropped (start-up removes leftovers).
pub(super) struct Scratch(PathBuf);

impl Scratch {
    pub(super) fn new(snapshots: &SnapshotDir, purpose: &str) -> Scratch {
        Scratch(snapshots.scratch_path(purpose))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // An uploaded file in WAL mode gets `-wal`/`-shm` companions when SQLite checks it.
        let mut companions = Vec::with_capacity(3);
        companions.push(self.0.clone());
        for suffix in ["-wal", "-shm"] {
            let mut name = self.0.clone().into_os_string();
            name.push(suffix);
            companions.push(PathBuf::from(name));
        }
        for path in companions {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "could not remove a scratch file")
                }
            }
        }
    }
}

pub(super) fn snapshot_dir(state: &ApiState) -> Result<SnapshotDir, ApiError> {
    let path = DataDirLayout::new(&state.data_dir).snapshots;
    std::fs::create_dir_all(&path).map_err(|e| {
        ApiError::Internal(format!(
            "cannot create the snapshots directory {}: {e}",
            path.display()
        ))
    })?;
    Ok(SnapshotDir::read_only(&path))
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("background task failed: {e}")))?
}
