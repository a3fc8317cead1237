//! The leader's backup schedule and restore drills, as background tasks beside serving.
//!
//! Every node runs the tasks; only the current leader acts. The schedule is a sequence of
//! slots ([`raftlite_backup::Schedule`]): when the latest slot at or before now has not been
//! handled, the leader runs it ([`BackupService::run_slot`]): nothing if the destination
//! already has a backup for it, a skip if the newest backup holds the same data, otherwise a
//! backup. So a new leader continues the schedule where the old one stopped (a slot the old
//! leader missed runs at once), and a restart with no new writes uploads nothing.
//!
//! A failed slot is retried with exponential backoff (5 s doubling to 5 min) until it
//! succeeds or the next slot is due. Failures are logged with the cause and counted; they
//! never touch serving: the tasks only read the database through its online backup API.

use std::sync::Arc;
use std::time::Duration;

use raftlite_backup::{list_backups, mark_verified, verify_backup_in, verify_stored};
use raftlite_consensus::node::{unix_ms, RaftNode};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backups::{BackupRunError, BackupService, SlotOutcome};

/// How often the schedule looks at the clock and at leadership.
const TICK: Duration = Duration::from_secs(1);
/// First wait after a failed slot; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Starts the schedule and the drills for `service` (each only if configured). The tasks run
/// until aborted.
pub fn spawn(service: Arc<BackupService>, node: RaftNode) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if service.schedule.is_some() {
        tasks.push(tokio::spawn(run_schedule(service.clone(), node.clone())));
    }
    if service.verify_interval.is_some() {
        tasks.push(tokio::spawn(run_drills(service, node)));
    }
    tasks
}

/// A slot that failed and when to try it again.
struct Retry {
    slot: i64,
    at: Instant,
    backoff: Duration,
}

async fn run_schedule(service: Arc<BackupService>, node: RaftNode) {
    let Some(schedule) = service.schedule.clone() else {
        return;
    };
    let dest = service.label().to_string();
    tracing::info!(destination = %dest, schedule = %schedule.describe(), "backup schedule started (the leader runs it)");
    // The slot this node handled last while leading; forgotten when leadership goes, so a
    // node that leads again asks the destination.
    let mut handled: Option<i64> = None;
    let mut retry: Option<Retry> = None;
    // (due slot, next slot): recomputed only when the next slot has come.
    let mut slots: Option<(Option<i64>, Option<i64>)> = None;
    loop {
        let now = unix_ms();
        let (due, next) = match slots {
            Some((due, Some(next))) if now < next => (due, Some(next)),
            _ => {
                let computed = (
                    schedule.slot_at_or_before(now),
                    schedule.next_slot_after(now),
                );
                slots = Some(computed);
                computed
            }
        };
        let pending = due.filter(|d| handled != Some(*d));
        let next_run = match (&retry, pending) {
            (Some(r), Some(d)) if r.slot == d => {
                Some(now + r.at.saturating_duration_since(Instant::now()).as_millis() as i64)
            }
            (_, Some(_)) => Some(now),
            _ => next,
        };
        service.with_record(|r| r.next_run_unix_ms = next_run);
        if let Some(at) = next_run {
            metrics::gauge!("raftlite_backup_next_run_timestamp_seconds", "destination" => dest.clone())
                .set(at as f64 / 1000.0);
        }

        if !node.is_leader() {
            handled = None;
            retry = None;
            tokio::time::sleep(TICK).await;
            continue;
        }
        let Some(slot) = pending else {
            tokio::time::sleep(TICK).await;
            continue;
        };
        if retry
            .as_ref()
            .is_some_and(|r| r.slot == slot && Instant::now() < r.at)
        {
            tokio::time::sleep(TICK).await;
            continue;
        }
        match service.run_slot(&node, slot).await {
            Ok(SlotOutcome::NotReady) => {
                tracing::debug!("backup slot waits: the cluster has no timeline yet");
            }
            Ok(SlotOutcome::AlreadyDone { newest }) => {
                tracing::debug!(destination = %dest, %newest, slot, "backup slot already taken");
                handled = Some(slot);
                retry = None;
            }
            Ok(SlotOutcome::Skipped { .. } | SlotOutcome::Taken(_)) => {
                handled = Some(slot);
                retry = None;
            }
            // Leadership moved (the new leader carries on) or a requested backup is running
            // (the slot runs when it is done): neither is a failure.
            Err(BackupRunError::NotLeader { .. } | BackupRunError::InProgress { .. }) => {}
            Err(e) => {
                let backoff = match &retry {
                    Some(r) if r.slot == slot => (r.backoff * 2).min(MAX_BACKOFF),
                    _ => FIRST_BACKOFF,
                };
                tracing::warn!(
                    destination = %dest,
                    slot,
                    retry_in_secs = backoff.as_secs(),
                    error = %e,
                    "scheduled backup failed; retrying"
                );
                retry = Some(Retry {
                    slot,
                    at: Instant::now() + backoff,
                    backoff,
                });
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

async fn run_drills(service: Arc<BackupService>, node: RaftNode) {
    let Some(every) = service.verify_interval else {
        return;
    };
    let every = every.max(TICK);
    loop {
        tokio::time::sleep(every).await;
        if node.is_leader() {
            service.drill(&node).await;
        }
    }
}

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
    pub async fn drill(&self, node: &RaftNode) {
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
