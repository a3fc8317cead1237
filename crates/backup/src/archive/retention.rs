//! Retention of the log archive (`--archive-keep-within`, issue 20): keep every segment and
//! base backup that a retained point needs, and nothing older.
//!
//! A point is retained when its time is within `keep_within` of now; the oldest one is the
//! window start `W = now - keep_within`. A point-in-time restore to any moment at or after `W`
//! (or any index archived since) starts from a base backup of its timeline taken at or before
//! the target, so per timeline the oldest base any retained point can need is the newest base
//! taken at or before `W`. Everything above that base's data index stays; whole segments at or
//! below it may go.
//!
//! Conservative on purpose:
//! - A timeline without a kept base at or before `W` keeps its whole archive: nothing tells
//!   which part a retained point could still need once such a base appears.
//! - The newest segment of a timeline always stays: it is the watermark a leader resumes from.
//! - The deletion bound is the smallest data index among the chosen base and every kept base of
//!   the timeline taken after it, so backups taken by nodes with skewed clocks (a later
//!   creation time but an older index) still find their segments.
//! - Objects are deleted one at a time, oldest first (segments by last index, a gap record
//!   right after the segments before it), and the first failure stops the timeline: an
//!   interrupted prune only shortens the archive from its start, never leaves a hole inside.
//!
//! - A live restore lease ([`super::lease`]) keeps its base backup and every segment after the
//!   base's index, whatever the window.
//! - An incremental is a base only while its whole chain (parent, parent's parent, ..., down
//!   to a full backup) is among the backups: without it nothing restores from it. Backup
//!   retention keeps the chain of every base [`archive_needs`] names (reason `chain`).
//!
//! [`archive_needs`] is the other half: the bases the window needs, which backup retention
//! must keep ([`crate::retention::prune_keeping`]). Run backup retention first, then
//! [`prune_archive`] with the backups it kept.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::destination::Destination;
use crate::error::BackupError;
use crate::manifest::{check_segment, BackupId, BackupKind, Manifest};

use super::lease::live_leases;
use super::list::{archive_clusters, list_timelines};
use super::{claim_path, gap_file_name, GAPS_DIR};

/// The default `--archive-keep-within`: a week of points to go back to.
pub const DEFAULT_ARCHIVE_KEEP_WITHIN: Duration = Duration::from_secs(7 * 86_400);

/// What kind of archive object was (or would be) deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrunedKind {
    Segment,
    Gap,
}

/// One archive object [`prune_archive`] deleted (or, in a dry run, would delete).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunedObject {
    pub kind: PrunedKind,
    /// The index range the object names (a segment's entries, a gap's missing entries).
    pub first_index: u64,
    pub last_index: u64,
    pub path: String,
}

/// Consecutive kept segments of one timeline and why they stay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptSegments {
    pub first_index: u64,
    pub last_index: u64,
    pub segments: u64,
    pub reason: String,
}

/// What [`prune_archive`] decided and did for one timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelinePrune {
    pub timeline_id: String,
    /// The base backup the oldest retained point replays from (`None`: no kept base of this
    /// timeline at or before the window start, and nothing was deleted).
    pub base: Option<BackupId>,
    /// Segments whose last index is above this stay (the smallest data index of `base` and
    /// of the kept bases taken after it).
    pub keep_after_index: Option<u64>,
    pub deleted: Vec<PrunedObject>,
    pub kept: Vec<KeptSegments>,
    /// Recorded gaps left in place.
    pub kept_gaps: u64,
    /// The deletion that failed; later deletions of this timeline were not tried (a later
    /// prune retries them).
    pub failed: Option<String>,
}

/// The result of [`prune_archive`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivePruneReport {
    pub cluster_id: String,
    pub dry_run: bool,
    /// `now - keep_within`: the oldest retained moment.
    pub window_start_unix_ms: i64,
    /// Per timeline with an archive, by id.
    pub timelines: Vec<TimelinePrune>,
}

impl ArchivePruneReport {
    /// Objects deleted (or that a dry run would delete), all timelines.
    pub fn deleted_count(&self) -> usize {
        self.timelines.iter().map(|t| t.deleted.len()).sum()
    }

    /// Timelines where a deletion failed.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &str)> {
        self.timelines
            .iter()
            .filter_map(|t| Some((t.timeline_id.as_str(), t.failed.as_deref()?)))
    }
}

/// `now - keep_within`, saturating (a huge window reaches back to the start of time).
pub fn window_start(keep_within: Duration, now_unix_ms: i64) -> i64 {
    let within_ms = i64::try_from(keep_within.as_millis()).unwrap_or(i64::MAX);
    now_unix_ms.saturating_sub(within_ms)
}

/// The newest base backup of `cluster_id`'s timeline `timeline_id` taken at or before
/// `window_start` (by creation time, then data index, then id), among `backups`. An
/// incremental whose chain is not complete among `backups` is no base.
pub fn window_base<'a>(
    backups: &'a [(BackupId, Manifest)],
    cluster_id: &str,
    timeline_id: &str,
    window_start: i64,
) -> Option<&'a (BackupId, Manifest)> {
    let by_id: BTreeMap<&BackupId, &Manifest> = backups.iter().map(|(id, m)| (id, m)).collect();
    backups
        .iter()
        .filter(|(id, m)| {
            id.cluster_id() == cluster_id
                && m.cluster_id == cluster_id
                && m.timeline.id == timeline_id
                && m.created_at_unix_ms <= window_start
                && chain_complete(&by_id, m)
        })
        .max_by(|(a_id, a), (b_id, b)| {
            (a.created_at_unix_ms, a.data_index(), a_id).cmp(&(
                b.created_at_unix_ms,
                b.data_index(),
                b_id,
            ))
        })
}

/// Whether `manifest`'s set restores from `backups` alone: a full backup does; an incremental
/// does when its parent is there and restores in turn. A cycle of parents (corrupt manifests)
/// does not.
fn chain_complete(backups: &BTreeMap<&BackupId, &Manifest>, manifest: &Manifest) -> bool {
    let mut current = manifest;
    // A chain longer than the number of backups goes round a cycle.
    for _ in 0..=backups.len() {
        match (current.kind, &current.parent) {
            (BackupKind::Full, None) => return true,
            (BackupKind::Incremental, Some(parent)) => match backups.get(&parent.id) {
                Some(m) => current = m,
                None => return false,
            },
            // Refused when listed; never a base.
            (BackupKind::Full, Some(_)) | (BackupKind::Incremental, None) => return false,
        }
    }
    false
}

/// The base backups the archive's retained window needs, per cluster (only `cluster_id` when
/// given) and timeline with an archive: the newest base of that timeline taken at or before
/// `now - keep_within`. Backup retention must keep these (see
/// [`crate::retention::prune_keeping`]), and with an incremental base the sets of its chain,
/// which it does on its own, or the retained points between the window start and the next base
/// could no longer be restored. `backups` is the complete listing
/// ([`crate::list_backups`]). Returns each needed id with the timeline that needs it.
pub async fn archive_needs(
    dest: &Destination,
    backups: &[(BackupId, Manifest)],
    cluster_id: Option<&str>,
    keep_within: Duration,
    now_unix_ms: i64,
) -> Result<BTreeMap<BackupId, String>, BackupError> {
    let clusters = match cluster_id {
        Some(c) => vec![c.to_string()],
        None => archive_clusters(dest).await?,
    };
    let start = window_start(keep_within, now_unix_ms);
    let mut needs = BTreeMap::new();
    for cluster in clusters {
        if check_segment(&cluster).is_err() {
            continue;
        }
        let timelines = list_timelines(dest, &cluster, None).await?;
        for (timeline, objects) in timelines {
            if objects.segments.is_empty() {
                continue;
            }
            if let Some((id, _)) = window_base(backups, &cluster, &timeline, start) {
                needs.insert(id.clone(), timeline.clone());
            }
            // The bases running point-in-time restores read.
            for lease in live_leases(dest, &cluster, &timeline, now_unix_ms, true).await? {
                if let Ok(id) = lease.base.parse::<BackupId>() {
                    needs.insert(id, timeline.clone());
                }
            }
        }
    }
    Ok(needs)
}

/// Deletes the archive objects of `cluster_id` that no point within `keep_within` of
/// `now_unix_ms` needs, given the backups that remain (`kept_backups`: what backup retention
/// kept, so run it first with [`archive_needs`] protecting the window's bases). See the module
/// documentation for the rule and its safeguards. With `dry_run`, deletes nothing and reports
/// what it would delete.
///
/// Only a failure to list the archive is an error; a deletion that fails stops that timeline
/// and is reported in [`TimelinePrune::failed`].
pub async fn prune_archive(
    dest: &Destination,
    cluster_id: &str,
    keep_within: Duration,
    now_unix_ms: i64,
    kept_backups: &[(BackupId, Manifest)],
    dry_run: bool,
) -> Result<ArchivePruneReport, BackupError> {
    check_segment(cluster_id).map_err(|reason| BackupError::InvalidOptions {
        reason: format!("cluster id {cluster_id:?}: {reason}"),
    })?;
    let start = window_start(keep_within, now_unix_ms);
    let timelines = list_timelines(dest, cluster_id, None).await?;
    let mut report = ArchivePruneReport {
        cluster_id: cluster_id.to_string(),
        dry_run,
        window_start_unix_ms: start,
        timelines: Vec::new(),
    };
    for (timeline_id, objects) in timelines {
        let segments: Vec<(u64, u64, ObjectPath)> = objects
            .segments
            .iter()
            .map(|s| (s.first, s.last, s.path.clone()))
            .collect();
        let gap_path = |from: u64, to: u64| {
            dest.archive_dir(cluster_id, &timeline_id)
                .join(GAPS_DIR)
                .join(gap_file_name(from, to).as_str())
        };
        let gaps: Vec<(u64, u64, ObjectPath)> = objects
            .gaps
            .iter()
            .map(|&(from, to)| (from, to, gap_path(from, to)))
            .collect();
        let base = window_base(kept_backups, cluster_id, &timeline_id, start);
        let bound = base.map(|(base_id, base)| {
            kept_backups
                .iter()
                .filter(|(id, m)| {
                    id.cluster_id() == cluster_id
                        && m.timeline.id == timeline_id
                        && (m.created_at_unix_ms, m.data_index(), id)
                            >= (base.created_at_unix_ms, base.data_index(), base_id)
                })
                .map(|(_, m)| m.data_index())
                .min()
                .unwrap_or(base.data_index())
        });
        // A running point-in-time restore keeps what it reads after its base.
        let leases = live_leases(dest, cluster_id, &timeline_id, now_unix_ms, dry_run).await?;
        let bound = bound.map(|b| leases.iter().fold(b, |b, l| b.min(l.from_index)));
        let mut plan = plan_timeline(&timeline_id, &segments, &gaps, base, bound, start);
        if !dry_run {
            let doomed = std::mem::take(&mut plan.deleted);
            for object in doomed {
                let path = ObjectPath::from(object.path.as_str());
                // A segment's claim goes first: a claim left behind by a failed run would no
                // longer be listed next time, its segment is.
                let claim = (object.kind == PrunedKind::Segment)
                    .then(|| claim_path(dest, cluster_id, &timeline_id, object.first_index));
                let mut deleted = Ok(());
                for path in claim.iter().chain(std::iter::once(&path)) {
                    match dest.store().delete(path).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => {
                            deleted = Err(e);
                            break;
                        }
                    }
                }
                match deleted {
                    Ok(()) => plan.deleted.push(object),
                    Err(e) => {
                        let failed = format!(
                            "deleting {} failed: {e}; the objects after it were left in place \
                             (oldest first, so the archive keeps no hole); the next prune retries",
                            object.path
                        );
                        tracing::warn!(dest = %dest, timeline = %timeline_id, reason = %failed, "archive retention stopped");
                        plan.failed = Some(failed);
                        break;
                    }
                }
            }
        }
        report.timelines.push(plan);
    }
    Ok(report)
}

/// Decides what to delete on one timeline. Pure. `segments` sorted by (first, last); `bound`
/// is the index at or below which whole segments may go (`None` when no base allows any).
fn plan_timeline(
    timeline_id: &str,
    segments: &[(u64, u64, ObjectPath)],
    gaps: &[(u64, u64, ObjectPath)],
    base: Option<&(BackupId, Manifest)>,
    bound: Option<u64>,
    window_start: i64,
) -> TimelinePrune {
    let mut out = TimelinePrune {
        timeline_id: timeline_id.to_string(),
        base: base.map(|(id, _)| id.clone()),
        keep_after_index: bound,
        deleted: Vec::new(),
        kept: Vec::new(),
        kept_gaps: gaps.len() as u64,
        failed: None,
    };
    let newest = segments
        .iter()
        .enumerate()
        .max_by_key(|(_, (first, last, _))| (*last, *first))
        .map(|(i, _)| i);
    // Per segment: None = delete, Some(reason) = keep.
    let mut verdicts: Vec<Option<String>> = Vec::with_capacity(segments.len());
    for (i, (_, last, _)) in segments.iter().enumerate() {
        let verdict = match (base, bound) {
            (Some((base_id, _)), Some(bound)) => {
                if *last > bound {
                    Some(format!(
                        "a retained point replays it from base backup {base_id} (entries after \
                         {bound})"
                    ))
                } else if Some(i) == newest {
                    Some(
                        "the newest segment of the timeline: the watermark a leader resumes from"
                            .to_string(),
                    )
                } else {
                    None
                }
            }
            _ => Some(format!(
                "no kept base backup of timeline {timeline_id} was taken at or before the \
                 retention window's start ({}), so nothing can be replayed from before it; the \
                 whole archive of the timeline stays until such a base exists",
                crate::manifest::rfc3339(window_start)
            )),
        };
        verdicts.push(verdict);
    }
    // (index, 0 segment | 1 gap, object): oldest first; a gap after the segments before it.
    let mut doomed: Vec<(u64, u8, PrunedObject)> = Vec::new();
    for ((first, last, path), verdict) in segments.iter().zip(&verdicts) {
        match verdict {
            None => doomed.push((
                *last,
                0,
                PrunedObject {
                    kind: PrunedKind::Segment,
                    first_index: *first,
                    last_index: *last,
                    path: path.to_string(),
                },
            )),
            Some(reason) => match out.kept.last_mut() {
                Some(k) if k.reason == *reason && *first <= k.last_index.saturating_add(1) => {
                    k.last_index = k.last_index.max(*last);
                    k.segments += 1;
                }
                _ => out.kept.push(KeptSegments {
                    first_index: *first,
                    last_index: *last,
                    segments: 1,
                    reason: reason.clone(),
                }),
            },
        }
    }
    for (from, to, path) in gaps {
        // The segment right after the gap: once it goes, so has everything before the gap.
        let following = segments
            .iter()
            .zip(&verdicts)
            .filter(|((first, _, _), _)| first > to)
            .min_by_key(|((first, last, _), _)| (*first, *last));
        if let Some((_, None)) = following {
            out.kept_gaps -= 1;
            doomed.push((
                *to,
                1,
                PrunedObject {
                    kind: PrunedKind::Gap,
                    first_index: *from,
                    last_index: *to,
                    path: path.to_string(),
                },
            ));
        }
    }
    doomed.sort_by_key(|(index, kind, o)| (*index, *kind, o.first_index));
    out.deleted = doomed.into_iter().map(|(_, _, o)| o).collect();
    out
}

/// The entries of `backups` whose id is in `kept`: the listing as backup retention left it
/// (what [`prune_archive`] takes), also for a dry run that deleted nothing.
pub fn kept_backups(
    backups: &[(BackupId, Manifest)],
    kept: impl IntoIterator<Item = BackupId>,
) -> Vec<(BackupId, Manifest)> {
    let kept: BTreeSet<BackupId> = kept.into_iter().collect();
    backups
        .iter()
        .filter(|(id, _)| kept.contains(id))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;
    use crate::archive::{
        encode_segment, list_segments, put_segment, record_gap, release_lease, take_lease,
        verify_archive_timeline, ArchivedEntry, ArchivedKind, GapRecord, PutOutcome, RestoreLease,
        SegmentDraft,
    };
    use crate::manifest::{TimelineRef, MANIFEST_FILE};
    use crate::retention::{prune_keeping, RetentionPolicy};

    const CLUSTER: &str = "c1";
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    /// 2025-03-01T00:00:00Z
    const NOW: i64 = 1_740_787_200_000;
    const WEEK: Duration = Duration::from_secs(7 * 86_400);
    const W: i64 = NOW - 7 * DAY;

    fn memory() -> Destination {
        Destination::parse("memory://").unwrap()
    }

    fn tl(n: u64) -> TimelineRef {
        TimelineRef {
            id: format!("tl-{n}"),
            counter: n,
        }
    }

    /// A base backup of timeline `n` holding data up to `index`, taken at `created`.
    fn base(n: u64, index: u64, created: i64) -> (BackupId, Manifest) {
        let m = Manifest {
            data_changed_index: Some(index),
            leader_term: Some(1),
            ..Manifest::sample(CLUSTER, tl(n), index, created)
        };
        (m.id().unwrap(), m)
    }

    /// An incremental of timeline `n` on top of `parent`.
    fn incremental(
        n: u64,
        index: u64,
        created: i64,
        parent: &(BackupId, Manifest),
    ) -> (BackupId, Manifest) {
        let (_, mut m) = base(n, index, created);
        m.format_version = 2;
        m.kind = crate::manifest::BackupKind::Incremental;
        m.parent = Some(crate::manifest::ParentRef {
            id: parent.0.clone(),
            pages_digest: "0".repeat(64),
        });
        m.pages_digest = Some("1".repeat(64));
        m.chain_depth = parent.1.chain_depth + 1;
        (m.id().unwrap(), m)
    }

    /// Writes the manifest of `b` where listings find it.
    async fn store_base(dest: &Destination, b: &(BackupId, Manifest)) {
        let path = dest.set_dir(&b.0).join(MANIFEST_FILE);
        let body = serde_json::to_vec(&b.1).unwrap();
        dest.store()
            .put(&path, PutPayload::from(body))
            .await
            .unwrap();
    }

    /// Archives segments of timeline `n` with the given ranges, chained (no chain link across a
    /// hole: the archiver starts anew after a gap).
    async fn archive(dest: &Destination, n: u64, ranges: &[(u64, u64)]) {
        let timeline = tl(n);
        let mut prev: Option<(u64, String)> = None;
        for &(first, last) in ranges {
            let entries: Vec<ArchivedEntry> = (first..=last)
                .map(|index| ArchivedEntry {
                    index,
                    term: 1,
                    at_unix_ms: Some(W - DAY + index as i64 * HOUR),
                    kind: ArchivedKind::Command,
                    payload: vec![index as u8],
                })
                .collect();
            let draft = SegmentDraft {
                cluster_id: CLUSTER,
                timeline: &timeline,
                node_id: 1,
                entries: &entries,
                prev_segment_sha256: prev
                    .as_ref()
                    .filter(|(last, _)| last + 1 == first)
                    .map(|(_, sha)| sha.clone()),
            };
            let seg = encode_segment(dest, &draft, None, 1).unwrap();
            assert_eq!(put_segment(dest, &seg).await.unwrap(), PutOutcome::Created);
            prev = Some((last, seg.object_sha256.clone()));
        }
    }

    async fn gap(dest: &Destination, n: u64, from: u64, to: u64) {
        let record = GapRecord {
            from_index: from,
            to_index: to,
            reason: "test".into(),
            node_id: 1,
            recorded_at_unix_ms: W,
        };
        record_gap(dest, CLUSTER, &format!("tl-{n}"), &record)
            .await
            .unwrap();
    }

    async fn ranges(dest: &Destination, n: u64) -> Vec<(u64, u64)> {
        list_segments(dest, CLUSTER, &format!("tl-{n}"))
            .await
            .unwrap()
            .iter()
            .map(|s| (s.first_index, s.last_index))
            .collect()
    }

    async fn gaps(dest: &Destination, n: u64) -> Vec<(u64, u64)> {
        list_timelines(dest, CLUSTER, Some(&format!("tl-{n}")))
            .await
            .unwrap()
            .remove(&format!("tl-{n}"))
            .map(|o| o.gaps)
            .unwrap_or_default()
    }

    fn deleted(t: &TimelinePrune) -> Vec<(PrunedKind, u64, u64)> {
        t.deleted
            .iter()
            .map(|o| (o.kind, o.first_index, o.last_index))
            .collect()
    }

    fn timeline(r: &ArchivePruneReport, n: u64) -> &TimelinePrune {
        r.timelines
            .iter()
            .find(|t| t.timeline_id == format!("tl-{n}"))
            .unwrap()
    }

    const TEN: [(u64, u64); 6] = [(1, 10), (11, 20), (21, 30), (31, 40), (41, 50), (51, 60)];

    #[tokio::test]
    async fn a_window_without_a_base_keeps_everything() {
        let dest = memory();
        archive(&dest, 1, &TEN).await;
        // No backup at all, then only bases taken after the window's start.
        for kept in [vec![], vec![base(1, 45, W + HOUR), base(1, 55, NOW - HOUR)]] {
            let report = prune_archive(&dest, CLUSTER, WEEK, NOW, &kept, false)
                .await
                .unwrap();
            assert_eq!(report.window_start_unix_ms, W);
            let t = timeline(&report, 1);
            assert_eq!(t.base, None);
            assert!(t.deleted.is_empty(), "{t:?}");
            assert_eq!(t.kept.len(), 1);
            assert_eq!(
                (
                    t.kept[0].first_index,
                    t.kept[0].last_index,
                    t.kept[0].segments
                ),
                (1, 60, 6)
            );
            assert!(t.kept[0].reason.contains("no kept base backup"), "{t:?}");
            assert_eq!(ranges(&dest, 1).await, TEN);
        }
        // A base of another timeline or cluster does not count either.
        let other = [base(2, 5, W - DAY)];
        let report = prune_archive(&dest, CLUSTER, WEEK, NOW, &other, false)
            .await
            .unwrap();
        assert!(timeline(&report, 1).deleted.is_empty());
    }

    #[tokio::test]
    async fn segments_below_the_window_base_go_oldest_first() {
        let dest = memory();
        archive(&dest, 1, &TEN).await;
        let kept = [
            base(1, 5, W - 2 * DAY),
            base(1, 25, W - HOUR),
            base(1, 45, W + HOUR),
        ];
        let dry = prune_archive(&dest, CLUSTER, WEEK, NOW, &kept, true)
            .await
            .unwrap();
        assert!(dry.dry_run);
        let t = timeline(&dry, 1);
        assert_eq!(t.base, Some(kept[1].0.clone()));
        assert_eq!(t.keep_after_index, Some(25));
        assert_eq!(
            deleted(t),
            [(PrunedKind::Segment, 1, 10), (PrunedKind::Segment, 11, 20)]
        );
        assert_eq!(ranges(&dest, 1).await, TEN, "a dry run deletes nothing");

        let report = prune_archive(&dest, CLUSTER, WEEK, NOW, &kept, false)
            .await
            .unwrap();
        assert_eq!(report.timelines, dry.timelines);
        let t = timeline(&report, 1);
        assert_eq!(t.failed, None);
        assert_eq!(t.kept.len(), 1);
        assert_eq!((t.kept[0].first_index, t.kept[0].last_index), (21, 60));
        assert_eq!(ranges(&dest, 1).await, TEN[2..]);
        // What is left is a sound archive: its first segment may point at a deleted one.
        let chain = verify_archive_timeline(&dest, CLUSTER, "tl-1", None)
            .await
            .unwrap();
        assert_eq!(chain.problems, []);
        // Again: nothing more to do.
        let again = prune_archive(&dest, CLUSTER, WEEK, NOW, &kept, false)
            .await
            .unwrap();
        assert!(timeline(&again, 1).deleted.is_empty());
    }

    #[tokio::test]
    async fn a_running_restore_keeps_its_base_and_segments_until_its_lease_ends() {
        let dest = memory();
        archive(&dest, 1, &TEN).await;
        let kept = [
            base(1, 5, W - 2 * DAY),
            base(1, 25, W - HOUR),
            base(1, 45, W + HOUR),
        ];
        // A restore from the oldest base is reading segments 6.. right now.
        let lease = RestoreLease {
            base: kept[0].0.to_string(),
            from_index: 5,
            to_index: 30,
            taken_at_unix_ms: NOW - 1000,
            expires_at_unix_ms: NOW + HOUR,
            holder: "test".into(),
        };
        let held = take_lease(&dest, CLUSTER, "tl-1", &lease).await.unwrap();
        let needs = archive_needs(&dest, &kept, Some(CLUSTER), WEEK, NOW)
            .await
            .unwrap();
        assert!(needs.contains_key(&kept[0].0), "{needs:?}");
        let report = prune_archive(&dest, CLUSTER, WEEK, NOW, &kept, false)
            .await
            .unwrap();
        assert_eq!(deleted(timeline(&report, 1)), []);
        assert_eq!(ranges(&dest, 1).await, TEN);
        // Released (or expired): the window alone decides again.
        release_lease(&dest, &held).await;
        let report = prune_archive(&dest, CLUSTER, WEEK, NOW, &kept, false)
            .await
            .unwrap();
        assert_eq!(
            deleted(timeline(&report, 1)),
            [(PrunedKind::Segment, 1, 10), (PrunedKind::Segment, 11, 20)]
        );
        take_lease(&dest, CLUSTER, "tl-1", &lease).await.unwrap();
        let later = NOW + 2 * HOUR;
        assert!(live_leases(&dest, CLUSTER, "tl-1", later, false)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn a_later_base_with_an_older_index_lowers_the_bound() {
        // A node with a fast clock: its backup is dated after the window base but holds less.
        let dest = memory();
        archive(&dest, 1, &TEN).await;
        let kept = [base(1, 35, W - HOUR), base(1, 15, W + HOUR)];
        let report = prune_archive(&dest, CLUSTER, WEEK, NOW, &kept, false)
            .await
            .unwrap();
        let t = timeline(&report, 1);
        assert_eq!(t.base, Some(kept[0].0.clone()));
        assert_eq!(t.keep_after_index, Some(15));
        assert_eq!(deleted(t), [(PrunedKind::Segment, 1, 10)]);
        assert_eq!(ranges(&dest, 1).await, TEN[1..]);
    }

    #[tokio::test]
    async fn the_newest_segment_survives() {
        let dest = memory();
        archive(&dest, 1, &TEN).await;
        let kept = [base(1, 100, W - HOUR)];
        let report = prune_archive(&dest, CLUSTER, WEEK, NOW, &kept, false)
            .await
            .unwrap();
        let t = timeline(&report, 1);
        assert_eq!(deleted(t).len(), 5);
        assert_eq!(t.kept.len(), 1);
        assert!(t.kept[0].reason.contains("watermark"), "{t:?}");
        assert_eq!(ranges(&dest, 1).await, [(51, 60)]);
    }

    #[tokio::test]
    async fn gap_records_go_only_with_the_segments_around_them() {
        let dest = memory();
        archive(&dest, 1, &[(1, 10), (11, 20), (31, 40), (41, 50), (56, 60)]).await;
        gap(&dest, 1, 21, 30).await;
        gap(&dest, 1, 51, 55).await;
        let kept = [base(1, 45, W - HOUR)];
        let report = prune_archive(&dest, CLUSTER, WEEK, NOW, &kept, false)
            .await
            .unwrap();
        let t = timeline(&report, 1);
        assert_eq!(
            deleted(t),
            [
                (PrunedKind::Segment, 1, 10),
                (PrunedKind::Segment, 11, 20),
                (PrunedKind::Gap, 21, 30),
                (PrunedKind::Segment, 31, 40),
            ]
        );
        assert_eq!(t.kept_gaps, 1);
        assert_eq!(ranges(&dest, 1).await, [(41, 50), (56, 60)]);
        assert_eq!(gaps(&dest, 1).await, [(51, 55)]);
        let chain = verify_archive_timeline(&dest, CLUSTER, "tl-1", None)
            .await
            .unwrap();
        assert_eq!(chain.problems, []);

        // A gap right before the newest segment stays even when all before it is gone.
        let kept = [base(1, 100, W - HOUR)];
        let report = prune_archive(&dest, CLUSTER, WEEK, NOW, &kept, false)
            .await
            .unwrap();
        assert_eq!(
            deleted(timeline(&report, 1)),
            [(PrunedKind::Segment, 41, 50)]
        );
        assert_eq!(gaps(&dest, 1).await, [(51, 55)]);
        assert_eq!(ranges(&dest, 1).await, [(56, 60)]);
    }

    #[tokio::test]
    async fn timelines_are_pruned_independently() {
        // tl-1 until a restore at index 40 (a week and a half ago, its base before the
        // window), then tl-2 from a base taken after the window start.
        let dest = memory();
        archive(&dest, 1, &TEN[..4]).await;
        archive(&dest, 2, &[(1, 10), (11, 20), (21, 30)]).await;
        let kept = [
            base(1, 25, W - 3 * DAY),
            base(2, 0, W + HOUR),
            base(2, 15, NOW - HOUR),
        ];
        let report = prune_archive(&dest, CLUSTER, WEEK, NOW, &kept, false)
            .await
            .unwrap();
        assert_eq!(report.timelines.len(), 2);
        assert_eq!(
            deleted(timeline(&report, 1)),
            [(PrunedKind::Segment, 1, 10), (PrunedKind::Segment, 11, 20)]
        );
        assert_eq!(timeline(&report, 2).base, None);
        assert!(timeline(&report, 2).deleted.is_empty());
        assert_eq!(ranges(&dest, 1).await, [(21, 30), (31, 40)]);
        assert_eq!(ranges(&dest, 2).await, [(1, 10), (11, 20), (21, 30)]);

        // A week later tl-2's first base is before the window: its archive is pruned in turn,
        // by its own bases only.
        let later = NOW + 7 * DAY;
        let report = prune_archive(&dest, CLUSTER, WEEK, later, &kept, false)
            .await
            .unwrap();
        assert_eq!(
            deleted(timeline(&report, 2)),
            [(PrunedKind::Segment, 1, 10)]
        );
        assert_eq!(timeline(&report, 2).keep_after_index, Some(15));
        assert!(timeline(&report, 1).deleted.is_empty());
    }

    #[tokio::test]
    async fn backup_retention_keeps_the_base_the_window_needs() {
        let dest = memory();
        archive(&dest, 1, &TEN).await;
        let old = base(1, 5, W - 2 * DAY);
        let needed = base(1, 25, W - HOUR);
        let recent = base(1, 45, NOW - HOUR);
        let no_archive = base(2, 3, W - DAY);
        for b in [&old, &needed, &recent, &no_archive] {
            store_base(&dest, b).await;
        }
        let listing = crate::list_backups(&dest).await.unwrap();
        assert_eq!(listing.backups.len(), 4);
        let needs = archive_needs(&dest, &listing.backups, None, WEEK, NOW)
            .await
            .unwrap();
        // Only timelines with an archive need a base.
        assert_eq!(
            needs.into_iter().collect::<Vec<_>>(),
            [(needed.0.clone(), "tl-1".to_string())]
        );
        let needs = archive_needs(&dest, &listing.backups, Some(CLUSTER), WEEK, NOW)
            .await
            .unwrap();
        let keep: BTreeSet<BackupId> = needs.into_keys().collect();

        let keep_last = RetentionPolicy {
            keep_last: Some(1),
            ..RetentionPolicy::default()
        };
        let report = prune_keeping(
            &dest,
            &listing,
            Some(CLUSTER),
            &keep_last,
            NOW,
            &keep,
            false,
        )
        .await
        .unwrap();
        assert_eq!(
            report.kept,
            vec![
                (recent.0.clone(), vec!["last", "newest"]),
                (needed.0.clone(), vec!["archive"]),
            ]
        );
        let mut gone = report.deleted.clone();
        gone.sort();
        let mut expected = vec![old.0.clone(), no_archive.0.clone()];
        expected.sort();
        assert_eq!(gone, expected);

        let after = crate::list_backups(&dest).await.unwrap();
        let kept = kept_backups(
            &listing.backups,
            report.kept.iter().map(|(id, _)| id.clone()),
        );
        assert_eq!(kept.len(), 2);
        assert_eq!(after.backups.len(), 2);
        let archive = prune_archive(&dest, CLUSTER, WEEK, NOW, &kept, false)
            .await
            .unwrap();
        assert_eq!(timeline(&archive, 1).base, Some(needed.0.clone()));
        assert_eq!(ranges(&dest, 1).await, TEN[2..]);

        // Without the archive's needs the same policy would have deleted that base.
        let plain = prune_keeping(
            &dest,
            &after,
            Some(CLUSTER),
            &keep_last,
            NOW,
            &BTreeSet::new(),
            true,
        )
        .await
        .unwrap();
        assert_eq!(plain.deleted, std::slice::from_ref(&needed.0));
    }

    #[tokio::test]
    async fn an_incremental_base_keeps_its_chain() {
        let dest = memory();
        archive(&dest, 1, &TEN).await;
        let older = base(1, 2, W - 2 * DAY);
        let full = base(1, 5, W - 3 * HOUR);
        let first = incremental(1, 15, W - 2 * HOUR, &full);
        let needed = incremental(1, 25, W - HOUR, &first);
        let recent = base(1, 45, NOW - HOUR);
        for b in [&older, &full, &first, &needed, &recent] {
            store_base(&dest, b).await;
        }
        let listing = crate::list_backups(&dest).await.unwrap();
        let needs = archive_needs(&dest, &listing.backups, Some(CLUSTER), WEEK, NOW)
            .await
            .unwrap();
        let keep: BTreeSet<BackupId> = needs.into_keys().collect();
        assert_eq!(keep, BTreeSet::from([needed.0.clone()]));

        let keep_last = RetentionPolicy {
            keep_last: Some(1),
            ..RetentionPolicy::default()
        };
        let report = prune_keeping(
            &dest,
            &listing,
            Some(CLUSTER),
            &keep_last,
            NOW,
            &keep,
            false,
        )
        .await
        .unwrap();
        assert_eq!(
            report.kept,
            vec![
                (recent.0.clone(), vec!["last", "newest"]),
                (needed.0.clone(), vec!["archive"]),
                (first.0.clone(), vec!["chain"]),
                (full.0.clone(), vec!["chain"]),
            ]
        );
        assert_eq!(report.deleted, std::slice::from_ref(&older.0));
        let kept = kept_backups(
            &listing.backups,
            report.kept.iter().map(|(id, _)| id.clone()),
        );
        let archive = prune_archive(&dest, CLUSTER, WEEK, NOW, &kept, false)
            .await
            .unwrap();
        assert_eq!(timeline(&archive, 1).base, Some(needed.0.clone()));
        assert_eq!(ranges(&dest, 1).await, TEN[2..]);

        // An incremental whose chain lost a set restores from nothing: no base. The window
        // falls back to the newest base that restores, or to none (keep the whole archive).
        let broken = [recent.clone(), needed.clone(), full.clone()];
        assert_eq!(window_base(&broken, CLUSTER, "tl-1", W), Some(&full));
        let no_full = [recent.clone(), needed.clone(), first.clone()];
        assert_eq!(window_base(&no_full, CLUSTER, "tl-1", W), None);
        let dry = prune_archive(&dest, CLUSTER, WEEK, NOW, &no_full, true)
            .await
            .unwrap();
        assert_eq!(timeline(&dry, 1).base, None);
        assert!(timeline(&dry, 1).deleted.is_empty());

        // Corrupt manifests naming each other are no base either, and end the walk.
        let mut x = incremental(1, 30, W - 30 * 60_000, &full);
        let y = incremental(1, 31, W - 20 * 60_000, &x);
        x.1.parent = Some(crate::manifest::ParentRef {
            id: y.0.clone(),
            pages_digest: "0".repeat(64),
        });
        let cycle = [y, x, full.clone()];
        assert_eq!(window_base(&cycle, CLUSTER, "tl-1", W), Some(&full));
    }

    #[test]
    fn window_start_saturates() {
        assert_eq!(window_start(WEEK, NOW), W);
        assert!(window_start(Duration::MAX, NOW) < i64::MIN / 2);
        assert_eq!(window_start(Duration::MAX, -NOW), i64::MIN);
        assert_eq!(window_start(Duration::ZERO, NOW), NOW);
    }

    #[tokio::test]
    async fn bad_cluster_ids_are_refused() {
        let err = prune_archive(&memory(), "a/b", WEEK, NOW, &[], true)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cluster id"), "{err}");
    }
}
