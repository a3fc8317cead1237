//! Log entries in the continuous archive, and replaying them onto a database file (point-in-time
//! restore).
//!
//! An archived entry is the log entry itself, postcard-encoded, so a replay applies exactly what
//! the cluster applied: same log position (term, leader, index), same leader clock and seed per
//! write, through the same [`Store`] apply calls the state machine makes. Only the bytes of a
//! restore's chunks and of a `/db/load` are left out: those entries start a new timeline, whose
//! archive begins from the restored file, so a replay never crosses them.

use std::path::Path;

use raftlite_store::{EntryTime, MetaState, Store, StoreError, StoreOptions};

use crate::state_machine::log_id_to_position;
use crate::types::{Command, Entry, EntryPayload, StoredMembership};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("archived entry {index} does not decode ({reason}); the archive is damaged: check it with `raftlite backup verify`")]
    Decode { index: u64, reason: String },
    #[error(
        "entry {index} starts a new timeline (a restore or a load); a replay cannot cross it: \
         choose a target before it, or one on the timeline it started"
    )]
    CrossesRestore { index: u64 },
    #[error("the archive skips from entry {expected} to entry {found}: entries in between are missing, so no point after {last_applied} can be restored from this base")]
    Missing {
        expected: u64,
        found: u64,
        last_applied: u64,
    },
    #[error("cannot apply archived entry {index} to {path}: {source}")]
    Apply {
        index: u64,
        path: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot open the database to replay onto ({path}): {source}")]
    Open {
        path: String,
        #[source]
        source: StoreError,
    },
}

/// The archive's bytes for `entry`: the entry itself, without the data of restore chunks and
/// loads.
pub fn encode_archived(entry: &Entry) -> Result<Vec<u8>, String> {
    let stripped;
    let entry = match &entry.payload {
        EntryPayload::Normal(Command::RestoreChunk {
            restore_id, offset, ..
        }) => {
            stripped = Entry {
                log_id: entry.log_id,
                payload: EntryPayload::Normal(Command::RestoreChunk {
                    restore_id: restore_id.clone(),
                    offset: *offset,
                    data: Vec::new(),
                }),
            };
            &stripped
        }
        EntryPayload::Normal(Command::Load { timeline, .. }) => {
            stripped = Entry {
                log_id: entry.log_id,
                payload: EntryPayload::Normal(Command::Load {
                    database: Vec::new(),
                    timeline: timeline.clone(),
                }),
            };
            &stripped
        }
        _ => entry,
    };
    postcard::to_allocvec(entry).map_err(|e| format!("cannot encode log entry: {e}"))
}

/// The log entry archived as `bytes` under `index`.
pub fn decode_archived(index: u64, bytes: &[u8]) -> Result<Entry, ReplayError> {
    let entry: Entry = postcard::from_bytes(bytes).map_err(|e| ReplayError::Decode {
        index,
        reason: e.to_string(),
    })?;
    if entry.log_id.index != index {
        return Err(ReplayError::Decode {
            index,
            reason: format!("it holds entry {}", entry.log_id.index),
        });
    }
    Ok(entry)
}

/// Whether applying `entry` replaces the database (and starts a new timeline).
pub fn starts_timeline(entry: &Entry) -> bool {
    matches!(
        &entry.payload,
        EntryPayload::Normal(Command::RestoreCommit { .. } | Command::Load { .. })
    )
}

/// Applies archived entries, in order, onto a database file (a base backup's copy).
pub struct Replayer {
    store: Store,
    applied: u64,
}

impl Replayer {
    /// Opens the database at `path`; entries at or below its applied index are skipped.
    pub fn open(path: &Path) -> Result<Replayer, ReplayError> {
        let open_error = |source| ReplayError::Open {
            path: path.display().to_string(),
            source,
        };
        let store = Store::open(path, StoreOptions::default()).map_err(open_error)?;
        let applied = store
            .meta()
            .map_err(open_error)?
            .applied
            .map_or(0, |p| p.index);
        Ok(Replayer { store, applied })
    }

    /// The last entry the database reflects.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Applies `entry` if it is the next one; skips one the database already reflects.
    pub fn apply(&mut self, entry: Entry) -> Result<(), ReplayError> {
        let index = entry.log_id.index;
        if index <= self.applied {
            return Ok(());
        }
        if index != self.applied + 1 {
            return Err(ReplayError::Missing {
                expected: self.applied + 1,
                found: index,
                last_applied: self.applied,
            });
        }
        if starts_timeline(&entry) {
            return Err(ReplayError::CrossesRestore { index });
        }
        let position = log_id_to_position(&entry.log_id);
        let apply_error = |source| ReplayError::Apply {
            index,
            path: self.store.path().display().to_string(),
            source,
        };
        match entry.payload {
            EntryPayload::Blank => self
                .store
                .apply_membership(position, None)
                .map_err(apply_error)?,
            EntryPayload::Membership(m) => {
                let stored = StoredMembership::new(Some(entry.log_id), m);
                let json = serde_json::to_string(&stored).map_err(|e| ReplayError::Decode {
                    index,
                    reason: e.to_string(),
                })?;
                self.store
                    .apply_membership(position, Some(&json))
                    .map_err(apply_error)?
            }
            EntryPayload::Normal(Command::Write {
                requests,
                at_unix_ms,
                seed,
            }) => {
                self.store
                    .apply_write(position, EntryTime { at_unix_ms, seed }, &requests)
                    .map_err(apply_error)?;
            }
            EntryPayload::Normal(Command::InitTimeline(record)) => {
                self.store
                    .apply_init_timeline(position, &record)
                    .map_err(apply_error)?;
            }
            EntryPayload::Normal(Command::RestoreChunk { .. }) => {
                // The chunk's bytes are not archived; the restore it belongs to either ends in
                // a commit (which a replay refuses to cross) or in an abort, which leaves the
                // data as it was. Only the position moves.
                self.store
                    .apply_membership(position, None)
                    .map_err(apply_error)?
            }
            EntryPayload::Normal(Command::RestoreAbort { restore_id }) => self
                .store
                .apply_restore_abort(position, &restore_id)
                .map_err(apply_error)?,
            EntryPayload::Normal(Command::RestoreCommit { .. } | Command::Load { .. }) => {
                return Err(ReplayError::CrossesRestore { index })
            }
        }
        self.applied = index;
        Ok(())
    }

    /// Ends the replay: the database's meta as it stands, the file closed (its WAL folded in).
    pub fn finish(self) -> Result<MetaState, ReplayError> {
        let meta = self.store.meta().map_err(|source| ReplayError::Open {
            path: self.store.path().display().to_string(),
            source,
        })?;
        drop(self.store);
        Ok(meta)
    }
}

#[cfg(test)]
mod tests {
    use raftlite_store::{Statement, StatementResult, WriteRequest};

    use super::*;
    use crate::types::{CommittedLeaderId, LogId};

    fn write(index: u64, sql: &str) -> Entry {
        Entry {
            log_id: LogId::new(
                CommittedLeaderId {
                    term: 2,
                    node_id: 3,
                },
                index,
            ),
            payload: EntryPayload::Normal(Command::Write {
                requests: vec![WriteRequest {
                    statements: vec![Statement::new(sql)],
                    transaction: false,
                }],
                at_unix_ms: 1_700_000_000_000 + index as i64,
                seed: index * 7,
            }),
        }
    }

    fn rows(path: &Path) -> Vec<Vec<raftlite_store::Value>> {
        let store = Store::open(path, StoreOptions::default()).unwrap();
        let results = store
            .query(&[Statement::new("SELECT id, at, r FROM t ORDER BY id")])
            .unwrap();
        match results.into_iter().next() {
            Some(StatementResult::Rows(rows)) => rows.values,
            other => panic!("{other:?}"),
        }
    }

    fn entries() -> Vec<Entry> {
        vec![
            write(
                1,
                "CREATE TABLE t(id INTEGER PRIMARY KEY, at TEXT, r INTEGER)",
            ),
            write(
                2,
                "INSERT INTO t(at, r) VALUES (CURRENT_TIMESTAMP, random())",
            ),
            write(3, "INSERT INTO t(at, r) VALUES (datetime('now'), random())"),
        ]
    }

    #[test]
    fn replay_is_deterministic_and_survives_the_archive_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
        for path in [&a, &b] {
            let mut replayer = Replayer::open(path).unwrap();
            for entry in entries() {
                let bytes = encode_archived(&entry).unwrap();
                replayer
                    .apply(decode_archived(entry.log_id.index, &bytes).unwrap())
                    .unwrap();
            }
            assert_eq!(replayer.applied(), 3);
            let meta = replayer.finish().unwrap();
            assert_eq!(meta.applied.map(|p| (p.index, p.leader_node)), Some((3, 3)));
        }
        assert_eq!(rows(&a), rows(&b));
        // Entries the base already has are skipped, so replaying again changes nothing.
        let mut again = Replayer::open(&a).unwrap();
        for entry in entries() {
            again.apply(entry).unwrap();
        }
        again.finish().unwrap();
        assert_eq!(rows(&a), rows(&b));
    }

    #[test]
    fn a_missing_entry_and_a_restore_stop_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let mut replayer = Replayer::open(&dir.path().join("a.db")).unwrap();
        let all = entries();
        replayer.apply(all[0].clone()).unwrap();
        let err = replayer.apply(all[2].clone()).unwrap_err();
        assert!(
            matches!(
                err,
                ReplayError::Missing {
                    expected: 2,
                    found: 3,
                    ..
                }
            ),
            "{err}"
        );
        let load = Entry {
            log_id: LogId::new(
                CommittedLeaderId {
                    term: 2,
                    node_id: 3,
                },
                2,
            ),
            payload: EntryPayload::Normal(Command::RestoreAbort {
                restore_id: "x".into(),
            }),
        };
        replayer.apply(load).unwrap();
        assert!(decode_archived(9, b"\xff\xff").is_err());
        let wrong_index = encode_archived(&all[1]).unwrap();
        assert!(decode_archived(5, &wrong_index).is_err());
    }
}
