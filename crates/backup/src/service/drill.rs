//! Restore drills: the leader downloads the newest backup of its cluster and checks that it
//! restores (started by [`super::scheduler::spawn`] every `--backup-verify-interval`).

use raftlite_consensus::node::unix_ms;
use serde_json::json;

use super::{BackupCluster, BackupService};
use crate::{list_backups, mark_verified, verify_backup_in, verify_stored};

/// How a drill ended.
enum DrillResult {
    /// Downloaded, decrypted, decompressed, hashes and `integrity_check` passed.
    Full,
    /// Encrypted without an identity configured: the stored bytes' size and hash passed.
    StoredOnly,
}

impl BackupService {
    /// A restore drill of the newest backup of this cluster into a temp dir under
    /// `<data-dir>/snapshots`: hashes, decryption (when an identity is configured),
    /// decompression, `integrity_check`, page count. A full pass marks the set verified
    /// (retention never deletes the newest verified backup). Results go to metrics
    /// (`raftlite_backup_last_verify_success` 1/0, `..._timestamp_seconds`, counters), logs
    /// and `/status`.
    pub async fn drill(&self, node: &impl BackupCluster) {
        let dest = self.label().to_string();
        let store = node.store();
        let meta = match tokio::task::spawn_blocking(move || store.committed_meta()).await {
            Ok(Ok(meta)) => meta,
            _ => return,
        };
        let Some(cluster_id) = meta.timeline_history.first().map(|t| t.id.clone()) else {
            return;
        };
        let list = match list_backups(self.destination()).await {
            Ok(list) => list,
            Err(e) => {
                self.drill_failed(None, &e.to_string());
                return;
            }
        };
        let Some((id, manifest)) = list.newest(&cluster_id).cloned() else {
            tracing::info!(destination = %dest, "restore drill: no backup of this cluster yet");
            return;
        };
        let started = std::time::Instant::now();
        let result = if manifest.encryption.is_some() && self.identity.is_none() {
            verify_stored(self.destination(), &id)
                .await
                .map(|_| DrillResult::StoredOnly)
        } else {
            match std::fs::create_dir_all(&self.snapshots) {
                Ok(()) => verify_backup_in(
                    self.destination(),
                    &id,
                    self.identity.as_ref(),
                    &self.snapshots,
                )
                .await
                .map(|_| DrillResult::Full),
                Err(e) => {
                    self.drill_failed(
                        Some(&id.to_string()),
                        &format!(
                            "cannot create the drill's work directory {}: {e}",
                            self.snapshots.display()
                        ),
                    );
                    return;
                }
            }
        };
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(kind) => {
                let checks = match kind {
                    DrillResult::Full => {
                        if let Err(e) = mark_verified(self.destination(), &id, unix_ms()).await {
                            tracing::warn!(destination = %dest, %id, error = %e, "restore drill passed but the verified marker could not be written");
                        }
                        "full"
                    }
                    DrillResult::StoredOnly => {
                        "stored-bytes-only (no --backup-identity to decrypt)"
                    }
                };
                tracing::info!(destination = %dest, %id, checks, duration_secs = secs, "restore drill passed");
                metrics::gauge!("raftlite_backup_last_verify_success", "destination" => dest.clone())
                    .set(1.0);
                metrics::gauge!("raftlite_backup_last_verify_timestamp_seconds", "destination" => dest.clone())
                    .set(unix_ms() as f64 / 1000.0);
                metrics::counter!("raftlite_backup_verify_success_total", "destination" => dest)
                    .increment(1);
                let entry = json!({
                    "outcome": "success",
                    "id": id.to_string(),
                    "checks": checks,
                    "at_unix_ms": unix_ms(),
                    "duration_secs": secs,
                });
                self.with_record(|r| {
                    r.last_verify = Some(entry);
                    if r.failed_drill_id.as_deref() == Some(id.to_string().as_str()) {
                        r.failed_drill_id = None;
                    }
                });
            }
            Err(e) => {
                // The next slot takes a fresh backup even if nothing changed: the newest one
                // cannot be trusted.
                self.with_record(|r| r.failed_drill_id = Some(id.to_string()));
                self.drill_failed(Some(&id.to_string()), &e.to_string());
            }
        }
    }

    fn drill_failed(&self, id: Option<&str>, error: &str) {
        let dest = self.label().to_string();
        tracing::error!(destination = %dest, id, error, "restore drill FAILED: the newest backup cannot be restored as it is; the next scheduled slot takes a new backup even if nothing changed; investigate the destination");
        metrics::gauge!("raftlite_backup_last_verify_success", "destination" => dest.clone())
            .set(0.0);
        metrics::gauge!("raftlite_backup_last_verify_timestamp_seconds", "destination" => dest.clone())
            .set(unix_ms() as f64 / 1000.0);
        metrics::counter!("raftlite_backup_verify_failure_total", "destination" => dest)
            .increment(1);
        let entry = json!({
            "outcome": "failure",
            "id": id,
            "error": error,
            "at_unix_ms": unix_ms(),
        });
        self.with_record(|r| r.last_verify = Some(entry));
    }
}
