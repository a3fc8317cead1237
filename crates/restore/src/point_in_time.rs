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
    decode_segment, list_archive, list_segments, read_segment, SegmentHeader, TimelineCoverage,
};
use raftlite_backup::{
    download_backup, list_backups, BackupError, BackupId, Destination, Identity,
};
use raftlite_consensus::replay::{decode_archived, starts_timeline, ReplayError, Replayer};

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
    let timeline_id = timeline
        .map(str::to_string)
        .unwrap_or_else(|| newest.timeline.id.clone());
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
    download_backup(dest, base_id, identity, &path).await?;

    let segments = list_segments(dest, &cluster_id, &timeline_id).await?;
    let path_for_replay = path.clone();
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
        check_header(&header, &timeline_id)?;
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
    Ok(Prepared {
        path,
        cluster_id,
        timeline_id,
        base: base_id.clone(),
        base_index,
        index,
        at_unix_ms: last_at,
        entries_replayed: replayed,
    })
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

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PitrError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PitrError::Blocking(e.to_string()))
}
