//! The leader's backup schedule and restore drills, as background tasks beside serving.
//!
//! Every node runs the tasks; only the current leader acts. The schedule is a sequence of
//! slots ([`crate::Schedule`]): when the latest slot at or before now has not been
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

use raftlite_consensus::node::unix_ms;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{BackupCluster, BackupRunError, BackupService, SlotOutcome};
use crate::Schedule;

/// How often the schedule looks at the clock and at leadership.
const TICK: Duration = Duration::from_secs(1);
/// First wait after a failed slot; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Starts the schedule and the drills for `service` (each only if configured). The tasks run
/// until aborted.
pub fn spawn<C: BackupCluster>(service: Arc<BackupService>, node: C) -> Vec<JoinHandle<()>> {
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
#[derive(Debug)]
struct Retry {
    slot: i64,
    at: Instant,
    backoff: Duration,
}

/// What the schedule remembers from one tick to the next, and the decisions made from it:
/// which slot is due, when the next run is, when a failed slot is tried again. The clock comes
/// in as arguments, so the decisions are tested without waiting.
#[derive(Debug, Default)]
pub(super) struct SlotTracker {
    /// The slot this node handled last while leading; forgotten when leadership goes, so a
    /// node that leads again asks the destination.
    handled: Option<i64>,
    retry: Option<Retry>,
    /// (due slot, next slot): recomputed only when the next slot has come.
    slots: Option<(Option<i64>, Option<i64>)>,
}

/// What one tick of the schedule sees.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Tick {
    /// The latest slot at or before now, if this node has not handled it.
    pub(super) pending: Option<i64>,
    /// When the schedule runs next (Unix ms): now for a pending slot, its retry time for a
    /// failed one, else the next slot. For `/status` and the gauge.
    pub(super) next_run: Option<i64>,
}

impl SlotTracker {
    /// The slots at `now_unix_ms` (`now` is the same moment on the monotonic clock).
    pub(super) fn tick(&mut self, schedule: &Schedule, now_unix_ms: i64, now: Instant) -> Tick {
        let (due, next) = match self.slots {
            Some((due, Some(next))) if now_unix_ms < next => (due, Some(next)),
            _ => {
                let computed = (
                    schedule.slot_at_or_before(now_unix_ms),
                    schedule.next_slot_after(now_unix_ms),
                );
                self.slots = Some(computed);
                computed
            }
        };
        let pending = due.filter(|d| self.handled != Some(*d));
        let next_run = match (&self.retry, pending) {
            (Some(r), Some(d)) if r.slot == d => {
                Some(now_unix_ms + r.at.saturating_duration_since(now).as_millis() as i64)
            }
            (_, Some(_)) => Some(now_unix_ms),
            _ => next,
        };
        Tick { pending, next_run }
    }

    /// This node does not lead (any more): what it handled and its retries are forgotten.
    pub(super) fn not_leader(&mut self) {
        self.handled = None;
        self.retry = None;
    }

    /// `pending` unless it failed and its retry is not due yet at `now`.
    pub(super) fn runnable(&self, pending: Option<i64>, now: Instant) -> Option<i64> {
        let slot = pending?;
        if self
            .retry
            .as_ref()
            .is_some_and(|r| r.slot == slot && now < r.at)
        {
            return None;
        }
        Some(slot)
    }

    /// `slot` is done (taken, skipped or taken by another leader).
    pub(super) fn handled(&mut self, slot: i64) {
        self.handled = Some(slot);
        self.retry = None;
    }

    /// `slot` failed at `now`: it is tried again after the returned backoff (5 s, doubling up
    /// to 5 min for the same slot; a new slot starts at 5 s again).
    pub(super) fn failed(&mut self, slot: i64, now: Instant) -> Duration {
        let backoff = match &self.retry {
            Some(r) if r.slot == slot => (r.backoff * 2).min(MAX_BACKOFF),
            _ => FIRST_BACKOFF,
        };
        self.retry = Some(Retry {
            slot,
            at: now + backoff,
            backoff,
        });
        backoff
    }
}

pub(super) async fn run_schedule<C: BackupCluster>(service: Arc<BackupService>, node: C) {
    let Some(schedule) = service.schedule.clone() else {
        return;
    };
    let dest = service.label().to_string();
    tracing::info!(destination = %dest, schedule = %schedule.describe(), "backup schedule started (the leader runs it)");
    let mut tracker = SlotTracker::default();
    loop {
        let tick = tracker.tick(&schedule, unix_ms(), Instant::now());
        let next_run = tick.next_run;
        service.with_record(|r| r.next_run_unix_ms = next_run);
        if let Some(at) = next_run {
            metrics::gauge!("raftlite_backup_next_run_timestamp_seconds", "destination" => dest.clone())
                .set(at as f64 / 1000.0);
        }

        if !node.is_leader() {
            tracker.not_leader();
            tokio::time::sleep(TICK).await;
            continue;
        }
        let Some(slot) = tracker.runnable(tick.pending, Instant::now()) else {
            tokio::time::sleep(TICK).await;
            continue;
        };
        match service.run_slot(&node, slot).await {
            Ok(SlotOutcome::NotReady) => {
                tracing::debug!("backup slot waits: the cluster has no timeline yet");
            }
            Ok(SlotOutcome::AlreadyDone { newest }) => {
                tracing::debug!(destination = %dest, %newest, slot, "backup slot already taken");
                tracker.handled(slot);
            }
            Ok(SlotOutcome::Skipped { .. } | SlotOutcome::Taken(_)) => {
                tracker.handled(slot);
            }
            // Leadership moved (the new leader carries on) or a requested backup is running
            // (the slot runs when it is done): neither is a failure.
            Err(BackupRunError::NotLeader { .. } | BackupRunError::InProgress { .. }) => {}
            Err(e) => {
                let backoff = tracker.failed(slot, Instant::now());
                tracing::warn!(
                    destination = %dest,
                    slot,
                    retry_in_secs = backoff.as_secs(),
                    error = %e,
                    "scheduled backup failed; retrying"
                );
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

async fn run_drills<C: BackupCluster>(service: Arc<BackupService>, node: C) {
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
