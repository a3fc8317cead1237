//! Restoring the whole cluster from a SQLite file, online, through the Raft log.
//!
//! The leader checks the file (`PRAGMA integrity_check`), then proposes it as a run of
//! [`Command::RestoreChunk`] entries of [`RESTORE_CHUNK_BYTES`] (a few in flight), which every
//! node writes into a staging file and records in its database (table `_raftlite_restore`;
//! snapshots carry the bytes to a node that catches up by snapshot), and finally one small
//! [`Command::RestoreCommit`] carrying the size and sha256. Applying the commit, each node
//! checks the staging file and swaps it in atomically on a new timeline, at the same log index
//! everywhere. Until the commit
//! is applied every node serves the old data; afterwards the new. A leader that fails midway
//! leaves chunks no commit will ever use: the next restore drops them (or an abort does).
//! After the commit (or an abort) every node takes a snapshot and purges its log, so the chunks
//! do not linger.
//!
//! Memory stays bounded whatever the file size: the chunks in flight, one read buffer.

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::impls::ProgressResponder;
use raftlite_store::{StoreError, TimelineRecord};

use crate::free_space::{free_space, space_needed};
use crate::network::FreeSpace;
use crate::node::{unix_ms, RaftNode};
pub use crate::restore_progress::RestoreProgress;
use crate::types::*;

/// Bytes per chunk entry: large enough to keep per-entry overhead small, small enough that a
/// batch of entries to a lagging follower stays well inside one AppendEntries deadline.
pub const RESTORE_CHUNK_BYTES: usize = 1 << 20;
/// Chunk entries proposed before the first of them must be committed. 8 rather than 4: the 256
/// MiB restore bench went from about 5.5 s to about 3.6 s of cluster time, 16 gained nothing
/// more and raised the peak RSS by about 50 MiB.
const CHUNKS_IN_FLIGHT: usize = 8;
/// How long one entry of a restore may take to commit before the restore gives up.
const ENTRY_COMMIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the leader waits for a peer to say how much disk it has free.
const PEER_SPACE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a successful restore did.
#[derive(Clone, Debug)]
pub struct RestoreOutcome {
    /// Log index of the commit: the index at which every node switched to the new data.
    pub index: u64,
    /// The new timeline, as recorded in the history.
    pub timeline: TimelineRecord,
    pub size: u64,
    pub sha256: String,
    pub restore_id: String,
    pub duration: Duration,
}

/// Why a restore did not happen, and what state the cluster is in.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<(NodeId, NodeAddr)> },
    /// Another restore is running on this leader: nothing was changed.
    #[error(
        "another restore is in progress on this cluster; wait for it to finish (its outcome \
         shows in /status as a new timeline) and retry if still needed; nothing was changed"
    )]
    Busy,
    /// A node (the leader, or a peer that answered) lacks the disk space the restore needs:
    /// nothing changed anywhere.
    #[error(
        "{node} has {free} bytes free in {dir}, and restoring {size} bytes needs about {need} \
         (a staging copy plus the Raft log's copy); free some space there, or grow the \
         volume, and retry; nothing was changed"
    )]
    NoSpace {
        /// Which node: "this node (the leader)" or "node N (api ADDR)".
        node: String,
        dir: String,
        free: u64,
        size: u64,
        need: u64,
    },
    /// The file was refused before anything was proposed: nothing changed anywhere.
    #[error("{reason}; nothing was changed, the cluster keeps serving its current data")]
    Invalid { reason: String },
    #[error("cannot read {}: {source}; nothing was changed", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The restore stopped before its commit was proposed: every node keeps the old data.
    #[error(
        "the restore stopped before it took effect ({reason}); every node keeps its old data \
         (all-old); retry when the cluster is healthy"
    )]
    Failed { reason: String },
    /// Every node applied the commit and refused the assembled file: all-old.
    #[error(
        "the cluster refused the restored file ({reason}); every node keeps its old data \
         (all-old)"
    )]
    Refused { reason: String },
    /// The commit was proposed but its result is unknown (the leader changed or stopped
    /// answering): it takes effect on every node or on none. `timeline_id` tells which:
    /// `/status` shows it as the current timeline once it took effect.
    #[error(
        "the outcome of the restore is unknown ({reason}): it took effect on every node or on \
         none; check /status: the current timeline is {timeline_id} if it took effect \
         (all-new), otherwise the old one (all-old)"
    )]
    Unknown { reason: String, timeline_id: String },
}

/// Clears the node's [`RestoreProgress`] when the restore ends, however it ends.
struct ProgressGuard<'a>(&'a RaftNode);

impl ProgressGuard<'_> {
    fn update(&self, change: impl FnOnce(&mut RestoreProgress)) {
        if let Some(p) = self
            .0
            .inner_restore_progress()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            change(p);
        }
    }
}

impl Drop for ProgressGuard<'_> {
    fn drop(&mut self) {
        *self
            .0
            .inner_restore_progress()
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// What the restore is about, for the timeline history.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    /// The SQLite file to restore; never modified.
    pub path: PathBuf,
    /// Recorded as the new timeline's `reason`, e.g. `restore from backup c1/2025...`.
    pub reason: String,
    /// The new timeline's id; random when `None`. A client that chooses it can tell from
    /// `/status` whether a restore whose answer it lost took effect.
    pub timeline_id: Option<String>,
    /// The file's sha256 (lowercase hex) when the caller computed it while writing the file
    /// (an upload): the restore then does not read the file again for it.
    pub sha256: Option<String>,
    /// Whether `path` is a scratch copy the restore may take over (an upload): the leader then
    /// hard-links it as its own staging file (see `Store::seed_restore_staging`), which the
    /// commit turns into the database. Never set it for a file someone else owns.
    pub disposable: bool,
}

/// Size and sha256 (hex) of a file, read in 1 MiB blocks.
fn size_and_sha256(path: &Path) -> std::io::Result<(u64, String)> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, raftlite_store::hex::encode(&hasher.finalize())))
}

/// Refuses a restore of `size` bytes when `free` (if known) is short of [`space_needed`] on
/// `node`.
fn check_space(node: &str, dir: &Path, free: Option<u64>, size: u64) -> Result<(), RestoreError> {
    let need = space_needed(size);
    match free {
        Some(free) if free < need => Err(RestoreError::NoSpace {
            node: node.to_string(),
            dir: dir.display().to_string(),
            free,
            size,
            need,
        }),
        _ => Ok(()),
    }
}

/// Reads up to `len` bytes at `offset`.
fn read_chunk(path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

fn write_error_reason(e: &RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> String {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => format!(
            "leadership moved to {}",
            f.leader_id
                .map(|id| format!("node {id}"))
                .unwrap_or_else(|| "an unknown node".into())
        ),
        other => other.to_string(),
    }
}

impl RaftNode {
    /// Asks every other member for its free disk and refuses a restore of `size` bytes that
    /// one of them has no room for, before anything changes. A member that does not answer
    /// in time (down, or too old to know the question) is only logged: the restore reaches it
    /// later as a snapshot, and a restore must not wait for a node it does not need.
    async fn check_peers_space(&self, size: u64) -> Result<(), RestoreError> {
        let peers: Vec<(NodeId, NodeAddr)> = self
            .metrics()
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.id())
            .map(|(id, addr)| (*id, addr.clone()))
            .collect();
        let asks = peers.iter().map(|(id, addr)| async move {
            let answer = self
                .network()
                .free_space(&addr.raft_addr, PEER_SPACE_TIMEOUT)
                .await;
            (*id, addr, answer)
        });
        for (id, addr, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(FreeSpace { dir, free }) => check_space(
                    &format!("node {id} (api {})", addr.api_addr),
                    Path::new(&dir),
                    free,
                    size,
                )?,
                Err(e) => tracing::warn!(
                    node = id,
                    error = %e,
                    "restore: node {id} did not say how much disk it has free; it will need \
                     about {} bytes free to take the restore",
                    space_needed(size)
                ),
            }
        }
        Ok(())
    }

    /// The restore this node runs as leader, if any.
    pub fn restore_progress(&self) -> Option<RestoreProgress> {
        self.inner_restore_progress()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Restores the whole cluster from the SQLite file `request.path` (see the module doc).
    /// `progress(bytes_done, bytes_total)` is called as chunks commit. Only the leader can
    /// restore. The file is checked first (SQLite header, `PRAGMA integrity_check`); a refusal
    /// changes nothing.
    pub async fn restore_file(
        &self,
        request: RestoreRequest,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<RestoreOutcome, RestoreError> {
        let started = Instant::now();
        if !self.is_leader() {
            return Err(RestoreError::NotLeader {
                leader: self.leader(),
            });
        }
        // Waits out a moment's cleanup of abandoned chunks; another restore takes longer.
        let Ok(_one_at_a_time) =
            tokio::time::timeout(Duration::from_secs(2), self.inner_restoring().lock()).await
        else {
            return Err(RestoreError::Busy);
        };
        let timeline_id = request
            .timeline_id
            .clone()
            .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
        *self
            .inner_restore_progress()
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(RestoreProgress {
            timeline_id: timeline_id.clone(),
            phase: "checking",
            bytes_sent: 0,
            bytes_total: 0,
            started_at_unix_ms: unix_ms(),
        });
        let tracker = ProgressGuard(self);
        if let Some(id) = &request.timeline_id {
            let store = self.store();
            let history = tokio::task::spawn_blocking(move || store.meta())
                .await
                .map_err(|e| RestoreError::Failed {
                    reason: format!("the reading thread failed: {e}"),
                })?
                .map_err(|e| RestoreError::Failed {
                    reason: format!("cannot read the timeline history: {e}"),
                })?
                .timeline_history;
            if history.iter().any(|t| &t.id == id) {
                return Err(RestoreError::Invalid {
                    reason: format!(
                        "timeline id {id} is already in this cluster's history; a restore \
                         starts a new timeline, so choose a new id (or none)"
                    ),
                });
            }
        }
        let path = request.path.clone();
        let known_sha256 = request.sha256.clone();
        let (size, sha256) = tokio::task::spawn_blocking(move || {
            match raftlite_store::validate_database_fully(&path) {
                Ok(_) => {}
                Err(StoreError::NotADatabase { detail, .. }) => {
                    return Err(RestoreError::Invalid {
                        reason: format!("the file is not a usable SQLite database ({detail})"),
                    })
                }
                Err(StoreError::Io { source, .. }) => {
                    return Err(RestoreError::Read {
                        path: path.clone(),
                        source,
                    })
                }
                Err(e) => {
                    return Err(RestoreError::Invalid {
                        reason: format!("the file cannot be checked: {e}"),
                    })
                }
            }
            match known_sha256 {
                Some(sha256) => std::fs::metadata(&path).map(|m| (m.len(), sha256)),
                None => size_and_sha256(&path),
            }
            .map_err(|source| RestoreError::Read {
                path: path.clone(),
                source,
            })
        })
        .await
        .map_err(|e| RestoreError::Failed {
            reason: format!("the checking thread failed: {e}"),
        })??;

        let data_dir = self.data_dir();
        check_space(
            "this node (the leader)",
            &data_dir,
            free_space(&data_dir),
            size,
        )?;
        self.check_peers_space(size).await?;
        let restore_id = format!("{:032x}", rand::random::<u128>());
        tracker.update(|p| {
            p.phase = "sending";
            p.bytes_total = size;
        });
        tracing::info!(
            restore = %restore_id,
            file = %request.path.display(),
            size,
            %sha256,
            "restore: the file passed its checks; sending it through the log"
        );

        if request.disposable {
            let (store, path, id) = (self.store(), request.path.clone(), restore_id.clone());
            let _ =
                tokio::task::spawn_blocking(move || store.seed_restore_staging(&id, &path)).await;
        }
        let progress = |done: u64, total: u64| {
            tracker.update(|p| p.bytes_sent = done);
            progress(done, total);
        };
        if let Err(reason) = self
            .send_chunks(&request.path, &restore_id, size, &progress)
            .await
        {
            self.abort_restore(&restore_id).await;
            return Err(RestoreError::Failed { reason });
        }

        let timeline = TimelineRecord {
            id: timeline_id.clone(),
            counter: 0,
            parent: None,
            parent_index: None,
            reason: request.reason.clone(),
            at_unix_ms: unix_ms(),
        };
        tracker.update(|p| p.phase = "committing");
        let commit = Command::RestoreCommit {
            restore_id: restore_id.clone(),
            size,
            sha256: sha256.clone(),
            timeline,
        };
        let written = match tokio::time::timeout(
            ENTRY_COMMIT_TIMEOUT,
            self.raft().client_write(commit),
        )
        .await
        {
            Ok(Ok(written)) => written,
            // Whether the entry was appended before leadership moved, openraft cannot say.
            Ok(Err(e)) => {
                return Err(RestoreError::Unknown {
                    reason: write_error_reason(&e),
                    timeline_id,
                })
            }
            Err(_) => {
                return Err(RestoreError::Unknown {
                    reason: format!("the commit was not confirmed within {ENTRY_COMMIT_TIMEOUT:?}"),
                    timeline_id,
                })
            }
        };
        let index = written.log_id.index;
        let timeline = match written.data {
            CommandResponse::Restore(Ok(timeline)) => timeline,
            CommandResponse::Restore(Err(reason)) => return Err(RestoreError::Refused { reason }),
            other => {
                return Err(RestoreError::Unknown {
                    reason: format!("unexpected answer to the commit: {other:?}"),
                    timeline_id,
                })
            }
        };
        let outcome = RestoreOutcome {
            index,
            timeline,
            size,
            sha256,
            restore_id,
            duration: started.elapsed(),
        };
        tracing::info!(
            index,
            timeline = %outcome.timeline.id,
            size,
            duration_secs = outcome.duration.as_secs_f64(),
            "restore took effect on the whole cluster"
        );
        Ok(outcome)
    }

    /// Proposes the file's chunks, keeping [`CHUNKS_IN_FLIGHT`] proposals open.
    async fn send_chunks(
        &self,
        path: &Path,
        restore_id: &str,
        size: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), String> {
        let mut in_flight = VecDeque::new();
        let mut offset = 0u64;
        let mut done = 0u64;
        progress(0, size);
        loop {
            while in_flight.len() < CHUNKS_IN_FLIGHT && offset < size {
                let p = path.to_path_buf();
                let at = offset;
                let data =
                    tokio::task::spawn_blocking(move || read_chunk(&p, at, RESTORE_CHUNK_BYTES))
                        .await
                        .map_err(|e| format!("the reading thread failed: {e}"))?
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if data.is_empty() {
                    return Err(format!(
                        "{} is shorter than when it was checked",
                        path.display()
                    ));
                }
                let len = data.len() as u64;
                let command = Command::RestoreChunk {
                    restore_id: restore_id.to_string(),
                    offset,
                    data,
                };
                // Submitted one after the other, so the log holds the chunks in file order
                // (every node can then hash them as they are applied); only the waits overlap.
                let (responder, answer) = ProgressResponder::complete_only();
                self.raft()
                    .client_write_ff(command, Some(responder))
                    .await
                    .map_err(|e| format!("the Raft node stopped: {e}"))?;
                in_flight.push_back((len, Instant::now() + ENTRY_COMMIT_TIMEOUT, answer));
                offset += len;
            }
            let Some((len, deadline, answer)) = in_flight.pop_front() else {
                break;
            };
            match tokio::time::timeout_at(deadline.into(), answer).await {
                Ok(Ok(Ok(_))) => {
                    done += len;
                    progress(done, size);
                }
                Ok(Ok(Err(e))) => return Err(write_error_reason(&RaftError::APIError(e))),
                Ok(Err(_)) => return Err("the Raft node dropped a chunk's answer".to_string()),
                Err(_) => {
                    return Err(format!(
                        "a chunk was not committed within {ENTRY_COMMIT_TIMEOUT:?} (no quorum?)"
                    ))
                }
            }
        }
        Ok(())
    }

    /// Best effort: tells every node to drop the chunks of an abandoned restore (the next
    /// restore drops them anyway).
    async fn abort_restore(&self, restore_id: &str) {
        let command = Command::RestoreAbort {
            restore_id: restore_id.to_string(),
        };
        match tokio::time::timeout(Duration::from_secs(10), self.raft().client_write(command)).await
        {
            Ok(Ok(_)) => tracing::info!(restore = %restore_id, "abandoned restore dropped"),
            _ => tracing::warn!(
                restore = %restore_id,
                "could not drop the chunks of the abandoned restore now; the next restore drops them"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_needs_room_for_the_staging_file_and_the_logs_copy() {
        let dir = Path::new("/data");
        let gib = 1u64 << 30;
        let node = "node 2 (api 10.0.0.2:4001)";
        assert!(check_space(node, dir, Some(3 * gib), gib).is_ok());
        assert!(check_space(node, dir, None, gib).is_ok());
        let refused = check_space(node, dir, Some(2 * gib), gib).unwrap_err();
        let text = refused.to_string();
        assert!(
            text.contains("nothing was changed") && text.contains("/data") && text.contains(node),
            "{text}"
        );
        // The free space of a real directory is known.
        assert!(free_space(Path::new(".")).is_some());
    }
}
