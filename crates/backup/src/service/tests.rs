//! The service's decisions against a fake cluster: a real store in a temp dir (so the backup
//! pins and uploads a real SQLite file, a few KiB), with leadership, term and the fence played
//! as each test says; backups go to a `file://` destination in the same temp dir. Nothing
//! waits on a clock: each test runs in milliseconds.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftlite_consensus::{NodeAddr, NodeId};
use raftlite_store::{
    EntryTime, LogPosition, Statement, Store, StoreOptions, TimelineRecord, WriteRequest,
};
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::scheduler::{SlotTracker, Tick};
use super::*;
use crate::list_backups;

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

#[test]
fn ids_follow_the_backup_crate_naming() {
    let manifest: Manifest = serde_json::from_value(json!({
        "format_version": 1,
        "cluster_id": "c1",
        "node_id": 1,
        "timeline": {"id": "t1", "counter": 2},
        "log_index": 42,
        "log_term": 3,
        "created_at": "2025-01-02T03:04:05.678Z",
        "created_at_unix_ms": 1_735_787_045_678i64,
        "sqlite_page_size": 4096,
        "sqlite_page_count": 2,
        "plain_sha256": "0".repeat(64),
        "plain_size": 8192,
        "stored_sha256": "0".repeat(64),
        "stored_size": 100,
        "compression": {"algorithm": "zstd", "level": 3},
        "encryption": null,
        "raftlite_version": "0.1.0",
    }))
    .unwrap();
    assert_eq!(
        manifest.id().unwrap().to_string(),
        "c1/20250102T030405.678Z-2-42"
    );
}

#[allow(clippy::result_large_err)]
fn from_config(
    to: &str,
    recipients: &[String],
    passphrase_env: Option<&str>,
    level: i32,
    data_dir: &Path,
) -> Result<BackupService, BackupError> {
    let mut settings = BackupSettings::new(to);
    settings.recipients = recipients.to_vec();
    settings.passphrase_env = passphrase_env.map(str::to_string);
    settings.level = level;
    BackupService::from_settings(settings, data_dir)
}

#[test]
fn config_is_checked_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let to = format!("file://{}", dir.path().join("b").display());
    let ok = from_config(&to, &[], None, 3, dir.path()).unwrap();
    assert_eq!(ok.label(), to);
    assert_eq!(ok.encryption_name(), "none");

    let err = from_config("ftp://x/y", &[], None, 3, dir.path()).unwrap_err();
    assert!(err.to_string().contains("unsupported scheme"), "{err}");
    let err = from_config("s3://AKID:hunter2@b/p", &[], None, 3, dir.path()).unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");

    let err = from_config(&to, &["age1nope".into()], None, 3, dir.path()).unwrap_err();
    assert!(err.to_string().contains("recipient"), "{err}");

    let var = "RAFTLITE_API_TEST_SURELY_UNSET_PASSPHRASE";
    let err = from_config(&to, &[], Some(var), 3, dir.path()).unwrap_err();
    assert!(
        err.to_string().contains(var) && err.to_string().contains("not set"),
        "{err}"
    );

    let err = from_config(&to, &[], None, 0, dir.path()).unwrap_err();
    assert!(err.to_string().contains("--backup-level"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The fake cluster
// ---------------------------------------------------------------------------------------------

/// The term the fake leader starts in.
const TERM: u64 = 5;
/// The fake's cluster id (its first timeline).
const CLUSTER: &str = "feedfacefeedfacefeedfacefeedface";

/// What the fake does when the service fences a backup (after the upload, before the
/// manifest).
#[derive(Clone)]
enum AtFence {
    /// Confirms: this node still leads in its term.
    Confirm,
    /// A new election this node won again: the term moves on, the quorum check passes.
    NewTerm,
    /// Deposed: no longer the leader, and the quorum check fails.
    Deposed,
    /// Waits for a permit on the semaphore, then confirms.
    Wait(Arc<Semaphore>),
}

/// A one-node "cluster": a real store, leadership and term as the test sets them.
#[derive(Clone)]
struct Fake(Arc<FakeState>);

struct FakeState {
    id: NodeId,
    store: Arc<Store>,
    leader: AtomicBool,
    term: AtomicU64,
    applied: AtomicU64,
    at_fence: Mutex<AtFence>,
    /// Signalled each time a fence starts.
    fence_reached: Notify,
}

impl Fake {
    /// A leader in [`TERM`] whose database has its first timeline (index 1) and, with `data`,
    /// one write (index 2).
    fn new(dir: &Path, data: bool) -> Fake {
        let fake = Fake::without_timeline(dir);
        let timeline = TimelineRecord {
            id: CLUSTER.into(),
            counter: 1,
            parent: None,
            parent_index: None,
            reason: "bootstrap".into(),
            at_unix_ms: 1_700_000_000_000,
        };
        let pos = fake.next_position();
        fake.0.store.apply_init_timeline(pos, &timeline).unwrap();
        if data {
            fake.write();
        }
        fake
    }

    /// A leader whose database no entry has been applied to yet.
    fn without_timeline(dir: &Path) -> Fake {
        let store = Store::open(&dir.join("db.sqlite"), StoreOptions::default()).unwrap();
        Fake(Arc::new(FakeState {
            id: 1,
            store: Arc::new(store),
            leader: AtomicBool::new(true),
            term: AtomicU64::new(TERM),
            applied: AtomicU64::new(0),
            at_fence: Mutex::new(AtFence::Confirm),
            fence_reached: Notify::new(),
        }))
    }

    fn next_position(&self) -> LogPosition {
        LogPosition {
            term: self.0.term.load(Ordering::SeqCst),
            leader_node: self.0.id,
            index: self.0.applied.fetch_add(1, Ordering::SeqCst) + 1,
        }
    }

    /// Applies an entry that changes user data; returns its index.
    fn write(&self) -> u64 {
        let pos = self.next_position();
        let time = EntryTime {
            at_unix_ms: 1_700_000_000_000,
            seed: 7,
        };
        let request = WriteRequest {
            statements: vec![
                Statement::new("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)"),
                Statement::new(format!("INSERT INTO t(v) VALUES ('entry {}')", pos.index)),
            ],
            transaction: true,
        };
        self.0.store.apply_write(pos, time, &[request]).unwrap();
        pos.index
    }

    /// Applies an entry that changes no user data (a leader's blank entry).
    fn blank(&self) {
        let pos = self.next_position();
        self.0.store.apply_membership(pos, None).unwrap();
    }

    fn set_leader(&self, leader: bool) {
        self.0.leader.store(leader, Ordering::SeqCst);
    }

    fn at_fence(&self, what: AtFence) {
        *self.0.at_fence.lock().unwrap() = what;
    }
}

impl BackupCluster for Fake {
    fn node_id(&self) -> NodeId {
        self.0.id
    }

    fn is_leader(&self) -> bool {
        self.0.leader.load(Ordering::SeqCst)
    }

    fn leader(&self) -> Option<(NodeId, NodeAddr)> {
        self.is_leader().then(|| (self.0.id, NodeAddr::default()))
    }

    fn current_term(&self) -> u64 {
        self.0.term.load(Ordering::SeqCst)
    }

    fn applied_index(&self) -> u64 {
        self.0.applied.load(Ordering::SeqCst)
    }

    async fn ensure_linearizable(&self) -> Result<(), String> {
        self.0.fence_reached.notify_one();
        let what = self.0.at_fence.lock().unwrap().clone();
        match what {
            AtFence::Confirm => Ok(()),
            AtFence::NewTerm => {
                self.0.term.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            AtFence::Deposed => {
                self.set_leader(false);
                Err("has to forward request to node 2".into())
            }
            AtFence::Wait(gate) => {
                gate.acquire().await.map_err(|e| e.to_string())?.forget();
                Ok(())
            }
        }
    }

    fn store(&self) -> Arc<Store> {
        self.0.store.clone()
    }
}

/// A service backing up to `file://<dir>/backups`, its scratch files under `<dir>/data`.
fn service_with(dir: &Path, retention: RetentionPolicy) -> BackupService {
    let mut settings = BackupSettings::new(format!("file://{}", dir.join("backups").display()));
    settings.retention = retention;
    BackupService::from_settings(settings, &dir.join("data")).unwrap()
}

fn new_service(dir: &Path) -> BackupService {
    service_with(dir, RetentionPolicy::server_default())
}

/// The complete backups of the fake's cluster in `service`'s destination, newest first.
async fn backups(service: &BackupService) -> Vec<Manifest> {
    let list = list_backups(service.destination()).await.unwrap();
    list.backups
        .into_iter()
        .filter(|(id, _)| id.cluster_id() == CLUSTER)
        .map(|(_, m)| m)
        .collect()
}

fn last_outcome(service: &BackupService) -> Option<String> {
    service.with_record(|r| {
        r.last
            .as_ref()
            .and_then(|l| l["outcome"].as_str().map(str::to_string))
    })
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_requested_backup_holds_the_leaders_data_and_term() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), true);
    let service = new_service(dir.path());
    let manifest = service.run_once(&fake).await.unwrap();
    assert_eq!(manifest.cluster_id, CLUSTER);
    assert_eq!(manifest.node_id, 1);
    assert_eq!(manifest.log_index, 2);
    assert_eq!(manifest.leader_term, Some(TERM));
    assert_eq!(manifest.slot_unix_ms, None);
    assert_eq!(backups(&service).await, vec![manifest]);

    let status = service.status();
    assert_eq!(status["last"]["outcome"], "success");
    assert_eq!(status["last"]["log_index"], 2);
    assert_eq!(status["in_progress"], false);
    assert_eq!(status["last_success"], status["last"]);
    // The scratch files of the pinned backup are gone.
    let scratch = dir.path().join("data").join("snapshots");
    let left = std::fs::read_dir(&scratch).map_or(0, |d| d.count());
    assert_eq!(left, 0, "{}", scratch.display());
}

#[tokio::test]
async fn a_follower_refuses_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), true);
    fake.set_leader(false);
    let service = new_service(dir.path());

    let err = service.run_once(&fake).await.unwrap_err();
    assert!(
        matches!(
            err,
            BackupRunError::NotLeader {
                node: 1,
                leader: None
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let err = service.run_slot(&fake, 1_000).await.unwrap_err();
    assert!(matches!(err, BackupRunError::NotLeader { .. }), "{err:?}");

    // Not a failed backup: nothing in /status, nothing in the destination.
    assert_eq!(last_outcome(&service), None);
    assert!(backups(&service).await.is_empty());
}

#[tokio::test]
async fn one_backup_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), true);
    let gate = Arc::new(Semaphore::new(0));
    fake.at_fence(AtFence::Wait(gate.clone()));
    let service = Arc::new(new_service(dir.path()));

    let first = tokio::spawn({
        let (service, fake) = (service.clone(), fake.clone());
        async move { service.run_once(&fake).await }
    });
    // The first backup is uploaded and waits at its fence, holding the service.
    fake.0.fence_reached.notified().await;
    assert_eq!(service.status()["in_progress"], true);

    let err = service.run_once(&fake).await.unwrap_err();
    assert!(
        matches!(err, BackupRunError::InProgress { node: 1, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let err = service.run_slot(&fake, 1_000).await.unwrap_err();
    assert!(matches!(err, BackupRunError::InProgress { .. }), "{err:?}");

    gate.add_permits(1);
    let manifest = first.await.unwrap().unwrap();
    assert_eq!(backups(&service).await, vec![manifest]);
    assert_eq!(last_outcome(&service).as_deref(), Some("success"));

    // Done: the next one runs.
    gate.add_permits(1);
    fake.write();
    service.run_once(&fake).await.unwrap();
    assert_eq!(backups(&service).await.len(), 2);
}

#[tokio::test]
async fn a_new_term_at_the_fence_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), true);
    fake.at_fence(AtFence::NewTerm);
    let service = new_service(dir.path());

    let err = service.run_once(&fake).await.unwrap_err();
    let BackupRunError::Backup(BackupError::Fenced { reason, .. }) = &err else {
        panic!("not fenced: {err:?}");
    };
    assert!(
        reason.contains(&format!("led in term {TERM}"))
            && reason.contains(&format!("now in term {}", TERM + 1)),
        "{reason}"
    );
    assert!(err.is_retryable());
    assert!(backups(&service).await.is_empty());
    assert_eq!(last_outcome(&service).as_deref(), Some("failure"));
}

#[tokio::test]
async fn a_deposed_leader_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), true);
    fake.at_fence(AtFence::Deposed);
    let service = new_service(dir.path());

    let err = service.run_slot(&fake, 1_000).await.unwrap_err();
    let BackupRunError::Backup(BackupError::Fenced { reason, .. }) = &err else {
        panic!("not fenced: {err:?}");
    };
    assert!(
        reason.contains("could not confirm with a quorum that it still leads")
            && reason.contains("has to forward request to node 2"),
        "{reason}"
    );
    let list = list_backups(service.destination()).await.unwrap();
    assert!(list.backups.is_empty(), "{:?}", list.backups);
    assert_eq!(last_outcome(&service).as_deref(), Some("failure"));
}

#[tokio::test]
async fn leadership_lost_without_a_failed_quorum_check_is_fenced_too() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), true);
    let service = new_service(dir.path());
    // The quorum check passes (a stale answer) but the node no longer leads when it returns.
    #[derive(Clone)]
    struct StepDown(Fake);
    impl BackupCluster for StepDown {
        fn node_id(&self) -> NodeId {
            self.0.node_id()
        }
        fn is_leader(&self) -> bool {
            self.0.is_leader()
        }
        fn leader(&self) -> Option<(NodeId, NodeAddr)> {
            self.0.leader()
        }
        fn current_term(&self) -> u64 {
            self.0.current_term()
        }
        fn applied_index(&self) -> u64 {
            self.0.applied_index()
        }
        async fn ensure_linearizable(&self) -> Result<(), String> {
            self.0.set_leader(false);
            Ok(())
        }
        fn store(&self) -> Arc<Store> {
            self.0.store()
        }
    }
    let err = service.run_once(&StepDown(fake)).await.unwrap_err();
    assert!(
        matches!(err, BackupRunError::Backup(BackupError::Fenced { .. })),
        "{err:?}"
    );
    assert!(backups(&service).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Schedule slots
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_slot_is_skipped_while_the_data_is_unchanged_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), true);
    let service = new_service(dir.path());

    let SlotOutcome::Taken(first) = service.run_slot(&fake, 1_000).await.unwrap() else {
        panic!("the first slot takes a backup");
    };
    assert_eq!(first.slot_unix_ms, Some(1_000));
    assert_eq!(first.leader_term, Some(TERM));
    let first_id = first.id().unwrap().to_string();

    // Same timeline, same data: skipped, and shown as such.
    let outcome = service.run_slot(&fake, 2_000).await.unwrap();
    assert!(
        matches!(&outcome, SlotOutcome::Skipped { newest } if *newest == first_id),
        "{outcome:?}"
    );
    let last = service.status()["last"].clone();
    assert_eq!(last["outcome"], "skipped");
    assert_eq!(last["newest"], first_id.as_str());
    assert_eq!(last["slot_unix_ms"], 2_000);

    // An entry that changes no data (a new leader's blank entry) is no reason for a backup.
    fake.blank();
    assert!(matches!(
        service.run_slot(&fake, 3_000).await.unwrap(),
        SlotOutcome::Skipped { .. }
    ));

    // A new service (a restart, or another node taking over) decides from the destination.
    let restarted = new_service(dir.path());
    assert!(matches!(
        restarted.run_slot(&fake, 4_000).await.unwrap(),
        SlotOutcome::Skipped { .. }
    ));
    assert_eq!(backups(&restarted).await.len(), 1);

    // New data: a backup.
    let index = fake.write();
    let SlotOutcome::Taken(second) = restarted.run_slot(&fake, 5_000).await.unwrap() else {
        panic!("changed data takes a backup");
    };
    assert_eq!(second.log_index, index);
    assert_eq!(backups(&restarted).await.len(), 2);
}

#[tokio::test]
async fn a_slot_already_taken_by_another_leader_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), true);
    let old_leader = new_service(dir.path());
    assert!(matches!(
        old_leader.run_slot(&fake, 5_000).await.unwrap(),
        SlotOutcome::Taken(_)
    ));

    // The new leader, even with new data, takes no backup for that slot or an earlier one.
    fake.write();
    let new_leader = new_service(dir.path());
    for slot in [5_000, 4_000] {
        let outcome = new_leader.run_slot(&fake, slot).await.unwrap();
        assert!(
            matches!(outcome, SlotOutcome::AlreadyDone { .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(backups(&new_leader).await.len(), 1);
    // Not recorded as an attempt.
    assert_eq!(last_outcome(&new_leader), None);
    // The next slot is its to take.
    assert!(matches!(
        new_leader.run_slot(&fake, 6_000).await.unwrap(),
        SlotOutcome::Taken(_)
    ));
}

#[tokio::test]
async fn a_failed_drill_makes_the_next_slot_take_a_fresh_backup() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), true);
    let service = new_service(dir.path());
    let SlotOutcome::Taken(first) = service.run_slot(&fake, 1_000).await.unwrap() else {
        panic!("the first slot takes a backup");
    };
    let first_id = first.id().unwrap().to_string();
    service.with_record(|r| r.failed_drill_id = Some(first_id.clone()));
    let outcome = service.run_slot(&fake, 2_000).await.unwrap();
    assert!(matches!(outcome, SlotOutcome::Taken(_)), "{outcome:?}");
    assert_eq!(backups(&service).await.len(), 2);
}

#[tokio::test]
async fn a_cluster_without_a_timeline_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::without_timeline(dir.path());
    let service = new_service(dir.path());
    let outcome = service.run_slot(&fake, 1_000).await.unwrap();
    assert!(matches!(outcome, SlotOutcome::NotReady), "{outcome:?}");
    assert_eq!(last_outcome(&service), None);
}

// ---------------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn retention_after_each_backup_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), true);
    let keep_two = RetentionPolicy {
        keep_last: Some(2),
        ..RetentionPolicy::default()
    };
    let service = service_with(dir.path(), keep_two);
    let mut indexes = Vec::new();
    for _ in 0..4 {
        let manifest = service.run_once(&fake).await.unwrap();
        indexes.push(manifest.log_index);
        fake.write();
    }
    let kept: Vec<u64> = backups(&service)
        .await
        .iter()
        .map(|m| m.log_index)
        .collect();
    assert_eq!(kept, vec![indexes[3], indexes[2]]);
    let prune = service.status()["last_prune"].clone();
    assert_eq!(prune["kept"], 2, "{prune}");
    assert_eq!(
        prune["deleted"].as_array().map(Vec::len),
        Some(1),
        "{prune}"
    );
    assert_eq!(prune["failed"], json!([]), "{prune}");
}

#[tokio::test]
async fn no_retention_rules_delete_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), true);
    let service = service_with(dir.path(), RetentionPolicy::default());
    for _ in 0..3 {
        service.run_once(&fake).await.unwrap();
        fake.write();
    }
    assert_eq!(backups(&service).await.len(), 3);
    assert_eq!(service.status()["last_prune"], json!(null));
}

// ---------------------------------------------------------------------------------------------
// The schedule's bookkeeping (no cluster, no clock: times come in)
// ---------------------------------------------------------------------------------------------

const HOUR_MS: i64 = 3_600_000;

fn hourly() -> Schedule {
    Schedule::interval(Duration::from_secs(3600)).unwrap()
}

#[test]
fn a_missed_slot_runs_at_once_and_only_once() {
    let schedule = hourly();
    let mut tracker = SlotTracker::default();
    let t0 = Instant::now();
    // Half past: the slot on the hour was missed (a restart, a new leader).
    let now = 100 * HOUR_MS + HOUR_MS / 2;
    let tick = tracker.tick(&schedule, now, t0);
    assert_eq!(
        tick,
        Tick {
            pending: Some(100 * HOUR_MS),
            next_run: Some(now),
        }
    );
    assert_eq!(tracker.runnable(tick.pending, t0), Some(100 * HOUR_MS));

    tracker.handled(100 * HOUR_MS);
    let tick = tracker.tick(&schedule, now + 1_000, t0);
    assert_eq!(
        tick,
        Tick {
            pending: None,
            next_run: Some(101 * HOUR_MS),
        }
    );
    assert_eq!(tracker.runnable(tick.pending, t0), None);

    // The next hour: its slot is due.
    let tick = tracker.tick(&schedule, 101 * HOUR_MS, t0);
    assert_eq!(tick.pending, Some(101 * HOUR_MS));
}

#[test]
fn a_failed_slot_is_retried_with_backoff_until_the_next_slot() {
    let schedule = hourly();
    let mut tracker = SlotTracker::default();
    let t0 = Instant::now();
    let slot = 100 * HOUR_MS;
    let now = slot + 10;
    assert_eq!(tracker.tick(&schedule, now, t0).pending, Some(slot));

    let mut waits = Vec::new();
    let mut at = t0;
    for _ in 0..8 {
        let backoff = tracker.failed(slot, at);
        waits.push(backoff.as_secs());
        // Waiting: not runnable, and /status says when it runs again.
        let tick = tracker.tick(&schedule, now, at);
        assert_eq!(tick.pending, Some(slot));
        assert_eq!(tick.next_run, Some(now + backoff.as_millis() as i64));
        assert_eq!(tracker.runnable(tick.pending, at), None);
        at += backoff;
        assert_eq!(tracker.runnable(tick.pending, at), Some(slot));
    }
    assert_eq!(waits, vec![5, 10, 20, 40, 80, 160, 300, 300]);

    // The next slot starts over.
    let next = tracker.tick(&schedule, 101 * HOUR_MS, at);
    assert_eq!(next.pending, Some(101 * HOUR_MS));
    assert_eq!(tracker.runnable(next.pending, at), Some(101 * HOUR_MS));
    assert_eq!(tracker.failed(101 * HOUR_MS, at), Duration::from_secs(5));
}

#[test]
fn losing_leadership_forgets_what_was_handled() {
    let schedule = hourly();
    let mut tracker = SlotTracker::default();
    let t0 = Instant::now();
    let slot = 100 * HOUR_MS;
    tracker.tick(&schedule, slot + 10, t0);
    tracker.handled(slot);
    assert_eq!(tracker.tick(&schedule, slot + 20, t0).pending, None);
    tracker.failed(slot, t0);

    // Leading again later, the node asks the destination (run_slot) about the slot, at once.
    tracker.not_leader();
    let tick = tracker.tick(&schedule, slot + 30, t0);
    assert_eq!(tick.pending, Some(slot));
    assert_eq!(tick.next_run, Some(slot + 30));
    assert_eq!(tracker.runnable(tick.pending, t0), Some(slot));
}
