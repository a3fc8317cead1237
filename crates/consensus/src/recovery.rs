//! Recovery for the bad days (DESIGN.md section 6), run before a node serves:
//!
//! - [`recover_in_place`] (`serve --recovery-mode`): the Raft log is lost or damaged but the
//!   database (or a local snapshot) survives. The damaged parts are moved aside (never
//!   deleted) and the database is prepared to seed a new single-node cluster on a new
//!   timeline; the node then bootstraps as usual and other nodes join it with empty data dirs.
//!   A damaged database with an intact log is moved aside and rebuilt from the snapshot and the
//!   log, when they can rebuild it.
//! - [`rewrite_membership`] (`raftlite recover`): the cluster lost its majority. On a stopped
//!   surviving node, every entry of its log is applied to its database, the membership is
//!   replaced by the given members, a new timeline records the event, and the log is compacted
//!   to the database, so on the next start the node can elect itself and others can join.
//!
//! Every step names what it found and what it did; nothing here panics on damaged input.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use raftlite_store::TimelineRecord;

use crate::log_store::LogStore;
use crate::node::{unix_ms, DataDirLayout};
use crate::startup::{classify, DataDirState};
use crate::state_machine::{log_id_to_position, SnapshotDir, SqliteStateMachine};
use crate::types::*;

/// Entries applied per batch while replaying a log offline.
const REPLAY_BATCH: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// Recovery cannot proceed; the reason says why and what to do. Nothing was changed unless
    /// the reason says so.
    #[error("{0}")]
    Refused(String),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Storage(String),
}

/// What a recovery did.
#[derive(Clone, Debug)]
pub struct RecoveryOutcome {
    /// One line for the logs: what was found and what was done.
    pub summary: String,
    /// The new timeline, when the lineage changed.
    pub timeline: Option<TimelineRecord>,
    /// Files and directories moved aside (kept for forensics; delete them once satisfied).
    pub moved_aside: Vec<PathBuf>,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RecoveryError {
    let path = path.to_path_buf();
    move |source| RecoveryError::Io {
        action,
        path,
        source,
    }
}

/// Renames `path` to `<path>.<label>-<unix ms>` if it exists; returns the new name.
fn move_aside(path: &Path, label: &str) -> Result<Option<PathBuf>, RecoveryError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{label}-{}", unix_ms()));
    let target = PathBuf::from(name);
    std::fs::rename(path, &target).map_err(io("move aside", path))?;
    Ok(Some(target))
}

fn sync_dir(dir: &Path) -> Result<(), RecoveryError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))
}

fn new_timeline(reason: String) -> TimelineRecord {
    TimelineRecord {
        id: format!("{:032x}", rand::random::<u128>()),
        counter: 0,
        parent: None,
        parent_index: None,
        reason,
        at_unix_ms: unix_ms(),
    }
}

/// `serve --recovery-mode` on a data dir classified as `state`. `Ok(None)`: nothing to recover
/// (the node starts as usual). After `Ok(Some(_))` the data dir classifies as empty-with-data
/// (bootstrap a new single-node cluster) or as rebuildable from its log.
pub async fn recover_in_place(
    data_dir: &Path,
    state: &DataDirState,
    node_id: NodeId,
    addr: &NodeAddr,
) -> Result<Option<RecoveryOutcome>, RecoveryError> {
    let layout = DataDirLayout::new(data_dir);
    match state {
        DataDirState::Empty | DataDirState::Consistent { .. } | DataDirState::DbLost { .. } => {
            Ok(None)
        }
        DataDirState::LogLost { db_index, .. } => {
            let why = format!("the Raft log was missing or ended before index {db_index}");
            seed_new_cluster(&layout, &why, node_id, addr)
                .await
                .map(Some)
        }
        DataDirState::Corrupt { file, detail } if file.starts_with(&layout.raft) => {
            let why = format!("the Raft log {} was damaged ({detail})", file.display());
            seed_new_cluster(&layout, &why, node_id, addr)
                .await
                .map(Some)
        }
        DataDirState::Corrupt { file, detail } => {
            rebuild_damaged_data(data_dir, &layout, file, detail).map(Some)
        }
    }
}

/// The data to keep when the log is gone: the database, or the newest snapshot when it is
/// further along (or the database is unusable).
async fn seed_new_cluster(
    layout: &DataDirLayout,
    why: &str,
    node_id: NodeId,
    addr: &NodeAddr,
) -> Result<RecoveryOutcome, RecoveryError> {
    let db_meta = raftlite_store::probe(&layout.db).ok().flatten();
    let db_index = db_meta
        .as_ref()
        .and_then(|m| m.applied)
        .map(|p| p.index)
        .unwrap_or(0);
    let snapshot = SnapshotDir::read_only(&layout.snapshots)
        .newest()
        .ok()
        .flatten();
    let snapshot_index = snapshot
        .as_ref()
        .and_then(|s| {
            s.meta
                .last_log_id
                .as_ref()
                .map(|l| log_id_to_position(l).index)
        })
        .unwrap_or(0);
    let mut moved = Vec::new();
    if snapshot_index > db_index {
        let Some(crate::state_machine::StoredSnapshot {
            data: snapshot_file,
            ..
        }) = &snapshot
        else {
            return Err(RecoveryError::Refused("the snapshot vanished".into()));
        };
        // The snapshot holds more: it becomes the database (the old one is kept aside).
        for suffix in ["", "-wal", "-shm"] {
            let mut name = layout.db.as_os_str().to_os_string();
            name.push(suffix);
            if let Some(m) = move_aside(Path::new(&name), "before-recovery")? {
                moved.push(m);
            }
        }
        let staging = layout.db.with_extension("sqlite.recovering");
        std::fs::copy(snapshot_file, &staging).map_err(io("copy the snapshot to", &staging))?;
        std::fs::File::open(&staging)
            .and_then(|f| f.sync_all())
            .map_err(io("fsync", &staging))?;
        std::fs::rename(&staging, &layout.db).map_err(io("rename", &staging))?;
    } else if db_meta.is_none() {
        return Err(RecoveryError::Refused(format!(
            "{why}, and there is no usable database or snapshot to recover from; restore \
             from a backup (raftlite restore, or --auto-restore-from on an empty node)"
        )));
    }
    let from_index = db_index.max(snapshot_index);
    if let Some(m) = move_aside(&layout.raft, "lost")? {
        moved.push(m);
    }
    if let Some(m) = move_aside(&layout.snapshots, "before-recovery")? {
        moved.push(m);
    }
    let reason = format!(
        "recovery-mode: {why}; new single-node cluster from the data at index {from_index}"
    );
    if let Some(parent) = layout.db.parent() {
        sync_dir(parent)?;
    }
    let timeline = Some(seed_single_node(layout, node_id, addr, reason).await?);
    Ok(RecoveryOutcome {
        summary: format!(
            "{why}; the data at index {from_index} now seeds a new single-node cluster on timeline \
             {} (#{}); writes committed after index {from_index} that this node never applied \
             are not in it; other nodes join with empty data dirs",
            timeline.as_ref().map(|t| t.id.as_str()).unwrap_or("?"),
            timeline.as_ref().map(|t| t.counter).unwrap_or(0),
        ),
        timeline,
        moved_aside: moved,
    })
}

/// Makes the database in `layout` (in place, with an applied position) the start of a new
/// single-node cluster of `node_id` at `addr`: membership = that node alone, a new timeline, and
/// a fresh log that begins after the data (purged up to the applied position, with a vote of
/// the applied term), exactly the state a compacted log leaves. So the node elects itself on
/// start, and nodes that join later receive the data as a snapshot; nothing replays onto an
/// empty database. The Raft dir must be absent (moved aside). Returns the new timeline.
///
/// A crash midway leaves a data dir the start-up probe classifies as "log lost": run again.
pub async fn seed_single_node(
    layout: &DataDirLayout,
    node_id: NodeId,
    addr: &NodeAddr,
    reason: String,
) -> Result<TimelineRecord, RecoveryError> {
    if layout.raft.join(crate::log_store::LOG_FILE_NAME).exists() {
        return Err(RecoveryError::Refused(format!(
            "{} still holds a Raft log; move it aside first",
            layout.raft.display()
        )));
    }
    let db = layout.db.clone();
    let applied = raftlite_store::probe(&db)
        .map_err(|e| RecoveryError::Storage(e.to_string()))?
        .and_then(|m| m.applied)
        .ok_or_else(|| {
            RecoveryError::Refused(format!(
                "{} records no applied log position, so it cannot seed a cluster",
                db.display()
            ))
        })?;
    let log_id = crate::state_machine::position_to_log_id(&applied);
    let nodes: BTreeMap<NodeId, NodeAddr> = [(node_id, addr.clone())].into_iter().collect();
    let membership = Membership::new(vec![[node_id].into_iter().collect()], nodes)
        .map_err(|e| RecoveryError::Refused(format!("invalid membership: {e}")))?;
    let stored = StoredMembership::new(Some(log_id), membership);
    let json = serde_json::to_string(&stored).map_err(|e| RecoveryError::Storage(e.to_string()))?;
    let record = new_timeline(reason);
    let meta =
        tokio::task::spawn_blocking(move || raftlite_store::reseed_database(&db, &json, &record))
            .await
            .map_err(|e| RecoveryError::Storage(e.to_string()))?
            .map_err(|e| RecoveryError::Storage(e.to_string()))?;
    let storage = |e: std::io::Error| RecoveryError::Storage(e.to_string());
    // openraft never purges past its newest snapshot, and checks that on start: take one of
    // the seeded database first.
    let (db, snaps) = (layout.db.clone(), layout.snapshots.clone());
    let mut sm = tokio::task::spawn_blocking(move || SqliteStateMachine::open(&db, &snaps))
        .await
        .map_err(|e| RecoveryError::Storage(e.to_string()))?
        .map_err(storage)?;
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .map_err(storage)?;
    drop(sm);
    // The log last: until it exists, the data dir still reads as "log lost".
    let mut log = LogStore::open(&layout.raft).map_err(storage)?;
    log.save_vote(&Vote::new(log_id.leader_id.term, node_id))
        .await
        .map_err(storage)?;
    log.purge(log_id).await.map_err(storage)?;
    log.save_committed(Some(log_id)).await.map_err(storage)?;
    meta.timeline()
        .cloned()
        .ok_or_else(|| RecoveryError::Storage("the seeded database has no timeline".into()))
}

/// The database or the snapshots are damaged but the log is intact: move the damaged part aside
/// if the rest can rebuild it; otherwise put everything back and refuse.
fn rebuild_damaged_data(
    data_dir: &Path,
    layout: &DataDirLayout,
    file: &Path,
    detail: &str,
) -> Result<RecoveryOutcome, RecoveryError> {
    let damaged: Vec<PathBuf> = if file.starts_with(&layout.snapshots) {
        vec![layout.snapshots.clone()]
    } else {
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| {
                let mut name = layout.db.as_os_str().to_os_string();
                name.push(suffix);
                PathBuf::from(name)
            })
            .collect()
    };
    let mut moved = Vec::new();
    for path in &damaged {
        if let Some(m) = move_aside(path, "damaged")? {
            moved.push((path.clone(), m));
        }
    }
    match classify(data_dir) {
        state @ (DataDirState::DbLost { .. } | DataDirState::Consistent { .. }) => {
            Ok(RecoveryOutcome {
                summary: format!(
                    "{} was damaged ({detail}); moved aside: the node rebuilds it from its \
                     snapshot and log ({state}); the lineage is unchanged",
                    file.display()
                ),
                timeline: None,
                moved_aside: moved.into_iter().map(|(_, m)| m).collect(),
            })
        }
        other => {
            for (original, aside) in moved.into_iter().rev() {
                std::fs::rename(&aside, &original).map_err(io("move back", &aside))?;
            }
            Err(RecoveryError::Refused(format!(
                "{} is damaged ({detail}) and the log and snapshots here cannot rebuild it \
                 (without it: {other}); nothing was changed. If other members still run, move \
                 this data dir aside and start the node empty with --join; otherwise restore \
                 from a backup",
                file.display()
            )))
        }
    }
}

/// One member of a recovered cluster: `ID=RAFT_ADDR` or `ID=RAFT_ADDR@API_ADDR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub raft_addr: String,
    pub api_addr: Option<String>,
}

impl std::str::FromStr for Member {
    type Err = String;

    fn from_str(s: &str) -> Result<Member, String> {
        let (id, addrs) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected ID=RAFT_ADDR (e.g. 1=10.0.0.1:4002)"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: the node id `{id}` is not a number"))?;
        let (raft, api) = match addrs.split_once('@') {
            Some((r, a)) => (r.trim(), Some(a.trim().to_string())),
            None => (addrs.trim(), None),
        };
        let host_port = |a: &str| {
            a.rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        };
        if !host_port(raft) {
            return Err(format!("`{s}`: `{raft}` is not HOST:PORT"));
        }
        if let Some(a) = &api {
            if !host_port(a) {
                return Err(format!("`{s}`: the API address `{a}` is not HOST:PORT"));
            }
        }
        Ok(Member {
            id,
            raft_addr: raft.to_string(),
            api_addr: api,
        })
    }
}

/// Checks a member list: at least one, unique ids, unique Raft addresses.
pub fn validate_members(members: &[Member]) -> Result<(), String> {
    if members.is_empty() {
        return Err("give at least one member (the surviving node itself)".into());
    }
    let mut ids = BTreeSet::new();
    let mut addrs = BTreeSet::new();
    for m in members {
        if !ids.insert(m.id) {
            return Err(format!("node id {} is listed twice", m.id));
        }
        if !addrs.insert(m.raft_addr.as_str()) {
            return Err(format!("Raft address {} is listed twice", m.raft_addr));
        }
    }
    Ok(())
}

/// `raftlite recover`: offline lost-quorum recovery of the stopped node owning `data_dir` (see
/// the module doc). Every member needs an API address: given, or known from the old
/// membership.
pub async fn rewrite_membership(
    data_dir: &Path,
    members: &[Member],
) -> Result<RecoveryOutcome, RecoveryError> {
    validate_members(members).map_err(RecoveryError::Refused)?;
    let state = classify(data_dir);
    if !matches!(
        state,
        DataDirState::Consistent { .. } | DataDirState::DbLost { .. }
    ) {
        return Err(RecoveryError::Refused(format!(
            "recover needs a data dir with its Raft log; this one is: {state}"
        )));
    }
    let layout = DataDirLayout::new(data_dir);
    let storage = |e: std::io::Error| RecoveryError::Storage(e.to_string());
    let mut log = LogStore::open(&layout.raft).map_err(storage)?;
    let (db, snaps) = (layout.db.clone(), layout.snapshots.clone());
    let mut sm = tokio::task::spawn_blocking(move || SqliteStateMachine::open(&db, &snaps))
        .await
        .map_err(|e| RecoveryError::Storage(e.to_string()))?
        .map_err(storage)?;

    // Everything this node holds is treated as committed: with the majority gone there is no
    // one left to say otherwise, and dropping it would lose writes clients may have seen.
    let log_state = log.get_log_state().await.map_err(storage)?;
    let (mut applied, old_membership) = sm.applied_state().await.map_err(storage)?;
    let last = log_state.last_log_id;
    let mut reader = log.get_log_reader().await;
    let mut replayed = 0u64;
    while applied.map(|a| a.index) < last.map(|l| l.index) {
        let from = applied.map(|a| a.index + 1).unwrap_or(0);
        let to = last
            .map(|l| l.index + 1)
            .unwrap_or(0)
            .min(from + REPLAY_BATCH);
        let entries = reader
            .try_get_log_entries(from..to)
            .await
            .map_err(storage)?;
        if entries.is_empty() {
            return Err(RecoveryError::Refused(format!(
                "the log has no entries from index {from} though it ends at {}; nothing was \
                 changed",
                last.map(|l| l.index).unwrap_or(0)
            )));
        }
        replayed += entries.len() as u64;
        let entries = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
        sm.apply(entries).await.map_err(storage)?;
        applied = sm.applied_state().await.map_err(storage)?.0;
    }
    let Some(applied) = applied else {
        return Err(RecoveryError::Refused(
            "this node never applied an entry; there is nothing to recover".into(),
        ));
    };

    let old = old_membership.membership();
    let mut nodes = BTreeMap::new();
    for m in members {
        let api_addr = match (&m.api_addr, old.get_node(&m.id)) {
            (Some(a), _) => a.clone(),
            (None, Some(known)) => known.api_addr.clone(),
            (None, None) => {
                return Err(RecoveryError::Refused(format!(
                    "node {} was not a member, so its HTTP address is unknown; give it as \
                     {}={}@HOST:PORT",
                    m.id, m.id, m.raft_addr
                )))
            }
        };
        nodes.insert(
            m.id,
            NodeAddr {
                raft_addr: m.raft_addr.clone(),
                api_addr,
            },
        );
    }
    let voters: BTreeSet<NodeId> = nodes.keys().copied().collect();
    let membership = Membership::new(vec![voters.clone()], nodes)
        .map_err(|e| RecoveryError::Refused(format!("invalid membership: {e}")))?;
    let stored = StoredMembership::new(Some(applied), membership);
    let json = serde_json::to_string(&stored).map_err(|e| RecoveryError::Storage(e.to_string()))?;
    let store = sm.store();
    let position = log_id_to_position(&applied);
    let reason = format!(
        "recover: quorum lost; membership rewritten offline to voters {voters:?} at index {}",
        applied.index
    );
    let meta = tokio::task::spawn_blocking(move || {
        store.apply_membership(position, Some(&json))?;
        store.append_timeline(position, &new_timeline(reason))
    })
    .await
    .map_err(|e| RecoveryError::Storage(e.to_string()))?
    .map_err(|e| RecoveryError::Storage(e.to_string()))?;
    // The log now adds nothing the database lacks; compacting it makes the database (and the
    // rewritten membership in it) the starting point. openraft never purges past its newest
    // snapshot (and checks that on start), so a snapshot of this state comes first.
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .map_err(storage)?;
    log.purge(applied).await.map_err(storage)?;
    log.save_committed(Some(applied)).await.map_err(storage)?;
    let timeline = meta.timeline().cloned();
    Ok(RecoveryOutcome {
        summary: format!(
            "replayed {replayed} log entries; the data at index {} now belongs to a cluster of \
             voters {voters:?} on timeline {} (#{}); start this node normally: it elects itself \
             once a majority of those voters runs; other nodes join with empty data dirs",
            applied.index,
            timeline.as_ref().map(|t| t.id.as_str()).unwrap_or("?"),
            timeline.as_ref().map(|t| t.counter).unwrap_or(0),
        ),
        timeline,
        moved_aside: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_validate() {
        let m: Member = "1=127.0.0.1:4002".parse().unwrap();
        assert_eq!(
            (m.id, m.raft_addr.as_str(), m.api_addr),
            (1, "127.0.0.1:4002", None)
        );
        let m: Member = "2=h:4012@h:4011".parse().unwrap();
        assert_eq!(m.api_addr.as_deref(), Some("h:4011"));
        for bad in ["", "1", "x=h:1", "1=h", "1=:1", "1=h:99999", "1=h:1@nope"] {
            assert!(bad.parse::<Member>().is_err(), "{bad}");
        }
        let a: Member = "1=h:1".parse().unwrap();
        let b: Member = "2=h:1".parse().unwrap();
        let c: Member = "1=h:2".parse().unwrap();
        assert!(validate_members(&[]).is_err());
        assert!(validate_members(&[a.clone(), b])
            .unwrap_err()
            .contains("twice"));
        assert!(validate_members(&[a.clone(), c])
            .unwrap_err()
            .contains("twice"));
        assert!(validate_members(&[a]).is_ok());
    }
}
