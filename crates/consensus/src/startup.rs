//! Start-up classification of a data dir (DESIGN.md section 6), before anything is written.
//!
//! The probe only reads: it never creates the data dir, the log, the database or a snapshot.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::log_store::{self, LogProbe};
use crate::node::DataDirLayout;
use crate::state_machine::{log_id_to_position, SnapshotDir};

/// What the data dir holds, and so what the node may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataDirState {
    /// No log, no vote, no database: bootstrap or join.
    Empty,
    /// Log and database agree: serve.
    Consistent {
        applied_index: u64,
        last_log_index: u64,
    },
    /// The log is present but the database is missing or behind: it is rebuilt automatically from
    /// the newest snapshot and the log.
    DbLost {
        db_index: Option<u64>,
        snapshot_index: Option<u64>,
        last_log_index: u64,
    },
    /// The database (or a snapshot) is at `db_index` > 0 but the log or vote is gone. Serving
    /// would silently fork the cluster, so the node refuses.
    LogLost { db_index: u64, db_file: PathBuf },
    /// A file failed its checks.
    Corrupt { file: PathBuf, detail: String },
}

impl DataDirState {
    /// Whether a node may start on this data dir without an operator's decision.
    pub fn can_start(&self) -> bool {
        matches!(
            self,
            DataDirState::Empty | DataDirState::Consistent { .. } | DataDirState::DbLost { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            DataDirState::Empty => "empty",
            DataDirState::Consistent { .. } => "consistent",
            DataDirState::DbLost { .. } => "db lost",
            DataDirState::LogLost { .. } => "log lost",
            DataDirState::Corrupt { .. } => "corrupt",
        }
    }
}

impl fmt::Display for DataDirState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataDirState::Empty => write!(f, "empty data dir: a new node"),
            DataDirState::Consistent {
                applied_index,
                last_log_index,
            } => write!(
                f,
                "consistent: database at index {applied_index}, log up to {last_log_index}"
            ),
            DataDirState::DbLost {
                db_index,
                snapshot_index,
                last_log_index,
            } => write!(
                f,
                "database missing or behind (database at {}, snapshot at {}, log up to \
                 {last_log_index}): it will be rebuilt from the snapshot and the log",
                opt(db_index),
                opt(snapshot_index)
            ),
            DataDirState::LogLost { db_index, db_file } => write!(
                f,
                "the Raft log (raft/) is missing or empty, but the database {} is at log index \
                 {db_index}. Starting normally would fork the cluster's history, so the node \
                 refuses. Options: (1) restart with --recovery-mode to start a new single-node \
                 cluster from this database on a new timeline (writes committed after index \
                 {db_index} that this database never applied are lost; other nodes then join it \
                 with empty data dirs); (2) if other members of the cluster still run, move this \
                 data dir aside and start the node empty with --join so it copies their data; \
                 (3) restore from a backup.",
                db_file.display()
            ),
            DataDirState::Corrupt { file, detail } => write!(
                f,
                "{} is damaged ({detail}). Nothing was changed. Options: (1) restart with \
                 --recovery-mode: a damaged log is moved aside and the database seeds a new \
                 single-node cluster on a new timeline (writes it never applied are lost); a \
                 damaged database or snapshot is moved aside and rebuilt from the log when \
                 possible; (2) if other members still run, move this data dir aside and start \
                 empty with --join; (3) restore from a backup. `raftlite doctor --data-dir DIR` \
                 shows what is there.",
                file.display()
            ),
        }
    }
}

fn opt(v: &Option<u64>) -> String {
    v.map(|i| i.to_string())
        .unwrap_or_else(|| "none".to_string())
}

/// Classifies `data_dir` by reading the log, the database and the snapshots.
pub fn classify(data_dir: &Path) -> DataDirState {
    let layout = DataDirLayout::new(data_dir);
    let log = match log_store::probe(&layout.raft) {
        Ok(log) => log,
        Err(detail) => {
            return DataDirState::Corrupt {
                file: layout.raft.join(log_store::LOG_FILE_NAME),
                detail,
            }
        }
    };
    let db_index = match raftlite_store::probe_checked(&layout.db) {
        Ok(meta) => meta.and_then(|m| m.applied).map(|p| p.index),
        Err(e) => {
            return DataDirState::Corrupt {
                file: layout.db.clone(),
                detail: e.to_string(),
            }
        }
    };
    let (snapshot_index, snapshot_received) =
        match SnapshotDir::read_only(&layout.snapshots).newest() {
            Ok(s) => (
                s.as_ref()
                    .and_then(|s| s.meta.last_log_id.map(|l| log_id_to_position(&l).index)),
                s.is_some_and(|s| s.received),
            ),
            Err(e) => {
                return DataDirState::Corrupt {
                    file: layout.snapshots.clone(),
                    detail: e.to_string(),
                }
            }
        };
    decide(
        &log,
        db_index,
        Snapshot {
            index: snapshot_index,
            received: snapshot_received,
        },
        &layout.db,
    )
}

/// The newest complete snapshot, as classification sees it.
#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    index: Option<u64>,
    /// Received from the leader (see [`crate::state_machine::StoredSnapshot::received`]).
    received: bool,
}

fn decide(
    log: &LogProbe,
    db_index: Option<u64>,
    snapshot: Snapshot,
    db_file: &Path,
) -> DataDirState {
    let snapshot_index = snapshot.index;
    let log_empty = log.vote.is_none() && log.last_log_id.is_none();
    let data_index = db_index.max(snapshot_index);
    if log_empty {
        return match data_index {
            None => DataDirState::Empty,
            // A database never written by Raft (or only at index 0) has nothing to lose.
            Some(0) => DataDirState::Empty,
            Some(db_index) => DataDirState::LogLost {
                db_index,
                db_file: db_file.to_path_buf(),
            },
        };
    }
    let last_log_index = log.last_log_id.map(|l| l.index).unwrap_or(0);
    if let Some(data) = data_index {
        // A snapshot received from the leader is durable before the log is purged up to it, so
        // a crash in between leaves it (and the database installed from it) past the log's end;
        // openraft completes that purge when it starts. Any other data past the log's end was
        // applied from entries the log no longer has.
        let received_past_log = snapshot.received && snapshot_index >= db_index;
        if data > last_log_index && !received_past_log {
            // The log ends before data that was applied from it: entries are missing.
            return DataDirState::LogLost {
                db_index: data,
                db_file: db_file.to_path_buf(),
            };
        }
    }
    let purged = log.last_purged.map(|l| l.index);
    let rebuildable_from = snapshot_index.max(db_index);
    if purged.is_some() && rebuildable_from < purged {
        return DataDirState::Corrupt {
            file: db_file.to_path_buf(),
            detail: format!(
                "the database (index {}) and snapshots (index {}) are older than the log's \
                 purged prefix (up to {}), so the data cannot be rebuilt here",
                opt(&db_index),
                opt(&snapshot_index),
                opt(&purged)
            ),
        };
    }
    match db_index {
        Some(applied_index) if db_index >= snapshot_index => DataDirState::Consistent {
            applied_index,
            last_log_index,
        },
        _ => DataDirState::DbLost {
            db_index,
            snapshot_index,
            last_log_index,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::LogId;

    fn log_id(index: u64) -> LogId {
        LogId::new(
            crate::types::CommittedLeaderId {
                term: 1,
                node_id: 1,
            },
            index,
        )
    }

    fn log(last: Option<u64>, purged: Option<u64>) -> LogProbe {
        LogProbe {
            exists: true,
            vote: Some(crate::types::Vote::new(1, 1)),
            last_purged: purged.map(log_id),
            last_log_id: last.map(log_id),
            committed: None,
        }
    }

    fn built(index: Option<u64>) -> Snapshot {
        Snapshot {
            index,
            received: false,
        }
    }

    fn received(index: u64) -> Snapshot {
        Snapshot {
            index: Some(index),
            received: true,
        }
    }

    #[test]
    fn a_received_snapshot_past_the_log_is_the_purge_a_crash_cut_short() {
        let db = Path::new("/d/db.sqlite");
        // Received, durable, not yet installed, the log not yet purged up to it.
        assert_eq!(
            decide(&log(Some(600), Some(400)), Some(599), received(799), db),
            DataDirState::DbLost {
                db_index: Some(599),
                snapshot_index: Some(799),
                last_log_index: 600
            }
        );
        // Installed too.
        assert_eq!(
            decide(&log(Some(600), Some(400)), Some(799), received(799), db),
            DataDirState::Consistent {
                applied_index: 799,
                last_log_index: 600
            }
        );
        // Built here, it never reaches past the log: entries are missing.
        assert!(matches!(
            decide(&log(Some(600), Some(400)), Some(599), built(Some(799)), db),
            DataDirState::LogLost { db_index: 799, .. }
        ));
        // A database past both the received snapshot and the log was applied from lost entries.
        assert!(matches!(
            decide(&log(Some(600), Some(400)), Some(900), received(799), db),
            DataDirState::LogLost { db_index: 900, .. }
        ));
    }

    #[test]
    fn classification_table() {
        let db = Path::new("/d/db.sqlite");
        let none = LogProbe::default();
        assert_eq!(decide(&none, None, built(None), db), DataDirState::Empty);
        assert_eq!(decide(&none, Some(0), built(None), db), DataDirState::Empty);
        assert!(matches!(
            decide(&none, Some(7), built(None), db),
            DataDirState::LogLost { db_index: 7, .. }
        ));
        assert!(matches!(
            decide(&none, None, built(Some(9)), db),
            DataDirState::LogLost { db_index: 9, .. }
        ));
        assert_eq!(
            decide(&log(Some(10), None), Some(10), built(None), db),
            DataDirState::Consistent {
                applied_index: 10,
                last_log_index: 10
            }
        );
        assert!(matches!(
            decide(&log(Some(10), None), None, built(None), db),
            DataDirState::DbLost { .. }
        ));
        assert!(matches!(
            decide(&log(Some(100), Some(50)), Some(20), built(Some(60)), db),
            DataDirState::DbLost { .. }
        ));
        assert!(matches!(
            decide(&log(Some(100), Some(50)), None, built(None), db),
            DataDirState::Corrupt { .. }
        ));
        assert!(matches!(
            decide(&log(Some(5), None), Some(9), built(None), db),
            DataDirState::LogLost { .. }
        ));
    }

    #[test]
    fn probe_of_a_missing_dir_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        assert_eq!(classify(&dir), DataDirState::Empty);
        assert!(!dir.exists());
    }

    #[test]
    fn messages_name_the_fix() {
        let s = DataDirState::LogLost {
            db_index: 42,
            db_file: PathBuf::from("/d/db.sqlite"),
        };
        let text = s.to_string();
        assert!(text.contains("--recovery-mode") && text.contains("42"));
        assert!(!s.can_start());
    }
}
