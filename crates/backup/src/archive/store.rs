//! The archive's operations on a destination: create-only uploads, the watermark a new leader
//! resumes from, gap records, and the chain check.

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::create::run_blocking;
use crate::crypto::Identity;
use crate::destination::Destination;
use crate::error::BackupError;
use crate::manifest::check_segment;
use futures::TryStreamExt;
use raftlite_store::TimelineRecord;

use super::list::{list_timelines, merge_ranges};
use super::segment::{check_body, named, split_object, EncodedSegment, SegmentHeader};
use super::{decode_segment, gap_file_name, sha256_bytes_hex, GAPS_DIR, MAX_SEGMENT_OBJECT_BYTES};

/// Segments downloaded at once by [`verify_archive_timeline`].
const VERIFY_READS: usize = 4;

/// What [`put_segment`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutOutcome {
    /// The segment was written.
    Created,
    /// A segment with the same entries at the same place in the chain was already there (a
    /// new leader re-sending a range); nothing was written. Its bytes may differ from the ones
    /// given (age encrypts with a fresh file key every time): see [`put_segment_for_chain`].
    AlreadyPresent,
}

/// Where a timeline's archive ends, for the leader that continues it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watermark {
    pub last_index: u64,
    pub last_term: u64,
    pub last_at_unix_ms: Option<i64>,
    /// sha256 (hex) of the whole last segment object: the next segment's
    /// `prev_segment_sha256`.
    pub object_sha256: String,
    pub path: ObjectPath,
}

/// `archive/<timeline>/gaps/<from:020>-<to:020>.json`: entries `from..=to` will never be
/// archived (the log was purged past them while the destination was down, or a restore
/// replaced the history). Recorded so that gaps are shown and refused, never skipped silently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapRecord {
    pub from_index: u64,
    pub to_index: u64,
    pub reason: String,
    pub node_id: u64,
    pub recorded_at_unix_ms: i64,
}

/// One thing [`verify_archive_timeline`] found wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainProblem {
    /// The segment's object path (or the missing range's place).
    pub path: String,
    pub problem: String,
}

/// The result of [`verify_archive_timeline`]: the archive is sound when `problems` is empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    pub timeline_id: String,
    /// Segments downloaded and checked (whether or not they passed).
    pub segments_checked: u64,
    /// Entries in the segments checked, as their headers count them.
    pub entries: u64,
    pub problems: Vec<ChainProblem>,
}

pub(crate) fn store_error(
    dest: &Destination,
    op: &'static str,
    path: &ObjectPath,
) -> impl FnOnce(object_store::Error) -> BackupError {
    let dest = dest.label();
    let object = path.to_string();
    move |source| BackupError::ArchiveStore {
        dest,
        op,
        object,
        source: Box::new(source),
    }
}

/// Uploads `segment`, create-only: see [`put_segment_for_chain`], without the hash.
pub async fn put_segment(
    dest: &Destination,
    segment: &EncodedSegment,
) -> Result<PutOutcome, BackupError> {
    put_segment_for_chain(dest, segment)
        .await
        .map(|(outcome, _)| outcome)
}

/// Uploads `segment` with a create-only put, and returns the outcome with the sha256 of the
/// object now stored under its name: what the next segment's `prev_segment_sha256` must be.
/// That is `segment.object_sha256` when `Created`, and the existing object's hash when
/// `AlreadyPresent` (same entries and chain position, maybe other bytes).
///
/// An existing object with other content (another range, other terms or entries, another
/// previous segment, or not a segment at all) is never overwritten:
/// [`BackupError::ArchiveConflict`], an alarm (a stale leader, or a second cluster under the
/// same cluster id).
///
/// Stores without create-only puts (`NotImplemented`) get a `head` then a plain `put`; between
/// the two another writer can slip in, so on those stores two writers racing for one name can
/// both believe they created it. The chain check of `raftlite backup verify` catches what
/// such a race leaves behind.
pub async fn put_segment_for_chain(
    dest: &Destination,
    segment: &EncodedSegment,
) -> Result<(PutOutcome, String), BackupError> {
    let payload = PutPayload::from(segment.bytes.clone());
    if put_create_only(dest, &segment.path, payload).await? {
        Ok((PutOutcome::Created, segment.object_sha256.clone()))
    } else {
        compare_existing(dest, segment).await
    }
}

/// `AlreadyPresent` when the object under `segment`'s name holds the same content, else
/// `ArchiveConflict`.
async fn compare_existing(
    dest: &Destination,
    segment: &EncodedSegment,
) -> Result<(PutOutcome, String), BackupError> {
    let existing = read_segment(dest, &segment.path).await;
    let conflict = |reason: String| BackupError::ArchiveConflict {
        dest: dest.label(),
        segment: segment.path.to_string(),
        reason,
    };
    let existing = match existing {
        Ok(bytes) => bytes,
        Err(BackupError::ArchiveSegment { reason, .. }) => return Err(conflict(reason)),
        Err(e) => return Err(e),
    };
    if existing == segment.bytes {
        return Ok((PutOutcome::AlreadyPresent, segment.object_sha256.clone()));
    }
    let new = segment.header.clone();
    let checked = run_blocking(&dest.label(), move || {
        let (header, body) = split_object(&existing)?;
        if header.same_content(&new) {
            check_body(&header, body)?;
        }
        Ok::<_, BackupError>((header, sha256_bytes_hex(&existing)))
    })
    .await?;
    match checked {
        Ok((header, sha)) if header.same_content(&segment.header) => {
            Ok((PutOutcome::AlreadyPresent, sha))
        }
        Ok((header, _)) => Err(conflict(header.differences(&segment.header).join(", "))),
        Err(e) => Err(conflict(format!("the object there is unusable: {e}"))),
    }
}

/// Downloads a whole segment object, refusing one over [`MAX_SEGMENT_OBJECT_BYTES`] unread.
pub async fn read_segment(dest: &Destination, path: &ObjectPath) -> Result<Bytes, BackupError> {
    let got = dest
        .store()
        .get(path)
        .await
        .map_err(store_error(dest, "downloading", path))?;
    let too_large = |size: u64| BackupError::ArchiveSegment {
        segment: path.to_string(),
        reason: format!(
            "the object has {size} bytes, more than a segment can be \
             ({MAX_SEGMENT_OBJECT_BYTES})"
        ),
    };
    if got.meta.size > MAX_SEGMENT_OBJECT_BYTES {
        return Err(too_large(got.meta.size));
    }
    let bytes = got
        .bytes()
        .await
        .map_err(store_error(dest, "downloading", path))?;
    if bytes.len() as u64 > MAX_SEGMENT_OBJECT_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Checks that the header of the object at `path` belongs there.
fn check_placement(
    header: &SegmentHeader,
    path: &ObjectPath,
    cluster_id: &str,
    timeline_id: &str,
    range: (u64, u64),
) -> Result<(), String> {
    if header.cluster_id != cluster_id {
        return Err(format!(
            "it belongs to cluster {:?}, not {cluster_id:?}",
            header.cluster_id
        ));
    }
    if header.timeline.id != timeline_id {
        return Err(format!(
            "it belongs to timeline {:?}, not {timeline_id:?}",
            header.timeline.id
        ));
    }
    if (header.first_index, header.last_index) != range {
        return Err(format!(
            "it holds entries {}-{} but is named {path}",
            header.first_index, header.last_index
        ));
    }
    Ok(())
}

/// Where the archive of `timeline_id` ends: the segment with the greatest last index (by
/// name), downloaded, its header and body hash checked (no decryption), and the sha256 of the
/// whole object for the next segment's `prev_segment_sha256`. `None` when the timeline has no
/// segment yet. A damaged last segment is an error (`ArchiveSegment`): continuing a chain from
/// it would hide the damage.
pub async fn archive_watermark(
    dest: &Destination,
    cluster_id: &str,
    timeline_id: &str,
) -> Result<Option<Watermark>, BackupError> {
    check_names(cluster_id, timeline_id)?;
    let mut timelines = list_timelines(dest, cluster_id, Some(timeline_id)).await?;
    let Some(objects) = timelines.remove(timeline_id) else {
        return Ok(None);
    };
    let Some(last) = objects.segments.iter().max_by_key(|s| (s.last, s.first)) else {
        return Ok(None);
    };
    let bytes = read_segment(dest, &last.path).await?;
    let (header, sha) = run_blocking(&dest.label(), move || {
        let (header, body) = split_object(&bytes)?;
        check_body(&header, body)?;
        Ok::<_, BackupError>((header, sha256_bytes_hex(&bytes)))
    })
    .await?
    .map_err(|e| named(e, &last.path))?;
    check_placement(
        &header,
        &last.path,
        cluster_id,
        timeline_id,
        (last.first, last.last),
    )
    .map_err(|reason| BackupError::ArchiveSegment {
        segment: last.path.to_string(),
        reason,
    })?;
    Ok(Some(Watermark {
        last_index: header.last_index,
        last_term: header.last_term,
        last_at_unix_ms: header.last_at_unix_ms,
        object_sha256: sha,
        path: last.path.clone(),
    }))
}

pub(crate) fn check_names(cluster_id: &str, timeline_id: &str) -> Result<(), BackupError> {
    check_segment(cluster_id).map_err(|reason| BackupError::InvalidOptions {
        reason: format!("cluster id {cluster_id:?}: {reason}"),
    })?;
    check_segment(timeline_id).map_err(|reason| BackupError::InvalidOptions {
        reason: format!("timeline id {timeline_id:?}: {reason}"),
    })
}

/// Records `gap` (create-only JSON). A record already there for the same range is fine (a new
/// leader recording the same gap again). Stores without create-only puts get `head` then
/// `put`.
pub async fn record_gap(
    dest: &Destination,
    cluster_id: &str,
    timeline_id: &str,
    gap: &GapRecord,
) -> Result<(), BackupError> {
    check_names(cluster_id, timeline_id)?;
    if gap.from_index > gap.to_index {
        return Err(BackupError::InvalidOptions {
            reason: format!(
                "a gap from index {} to {} is empty; from_index must not be after to_index",
                gap.from_index, gap.to_index
            ),
        });
    }
    let path = dest
        .archive_dir(cluster_id, timeline_id)
        .join(GAPS_DIR)
        .join(gap_file_name(gap.from_index, gap.to_index).as_str());
    let body = serde_json::to_vec_pretty(gap).map_err(|e| BackupError::Internal {
        dest: dest.label(),
        reason: format!("cannot serialize a gap record: {e}"),
    })?;
    put_create_only(dest, &path, PutPayload::from(body)).await?;
    Ok(())
}

/// A create-only put of a small object: `true` when it was written, `false` when an object
/// was there already (the caller compares).
async fn put_create_only(
    dest: &Destination,
    path: &ObjectPath,
    payload: PutPayload,
) -> Result<bool, BackupError> {
    put_object_create_only(dest, path, payload)
        .await
        .map_err(store_error(dest, "writing", path))
}

/// [`put_create_only`] with the store's own error. Stores without create-only puts get a
/// `head` then a `put`; between the two another writer can slip in.
pub(crate) async fn put_object_create_only(
    dest: &Destination,
    path: &ObjectPath,
    payload: PutPayload,
) -> Result<bool, object_store::Error> {
    let store = dest.store();
    match store
        .put_opts(path, payload.clone(), PutOptions::from(PutMode::Create))
        .await
    {
        Ok(_) => Ok(true),
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Ok(false),
        Err(
            object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. },
        ) => match store.head(path).await {
            Ok(_) => Ok(false),
            Err(object_store::Error::NotFound { .. }) => {
                store.put(path, payload).await?;
                Ok(true)
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// The bytes of the small object at `path`.
async fn get_small(dest: &Destination, path: &ObjectPath) -> Result<Bytes, BackupError> {
    get_small_object(dest, path)
        .await
        .map_err(store_error(dest, "reading", path))
}

/// The bytes of a small object (a claim, gap, lease or timeline record, a manifest, a copy
/// marker), refusing one larger than a manifest can be unread, so a damaged or hostile object
/// cannot make the reader allocate without bound.
pub(crate) async fn get_small_object(
    dest: &Destination,
    path: &ObjectPath,
) -> Result<Bytes, object_store::Error> {
    let got = dest.store().get(path).await?;
    if got.meta.size > crate::manifest::MAX_MANIFEST_BYTES {
        return Err(object_store::Error::Generic {
            store: "raftlite",
            source: format!(
                "{path} has {} bytes, more than such an object can be",
                got.meta.size
            )
            .into(),
        });
    }
    got.bytes().await
}

/// Every object in the folder `dir` of `dest` (recursively).
pub(crate) async fn list_dir(
    dest: &Destination,
    dir: &ObjectPath,
) -> Result<Vec<object_store::ObjectMeta>, BackupError> {
    dest.store()
        .list(Some(dir))
        .try_collect()
        .await
        .map_err(store_error(dest, "listing", dir))
}

/// `<prefix>/<cluster-id>/timelines/<timeline-id>.json`: a timeline's record (id, counter,
/// parent, the parent's index where it branched, reason, time), written create-only by the
/// first leader that archives it. The files together are the cluster's timeline history in the
/// destination; a timeline id already claimed there with another record is refused.
pub fn timeline_claim_path(dest: &Destination, cluster_id: &str, timeline_id: &str) -> ObjectPath {
    dest.prefix()
        .clone()
        .join(cluster_id)
        .join(TIMELINES_DIR)
        .join(format!("{timeline_id}.json").as_str())
}

/// Name of the folder under `<cluster-id>/` holding the timeline history.
pub(crate) const TIMELINES_DIR: &str = "timelines";

/// Claims `record`'s timeline id in `dest` ([`timeline_claim_path`]). The same record already
/// there is fine (another leader of the same timeline); a different one is
/// [`BackupError::ArchiveConflict`]: two lineages under one id.
pub async fn claim_timeline(
    dest: &Destination,
    cluster_id: &str,
    record: &TimelineRecord,
) -> Result<(), BackupError> {
    check_names(cluster_id, &record.id)?;
    let path = timeline_claim_path(dest, cluster_id, &record.id);
    let body = serde_json::to_vec_pretty(record).map_err(|e| BackupError::Internal {
        dest: dest.label(),
        reason: format!("cannot serialize a timeline record: {e}"),
    })?;
    if put_create_only(dest, &path, PutPayload::from(body)).await? {
        return Ok(());
    }
    let held: Result<TimelineRecord, _> = serde_json::from_slice(&get_small(dest, &path).await?);
    match held {
        Ok(held) if &held == record => Ok(()),
        Ok(held) => Err(BackupError::ArchiveConflict {
            dest: dest.label(),
            segment: path.to_string(),
            reason: format!(
                "timeline {} is already claimed there by another history (#{} from {:?} at \
                 entry {:?}: {}); is a second cluster using the same cluster id and \
                 destination?",
                held.id, held.counter, held.parent, held.parent_index, held.reason
            ),
        }),
        Err(e) => Err(BackupError::ArchiveConflict {
            dest: dest.label(),
            segment: path.to_string(),
            reason: format!("the timeline record there is not readable ({e})"),
        }),
    }
}

/// The timeline history of `cluster_id` as claimed in `dest`, by counter (oldest first).
/// Unreadable records are skipped.
pub async fn timeline_history(
    dest: &Destination,
    cluster_id: &str,
) -> Result<Vec<TimelineRecord>, BackupError> {
    let dir = dest.prefix().clone().join(cluster_id).join(TIMELINES_DIR);
    let mut records = Vec::new();
    for object in list_dir(dest, &dir).await? {
        let bytes = get_small(dest, &object.location).await?;
        if let Ok(record) = serde_json::from_slice::<TimelineRecord>(&bytes) {
            records.push(record);
        }
    }
    records.sort_by(|a, b| (a.counter, &a.id).cmp(&(b.counter, &b.id)));
    Ok(records)
}

/// Who archives the entries from `first_index` on, and how far: the object
/// `<timeline>/claims/<first_index:020>.json`, written create-only before the segment. Every
/// writer starts at the archive's watermark + 1, which is where a claim is, so two writers (a
/// stale leader and the new one) racing for the same entries meet at the same claim: the first
/// fixes the range, the other writes exactly that range (a segment with the same name and the
/// same entries) or nothing. Without claims, their segments could overlap with different
/// boundaries and break the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentClaim {
    pub first_index: u64,
    pub last_index: u64,
    pub node_id: u64,
    pub claimed_at_unix_ms: i64,
}

/// Name of the folder under a timeline's archive holding segment claims.
pub(crate) const CLAIMS_DIR: &str = "claims";

/// The object path of the claim for segments starting at `first_index`.
pub fn claim_path(
    dest: &Destination,
    cluster_id: &str,
    timeline_id: &str,
    first_index: u64,
) -> ObjectPath {
    dest.archive_dir(cluster_id, timeline_id)
        .join(CLAIMS_DIR)
        .join(format!("{first_index:020}.json").as_str())
}

/// Claims the range of `claim` with a create-only put and returns the claim that holds: ours,
/// or the one another writer made first for the same first index (its range wins). Stores
/// without create-only puts get a `head` then a `put`, as for segments.
pub async fn claim_segment(
    dest: &Destination,
    cluster_id: &str,
    timeline_id: &str,
    claim: &SegmentClaim,
) -> Result<SegmentClaim, BackupError> {
    check_names(cluster_id, timeline_id)?;
    if claim.first_index > claim.last_index {
        return Err(BackupError::InvalidOptions {
            reason: format!(
                "a segment claim from index {} to {} is empty",
                claim.first_index, claim.last_index
            ),
        });
    }
    let path = claim_path(dest, cluster_id, timeline_id, claim.first_index);
    let body = serde_json::to_vec(claim).map_err(|e| BackupError::Internal {
        dest: dest.label(),
        reason: format!("cannot serialize a segment claim: {e}"),
    })?;
    if put_create_only(dest, &path, PutPayload::from(body)).await? {
        return Ok(claim.clone());
    }
    let bytes = get_small(dest, &path).await?;
    let held: SegmentClaim =
        serde_json::from_slice(&bytes).map_err(|e| BackupError::ArchiveConflict {
            dest: dest.label(),
            segment: path.to_string(),
            reason: format!("the segment claim there is not readable ({e}); remove it by hand"),
        })?;
    if held.first_index != claim.first_index || held.last_index < held.first_index {
        return Err(BackupError::ArchiveConflict {
            dest: dest.label(),
            segment: path.to_string(),
            reason: format!(
                "the segment claim there says {}-{}, which does not fit its name",
                held.first_index, held.last_index
            ),
        });
    }
    Ok(held)
}

/// The previous segment, as far as the chain check knows it.
struct Previous {
    /// Highest index archived so far.
    last: u64,
    /// sha256 of the previous object; `None` when it could not be read.
    sha: Option<String>,
    path: String,
}

/// Checks the archive of one timeline, segment by segment in index order: each object's
/// header and body hash, that it holds what its name says, that indexes continue without a hole
/// (holes covered by a recorded gap are fine), that `prev_segment_sha256` is the sha256 of the
/// previous object (a segment right after a recorded gap may have none), and, when the segment
/// is not encrypted or `identity` is given, the entries themselves. Collects every problem
/// instead of stopping at the first; only the listing failing is an error.
///
/// The first segment is not checked against anything before it: retention removes old
/// segments, so its `prev_segment_sha256` may name one that is gone.
pub async fn verify_archive_timeline(
    dest: &Destination,
    cluster_id: &str,
    timeline_id: &str,
    identity: Option<&Identity>,
) -> Result<ChainReport, BackupError> {
    check_names(cluster_id, timeline_id)?;
    let mut timelines = list_timelines(dest, cluster_id, Some(timeline_id)).await?;
    let objects = timelines.remove(timeline_id).unwrap_or_default();
    let recorded = merge_ranges(objects.gaps.clone());
    let mut report = ChainReport {
        timeline_id: timeline_id.to_string(),
        segments_checked: 0,
        entries: 0,
        problems: Vec::new(),
    };
    let label = dest.label();
    let mut reads = futures::stream::iter(objects.segments)
        .map(|segment| async move {
            let bytes = read_segment(dest, &segment.path).await;
            (segment, bytes)
        })
        .buffered(VERIFY_READS);
    let mut previous: Option<Previous> = None;
    while let Some((segment, bytes)) = reads.next().await {
        let path = segment.path.to_string();
        let mut problem = |problem: String| {
            report.problems.push(ChainProblem {
                path: path.clone(),
                problem,
            })
        };
        // How this segment follows the previous one, by names.
        #[derive(PartialEq)]
        enum Follows {
            First,
            Directly,
            AfterRecordedGap,
            AfterHole,
            Overlapping,
        }
        let follows = match &previous {
            None => Follows::First,
            Some(p) if segment.first == p.last.saturating_add(1) => Follows::Directly,
            Some(p) if segment.first <= p.last => {
                problem(format!(
                    "it overlaps the segments before it (entries up to {} are already archived, \
                     by {}): two writers archived the same entries",
                    p.last, p.path
                ));
                Follows::Overlapping
            }
            Some(p) => {
                let hole = (p.last + 1, segment.first - 1);
                if recorded.iter().any(|&(a, b)| a <= hole.0 && hole.1 <= b) {
                    Follows::AfterRecordedGap
                } else {
                    problem(format!(
                        "entries {}-{} before it are missing: neither archived nor recorded as \
                         a gap (a segment was lost or deleted); a restore cannot pass this point",
                        hole.0, hole.1
                    ));
                    Follows::AfterHole
                }
            }
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(e) => {
                problem(problem_text(e));
                previous = Some(Previous {
                    last: previous
                        .as_ref()
                        .map_or(segment.last, |p| p.last.max(segment.last)),
                    sha: None,
                    path,
                });
                continue;
            }
        };
        report.segments_checked += 1;
        let identity = identity.cloned();
        let checked = run_blocking(&label, move || {
            let sha = sha256_bytes_hex(&bytes);
            let header = split_object(&bytes).map(|(h, _)| h);
            let decoded = match &header {
                Ok(h) if h.encryption.is_some() && identity.is_none() => {
                    split_object(&bytes).and_then(|(h, body)| check_body(&h, body))
                }
                Ok(_) => decode_segment(&bytes, identity.as_ref()).map(|_| ()),
                Err(_) => Ok(()),
            };
            (sha, header, decoded)
        })
        .await;
        let (sha, header, decoded) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                problem(e.to_string());
                previous = Some(Previous {
                    last: previous
                        .as_ref()
                        .map_or(segment.last, |p| p.last.max(segment.last)),
                    sha: None,
                    path,
                });
                continue;
            }
        };
        match header {
            Err(e) => problem(problem_text(e)),
            Ok(header) => {
                report.entries += header.entry_count;
                if let Err(reason) = check_placement(
                    &header,
                    &segment.path,
                    cluster_id,
                    timeline_id,
                    (segment.first, segment.last),
                ) {
                    problem(reason);
                }
                if let Err(e) = decoded {
                    problem(problem_text(e));
                }
                if let Some(p) = &previous {
                    if let Some(prev_sha) = &p.sha {
                        match (&header.prev_segment_sha256, &follows) {
                            (Some(h), Follows::Directly | Follows::AfterRecordedGap)
                                if h != prev_sha =>
                            {
                                problem(format!(
                                    "its prev_segment_sha256 is {h} but the segment before it \
                                     ({}) has sha256 {prev_sha}: that segment was replaced or \
                                     altered, or this one was written for another chain",
                                    p.path
                                ));
                            }
                            (None, Follows::Directly) => problem(format!(
                                "it has no prev_segment_sha256 although it directly follows {} \
                                 (no gap recorded between them)",
                                p.path
                            )),
                            _ => {}
                        }
                    }
                }
            }
        }
        previous = Some(Previous {
            last: previous
                .as_ref()
                .map_or(segment.last, |p| p.last.max(segment.last)),
            sha: Some(sha),
            path,
        });
    }
    Ok(report)
}

/// A problem as a report line: the segment's path is in the report already, and "run verify"
/// advice would be odd inside verify's own output.
fn problem_text(e: BackupError) -> String {
    match e {
        BackupError::ArchiveSegment { reason, .. } => reason,
        other => other.to_string(),
    }
}
