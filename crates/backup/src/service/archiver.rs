//! The leader's continuous log archive (issue 20, first part): committed log entries shipped to
//! `<prefix>/<cluster-id>/archive/<timeline>/` as segments ([`crate::archive`]), cut so that an
//! applied entry waits about `--archive-interval` at most ([`Pace`]) and closed at
//! [`MAX_SEGMENT_PLAIN_BYTES`].
//!
//! - Only the leader archives, and only applied (so committed) entries.
//! - A new leader resumes from the archive's own watermark (the greatest segment in the
//!   destination), never from memory, so leader changes and restarts neither skip nor repeat;
//!   re-sending a range that is already there is harmless (`put_segment` compares content).
//! - While archiving, the node's log keeps every entry the archive does not hold yet through
//!   openraft's purges ([`ArchiveHold`]), up to a bound. When entries are gone anyway (the bound
//!   was reached, or this node became leader without them) the hole is recorded in the
//!   destination as a gap, counted and logged: never skipped silently.
//! - A restore or a load starts a new timeline: the entry that starts it closes the old
//!   timeline's archive, and the new timeline's archive starts after it. Restore chunks are
//!   archived as markers without their data (a new timeline begins from the restored file).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raftlite_consensus::archive_hold::ArchiveHold;
use raftlite_consensus::node::RaftNode;
use raftlite_consensus::replay::{encode_archived, starts_timeline};
use raftlite_consensus::types::{Command, Entry, EntryPayload};
use raftlite_store::TimelineRecord;
use serde_json::{json, Value as Json};

use crate::archive::{
    archive_watermark, claim_segment, claim_timeline, encode_segment, entry_encoded_len,
    put_segment_for_chain, record_gap, ArchivedEntry, ArchivedKind, GapRecord, PutOutcome,
    SegmentClaim, SegmentDraft,
};
use crate::service::{BackupRunError, BackupService};
use crate::{BackupError, Destination, Encryption, TimelineRef};

/// A segment is closed once its entries reach this many (plain, encoded) bytes.
pub const MAX_SEGMENT_PLAIN_BYTES: usize = 4 * 1024 * 1024;
/// Entries read from the log per step.
const READ_BATCH_ENTRIES: u64 = 4096;
/// The default `--archive-interval`.
pub const DEFAULT_ARCHIVE_INTERVAL: Duration = Duration::from_secs(1);

/// Where and how the archive is written.
#[derive(Clone)]
pub struct ArchiveSettings {
    pub dest: Destination,
    pub encryption: Option<Encryption>,
    pub zstd_level: i32,
    pub interval: Duration,
}

/// What `/status` and `/metrics` show of the archive.
#[derive(Clone, Debug, Default)]
struct ArchiveRecord {
    timeline: Option<String>,
    last_index: Option<u64>,
    last_entry_unix_ms: Option<i64>,
    last_upload_unix_ms: Option<i64>,
    lag_entries: u64,
    lag_seconds: f64,
    segments: u64,
    failures: u64,
    gaps: u64,
    last_error: Option<String>,
    leading: bool,
}

/// The archiver's shared state: the settings and what it did last.
pub struct Archiver {
    settings: ArchiveSettings,
    label: String,
    record: Mutex<ArchiveRecord>,
    /// Takes the base backups a new timeline's archive and a gap call for.
    base_backups: Option<Arc<BackupService>>,
    /// The base backups asked for and not yet taken, served one at a time.
    base_requests: Mutex<BaseRequests>,
}

/// The newest base backup asked for, and whether a worker is taking it. A request that arrives
/// while the worker runs is kept (the highest index wins), never dropped: the worker serves it
/// next, so a gap's base is not lost behind a timeline-start base that was already covered.
#[derive(Default)]
struct BaseRequests {
    wanted: Option<(u64, &'static str)>,
    worker_running: bool,
}

impl BaseRequests {
    fn ask(&mut self, at_least: u64, why: &'static str) -> bool {
        if self.wanted.is_none_or(|(wanted, _)| at_least >= wanted) {
            self.wanted = Some((at_least, why));
        }
        let start_worker = !self.worker_running;
        self.worker_running = true;
        start_worker
    }

    /// The next request for the worker, or `None` and the worker stops.
    fn next(&mut self) -> Option<(u64, &'static str)> {
        let next = self.wanted.take();
        self.worker_running = next.is_some();
        next
    }

    /// No longer the leader: what was asked for is the next leader's to take.
    fn abandon(&mut self) {
        self.wanted = None;
        self.worker_running = false;
    }
}

/// Where the leader is in the archive of one timeline.
struct Cursor {
    cluster_id: String,
    timeline: TimelineRef,
    /// The next index to archive.
    next: u64,
    /// sha256 of the last segment written on this timeline (the next one's `prev`).
    prev_sha256: Option<String>,
}

impl Archiver {
    pub fn new(settings: ArchiveSettings) -> Archiver {
        Archiver {
            label: settings.dest.to_string(),
            settings,
            record: Mutex::new(ArchiveRecord::default()),
            base_backups: None,
            base_requests: Mutex::new(BaseRequests::default()),
        }
    }

    /// Backs up through `service` when the archive needs a new base: a timeline whose archive
    /// starts (a new cluster, a restore) and after a gap, since a point-in-time restore can only
    /// start from a base backup at or before its target.
    pub fn with_base_backups(mut self, service: Arc<BackupService>) -> Archiver {
        self.base_backups = Some(service);
        self
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn interval(&self) -> Duration {
        self.settings.interval
    }

    fn with_base_requests<T>(&self, f: impl FnOnce(&mut BaseRequests) -> T) -> T {
        let mut requests = self.base_requests.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut requests)
    }

    fn with_record<T>(&self, f: impl FnOnce(&mut ArchiveRecord) -> T) -> T {
        let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut record)
    }

    /// Makes the archive metrics exist (at zero) before the first segment.
    pub fn register_metrics(&self) {
        for name in [
            "raftlite_archive_segments_total",
            "raftlite_archive_failures_total",
            "raftlite_archive_gaps_total",
        ] {
            metrics::counter!(name, "destination" => self.label.clone()).increment(0);
        }
    }

    /// What `/status` shows under `archive`.
    pub fn status(&self, hold: &ArchiveHold) -> Json {
        let r = self.with_record(|r| r.clone());
        json!({
            "destination": self.label,
            "interval_secs": self.settings.interval.as_secs_f64(),
            "archiving": r.leading,
            "timeline": r.timeline,
            "last_archived_index": r.last_index,
            "last_archived_entry_unix_ms": r.last_entry_unix_ms,
            "last_upload_unix_ms": r.last_upload_unix_ms,
            "lag_entries": r.lag_entries,
            "lag_seconds": r.lag_seconds,
            "segments_written": r.segments,
            "failures": r.failures,
            "gaps_recorded": r.gaps,
            "last_error": r.last_error,
            "log_hold": {
                "held_after": hold.archived(),
                "max_held_entries": hold.max_held_entries(),
                "forced_purges": hold.forced_purges(),
            },
        })
    }

    fn set_lag(&self, lag_entries: u64, lag_seconds: f64) {
        self.with_record(|r| {
            r.lag_entries = lag_entries;
            r.lag_seconds = lag_seconds;
        });
        let dest = self.label.clone();
        metrics::gauge!("raftlite_archive_lag_entries", "destination" => dest.clone())
            .set(lag_entries as f64);
        metrics::gauge!("raftlite_archive_lag_seconds", "destination" => dest).set(lag_seconds);
    }

    fn failed(&self, what: &str, error: &str) {
        tracing::warn!(destination = %self.label, "log archive: {what}: {error}");
        metrics::counter!("raftlite_archive_failures_total", "destination" => self.label.clone())
            .increment(1);
        self.with_record(|r| {
            r.failures += 1;
            r.last_error = Some(format!("{what}: {error}"));
        });
    }
}

/// When the archiver cuts the next segment: it looks every [`Pace::tick`] and cuts once the
/// oldest entry not archived has waited so long that, with the time the last cut took, it is
/// archived within about `--archive-interval` of being applied; at once when
/// [`READ_BATCH_ENTRIES`] entries wait. So the interval bounds how long an acknowledged write
/// waits for the archive (the recovery point), not just how often segments are cut, and an idle
/// cluster writes nothing.
struct Pace {
    interval: Duration,
    tick: Duration,
    /// When the oldest entry not archived yet was (at the latest) applied; `None` when the
    /// archive holds everything applied.
    pending_since: Option<Instant>,
    /// The previous look: entries first seen now were applied after it, so taking it as their
    /// start overstates their wait, never understates it.
    last_look: Instant,
    /// How long the last cut took (read, encode, claim, upload).
    last_cut: Duration,
}

impl Pace {
    fn new(interval: Duration) -> Pace {
        Pace {
            interval,
            tick: (interval / 10).clamp(Duration::from_millis(20), Duration::from_millis(250)),
            pending_since: None,
            last_look: Instant::now(),
            last_cut: Duration::ZERO,
        }
    }

    /// Whether to cut now, with `pending` entries waiting; records their age.
    fn due(&mut self, pending: u64, now: Instant) -> (bool, Duration) {
        let since = *self.pending_since.get_or_insert(self.last_look);
        let age = now.saturating_duration_since(since);
        let due = pending >= READ_BATCH_ENTRIES || age + self.tick + self.last_cut >= self.interval;
        (due, age)
    }
}

/// Runs the archiver for as long as the process lives: on the leader, ships what was applied
/// in segments paced by [`Pace`].
pub fn spawn(archiver: Arc<Archiver>, node: RaftNode) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut cursor: Option<Cursor> = None;
        let mut pace = Pace::new(archiver.settings.interval);
        let mut ticker = tokio::time::interval(pace.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if !node.is_leader() {
                if cursor.take().is_some() {
                    tracing::info!("log archive: no longer the leader; the new leader resumes it");
                }
                node.archive_hold().clear();
                archiver.with_record(|r| r.leading = false);
                pace = Pace::new(archiver.settings.interval);
                continue;
            }
            archiver.with_record(|r| r.leading = true);
            if let Err(e) = step(&archiver, &node, &mut cursor, &mut pace).await {
                archiver.failed("cannot archive the log", &e);
                // Start over from the destination's own watermark next time: a failed upload
                // may or may not have landed.
                cursor = None;
            }
        }
    })
}

/// Takes a base backup at or after log index `at_least` in the background (none when one is
/// there already, e.g. from the schedule), retrying while another backup runs, until it is done
/// or this node no longer leads.
fn request_base(archiver: &Arc<Archiver>, node: &RaftNode, at_least: u64, why: &'static str) {
    let Some(service) = archiver.base_backups.clone() else {
        tracing::warn!(
            "log archive: {why}; no backups are configured here to start a new base (--backup-to)"
        );
        return;
    };
    let start_worker = archiver.with_base_requests(|r| r.ask(at_least, why));
    if !start_worker {
        return;
    }
    let (archiver, node) = (Arc::clone(archiver), node.clone());
    tokio::spawn(async move {
        while let Some((at_least, why)) = archiver.with_base_requests(BaseRequests::next) {
            if !take_base(&service, &node, at_least, why).await {
                archiver.with_base_requests(BaseRequests::abandon);
                return;
            }
        }
    });
}

/// Takes one base backup at or after `at_least`, retrying while another backup runs. False when
/// this node stopped leading.
async fn take_base(service: &BackupService, node: &RaftNode, at_least: u64, why: &str) -> bool {
    for _ in 0..60 {
        if !node.is_leader() {
            return false;
        }
        match service.run_base(node, at_least).await {
            Ok(Some(manifest)) => {
                tracing::info!(
                    log_index = manifest.log_index,
                    "log archive: took a base backup ({why})"
                );
                return true;
            }
            Ok(None) => return true,
            Err(BackupRunError::InProgress { .. }) => {
                tokio::time::sleep(Duration::from_secs(5)).await
            }
            Err(BackupRunError::NotLeader { .. }) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "log archive: the base backup ({why}) failed; retrying in 30 s");
                tokio::time::sleep(Duration::from_secs(30)).await
            }
        }
    }
    true
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where this node's database says the archive is: cluster id and current timeline, and the
/// first index that belongs to that timeline.
fn current_timeline(node: &RaftNode) -> Result<Option<(String, TimelineRecord, u64)>, String> {
    let meta = node
        .store()
        .committed_meta()
        .map_err(|e| format!("cannot read the database's timeline: {e}"))?;
    // No timeline yet: the cluster is bootstrapping; the archive starts once it has one.
    let (Some(first), Some(current)) = (meta.timeline_history.first(), meta.timeline()) else {
        return Ok(None);
    };
    // A timeline after the first starts right after the entry that started it (parent_index is
    // what the parent had applied before that entry).
    let first_index = current.parent_index.map_or(1, |p| p.saturating_add(2));
    Ok(Some((first.id.clone(), current.clone(), first_index)))
}

async fn open_cursor(archiver: &Arc<Archiver>, node: &RaftNode) -> Result<Option<Cursor>, String> {
    let Some((cluster_id, record, first_index)) = current_timeline(node)? else {
        return Ok(None);
    };
    let timeline = TimelineRef {
        id: record.id.clone(),
        counter: record.counter,
    };
    let dest = &archiver.settings.dest;
    let watermark = archive_watermark(dest, &cluster_id, &timeline.id)
        .await
        .map_err(|e| e.to_string())?;
    let cursor = match watermark {
        Some(w) => Cursor {
            cluster_id,
            timeline,
            next: w.last_index + 1,
            prev_sha256: Some(w.object_sha256),
        },
        None => {
            // The timeline's id is claimed in the destination with its record before its
            // archive starts: the history of timelines, and an alarm for a second lineage.
            claim_timeline(dest, &cluster_id, &record)
                .await
                .map_err(|e| e.to_string())?;
            // A new archive starts where this node's log does (or where the timeline does):
            // what came before is covered by base backups, not by this archive, so it starts
            // with one.
            let (first_on_disk, _) = node
                .archive_entries(first_index, 1)
                .await
                .map_err(|e| e.to_string())?;
            let next = first_on_disk.map_or(first_index, |f| f.max(first_index));
            request_base(
                archiver,
                node,
                next.saturating_sub(1),
                "the archive of a timeline starts",
            );
            Cursor {
                cluster_id,
                timeline,
                next,
                prev_sha256: None,
            }
        }
    };
    tracing::info!(
        destination = %archiver.label,
        timeline = %cursor.timeline.id,
        next = cursor.next,
        "log archive: this leader archives from index {}",
        cursor.next
    );
    node.archive_hold()
        .hold_after(cursor.next.saturating_sub(1));
    archiver.with_record(|r| {
        r.timeline = Some(cursor.timeline.id.clone());
        r.last_index = cursor.next.checked_sub(1);
    });
    Ok(Some(cursor))
}

/// The archive's form of a log entry: the entry itself ([`encode_archived`]), with its kind and
/// leader clock beside it for listings and `--to-time`.
fn to_archived(entry: &Entry) -> Result<ArchivedEntry, String> {
    let (kind, at_unix_ms) = match &entry.payload {
        EntryPayload::Blank => (ArchivedKind::Blank, None),
        EntryPayload::Membership(_) => (ArchivedKind::Membership, None),
        EntryPayload::Normal(Command::Write { at_unix_ms, .. }) => {
            (ArchivedKind::Command, Some(*at_unix_ms))
        }
        EntryPayload::Normal(_) => (ArchivedKind::Command, None),
    };
    Ok(ArchivedEntry {
        index: entry.log_id.index,
        term: entry.log_id.leader_id.term,
        at_unix_ms,
        kind,
        payload: encode_archived(entry)?,
    })
}

/// One pass: everything applied since the cursor, in segments.
async fn step(
    archiver: &Arc<Archiver>,
    node: &RaftNode,
    cursor: &mut Option<Cursor>,
    pace: &mut Pace,
) -> Result<(), String> {
    if cursor.is_none() {
        *cursor = open_cursor(archiver, node).await?;
    }
    let look = Instant::now();
    let applied = node.metrics().last_applied.map_or(0, |l| l.index);
    let Some(c) = cursor.as_ref() else {
        pace.last_look = look;
        return Ok(());
    };
    if c.next > applied {
        pace.pending_since = None;
        pace.last_look = look;
        archiver.set_lag(0, 0.0);
        return Ok(());
    }
    let (due, age) = pace.due(applied + 1 - c.next, look);
    pace.last_look = look;
    archiver.set_lag(applied + 1 - c.next, age.as_secs_f64());
    if !due {
        return Ok(());
    }
    let cut = Instant::now();
    archive_through(archiver, node, cursor, applied).await?;
    pace.last_cut = cut.elapsed();
    let archived = cursor.as_ref().map_or(0, |c| c.next.saturating_sub(1));
    let applied_now = node.metrics().last_applied.map_or(0, |l| l.index);
    // What was applied while this cut ran waits since its start at most.
    pace.pending_since = (applied_now > archived).then_some(cut);
    let lag = pace
        .pending_since
        .map_or(0.0, |since| since.elapsed().as_secs_f64());
    archiver.set_lag(applied_now.saturating_sub(archived), lag);
    Ok(())
}

/// Archives everything up to `applied` (at least), in segments closed at
/// [`MAX_SEGMENT_PLAIN_BYTES`] and at an entry that starts a new timeline.
async fn archive_through(
    archiver: &Arc<Archiver>,
    node: &RaftNode,
    cursor: &mut Option<Cursor>,
    applied: u64,
) -> Result<(), String> {
    loop {
        let Some(c) = cursor.as_mut() else {
            return Ok(());
        };
        if c.next > applied {
            return Ok(());
        }
        let (first_on_disk, entries) = node
            .archive_entries(c.next, READ_BATCH_ENTRIES)
            .await
            .map_err(|e| e.to_string())?;
        if entries.first().is_none_or(|e| e.log_id.index != c.next) {
            let resume = match (entries.first(), first_on_disk) {
                (Some(e), _) => e.log_id.index,
                (None, Some(f)) if f > c.next => f,
                _ => return Ok(()), // nothing readable yet
            };
            record_missing(archiver, node, c, resume).await?;
            continue;
        }
        // Cut at the entry that starts a new timeline (inclusive) and at the size bound.
        let mut segment: Vec<ArchivedEntry> = Vec::new();
        let mut bytes = 0usize;
        let mut switches_timeline = false;
        for entry in &entries {
            let archived = to_archived(entry)?;
            let len = entry_encoded_len(&archived);
            if !segment.is_empty() && bytes + len > MAX_SEGMENT_PLAIN_BYTES {
                break;
            }
            bytes += len;
            segment.push(archived);
            if starts_timeline(entry) {
                switches_timeline = true;
                break;
            }
        }
        let Some((segment, switches_timeline)) =
            claimed_range(archiver, node, c, segment, switches_timeline).await?
        else {
            return Ok(()); // the claimed range is not applied here yet: the next pass
        };
        upload(archiver, node, c, &segment).await?;
        if switches_timeline {
            tracing::info!("log archive: a restore started a new timeline; its archive starts now");
            *cursor = None;
            *cursor = open_cursor(archiver, node).await?;
        }
    }
}

/// How long a leader may take to confirm that it still leads before it archives a segment.
const LEADERSHIP_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Confirms that this node still leads (a stale leader, paused or cut off while another took
/// over, must not archive), then claims `segment`'s range ([`claim_segment`]) and returns the
/// entries to archive: `segment` itself, or exactly the range an earlier writer claimed from the
/// same index (`None` while this node has not applied all of it). With the timeline switch flag.
async fn claimed_range(
    archiver: &Archiver,
    node: &RaftNode,
    c: &Cursor,
    mut segment: Vec<ArchivedEntry>,
    switches_timeline: bool,
) -> Result<Option<(Vec<ArchivedEntry>, bool)>, String> {
    let Some(ours_last) = segment.last().map(|e| e.index) else {
        return Ok(None);
    };
    match tokio::time::timeout(LEADERSHIP_CHECK_TIMEOUT, node.ensure_linearizable()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(format!(
                "this node no longer leads ({e}); it stops archiving"
            ))
        }
        Err(_) => {
            return Err(format!(
                "this node could not confirm within {LEADERSHIP_CHECK_TIMEOUT:?} that it still \
                 leads; it archives nothing until it can"
            ))
        }
    }
    let claim = SegmentClaim {
        first_index: c.next,
        last_index: ours_last,
        node_id: node.id(),
        claimed_at_unix_ms: unix_ms(),
    };
    let held = claim_segment(
        &archiver.settings.dest,
        &c.cluster_id,
        &c.timeline.id,
        &claim,
    )
    .await
    .map_err(|e| e.to_string())?;
    if held.last_index == ours_last {
        return Ok(Some((segment, switches_timeline)));
    }
    tracing::warn!(
        first = c.next,
        ours = ours_last,
        claimed = held.last_index,
        by_node = held.node_id,
        "log archive: entries from {} on were claimed up to {} (by node {}) before this \
         leader cut its segment; archiving exactly that range",
        c.next,
        held.last_index,
        held.node_id
    );
    if held.last_index < ours_last {
        segment.retain(|e| e.index <= held.last_index);
        // The timeline-starting entry ends a segment, so it is past the claimed range.
        return Ok(Some((segment, false)));
    }
    let wanted = held.last_index - c.next + 1;
    let (_, entries) = node
        .archive_entries(c.next, wanted)
        .await
        .map_err(|e| e.to_string())?;
    if entries.last().map(|e| e.log_id.index) != Some(held.last_index) {
        return Ok(None);
    }
    let switches = entries.iter().any(starts_timeline);
    let segment = entries
        .iter()
        .map(to_archived)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((segment, switches)))
}

async fn upload(
    archiver: &Archiver,
    node: &RaftNode,
    c: &mut Cursor,
    entries: &[ArchivedEntry],
) -> Result<(), String> {
    let Some(last) = entries.last() else {
        return Ok(());
    };
    let settings = &archiver.settings;
    // Compression and encryption are CPU work (a passphrase's scrypt takes about a second):
    // off the async workers.
    let segment = {
        let (dest, encryption, level) = (
            settings.dest.clone(),
            settings.encryption.clone(),
            settings.zstd_level,
        );
        let (cluster_id, timeline, prev) = (
            c.cluster_id.clone(),
            c.timeline.clone(),
            c.prev_sha256.clone(),
        );
        let (node_id, entries) = (node.id(), entries.to_vec());
        tokio::task::spawn_blocking(move || {
            let draft = SegmentDraft {
                cluster_id: &cluster_id,
                timeline: &timeline,
                node_id,
                entries: &entries,
                prev_segment_sha256: prev,
            };
            encode_segment(&dest, &draft, encryption.as_ref(), level)
        })
        .await
        .map_err(|e| format!("the segment encoder stopped: {e}"))?
        .map_err(|e| e.to_string())?
    };
    // The stored object's hash chains the next segment: ours, or the one an earlier leader
    // wrote with the same entries.
    let (outcome, stored_sha256) = put_segment_for_chain(&settings.dest, &segment)
        .await
        .map_err(|e: BackupError| e.to_string())?;
    if matches!(outcome, PutOutcome::AlreadyPresent) {
        tracing::info!(
            first = entries.first().map_or(0, |e| e.index),
            last = last.index,
            "log archive: the segment was already there (written by an earlier leader)"
        );
    }
    c.next = last.index + 1;
    c.prev_sha256 = Some(stored_sha256);
    node.archive_hold().hold_after(last.index);
    if let Err(e) = node.release_archived(last.index).await {
        tracing::warn!(error = %e, "log archive: cannot delete archived entries the log kept; the next purge does");
    }
    metrics::counter!("raftlite_archive_segments_total", "destination" => archiver.label.clone())
        .increment(1);
    metrics::gauge!("raftlite_archive_last_index", "destination" => archiver.label.clone())
        .set(last.index as f64);
    let last_at = entries.iter().rev().find_map(|e| e.at_unix_ms);
    archiver.with_record(|r| {
        r.segments += 1;
        r.last_index = Some(last.index);
        if last_at.is_some() {
            r.last_entry_unix_ms = last_at;
        }
        r.last_upload_unix_ms = Some(unix_ms());
        r.last_error = None;
    });
    Ok(())
}

/// Entries `c.next..resume` are gone from this node's log: record the gap where every reader
/// of the archive sees it, and go on after it.
async fn record_missing(
    archiver: &Arc<Archiver>,
    node: &RaftNode,
    c: &mut Cursor,
    resume: u64,
) -> Result<(), String> {
    let gap = GapRecord {
        from_index: c.next,
        to_index: resume - 1,
        reason: "the entries were no longer in the leader's log when it archived (the \
                 destination was unreachable for longer than the log is kept, or this node \
                 became leader without them); take a backup to start a new base"
            .into(),
        node_id: node.id(),
        recorded_at_unix_ms: unix_ms(),
    };
    record_gap(&archiver.settings.dest, &c.cluster_id, &c.timeline.id, &gap)
        .await
        .map_err(|e| e.to_string())?;
    tracing::error!(
        destination = %archiver.label,
        from = gap.from_index,
        to = gap.to_index,
        "log archive: entries {}..={} are missing from the archive (gap recorded); a \
         point-in-time restore cannot target them",
        gap.from_index,
        gap.to_index
    );
    metrics::counter!("raftlite_archive_gaps_total", "destination" => archiver.label.clone())
        .increment(1);
    archiver.with_record(|r| r.gaps += 1);
    request_base(archiver, node, resume - 1, "entries were lost to a gap");
    c.next = resume;
    c.prev_sha256 = None;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_asked_for_while_another_is_taken_is_served_next() {
        let mut requests = BaseRequests::default();
        assert!(requests.ask(0, "the archive of a timeline starts"));
        assert_eq!(
            requests.next(),
            Some((0, "the archive of a timeline starts"))
        );
        // The worker is busy with index 0 when a gap asks for a base at 194: kept, not dropped.
        assert!(!requests.ask(194, "entries were lost to a gap"));
        assert!(!requests.ask(50, "the archive of a timeline starts"));
        assert_eq!(requests.next(), Some((194, "entries were lost to a gap")));
        assert_eq!(requests.next(), None);
        // The worker stopped: the next request starts one again.
        assert!(requests.ask(300, "entries were lost to a gap"));
        requests.abandon();
        assert_eq!(requests.next(), None);
        assert!(requests.ask(301, "entries were lost to a gap"));
    }

    #[test]
    fn a_cut_is_due_so_that_the_oldest_entry_waits_about_the_interval() {
        let start = Instant::now();
        let mut pace = Pace::new(Duration::from_secs(1));
        assert_eq!(pace.tick, Duration::from_millis(100));
        pace.last_look = start;
        pace.last_cut = Duration::from_millis(50);
        // Entries first seen 300 ms after the previous look: not yet.
        let (due, age) = pace.due(10, start + Duration::from_millis(300));
        assert!(!due);
        assert_eq!(age, Duration::from_millis(300));
        // Their start stays the previous look; by 850 ms the next tick plus the cut would pass 1 s.
        assert!(!pace.due(10, start + Duration::from_millis(800)).0);
        assert!(pace.due(10, start + Duration::from_millis(850)).0);
        // A full read batch waiting is cut at once.
        let mut pace = Pace::new(Duration::from_secs(1));
        pace.last_look = start;
        assert!(pace.due(READ_BATCH_ENTRIES, start).0);
        // Short and long intervals keep a sane tick.
        assert_eq!(
            Pace::new(Duration::from_millis(100)).tick,
            Duration::from_millis(20)
        );
        assert_eq!(
            Pace::new(Duration::from_secs(3600)).tick,
            Duration::from_millis(250)
        );
    }
}
