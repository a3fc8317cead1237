//! Point-in-time restore, the local half: the newest base backup at or before the target on the
//! chosen timeline, plus the archived log replayed onto it up to the target, into a file in the
//! scratch directory. The caller then restores that file to the cluster like any SQLite file
//! (online, validated again, on a new timeline).
//!
//! Nothing in the cluster changes here, and a target the archive cannot reach (past its end,
//! before the oldest base, or inside a recorded or unrecorded gap) is refused before anything is
//! downloaded.

use std::path::{Path, PathBuf};

use raftlite_backup::archive::{
    decode_segment, list_archive, list_segments, read_segment, release_lease, take_lease,
    timeline_history, RestoreLease, SegmentHeader, TimelineCoverage, LEASE_DURATION,
};
use raftlite_backup::{
    download_backup, list_backups, BackupError, BackupId, Destination, Identity,
};
use raftlite_consensus::replay::{decode_archived, starts_timeline, ReplayError, Replayer};
use raftlite_store::TimelineRecord;

/// Where to put the data back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Everything up to and including this log index.
    Index(u64),
    /// Every entry the leader stamped at or before this moment (Unix ms).
    Time(i64),
    /// The last archived entry.
    Latest,
}

impl From<BackupError> for PitrError {
    fn from(e: BackupError) -> PitrError {
        PitrError::Backup(Box::new(e))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PitrError {
    #[error(transparent)]
    Backup(Box<BackupError>),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("{0}")]
    Refused(String),
    #[error("cannot replay onto the base's copy: {0}")]
    Blocking(String),
}

/// What was prepared.
#[derive(Debug)]
pub struct Prepared {
    /// The database as it stood at the target.
    pub path: PathBuf,
    pub cluster_id: String,
    pub timeline_id: String,
    pub base: BackupId,
    pub base_index: u64,
    /// The last entry the file reflects.
    pub index: u64,
    /// The leader's clock of the last write replayed, if any.
    pub at_unix_ms: Option<i64>,
    pub entries_replayed: u64,
    /// The later base backup the replay was checked against, if one exists within the archive.
    pub checked_against: Option<BackupId>,
}

/// Builds the database as it stood at `target` into `scratch`. `timeline` picks the timeline
/// (default: the newest backup's). `say` receives one line per step.
pub async fn prepare_point_in_time(
    dest: &Destination,
    timeline: Option<&str>,
    target: Target,
    identity: Option<&Identity>,
    scratch: &Path,
    say: &mut (dyn FnMut(String) + Send),
) -> Result<Prepared, PitrError> {
    let backups = list_backups(dest).await?;
    let Some((_, newest)) = backups.backups.first() else {
        return Err(PitrError::Refused(format!(
            "{dest} holds no backup: a point-in-time restore starts from a base backup; take one \
             (POST /backups or the schedule) and archive the log with --archive-to"
        )));
    };
    let cluster_id = newest.cluster_id.clone();
    let timeline_id = match timeline {
        Some(timeline) => timeline.to_string(),
        None => {
            let history = timeline_history(dest, &cluster_id).await?;
            let found = timeline_of(&history, &newest.timeline.id, target);
            if found != newest.timeline.id {
                say(format!(
                    "{target:?} is before timeline {} started: following its history to \
                     timeline {found}",
                    newest.timeline.id
                ));
            }
            found
        }
    };
    let archive = list_archive(dest, &cluster_id).await?;
    let coverage = archive
        .timelines
        .iter()
        .find(|t| t.timeline_id == timeline_id)
        .ok_or_else(|| {
            PitrError::Refused(format!(
                "{dest} has no log archive for timeline {timeline_id}; `raftlite backup list` \
                 shows the archived timelines (start the servers with --archive-to to archive)"
            ))
        })?;

    // Bases on this timeline, newest first, that the target can start from.
    let bases: Vec<(&BackupId, u64, i64)> = backups
        .backups
        .iter()
        .filter(|(_, m)| m.cluster_id == cluster_id && m.timeline.id == timeline_id)
        .map(|(id, m)| (id, m.data_index(), m.created_at_unix_ms))
        .collect();
    let base = match target {
        Target::Index(index) => bases.iter().find(|(_, b, _)| *b <= index),
        // A backup holds only entries applied before it was taken.
        Target::Time(at) => bases.iter().find(|(_, _, created)| *created <= at),
        Target::Latest => bases.first(),
    };
    let Some(&(base_id, base_index, _)) = base else {
        return Err(PitrError::Refused(format!(
            "no backup of timeline {timeline_id} in {dest} is old enough to start from for \
             {target:?}: the oldest base backup is the earliest point that can be restored"
        )));
    };
    let last_possible = match target {
        Target::Index(index) => index,
        Target::Time(_) | Target::Latest => coverage.last_index,
    };
    check_reachable(coverage, base_index, last_possible, target)?;

    say(format!(
        "base: backup {base_id} (log index {base_index}); replaying the archived log of timeline \
         {timeline_id} from index {}",
        base_index + 1
    ));
    let path = scratch.join("point-in-time.sqlite");
    // Archive retention on the cluster's leader keeps what this restore reads while it runs.
    let now = now_unix_ms();
    let lease = take_lease(
        dest,
        &cluster_id,
        &timeline_id,
        &RestoreLease {
            base: base_id.to_string(),
            from_index: base_index,
            to_index: last_possible,
            taken_at_unix_ms: now,
            expires_at_unix_ms: now.saturating_add(LEASE_DURATION.as_millis() as i64),
            holder: format!("raftlite restore (pid {})", std::process::id()),
        },
    )
    .await?;
    // The base after ours, when the archive reaches it whole: replaying up to it must give its
    // content, which checks the segments this restore trusts against an independent copy.
    let later = bases
        .iter()
        .filter(|(_, index, _)| *index > base_index)
        .min_by_key(|(_, index, _)| *index)
        .filter(|(_, index, _)| {
            *index <= coverage.last_index
                && !coverage
                    .gaps
                    .iter()
                    .any(|(a, b)| *b > base_index && *a <= *index)
        })
        .map(|(id, index, _)| (*id, *index));
    let replayed = async {
        download_backup(dest, base_id, identity, &path).await?;
        let replayed = replay_onto(
            dest,
            &cluster_id,
            &timeline_id,
            base_index,
            last_possible,
            target,
            identity,
            &path,
        )
        .await?;
        if let Some((later_id, later_index)) = later {
            say(format!(
                "checking the archive: replaying it from backup {base_id} up to backup \
                 {later_id} (entry {later_index}) must give that backup's content"
            ));
            let check = scratch.join("check");
            std::fs::create_dir_all(&check).map_err(|e| {
                PitrError::Refused(format!("cannot create {}: {e}", check.display()))
            })?;
            let outcome = replay_and_compare(
                dest,
                &cluster_id,
                &timeline_id,
                (base_id, base_index),
                (later_id, later_index),
                identity,
                &check,
            )
            .await;
            let _ = std::fs::remove_dir_all(&check);
            outcome
                .map_err(|reason| PitrError::Refused(format!("{reason}; nothing was restored")))?;
        }
        Ok::<_, PitrError>(replayed)
    }
    .await;
    release_lease(dest, &lease).await;
    let replayed = replayed?;
    Ok(Prepared {
        path,
        cluster_id,
        timeline_id,
        base: base_id.clone(),
        base_index,
        index: replayed.index,
        at_unix_ms: replayed.at_unix_ms,
        entries_replayed: replayed.entries,
        checked_against: later.map(|(id, _)| id.clone()),
    })
}

/// What [`replay_onto`] did.
struct Replayed {
    index: u64,
    at_unix_ms: Option<i64>,
    entries: u64,
}

/// Replays the archived entries of `timeline_id` after `base_index`, up to `last_possible` and
/// `target`, onto the database at `path` (the base's copy). Stops before an entry that starts a
/// new timeline (a restore), and refuses an index target the archive does not reach.
#[allow(clippy::too_many_arguments)]
async fn replay_onto(
    dest: &Destination,
    cluster_id: &str,
    timeline_id: &str,
    base_index: u64,
    last_possible: u64,
    target: Target,
    identity: Option<&Identity>,
    path: &Path,
) -> Result<Replayed, PitrError> {
    let segments = list_segments(dest, cluster_id, timeline_id).await?;
    let path_for_replay = path.to_path_buf();
    let mut replayer = blocking(move || Replayer::open(&path_for_replay)).await??;
    let mut replayed = 0u64;
    let mut last_at = None;
    let mut reached_end = false;
    'segments: for segment in segments
        .iter()
        .filter(|s| s.last_index > base_index && s.first_index <= last_possible)
    {
        let bytes = read_segment(dest, &segment.path).await?;
        let (header, entries) = decode_segment(&bytes, identity)?;
        check_header(&header, timeline_id)?;
        let mut batch = Vec::new();
        for archived in entries {
            if archived.index <= base_index {
                continue;
            }
            if archived.index > last_possible {
                break;
            }
            if let (Target::Time(at), Some(stamp)) = (target, archived.at_unix_ms) {
                if stamp > at {
                    reached_end = true;
                    break;
                }
            }
            let entry = decode_archived(archived.index, &archived.payload)?;
            if starts_timeline(&entry) {
                // The timeline's data ends here: a restore replaced it.
                if matches!(target, Target::Index(i) if i >= entry.log_id.index) {
                    return Err(ReplayError::CrossesRestore {
                        index: entry.log_id.index,
                    }
                    .into());
                }
                reached_end = true;
                break;
            }
            if archived.at_unix_ms.is_some() {
                last_at = archived.at_unix_ms;
            }
            batch.push(entry);
        }
        let n = batch.len() as u64;
        replayer = blocking(move || -> Result<Replayer, ReplayError> {
            for entry in batch {
                replayer.apply(entry)?;
            }
            Ok(replayer)
        })
        .await??;
        replayed += n;
        if reached_end {
            break 'segments;
        }
    }
    let reached = replayer.applied();
    let meta = blocking(move || replayer.finish()).await??;
    let index = meta.applied.map_or(reached, |p| p.index);
    if let Target::Index(wanted) = target {
        if index != wanted {
            return Err(PitrError::Refused(format!(
                "the archive ends at entry {index} on the way to {wanted}: entries are missing; \
                 nothing was restored (check the archive with `raftlite backup verify`)"
            )));
        }
    }
    Ok(Replayed {
        index,
        at_unix_ms: last_at,
        entries: replayed,
    })
}

/// One check of [`check_replay_between_bases`]: the archive replayed from base `from` to the
/// point of base `to`.
#[derive(Debug)]
pub struct BaseToBase {
    pub from: BackupId,
    pub to: BackupId,
    pub from_index: u64,
    pub to_index: u64,
    /// Entries replayed when the contents matched; what differed or failed otherwise.
    pub outcome: Result<u64, String>,
}

/// For each two consecutive base backups of `timeline_id` whose log the archive holds whole:
/// replays the archive from the older onto its copy up to the newer's point, and compares the
/// two databases' content digests ([`raftlite_store::dump::content_digest`]). A difference
/// means a segment, the replay or a base is not what it claims. Pairs the archive does not
/// cover (pruned, or a gap between them) are not checked. Each step is reported to `say`.
pub async fn check_replay_between_bases(
    dest: &Destination,
    cluster_id: &str,
    timeline_id: &str,
    identity: Option<&Identity>,
    scratch: &Path,
    say: &mut (dyn FnMut(String) + Send),
) -> Result<Vec<BaseToBase>, PitrError> {
    let backups = list_backups(dest).await?;
    let archive = list_archive(dest, cluster_id).await?;
    let Some(coverage) = archive
        .timelines
        .iter()
        .find(|t| t.timeline_id == timeline_id)
    else {
        return Ok(Vec::new());
    };
    let mut bases: Vec<(&BackupId, u64)> = backups
        .backups
        .iter()
        .filter(|(_, m)| m.cluster_id == cluster_id && m.timeline.id == timeline_id)
        .map(|(id, m)| (id, m.data_index()))
        .collect();
    bases.sort_by_key(|(_, index)| *index);
    bases.dedup_by_key(|(_, index)| *index);
    let mut checks = Vec::new();
    for pair in bases.windows(2) {
        let [(from, from_index), (to, to_index)] = pair else {
            continue;
        };
        let (from_index, to_index) = (*from_index, *to_index);
        let covered = coverage.first_index <= from_index + 1
            && coverage.last_index >= to_index
            && !coverage
                .gaps
                .iter()
                .any(|(a, b)| *b > from_index && *a <= to_index);
        if !covered {
            continue;
        }
        say(format!(
            "replaying the archive from backup {from} (entry {from_index}) to backup {to} \
             (entry {to_index})"
        ));
        let outcome = replay_and_compare(
            dest,
            cluster_id,
            timeline_id,
            (from, from_index),
            (to, to_index),
            identity,
            scratch,
        )
        .await;
        checks.push(BaseToBase {
            from: (*from).clone(),
            to: (*to).clone(),
            from_index,
            to_index,
            outcome,
        });
    }
    Ok(checks)
}

async fn replay_and_compare(
    dest: &Destination,
    cluster_id: &str,
    timeline_id: &str,
    (from, from_index): (&BackupId, u64),
    (to, to_index): (&BackupId, u64),
    identity: Option<&Identity>,
    scratch: &Path,
) -> Result<u64, String> {
    let replayed_path = scratch.join("replayed-base.sqlite");
    let later_path = scratch.join("later-base.sqlite");
    let cleanup = |paths: &[&Path]| {
        for path in paths {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut name = path.as_os_str().to_owned();
                name.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(name));
            }
        }
    };
    cleanup(&[&replayed_path, &later_path]);
    let outcome = async {
        download_backup(dest, from, identity, &replayed_path)
            .await
            .map_err(|e| format!("cannot download backup {from}: {e}"))?;
        let replayed = replay_onto(
            dest,
            cluster_id,
            timeline_id,
            from_index,
            to_index,
            Target::Index(to_index),
            identity,
            &replayed_path,
        )
        .await
        .map_err(|e| e.to_string())?;
        download_backup(dest, to, identity, &later_path)
            .await
            .map_err(|e| format!("cannot download backup {to}: {e}"))?;
        let (a, b) = (replayed_path.clone(), later_path.clone());
        let (replayed_digest, later_digest) = blocking(move || {
            Ok::<_, raftlite_store::StoreError>((
                raftlite_store::dump::content_digest(&a)?,
                raftlite_store::dump::content_digest(&b)?,
            ))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot read a database to compare: {e}"))?;
        if replayed_digest != later_digest {
            return Err(format!(
                "replaying the archive from backup {from} to entry {to_index} gives content \
                 {replayed_digest}, but backup {to} holds {later_digest}: a segment, the replay \
                 or a backup is wrong; do not rely on points between them"
            ));
        }
        Ok(replayed.entries)
    }
    .await;
    cleanup(&[&replayed_path, &later_path]);
    outcome
}

/// The timeline `target` lies on, following the destination's timeline history back from
/// `newest`: a moment before a timeline started, or an index its parent still held, belongs to
/// the parent. Stops where the history has no record (the archive then decides).
fn timeline_of(history: &[TimelineRecord], newest: &str, target: Target) -> String {
    let mut current = newest.to_string();
    // Each step goes to a parent; a history cannot be longer than its records.
    for _ in 0..=history.len() {
        let Some(record) = history.iter().find(|r| r.id == current) else {
            break;
        };
        let Some(parent) = &record.parent else {
            break;
        };
        let before = match target {
            Target::Time(at) => at < record.at_unix_ms,
            Target::Index(index) => record.parent_index.is_some_and(|p| index <= p),
            Target::Latest => false,
        };
        if !before {
            break;
        }
        current = parent.clone();
    }
    current
}

/// Refuses a target outside the archive's coverage or behind a gap, before any download.
fn check_reachable(
    coverage: &TimelineCoverage,
    base_index: u64,
    last: u64,
    target: Target,
) -> Result<(), PitrError> {
    if last > coverage.last_index {
        return Err(PitrError::Refused(format!(
            "{target:?} is past the end of the archive of timeline {} (it ends at entry {}); \
             nothing was restored",
            coverage.timeline_id, coverage.last_index
        )));
    }
    if last > base_index && coverage.first_index > base_index + 1 {
        return Err(PitrError::Refused(format!(
            "the archive of timeline {} starts at entry {}, after the newest usable base backup \
             (entry {base_index}): entries {}..={} are in neither; nothing was restored",
            coverage.timeline_id,
            coverage.first_index,
            base_index + 1,
            coverage.first_index - 1
        )));
    }
    if let Some((from, to)) = coverage
        .gaps
        .iter()
        .find(|(from, to)| *to > base_index && *from <= last)
    {
        return Err(PitrError::Refused(format!(
            "entries {from}..={to} of timeline {} are missing from the archive (a gap), between \
             the base backup (entry {base_index}) and the target: restore to a point before \
             entry {from}, or after a base backup taken since; nothing was restored",
            coverage.timeline_id
        )));
    }
    Ok(())
}

fn check_header(header: &SegmentHeader, timeline_id: &str) -> Result<(), PitrError> {
    if header.timeline.id != timeline_id {
        return Err(PitrError::Refused(format!(
            "an archive segment of timeline {timeline_id} says it belongs to timeline {}; the \
             archive is damaged: check it with `raftlite backup verify`",
            header.timeline.id
        )));
    }
    Ok(())
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PitrError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PitrError::Blocking(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, parent: Option<(&str, u64)>, at: i64) -> TimelineRecord {
        TimelineRecord {
            id: id.into(),
            counter: 1,
            parent: parent.map(|(p, _)| p.into()),
            parent_index: parent.map(|(_, i)| i),
            reason: "test".into(),
            at_unix_ms: at,
        }
    }

    #[test]
    fn a_target_before_a_timeline_started_belongs_to_its_parent() {
        // t1 from the start; t2 restored at entry 100 (time 5000); t3 at entry 200 (time 9000).
        let history = [
            record("t1", None, 0),
            record("t2", Some(("t1", 100)), 5_000),
            record("t3", Some(("t2", 200)), 9_000),
        ];
        let of = |target| timeline_of(&history, "t3", target);
        assert_eq!(of(Target::Latest), "t3");
        assert_eq!(of(Target::Time(9_500)), "t3");
        assert_eq!(of(Target::Time(8_999)), "t2");
        assert_eq!(of(Target::Time(4_000)), "t1");
        assert_eq!(of(Target::Index(250)), "t3");
        assert_eq!(of(Target::Index(150)), "t2");
        assert_eq!(of(Target::Index(100)), "t1");
        // No record for the newest: nothing to follow.
        assert_eq!(timeline_of(&history[..1], "t9", Target::Time(0)), "t9");
    }
}
