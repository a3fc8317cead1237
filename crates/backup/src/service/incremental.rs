//! The leader's side of incremental backups: whether the next backup can be an incremental,
//! the page frames of one, and the page hashes kept for the next.
//!
//! An incremental is taken on top of the newest backup in the destination only when this node
//! took that backup and still holds its page hashes (`<data-dir>/backup-pages/`), on the same
//! timeline, with fewer than `--backup-full-every` links in the chain so far and the chain's
//! changed pages under half the database. Anything else (a new leader, a restart that lost the
//! hashes, a restore, a schedule or request after another node's backup) takes a full backup,
//! which starts a new chain. The hashes are written after the manifest: a crash between the two
//! leaves hashes of an older backup, which no longer match the newest, so the next one is full.

use std::fs::File;
use std::path::PathBuf;

use raftlite_consensus::state_machine::SnapshotDir;
use raftlite_store::MetaState;

use super::pacing::Scratch;
use super::{BackupRunError, BackupService};
use crate::create::read_sqlite_header;
use crate::incremental::{
    load_page_state, save_page_state, write_page_frames, PageDigests, PageFramesHeader,
    PageStateRecord,
};
use crate::{list_backups, BackupId, Created, IncrementalUpload, Manifest, ParentRef};

/// Prefix of the page-frame scratch files under `<data-dir>/snapshots/`.
const FRAMES_PURPOSE: &str = "incremental";

/// The backup the next one can be an incremental on top of, with its page hashes.
pub(super) struct ParentCandidate {
    id: BackupId,
    manifest: Manifest,
    pages: PageDigests,
}

/// An incremental's page frames, written to a scratch file (removed when this is dropped).
pub(super) struct PreparedFrames {
    pub(super) upload: IncrementalUpload,
    _scratch: Scratch,
}

impl BackupService {
    /// Where this node keeps the page hashes of the newest backup it took to this destination.
    pub(crate) fn page_state_path(&self) -> PathBuf {
        let data_dir = self
            .snapshots
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        let name = crate::manifest::sha256_hex(&self.label);
        data_dir
            .join("backup-pages")
            .join(format!("{}.bin", &name[..16]))
    }

    /// The parent for an incremental now, or `None` (with the reason logged) for a full.
    pub(super) async fn incremental_parent(&self, meta: &MetaState) -> Option<ParentCandidate> {
        if self.full_every <= 1 {
            return None;
        }
        let full = |why: &str| {
            tracing::info!(destination = %self.label, "this backup is a full one: {why}");
            None
        };
        let path = self.page_state_path();
        let state = match tokio::task::spawn_blocking(move || load_page_state(&path)).await {
            Ok(Ok(Some(state))) => state,
            Ok(Ok(None)) => return full("this node holds no page hashes of an earlier backup"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the page hashes of the last backup are unreadable; taking a full backup");
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the page hashes failed; taking a full backup");
                return None;
            }
        };
        let (record, pages) = state;
        let (Some(first), Some(timeline)) = (meta.timeline_history.first(), meta.timeline()) else {
            return None;
        };
        let listing = match list_backups(&self.dest).await {
            Ok(listing) => listing,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the destination to chain an incremental; taking a full backup");
                return None;
            }
        };
        let Some((newest_id, newest)) = listing.newest(&first.id) else {
            return full("the destination holds no backup of this cluster");
        };
        if *newest_id != record.backup_id {
            return full(&format!(
                "the newest backup, {newest_id}, is not the last one this node took ({})",
                record.backup_id
            ));
        }
        if newest.pages_digest.as_deref() != Some(record.pages_digest.as_str()) {
            return full("the newest backup's page digest differs from the one this node kept");
        }
        if newest.timeline.id != timeline.id {
            return full("the cluster is on a new timeline since the newest backup");
        }
        if newest.chain_depth.saturating_add(1) >= self.full_every {
            return full(&format!(
                "every {} backups one is full (--backup-full-every)",
                self.full_every
            ));
        }
        Some(ParentCandidate {
            id: newest_id.clone(),
            manifest: newest.clone(),
            pages,
        })
    }

    /// Hashes the pinned database `file`, compares with `parent` and writes the frames of the
    /// changed pages to a scratch file. `Ok(None)` when a full backup is due instead: the
    /// chain's changes would pass half the database, or the page size changed.
    pub(super) async fn prepare_frames(
        &self,
        file: File,
        path: PathBuf,
        parent: ParentCandidate,
    ) -> Result<Option<PreparedFrames>, BackupRunError> {
        let snapshot_error = |reason: String| BackupRunError::Snapshot {
            dest: self.label.clone(),
            reason,
        };
        let scratch = Scratch(SnapshotDir::read_only(&self.snapshots).scratch_path(FRAMES_PURPOSE));
        let frames = scratch.0.clone();
        let snapshots = self.snapshots.clone();
        let label = self.label.clone();
        let prepared = tokio::task::spawn_blocking(move || -> Result<Option<IncrementalUpload>, String> {
            let info = read_sqlite_header(&file, &path).map_err(|e| e.to_string())?;
            if info.page_size != parent.pages.page_size() {
                tracing::info!(destination = %label, "this backup is a full one: the page size changed");
                return Ok(None);
            }
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let hashing = std::time::Instant::now();
            let parent_pages_digest = parent.pages.digest();
            // The parent's hashes become this backup's in place (one list in memory).
            let mut pages = parent.pages;
            let changed = pages
                .update_from_file(&file, info.page_count, threads)
                .map_err(|e| format!("cannot read {} to hash its pages: {e}", path.display()))?;
            let hash_secs = hashing.elapsed().as_secs_f64();
            let delta = changed.len() as u64 * u64::from(info.page_size);
            let chain_delta_bytes = parent.manifest.chain_delta_bytes.saturating_add(delta);
            let db_bytes = info.page_count * u64::from(info.page_size);
            if chain_delta_bytes > db_bytes / 2 {
                tracing::info!(destination = %label, chain_delta_bytes, db_bytes, "this backup is a full one: the chain's changes pass half the database");
                return Ok(None);
            }
            let header = PageFramesHeader {
                page_size: info.page_size,
                db_pages: info.page_count,
                parent_id: parent.id.clone(),
                parent_pages_digest,
                pages_digest: pages.digest(),
                frames: changed.len() as u64,
            };
            std::fs::create_dir_all(&snapshots).map_err(|e| {
                format!("cannot create the snapshots directory {}: {e}", snapshots.display())
            })?;
            let out = File::create(&frames)
                .map_err(|e| format!("cannot create {}: {e}", frames.display()))?;
            let writing = std::time::Instant::now();
            write_page_frames(&file, &header, &changed, out)
                .map_err(|e| format!("cannot write the page frames to {}: {e}", frames.display()))?;
            tracing::info!(
                destination = %label,
                pages = info.page_count,
                changed = changed.len(),
                hash_secs,
                frames_secs = writing.elapsed().as_secs_f64(),
                "incremental backup: {} of {} pages changed since {}",
                changed.len(),
                info.page_count,
                parent.id
            );
            Ok(Some(IncrementalUpload {
                frames,
                parent: ParentRef {
                    id: parent.id,
                    pages_digest: header.parent_pages_digest,
                },
                pages,
                chain_depth: parent.manifest.chain_depth.saturating_add(1),
                chain_delta_bytes,
            }))
        })
        .await
        .map_err(|e| snapshot_error(format!("the page hashing thread failed: {e}")))?
        .map_err(snapshot_error)?;
        Ok(prepared.map(|upload| PreparedFrames {
            upload,
            _scratch: scratch,
        }))
    }

    /// Keeps the page hashes of the backup just written for the next incremental (or forgets
    /// them when there are none), and hands back its manifest. A failure only makes the next
    /// backup a full one.
    pub(super) async fn remember_pages(&self, created: Created) -> Manifest {
        let Created { manifest, pages } = created;
        let record = match (pages, manifest.id(), &manifest.pages_digest) {
            (Some(pages), Ok(backup_id), Some(digest)) => Some((
                PageStateRecord {
                    backup_id,
                    pages_digest: digest.clone(),
                    page_size: pages.page_size(),
                    page_count: pages.page_count(),
                },
                pages,
            )),
            _ => None,
        };
        self.store_page_state(record).await;
        manifest
    }

    /// After a backup that was copied rather than hashed: the next one starts a new chain.
    pub(super) async fn forget_pages(&self) {
        self.store_page_state(None).await;
    }

    async fn store_page_state(&self, state: Option<(PageStateRecord, PageDigests)>) {
        let path = self.page_state_path();
        let saved = tokio::task::spawn_blocking(move || match state {
            Some((record, pages)) => save_page_state(&path, &record, &pages),
            None => forget(&path),
        })
        .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot keep the page hashes of this backup; the next backup will be a full one")
            }
            Err(e) => {
                tracing::warn!(error = %e, "keeping the page hashes failed; the next backup will be a full one")
            }
        }
    }
}

fn forget(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
