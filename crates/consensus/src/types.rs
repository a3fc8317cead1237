//! The openraft type configuration and the payload of raftlite's log entries.
//! Everything openraft-specific stays inside this crate.

use std::fmt;
use std::path::{Path, PathBuf};

use raftlite_store::{StatementResult, TimelineRecord, WriteRequest};
use serde::{Deserialize, Serialize};

pub type NodeId = u64;

/// What a member is reachable at: Raft RPC and the client HTTP API (for forwarding).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub raft_addr: String,
    pub api_addr: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} api={}", self.raft_addr, self.api_addr)
    }
}

/// The payload of a raftlite log entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Client writes that arrived together (group commit). `at_unix_ms` and `seed` are chosen by the
    /// leader once, so `'now'`, `CURRENT_TIMESTAMP` and `random()` evaluate identically on every node
    /// and on every replay.
    Write {
        requests: Vec<WriteRequest>,
        at_unix_ms: i64,
        seed: u64,
    },
    /// Sets the first timeline if the database has none; a no-op otherwise.
    InitTimeline(TimelineRecord),
    /// Replaces the whole database with `database`, the bytes of a SQLite file the leader
    /// validated (header and `quick_check`) before proposing (`POST /db/load`). Every node
    /// writes the bytes to a file and swaps it in with `Store::load_from`, which rewrites the
    /// copy's meta (applied position = this entry, membership = the current one) and appends
    /// `timeline` (its counter, parent and parent index are filled in on apply from the
    /// store's own state, so every node records the same history). Applying it again at or
    /// below the store's applied index (a replay) is a no-op.
    ///
    /// The whole file travels in one entry, so it is held in memory several times over and
    /// must fit one AppendEntries request: acceptable for now (bodies are capped below the
    /// Raft body limit); a later issue replaces it with chunked, bounded-memory entries
    /// followed by a small commit entry.
    Load {
        #[serde(with = "byte_string")]
        database: Vec<u8>,
        timeline: TimelineRecord,
    },
    /// Bytes `offset..offset + data.len()` of the database file of a restore in progress;
    /// every node keeps them in the database itself until the commit (see
    /// `Store::apply_restore_chunk`).
    RestoreChunk {
        restore_id: String,
        offset: u64,
        #[serde(with = "byte_string")]
        data: Vec<u8>,
    },
    /// Ends restore `restore_id`: every node assembles the chunks, checks size and sha256, and
    /// swaps the file in on a new timeline, at this entry's index.
    RestoreCommit {
        restore_id: String,
        size: u64,
        sha256: String,
        timeline: TimelineRecord,
    },
    /// Drops the chunks of an abandoned restore.
    RestoreAbort { restore_id: String },
}

/// What openraft prints of an entry in its logs: the kind and size, never the data.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Write { requests, .. } => write!(f, "write({} requests)", requests.len()),
            Command::InitTimeline(t) => write!(f, "init-timeline({})", t.id),
            Command::Load { database, .. } => write!(f, "load({} bytes)", database.len()),
            Command::RestoreChunk {
                restore_id,
                offset,
                data,
            } => write!(f, "restore-chunk({restore_id} @{offset} +{})", data.len()),
            Command::RestoreCommit { restore_id, .. } => write!(f, "restore-commit({restore_id})"),
            Command::RestoreAbort { restore_id } => write!(f, "restore-abort({restore_id})"),
        }
    }
}

/// Serializes a byte vector as one byte string instead of element by element. For postcard the
/// wire format is the same as a plain `Vec<u8>` (a varint length, then the raw bytes), but
/// encoding and decoding are a copy instead of one serde call per byte, which matters for
/// megabytes inside the AppendEntries time limit (and for archive segments, which hold
/// entries in the same encoding).
pub mod byte_string {
    use std::fmt;

    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

/// What applying one entry produced; `Write` holds one result list per request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub enum CommandResponse {
    #[default]
    None,
    Write(Vec<Vec<StatementResult>>),
    /// The outcome of a `RestoreCommit`: the timeline now in force, or why the restore was
    /// refused (the data is unchanged then).
    Restore(Result<TimelineRecord, String>),
}

openraft::declare_raft_types!(
    /// raftlite's openraft configuration. Terms are plain `u64`s and leader ids are openraft's
    /// "advanced" kind (a term may have several candidates, the node id breaks the tie), as in
    /// 0.9, so the log and vote written by earlier versions read back unchanged.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = NodeAddr,
        Term = u64,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type LeaderId = openraft::alias::LeaderIdOf<TypeConfig>;
pub type CommittedLeaderId = openraft::alias::CommittedLeaderIdOf<TypeConfig>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type EntryPayload = openraft::alias::EntryPayloadOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// Snapshots are SQLite files streamed from disk, so memory stays bounded whatever the
/// database size.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>;
pub type Membership = openraft::Membership<NodeId, NodeAddr>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;

/// A snapshot's SQLite file as openraft carries it between the state machine and the network:
/// an open handle, so that pruning the file's name cannot pull it from under a transfer in
/// progress, and the path it was opened at (a received snapshot's file is renamed into place on
/// install rather than copied).
#[derive(Debug)]
pub struct SnapshotFile {
    pub file: std::fs::File,
    pub path: PathBuf,
}

impl SnapshotFile {
    pub fn open(path: &Path) -> std::io::Result<SnapshotFile> {
        Ok(SnapshotFile {
            file: std::fs::File::open(path)?,
            path: path.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_bytes_have_the_plain_vec_wire_format_and_round_trip() {
        let timeline = TimelineRecord {
            id: "ab".into(),
            counter: 2,
            parent: Some("aa".into()),
            parent_index: Some(9),
            reason: "load".into(),
            at_unix_ms: 1,
        };
        let database: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let command = Command::Load {
            database: database.clone(),
            timeline: timeline.clone(),
        };
        let encoded = postcard::to_allocvec(&command).expect("encode");

        #[derive(Serialize)]
        enum Plain {
            _Write,
            _InitTimeline,
            Load {
                database: Vec<u8>,
                timeline: TimelineRecord,
            },
        }
        let plain =
            postcard::to_allocvec(&Plain::Load { database, timeline }).expect("encode plain");
        assert_eq!(encoded, plain);
        let decoded: Command = postcard::from_bytes(&encoded).expect("decode");
        assert_eq!(decoded, command);
    }
}
