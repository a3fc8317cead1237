//! What the backup service needs from the cluster, as a trait: [`BackupCluster`]. The server
//! implements it with its [`RaftNode`]; the service's unit tests with a fake that holds a real
//! [`Store`] in a temp dir and plays leader, term and fence as each test says.

use std::future::Future;
use std::sync::Arc;

use raftlite_consensus::node::RaftNode;
use raftlite_consensus::{NodeAddr, NodeId};
use raftlite_store::Store;

/// The cluster as the leader's backup service sees it: who this node is, whether it leads and
/// in which term, how far it has applied, a quorum check for the fence, and the database.
///
/// The database is the [`Store`] itself rather than a few of its methods: a consistent file
/// ([`Store::pin_consistent_file`], or [`Store::snapshot_to`] when it cannot be pinned), the
/// committed meta (timeline and data index) and the WAL's size all come from it, and a pinned
/// file can only be made by a store. A fake opens a small real one.
///
/// Cheap to clone: the pacing task and the schedule keep a copy.
pub trait BackupCluster: Clone + Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> NodeId;

    /// Whether this node is the leader now.
    fn is_leader(&self) -> bool;

    /// The leader as this node knows it (who to send a backup request to instead).
    fn leader(&self) -> Option<(NodeId, NodeAddr)>;

    /// The Raft term this node is in.
    fn current_term(&self) -> u64;

    /// The index of the last log entry applied to the database (0 before any): the backup's
    /// pacing watches it to tell a busy node from an idle one.
    fn applied_index(&self) -> u64;

    /// Confirms with a quorum that this node still leads (and has applied everything committed
    /// before the call). The error is the reason, for the fence's message.
    fn ensure_linearizable(&self) -> impl Future<Output = Result<(), String>> + Send;

    /// The node's database.
    fn store(&self) -> Arc<Store>;
}

impl BackupCluster for RaftNode {
    fn node_id(&self) -> NodeId {
        self.id()
    }

    fn is_leader(&self) -> bool {
        RaftNode::is_leader(self)
    }

    fn leader(&self) -> Option<(NodeId, NodeAddr)> {
        RaftNode::leader(self)
    }

    fn current_term(&self) -> u64 {
        self.metrics().current_term
    }

    fn applied_index(&self) -> u64 {
        self.metrics().last_applied.map(|l| l.index).unwrap_or(0)
    }

    async fn ensure_linearizable(&self) -> Result<(), String> {
        RaftNode::ensure_linearizable(self)
            .await
            .map_err(|e| e.to_string())
    }

    fn store(&self) -> Arc<Store> {
        RaftNode::store(self)
    }
}
