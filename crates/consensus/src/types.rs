//! The openraft type configuration and the payload of raftlite's log entries.
//! Everything openraft-specific stays inside this crate.

use std::fmt;

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
}

/// What applying one entry produced; `Write` holds one result list per request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub enum CommandResponse {
    #[default]
    None,
    Write(Vec<Vec<StatementResult>>),
}

openraft::declare_raft_types!(
    /// raftlite's openraft configuration. Snapshots are SQLite files streamed from disk, so
    /// memory stays bounded whatever the database size.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = NodeAddr,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeAddr>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeAddr>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
