//! The leader's second copies (`--backup-copy-to`): every finished backup set of the backup
//! destination, and the log archive beside it, copied to each further destination with
//! [`crate::copy::copy_destination`], then that destination's own retention applied.
//!
//! - Every node runs one task per copy destination; only the leader acts. Each task looks every
//!   few seconds ([`COPY_POLL`]) and copies what the copy lacks: a pass when both are in sync
//!   costs one listing of each side. New backups and new archive segments therefore reach the
//!   copy within a poll of landing in the backup destination.
//! - A copy reads the backup destination only, never the database or the log: it adds nothing
//!   to the write path. Hashing runs on the blocking pool.
//! - A failing copy destination fails its passes only (metrics, `/status`, a warning in the
//!   log); backups and the other copies go on. Passes are retried with backoff (5 s doubling to
//!   30 s; a failing pass costs a few requests), and the first pass that gets through copies
//!   everything missing: an outage is caught up without anything to do.
//! - After a pass that copied sets (and after the first pass of a new leader), the copy's
//!   retention runs: `--backup-copy-keep-*` (by default the backups' own policy), keeping the
//!   base backups the copy's archive needs; then, when the archive is copied, archive retention
//!   with the backups' `--archive-keep-within`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftlite_consensus::node::unix_ms;
use serde_json::{json, Value as Json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::pacing::YieldToWrites;
use super::{BackupCluster, BackupService};
use crate::archive::{
    archive_needs, kept_backups, prune_archive, ArchivePruneReport, DEFAULT_ARCHIVE_KEEP_WITHIN,
};
use crate::copy::{copy_destination, pending_copies, CopyReport, CopySelection};
use crate::retention::prune_keeping;
use crate::{list_backups, BackupError, Destination, PruneReport, RetentionPolicy};

/// How often each copy task looks for something to copy.
pub const COPY_POLL: Duration = Duration::from_secs(5);
/// First wait after a failed pass; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A failure that goes on is warned about again this often (debug in between).
const REWARN: Duration = Duration::from_secs(600);

/// One further destination and its retention (`None`: the backups' own policy).
#[derive(Clone, Debug)]
pub struct CopyTarget {
    pub dest: Destination,
    pub retention: Option<RetentionPolicy>,
}

/// What `/status` and `/metrics` show of one copy.
#[derive(Clone, Debug, Default)]
struct CopyRecord {
    leading: bool,
    in_progress_since_unix_ms: Option<i64>,
    last_pass_unix_ms: Option<i64>,
    last_success_unix_ms: Option<i64>,
    /// When the source was listed by the last pass that left nothing behind.
    synced_at_unix_ms: Option<i64>,
    lag_seconds: f64,
    pending_objects: u64,
    failures: u64,
    consecutive_failures: u32,
    last_error: Option<String>,
    last_warned: Option<Instant>,
    sets_copied: u64,
    archive_objects_copied: u64,
    bytes_copied: u64,
    last_copied: Option<String>,
    last_prune: Option<Json>,
}

struct Target {
    dest: Destination,
    label: String,
    retention: RetentionPolicy,
    record: Mutex<CopyRecord>,
}

impl Target {
    fn with_record<T>(&self, f: impl FnOnce(&mut CopyRecord) -> T) -> T {
        // A poisoned lock only means a panic elsewhere while updating plain data: keep going.
        let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut record)
    }

    fn status(&self, copies_archive: bool) -> Json {
        let r = self.with_record(|r| r.clone());
        let state = if !r.leading {
            "idle (not the leader)"
        } else if r.consecutive_failures > 0 {
            "failing"
        } else if r.last_pass_unix_ms.is_none() {
            "starting"
        } else if r.pending_objects > 0 {
            "behind"
        } else {
            "in sync"
        };
        json!({
            "destination": self.label,
            "state": state,
            "copying": r.leading,
            "archive": copies_archive,
            "retention": self.retention.describe(),
            "in_progress": r.in_progress_since_unix_ms.is_some(),
            "lag_seconds": r.lag_seconds,
            "pending_objects": r.pending_objects,
            "failures": r.failures,
            "consecutive_failures": r.consecutive_failures,
            "last_error": r.last_error,
            "last_pass_unix_ms": r.last_pass_unix_ms,
            "last_success_unix_ms": r.last_success_unix_ms,
            "sets_copied": r.sets_copied,
            "archive_objects_copied": r.archive_objects_copied,
            "bytes_copied": r.bytes_copied,
            "last_copied": r.last_copied,
            "last_prune": r.last_prune,
        })
    }

    fn set_backlog(&self, pending: u64, lag_seconds: f64) {
        self.with_record(|r| {
            r.pending_objects = pending;
            r.lag_seconds = lag_seconds;
        });
        let dest = self.label.clone();
        metrics::gauge!("raftlite_backup_copy_pending_objects", "destination" => dest.clone())
            .set(pending as f64);
        metrics::gauge!("raftlite_backup_copy_lag_seconds", "destination" => dest).set(lag_seconds);
    }

    /// Counts `n` failures and logs `what` (warned the first time, when it changes, and every
    /// [`REWARN`]; debug in between).
    fn failed(&self, n: u64, what: &str) {
        metrics::counter!("raftlite_backup_copy_failures_total", "destination" => self.label.clone())
            .increment(n);
        let warn = self.with_record(|r| {
            r.failures += n;
            let warn = r.last_error.as_deref() != Some(what)
                || r.last_warned.is_none_or(|at| at.elapsed() >= REWARN);
            r.last_error = Some(what.to_string());
            if warn {
                r.last_warned = Some(Instant::now());
            }
            warn
        });
        if warn {
            tracing::warn!(copy = %self.label, "backup copy: {what}");
        } else {
            tracing::debug!(copy = %self.label, "backup copy: {what}");
        }
    }
}

/// The copies of one backup destination: the settings, and what each copy did last.
pub struct Copier {
    source: Destination,
    source_label: String,
    targets: Vec<Target>,
    copy_archive: bool,
    archive_keep_within: Option<Duration>,
    poll: Duration,
    /// Bytes per second a copy runs at while the node applies writes: a quarter of a backup's
    /// busy pace (8 MiB/s by default). Unlike a backup nothing (no pinned WAL) makes a copy
    /// urgent, and the write path comes first: with the copy going to another device, 16
    /// writers keep 97% of their rate (`raftlite-bench --incremental`); at 16 MiB/s with both
    /// destinations on the log's own disk they kept 88%.
    busy_pace: u64,
}

impl Copier {
    /// Copies of `service`'s destination to `targets` (each with its own retention, by default
    /// the service's), with the log archive when `copy_archive` (the archive lies beside the
    /// backups). Refuses a target that is the backup destination itself or given twice.
    #[allow(clippy::result_large_err)] // the backup engine's own error type
    pub fn new(
        service: &BackupService,
        targets: Vec<CopyTarget>,
        copy_archive: bool,
    ) -> Result<Copier, BackupError> {
        let source = service.destination().clone();
        let mut built: Vec<Target> = Vec::new();
        for target in targets {
            let label = target.dest.to_string();
            if label == source.to_string() {
                return Err(BackupError::InvalidOptions {
                    reason: format!(
                        "--backup-copy-to {label} is the backup destination itself; a copy \
                         belongs in another place (another bucket, region or provider)"
                    ),
                });
            }
            if built.iter().any(|t| t.label == label) {
                return Err(BackupError::InvalidOptions {
                    reason: format!("--backup-copy-to {label} is given twice; give it once"),
                });
            }
            built.push(Target {
                dest: target.dest,
                label,
                retention: target
                    .retention
                    .unwrap_or_else(|| service.retention.clone()),
                record: Mutex::new(CopyRecord::default()),
            });
        }
        Ok(Copier {
            source_label: source.to_string(),
            source,
            targets: built,
            copy_archive,
            archive_keep_within: service.archive_keep_within,
            poll: COPY_POLL,
            busy_pace: (service.busy_pace_bytes_per_sec / 4).max(1 << 20),
        })
    }

    /// Looks for something to copy every `poll` instead of [`COPY_POLL`].
    pub fn with_poll(mut self, poll: Duration) -> Copier {
        self.poll = poll;
        self
    }

    /// The copies' labels (no credentials), in the order given.
    pub fn labels(&self) -> Vec<&str> {
        self.targets.iter().map(|t| t.label.as_str()).collect()
    }

    /// Each copy's retention, for the start-up log.
    pub fn describe(&self) -> Vec<(String, String)> {
        self.targets
            .iter()
            .map(|t| (t.label.clone(), t.retention.describe()))
            .collect()
    }

    pub fn copies_archive(&self) -> bool {
        self.copy_archive
    }

    /// Makes the copy counters exist (at zero) before the first pass.
    pub fn register_metrics(&self) {
        for t in &self.targets {
            for name in [
                "raftlite_backup_copy_failures_total",
                "raftlite_backup_copy_sets_total",
                "raftlite_backup_copy_archive_objects_total",
            ] {
                metrics::counter!(name, "destination" => t.label.clone()).increment(0);
            }
        }
    }

    /// What `/status` shows under `backup.copies`: one entry per copy.
    pub fn status(&self) -> Json {
        Json::Array(
            self.targets
                .iter()
                .map(|t| t.status(self.copy_archive))
                .collect(),
        )
    }

    /// One pass to `t`: copy what it lacks, record it, and apply its retention when sets were
    /// copied or `prune_due`. Returns whether everything succeeded (else the caller backs off)
    /// and whether retention is still due (it failed, or the pass did not get to it).
    async fn pass<C: BackupCluster>(&self, t: &Target, node: &C, prune_due: bool) -> (bool, bool) {
        let Some(cluster) = cluster_id(node).await else {
            return (true, prune_due); // bootstrapping: nothing backed up yet
        };
        let pace = Arc::new(AtomicU64::new(0));
        let select = CopySelection {
            cluster: Some(cluster.clone()),
            archive: self.copy_archive,
            pace: Some(pace.clone()),
            ..CopySelection::default()
        };
        t.with_record(|r| r.in_progress_since_unix_ms = Some(unix_ms()));
        let yielding = YieldToWrites::start(node, pace, self.busy_pace, None);
        let result = copy_destination(&self.source, &t.dest, &select).await;
        drop(yielding);
        let now = unix_ms();
        t.with_record(|r| {
            r.in_progress_since_unix_ms = None;
            r.last_pass_unix_ms = Some(now);
        });
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                self.unreachable(t, &select, &e, now).await;
                return (false, prune_due);
            }
        };
        self.record_report(t, &report, now);
        let prune = prune_due || !report.copied.is_empty();
        let pruned = !prune || self.apply_retention(t, &cluster).await;
        (report.is_complete() && pruned, !pruned)
    }

    /// Records a pass that listed both sides: what was copied, what failed, the backlog.
    fn record_report(&self, t: &Target, report: &CopyReport, now: i64) {
        let archive = report.archive.clone().unwrap_or_default();
        for set in &report.copied {
            tracing::info!(
                source = %self.source_label,
                copy = %t.label,
                id = %set.id,
                kind = %set.kind,
                stored_size = set.stored_size,
                "backup copied"
            );
        }
        if archive.copied > 0 {
            tracing::debug!(
                copy = %t.label,
                objects = archive.copied,
                segments = archive.segments,
                bytes = archive.copied_bytes,
                "log archive copied"
            );
        }
        let dest = t.label.clone();
        metrics::counter!("raftlite_backup_copy_sets_total", "destination" => dest.clone())
            .increment(report.copied.len() as u64);
        metrics::counter!("raftlite_backup_copy_archive_objects_total", "destination" => dest.clone())
            .increment(archive.copied);
        let was_failing = t.with_record(|r| {
            r.sets_copied += report.copied.len() as u64;
            r.archive_objects_copied += archive.copied;
            r.bytes_copied += report.copied_bytes + archive.copied_bytes;
            if let Some(last) = report.copied.last() {
                r.last_copied = Some(last.id.to_string());
            }
            r.consecutive_failures
        });
        let lag = report
            .oldest_remaining_unix_ms()
            .map_or(0.0, |oldest| (now - oldest).max(0) as f64 / 1000.0);
        t.set_backlog(report.remaining.len() as u64, lag);
        if report.is_complete() {
            if was_failing > 0 {
                tracing::info!(
                    copy = %t.label,
                    failed_attempts = was_failing,
                    "backup copy caught up: everything the backup destination holds is in the \
                     copy again"
                );
            }
            metrics::gauge!("raftlite_backup_copy_last_success_timestamp_seconds", "destination" => dest)
                .set(now as f64 / 1000.0);
            t.with_record(|r| {
                r.synced_at_unix_ms = Some(report.started_unix_ms);
                r.last_success_unix_ms = Some(now);
                r.consecutive_failures = 0;
                r.last_error = None;
            });
            return;
        }
        let failures: Vec<String> = report
            .failed
            .iter()
            .map(|f| format!("{}: {}", f.object, f.reason))
            .collect();
        t.with_record(|r| r.consecutive_failures += 1);
        t.failed(
            report.failed.len() as u64,
            &format!(
                "{} object(s) could not be copied from {} (they are retried on every pass; the \
                 rest was copied): {}",
                report.failed.len(),
                self.source_label,
                failures.join("; ")
            ),
        );
    }

    /// Records a pass that could not list a side (usually the copy being down): the backlog as
    /// far as the source alone tells.
    async fn unreachable(&self, t: &Target, select: &CopySelection, e: &BackupError, now: i64) {
        let failing = t.with_record(|r| {
            r.consecutive_failures += 1;
            r.consecutive_failures
        });
        let wait = crate::format_duration(backoff(failing));
        let source_down = matches!(e, BackupError::List { dest, .. } if *dest == self.source_label);
        let what = if source_down {
            format!(
                "{e}; the backup destination itself is out of reach, so nothing can be copied \
                 from it; the next attempt is in {wait}"
            )
        } else {
            format!(
                "{e}; backups go on in {} and the cluster is not affected; the next attempt \
                 (in {wait}) copies everything missing",
                self.source_label
            )
        };
        t.failed(1, &what);
        let since = t.with_record(|r| r.synced_at_unix_ms);
        match pending_copies(&self.source, &t.dest, select, since).await {
            Ok(pending) => {
                let lag = pending
                    .oldest_unix_ms
                    .map_or(0.0, |oldest| (now - oldest).max(0) as f64 / 1000.0);
                t.set_backlog(pending.objects, lag);
            }
            Err(_) => {
                // The backup destination is out of reach as well: the copy is behind at least
                // since it was last in sync.
                if let Some(since) = since {
                    let pending = t.with_record(|r| r.pending_objects);
                    t.set_backlog(pending, (now - since).max(0) as f64 / 1000.0);
                }
            }
        }
    }

    /// The copy's retention; logs and records it. False when it failed.
    async fn apply_retention(&self, t: &Target, cluster: &str) -> bool {
        let now = unix_ms();
        match self.prune(t, cluster, now).await {
            Ok(None) => true,
            Ok(Some((report, archive))) => {
                let removed = report.deleted.len() + report.cleaned.len();
                let deleted_segments = archive.as_ref().map_or(0, |a| a.deleted_count());
                if removed > 0 || deleted_segments > 0 {
                    tracing::info!(
                        copy = %t.label,
                        deleted = report.deleted.len(),
                        cleaned = report.cleaned.len(),
                        kept = report.kept.len(),
                        archive_objects_deleted = deleted_segments,
                        policy = %t.retention.describe(),
                        "backup copy: retention applied"
                    );
                }
                let archive_failures: Vec<String> = archive
                    .iter()
                    .flat_map(|a| {
                        a.failures()
                            .map(|(tl, why)| format!("timeline {tl}: {why}"))
                    })
                    .collect();
                let entry = json!({
                    "at_unix_ms": now,
                    "kept": report.kept.len(),
                    "deleted": report.deleted.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
                    "cleaned": report.cleaned.len(),
                    "archive_objects_deleted": deleted_segments,
                    "failed": report.failed.iter().map(|(id, r)| format!("{id}: {r}"))
                        .chain(archive_failures.iter().cloned()).collect::<Vec<_>>(),
                });
                t.with_record(|r| r.last_prune = Some(entry));
                if report.failed.is_empty() && archive_failures.is_empty() {
                    return true;
                }
                let reasons: Vec<String> = report
                    .failed
                    .iter()
                    .map(|(id, r)| format!("{id}: {r}"))
                    .chain(archive_failures)
                    .collect();
                t.failed(
                    1,
                    &format!(
                        "retention could not delete everything in the copy ({}); the next pass \
                         retries",
                        reasons.join("; ")
                    ),
                );
                false
            }
            Err(e) => {
                t.with_record(|r| {
                    r.last_prune = Some(json!({"at_unix_ms": now, "error": e.to_string()}))
                });
                t.failed(
                    1,
                    &format!("retention of the copy failed: {e}; the next pass retries"),
                );
                false
            }
        }
    }

    /// Backup retention in the copy keeping its archive's bases, then archive retention when
    /// the archive is copied. `None` when the copy has no rule to apply.
    async fn prune(
        &self,
        t: &Target,
        cluster: &str,
        now: i64,
    ) -> Result<Option<(PruneReport, Option<ArchivePruneReport>)>, BackupError> {
        let archive_window = self.archive_keep_within.filter(|_| self.copy_archive);
        if t.retention.is_empty() && archive_window.is_none() {
            return Ok(None);
        }
        let listing = list_backups(&t.dest).await?;
        let window = self
            .archive_keep_within
            .unwrap_or(DEFAULT_ARCHIVE_KEEP_WITHIN);
        let needs = archive_needs(&t.dest, &listing.backups, Some(cluster), window, now).await?;
        let report = prune_keeping(
            &t.dest,
            &listing,
            Some(cluster),
            &t.retention,
            now,
            &needs.into_keys().collect(),
            false,
        )
        .await?;
        let archive = match archive_window {
            // Sets whose deletion failed may have lost their manifest: not bases any more.
            Some(keep_within) if report.failed.is_empty() => {
                let kept = kept_backups(
                    &listing.backups,
                    report.kept.iter().map(|(id, _)| id.clone()),
                );
                Some(prune_archive(&t.dest, cluster, keep_within, now, &kept, false).await?)
            }
            _ => None,
        };
        Ok(Some((report, archive)))
    }
}

/// The wait after the `failing`-th failed pass in a row.
fn backoff(failing: u32) -> Duration {
    let doublings = failing.saturating_sub(1).min(8);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// The cluster id (the first timeline's id) of this node's database, `None` before it has one.
async fn cluster_id<C: BackupCluster>(node: &C) -> Option<String> {
    let store = node.store();
    match tokio::task::spawn_blocking(move || store.committed_meta()).await {
        Ok(Ok(meta)) => meta.timeline_history.first().map(|t| t.id.clone()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "backup copy: cannot read the cluster id from the database; the next pass retries");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "backup copy: the reading thread failed; the next pass retries");
            None
        }
    }
}

/// Runs the copies for as long as the process lives: one task per copy destination, acting on
/// the leader only.
pub fn spawn<C: BackupCluster>(copier: Arc<Copier>, node: C) -> Vec<JoinHandle<()>> {
    (0..copier.targets.len())
        .map(|index| tokio::spawn(run_target(Arc::clone(&copier), index, node.clone())))
        .collect()
}

async fn run_target<C: BackupCluster>(copier: Arc<Copier>, index: usize, node: C) {
    let Some(target) = copier.targets.get(index) else {
        return;
    };
    let mut ticker = tokio::time::interval(copier.poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading = false;
    let mut prune_due = true;
    let mut retry_at: Option<Instant> = None;
    loop {
        ticker.tick().await;
        if !node.is_leader() {
            if leading {
                leading = false;
                target.with_record(|r| r.leading = false);
                tracing::info!(copy = %target.label, "backup copy: no longer the leader; the new leader copies");
            }
            continue;
        }
        if !leading {
            leading = true;
            prune_due = true;
            retry_at = None;
            target.with_record(|r| {
                r.leading = true;
                r.consecutive_failures = 0;
            });
            tracing::info!(
                source = %copier.source_label,
                copy = %target.label,
                archive = copier.copy_archive,
                "backup copy: this leader copies finished backups{} to {}",
                if copier.copy_archive { " and the log archive" } else { "" },
                target.label
            );
        }
        if retry_at.is_some_and(|at| Instant::now() < at) {
            continue;
        }
        let (succeeded, still_due) = copier.pass(target, &node, prune_due).await;
        prune_due = still_due;
        retry_at = (!succeeded).then(|| {
            let failing = target.with_record(|r| r.consecutive_failures.max(1));
            Instant::now() + backoff(failing)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::BackupSettings;
    use crate::{create_backup, BackupMeta, CreateOptions, TimelineRef};
    use raftlite_consensus::{NodeAddr, NodeId};
    use raftlite_store::{LogPosition, Store, StoreOptions, TimelineRecord};

    const CLUSTER: &str = "feedfacefeedfacefeedfacefeedface";

    /// A leader whose database has its first timeline: all a copy asks of the cluster.
    #[derive(Clone)]
    struct Leader(Arc<Store>);

    impl Leader {
        fn new(dir: &std::path::Path) -> Leader {
            let store = Store::open(&dir.join("db.sqlite"), StoreOptions::default()).unwrap();
            let timeline = TimelineRecord {
                id: CLUSTER.into(),
                counter: 1,
                parent: None,
                parent_index: None,
                reason: "bootstrap".into(),
                at_unix_ms: 1_700_000_000_000,
            };
            let pos = LogPosition {
                term: 1,
                leader_node: 1,
                index: 1,
            };
            store.apply_init_timeline(pos, &timeline).unwrap();
            Leader(Arc::new(store))
        }
    }

    impl BackupCluster for Leader {
        fn node_id(&self) -> NodeId {
            1
        }
        fn is_leader(&self) -> bool {
            true
        }
        fn leader(&self) -> Option<(NodeId, NodeAddr)> {
            None
        }
        fn current_term(&self) -> u64 {
            1
        }
        fn applied_index(&self) -> u64 {
            1
        }
        async fn ensure_linearizable(&self) -> Result<(), String> {
            Ok(())
        }
        fn store(&self) -> Arc<Store> {
            Arc::clone(&self.0)
        }
    }

    #[tokio::test]
    async fn a_pass_copies_applies_the_copys_retention_and_does_not_copy_back_what_it_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let leader = Leader::new(dir.path());
        let primary = format!("file://{}", dir.path().join("primary").display());
        let service =
            BackupService::from_settings(BackupSettings::new(&primary), dir.path()).unwrap();
        let copy_url = format!("file://{}", dir.path().join("copy").display());
        let copy = Destination::parse(&copy_url).unwrap();
        let keep_one = RetentionPolicy {
            keep_last: Some(1),
            ..RetentionPolicy::default()
        };
        let target = CopyTarget {
            dest: copy.clone(),
            retention: Some(keep_one),
        };
        let err = Copier::new(&service, vec![target.clone(), target.clone()], false)
            .err()
            .unwrap();
        assert!(err.to_string().contains("twice"), "{err}");
        let own = CopyTarget {
            dest: service.destination().clone(),
            retention: None,
        };
        let err = Copier::new(&service, vec![own], false).err().unwrap();
        assert!(
            err.to_string().contains("backup destination itself"),
            "{err}"
        );
        let copier = Copier::new(&service, vec![target], false).unwrap();

        let db = dir.path().join("source.sqlite");
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        for index in [10, 20, 30] {
            let meta = BackupMeta {
                cluster_id: CLUSTER.into(),
                node_id: 1,
                timeline: TimelineRef {
                    id: CLUSTER.into(),
                    counter: 1,
                },
                log_index: index,
                log_term: 1,
                data_changed_index: Some(index),
                leader_term: None,
                slot_unix_ms: None,
            };
            create_backup(&db, meta, service.destination(), &CreateOptions::default())
                .await
                .unwrap();
        }

        let t = &copier.targets[0];
        t.with_record(|r| r.leading = true);
        assert_eq!(copier.pass(t, &leader, true).await, (true, false));
        let status = copier.status();
        assert_eq!(status[0]["state"], "in sync", "{status}");
        assert_eq!(status[0]["sets_copied"], 3, "{status}");
        assert_eq!(status[0]["retention"], "keep-last 1", "{status}");
        assert_eq!(
            status[0]["last_prune"]["deleted"].as_array().map(Vec::len),
            Some(2)
        );
        let in_copy = list_backups(&copy).await.unwrap();
        assert_eq!(in_copy.backups.len(), 1, "the copy's own retention");
        assert_eq!(
            list_backups(service.destination())
                .await
                .unwrap()
                .backups
                .len(),
            3
        );

        // The sets the copy pruned stay out of it.
        assert_eq!(copier.pass(t, &leader, false).await, (true, false));
        assert_eq!(list_backups(&copy).await.unwrap().backups.len(), 1);
        assert_eq!(copier.status()[0]["sets_copied"], 3);
        assert_eq!(copier.status()[0]["pending_objects"], 0);
    }

    #[test]
    fn failed_passes_back_off_to_half_a_minute() {
        let waits: Vec<u64> = (1..=5).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 30, 30]);
        assert_eq!(backoff(0), FIRST_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
