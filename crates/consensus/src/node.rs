//! A running Raft node: storage, network and openraft tied together, plus group commit, cluster
//! membership and the one code path that initializes the first timeline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::{ChangeMembers, Config, ReadPolicy, ServerState, SnapshotPolicy};
use raftlite_store::{StatementResult, Store, TimelineRecord, WriteRequest};
use tokio::sync::{mpsc, oneshot};

use crate::archive_hold::ArchiveHold;
use crate::log_store::LogStore;
use crate::network::HttpNetworkFactory;
use crate::state_machine::{Raft, SqliteStateMachine};
use crate::types::*;

/// Requests merged into one log entry at most.
const MAX_BATCH: usize = 512;
/// Write requests waiting for group commit at most; one more is refused at once (503) rather
/// than left waiting behind the others.
pub const WRITE_QUEUE_CAPACITY: usize = MAX_BATCH * 4;
/// Default of `--max-entry-bytes`: the encoded write requests one log entry carries at most.
/// openraft gives every AppendEntries one heartbeat interval (300 ms) to arrive and be
/// fsync'd, so an entry must stay well below what a follower receives in that time.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 4 << 20;
/// Largest `--max-entry-bytes` accepted: one entry always fits in one AppendEntries batch
/// (the transport never has to send it alone above its byte budget), and so always below the
/// followers' Raft body limit.
pub const MAX_ENTRY_BYTES_CEILING: usize = crate::network::APPEND_BATCH_BYTES;
/// Smallest `--max-entry-bytes` accepted: below it ordinary statements would be refused.
pub const MIN_ENTRY_BYTES: usize = 64 << 10;
/// What an entry adds around its requests (log id, command tag, clock, seed, lengths), with
/// room to spare.
const ENTRY_FRAMING_BYTES: usize = 4 << 10;
const _: () = assert!(
    MAX_ENTRY_BYTES_CEILING + ENTRY_FRAMING_BYTES <= crate::network::RAFT_BODY_LIMIT,
    "an entry the leader accepts must always pass the followers' Raft body limit"
);
/// How long the leader waits for a joining node's Raft port to answer before refusing the join.
const JOIN_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one join request waits for the new learner to catch up before asking it to retry.
const JOIN_CATCH_UP_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// Addresses other members and clients use to reach this node.
    pub addr: NodeAddr,
    /// Take a Raft snapshot after this many entries since the last one.
    pub snapshot_threshold: u64,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Client and URL scheme (`"http"`/`"https"`) for Raft RPCs to peers; `None` is plain
    /// HTTP with [`crate::network::raft_client`]. Node TLS passes a client trusting the node CA.
    pub raft_client: Option<(reqwest::Client, &'static str)>,
    /// Encoded write requests one log entry carries at most (`--max-entry-bytes`): a larger
    /// request is refused before it reaches the log, and group commit never packs past it.
    pub max_entry_bytes: usize,
}

impl NodeConfig {
    pub fn new(node_id: NodeId, data_dir: &Path, addr: NodeAddr) -> NodeConfig {
        NodeConfig {
            node_id,
            data_dir: data_dir.to_path_buf(),
            addr,
            snapshot_threshold: 8192,
            // openraft also uses the heartbeat interval as the deadline of every
            // AppendEntries request, so it must leave room for a follower to receive and fsync a
            // full batch; elections stay well above it.
            heartbeat_ms: 300,
            election_timeout_min_ms: 1500,
            election_timeout_max_ms: 3000,
            raft_client: None,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
        }
    }
}

/// Paths inside a data dir. The layout is part of the operator contract (see README).
pub struct DataDirLayout {
    pub db: PathBuf,
    pub raft: PathBuf,
    pub snapshots: PathBuf,
}

impl DataDirLayout {
    pub fn new(data_dir: &Path) -> DataDirLayout {
        DataDirLayout {
            db: data_dir.join("db.sqlite"),
            raft: data_dir.join("raft"),
            snapshots: data_dir.join("snapshots"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot open storage: {0}")]
    Storage(String),
    #[error("invalid Raft configuration: {0}")]
    Config(String),
    #[error("raft failed: {0}")]
    Raft(String),
}

/// Why a write or a leader-only read did not happen here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<(NodeId, NodeAddr)> },
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// The request would make a log entry larger than replication can carry; nothing was
    /// proposed.
    #[error(
        "the request's log entry would be {size} bytes, more than --max-entry-bytes ({limit} \
         bytes), the most one Raft entry may carry; nothing was applied. Split it into smaller \
         requests (or load a SQLite database file with /db/load, which has no such limit)"
    )]
    TooLarge { size: usize, limit: usize },
    /// Too many writes already wait for group commit; nothing was proposed.
    #[error(
        "{0} writes are already waiting to be committed on this node; nothing was applied: \
         retry shortly"
    )]
    QueueFull(usize),
}

/// Results of one write request and the log index it was committed at.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    pub results: Vec<StatementResult>,
    pub raft_index: u64,
}

struct PendingWrite {
    request: WriteRequest,
    /// [`request_size`] of `request`.
    size: usize,
    reply: oneshot::Sender<Result<WriteOutcome, WriteError>>,
}

struct Inner {
    /// Held by the restore this node runs as leader: one at a time.
    pub(crate) restoring: tokio::sync::Mutex<()>,
    /// What that restore is doing, for `/status`.
    pub(crate) restore_progress: std::sync::Mutex<Option<crate::restore_progress::RestoreProgress>>,
    id: NodeId,
    addr: NodeAddr,
    raft: Raft,
    store: Arc<Store>,
    writes: mpsc::Sender<PendingWrite>,
    /// When a leader's append (entries or heartbeat) was last accepted here.
    leader_contact: std::sync::Mutex<Option<std::time::Instant>>,
    /// The Raft client, to check that a joining node is reachable before adding it, and to ask
    /// peers for their free disk before a restore.
    network: HttpNetworkFactory,
    /// Where snapshots received from the leader are written.
    snapshots: crate::state_machine::SnapshotDir,
    election_timeout_max: Duration,
    max_entry_bytes: usize,
    /// A handle on the log (shared with openraft's), for the archiver: it reads committed
    /// entries, including those purged but kept by `archive_hold`, and releases them.
    log: LogStore,
    archive_hold: ArchiveHold,
}

/// Handle to a running node; cheap to clone.
#[derive(Clone)]
pub struct RaftNode {
    inner: Arc<Inner>,
}

/// Log entries kept behind a snapshot for followers that lag a little: 1000, or
/// `RAFTLITE_SNAPSHOT_KEEP_ENTRIES` (tests keep a few, so that a stopped follower needs a
/// snapshot after a few hundred writes rather than after more than a thousand).
fn entries_kept_behind_snapshot() -> u64 {
    std::env::var("RAFTLITE_SNAPSHOT_KEEP_ENTRIES")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1000)
}

pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl RaftNode {
    /// Opens storage and starts Raft. Does not bootstrap or join: see [`RaftNode::bootstrap`].
    pub async fn start(config: NodeConfig) -> Result<RaftNode, NodeError> {
        let layout = DataDirLayout::new(&config.data_dir);
        let log_store =
            LogStore::open(&layout.raft).map_err(|e| NodeError::Storage(e.to_string()))?;
        let (db, snapshots) = (layout.db.clone(), layout.snapshots.clone());
        let state_machine =
            tokio::task::spawn_blocking(move || SqliteStateMachine::open(&db, &snapshots))
                .await
                .map_err(|e| NodeError::Storage(e.to_string()))?
                .map_err(|e| NodeError::Storage(e.to_string()))?;
        let store = state_machine.store();
        let settled_restores = state_machine.settled_restores();
        // openraft purges the log behind a received snapshot before the state machine has
        // installed it; the purge must wait until that snapshot is durable here.
        let archive_hold = ArchiveHold::default();
        let log_store = log_store
            .with_snapshot_floor(state_machine.snapshot_floor())
            .with_archive_hold(archive_hold.clone());
        let log_handle = log_store.clone();

        let raft_config = Config {
            cluster_name: "raftlite".to_string(),
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            // A whole snapshot travels in one streamed request; openraft hands this to the
            // transport, which gives up on a transfer that makes no progress for three quarters
            // of it (a multi-GB file takes far longer in all; `network::snapshot`).
            install_snapshot_timeout: 30_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_threshold),
            max_in_snapshot_log_to_keep: entries_kept_behind_snapshot(),
            // Bounds one AppendEntries to a lagging follower by count (restore chunks are 1 MiB,
            // group-commit entries up to 4 MiB); the transport also cuts it to
            // `APPEND_BATCH_BYTES`: it must arrive and be fsync'd within the heartbeat
            // interval, openraft's deadline for it.
            max_payload_entries: 16,
            // Replicate an entry as soon as the leader has submitted it to its own log, so the
            // leader's fsync and the followers' overlap instead of running one after the other
            // (the leader still counts itself only once its own flush is done).
            broadcast_submitted_on_append: Some(true),
            // A member whose data dir was wiped and that comes back under its old id asks for
            // the log from the start; without this the leader treats that as a bug and stops
            // replicating to it (0.9 needed the `loosen-follower-log-revert` feature for it).
            // Kept for every member rather than armed once per join
            // (`trigger().allow_next_revert`): a join request does not say the joiner is empty,
            // and a reverted log is what every wiped member shows.
            allow_log_reversion: Some(true),
            // A restarted node never takes leadership back without an election: the committed
            // index is not fsync'd on every commit here (`LogStore::save_committed`), which is
            // the case openraft documents as unsafe for restoring leadership.
            enable_leader_restore: Some(false),
            // A node that was paused or cut off asks before it campaigns, so its return does not
            // depose a healthy leader (a SIGSTOP'd old leader, a partitioned follower).
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;

        let network = match config.raft_client.clone() {
            Some((client, scheme)) => HttpNetworkFactory::with_client_and_scheme(client, scheme),
            None => HttpNetworkFactory::new(),
        };
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network.clone(),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;

        if !(MIN_ENTRY_BYTES..=MAX_ENTRY_BYTES_CEILING).contains(&config.max_entry_bytes) {
            return Err(NodeError::Config(format!(
                "--max-entry-bytes {} is outside {MIN_ENTRY_BYTES}..={MAX_ENTRY_BYTES_CEILING}",
                config.max_entry_bytes
            )));
        }
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        tokio::spawn(run_group_commit(raft.clone(), rx, config.max_entry_bytes));
        tokio::spawn(crate::compaction::compact_after_restores(
            raft.clone(),
            settled_restores,
        ));
        // A node stopped after it applied a restore's commit (or abort) and before its log was
        // compacted keeps the chunks' log segments; nothing would apply that commit again, so
        // the compaction runs now, up to what it had applied.
        let settled_segments = crate::log_blobs::segment_lengths(&layout.raft)
            .is_ok_and(|segments| segments.len() > 1);
        if settled_segments && matches!(store.pending_restore(), Ok(None)) {
            if let Some(applied) = store.meta().ok().and_then(|meta| meta.applied) {
                tokio::spawn(crate::compaction::compact_log_after(
                    raft.clone(),
                    applied.index,
                ));
            }
        }
        let node = RaftNode {
            inner: Arc::new(Inner {
                id: config.node_id,
                addr: config.addr,
                raft,
                store,
                writes: tx,
                leader_contact: std::sync::Mutex::new(None),
                network,
                snapshots: crate::state_machine::SnapshotDir::read_only(&layout.snapshots),
                election_timeout_max: Duration::from_millis(config.election_timeout_max_ms),
                max_entry_bytes: config.max_entry_bytes,
                log: log_handle,
                archive_hold,
                restoring: tokio::sync::Mutex::new(()),
                restore_progress: std::sync::Mutex::new(None),
            }),
        };
        tokio::spawn(node.clone().initialize_timeline_when_leader());
        tokio::spawn(node.clone().drop_abandoned_restores());
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The lock a restore run by this node holds.
    pub(crate) fn inner_restoring(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.restoring
    }

    pub(crate) fn inner_restore_progress(
        &self,
    ) -> &std::sync::Mutex<Option<crate::restore_progress::RestoreProgress>> {
        &self.inner.restore_progress
    }

    pub fn addr(&self) -> &NodeAddr {
        &self.inner.addr
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn store(&self) -> Arc<Store> {
        self.inner.store.clone()
    }

    /// What keeps log entries the archive does not hold yet through openraft's purges.
    pub fn archive_hold(&self) -> &ArchiveHold {
        &self.inner.archive_hold
    }

    /// Applied (so committed) entries from `from` on, at most `max_entries` of them, for the
    /// log archive; with the index of the first entry still on disk, so a caller can tell that
    /// entries it needs are gone. Entries purged by openraft but kept by the archive hold are
    /// included.
    pub async fn archive_entries(
        &self,
        from: u64,
        max_entries: u64,
    ) -> Result<(Option<u64>, Vec<crate::types::Entry>), NodeError> {
        let applied = self.metrics().last_applied.map_or(0, |l| l.index);
        let to = applied.min(from.saturating_add(max_entries.max(1) - 1));
        self.inner
            .log
            .read_for_archive(from, to)
            .await
            .map_err(|e| NodeError::Storage(e.to_string()))
    }

    /// Lets the log delete entries kept for the archive up to `upto`.
    pub async fn release_archived(&self, upto: u64) -> Result<(), NodeError> {
        self.inner
            .log
            .release_archived(upto)
            .await
            .map_err(|e| NodeError::Storage(e.to_string()))
    }

    /// Makes this node a single-voter cluster if it has never been part of one.
    pub async fn bootstrap(&self) -> Result<bool, NodeError> {
        let initialized = self
            .inner
            .raft
            .is_initialized()
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        if initialized {
            return Ok(false);
        }
        let mut members = BTreeMap::new();
        members.insert(self.inner.id, self.inner.addr.clone());
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        tracing::info!(
            node_id = self.inner.id,
            "bootstrapped a new single-node cluster"
        );
        Ok(true)
    }

    pub fn metrics(&self) -> RaftMetrics {
        self.inner.raft.metrics().borrow_watched().clone()
    }

    /// openraft's runtime statistics as a text table: batch sizes and, per log stage, latency
    /// percentiles (built with the `runtime-stats` feature only).
    #[cfg(feature = "runtime-stats")]
    pub async fn raft_stats_text(&self) -> Result<String, String> {
        self.inner
            .raft
            .runtime_stats()
            .await
            .map(|stats| stats.display().to_string())
            .map_err(|e| e.to_string())
    }

    /// The leader as this node currently knows it.
    pub fn leader(&self) -> Option<(NodeId, NodeAddr)> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// The Raft RPC router for this node, with the free-space question a leader asks before a
    /// restore; it also notes every append accepted from a leader, for
    /// [`RaftNode::since_leader_contact`].
    pub fn raft_router(&self) -> axum::Router {
        let node = self.clone();
        crate::network::raft_router(self.inner.raft.clone(), self.inner.snapshots.clone())
            .merge(crate::free_space::free_space_router(self.data_dir()))
            .layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let node = node.clone();
                    async move {
                        let is_append = request.uri().path() == crate::network::APPEND_PATH;
                        let response = next.run(request).await;
                        if is_append && response.status().is_success() {
                            node.note_leader_contact();
                        }
                        response
                    }
                },
            ))
    }

    /// The client for node-to-node calls.
    pub(crate) fn network(&self) -> &HttpNetworkFactory {
        &self.inner.network
    }

    /// The directory holding this node's database.
    pub(crate) fn data_dir(&self) -> std::path::PathBuf {
        self.inner
            .store
            .path()
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    }

    fn note_leader_contact(&self) {
        if let Ok(mut at) = self.inner.leader_contact.lock() {
            *at = Some(std::time::Instant::now());
        }
    }

    /// How long ago this node last heard from a leader: zero on the leader itself, `None` when
    /// it never has since start-up. rqlite's `freshness` compares against this.
    pub fn since_leader_contact(&self) -> Option<Duration> {
        if self.is_leader() {
            return Some(Duration::ZERO);
        }
        self.inner
            .leader_contact
            .lock()
            .ok()
            .and_then(|at| at.map(|t| t.elapsed()))
    }

    /// True once this node is a voter at its own address in a membership it has applied and a
    /// leader has reached it since start-up (or it leads): what a joining node waits for. A
    /// persisted vote alone names a leader at start-up, so the contact counts, not the vote.
    pub fn is_voter_with_leader(&self) -> bool {
        let metrics = self.metrics();
        let stored = &metrics.membership_config;
        let applied = match (stored.log_id(), metrics.last_applied) {
            (Some(membership), Some(applied)) => applied.index >= membership.index,
            _ => false,
        };
        let membership = stored.membership();
        applied
            && membership.voter_ids().any(|v| v == self.inner.id)
            && membership.get_node(&self.inner.id) == Some(&self.inner.addr)
            && self.since_leader_contact().is_some()
    }

    pub fn is_leader(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        m.state == ServerState::Leader && m.current_leader == Some(self.inner.id)
    }

    /// Encoded write requests one log entry carries at most (`--max-entry-bytes`).
    pub fn max_entry_bytes(&self) -> usize {
        self.inner.max_entry_bytes
    }

    /// Proposes a client's write through group commit and waits until it is applied.
    ///
    /// Refused at once, before anything is proposed, when the request alone would make an
    /// entry larger than `--max-entry-bytes` (followers could not take it within openraft's
    /// AppendEntries deadline, and every retry would cost the cluster an election), or when
    /// the group-commit queue is full (waiting would only add to the pile).
    pub async fn write(&self, request: WriteRequest) -> Result<WriteOutcome, WriteError> {
        self.submit(request)?.await
    }

    /// [`RaftNode::write`] in two steps: the request is checked and queued now (refused at
    /// once if too large or the queue is full), and the returned future gives its outcome.
    /// Queued writes answer their client between the two.
    pub fn submit(
        &self,
        request: WriteRequest,
    ) -> Result<impl std::future::Future<Output = Result<WriteOutcome, WriteError>>, WriteError>
    {
        let size = request_size(&request);
        if size > self.inner.max_entry_bytes {
            return Err(WriteError::TooLarge {
                size,
                limit: self.inner.max_entry_bytes,
            });
        }
        let (reply, rx) = oneshot::channel();
        let pending = PendingWrite {
            request,
            size,
            reply,
        };
        self.inner.writes.try_send(pending).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => WriteError::QueueFull(WRITE_QUEUE_CAPACITY),
            mpsc::error::TrySendError::Closed(_) => {
                WriteError::Unavailable("node is shutting down".into())
            }
        })?;
        Ok(async move {
            rx.await
                .map_err(|_| WriteError::Unavailable("node is shutting down".into()))?
        })
    }

    /// Waits until this node, as leader, has applied everything committed before the call.
    pub async fn ensure_linearizable(&self) -> Result<(), WriteError> {
        match self
            .inner
            .raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
        {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(not_leader(f))
            }
            Err(e) => Err(WriteError::Unavailable(e.to_string())),
        }
    }

    /// Adds a node as learner, then as voter. A node already a voter at the same address is a
    /// no-op, so a restarted node with the same `--join` flags is harmless.
    ///
    /// Only a leader that has just confirmed its leadership with a quorum decides, and only from
    /// its committed membership: a follower's view can be stale (one restarted before it learned
    /// that the joiner was removed still lists it), and answering "already a member" from it
    /// would leave a wiped joiner outside the cluster for good. A follower answers `NotLeader`,
    /// so the API forwards the join to the leader.
    ///
    /// The joining node's Raft port is checked first with this node's own Raft client: openraft
    /// counts an unreachable learner as caught up while the log is short, and promoting a node
    /// the leader cannot reach (wrong advertised address, untrusted certificate) would leave the
    /// cluster without a quorum. The learner is promoted only once it has acknowledged the log up
    /// to its own membership entry; one still catching up (a large snapshot) stays a learner and
    /// is promoted when the joining node retries.
    pub async fn add_node(&self, id: NodeId, addr: NodeAddr) -> Result<(), WriteError> {
        self.ensure_linearizable().await?;
        let committed = self
            .inner
            .raft
            .with_raft_state(|state| state.membership_state.committed().membership().clone())
            .await
            .map_err(|e| WriteError::Unavailable(e.to_string()))?;
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let is_voter = membership.voter_ids().any(|v| v == id);
        let voter_at_addr =
            |m: &Membership| m.voter_ids().any(|v| v == id) && m.get_node(&id) == Some(&addr);
        // A change still in flight (a removal of this very node) must not count as membership.
        if voter_at_addr(&committed) && voter_at_addr(membership) {
            return Ok(());
        }
        if let Err(cause) = self
            .inner
            .network
            .probe(&addr.raft_addr, JOIN_PROBE_TIMEOUT)
            .await
        {
            return Err(WriteError::Unavailable(format!(
                "refusing to add node {id}: the leader cannot reach its Raft address {} ({cause}); \
                 check --raft-advertise-addr and, with TLS, that its certificate is signed by \
                 --node-ca. Nothing was changed",
                addr.raft_addr
            )));
        }
        let target_index = if membership.get_node(&id) != Some(&addr) {
            self.inner
                .raft
                .add_learner(id, addr.clone(), false)
                .await
                .map_err(map_write_err)?
                .log_id
                .index
        } else {
            metrics.last_log_index.unwrap_or(0)
        };
        if let Some(matched) = self
            .wait_replicated(id, target_index, JOIN_CATCH_UP_WAIT)
            .await
        {
            return Err(WriteError::Unavailable(format!(
                "node {id} is still catching up (acknowledged index {} of {target_index}); it \
                 stays a learner and is promoted when it retries the join",
                matched
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "none yet".into())
            )));
        }
        if !is_voter {
            self.inner
                .raft
                .change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                .await
                .map_err(map_write_err)?;
        }
        tracing::info!(node_id = id, %addr, "node joined the cluster");
        Ok(())
    }

    /// Waits until node `id` has acknowledged the log up to `index`. `None` when it has;
    /// otherwise what it acknowledged when the wait ran out.
    async fn wait_replicated(&self, id: NodeId, index: u64, wait: Duration) -> Option<Option<u64>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut metrics = self.inner.raft.metrics();
        loop {
            let matched = metrics
                .borrow_watched()
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned().flatten())
                .map(|l| l.index);
            if matched.is_some_and(|m| m >= index) {
                return None;
            }
            if tokio::time::Instant::now() >= deadline {
                return Some(matched);
            }
            let _ = tokio::time::timeout_at(deadline, metrics.changed()).await;
        }
    }

    /// Removes a node from the membership (voter or learner).
    pub async fn remove_node(&self, id: NodeId) -> Result<(), WriteError> {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(WriteError::Unavailable(format!(
                "node {id} is not a member"
            )));
        }
        if membership.voter_ids().any(|v| v == id) {
            self.inner
                .raft
                .change_membership(ChangeMembers::RemoveVoters([id].into()), false)
                .await
                .map_err(map_write_err)?;
        }
        let metrics = self.metrics();
        if metrics
            .membership_config
            .membership()
            .get_node(&id)
            .is_some()
        {
            self.inner
                .raft
                .change_membership(ChangeMembers::RemoveNodes([id].into()), false)
                .await
                .map_err(map_write_err)?;
        }
        tracing::info!(node_id = id, "node removed from the cluster");
        Ok(())
    }

    /// The voter a leader should hand leadership to: `requested` if it is another voter, else
    /// the follower that has replicated the most.
    pub fn transfer_target(
        &self,
        requested: Option<NodeId>,
    ) -> Result<(NodeId, NodeAddr), WriteError> {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let candidates: Vec<NodeId> = membership
            .voter_ids()
            .filter(|id| *id != self.inner.id)
            .collect();
        let chosen = match requested {
            Some(id) if candidates.contains(&id) => id,
            Some(id) => {
                return Err(WriteError::Unavailable(format!(
                    "node {id} is not another voter of this cluster; voters: {candidates:?}"
                )))
            }
            None => {
                let matched = |id: &NodeId| {
                    metrics
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(id).cloned().flatten())
                        .map(|l| l.index)
                };
                candidates
                    .iter()
                    .copied()
                    .max_by_key(|id| matched(id))
                    .ok_or_else(|| {
                        WriteError::Unavailable(
                            "this is a single-voter cluster: there is no other node to lead".into(),
                        )
                    })?
            }
        };
        let addr = membership
            .get_node(&chosen)
            .cloned()
            .ok_or_else(|| WriteError::Unavailable(format!("node {chosen} has no address")))?;
        Ok((chosen, addr))
    }

    /// Stops (or resumes) this node's heartbeats and elections. Voters refuse votes while the
    /// leader's lease is fresh, so a leader stepping down goes quiet until another node has been
    /// elected.
    pub fn pause_leadership(&self, paused: bool) {
        let runtime = self.inner.raft.runtime_config();
        runtime.heartbeat(!paused);
        runtime.elect(!paused);
    }

    /// Starts an election here once `old_leader`'s lease has run out (used when that leader hands
    /// over leadership to this node). Stops as soon as any leader other than `old_leader` exists.
    pub fn campaign(&self, old_leader: NodeId) {
        let node = self.clone();
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(node.inner.election_timeout_max).await;
                if node.leader().is_some_and(|(id, _)| id != old_leader) {
                    return;
                }
                if let Err(e) = node.inner.raft.trigger().elect(false).await {
                    tracing::warn!(error = %e, "cannot start an election");
                    return;
                }
            }
        });
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
    }

    /// The single code path that gives a database its first timeline: the leader proposes it
    /// once through the log, and applying it is a no-op when one exists, so a repeated or raced
    /// proposal can never conflict.
    /// The chunks of a restore whose leader failed before its commit stay in every node's
    /// database (and in snapshots and backups) until something drops them: whenever this node
    /// leads and runs no restore itself, it aborts any such leftover.
    async fn drop_abandoned_restores(self) {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if self
                .inner
                .raft
                .metrics()
                .borrow_watched()
                .running_state
                .is_err()
            {
                return; // raft shut down
            }
            if !self.is_leader() {
                continue;
            }
            let pending = |store: Arc<Store>| async move {
                tokio::task::spawn_blocking(move || store.pending_restore())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten()
            };
            // Cheap check first, without the lock a running restore holds.
            let Some((seen, _, _)) = pending(self.inner.store.clone()).await else {
                continue;
            };
            // A restore this node runs holds the lock: its chunks are not abandoned.
            let Ok(_idle) = self.inner.restoring.try_lock() else {
                continue;
            };
            let Some((restore_id, chunks, bytes)) = pending(self.inner.store.clone()).await else {
                continue;
            };
            if restore_id != seen {
                continue; // it changed meanwhile: look again next time
            }
            tracing::warn!(
                restore = %restore_id,
                chunks,
                bytes,
                "dropping the chunks of a restore its leader abandoned before the commit"
            );
            let abort = Command::RestoreAbort { restore_id };
            if let Err(e) = self.inner.raft.client_write(abort).await {
                tracing::debug!(error = %e, "dropping abandoned restore chunks will be retried");
            }
        }
    }

    async fn initialize_timeline_when_leader(self) {
        let mut metrics = self.inner.raft.metrics();
        loop {
            let has_timeline = {
                let store = self.inner.store.clone();
                tokio::task::spawn_blocking(move || store.meta().map(|m| m.timeline().is_some()))
                    .await
            };
            match has_timeline {
                Ok(Ok(true)) => return,
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot read timeline"),
                _ => {}
            }
            if self.is_leader() {
                let record = TimelineRecord {
                    id: format!("{:032x}", rand::random::<u128>()),
                    counter: 1,
                    parent: None,
                    parent_index: None,
                    reason: "bootstrap".to_string(),
                    at_unix_ms: unix_ms(),
                };
                match self
                    .inner
                    .raft
                    .client_write(Command::InitTimeline(record))
                    .await
                {
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "timeline initialization will be retried")
                    }
                }
            }
            let changed = tokio::time::timeout(Duration::from_secs(1), metrics.changed()).await;
            if let Ok(Err(_)) = changed {
                return; // raft shut down
            }
        }
    }
}

fn not_leader(f: openraft::error::ForwardToLeader<TypeConfig>) -> WriteError {
    WriteError::NotLeader {
        leader: f.leader_id.zip(f.leader_node),
    }
}

fn map_write_err(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> WriteError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(f),
        // Not `NotLeader`: the API would forward the write to the new leader, and the entry
        // may still commit there, so the write could apply twice.
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => {
            WriteError::Unavailable(format!(
                "leadership changed before this write was known to commit; it may or may not \
                 have been applied (new leader: {:?}); check before retrying",
                f.leader_id
            ))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            WriteError::Unavailable(c.to_string())
        }
        RaftError::APIError(ClientWriteError::PreconditionFailed(p)) => {
            WriteError::Unavailable(p.to_string())
        }
        RaftError::Fatal(f) => WriteError::Unavailable(f.to_string()),
    }
}

/// Group commit: requests that arrive while the previous entry is in flight share the next
/// entry, so many concurrent clients pay for one log append and one fsync per node, and a lone
/// client is never delayed. One entry in flight is enough: on openraft 0.9 more only split the
/// batches (3 nodes, 64 clients: 12.4k inserts/s with one in flight, 10.0k with four), and on
/// 0.10 one, two and four in flight measure the same within noise (10.1k-10.5k/s, 2026-12-07).
///
/// An entry never carries more than `max_entry_bytes` of encoded requests: a request that would
/// take the batch past it waits for the next entry (each request alone fits, [`RaftNode::write`]
/// refuses any other).
async fn run_group_commit(
    raft: Raft,
    mut rx: mpsc::Receiver<PendingWrite>,
    max_entry_bytes: usize,
) {
    let mut held_over: Option<PendingWrite> = None;
    loop {
        let first = match held_over.take() {
            Some(w) => w,
            None => match rx.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        let (batch, next) = fill_batch(first, max_entry_bytes, || rx.try_recv().ok());
        held_over = next;
        propose_batch(&raft, batch).await;
    }
}

/// Takes waiting writes after `first` while they fit in `max_entry_bytes` (and [`MAX_BATCH`]);
/// the first that does not fit is handed back for the next entry.
fn fill_batch(
    first: PendingWrite,
    max_entry_bytes: usize,
    mut waiting: impl FnMut() -> Option<PendingWrite>,
) -> (Vec<PendingWrite>, Option<PendingWrite>) {
    let mut bytes = first.size;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        let Some(w) = waiting() else {
            break;
        };
        if bytes + w.size > max_entry_bytes {
            return (batch, Some(w));
        }
        bytes += w.size;
        batch.push(w);
    }
    (batch, None)
}

/// Encoded size of a request in a log entry (postcard, as the log stores and the transport
/// sends it), computed without encoding it.
pub fn request_size(request: &WriteRequest) -> usize {
    postcard::serialize_with_flavor(request, postcard::ser_flavors::Size::default())
        .unwrap_or(usize::MAX)
}

async fn propose_batch(raft: &Raft, batch: Vec<PendingWrite>) {
    let (requests, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    let command = Command::Write {
        requests,
        at_unix_ms: unix_ms(),
        seed: rand::random(),
    };
    match raft.client_write(command).await {
        Ok(response) => {
            let index = response.log_id.index;
            match response.data {
                CommandResponse::Write(results) if results.len() == replies.len() => {
                    for (reply, results) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok(WriteOutcome {
                            results,
                            raft_index: index,
                        }));
                    }
                }
                other => {
                    let err = WriteError::Unavailable(format!(
                        "state machine answered a write with {other:?}"
                    ));
                    for reply in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
        }
        Err(e) => {
            let err = map_write_err(e);
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use raftlite_store::Statement;

    use super::*;

    fn pending(sql_bytes: usize) -> PendingWrite {
        let request = WriteRequest {
            statements: vec![Statement::new("x".repeat(sql_bytes))],
            transaction: false,
        };
        PendingWrite {
            size: request_size(&request),
            request,
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn group_commit_never_packs_an_entry_past_the_limit() {
        let limit = 1 << 20;
        let mut waiting: std::collections::VecDeque<PendingWrite> =
            [400 << 10, 400 << 10, 400 << 10, 10].map(pending).into();
        let first = pending(100 << 10);
        let (batch, held) = fill_batch(first, limit, || waiting.pop_front());
        let packed: usize = batch.iter().map(|w| w.size).sum();
        assert_eq!(batch.len(), 3, "first + two 400 KiB requests fit in 1 MiB");
        assert!(packed <= limit);
        let held = held.expect("the third 400 KiB request waits for the next entry");
        assert!(held.size > 400 << 10);
        let (batch, held) = fill_batch(held, limit, || waiting.pop_front());
        assert_eq!(batch.len(), 2);
        assert!(held.is_none());
    }

    #[test]
    fn request_size_is_the_encoded_size() {
        let request = WriteRequest {
            statements: vec![Statement::with_params(
                "INSERT INTO t VALUES(?)",
                vec![raftlite_store::Value::Blob(vec![1; 1000])],
            )],
            transaction: true,
        };
        let encoded = postcard::to_allocvec(&request).expect("encode");
        assert_eq!(request_size(&request), encoded.len());
    }
}
