//! A second copy: finished backup sets and the log archive copied from one destination to
//! another, each object checked against the hash it was written with before it lands.
//!
//! [`copy_destination`] compares one recursive listing of each side (per cluster) and moves only
//! what the copy lacks, so running it again is idempotent and, when the two are in sync, costs
//! two listings.
//!
//! - **Backup sets**, oldest first (an incremental's parent lands before it; a parent the copy
//!   lacks is copied along even if it is older than the selection). Per set the data object
//!   (`db.sqlite.zst[.age]` or `pages.zst[.age]`) is streamed through a multipart upload with
//!   bounded memory while its sha256 and size are computed; when they differ from the manifest's
//!   `stored_sha256`/`stored_size` the upload is aborted, so a damaged source never lands. Then
//!   `manifest.json` is written, create-only and byte for byte as in the source, last: a set
//!   in the copy is complete or invisible, as in the source. Finally the source records the copy
//!   in the set's folder ([`COPIES_DIR`]`/<key>.json`, [`CopyMarker`]): listings show it, and a
//!   set the copy's own retention deleted later is not copied again (unless asked for by id or
//!   with [`CopySelection::recopy`]).
//! - **The log archive** (`<cluster>/timelines/` first, then per timeline its claims, gap
//!   records and segments in index order), create-only. Each segment's header and body hash are
//!   checked before it is put; a segment that fails stops that timeline's copy there, so the
//!   copy never has a hole the source has not. Objects below the copy's oldest segment of a
//!   timeline were pruned by the copy's own archive retention and are not copied again.
//!   Restore leases are not copied: they hold back the retention of the destination they are in.
//!
//! Only listing either destination is an error; everything else is reported per object in
//! [`CopyReport`] and the rest goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::archive::{
    check_body, parse_gap_name, parse_segment_name, read_segment, split_object, GapRecord,
    SegmentClaim, ARCHIVE_DIR, CLAIMS_DIR, GAPS_DIR, TIMELINES_DIR,
};
use crate::create::{run_blocking, PARTS_IN_FLIGHT, PART_SIZE};
use crate::destination::Destination;
use crate::error::BackupError;
use crate::list::{list_backups, BackupList};
use crate::manifest::{
    check_segment, marker_key_of, rfc3339, sha256_hex, BackupId, BackupKind, Manifest, BACKUPS_DIR,
    COPIES_DIR, COPY_KEY_HEX, MANIFEST_FILE, MARKER_SUFFIX,
};

/// Pieces of a data object queued for its hashing thread.
const HASH_QUEUE: usize = 4;

/// The key under which a source records copies to `dest`: the first 16 hex digits of the
/// sha256 of its label (scheme, bucket or directory, prefix; never credentials).
pub fn copy_key(dest: &Destination) -> String {
    let mut key = sha256_hex(&dest.label());
    key.truncate(COPY_KEY_HEX);
    key
}

/// `copies/<key>.json` in a set of the source: the set was copied to `destination`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyMarker {
    /// The copy's label as [`Destination`] displays it.
    pub destination: String,
    /// RFC 3339, UTC.
    pub copied_at: String,
    pub copied_at_unix_ms: i64,
    pub raftlite_version: String,
}

/// What [`copy_destination`] copies.
#[derive(Clone, Debug)]
pub struct CopySelection {
    /// Only these sets (with the parents an incremental among them needs); empty: every
    /// complete set. A set named here is copied even if the source records an earlier copy.
    pub ids: Vec<BackupId>,
    /// Only this cluster's sets and archive; `None`: every cluster in the source (or the
    /// clusters of `ids`).
    pub cluster: Option<String>,
    /// Also copy the log archive (timeline records, claims, gap records, segments).
    pub archive: bool,
    /// Also copy sets the source records as copied before that the copy no longer has (its
    /// retention deleted them, or the copy was emptied).
    pub recopy: bool,
    /// Bytes per second the backup sets are copied at, at most (0: no limit), read as the copy
    /// goes: the leader lowers it while it applies writes, so that a copy sharing a disk with
    /// the log does not stretch the log's fsyncs.
    pub pace: Option<Arc<AtomicU64>>,
}

impl Default for CopySelection {
    fn default() -> Self {
        CopySelection {
            ids: Vec::new(),
            cluster: None,
            archive: true,
            recopy: false,
            pace: None,
        }
    }
}

impl CopySelection {
    /// The clusters to list, `None` for the whole destination; refuses a bad cluster id and ids
    /// of another cluster than `cluster`.
    fn clusters(&self) -> Result<Option<BTreeSet<String>>, BackupError> {
        let mut clusters = BTreeSet::new();
        if let Some(cluster) = &self.cluster {
            check_segment(cluster).map_err(|reason| BackupError::InvalidOptions {
                reason: format!(
                    "cluster id {cluster:?}: {reason}; give the part before the `/` of the ids \
                     `raftlite backup list` prints"
                ),
            })?;
            clusters.insert(cluster.clone());
        }
        for id in &self.ids {
            if self.cluster.as_ref().is_some_and(|c| c != id.cluster_id()) {
                return Err(BackupError::InvalidOptions {
                    reason: format!(
                        "backup {id} is not of cluster {:?}; leave out the cluster or that id",
                        self.cluster.as_deref().unwrap_or_default()
                    ),
                });
            }
            clusters.insert(id.cluster_id().to_string());
        }
        Ok((!clusters.is_empty()).then_some(clusters))
    }

    fn wants(&self, id: &BackupId) -> bool {
        (self.ids.is_empty() || self.ids.contains(id))
            && self.cluster.as_ref().is_none_or(|c| c == id.cluster_id())
    }
}

/// A set [`copy_destination`] copied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CopiedSet {
    pub id: BackupId,
    pub kind: BackupKind,
    pub created_at: String,
    pub stored_size: u64,
}

/// A set [`copy_destination`] left alone on purpose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedSet {
    pub id: BackupId,
    pub reason: String,
}

/// An object (a set by its id, an archive object by its path) that could not be copied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CopyFailure {
    pub object: String,
    pub reason: String,
}

/// Something the copy still lacks after the pass, and when the source finished it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Remaining {
    pub object: String,
    pub finished_unix_ms: i64,
}

/// What [`copy_destination`] did with the log archive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ArchiveCopyReport {
    /// Objects copied (timeline records, claims, gap records, segments).
    pub copied: u64,
    /// Of which segments.
    pub segments: u64,
    pub copied_bytes: u64,
    /// Objects the copy had already.
    pub present: u64,
    /// Objects older than the copy's oldest segment of their timeline: its own archive
    /// retention removed them, so they are not copied again.
    pub pruned_in_copy: u64,
}

/// The result of [`copy_destination`]. The copy is complete when `failed` is empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    pub from: String,
    pub to: String,
    /// When the source was listed: whatever the source finished before is in the copy now,
    /// unless listed in `remaining`.
    pub started_unix_ms: i64,
    /// Sets copied, oldest first.
    pub copied: Vec<CopiedSet>,
    /// Bytes of the data objects copied.
    pub copied_bytes: u64,
    /// Selected sets the copy had already.
    pub present: u64,
    pub skipped: Vec<SkippedSet>,
    pub failed: Vec<CopyFailure>,
    /// `None` when the archive was not selected.
    pub archive: Option<ArchiveCopyReport>,
    /// What the copy still lacks (the failures, and archive objects after a segment that failed).
    pub remaining: Vec<Remaining>,
}

impl CopyReport {
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }

    /// The oldest thing the copy still lacks, by when the source finished it.
    pub fn oldest_remaining_unix_ms(&self) -> Option<i64> {
        self.remaining.iter().map(|r| r.finished_unix_ms).min()
    }

    fn fail(&mut self, object: String, reason: String, finished_unix_ms: i64) {
        self.remaining.push(Remaining {
            object: object.clone(),
            finished_unix_ms,
        });
        self.failed.push(CopyFailure { object, reason });
    }
}

/// What a copy lacks as far as the source alone tells ([`pending_copies`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pending {
    pub objects: u64,
    pub oldest_unix_ms: Option<i64>,
}

/// Copies to `to` every selected complete backup set of `from` that `to` lacks, and (with
/// [`CopySelection::archive`]) every archive object it lacks; see the module documentation.
/// Only listing either destination (or a bad selection) is an error; a set or object that
/// cannot be copied is reported in [`CopyReport::failed`] and the others go on.
pub async fn copy_destination(
    from: &Destination,
    to: &Destination,
    select: &CopySelection,
) -> Result<CopyReport, BackupError> {
    if from.label() == to.label() {
        return Err(BackupError::InvalidOptions {
            reason: format!(
                "the source and the copy are the same destination ({from}); give another one"
            ),
        });
    }
    let clusters = select.clusters()?;
    let started_unix_ms = now_unix_ms();
    let source = scan(from, clusters.as_ref()).await?;
    let target = scan(to, clusters.as_ref()).await?;
    let mut report = CopyReport {
        from: from.label(),
        to: to.label(),
        started_unix_ms,
        copied: Vec::new(),
        copied_bytes: 0,
        present: 0,
        skipped: Vec::new(),
        failed: Vec::new(),
        archive: None,
        remaining: Vec::new(),
    };
    copy_sets(from, to, select, &source, &target, &mut report).await?;
    if select.archive {
        let archive = copy_archive(from, to, &source, &target, &mut report).await;
        report.archive = Some(archive);
    }
    Ok(report)
}

/// What `to` lacks of `from`'s selection as far as `from` alone tells, for when `to` cannot be
/// listed: the complete sets without a marker for `to`, and the archive objects `from` finished
/// after `since_unix_ms` (all of them when `None`).
pub async fn pending_copies(
    from: &Destination,
    to: &Destination,
    select: &CopySelection,
    since_unix_ms: Option<i64>,
) -> Result<Pending, BackupError> {
    let clusters = select.clusters()?;
    let source = scan(from, clusters.as_ref()).await?;
    let key = copy_key(to);
    let mut times: Vec<i64> = source
        .sets
        .iter()
        .filter(|(id, set)| select.wants(id) && !set.markers.contains(&key))
        .filter_map(|(_, set)| set.manifest_ms)
        .collect();
    if select.archive {
        let newer = |ms: i64| since_unix_ms.is_none_or(|since| ms > since);
        times.extend(
            source
                .timelines
                .values()
                .chain(source.archive.values().flatten())
                .map(|o| o.modified_ms)
                .filter(|&ms| newer(ms)),
        );
    }
    Ok(Pending {
        objects: times.len() as u64,
        oldest_unix_ms: times.into_iter().min(),
    })
}

/// The destinations the sets of `list` were copied to, by marker key ([`copy_key`]): one
/// marker read per key (a few requests, not one per set). A key whose marker cannot be read
/// maps to itself.
pub async fn copy_labels(dest: &Destination, list: &BackupList) -> BTreeMap<String, String> {
    let mut first_with: BTreeMap<&str, &BackupId> = BTreeMap::new();
    for (id, keys) in &list.copies {
        for key in keys {
            first_with.entry(key.as_str()).or_insert(id);
        }
    }
    let mut labels = BTreeMap::new();
    for (key, id) in first_with {
        let path = marker_path(dest, id, key);
        let label = match get_small(dest, &path).await {
            Ok(bytes) => serde_json::from_slice::<CopyMarker>(&bytes)
                .map(|m| m.destination)
                .unwrap_or_else(|_| key.to_string()),
            Err(_) => key.to_string(),
        };
        labels.insert(key.to_string(), label);
    }
    labels
}

// ---------------------------------------------------------------------------------------------
// The listing of one side
// ---------------------------------------------------------------------------------------------

/// A set folder as listed.
#[derive(Default)]
struct ScannedSet {
    /// When its manifest was written (Unix ms), if it has one.
    manifest_ms: Option<i64>,
    /// Keys of its copy markers.
    markers: BTreeSet<String>,
}

/// The kinds of archive objects, in the order a copy writes those of one index (a claim
/// before its segment, as the archiver does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ArchiveKind {
    Claim,
    Gap,
    Segment,
    Timeline,
}

/// An archive object as listed: where it lies relative to the prefix and what its name says.
#[derive(Clone, Debug)]
struct ArchiveObject {
    kind: ArchiveKind,
    /// Path parts below the destination's prefix (checked names only).
    parts: Vec<String>,
    cluster: String,
    /// The timeline the object belongs to (a timeline record's own id).
    timeline: String,
    first: u64,
    last: u64,
    modified_ms: i64,
}

impl ArchiveObject {
    fn path_in(&self, dest: &Destination) -> ObjectPath {
        self.parts
            .iter()
            .fold(dest.prefix().clone(), |path, part| path.join(part.as_str()))
    }

    fn name(&self) -> String {
        self.parts.join("/")
    }

    /// The last index the object is about: below the copy's oldest segment it was pruned.
    fn end_index(&self) -> u64 {
        match self.kind {
            ArchiveKind::Claim => self.first,
            _ => self.last,
        }
    }
}

#[derive(Default)]
struct Scan {
    sets: BTreeMap<BackupId, ScannedSet>,
    /// Timeline records, by path.
    timelines: BTreeMap<String, ArchiveObject>,
    /// Claims, gap records and segments per (cluster, timeline).
    archive: BTreeMap<(String, String), Vec<ArchiveObject>>,
}

impl Scan {
    fn has_manifest(&self, id: &BackupId) -> bool {
        self.sets.get(id).is_some_and(|s| s.manifest_ms.is_some())
    }

    /// The first index of the oldest segment of a timeline.
    fn oldest_segment(&self, key: &(String, String)) -> Option<u64> {
        self.archive
            .get(key)?
            .iter()
            .filter(|o| o.kind == ArchiveKind::Segment)
            .map(|o| o.first)
            .min()
    }
}

/// One recursive listing of `dest` (of each of `clusters`' folders, or of the whole prefix).
async fn scan(
    dest: &Destination,
    clusters: Option<&BTreeSet<String>>,
) -> Result<Scan, BackupError> {
    let prefix = dest.prefix().clone();
    let roots: Vec<Option<ObjectPath>> = match clusters {
        Some(clusters) => clusters
            .iter()
            .map(|c| Some(prefix.clone().join(c.as_str())))
            .collect(),
        // The store's root is listed as `None`: some stores read an empty prefix as "/".
        None => vec![(!prefix.is_root()).then(|| prefix.clone())],
    };
    let mut scan = Scan::default();
    for root in roots {
        let objects: Vec<_> = dest
            .store()
            .list(root.as_ref())
            .try_collect()
            .await
            .map_err(|source| BackupError::List {
                dest: dest.label(),
                source: Box::new(source),
            })?;
        for object in objects {
            let Some(parts) = object.location.prefix_match(&prefix) else {
                continue;
            };
            let parts: Vec<String> = parts.map(|p| p.as_ref().to_string()).collect();
            scan.add(parts, object.last_modified.timestamp_millis());
        }
    }
    for objects in scan.archive.values_mut() {
        objects.sort_by_key(|o| (o.first, o.kind, o.last));
    }
    Ok(scan)
}

impl Scan {
    fn add(&mut self, parts: Vec<String>, modified_ms: i64) {
        let Some(cluster) = parts.first().filter(|c| check_segment(c).is_ok()).cloned() else {
            return;
        };
        let archive =
            |kind: ArchiveKind, timeline: &str, (first, last): (u64, u64)| ArchiveObject {
                kind,
                parts: parts.clone(),
                cluster: cluster.clone(),
                timeline: timeline.to_string(),
                first,
                last,
                modified_ms,
            };
        let object = match parts.as_slice() {
            [_, backups, set, rest @ ..] if backups == BACKUPS_DIR => {
                let Ok(id) = BackupId::new(&cluster, set) else {
                    return;
                };
                match rest {
                    [file] => {
                        let entry = self.sets.entry(id).or_default();
                        if file == MANIFEST_FILE {
                            entry.manifest_ms = Some(modified_ms);
                        }
                    }
                    [dir, file] if dir == COPIES_DIR => {
                        if let Some(key) = marker_key_of(file) {
                            self.sets.entry(id).or_default().markers.insert(key);
                        }
                    }
                    _ => {}
                }
                return;
            }
            [_, timelines, file] if timelines == TIMELINES_DIR => {
                match file
                    .strip_suffix(".json")
                    .filter(|t| check_segment(t).is_ok())
                {
                    Some(timeline) => archive(ArchiveKind::Timeline, timeline, (0, 0)),
                    None => return,
                }
            }
            [_, dir, timeline, rest @ ..] if dir == ARCHIVE_DIR => {
                if check_segment(timeline).is_err() {
                    return;
                }
                let parsed = match rest {
                    [name] => parse_segment_name(name).map(|r| (ArchiveKind::Segment, r)),
                    [sub, name] if sub == GAPS_DIR => {
                        parse_gap_name(name).map(|r| (ArchiveKind::Gap, r))
                    }
                    [sub, name] if sub == CLAIMS_DIR => {
                        parse_claim_name(name).map(|first| (ArchiveKind::Claim, (first, first)))
                    }
                    // Leases and anything unknown stay where they are.
                    _ => None,
                };
                match parsed {
                    Some((kind, range)) => archive(kind, timeline, range),
                    None => return,
                }
            }
            _ => return,
        };
        if object.kind == ArchiveKind::Timeline {
            self.timelines.insert(object.name(), object);
        } else {
            self.archive
                .entry((object.cluster.clone(), object.timeline.clone()))
                .or_default()
                .push(object);
        }
    }

    /// Whether `object`'s path is listed here.
    fn has_archive_object(&self, object: &ArchiveObject) -> bool {
        match object.kind {
            ArchiveKind::Timeline => self.timelines.contains_key(&object.name()),
            _ => self
                .archive
                .get(&(object.cluster.clone(), object.timeline.clone()))
                .is_some_and(|objects| objects.iter().any(|o| o.parts == object.parts)),
        }
    }
}

/// The first index of a claim's name, `<first:020>.json`.
fn parse_claim_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".json")?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

// ---------------------------------------------------------------------------------------------
// Backup sets
// ---------------------------------------------------------------------------------------------

async fn copy_sets(
    from: &Destination,
    to: &Destination,
    select: &CopySelection,
    source: &Scan,
    target: &Scan,
    report: &mut CopyReport,
) -> Result<(), BackupError> {
    let key = copy_key(to);
    let now = now_unix_ms();
    for id in &select.ids {
        if !source.has_manifest(id) {
            report.fail(
                id.to_string(),
                format!(
                    "{from} has no complete backup {id}; list them with `raftlite backup list`"
                ),
                now,
            );
        }
    }
    let mut wanted = BTreeSet::new();
    let mut unmarked = Vec::new();
    for (id, set) in &source.sets {
        if set.manifest_ms.is_none() || !select.wants(id) {
            continue;
        }
        let marked = set.markers.contains(&key);
        if target.has_manifest(id) {
            report.present += 1;
            if !marked {
                unmarked.push(id.clone());
            }
        } else if marked && !select.recopy && !select.ids.contains(id) {
            report.skipped.push(SkippedSet {
                id: id.clone(),
                reason: "copied before and deleted from the copy since (by its retention); name \
                         it with --id (or give --recopy) to copy it again"
                    .into(),
            });
        } else {
            wanted.insert(id.clone());
        }
    }
    // Sets copied by an earlier pass whose marker could not be written.
    for id in unmarked {
        if let Err(e) = write_marker(from, to, &id).await {
            tracing::debug!(%id, error = %e, "cannot record a copy in the source; the next pass retries");
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }

    // The manifests (and which sets count) only when there is something to copy.
    let listing = list_backups(from).await?;
    let manifests: BTreeMap<&BackupId, &Manifest> =
        listing.backups.iter().map(|(id, m)| (id, m)).collect();
    let mut plan: BTreeMap<BackupId, Manifest> = BTreeMap::new();
    for id in wanted {
        let finished = source
            .sets
            .get(&id)
            .and_then(|s| s.manifest_ms)
            .unwrap_or(now);
        if let Some(m) = manifests.get(&id) {
            plan.insert(id, (*m).clone());
        } else if listing.superseded.iter().any(|(s, _)| *s == id) {
            report.skipped.push(SkippedSet {
                id,
                reason: "superseded by a later leader's backup of the same schedule slot".into(),
            });
        } else if let Some(w) = listing.warnings.iter().find(|w| w.id == id) {
            let reason = format!("its manifest.json in {from} is unusable: {}", w.reason);
            report.fail(id.to_string(), reason, finished);
        }
        // Otherwise it was deleted since the first listing (retention): nothing to copy.
    }
    // The parents an incremental needs and the copy lacks come along, even if not selected.
    let mut queue: Vec<BackupId> = plan.keys().cloned().collect();
    while let Some(id) = queue.pop() {
        let Some(parent) = plan.get(&id).and_then(|m| m.parent.clone()) else {
            continue;
        };
        if plan.contains_key(&parent.id) || target.has_manifest(&parent.id) {
            continue;
        }
        if let Some(m) = manifests.get(&parent.id) {
            plan.insert(parent.id.clone(), (*m).clone());
            queue.push(parent.id);
        }
    }
    let mut ordered: Vec<(BackupId, Manifest)> = plan.into_iter().collect();
    ordered.sort_by(|(a_id, a), (b_id, b)| {
        (a.created_at_unix_ms, a.timeline.counter, a.log_index, a_id).cmp(&(
            b.created_at_unix_ms,
            b.timeline.counter,
            b.log_index,
            b_id,
        ))
    });

    let mut landed: BTreeSet<BackupId> = BTreeSet::new();
    let mut failed: BTreeSet<BackupId> = BTreeSet::new();
    for (id, manifest) in ordered {
        let finished = source
            .sets
            .get(&id)
            .and_then(|s| s.manifest_ms)
            .unwrap_or(now);
        if let Some(parent) = &manifest.parent {
            if !landed.contains(&parent.id) && !target.has_manifest(&parent.id) {
                let reason = if failed.contains(&parent.id) {
                    format!("its parent {} could not be copied (above)", parent.id)
                } else {
                    format!(
                        "its parent {} is in neither {from} nor {to}, so the copy could not \
                         restore it",
                        parent.id
                    )
                };
                report.fail(id.to_string(), reason, finished);
                failed.insert(id);
                continue;
            }
        }
        match copy_set(from, to, &id, select.pace.as_deref()).await {
            Ok(SetOutcome::Copied(copied)) => {
                report.copied_bytes += copied.stored_size;
                report.copied.push(copied);
                landed.insert(id.clone());
                if let Err(e) = write_marker(from, to, &id).await {
                    tracing::warn!(
                        source = %from, copy = %to, %id, error = %e,
                        "the backup was copied but the source could not record it; the next copy \
                         pass records it"
                    );
                }
            }
            Ok(SetOutcome::AlreadyThere) => {
                report.present += 1;
                landed.insert(id);
            }
            Ok(SetOutcome::SourceGone) => report.skipped.push(SkippedSet {
                id,
                reason: "deleted from the source while it was copied (retention)".into(),
            }),
            Err(reason) => {
                report.fail(id.to_string(), reason, finished);
                failed.insert(id);
            }
        }
    }
    Ok(())
}

enum SetOutcome {
    Copied(CopiedSet),
    /// The copy got the manifest meanwhile (another copier).
    AlreadyThere,
    /// The source lost the set meanwhile.
    SourceGone,
}

/// Why an object was not copied.
enum ObjectError {
    /// The source no longer has it (its retention deleted it meanwhile).
    SourceGone,
    Failed(String),
}

/// Copies one set: the data object checked against the manifest as stored in `from`, then that
/// manifest byte for byte, create-only. `Err` says why, and nothing of the set is visible in
/// `to` then.
async fn copy_set(
    from: &Destination,
    to: &Destination,
    id: &BackupId,
    pace: Option<&AtomicU64>,
) -> Result<SetOutcome, String> {
    let manifest_path = from.set_dir(id).join(MANIFEST_FILE);
    let bytes = match get_small(from, &manifest_path).await {
        Ok(bytes) => bytes,
        Err(object_store::Error::NotFound { .. }) => return Ok(SetOutcome::SourceGone),
        Err(e) => return Err(format!("reading its manifest.json from {from} failed: {e}")),
    };
    // The hashes the data must match are those of the manifest that will be copied.
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| format!("its manifest.json in {from} is not a manifest: {e}"))?;
    manifest
        .check(id)
        .map_err(|reason| format!("its manifest.json in {from} is unusable: {reason}"))?;
    let name = manifest.object_name();
    let source = from.set_dir(id).join(name);
    let target = to.set_dir(id).join(name);
    match stream_checked(from, to, &source, &target, &manifest, pace).await {
        Ok(()) => {}
        Err(ObjectError::SourceGone) => return Ok(SetOutcome::SourceGone),
        Err(ObjectError::Failed(reason)) => return Err(format!("{name}: {reason}")),
    }
    let manifest_target = to.set_dir(id).join(MANIFEST_FILE);
    match put_create_only(to, &manifest_target, bytes).await {
        Ok(true) => Ok(SetOutcome::Copied(CopiedSet {
            id: id.clone(),
            kind: manifest.kind,
            created_at: manifest.created_at.clone(),
            stored_size: manifest.stored_size,
        })),
        Ok(false) => Ok(SetOutcome::AlreadyThere),
        Err(e) => {
            // Without its manifest the data object is garbage the copy's readers ignore anyway.
            let _ = to.store().delete(&target).await;
            Err(format!(
                "writing manifest.json to {to} failed: {e}; the data object was removed again, \
                 so the copy holds no half set; the next copy retries"
            ))
        }
    }
}

/// Streams `source` of `from` to `target` of `to` with a multipart upload, hashing it on a
/// blocking thread; the upload completes only when size and sha256 match `manifest`'s stored
/// ones, and is aborted otherwise (nothing lands).
async fn stream_checked(
    from: &Destination,
    to: &Destination,
    source: &ObjectPath,
    target: &ObjectPath,
    manifest: &Manifest,
    pace: Option<&AtomicU64>,
) -> Result<(), ObjectError> {
    let expected = manifest.stored_size;
    let damaged = |what: String| {
        ObjectError::Failed(format!(
            "{what} in {from}: the source is damaged and was not copied; check it with \
             `raftlite backup verify --from {from}` (the copy keeps its older backups)"
        ))
    };
    let got = match from.store().get(source).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Err(ObjectError::SourceGone),
        Err(e) => {
            return Err(ObjectError::Failed(format!(
                "reading it from {from} failed: {e}"
            )))
        }
    };
    if got.meta.size != expected {
        return Err(damaged(format!(
            "it has {} bytes but its manifest says {expected}",
            got.meta.size
        )));
    }
    let upload = to
        .store()
        .put_multipart(target)
        .await
        .map_err(|e| ObjectError::Failed(format!("starting its upload to {to} failed: {e}")))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    let (pieces, hashing) = hash_in_background();
    let (mut stream, local_reader) = object_stream(got);
    let mut size = 0u64;
    let mut paced = Paced::new(pace);
    let streamed: Result<(), ObjectError> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ObjectError::Failed(format!("reading it from {from} failed midway: {e}"))
            })?;
            size += chunk.len() as u64;
            if size > expected {
                return Err(damaged(format!(
                    "it has more bytes than the {expected} its manifest says"
                )));
            }
            writer
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(|e| ObjectError::Failed(format!("uploading it to {to} failed: {e}")))?;
            if pieces.send(chunk.clone()).await.is_err() {
                return Err(ObjectError::Failed("its hashing thread stopped".into()));
            }
            writer.put(chunk);
            paced.wait(size).await;
        }
        Ok(())
    }
    .await;
    drop(stream);
    let streamed = match (streamed, local_reader) {
        (Ok(()), Some(reader)) => match reader.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ObjectError::Failed(format!(
                "reading it from {from} failed midway: {e}"
            ))),
            Err(e) => Err(ObjectError::Failed(format!(
                "its reading thread failed: {e}"
            ))),
        },
        (streamed, _) => streamed,
    };
    drop(pieces);
    let sha256 = hashing.await;
    let checked = streamed.and_then(|()| match sha256 {
        Err(e) => Err(ObjectError::Failed(format!(
            "its hashing thread failed: {e}"
        ))),
        Ok(_) if size != expected => Err(damaged(format!(
            "it has {size} bytes but its manifest says {expected}"
        ))),
        Ok(actual) if actual != manifest.stored_sha256 => Err(damaged(format!(
            "its sha256 is {actual} but its manifest says {}",
            manifest.stored_sha256
        ))),
        Ok(_) => Ok(()),
    });
    if let Err(e) = checked {
        if let Err(abort) = writer.abort().await {
            tracing::warn!(copy = %to, object = %target, error = %abort, "aborting the upload of a refused copy failed; the copy ignores the object (no manifest)");
        }
        return Err(e);
    }
    // `finish` aborts the upload itself when a part or the completion fails.
    writer
        .finish()
        .await
        .map(|_| ())
        .map_err(|e| ObjectError::Failed(format!("completing its upload to {to} failed: {e}")))
}

/// The object's bytes as a stream. A local object (`file://`) is read in large blocks on a
/// thread of its own, with that thread's result: object_store's own stream of a local file
/// reads 8 KiB per step, each on the blocking pool, which costs the node's CPU far more than
/// the copy's pace.
#[allow(clippy::type_complexity)]
fn object_stream(
    got: object_store::GetResult,
) -> (
    futures::stream::BoxStream<'static, Result<Bytes, object_store::Error>>,
    Option<tokio::task::JoinHandle<Result<(), String>>>,
) {
    match got.payload {
        object_store::GetResultPayload::File(file, path) => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(crate::pipe::CHANNEL_DEPTH);
            let range = got.range.clone();
            let reader = tokio::task::spawn_blocking(move || {
                crate::verify::read_local_object(file, range, &tx)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
            });
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|piece| (Ok::<Bytes, object_store::Error>(piece), rx))
            })
            .boxed();
            (stream, Some(reader))
        }
        object_store::GetResultPayload::Stream(stream) => (stream, None),
    }
}

/// Keeps a copy at or under its pace: after each piece it sleeps until the bytes so far fit the
/// rate, counted from the moment the rate last changed.
struct Paced<'a> {
    pace: Option<&'a AtomicU64>,
    /// Rate, bytes and time when the rate last changed.
    since: (u64, u64, std::time::Instant),
}

impl<'a> Paced<'a> {
    fn new(pace: Option<&'a AtomicU64>) -> Paced<'a> {
        Paced {
            pace,
            since: (0, 0, std::time::Instant::now()),
        }
    }

    async fn wait(&mut self, bytes: u64) {
        let Some(pace) = self.pace else {
            return;
        };
        let rate = pace.load(Ordering::Relaxed);
        if rate != self.since.0 {
            self.since = (rate, bytes, std::time::Instant::now());
        }
        if rate == 0 {
            return;
        }
        let due = std::time::Duration::from_secs_f64((bytes - self.since.1) as f64 / rate as f64);
        let elapsed = self.since.2.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// A sha256 of the pieces sent, computed on the blocking pool (a backup of gigabytes would
/// otherwise occupy an async worker that serves requests).
fn hash_in_background() -> (
    tokio::sync::mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<String>,
) {
    let (pieces, mut received) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE);
    let hashing = tokio::task::spawn_blocking(move || {
        let mut hasher = sha2::Sha256::new();
        while let Some(piece) = received.blocking_recv() {
            hasher.update(&piece);
        }
        raftlite_store::hex::encode(&hasher.finalize())
    });
    (pieces, hashing)
}

fn marker_path(dest: &Destination, id: &BackupId, key: &str) -> ObjectPath {
    dest.set_dir(id)
        .join(COPIES_DIR)
        .join(format!("{key}{MARKER_SUFFIX}").as_str())
}

/// Records in `from`'s set `id` that it was copied to `to`.
async fn write_marker(
    from: &Destination,
    to: &Destination,
    id: &BackupId,
) -> Result<(), object_store::Error> {
    let now = now_unix_ms();
    let marker = CopyMarker {
        destination: to.label(),
        copied_at: rfc3339(now),
        copied_at_unix_ms: now,
        raftlite_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let body = serde_json::to_vec_pretty(&marker).unwrap_or_default();
    from.store()
        .put(
            &marker_path(from, id, &copy_key(to)),
            PutPayload::from(body),
        )
        .await
        .map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// The log archive
// ---------------------------------------------------------------------------------------------

async fn copy_archive(
    from: &Destination,
    to: &Destination,
    source: &Scan,
    target: &Scan,
    report: &mut CopyReport,
) -> ArchiveCopyReport {
    let mut archive = ArchiveCopyReport::default();
    // The timeline records first: they are the history a restore from the copy reads.
    for object in source.timelines.values() {
        if target.has_archive_object(object) {
            archive.present += 1;
            continue;
        }
        match copy_small(from, to, object).await {
            Ok(copied) => archive.count(object, copied),
            Err(ObjectError::SourceGone) => {}
            Err(ObjectError::Failed(reason)) => {
                report.fail(object.name(), reason, object.modified_ms)
            }
        }
    }
    for (key, objects) in &source.archive {
        let oldest_in_copy = target.oldest_segment(key);
        let mut stopped = false;
        for object in objects {
            if target.has_archive_object(object) {
                archive.present += 1;
                continue;
            }
            if oldest_in_copy.is_some_and(|oldest| object.end_index() < oldest) {
                archive.pruned_in_copy += 1;
                continue;
            }
            if stopped {
                report.remaining.push(Remaining {
                    object: object.name(),
                    finished_unix_ms: object.modified_ms,
                });
                continue;
            }
            let result = match object.kind {
                ArchiveKind::Segment => copy_segment(from, to, object).await,
                _ => copy_small(from, to, object).await,
            };
            match result {
                Ok(copied) => archive.count(object, copied),
                Err(ObjectError::SourceGone) => {}
                Err(ObjectError::Failed(reason)) => {
                    // A claim or gap record missing is shown by verify; a segment missing would
                    // be a hole in the copy's chain, so the timeline waits for it.
                    stopped = object.kind == ArchiveKind::Segment;
                    report.fail(object.name(), reason, object.modified_ms);
                }
            }
        }
    }
    archive
}

impl ArchiveCopyReport {
    /// Counts one object: `Some(bytes)` copied, `None` found in the copy already.
    fn count(&mut self, object: &ArchiveObject, copied: Option<u64>) {
        match copied {
            Some(bytes) => {
                self.copied += 1;
                self.copied_bytes += bytes;
                if object.kind == ArchiveKind::Segment {
                    self.segments += 1;
                }
            }
            None => self.present += 1,
        }
    }
}

/// Copies a segment once its header and body hash check out and it holds what its name says.
/// `Ok(Some(bytes))` when copied, `Ok(None)` when the same object was there already.
async fn copy_segment(
    from: &Destination,
    to: &Destination,
    object: &ArchiveObject,
) -> Result<Option<u64>, ObjectError> {
    let source = object.path_in(from);
    let bytes = match read_segment(from, &source).await {
        Ok(bytes) => bytes,
        Err(BackupError::ArchiveStore { source, .. })
            if matches!(*source, object_store::Error::NotFound { .. }) =>
        {
            return Err(ObjectError::SourceGone)
        }
        Err(e) => return Err(ObjectError::Failed(e.to_string())),
    };
    let (cluster, timeline, range) = (
        object.cluster.clone(),
        object.timeline.clone(),
        (object.first, object.last),
    );
    let checked = run_blocking(&from.label(), move || {
        let (header, body) = split_object(&bytes)?;
        check_body(&header, body)?;
        let placed = header.cluster_id == cluster
            && header.timeline.id == timeline
            && (header.first_index, header.last_index) == range;
        if !placed {
            return Err(BackupError::ArchiveSegment {
                segment: header.name(),
                reason: format!(
                    "it holds entries {}-{} of {}/{} but is stored as entries {}-{} of \
                     {cluster}/{timeline}",
                    header.first_index,
                    header.last_index,
                    header.cluster_id,
                    header.timeline.id,
                    range.0,
                    range.1
                ),
            });
        }
        Ok(bytes)
    })
    .await
    .map_err(|e| ObjectError::Failed(e.to_string()))?
    .map_err(|e| {
        ObjectError::Failed(format!(
            "{e}; it was not copied, and the copy of this timeline waits before it"
        ))
    })?;
    put_checked(to, &object.path_in(to), checked).await
}

/// Copies a claim, gap record or timeline record once it parses as one and agrees with its name.
async fn copy_small(
    from: &Destination,
    to: &Destination,
    object: &ArchiveObject,
) -> Result<Option<u64>, ObjectError> {
    let bytes = match get_small(from, &object.path_in(from)).await {
        Ok(bytes) => bytes,
        Err(object_store::Error::NotFound { .. }) => return Err(ObjectError::SourceGone),
        Err(e) => {
            return Err(ObjectError::Failed(format!(
                "reading it from {from} failed: {e}"
            )))
        }
    };
    let agrees = match object.kind {
        ArchiveKind::Claim => serde_json::from_slice::<SegmentClaim>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                (c.first_index == object.first && c.last_index >= c.first_index)
                    .then_some(())
                    .ok_or_else(|| format!("it claims {}-{}", c.first_index, c.last_index))
            }),
        ArchiveKind::Gap => serde_json::from_slice::<GapRecord>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|g| {
                ((g.from_index, g.to_index) == (object.first, object.last))
                    .then_some(())
                    .ok_or_else(|| format!("it records {}-{}", g.from_index, g.to_index))
            }),
        ArchiveKind::Timeline => serde_json::from_slice::<raftlite_store::TimelineRecord>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                (t.id == object.timeline)
                    .then_some(())
                    .ok_or_else(|| format!("it is the record of timeline {}", t.id))
            }),
        ArchiveKind::Segment => Ok(()),
    };
    if let Err(reason) = agrees {
        return Err(ObjectError::Failed(format!(
            "it is not what its name says ({reason}); it was not copied, check the source with \
             `raftlite backup verify --from {from}`"
        )));
    }
    put_checked(to, &object.path_in(to), bytes).await
}

/// A create-only put of `bytes`; an object already there is fine when it is the same.
async fn put_checked(
    to: &Destination,
    path: &ObjectPath,
    bytes: Bytes,
) -> Result<Option<u64>, ObjectError> {
    let len = bytes.len() as u64;
    match put_create_only(to, path, bytes.clone()).await {
        Ok(true) => Ok(Some(len)),
        Ok(false) => {
            let held = to.store().get(path).await.map_err(|e| {
                ObjectError::Failed(format!("reading the object already in {to} failed: {e}"))
            })?;
            if held.meta.size == len
                && held.bytes().await.map_err(|e| {
                    ObjectError::Failed(format!("reading the object already in {to} failed: {e}"))
                })? == bytes
            {
                Ok(None)
            } else {
                Err(ObjectError::Failed(format!(
                    "a different object is already in {to} under this name; nothing was \
                     overwritten; check both with `raftlite backup verify` (is another cluster \
                     writing there under the same cluster id?)"
                )))
            }
        }
        Err(e) => Err(ObjectError::Failed(format!(
            "uploading it to {to} failed: {e}"
        ))),
    }
}

/// A create-only put of `bytes`: `true` when written, `false` when an object was there.
async fn put_create_only(
    dest: &Destination,
    path: &ObjectPath,
    bytes: Bytes,
) -> Result<bool, object_store::Error> {
    crate::archive::put_object_create_only(dest, path, PutPayload::from(bytes)).await
}

/// The bytes of a small object (manifest, claim, gap or timeline record, marker).
async fn get_small(dest: &Destination, path: &ObjectPath) -> Result<Bytes, object_store::Error> {
    crate::archive::get_small_object(dest, path).await
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
