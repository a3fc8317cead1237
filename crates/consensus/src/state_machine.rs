//! openraft's state machine, backed by the SQLite [`Store`].
//!
//! Snapshots are SQLite files under `snapshots/`: `<id>.sqlite` holds the data (with its own meta
//! table) and `<id>.meta.json` the openraft snapshot meta, written last as the completion marker.
//! A snapshot without its `.meta.json` is an unfinished one and is ignored and removed.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use raftlite_store::failpoint;
use raftlite_store::{EntryTime, LogPosition, MetaState, Store, StoreError, StoreOptions};

use crate::snapshot_floor::SnapshotFloor;
use crate::types::*;

/// The running Raft: openraft over this state machine.
pub type Raft = openraft::Raft<TypeConfig, SqliteStateMachine>;

const META_SUFFIX: &str = ".meta.json";
const DATA_SUFFIX: &str = ".sqlite";
/// Scratch files (a database being loaded, a backup being prepared for download). Like the
/// `.tmp` files of snapshots being built or received, they are removed when their work ends, and
/// leftovers of a crash at start-up; [`SnapshotDir::prune`] never touches either.
const SCRATCH_SUFFIX: &str = ".partial";
/// The name prefix of a snapshot being received (see [`SnapshotDir::receiving_path`]).
const RECEIVING_PURPOSE: &str = "receiving";

pub fn log_id_to_position(log_id: &LogId) -> LogPosition {
    LogPosition {
        term: log_id.leader_id.term,
        leader_node: log_id.leader_id.node_id,
        index: log_id.index,
    }
}

pub fn position_to_log_id(p: &LogPosition) -> LogId {
    LogId::new(
        CommittedLeaderId {
            term: p.term,
            node_id: p.leader_node,
        },
        p.index,
    )
}

/// Whether a failed operation was reading or writing: part of the message openraft logs.
#[derive(Clone, Copy, Debug)]
enum Verb {
    Read,
    Write,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Read => "reading",
            Verb::Write => "writing",
        }
    }
}

/// openraft's storage traits speak `io::Error`; the message says what failed and why.
fn sm_err(verb: Verb, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("state machine: {} failed: {e}", verb.as_str()))
}

fn snap_err(verb: Verb, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("snapshot: {} failed: {e}", verb.as_str()))
}

/// Runs blocking SQLite work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, io::Error> + Send + 'static,
) -> Result<T, io::Error> {
    match crate::blocking::run_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(sm_err(
            Verb::Write,
            format!("state machine task failed: {e}"),
        )),
    }
}

/// The field of a snapshot's `.meta.json` (beside openraft's meta) that marks a snapshot received
/// from the leader.
const RECEIVED_KEY: &str = "received_from_leader";

/// A complete snapshot in the snapshots directory.
#[derive(Clone, Debug)]
pub struct StoredSnapshot {
    /// The name of its files (`<id>.sqlite`, `<id>.meta.json`): `<term>-<index>-<random>`.
    pub id: String,
    pub meta: SnapshotMeta,
    pub data: PathBuf,
    /// Received from the leader, rather than built here. Such a snapshot may reach past the
    /// end of this node's log: it is made durable before openraft's purge of the log behind it
    /// (see [`crate::snapshot_floor`]), and openraft finishes that purge when it starts. One built
    /// here never does, since this node applied everything it holds from its own log.
    pub received: bool,
}

/// The snapshots directory: finding, writing and pruning snapshot files.
#[derive(Clone, Debug)]
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    pub fn open(dir: &Path) -> Result<SnapshotDir, io::Error> {
        std::fs::create_dir_all(dir).map_err(|e| snap_err(Verb::Write, e))?;
        Ok(SnapshotDir {
            dir: dir.to_path_buf(),
        })
    }

    /// A handle for reading only: nothing is created.
    pub fn read_only(dir: &Path) -> SnapshotDir {
        SnapshotDir {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn data_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{DATA_SUFFIX}"))
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{META_SUFFIX}"))
    }

    pub fn temp_path(&self, purpose: &str) -> PathBuf {
        self.dir
            .join(format!("{purpose}-{:016x}.tmp", rand::random::<u64>()))
    }

    /// A fresh path in this directory for a snapshot being received from the leader. A
    /// [`SnapshotFile`] at such a path is renamed into place when installed; any other is copied.
    pub fn receiving_path(&self) -> PathBuf {
        self.temp_path(RECEIVING_PURPOSE)
    }

    /// A fresh path for a scratch file (`<purpose>-<random>.partial`) that snapshot pruning
    /// leaves alone; the caller removes it when done.
    pub fn scratch_path(&self, purpose: &str) -> PathBuf {
        self.dir.join(format!(
            "{purpose}-{:032x}{SCRATCH_SUFFIX}",
            rand::random::<u128>()
        ))
    }

    /// Removes scratch files left by a crash. Call only before anything can be using them
    /// (at start-up).
    pub fn remove_scratch(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Only at start-up: while the node runs, these files belong to work in progress
            // (a snapshot being built or received, a backup or load).
            if name.ends_with(SCRATCH_SUFFIX) || name.ends_with(".tmp") {
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::warn!(file = %entry.path().display(), error = %e, "could not remove a leftover scratch file");
                }
            }
        }
    }

    /// The name for a new snapshot's files. openraft 0.10 identifies a snapshot by the log id
    /// it covers alone; two snapshots at the same position may still differ in bytes (built here
    /// and received), so the random part keeps their files apart.
    fn new_id(meta: &SnapshotMeta) -> String {
        format!(
            "{}-{}-{:08x}",
            meta.last_log_id.map(|l| l.leader_id.term).unwrap_or(0),
            meta.last_log_id.map(|l| l.index).unwrap_or(0),
            rand::random::<u32>()
        )
    }

    /// The newest complete snapshot, with where it came from.
    pub fn newest(&self) -> Result<Option<StoredSnapshot>, io::Error> {
        let mut best: Option<StoredSnapshot> = None;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(snap_err(Verb::Read, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| snap_err(Verb::Read, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(META_SUFFIX) else {
                continue;
            };
            let bytes = std::fs::read(entry.path()).map_err(|e| snap_err(Verb::Read, e))?;
            let damaged = |e: serde_json::Error| {
                snap_err(
                    Verb::Read,
                    format!("{} is damaged: {e}", entry.path().display()),
                )
            };
            let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(damaged)?;
            let received = json.get(RECEIVED_KEY) == Some(&serde_json::Value::Bool(true));
            let meta: SnapshotMeta = serde_json::from_value(json).map_err(damaged)?;
            let data = self.data_path(id);
            if !data.exists() {
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|b| meta.last_log_id > b.meta.last_log_id)
            {
                best = Some(StoredSnapshot {
                    id: id.to_string(),
                    meta,
                    data,
                    received,
                });
            }
        }
        Ok(best)
    }

    /// Makes `data` (a complete, fsync'd SQLite file in this directory) the snapshot `meta`
    /// describes: rename, then write the meta file last. A snapshot `received` from the leader
    /// says so in its meta file (see [`StoredSnapshot::received`]).
    fn commit(
        &self,
        data: &Path,
        meta: &SnapshotMeta,
        received: bool,
    ) -> Result<StoredSnapshot, io::Error> {
        let id = SnapshotDir::new_id(meta);
        let final_data = self.data_path(&id);
        std::fs::rename(data, &final_data).map_err(|e| snap_err(Verb::Write, e))?;
        let werr = |e: serde_json::Error| snap_err(Verb::Write, e);
        let mut json = serde_json::to_value(meta).map_err(werr)?;
        if received {
            failpoint::hit("snapshot-data-committed");
            if let serde_json::Value::Object(fields) = &mut json {
                fields.insert(RECEIVED_KEY.to_string(), serde_json::Value::Bool(true));
            }
        }
        let json = serde_json::to_vec(&json).map_err(werr)?;
        let tmp = self.temp_path("meta");
        write_synced(&tmp, &json).map_err(|e| snap_err(Verb::Write, e))?;
        std::fs::rename(&tmp, self.meta_path(&id)).map_err(|e| snap_err(Verb::Write, e))?;
        sync_dir(&self.dir).map_err(|e| snap_err(Verb::Write, e))?;
        Ok(StoredSnapshot {
            id,
            meta: meta.clone(),
            data: final_data,
            received,
        })
    }

    /// Removes every snapshot but `keep_id`. Temporary files are left to
    /// [`SnapshotDir::remove_scratch`] at start-up: now they may belong to work in progress.
    pub fn prune(&self, keep_id: Option<&str>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name
                .strip_suffix(META_SUFFIX)
                .or_else(|| name.strip_suffix(DATA_SUFFIX));
            let stale = id.is_some_and(|id| Some(id) != keep_id);
            if stale {
                // A meta whose data file is gone is skipped by `current`, so the order of the
                // two removals does not matter after a crash.
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::warn!(file = %entry.path().display(), error = %e, "could not remove old snapshot file");
                }
            }
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn membership_of(meta: &MetaState) -> Result<StoredMembership, io::Error> {
    match &meta.membership_json {
        None => Ok(StoredMembership::default()),
        Some(json) => serde_json::from_str(json).map_err(|e| sm_err(Verb::Read, e)),
    }
}

fn store_err(verb: Verb) -> impl Fn(StoreError) -> io::Error {
    move |e| sm_err(verb, e)
}

/// Applies a [`Command::Load`]: the bytes go to a scratch file (fsync'd), which
/// `Store::load_from` copies, stamps with this entry's position, the current membership and the
/// new timeline, and swaps in. The scratch file is removed whatever happens.
fn apply_load(
    store: &Store,
    snapshots: &SnapshotDir,
    position: LogPosition,
    database: &[u8],
    timeline: &raftlite_store::TimelineRecord,
) -> Result<(), io::Error> {
    let already = store.meta().map_err(store_err(Verb::Read))?.applied;
    if already.is_some_and(|a| a.index >= position.index) {
        return Ok(()); // a replay of an entry the database already reflects
    }
    let scratch = snapshots.scratch_path("load");
    let result = write_synced(&scratch, database)
        .map_err(|e| {
            sm_err(
                Verb::Write,
                format!(
                    "cannot write the loaded database to {}: {e}",
                    scratch.display()
                ),
            )
        })
        .and_then(|_| {
            store
                .load_from(&scratch, position, None, timeline)
                .map_err(store_err(Verb::Write))
        });
    if let Err(e) = std::fs::remove_file(&scratch) {
        if e.kind() != ErrorKind::NotFound {
            tracing::warn!(file = %scratch.display(), error = %e, "could not remove a scratch file");
        }
    }
    let meta = result?;
    tracing::info!(
        index = position.index,
        timeline = meta.timeline().map(|t| t.id.as_str()).unwrap_or(""),
        "loaded a new database"
    );
    Ok(())
}

/// The Raft state machine: applies entries to SQLite and builds and installs snapshots.
pub struct SqliteStateMachine {
    store: Arc<Store>,
    snapshots: SnapshotDir,
    /// The index of the last restore commit or abort applied: its chunks are dead weight in the
    /// log from then on, so the node compacts its log (see [`Self::settled_restores`]).
    restores_settled: Arc<tokio::sync::watch::Sender<u64>>,
    /// Raised whenever a snapshot becomes durable here; the log store purges no further.
    floor: SnapshotFloor,
}

impl SqliteStateMachine {
    /// Opens the database and the snapshot directory. A database behind the newest snapshot (lost
    /// or rolled back) is first rebuilt from that snapshot; the log then replays the rest.
    pub fn open(db_path: &Path, snapshot_dir: &Path) -> Result<SqliteStateMachine, io::Error> {
        let store = Store::open(db_path, StoreOptions::default()).map_err(store_err(Verb::Read))?;
        let snapshots = SnapshotDir::open(snapshot_dir)?;
        let current = snapshots.newest()?;
        snapshots.prune(current.as_ref().map(|c| c.id.as_str()));
        snapshots.remove_scratch();
        if let Some(StoredSnapshot { meta, data, .. }) = &current {
            let applied = store.meta().map_err(store_err(Verb::Read))?.applied;
            let snapshot_at = meta.last_log_id.as_ref().map(log_id_to_position);
            if applied.map(|a| a.index) < snapshot_at.map(|s| s.index) {
                tracing::warn!(
                    database_index = applied.map(|a| a.index),
                    snapshot_index = snapshot_at.map(|s| s.index),
                    "database is behind the newest snapshot; rebuilding it from the snapshot"
                );
                store.install_from(data).map_err(store_err(Verb::Write))?;
            }
        }
        let floor = SnapshotFloor::new(
            current
                .as_ref()
                .and_then(|c| c.meta.last_log_id.map(|l| l.index)),
        );
        Ok(SqliteStateMachine {
            store: Arc::new(store),
            snapshots,
            restores_settled: Arc::new(tokio::sync::watch::channel(0).0),
            floor,
        })
    }

    /// The index of the newest snapshot durable on this node, for the log store to purge no
    /// further than (see [`crate::log_store::LogStore::with_snapshot_floor`]).
    pub fn snapshot_floor(&self) -> SnapshotFloor {
        self.floor.clone()
    }

    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Changes to the log index of each restore commit or abort this state machine applies.
    pub fn settled_restores(&self) -> tokio::sync::watch::Receiver<u64> {
        self.restores_settled.subscribe()
    }
}

/// Builds snapshots on its own read connection while the state machine keeps applying.
pub struct SnapshotBuilder {
    store: Arc<Store>,
    snapshots: SnapshotDir,
    floor: SnapshotFloor,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let store = self.store.clone();
        let snapshots = self.snapshots.clone();
        let stored = blocking(move || {
            let tmp = snapshots.temp_path("building");
            let state = store
                .snapshot_to(&tmp)
                .map_err(|e| snap_err(Verb::Write, e))?;
            let meta = SnapshotMeta {
                last_log_id: state.applied.as_ref().map(position_to_log_id),
                last_membership: membership_of(&state)?,
            };
            let stored = snapshots.commit(&tmp, &meta, false)?;
            snapshots.prune(Some(&stored.id));
            Ok(stored)
        })
        .await?;
        if let Some(index) = stored.meta.last_log_id.map(|l| l.index) {
            self.floor.raise(index);
        }
        tracing::info!(snapshot = %stored.id, "built snapshot");
        let file = SnapshotFile::open(&stored.data).map_err(|e| snap_err(Verb::Read, e))?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: file,
        })
    }
}

impl SqliteStateMachine {
    /// The file holding the snapshot to install: the received file itself when the network
    /// received it into this directory (see [`SnapshotDir::receiving_path`]), else a copy
    /// streamed from the handle, never trusted by path.
    async fn take_received(&mut self, snapshot: SnapshotFile) -> Result<PathBuf, io::Error> {
        let werr = |e: std::io::Error| snap_err(Verb::Write, e);
        let ours = snapshot.path.parent() == Some(self.snapshots.path())
            && snapshot
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(RECEIVING_PURPOSE) && n.ends_with(".tmp"));
        let mut handle = tokio::fs::File::from_std(snapshot.file);
        handle.sync_all().await.map_err(werr)?;
        if ours {
            return Ok(snapshot.path);
        }
        use tokio::io::AsyncSeekExt;
        let path = self.snapshots.receiving_path();
        let mut copy = tokio::fs::File::create(&path).await.map_err(werr)?;
        handle
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(werr)?;
        tokio::io::copy(&mut handle, &mut copy)
            .await
            .map_err(werr)?;
        copy.sync_all().await.map_err(werr)?;
        Ok(path)
    }
}

impl RaftStateMachine<TypeConfig> for SqliteStateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let store = self.store.clone();
        blocking(move || {
            let meta = store.meta().map_err(store_err(Verb::Read))?;
            Ok((
                meta.applied.as_ref().map(position_to_log_id),
                membership_of(&meta)?,
            ))
        })
        .await
    }

    async fn apply<S>(&mut self, entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        // One blocking call applies the whole batch (one SQLite transaction per entry, one
        // thread hop per batch); the responders are answered once it is done.
        let (entries, responders): (Vec<Entry>, Vec<_>) =
            entries.try_collect::<Vec<_>>().await?.into_iter().unzip();
        let store = self.store.clone();
        let snapshots = self.snapshots.clone();
        let restores_settled = self.restores_settled.clone();
        let responses = blocking(move || {
            let mut responses = Vec::with_capacity(entries.len());
            for entry in entries {
                let position = log_id_to_position(&entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => {
                        store
                            .apply_membership(position, None)
                            .map_err(store_err(Verb::Write))?;
                        CommandResponse::None
                    }
                    EntryPayload::Membership(m) => {
                        let stored = StoredMembership::new(Some(entry.log_id), m);
                        let json = serde_json::to_string(&stored)
                            .map_err(|e| sm_err(Verb::Write, e))?;
                        store
                            .apply_membership(position, Some(&json))
                            .map_err(store_err(Verb::Write))?;
                        CommandResponse::None
                    }
                    EntryPayload::Normal(Command::Write {
                        requests,
                        at_unix_ms,
                        seed,
                    }) => {
                        let time = EntryTime { at_unix_ms, seed };
                        let results = store
                            .apply_write(position, time, &requests)
                            .map_err(store_err(Verb::Write))?;
                        CommandResponse::Write(results)
                    }
                    EntryPayload::Normal(Command::InitTimeline(record)) => {
                        store
                            .apply_init_timeline(position, &record)
                            .map_err(store_err(Verb::Write))?;
                        CommandResponse::None
                    }
                    EntryPayload::Normal(Command::Load { database, timeline }) => {
                        apply_load(&store, &snapshots, position, &database, &timeline)?;
                        CommandResponse::None
                    }
                    EntryPayload::Normal(Command::RestoreChunk {
                        restore_id,
                        offset,
                        data,
                    }) => {
                        store
                            .apply_restore_chunk(position, &restore_id, offset, &data)
                            .map_err(store_err(Verb::Write))?;
                        CommandResponse::None
                    }
                    EntryPayload::Normal(Command::RestoreCommit {
                        restore_id,
                        size,
                        sha256,
                        timeline,
                    }) => {
                        let outcome = store
                            .restore_from_chunks(position, &restore_id, size, &sha256, &timeline)
                            .map_err(store_err(Verb::Write))?;
                        restores_settled.send_replace(position.index);
                        match outcome {
                            Ok(meta) => {
                                let now = meta.timeline().cloned();
                                tracing::info!(
                                    index = position.index,
                                    restore = %restore_id,
                                    timeline = now.as_ref().map(|t| t.id.as_str()).unwrap_or(""),
                                    "restored the database on a new timeline"
                                );
                                CommandResponse::Restore(now.ok_or_else(|| {
                                    "the restored database has no timeline".to_string()
                                }))
                            }
                            Err(reason) => {
                                tracing::warn!(restore = %restore_id, %reason, "restore refused; the data is unchanged");
                                CommandResponse::Restore(Err(reason))
                            }
                        }
                    }
                    EntryPayload::Normal(Command::RestoreAbort { restore_id }) => {
                        store
                            .apply_restore_abort(position, &restore_id)
                            .map_err(store_err(Verb::Write))?;
                        restores_settled.send_replace(position.index);
                        CommandResponse::None
                    }
                };
                responses.push(response);
            }
            Ok(responses)
        })
        .await?;
        for (responder, response) in responders.into_iter().zip(responses) {
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            snapshots: self.snapshots.clone(),
            floor: self.floor.clone(),
        }
    }

    /// openraft purges the log up to the snapshot while this runs (see
    /// [`crate::snapshot_floor`]): the purge waits until the snapshot is committed here, so
    /// from any crash the node restarts on a log that its snapshot (and so its database)
    /// reaches.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let received = match self.take_received(snapshot).await {
            Ok(path) => path,
            Err(e) => {
                self.floor.fail(e.to_string());
                return Err(e);
            }
        };
        failpoint::hit("snapshot-received");
        let store = self.store.clone();
        let snapshots = self.snapshots.clone();
        let floor = self.floor.clone();
        let meta = meta.clone();
        blocking(move || {
            let stored = match snapshots.commit(&received, &meta, true) {
                Ok(stored) => stored,
                Err(e) => {
                    floor.fail(e.to_string());
                    return Err(e);
                }
            };
            if let Some(index) = meta.last_log_id.map(|l| l.index) {
                floor.raise(index);
            }
            failpoint::hit("snapshot-meta-committed");
            let installed = store
                .install_from(&stored.data)
                .map_err(|e| snap_err(Verb::Write, e))?;
            let expected = meta.last_log_id.as_ref().map(log_id_to_position);
            if installed.applied != expected {
                return Err(snap_err(
                    Verb::Write,
                    format!(
                        "snapshot {} says it is at {:?} but its database is at {:?}",
                        stored.id, expected, installed.applied
                    ),
                ));
            }
            failpoint::hit("snapshot-installed");
            snapshots.prune(Some(&stored.id));
            tracing::info!(snapshot = %stored.id, "installed snapshot from the leader");
            Ok(())
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let Some(stored) = self.snapshots.newest()? else {
            return Ok(None);
        };
        let file = SnapshotFile::open(&stored.data).map_err(|e| snap_err(Verb::Read, e))?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: file,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use raftlite_store::{Statement, StatementResult, TimelineRecord, Value, WriteRequest};

    use super::*;

    async fn apply(sm: &mut SqliteStateMachine, entries: Vec<Entry>) -> io::Result<()> {
        sm.apply(futures::stream::iter(
            entries.into_iter().map(|e| Ok((e, None))),
        ))
        .await
    }

    fn entry(index: u64, payload: EntryPayload) -> Entry {
        Entry {
            log_id: LogId::new(
                CommittedLeaderId {
                    term: 1,
                    node_id: 1,
                },
                index,
            ),
            payload,
        }
    }

    fn write(index: u64, sql: &[&str]) -> Entry {
        entry(
            index,
            EntryPayload::Normal(Command::Write {
                requests: vec![WriteRequest {
                    statements: sql.iter().map(|s| Statement::new(*s)).collect(),
                    transaction: false,
                }],
                at_unix_ms: 1_700_000_000_000,
                seed: 1,
            }),
        )
    }

    fn record(id: &str, reason: &str) -> TimelineRecord {
        TimelineRecord {
            id: id.into(),
            counter: 1,
            parent: None,
            parent_index: None,
            reason: reason.into(),
            at_unix_ms: 5,
        }
    }

    fn count(store: &Store, table: &str) -> i64 {
        let q = store
            .query(&[Statement::new(format!("SELECT count(*) FROM {table}"))])
            .expect("query");
        match &q[0] {
            StatementResult::Rows(r) => match r.values.first().and_then(|row| row.first()) {
                Some(Value::Integer(n)) => *n,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn load_entry_replaces_the_database_keeps_membership_and_replays_as_a_no_op() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = dir.path().join("snapshots");
        let mut sm = SqliteStateMachine::open(&dir.path().join("db.sqlite"), &snapshots)
            .expect("open state machine");

        // The file to load: a database made elsewhere (with a meta table of its own).
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("source.sqlite");
        {
            let other = Store::open(&elsewhere.path().join("db.sqlite"), StoreOptions::default())
                .expect("open other store");
            other
                .apply_write(
                    LogPosition {
                        term: 9,
                        leader_node: 9,
                        index: 99,
                    },
                    EntryTime {
                        at_unix_ms: 1,
                        seed: 1,
                    },
                    &[WriteRequest {
                        statements: vec![
                            Statement::new("CREATE TABLE loaded(v)"),
                            Statement::new("INSERT INTO loaded VALUES (1), (2), (3)"),
                        ],
                        transaction: false,
                    }],
                )
                .expect("fill source");
            other.snapshot_to(&source).expect("export source");
        }
        let bytes = std::fs::read(&source).expect("read source");

        let nodes: BTreeMap<NodeId, NodeAddr> = [(1, NodeAddr::default())].into();
        let membership = Membership::new(vec![BTreeSet::from([1])], nodes).expect("membership");
        let load = entry(
            4,
            EntryPayload::Normal(Command::Load {
                database: bytes.clone(),
                timeline: record("second", "load"),
            }),
        );
        apply(
            &mut sm,
            vec![
                entry(
                    1,
                    EntryPayload::Normal(Command::InitTimeline(record("first", "bootstrap"))),
                ),
                entry(2, EntryPayload::Membership(membership.clone())),
                write(3, &["CREATE TABLE old(v)", "INSERT INTO old VALUES (1)"]),
                load.clone(),
            ],
        )
        .await
        .expect("apply");

        let store = sm.store();
        assert_eq!(count(&store, "loaded"), 3);
        let meta = store.meta().expect("meta");
        assert_eq!(meta.applied.map(|a| a.index), Some(4));
        let history = &meta.timeline_history;
        assert_eq!(history.len(), 2, "{history:?}");
        assert_eq!(history[1].id, "second");
        assert_eq!(history[1].parent.as_deref(), Some("first"));
        assert_eq!(history[1].parent_index, Some(3));
        assert_eq!(history[1].counter, 2);
        let (applied, stored) = sm.applied_state().await.expect("applied state");
        assert_eq!(applied.map(|l| l.index), Some(4));
        assert_eq!(
            stored.membership(),
            &membership,
            "membership is the cluster's, kept"
        );

        // Later writes apply on the loaded data; replaying the load entry changes nothing.
        apply(&mut sm, vec![write(5, &["INSERT INTO loaded VALUES (4)"])])
            .await
            .expect("apply write");
        apply(&mut sm, vec![load]).await.expect("replay load");
        assert_eq!(count(&store, "loaded"), 4);
        assert_eq!(store.meta().expect("meta").timeline_history.len(), 2);

        assert_eq!(
            std::fs::read(&source).expect("source"),
            bytes,
            "source untouched"
        );
        let leftovers: Vec<String> = std::fs::read_dir(&snapshots)
            .expect("snapshots dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(leftovers.is_empty(), "scratch files removed: {leftovers:?}");
    }

    /// openraft issues "purge the log up to the snapshot" as soon as it hands a received
    /// snapshot to the state machine. The purge must not reach the disk before that snapshot
    /// does: a crash in between would leave a log that starts past everything this node holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_is_purged_behind_a_received_snapshot_only_once_it_is_durable() {
        use openraft::storage::{RaftLogStorage, RaftLogStorageExt};

        // The leader's side: a snapshot at index 3.
        let leader_dir = tempfile::tempdir().expect("tempdir");
        let mut leader = SqliteStateMachine::open(
            &leader_dir.path().join("db.sqlite"),
            &leader_dir.path().join("snapshots"),
        )
        .expect("open leader");
        apply(
            &mut leader,
            vec![
                write(1, &["CREATE TABLE t(v)"]),
                write(2, &["INSERT INTO t VALUES (1)"]),
                write(3, &["INSERT INTO t VALUES (2)"]),
            ],
        )
        .await
        .expect("apply");
        let sent = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");

        // The follower: a log up to 3, nothing applied, no snapshot.
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = dir.path().join("snapshots");
        let mut sm = SqliteStateMachine::open(&dir.path().join("db.sqlite"), &snapshots)
            .expect("open follower");
        let floor = sm.snapshot_floor();
        let mut log = crate::log_store::LogStore::open(&dir.path().join("raft"))
            .expect("open log")
            .with_snapshot_floor(floor.clone());
        log.blocking_append(vec![
            write(1, &["CREATE TABLE t(v)"]),
            write(2, &["INSERT INTO t VALUES (1)"]),
            write(3, &["INSERT INTO t VALUES (2)"]),
        ])
        .await
        .expect("append");

        // As the network does: the file arrives under a receiving path in the snapshots dir.
        let receiving = SnapshotDir::read_only(&snapshots).receiving_path();
        std::fs::copy(&sent.snapshot.path, &receiving).expect("receive");
        let received = SnapshotFile::open(&receiving).expect("open received");

        // As openraft does: the purge is issued before the state machine installs.
        let purge_upto = sent.meta.last_log_id.expect("snapshot log id");
        let purge = tokio::spawn({
            let mut log = log.clone();
            async move { log.purge(purge_upto).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!purge.is_finished(), "the purge waits for the snapshot");
        assert_eq!(
            log.get_log_state().await.expect("state").last_purged_log_id,
            None,
            "nothing is purged before the snapshot is durable"
        );

        sm.install_snapshot(&sent.meta, received)
            .await
            .expect("install");
        purge.await.expect("join").expect("purge");
        assert_eq!(floor.durable(), Some(3));
        let on_disk = SnapshotDir::read_only(&snapshots)
            .newest()
            .expect("read snapshots")
            .map(|s| (s.meta.last_log_id, s.received));
        assert_eq!(
            on_disk,
            Some((Some(purge_upto), true)),
            "the snapshot is on disk, marked as received"
        );
        assert_eq!(
            log.get_log_state().await.expect("state").last_purged_log_id,
            Some(purge_upto)
        );
        assert_eq!(count(&sm.store(), "t"), 2);
    }

    #[test]
    fn scratch_files_survive_pruning_and_are_removed_at_start_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = SnapshotDir::open(&dir.path().join("snapshots")).expect("dir");
        let scratch = snapshots.scratch_path("backup");
        std::fs::write(&scratch, b"x").expect("write");
        snapshots.prune(None);
        assert!(
            scratch.exists(),
            "pruning snapshots leaves scratch files alone"
        );
        drop(
            SqliteStateMachine::open(&dir.path().join("db.sqlite"), snapshots.path())
                .expect("open"),
        );
        assert!(!scratch.exists(), "start-up removes leftover scratch files");
    }
}
