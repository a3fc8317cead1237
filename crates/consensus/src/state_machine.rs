//! openraft's state machine, backed by the SQLite [`Store`].
//!
//! Snapshots are SQLite files under `snapshots/`: `<id>.sqlite` holds the data (with its own meta
//! table) and `<id>.meta.json` the openraft snapshot meta, written last as the completion marker.
//! A snapshot without its `.meta.json` is an unfinished one and is ignored and removed.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, StorageIOError};
use raftlite_store::{EntryTime, LogPosition, MetaState, Store, StoreError, StoreOptions};

use crate::types::*;

const META_SUFFIX: &str = ".meta.json";
const DATA_SUFFIX: &str = ".sqlite";

pub fn log_id_to_position(log_id: &LogId) -> LogPosition {
    LogPosition {
        term: log_id.leader_id.term,
        leader_node: log_id.leader_id.node_id,
        index: log_id.index,
    }
}

pub fn position_to_log_id(p: &LogPosition) -> LogId {
    LogId::new(
        openraft::CommittedLeaderId::new(p.term, p.leader_node),
        p.index,
    )
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        openraft::AnyError::new(&e),
    )
    .into()
}

fn snap_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        openraft::AnyError::new(&e),
    )
    .into()
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

fn msg(s: impl Into<String>) -> Message {
    Message(s.into())
}

/// Runs blocking SQLite work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    match crate::blocking::run_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(sm_err(
            ErrorVerb::Write,
            msg(format!("state machine task failed: {e}")),
        )),
    }
}

/// The snapshots directory: finding, writing and pruning snapshot files.
#[derive(Clone, Debug)]
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    pub fn open(dir: &Path) -> Result<SnapshotDir, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| snap_err(ErrorVerb::Write, e))?;
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

    /// The newest complete snapshot: its meta and data file.
    pub fn current(&self) -> Result<Option<(SnapshotMeta, PathBuf)>, StorageError> {
        let mut best: Option<(SnapshotMeta, PathBuf)> = None;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(snap_err(ErrorVerb::Read, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| snap_err(ErrorVerb::Read, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(META_SUFFIX) else {
                continue;
            };
            let bytes = std::fs::read(entry.path()).map_err(|e| snap_err(ErrorVerb::Read, e))?;
            let meta: SnapshotMeta = serde_json::from_slice(&bytes).map_err(|e| {
                snap_err(
                    ErrorVerb::Read,
                    msg(format!("{} is damaged: {e}", entry.path().display())),
                )
            })?;
            let data = self.data_path(id);
            if !data.exists() {
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|(b, _)| meta.last_log_id > b.last_log_id)
            {
                best = Some((meta, data));
            }
        }
        Ok(best)
    }

    /// Makes `data` (a complete, fsync'd SQLite file in this directory) the snapshot `meta`
    /// describes: rename, then write the meta file last.
    fn commit(&self, data: &Path, meta: &SnapshotMeta) -> Result<PathBuf, StorageError> {
        let final_data = self.data_path(&meta.snapshot_id);
        std::fs::rename(data, &final_data).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let json = serde_json::to_vec(meta).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let tmp = self.temp_path("meta");
        write_synced(&tmp, &json).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        std::fs::rename(&tmp, self.meta_path(&meta.snapshot_id))
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        sync_dir(&self.dir).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        Ok(final_data)
    }

    /// Removes every snapshot but `keep_id`, and leftovers of interrupted work.
    pub fn prune(&self, keep_id: Option<&str>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name
                .strip_suffix(META_SUFFIX)
                .or_else(|| name.strip_suffix(DATA_SUFFIX));
            let stale = match id {
                Some(id) => Some(id) != keep_id,
                None => name.ends_with(".tmp"),
            };
            if stale {
                // Meta before data, so a crash never leaves a meta pointing at nothing.
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

fn membership_of(meta: &MetaState) -> Result<StoredMembership, StorageError> {
    match &meta.membership_json {
        None => Ok(StoredMembership::default()),
        Some(json) => serde_json::from_str(json).map_err(|e| sm_err(ErrorVerb::Read, e)),
    }
}

fn store_err(verb: ErrorVerb) -> impl Fn(StoreError) -> StorageError {
    move |e| sm_err(verb, e)
}

/// The Raft state machine: applies entries to SQLite and builds and installs snapshots.
pub struct SqliteStateMachine {
    store: Arc<Store>,
    snapshots: SnapshotDir,
    /// The file a snapshot from the leader is being received into.
    receiving: Option<PathBuf>,
}

impl SqliteStateMachine {
    /// Opens the database and the snapshot directory. A database behind the newest snapshot (lost
    /// or rolled back) is first rebuilt from that snapshot; the log then replays the rest.
    pub fn open(db_path: &Path, snapshot_dir: &Path) -> Result<SqliteStateMachine, StorageError> {
        let store =
            Store::open(db_path, StoreOptions::default()).map_err(store_err(ErrorVerb::Read))?;
        let snapshots = SnapshotDir::open(snapshot_dir)?;
        let current = snapshots.current()?;
        snapshots.prune(current.as_ref().map(|(m, _)| m.snapshot_id.as_str()));
        if let Some((meta, data)) = &current {
            let applied = store.meta().map_err(store_err(ErrorVerb::Read))?.applied;
            let snapshot_at = meta.last_log_id.as_ref().map(log_id_to_position);
            if applied.map(|a| a.index) < snapshot_at.map(|s| s.index) {
                tracing::warn!(
                    database_index = applied.map(|a| a.index),
                    snapshot_index = snapshot_at.map(|s| s.index),
                    "database is behind the newest snapshot; rebuilding it from the snapshot"
                );
                store
                    .install_from(data)
                    .map_err(store_err(ErrorVerb::Write))?;
            }
        }
        Ok(SqliteStateMachine {
            store: Arc::new(store),
            snapshots,
            receiving: None,
        })
    }

    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }
}

/// Builds snapshots on its own read connection while the state machine keeps applying.
pub struct SnapshotBuilder {
    store: Arc<Store>,
    snapshots: SnapshotDir,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let store = self.store.clone();
        let snapshots = self.snapshots.clone();
        let (meta, path) = blocking(move || {
            let tmp = snapshots.temp_path("building");
            let state = store
                .snapshot_to(&tmp)
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
            let last_log_id = state.applied.as_ref().map(position_to_log_id);
            let meta = SnapshotMeta {
                last_log_id,
                last_membership: membership_of(&state)?,
                snapshot_id: format!(
                    "{}-{}-{:x}",
                    last_log_id.map(|l| l.leader_id.term).unwrap_or(0),
                    last_log_id.map(|l| l.index).unwrap_or(0),
                    rand::random::<u32>()
                ),
            };
            let path = snapshots.commit(&tmp, &meta)?;
            snapshots.prune(Some(&meta.snapshot_id));
            Ok((meta, path))
        })
        .await?;
        tracing::info!(snapshot = %meta.snapshot_id, "built snapshot");
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl SqliteStateMachine {
    /// The file holding the snapshot to install. Normally that is the file openraft received the
    /// chunks into; a handle to any other file (openraft may hand over another snapshot's handle)
    /// is streamed into a new file, never trusted by path.
    async fn take_received(
        &mut self,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<PathBuf, StorageError> {
        use std::os::unix::fs::MetadataExt;
        use tokio::io::AsyncSeekExt;
        let werr = |e: std::io::Error| snap_err(ErrorVerb::Write, e);
        snapshot.sync_all().await.map_err(werr)?;
        let handle_meta = snapshot.metadata().await.map_err(werr)?;
        if let Some(path) = self.receiving.take() {
            if let Ok(path_meta) = tokio::fs::metadata(&path).await {
                if path_meta.dev() == handle_meta.dev() && path_meta.ino() == handle_meta.ino() {
                    return Ok(path);
                }
            }
            let _ = tokio::fs::remove_file(&path).await;
        }
        let path = self.snapshots.temp_path("receiving");
        let mut copy = tokio::fs::File::create(&path).await.map_err(werr)?;
        snapshot
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(werr)?;
        tokio::io::copy(&mut snapshot, &mut copy)
            .await
            .map_err(werr)?;
        copy.sync_all().await.map_err(werr)?;
        Ok(path)
    }
}

impl RaftStateMachine<TypeConfig> for SqliteStateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let store = self.store.clone();
        blocking(move || {
            let meta = store.meta().map_err(store_err(ErrorVerb::Read))?;
            Ok((
                meta.applied.as_ref().map(position_to_log_id),
                membership_of(&meta)?,
            ))
        })
        .await
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let store = self.store.clone();
        blocking(move || {
            let mut responses = Vec::with_capacity(entries.len());
            for entry in entries {
                let position = log_id_to_position(&entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => {
                        store
                            .apply_membership(position, None)
                            .map_err(store_err(ErrorVerb::Write))?;
                        CommandResponse::None
                    }
                    EntryPayload::Membership(m) => {
                        let stored = StoredMembership::new(Some(entry.log_id), m);
                        let json = serde_json::to_string(&stored)
                            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                        store
                            .apply_membership(position, Some(&json))
                            .map_err(store_err(ErrorVerb::Write))?;
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
                            .map_err(store_err(ErrorVerb::Write))?;
                        CommandResponse::Write(results)
                    }
                    EntryPayload::Normal(Command::InitTimeline(record)) => {
                        store
                            .apply_init_timeline(position, &record)
                            .map_err(store_err(ErrorVerb::Write))?;
                        CommandResponse::None
                    }
                };
                responses.push(response);
            }
            Ok(responses)
        })
        .await
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        if let Some(old) = self.receiving.take() {
            let _ = tokio::fs::remove_file(old).await;
        }
        let path = self.snapshots.temp_path("receiving");
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        self.receiving = Some(path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let received = self.take_received(snapshot).await?;
        let store = self.store.clone();
        let snapshots = self.snapshots.clone();
        let meta = meta.clone();
        blocking(move || {
            let data = snapshots.commit(&received, &meta)?;
            let installed = store
                .install_from(&data)
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
            let expected = meta.last_log_id.as_ref().map(log_id_to_position);
            if installed.applied != expected {
                return Err(snap_err(
                    ErrorVerb::Write,
                    msg(format!(
                        "snapshot {} says it is at {:?} but its database is at {:?}",
                        meta.snapshot_id, expected, installed.applied
                    )),
                ));
            }
            snapshots.prune(Some(&meta.snapshot_id));
            tracing::info!(snapshot = %meta.snapshot_id, "installed snapshot from the leader");
            Ok(())
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some((meta, path)) = self.snapshots.current()? else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}
