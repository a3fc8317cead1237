//! One backup run on the leader: the one-at-a-time guard and the leader check, then for a
//! schedule slot the decision from the destination (already done, unchanged: skip), then the
//! pin (or copy) of a consistent file, the upload, the fence before the manifest, the record
//! (metrics, log, `/status`) and retention.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftlite_consensus::node::unix_ms;
use raftlite_consensus::state_machine::SnapshotDir;
use raftlite_store::MetaState;
use serde_json::json;

use super::pacing::{spill_rest, Scratch, YieldToWrites};
use super::{BackupCluster, BackupRunError, BackupService, SlotOutcome};
use crate::archive::{
    archive_needs, kept_backups, prune_archive, ArchivePruneReport, DEFAULT_ARCHIVE_KEEP_WITHIN,
};
use crate::retention::prune_keeping;
use crate::{
    create_backup_fenced, list_backups, BackupError, BackupId, BackupMeta, Manifest, PruneReport,
};

/// How long a requested backup waits for a base backup of the log archive to finish.
const BASE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Prefix of the scratch file names under `<data-dir>/snapshots/`.
const SCRATCH_PURPOSE: &str = "backups";

impl BackupService {
    /// Takes one backup on request: checks that `node` leads, copies the database
    /// consistently into a scratch file, uploads it and returns the manifest written, then
    /// applies retention. Records metrics, logs and the outcome for `/status`. Refuses at
    /// once (`InProgress`) while another backup runs on this node, and (`NotLeader`) on a
    /// follower; neither counts as a failed backup.
    pub async fn run_once(&self, node: &impl BackupCluster) -> Result<Manifest, BackupRunError> {
        let _running = match self.running.try_lock() {
            Ok(guard) => guard,
            // The archive's own base backup (it runs by itself when a timeline's archive
            // starts) must not turn an operator's request away: wait for it, boundedly.
            Err(_) if self.base_running.load(std::sync::atomic::Ordering::SeqCst) => {
                match tokio::time::timeout(BASE_WAIT, self.running.lock()).await {
                    Ok(guard) => guard,
                    Err(_) => {
                        return Err(BackupRunError::InProgress {
                            node: node.node_id(),
                            dest: self.label.clone(),
                        })
                    }
                }
            }
            Err(_) => {
                return Err(BackupRunError::InProgress {
                    node: node.node_id(),
                    dest: self.label.clone(),
                })
            }
        };
        ensure_leader(node)?;
        let manifest = self.attempt(node, None).await?;
        self.apply_retention(&manifest).await;
        Ok(manifest)
    }

    /// Takes a base backup for the log archive unless the destination already holds a backup
    /// of the cluster's current timeline at or after log index `at_least` (one the schedule, a
    /// request or an earlier call took meanwhile): `None` then. Errors as
    /// [`BackupService::run_once`].
    pub async fn run_base(
        &self,
        node: &impl BackupCluster,
        at_least: u64,
    ) -> Result<Option<Manifest>, BackupRunError> {
        let Ok(_running) = self.running.try_lock() else {
            return Err(BackupRunError::InProgress {
                node: node.node_id(),
                dest: self.label.clone(),
            });
        };
        struct BaseRunning<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for BaseRunning<'_> {
            fn drop(&mut self) {
                self.0.store(false, std::sync::atomic::Ordering::SeqCst);
            }
        }
        self.base_running
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _base = BaseRunning(&self.base_running);
        ensure_leader(node)?;
        let meta = current_meta(node, &self.label).await?;
        if let (Some(first), Some(current)) = (meta.timeline_history.first(), meta.timeline()) {
            let list = list_backups(&self.dest)
                .await
                .map_err(BackupRunError::from)?;
            let covered = list.backups.iter().any(|(_, m)| {
                m.cluster_id == first.id && m.timeline.id == current.id && m.log_index >= at_least
            });
            if covered {
                return Ok(None);
            }
        }
        let manifest = self.attempt(node, None).await?;
        self.apply_retention(&manifest).await;
        Ok(Some(manifest))
    }

    /// Runs the schedule slot starting at `slot_unix_ms`: nothing when the destination already
    /// has a backup for it (or a later slot), a skip when its newest backup holds the same
    /// timeline and data (read from the destination, so this holds across restarts and leader
    /// changes), otherwise a backup marked with the slot and this leader's term, then
    /// retention. Errors as [`BackupService::run_once`].
    pub async fn run_slot(
        &self,
        node: &impl BackupCluster,
        slot_unix_ms: i64,
    ) -> Result<SlotOutcome, BackupRunError> {
        let Ok(_running) = self.running.try_lock() else {
            return Err(BackupRunError::InProgress {
                node: node.node_id(),
                dest: self.label.clone(),
            });
        };
        ensure_leader(node)?;
        let meta = current_meta(node, &self.label).await?;
        let (Some(first), Some(current)) = (meta.timeline_history.first(), meta.timeline()) else {
            return Ok(SlotOutcome::NotReady);
        };
        let cluster_id = first.id.clone();
        let list = match list_backups(&self.dest).await {
            Ok(list) => list,
            Err(e) => {
                let e = BackupRunError::from(e);
                self.failed(&e, Duration::ZERO);
                return Err(e);
            }
        };
        if let Some((id, newest)) = list.newest(&cluster_id) {
            if newest.slot_unix_ms.is_some_and(|s| s >= slot_unix_ms) {
                return Ok(SlotOutcome::AlreadyDone {
                    newest: id.to_string(),
                });
            }
            let failed_drill = self.with_record(|r| r.failed_drill_id.clone());
            if newest.timeline.id == current.id
                && newest.data_index() == meta.data_changed_index()
                && failed_drill.as_deref() != Some(id.to_string().as_str())
            {
                self.skipped(&id.to_string(), slot_unix_ms);
                return Ok(SlotOutcome::Skipped {
                    newest: id.to_string(),
                });
            }
        }
        let manifest = self.attempt(node, Some(slot_unix_ms)).await?;
        self.apply_retention(&manifest).await;
        Ok(SlotOutcome::Taken(Box::new(manifest)))
    }

    /// One backup with metrics, logs and the `/status` record; the caller holds `running`.
    async fn attempt(
        &self,
        node: &impl BackupCluster,
        slot_unix_ms: Option<i64>,
    ) -> Result<Manifest, BackupRunError> {
        let started = Instant::now();
        self.with_record(|r| r.in_progress_since_unix_ms = Some(unix_ms()));
        let result = self.take(node, slot_unix_ms).await;
        let elapsed = started.elapsed();
        match &result {
            Ok(manifest) => self.succeeded(manifest, elapsed),
            Err(e) => self.failed(e, elapsed),
        }
        result
    }

    async fn take(
        &self,
        node: &impl BackupCluster,
        slot_unix_ms: Option<i64>,
    ) -> Result<Manifest, BackupRunError> {
        let snapshot_error = |reason: String| BackupRunError::Snapshot {
            dest: self.label.clone(),
            reason,
        };
        // The term is read before the copy: the fence below then proves this node led
        // throughout, from the copy to the manifest.
        let term = node.current_term();
        let store = node.store();
        // First choice: stream the database file itself, pinned unchanged by a read
        // transaction (no copy, no extra disk writes competing with the log's fsyncs).
        let pinned = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.pin_consistent_file())
                .await
                .map_err(|e| snapshot_error(format!("the pinning thread failed: {e}")))?
                .map_err(|e| snapshot_error(e.to_string()))?
        };
        if let Some(pinned) = pinned {
            let mut backup_meta = BackupMeta::of_database(node.node_id(), &pinned.meta)?;
            backup_meta.leader_term = Some(term);
            backup_meta.slot_unix_ms = slot_unix_ms;
            if let Some(parent) = self.incremental_parent(&pinned.meta).await {
                let file = pinned
                    .file
                    .try_clone()
                    .map_err(|e| snapshot_error(format!("cannot reopen the database file: {e}")))?;
                let path = store.path().to_path_buf();
                if let Some(frames) = self.prepare_frames(file, path, parent).await? {
                    // The changed pages are in the scratch file: writes may checkpoint again.
                    drop(pinned);
                    let created = crate::create_incremental(
                        frames.upload,
                        backup_meta,
                        &self.dest,
                        &self.options,
                        self.fence(node, term),
                    )
                    .await?;
                    return Ok(self.remember_pages(created).await);
                }
            }
            let file = pinned
                .file
                .try_clone()
                .map_err(|e| snapshot_error(format!("cannot reopen the database file: {e}")))?;
            let state = pinned.meta.clone();
            // Shared with the spill, which releases it early; otherwise it goes at the end.
            let pin = Arc::new(Mutex::new(Some(pinned)));
            let scratch =
                Scratch(SnapshotDir::read_only(&self.snapshots).scratch_path(SCRATCH_PURPOSE));
            let spill = crate::Spill {
                requested: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                take_rest: {
                    let runtime = tokio::runtime::Handle::current();
                    let (snapshots, scratch, pin) =
                        (self.snapshots.clone(), scratch.0.clone(), pin.clone());
                    Box::new(move |source: &mut std::fs::File, rest: u64| {
                        spill_rest(runtime, source, rest, snapshots, scratch, pin)
                    })
                },
            };
            let pace = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let yielding = YieldToWrites::start(
                node,
                pace.clone(),
                self.busy_pace_bytes_per_sec,
                Some((self.max_wal_bytes, spill.requested.clone())),
            );
            let source = crate::OpenSource {
                file,
                path: store.path().to_path_buf(),
                state,
                pace: Some(pace),
                spill: Some(spill),
            };
            let created = crate::create_full_open(
                source,
                backup_meta,
                &self.dest,
                &self.options,
                self.fence(node, term),
            )
            .await?;
            drop(yielding);
            drop(pin);
            drop(scratch);
            return Ok(self.remember_pages(created).await);
        }
        tracing::info!("the database file could not be pinned (a long query holds an older snapshot); copying it for the backup instead");
        let snapshots = self.snapshots.clone();
        // The guard lives here, so the scratch file goes whatever happens below (an error, a
        // panic in the blocking task, or this future being dropped).
        let scratch = Scratch(SnapshotDir::read_only(&snapshots).scratch_path(SCRATCH_PURPOSE));
        let path = scratch.0.clone();
        let meta = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&snapshots).map_err(|e| {
                format!(
                    "cannot create the snapshots directory {}: {e}",
                    snapshots.display()
                )
            })?;
            store.snapshot_to(&path).map_err(|e| e.to_string())?;
            raftlite_store::probe(&path).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| snapshot_error(format!("the copying thread failed: {e}")))?
        .map_err(snapshot_error)?
        .ok_or_else(|| snapshot_error("the copy vanished before it could be read".into()))?;
        let mut backup_meta = BackupMeta::of_database(node.node_id(), &meta)?;
        backup_meta.leader_term = Some(term);
        backup_meta.slot_unix_ms = slot_unix_ms;
        let manifest = create_backup_fenced(
            &scratch.0,
            backup_meta,
            &self.dest,
            &self.options,
            self.fence(node, term),
        )
        .await?;
        drop(scratch);
        // Copied, not hashed: the next backup starts a new chain.
        self.forget_pages().await;
        Ok(manifest)
    }

    /// Awaited after the upload, before the manifest: proves with a quorum that `node` still
    /// leads in `term`, so a deposed leader never publishes a backup.
    fn fence<'a, C: BackupCluster>(
        &self,
        node: &'a C,
        term: u64,
    ) -> impl std::future::Future<Output = Result<(), String>> + 'a {
        async move {
            node.ensure_linearizable().await.map_err(|e| {
                format!(
                    "node {} could not confirm with a quorum that it still leads: {e}",
                    node.node_id()
                )
            })?;
            let now_term = node.current_term();
            if now_term != term || !node.is_leader() {
                return Err(format!(
                    "node {} led in term {term} when the backup started but the cluster is now \
                     in term {now_term}",
                    node.node_id()
                ));
            }
            Ok(())
        }
    }

    /// Retention after a backup: deletes what no rule keeps (never `latest`, which is the
    /// newest backup), except the base backups the log archive's retained window needs; then,
    /// with `archive_keep_within`, prunes the archive to what the kept backups and the window
    /// need. A failure is logged and shown, never fails the backup.
    async fn apply_retention(&self, latest: &Manifest) {
        if self.retention.is_empty() && self.archive_keep_within.is_none() {
            return;
        }
        let dest = self.label.clone();
        let now = unix_ms();
        let entry = match self.prune_all(&latest.cluster_id, now).await {
            Ok((report, archive)) => {
                let removed = report.deleted.len() + report.cleaned.len();
                metrics::counter!("raftlite_backup_pruned_total", "destination" => dest.clone())
                    .increment(report.deleted.len() as u64);
                if removed > 0 || !report.failed.is_empty() {
                    tracing::info!(
                        destination = %dest,
                        deleted = report.deleted.len(),
                        cleaned = report.cleaned.len(),
                        failed = report.failed.len(),
                        kept = report.kept.len(),
                        policy = %self.retention.describe(),
                        "retention applied"
                    );
                }
                for (id, reason) in &report.failed {
                    tracing::warn!(destination = %dest, %id, %reason, "retention could not delete a backup; the next run retries");
                }
                let mut entry = json!({
                    "at_unix_ms": now,
                    "kept": report.kept.len(),
                    "deleted": report.deleted.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
                    "cleaned": report.cleaned.len(),
                    "failed": report.failed.iter().map(|(id, r)| json!({"id": id.to_string(), "reason": r})).collect::<Vec<_>>(),
                });
                if let Some(archive) = archive {
                    entry["archive"] = self.archive_pruned(&archive);
                }
                entry
            }
            Err(e) => {
                tracing::warn!(destination = %dest, error = %e, "retention failed; the next backup retries it");
                json!({"at_unix_ms": now, "error": e.to_string()})
            }
        };
        self.with_record(|r| r.last_prune = Some(entry));
    }

    /// Backup retention keeping the archive's bases, then archive retention when configured.
    /// An archive listing that fails stops the whole pass: without it, backup retention could
    /// delete a base a retained point needs.
    async fn prune_all(
        &self,
        cluster_id: &str,
        now: i64,
    ) -> Result<(PruneReport, Option<ArchivePruneReport>), BackupError> {
        let listing = list_backups(&self.dest).await?;
        let window = self
            .archive_keep_within
            .unwrap_or(DEFAULT_ARCHIVE_KEEP_WITHIN);
        let needs =
            archive_needs(&self.dest, &listing.backups, Some(cluster_id), window, now).await?;
        let needs: BTreeSet<BackupId> = needs.into_keys().collect();
        let report = prune_keeping(
            &self.dest,
            &listing,
            Some(cluster_id),
            &self.retention,
            now,
            &needs,
            false,
        )
        .await?;
        let Some(keep_within) = self.archive_keep_within else {
            return Ok((report, None));
        };
        if !report.failed.is_empty() {
            // Sets whose deletion failed may have lost their manifest: not bases any more.
            tracing::info!(
                "archive retention waits for the next run: some backups could not be deleted"
            );
            return Ok((report, None));
        }
        let kept = kept_backups(
            &listing.backups,
            report.kept.iter().map(|(id, _)| id.clone()),
        );
        let archive = prune_archive(&self.dest, cluster_id, keep_within, now, &kept, false).await?;
        Ok((report, Some(archive)))
    }

    /// Logs and summarizes (for `/status`) one archive retention pass.
    fn archive_pruned(&self, archive: &ArchivePruneReport) -> serde_json::Value {
        let dest = &self.label;
        let deleted = archive.deleted_count();
        if deleted > 0 {
            tracing::info!(
                destination = %dest,
                deleted,
                window_start = %crate::archive::rfc3339_utc(archive.window_start_unix_ms),
                "archive retention applied"
            );
        }
        for (timeline, reason) in archive.failures() {
            tracing::warn!(destination = %dest, timeline, reason, "archive retention could not delete a segment; the next run retries");
        }
        json!({
            "window_start_unix_ms": archive.window_start_unix_ms,
            "deleted": deleted,
            "timelines": archive.timelines.iter().map(|t| json!({
                "timeline": t.timeline_id,
                "base": t.base.as_ref().map(|b| b.to_string()),
                "keep_after_index": t.keep_after_index,
                "deleted": t.deleted.len(),
                "kept_segments": t.kept.iter().map(|k| k.segments).sum::<u64>(),
                "failed": t.failed,
            })).collect::<Vec<_>>(),
        })
    }

    fn succeeded(&self, manifest: &Manifest, elapsed: Duration) {
        let dest = self.label.clone();
        let id = manifest.id().map(|id| id.to_string()).unwrap_or_default();
        let secs = elapsed.as_secs_f64();
        tracing::info!(
            destination = %dest,
            %id,
            kind = %manifest.kind,
            log_index = manifest.log_index,
            log_term = manifest.log_term,
            timeline = %manifest.timeline.id,
            slot = manifest.slot_unix_ms,
            plain_size = manifest.plain_size,
            stored_size = manifest.stored_size,
            duration_secs = secs,
            "backup taken"
        );
        metrics::counter!("raftlite_backup_success_total", "destination" => dest.clone())
            .increment(1);
        metrics::gauge!("raftlite_backup_last_success_timestamp_seconds", "destination" => dest.clone())
            .set(unix_ms() as f64 / 1000.0);
        metrics::gauge!("raftlite_backup_last_duration_seconds", "destination" => dest.clone())
            .set(secs);
        metrics::gauge!("raftlite_backup_last_size_bytes", "destination" => dest)
            .set(manifest.stored_size as f64);
        let entry = json!({
            "outcome": "success",
            "id": id,
            "kind": manifest.kind,
            "parent": manifest.parent.as_ref().map(|p| p.id.to_string()),
            "finished_at_unix_ms": unix_ms(),
            "duration_secs": secs,
            "created_at": manifest.created_at,
            "log_index": manifest.log_index,
            "log_term": manifest.log_term,
            "timeline": manifest.timeline,
            "slot_unix_ms": manifest.slot_unix_ms,
            "plain_size": manifest.plain_size,
            "stored_size": manifest.stored_size,
        });
        self.with_record(|r| {
            r.in_progress_since_unix_ms = None;
            r.last = Some(entry.clone());
            r.last_success = Some(entry);
        });
    }

    fn skipped(&self, newest: &str, slot_unix_ms: i64) {
        let dest = self.label.clone();
        // Once per newest backup at INFO; the repeats of a quiet cluster only at DEBUG (with
        // second-level intervals they would fill the log).
        let repeat = self.with_record(|r| {
            r.last
                .as_ref()
                .is_some_and(|l| l["outcome"] == "skipped" && l["newest"] == newest)
        });
        if repeat {
            tracing::debug!(
                destination = %dest,
                newest,
                slot = slot_unix_ms,
                "scheduled backup skipped again: still unchanged"
            );
        } else {
            tracing::info!(
                destination = %dest,
                newest,
                slot = slot_unix_ms,
                "scheduled backup skipped: the newest backup already holds this data (later \
                 skips for the same backup are logged at debug level)"
            );
        }
        metrics::counter!("raftlite_backup_skipped_total", "destination" => dest).increment(1);
        let entry = json!({
            "outcome": "skipped",
            "reason": "unchanged since the newest backup",
            "newest": newest,
            "slot_unix_ms": slot_unix_ms,
            "finished_at_unix_ms": unix_ms(),
        });
        self.with_record(|r| r.last = Some(entry));
    }

    fn failed(&self, error: &BackupRunError, elapsed: Duration) {
        let dest = self.label.clone();
        let secs = elapsed.as_secs_f64();
        tracing::warn!(
            destination = %dest,
            duration_secs = secs,
            retryable = error.is_retryable(),
            error = %error,
            "backup failed"
        );
        metrics::counter!("raftlite_backup_failure_total", "destination" => dest).increment(1);
        let entry = json!({
            "outcome": "failure",
            "finished_at_unix_ms": unix_ms(),
            "duration_secs": secs,
            "error": error.to_string(),
        });
        self.with_record(|r| {
            r.in_progress_since_unix_ms = None;
            r.last = Some(entry);
        });
    }
}

#[allow(clippy::result_large_err)] // the backup engine's own error type
fn ensure_leader(node: &impl BackupCluster) -> Result<(), BackupRunError> {
    if node.is_leader() {
        Ok(())
    } else {
        Err(BackupRunError::NotLeader {
            node: node.node_id(),
            leader: node.leader(),
        })
    }
}

/// The store's meta as last committed, read off the async threads (without waiting for an
/// entry being applied: what a backup's checks compare is committed state anyway).
async fn current_meta(node: &impl BackupCluster, label: &str) -> Result<MetaState, BackupRunError> {
    let store = node.store();
    let snapshot_error = |reason: String| BackupRunError::Snapshot {
        dest: label.to_string(),
        reason,
    };
    tokio::task::spawn_blocking(move || store.committed_meta())
        .await
        .map_err(|e| snapshot_error(format!("the reading thread failed: {e}")))?
        .map_err(|e| snapshot_error(format!("cannot read the database's meta table: {e}")))
}
