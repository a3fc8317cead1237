//! The free space a restore needs on each node, and the Raft-port route that answers the leader's
//! question about it.

use std::path::{Path, PathBuf};

use crate::network::{postcard_response, FreeSpace, FREE_SPACE_PATH};

/// Free space a restore leaves besides what it needs.
const SPACE_MARGIN: u64 = 64 << 20;

/// What a restore of `size` bytes needs free on each node: the staging file, and the log's
/// copy of the chunks (in its segment files) until the purge after the commit.
pub(crate) fn space_needed(size: u64) -> u64 {
    size.saturating_mul(2).saturating_add(SPACE_MARGIN)
}

/// Bytes available to this process on the file system holding `dir`; `None` when unknown.
/// `RAFTLITE_TEST_FREE_SPACE_BYTES` replaces the answer: tests use it to play a full disk.
pub(crate) fn free_space(dir: &Path) -> Option<u64> {
    if let Some(free) = std::env::var("RAFTLITE_TEST_FREE_SPACE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Some(free);
    }
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Answers a leader's [`FREE_SPACE_PATH`] question with the free space of `data_dir`.
pub(crate) fn free_space_router(data_dir: PathBuf) -> axum::Router {
    axum::Router::new().route(
        FREE_SPACE_PATH,
        axum::routing::post(move || {
            let data_dir = data_dir.clone();
            async move {
                let dir = data_dir.display().to_string();
                let free = tokio::task::spawn_blocking(move || free_space(&data_dir))
                    .await
                    .unwrap_or(None);
                postcard_response(&FreeSpace { dir, free })
            }
        }),
    )
}
