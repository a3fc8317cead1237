//! What the archive holds, by object names (plus the headers of each timeline's first and last
//! segment for the times).

use std::collections::BTreeMap;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::destination::Destination;
use crate::error::BackupError;
use crate::manifest::check_segment;

use super::segment::{named, SegmentHeader};
use super::{
    parse_gap_name, parse_segment_name, read_segment_header, ARCHIVE_DIR, GAPS_DIR,
    MAX_HEADER_BYTES, SEGMENT_MAGIC,
};

/// The archive of one timeline as [`list_archive`] sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineCoverage {
    pub timeline_id: String,
    pub segments: u64,
    /// First index of the first segment and last index of the last one.
    pub first_index: u64,
    pub last_index: u64,
    /// Entry times (the leader's clock) at the start of the first segment and the end of the
    /// last one; `None` when those segments carry no stamped entry or their header is unreadable.
    pub first_at_unix_ms: Option<i64>,
    pub last_at_unix_ms: Option<i64>,
    /// Index ranges (inclusive) not archived: holes between segments and recorded gaps,
    /// merged, in order.
    pub gaps: Vec<(u64, u64)>,
    /// Stored bytes of all its segments.
    pub bytes: u64,
}

/// The result of [`list_archive`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveList {
    /// Timelines with at least one segment, oldest first (by first entry time, then id).
    pub timelines: Vec<TimelineCoverage>,
    /// What looked wrong without failing the listing: overlapping segments, unreadable
    /// headers, gap records without any segment.
    pub warnings: Vec<String>,
}

/// A segment object as listed.
#[derive(Clone, Debug)]
pub(crate) struct ListedSegment {
    pub first: u64,
    pub last: u64,
    pub path: ObjectPath,
    pub size: u64,
}

/// The objects of one timeline's archive.
#[derive(Clone, Debug, Default)]
pub(crate) struct TimelineObjects {
    /// Sorted by (first, last).
    pub segments: Vec<ListedSegment>,
    /// Recorded gaps, sorted.
    pub gaps: Vec<(u64, u64)>,
}

/// `<prefix>/<cluster-id>/archive`
fn archive_root(dest: &Destination, cluster_id: &str) -> ObjectPath {
    dest.prefix().clone().join(cluster_id).join(ARCHIVE_DIR)
}

/// Lists the archive of `cluster_id` (only timeline `only` when given), by names. Names that
/// are not segments or gap records are ignored.
pub(crate) async fn list_timelines(
    dest: &Destination,
    cluster_id: &str,
    only: Option<&str>,
) -> Result<BTreeMap<String, TimelineObjects>, BackupError> {
    let root = archive_root(dest, cluster_id);
    let listed = match only {
        Some(timeline) => dest.archive_dir(cluster_id, timeline),
        None => root.clone(),
    };
    let objects: Vec<_> = dest
        .store()
        .list(Some(&listed))
        .try_collect()
        .await
        .map_err(|source| BackupError::ArchiveStore {
            dest: dest.label(),
            op: "listing",
            object: listed.to_string(),
            source: Box::new(source),
        })?;
    let mut timelines: BTreeMap<String, TimelineObjects> = BTreeMap::new();
    for object in objects {
        let Some(parts) = object.location.prefix_match(&root) else {
            continue;
        };
        let parts: Vec<String> = parts.map(|p| p.as_ref().to_string()).collect();
        match parts.as_slice() {
            [timeline, name] => {
                if let Some((first, last)) = parse_segment_name(name) {
                    timelines
                        .entry(timeline.clone())
                        .or_default()
                        .segments
                        .push(ListedSegment {
                            first,
                            last,
                            path: object.location.clone(),
                            size: object.size,
                        });
                }
            }
            [timeline, gaps, name] if gaps == GAPS_DIR => {
                if let Some(range) = parse_gap_name(name) {
                    timelines
                        .entry(timeline.clone())
                        .or_default()
                        .gaps
                        .push(range);
                }
            }
            _ => {}
        }
    }
    timelines.retain(|timeline, _| {
        check_segment(timeline).is_ok() && only.is_none_or(|only| only == timeline)
    });
    for objects in timelines.values_mut() {
        objects.segments.sort_by_key(|s| (s.first, s.last));
        objects.gaps.sort_unstable();
    }
    Ok(timelines)
}

/// Sorts and merges overlapping or adjacent inclusive ranges.
pub(crate) fn merge_ranges(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (from, to) in ranges {
        match merged.last_mut() {
            Some(last) if from <= last.1.saturating_add(1) => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    merged
}

/// Holes between `segments` (sorted by first index) merged with `recorded` gaps, and a
/// description of every segment that overlaps the ones before it.
pub(crate) fn coverage_gaps(
    segments: &[(u64, u64)],
    recorded: &[(u64, u64)],
) -> (Vec<(u64, u64)>, Vec<String>) {
    let mut holes = recorded.to_vec();
    let mut overlaps = Vec::new();
    let mut covered: Option<u64> = None;
    for &(first, last) in segments {
        if let Some(until) = covered {
            if first > until.saturating_add(1) {
                holes.push((until + 1, first - 1));
            } else if first <= until {
                overlaps.push(format!(
                    "segment {first}-{last} overlaps the segments before it (archived up to {until})"
                ));
            }
        }
        covered = Some(covered.map_or(last, |until| until.max(last)));
    }
    (merge_ranges(holes), overlaps)
}

/// Reads only the header of a segment: its first bytes, not the body.
pub(crate) async fn read_header_only(
    dest: &Destination,
    path: &ObjectPath,
    size: u64,
) -> Result<SegmentHeader, BackupError> {
    let head = (SEGMENT_MAGIC.len() + 4 + MAX_HEADER_BYTES) as u64;
    let bytes = dest
        .store()
        .get_range(path, 0..size.min(head))
        .await
        .map_err(|source| BackupError::ArchiveStore {
            dest: dest.label(),
            op: "downloading",
            object: path.to_string(),
            source: Box::new(source),
        })?;
    read_segment_header(&bytes).map_err(|e| named(e, path))
}

/// Lists the archive of `cluster_id` in `dest`: per timeline its coverage (by object names),
/// the times from the headers of its first and last segment, and its gaps. Only the listing
/// failing is an error; anything odd is a warning.
pub async fn list_archive(
    dest: &Destination,
    cluster_id: &str,
) -> Result<ArchiveList, BackupError> {
    check_segment(cluster_id).map_err(|reason| BackupError::InvalidOptions {
        reason: format!("cluster id {cluster_id:?}: {reason}"),
    })?;
    let timelines = list_timelines(dest, cluster_id, None).await?;
    let mut list = ArchiveList::default();
    for (timeline_id, objects) in timelines {
        let last = objects.segments.iter().max_by_key(|s| (s.last, s.first));
        let (Some(first), Some(last)) = (objects.segments.first(), last) else {
            list.warnings.push(format!(
                "timeline {timeline_id}: {} recorded gap(s) but no segment",
                objects.gaps.len()
            ));
            continue;
        };
        let ranges: Vec<(u64, u64)> = objects.segments.iter().map(|s| (s.first, s.last)).collect();
        let (gaps, overlaps) = coverage_gaps(&ranges, &objects.gaps);
        list.warnings.extend(overlaps.into_iter().map(|o| {
            format!("timeline {timeline_id}: {o}; check it with `raftlite backup verify`")
        }));
        let covered = merge_ranges(ranges.clone());
        for &(from, to) in &objects.gaps {
            if covered.iter().any(|&(a, b)| from <= b && a <= to) {
                list.warnings.push(format!(
                    "timeline {timeline_id}: recorded gap {from}-{to} overlaps archived segments"
                ));
            }
        }
        let first_header = read_header_only(dest, &first.path, first.size).await;
        let last_header = if objects.segments.len() == 1 {
            None
        } else {
            Some(read_header_only(dest, &last.path, last.size).await)
        };
        let mut header =
            |result: Result<SegmentHeader, BackupError>, segment: &ListedSegment| match result {
                Ok(h) if (h.first_index, h.last_index) == (segment.first, segment.last) => Some(h),
                Ok(h) => {
                    list.warnings.push(format!(
                        "timeline {timeline_id}: segment {} holds entries {}-{}, not what its \
                         name says; check it with `raftlite backup verify`",
                        segment.path, h.first_index, h.last_index
                    ));
                    None
                }
                Err(e) => {
                    list.warnings.push(format!("timeline {timeline_id}: {e}"));
                    None
                }
            };
        let first_header = header(first_header, first);
        let last_header = match last_header {
            None => first_header.clone(),
            Some(result) => header(result, last),
        };
        list.timelines.push(TimelineCoverage {
            timeline_id: timeline_id.clone(),
            segments: objects.segments.len() as u64,
            first_index: first.first,
            last_index: last.last,
            first_at_unix_ms: first_header.and_then(|h| h.first_at_unix_ms),
            last_at_unix_ms: last_header.and_then(|h| h.last_at_unix_ms),
            gaps,
            bytes: objects.segments.iter().map(|s| s.size).sum(),
        });
    }
    list.timelines.sort_by(|a, b| {
        (
            a.first_at_unix_ms.is_none(),
            a.first_at_unix_ms,
            &a.timeline_id,
        )
            .cmp(&(
                b.first_at_unix_ms.is_none(),
                b.first_at_unix_ms,
                &b.timeline_id,
            ))
    });
    Ok(list)
}

/// The cluster ids under `dest` that have an archive folder (for listing every cluster's
/// archive, including a cluster with no backup left).
pub async fn archive_clusters(dest: &Destination) -> Result<Vec<String>, BackupError> {
    let prefix = dest.prefix().clone();
    let listing_error = |object: &ObjectPath| {
        let dest = dest.label();
        let object = object.to_string();
        move |source| BackupError::ArchiveStore {
            dest,
            op: "listing",
            object,
            source: Box::new(source),
        }
    };
    // The store's root is listed as `None`: some stores read an empty prefix as "/".
    let top = dest
        .store()
        .list_with_delimiter((!prefix.is_root()).then_some(&prefix))
        .await
        .map_err(listing_error(&prefix))?;
    let mut clusters = Vec::new();
    for cluster_dir in top.common_prefixes {
        let Some(cluster) = cluster_dir.filename().map(str::to_string) else {
            continue;
        };
        if check_segment(&cluster).is_err() {
            continue;
        }
        let inside = dest
            .store()
            .list_with_delimiter(Some(&cluster_dir))
            .await
            .map_err(listing_error(&cluster_dir))?;
        if inside
            .common_prefixes
            .iter()
            .any(|p| p.filename() == Some(ARCHIVE_DIR))
        {
            clusters.push(cluster);
        }
    }
    clusters.sort();
    Ok(clusters)
}

/// `2025-01-02T03:04:05.678Z`: how listings show entry times.
pub fn rfc3339_utc(unix_ms: i64) -> String {
    crate::manifest::rfc3339(unix_ms)
}

/// One segment of a timeline, by its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentRef {
    pub first_index: u64,
    pub last_index: u64,
    pub path: ObjectPath,
    pub size: u64,
}

/// The segments of one timeline, in index order (by names only: a replay reads and checks
/// each one).
pub async fn list_segments(
    dest: &Destination,
    cluster_id: &str,
    timeline_id: &str,
) -> Result<Vec<SegmentRef>, BackupError> {
    let mut timelines = list_timelines(dest, cluster_id, Some(timeline_id)).await?;
    Ok(timelines
        .remove(timeline_id)
        .map(|objects| {
            objects
                .segments
                .into_iter()
                .map(|s| SegmentRef {
                    first_index: s.first,
                    last_index: s.last,
                    path: s.path,
                    size: s.size,
                })
                .collect()
        })
        .unwrap_or_default())
}
