//! The client side of the Raft RPCs: [`HttpNetworkFactory`] and the [`HttpNetwork`] to each
//! peer, openraft's [`RaftNetworkV2`]. A full snapshot is handed to the snapshot sender
//! ([`SnapshotPeer::send`]); everything else is one [`post_postcard`] per call.

use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use openraft::errors::{
    Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::OptionalSend;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use super::snapshot::{snapshot_stall, SnapshotPeer};
use super::transport::{error_chain, post_postcard, raft_client, remote_failure, TransportError};
use super::{
    FreeSpace, APPEND_BATCH_BYTES, APPEND_PATH, FREE_SPACE_PATH, PRE_VOTE_PATH, SNAPSHOT_PATH,
    TRANSFER_LEADER_PATH, VOTE_PATH,
};
use crate::types::SnapshotFile;
use crate::types::{Entry, NodeAddr, NodeId, Snapshot, TypeConfig, Vote};

/// Creates [`HttpNetwork`]s; all of them share one pooled HTTP client.
#[derive(Clone, Debug)]
pub struct HttpNetworkFactory {
    client: reqwest::Client,
    /// URL scheme of peers' Raft ports: `http`, or `https` when the cluster uses node TLS.
    scheme: &'static str,
}

impl HttpNetworkFactory {
    /// A factory with a pooled client, TCP_NODELAY, and a
    /// [`CONNECT_TIMEOUT`](super::CONNECT_TIMEOUT) connect timeout.
    pub fn new() -> Self {
        Self::with_client(raft_client())
    }

    /// A factory using the given client (e.g. one shared with other node-to-node calls).
    pub fn with_client(client: reqwest::Client) -> Self {
        Self::with_client_and_scheme(client, "http")
    }

    /// A factory using the given client and URL scheme (`"http"` or `"https"`); for node TLS,
    /// pass a client that trusts the node CA (and presents this node's certificate).
    pub fn with_client_and_scheme(client: reqwest::Client, scheme: &'static str) -> Self {
        Self { client, scheme }
    }

    /// The underlying client, for reuse by other node-to-node calls.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Checks that a peer's Raft port answers this node's client: TCP reachable and, with node
    /// TLS, a handshake both sides trust. Any HTTP answer counts (a GET on a POST route is 405).
    pub async fn probe(&self, raft_addr: &str, timeout: Duration) -> Result<(), String> {
        let url = format!("{}://{raft_addr}{APPEND_PATH}", self.scheme);
        match self.client.get(&url).timeout(timeout).send().await {
            Ok(_) => Ok(()),
            Err(e) => Err(error_chain(&e)),
        }
    }

    /// Asks the peer at `raft_addr` how much disk its data directory has free.
    pub async fn free_space(
        &self,
        raft_addr: &str,
        timeout: Duration,
    ) -> Result<FreeSpace, TransportError> {
        let url = format!("{}://{raft_addr}{FREE_SPACE_PATH}", self.scheme);
        post_postcard(&self.client, &url, &(), timeout).await
    }
}

impl Default for HttpNetworkFactory {
    fn default() -> Self {
        Self::new()
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpNetworkFactory {
    type Network = HttpNetwork;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> Self::Network {
        HttpNetwork {
            target,
            addr: node.raft_addr.clone(),
            client: self.client.clone(),
            scheme: self.scheme,
        }
    }
}

/// The connection to one peer. Holds no socket itself; the shared client pools connections.
#[derive(Clone, Debug)]
pub struct HttpNetwork {
    target: NodeId,
    addr: String,
    client: reqwest::Client,
    scheme: &'static str,
}

type RpcResult<T> = Result<T, RPCError<TypeConfig>>;

impl HttpNetwork {
    fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// POSTs `req` to `path` and unpacks the peer's `Result<Resp, E>`.
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Result<Resp, E>, TransportError>
    where
        Req: Serialize,
        Result<Resp, E>: DeserializeOwned,
    {
        post_postcard(&self.client, &self.url(path), req, timeout).await
    }

    fn unpack<Resp, E>(&self, res: Result<Result<Resp, E>, TransportError>) -> RpcResult<Resp>
    where
        E: StdError + 'static,
    {
        match res {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(remote)) => Err(RPCError::Unreachable(remote_failure(self.target, remote))),
            Err(e) => Err(transport_to_rpc_error(e)),
        }
    }

    /// [`RaftNetworkV2::full_snapshot`] with an explicit stall limit (tests use a short one).
    pub(super) async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed>,
        stall: Duration,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let peer = SnapshotPeer {
            client: &self.client,
            target: self.target,
            addr: &self.addr,
            url: self.url(SNAPSHOT_PATH),
        };
        peer.send(vote, snapshot, cancel, stall).await
    }
}

/// Unreachable → `RPCError::Unreachable` (openraft backs off); everything else →
/// `RPCError::Network` (openraft retries on its next tick).
///
/// Timeouts map to `Network`, not `RPCError::Timeout`: the latter needs the *local* node id,
/// which a transport built by [`HttpNetworkFactory::new`] does not know, and openraft treats both
/// the same way (no backoff, retry later).
fn transport_to_rpc_error(e: TransportError) -> RPCError<TypeConfig> {
    match e {
        TransportError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

/// How many of `entries`, from the first, fit in `budget` encoded bytes (at least one).
fn entries_within(entries: &[Entry], budget: usize) -> usize {
    let mut total = 0usize;
    for (i, entry) in entries.iter().enumerate() {
        let size = postcard::serialize_with_flavor(entry, postcard::ser_flavors::Size::default())
            .unwrap_or(usize::MAX);
        total = total.saturating_add(size);
        if total > budget {
            return i.max(1);
        }
    }
    entries.len()
}

impl RaftNetworkV2<TypeConfig> for HttpNetwork {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<TypeConfig>> {
        let offered = rpc.entries.len();
        // The follower commits only up to the last entry it received, so `leader_commit` can
        // stay as it is when the batch is cut.
        rpc.entries
            .truncate(entries_within(&rpc.entries, APPEND_BATCH_BYTES));
        // One deadline for the call, however many tries the peer's body limit costs.
        let deadline = Instant::now() + option.hard_ttl();
        loop {
            let sending = rpc.entries.len();
            let timeout = deadline.saturating_duration_since(Instant::now());
            let res = self
                .call::<_, AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>(
                    APPEND_PATH,
                    &rpc,
                    timeout,
                )
                .await;
            match res {
                // The peer's body limit (smaller than ours: another version or configuration)
                // refused the batch. openraft 0.10 has no "payload too large" answer to resend
                // fewer entries, so the transport does it: half the batch, until one entry.
                Err(e @ TransportError::Http { status, .. })
                    if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE && sending > 1 =>
                {
                    tracing::warn!(
                        target_node = self.target,
                        entries = sending,
                        error = %e,
                        "peer refused an AppendEntries batch as too large; sending half of it"
                    );
                    rpc.entries.truncate(sending / 2);
                }
                res => {
                    let resp = self.unpack(res)?;
                    return Ok(match resp {
                        AppendEntriesResponse::Success if sending < offered => {
                            AppendEntriesResponse::PartialSuccess(
                                rpc.entries.last().map(|e| e.log_id),
                            )
                        }
                        other => other,
                    });
                }
            }
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<TypeConfig>> {
        let res = self
            .call::<_, VoteResponse<TypeConfig>, RaftError<TypeConfig>>(
                VOTE_PATH,
                &rpc,
                option.hard_ttl(),
            )
            .await;
        self.unpack(res)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<TypeConfig>> {
        // A failure must stay an error (never a synthesized grant): an isolated node would
        // otherwise collect a quorum of grants and raise its term, which pre-vote prevents.
        let res = self
            .call::<_, VoteResponse<TypeConfig>, RaftError<TypeConfig>>(
                PRE_VOTE_PATH,
                &rpc,
                option.hard_ttl(),
            )
            .await;
        self.unpack(res)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        self.send_snapshot(vote, snapshot, cancel, snapshot_stall(&option))
            .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<TransferLeaderResponse<TypeConfig>> {
        let res = self
            .call::<_, TransferLeaderResponse<TypeConfig>, Fatal<TypeConfig>>(
                TRANSFER_LEADER_PATH,
                &req,
                option.hard_ttl(),
            )
            .await;
        self.unpack(res)
    }
}

#[cfg(test)]
mod tests;
