//! Raft RPC transport: HTTP POSTs with postcard bodies, and snapshots streamed from disk.
//!
//! Client side: [`HttpNetworkFactory`] / [`HttpNetwork`] implement openraft's
//! [`RaftNetworkV2`] and POST postcard-encoded requests to a peer's `raft_addr`: AppendEntries
//! ([`APPEND_PATH`]), votes ([`VOTE_PATH`], [`PRE_VOTE_PATH`]) and leadership transfers
//! ([`TRANSFER_LEADER_PATH`]). Server side: [`raft_router`] decodes them, hands them to the local
//! [`Raft`] and answers with the postcard-encoded `Result<Response, RaftError<..>>` (or
//! `Result<Response, Fatal<..>>` where openraft's call returns that).
//!
//! A snapshot (an SQLite file, possibly gigabytes) travels in one POST to [`SNAPSHOT_PATH`]
//! whose body is streamed from the open file and, on the receiver, straight into a file in the
//! snapshots directory, so neither side holds it in memory:
//!
//! ```text
//! request:  "RLSN" | version u8 | header length u32 LE | postcard(vote, meta, size)
//!           | size bytes of the file | crc32 of those bytes, u32 LE
//! answer:   200, then "." every second while the receiver fsyncs and installs, then
//!           "=" postcard(Result<SnapshotResponse, Fatal>)  or  "!" UTF-8 error message
//! ```
//!
//! A body that is not such a frame (wrong magic or version, cut short, extra bytes, checksum
//! mismatch) is refused with 400 before anything is installed, and the partial file is removed.
//! The snapshot route has no body limit (only the disk bounds it); the others keep
//! [`RAFT_BODY_LIMIT`].
//!
//! [`post_postcard`] is the shared one-shot helper (also usable by the rest of the codebase for
//! node-to-node calls); its [`TransportError`] distinguishes "could not connect" from "timed out"
//! from "peer answered badly", which is what openraft needs to decide between backing off and
//! retrying.

use std::error::Error as StdError;
use std::fmt::Display;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::{Stream, StreamExt};
use openraft::errors::{
    ErrorSource, Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftTypeConfig, StorageError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::state_machine::{SnapshotDir, SnapshotFile};
use crate::types::{Entry, NodeAddr, NodeId, Raft, Snapshot, SnapshotMeta, TypeConfig, Vote};

/// Path of the AppendEntries RPC.
pub const APPEND_PATH: &str = "/raft/append";
/// Path of the RequestVote RPC.
pub const VOTE_PATH: &str = "/raft/vote";
/// Path of the Pre-Vote RPC: "would you vote for me?", asked before a candidate raises its
/// term, so a node that was partitioned or paused cannot unseat a healthy leader on its return.
pub const PRE_VOTE_PATH: &str = "/raft/pre-vote";
/// Path of the full-snapshot transfer (one streamed POST, see the module documentation).
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";
/// Path of the leader's "take over now" message to the node it hands leadership to.
pub const TRANSFER_LEADER_PATH: &str = "/raft/transfer-leader";
/// Path of the question a leader asks each peer before a restore: how much disk is free.
pub const FREE_SPACE_PATH: &str = "/raft/free-space";

/// A node's answer on [`FREE_SPACE_PATH`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FreeSpace {
    /// The node's data directory.
    pub dir: String,
    /// Bytes free for the node's process on that directory's file system; `None` if unknown.
    pub free: Option<u64>,
}

/// Request body limit of [`raft_router`]'s routes except [`SNAPSHOT_PATH`] (streamed, so
/// unlimited): AppendEntries batches can be large, so axum's 2 MiB default is too small.
pub const RAFT_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Encoded entry bytes one AppendEntries carries at most (always at least one entry, whatever
/// its size). openraft bounds a batch only by count (`max_payload_entries`) and gives it one
/// heartbeat interval to arrive and be fsync'd: 16 group-commit entries of 4 MiB (64 MiB) would
/// time out on every try over a 1 Gbit/s link, and a follower behind them would never catch
/// up. openraft takes a partial send (`PartialSuccess`) and sends the rest next.
pub const APPEND_BATCH_BYTES: usize = 8 << 20;

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

/// Connect timeout of [`HttpNetworkFactory`]'s client. Peers are on a LAN (or localhost); a
/// connect that takes longer than this means the peer is down, and openraft should back off.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

const OCTET_STREAM: &str = "application/octet-stream";

/// At most this many bytes of a non-2xx response body are kept in [`TransportError::Http`].
const MAX_ERROR_BODY: usize = 1024;

// ---------------------------------------------------------------------------------------------
// Shared helper
// ---------------------------------------------------------------------------------------------

/// Why a [`post_postcard`] call failed.
///
/// The variants carrying a `reqwest::Error` display its whole source chain (reqwest's own
/// message is only "error sending request for url (...)"; the cause, e.g. "Connection refused",
/// is in the chain), because openraft logs errors with plain `Display`.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing reached the peer: connection refused, DNS failure, connect timeout, or an
    /// address that does not form a valid URL. Callers should back off before retrying.
    #[error("unreachable: {}", error_chain(.0))]
    Unreachable(reqwest::Error),

    /// The request was sent (or being sent) but no complete answer arrived within `timeout`.
    #[error("timed out after {timeout:?}: {}", error_chain(.error))]
    Timeout {
        timeout: Duration,
        error: reqwest::Error,
    },

    /// The peer answered with a non-2xx status. `body` is the start of its (text) body.
    #[error("HTTP {status}: {body}")]
    Http {
        status: reqwest::StatusCode,
        body: String,
    },

    /// The peer answered 2xx but the body is not a postcard value of the expected type.
    #[error("undecodable response body: {0}")]
    Decode(postcard::Error),

    /// The request could not be postcard-encoded (a bug, not a network condition).
    #[error("cannot encode request: {0}")]
    Encode(postcard::Error),

    /// Any other transport failure after connecting (connection reset, truncated body, ...).
    #[error("transport error: {}", error_chain(.0))]
    Network(reqwest::Error),
}

impl TransportError {
    /// Sorts a reqwest error into Unreachable / Timeout / Network.
    fn from_reqwest(error: reqwest::Error, timeout: Duration) -> Self {
        // A connect timeout is both `is_connect` and `is_timeout`: it is an unreachable peer.
        if error.is_connect() || error.is_builder() {
            TransportError::Unreachable(error)
        } else if error.is_timeout() {
            TransportError::Timeout { timeout, error }
        } else {
            TransportError::Network(error)
        }
    }

    /// The HTTP status of an [`TransportError::Http`] error.
    pub fn status(&self) -> Option<reqwest::StatusCode> {
        match self {
            TransportError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `error: cause: cause-of-cause`, skipping causes whose text is already included.
pub fn error_chain(error: &dyn StdError) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = e.source();
    }
    out
}

/// POSTs `req` postcard-encoded to `url` and decodes a postcard `Resp` from a 2xx answer.
/// `timeout` bounds the whole exchange (connect, send, and reading the response body).
pub async fn post_postcard<Req, Resp>(
    client: &reqwest::Client,
    url: &str,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, TransportError>
where
    Req: Serialize + ?Sized,
    Resp: DeserializeOwned,
{
    let body = postcard::to_allocvec(req).map_err(TransportError::Encode)?;
    let resp = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, OCTET_STREAM)
        .timeout(timeout)
        .body(body)
        .send()
        .await
        .map_err(|e| TransportError::from_reqwest(e, timeout))?;

    let status = resp.status();
    if !status.is_success() {
        return Err(TransportError::Http {
            status,
            body: error_body(resp).await,
        });
    }

    let bytes = resp
        .bytes()
        .await
        .map_err(|e| TransportError::from_reqwest(e, timeout))?;
    postcard::from_bytes(&bytes).map_err(TransportError::Decode)
}

/// The start of a non-2xx answer's body, best effort: it is only for the error message.
async fn error_body(resp: reqwest::Response) -> String {
    match resp.bytes().await {
        Ok(b) => {
            let b = &b[..b.len().min(MAX_ERROR_BODY)];
            String::from_utf8_lossy(b).into_owned()
        }
        Err(e) => format!("<unreadable body: {}>", error_chain(&e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Client: openraft network
// ---------------------------------------------------------------------------------------------

/// Creates [`HttpNetwork`]s; all of them share one pooled HTTP client.
#[derive(Clone, Debug)]
pub struct HttpNetworkFactory {
    client: reqwest::Client,
    /// URL scheme of peers' Raft ports: `http`, or `https` when the cluster uses node TLS.
    scheme: &'static str,
}

impl HttpNetworkFactory {
    /// A factory with a pooled client, TCP_NODELAY, and a [`CONNECT_TIMEOUT`] connect timeout.
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

/// The HTTP client the Raft transport uses: pooled keep-alive connections, TCP_NODELAY (Raft
/// RPCs are small, latency-bound request/response exchanges), short connect timeout, no proxy.
pub fn raft_client() -> reqwest::Client {
    raft_client_builder()
        .build()
        // Building only fails on TLS backend / resolver initialisation, neither of which this
        // configuration uses; fall back to a default client rather than failing.
        .unwrap_or_else(|e| {
            tracing::warn!(error = %error_chain(&e), "cannot build raft HTTP client, using defaults");
            reqwest::Client::new()
        })
}

/// The settings of [`raft_client`], for callers that add TLS before building.
pub fn raft_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(60))
        .no_proxy()
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
            Ok(Err(remote)) => Err(RPCError::Unreachable(self.remote_failure(remote))),
            Err(e) => Err(transport_to_rpc_error(e)),
        }
    }

    /// The peer answered but its Raft has stopped (`Fatal`: shut down, panicked, or a storage
    /// failure): it will not take part until restarted, so openraft should back off from it as
    /// from a node that is down. (openraft 0.10's network errors have no remote-error case.)
    fn remote_failure<E: StdError + 'static>(&self, error: E) -> Unreachable<TypeConfig> {
        Unreachable::new(&RemoteError::<TypeConfig, E>::new(self.target, error))
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

// ---------------------------------------------------------------------------------------------
// Snapshot transfer: framing shared by both sides
// ---------------------------------------------------------------------------------------------

/// The first bytes of a snapshot request body.
const SNAPSHOT_MAGIC: [u8; 4] = *b"RLSN";
/// The framing version; a receiver refuses any other.
const SNAPSHOT_VERSION: u8 = 1;
/// Magic, version and the header's length.
const SNAPSHOT_PREFIX_LEN: usize = SNAPSHOT_MAGIC.len() + 1 + 4;
/// Largest header accepted: a vote and a membership (node ids and addresses) take a few KiB,
/// so anything larger is a garbled length, refused before allocating it.
const MAX_SNAPSHOT_HEADER: usize = 1 << 20;
/// Bytes of the file per body chunk the sender reads.
const SNAPSHOT_CHUNK: usize = 256 << 10;
/// Bytes the receiver gathers before each write to disk.
const SNAPSHOT_WRITE_BUFFER: usize = 1 << 20;

/// The answer's keep-alive byte, sent while the receiver fsyncs and installs.
const ANSWER_KEEPALIVE: u8 = b'.';
/// Tag of the final answer: postcard of `Result<SnapshotResponse, Fatal>` follows.
const ANSWER_RESULT: u8 = b'=';
/// Tag of a receiver-side failure after the body was accepted: a UTF-8 message follows.
const ANSWER_FAILED: u8 = b'!';
/// Largest final answer accepted (a vote, a fatal error's message).
const MAX_SNAPSHOT_ANSWER: usize = 64 << 10;

/// How often the receiver sends [`ANSWER_KEEPALIVE`] while it installs.
const SNAPSHOT_KEEPALIVE: Duration = Duration::from_secs(1);
/// The shortest stall the sender tolerates, whatever openraft's timeout: several keep-alives.
const MIN_SNAPSHOT_STALL: Duration = Duration::from_secs(5);
/// How long the receiver waits for the next body bytes before it gives up on a sender that
/// vanished without closing the connection (it would otherwise hold a partial file forever).
/// A live sender does not pause: it sends as fast as the link takes the bytes.
const SNAPSHOT_RECEIVE_STALL: Duration = Duration::from_secs(60);

/// What precedes a snapshot's bytes in the request body.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotHeader {
    /// The leader's vote, for `Raft::install_full_snapshot`.
    vote: Vote,
    meta: SnapshotMeta,
    /// The file's length: exactly this many bytes follow the header.
    size: u64,
}

/// Magic, version, header length and the postcard header: everything before the file's bytes.
fn snapshot_prefix(header: &SnapshotHeader) -> Result<Vec<u8>, String> {
    let encoded =
        postcard::to_allocvec(header).map_err(|e| format!("cannot encode snapshot header: {e}"))?;
    let len = u32::try_from(encoded.len())
        .ok()
        .filter(|&l| l as usize <= MAX_SNAPSHOT_HEADER)
        .ok_or_else(|| {
            format!(
                "snapshot header is {} bytes, more than the {MAX_SNAPSHOT_HEADER} a receiver accepts",
                encoded.len()
            )
        })?;
    let mut out = Vec::with_capacity(SNAPSHOT_PREFIX_LEN + encoded.len());
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.push(SNAPSHOT_VERSION);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&encoded);
    Ok(out)
}

/// How long the sender lets a snapshot transfer go without progress.
///
/// openraft gives `full_snapshot` one [`RPCOption`] built from `install_snapshot_timeout`,
/// a limit meant for one chunk and its installation. No total deadline fits both a small
/// database and a 1 GiB one over a slow link, and the receiver's install time (quick_check,
/// copy and fsync of the whole file) also grows with the size. So the limit is on *stalls*:
/// progress is the HTTP stack taking the next chunk of the file (the peer is reading) and,
/// once the body is sent, each keep-alive byte the receiver sends while it installs. The soft
/// TTL is what openraft recommends for a streaming transport's idle timeout; the floor keeps
/// several keep-alive intervals in it whatever the configuration.
fn snapshot_stall(option: &RPCOption) -> Duration {
    option.soft_ttl().max(MIN_SNAPSHOT_STALL)
}

/// When a transfer last made progress; shared between the request body stream (the HTTP
/// stack's task polls it) and the watchdog in [`HttpNetwork::send_snapshot`].
struct Progress {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Progress {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    /// Resolves once nothing has happened for `stall`.
    async fn stalled(&self, stall: Duration) {
        loop {
            let deadline = self.last() + stall;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Why a guarded step of a snapshot transfer did not finish.
enum Interrupted {
    Closed(ReplicationClosed),
    Stalled,
}

/// Runs `fut` until it finishes, `cancel` resolves, or the transfer stalls.
async fn guarded<F, C>(
    fut: F,
    cancel: std::pin::Pin<&mut C>,
    progress: &Progress,
    stall: Duration,
) -> Result<F::Output, Interrupted>
where
    F: Future,
    C: Future<Output = ReplicationClosed> + ?Sized,
{
    tokio::select! {
        biased;
        closed = cancel => Err(Interrupted::Closed(closed)),
        _ = progress.stalled(stall) => Err(Interrupted::Stalled),
        out = fut => Ok(out),
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshot transfer: sender
// ---------------------------------------------------------------------------------------------

/// The request body: prefix, the file's bytes read chunk by chunk, the checksum trailer.
struct Outgoing {
    prefix: Option<Vec<u8>>,
    file: tokio::fs::File,
    path: PathBuf,
    size: u64,
    remaining: u64,
    crc: crc32fast::Hasher,
    trailer_sent: bool,
    progress: Arc<Progress>,
    /// A local read failure, for the sender to report as such rather than as the HTTP
    /// stack's generic "body error".
    failure: Arc<OnceLock<String>>,
}

impl Outgoing {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if let Some(prefix) = self.prefix.take() {
            return Ok(Some(Bytes::from(prefix)));
        }
        if self.remaining > 0 {
            let want = usize::try_from(self.remaining.min(SNAPSHOT_CHUNK as u64))
                .unwrap_or(SNAPSHOT_CHUNK);
            let mut buf = vec![0u8; want];
            let n = self.file.read(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} ended after {} of its {} bytes",
                        self.path.display(),
                        self.size - self.remaining,
                        self.size
                    ),
                ));
            }
            buf.truncate(n);
            self.crc.update(&buf);
            self.remaining -= n as u64;
            return Ok(Some(Bytes::from(buf)));
        }
        if !self.trailer_sent {
            self.trailer_sent = true;
            let crc = self.crc.clone().finalize();
            return Ok(Some(Bytes::copy_from_slice(&crc.to_le_bytes())));
        }
        Ok(None)
    }

    fn into_stream(self) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        futures::stream::unfold(Some(self), |state| async move {
            let mut out = state?;
            match out.next_chunk().await {
                Ok(Some(chunk)) => {
                    out.progress.touch();
                    Some((Ok(chunk), Some(out)))
                }
                Ok(None) => {
                    out.progress.touch();
                    None
                }
                Err(e) => {
                    let _ = out
                        .failure
                        .set(format!("reading {}: {e}", out.path.display()));
                    Some((Err(e), None))
                }
            }
        })
    }
}

impl HttpNetwork {
    /// [`RaftNetworkV2::full_snapshot`] with an explicit stall limit.
    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed>,
        stall: Duration,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let Snapshot { meta, snapshot } = snapshot;
        let SnapshotFile { file, path } = snapshot;
        let signature = meta.signature();
        // A local read failure is a storage error, as openraft's own chunked sender reports it.
        let storage = |what: String| {
            StreamingError::StorageError(StorageError::read_snapshot(
                Some(signature.clone()),
                <TypeConfig as RaftTypeConfig>::ErrorSource::from_string(what),
            ))
        };
        let network = |what: String| {
            StreamingError::Network(NetworkError::from_string(format!(
                "snapshot to node {} at {}: {what}",
                self.target, self.addr
            )))
        };

        let size = file
            .metadata()
            .map_err(|e| storage(format!("cannot stat {}: {e}", path.display())))?
            .len();
        let described = meta.to_string();
        let prefix = snapshot_prefix(&SnapshotHeader { vote, meta, size }).map_err(&network)?;
        let mut file = tokio::fs::File::from_std(file);
        file.seek(io::SeekFrom::Start(0))
            .await
            .map_err(|e| storage(format!("cannot seek in {}: {e}", path.display())))?;

        let progress = Arc::new(Progress::new());
        let failure = Arc::new(OnceLock::new());
        let body = Outgoing {
            prefix: Some(prefix),
            file,
            path,
            size,
            remaining: size,
            crc: crc32fast::Hasher::new(),
            trailer_sent: false,
            progress: progress.clone(),
            failure: failure.clone(),
        };
        tracing::info!(target_node = self.target, snapshot = %described, size, "sending snapshot");
        let started = Instant::now();
        let request = self
            .client
            .post(self.url(SNAPSHOT_PATH))
            .header(reqwest::header::CONTENT_TYPE, OCTET_STREAM)
            .body(reqwest::Body::wrap_stream(body.into_stream()))
            .send();

        let interrupted = |i: Interrupted, failure: &OnceLock<String>| match (i, failure.get()) {
            (Interrupted::Closed(closed), _) => StreamingError::Closed(closed),
            (Interrupted::Stalled, Some(local)) => storage(local.clone()),
            (Interrupted::Stalled, None) => network(format!(
                "no progress for {stall:?}: the peer stopped reading or answering"
            )),
        };
        let mut cancel = std::pin::pin!(cancel);
        let mut response = match guarded(request, cancel.as_mut(), &progress, stall).await {
            Err(i) => return Err(interrupted(i, &failure)),
            Ok(Err(e)) => {
                return Err(match failure.get() {
                    Some(local) => storage(local.clone()),
                    None if e.is_connect() || e.is_builder() => StreamingError::Unreachable(
                        Unreachable::new(&TransportError::Unreachable(e)),
                    ),
                    None => network(error_chain(&e)),
                })
            }
            Ok(Ok(response)) => response,
        };
        progress.touch();
        let status = response.status();
        if !status.is_success() {
            let body = guarded(error_body(response), cancel.as_mut(), &progress, stall)
                .await
                .map_err(|i| interrupted(i, &failure))?;
            return Err(network(format!("HTTP {status}: {body}")));
        }

        // The answer: keep-alive bytes while the peer installs, then the tagged result.
        let mut answer = Vec::new();
        loop {
            let chunk = guarded(response.chunk(), cancel.as_mut(), &progress, stall)
                .await
                .map_err(|i| interrupted(i, &failure))?
                .map_err(|e| network(format!("reading the answer: {}", error_chain(&e))))?;
            let Some(chunk) = chunk else { break };
            progress.touch();
            let mut chunk = &chunk[..];
            if answer.is_empty() {
                while let [ANSWER_KEEPALIVE, rest @ ..] = chunk {
                    chunk = rest;
                }
            }
            if answer.len() + chunk.len() > MAX_SNAPSHOT_ANSWER {
                return Err(network(format!(
                    "the answer is longer than {MAX_SNAPSHOT_ANSWER} bytes"
                )));
            }
            answer.extend_from_slice(chunk);
        }
        match decode_snapshot_answer(&answer) {
            Ok(Ok(resp)) => {
                let secs = started.elapsed().as_secs_f64();
                tracing::info!(
                    target_node = self.target,
                    snapshot = %described,
                    size,
                    secs,
                    mib_per_sec = size as f64 / (1 << 20) as f64 / secs.max(1e-6),
                    "snapshot sent and installed"
                );
                Ok(resp)
            }
            Ok(Err(fatal)) => Err(StreamingError::Unreachable(self.remote_failure(fatal))),
            Err(e) => Err(network(e)),
        }
    }
}

/// The receiver's final answer, keep-alives already stripped.
#[allow(clippy::type_complexity)]
fn decode_snapshot_answer(
    answer: &[u8],
) -> Result<Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>>, String> {
    match answer {
        [ANSWER_RESULT, rest @ ..] => postcard::from_bytes(rest)
            .map_err(|e| format!("undecodable answer after the snapshot: {e}")),
        [ANSWER_FAILED, rest @ ..] => Err(format!(
            "the peer could not install the snapshot: {}",
            String::from_utf8_lossy(rest)
        )),
        [] => Err("the peer closed the connection before answering".to_string()),
        [tag, ..] => Err(format!(
            "unexpected answer tag {tag:#04x} after the snapshot"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshot transfer: receiver
// ---------------------------------------------------------------------------------------------

/// A file being received, removed when dropped unless [`PartialFile::keep`] was called: on
/// every refusal, error, and when the handler is dropped because the sender went away.
struct PartialFile {
    path: PathBuf,
    armed: bool,
}

impl PartialFile {
    fn new(path: PathBuf) -> Self {
        PartialFile { path, armed: true }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// The file is someone else's to remove from now on.
    fn keep(mut self) -> PathBuf {
        self.armed = false;
        std::mem::take(&mut self.path)
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if self.armed {
            remove_received(&self.path);
        }
    }
}

/// Removes a received snapshot file nobody will use; gone already is fine.
fn remove_received(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            file = %path.display(),
            error = %e,
            "cannot remove a received snapshot file; it is removed at the next start"
        ),
    }
}

/// Why a snapshot body was refused.
#[derive(Debug, thiserror::Error)]
enum ReceiveError {
    /// The body is not a well-formed snapshot frame.
    #[error("refused snapshot body: {0}")]
    Framing(String),
    /// The body could not be read (the sender went away mid-transfer).
    #[error("reading the snapshot body failed: {0}")]
    Body(String),
    #[error("no snapshot bytes arrived for {0:?}; giving up on the sender")]
    Stalled(Duration),
    #[error("cannot write the received snapshot to {}: {error}", .path.display())]
    Disk { path: PathBuf, error: io::Error },
}

impl ReceiveError {
    fn status(&self) -> StatusCode {
        match self {
            ReceiveError::Framing(_) | ReceiveError::Body(_) => StatusCode::BAD_REQUEST,
            ReceiveError::Stalled(_) => StatusCode::REQUEST_TIMEOUT,
            ReceiveError::Disk { error, .. } if error.kind() == io::ErrorKind::StorageFull => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            ReceiveError::Disk { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A request body read as a byte stream, with a stall limit.
struct Incoming<S> {
    stream: S,
    pending: Bytes,
    stall: Duration,
}

impl<S, E> Incoming<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    /// The next non-empty bytes, or `None` at the end of the body.
    async fn next(&mut self) -> Result<Option<Bytes>, ReceiveError> {
        if !self.pending.is_empty() {
            return Ok(Some(std::mem::take(&mut self.pending)));
        }
        loop {
            match tokio::time::timeout(self.stall, self.stream.next()).await {
                Err(_) => return Err(ReceiveError::Stalled(self.stall)),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(ReceiveError::Body(e.to_string())),
                Ok(Some(Ok(b))) if b.is_empty() => continue,
                Ok(Some(Ok(b))) => return Ok(Some(b)),
            }
        }
    }

    /// Exactly `n` bytes (`n` is small: prefix, header, trailer).
    async fn read_exact(&mut self, n: usize, what: &str) -> Result<Vec<u8>, ReceiveError> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some(mut chunk) = self.next().await? else {
                return Err(ReceiveError::Framing(format!(
                    "the body ended inside {what} ({} of {n} bytes)",
                    out.len()
                )));
            };
            let take = (n - out.len()).min(chunk.len());
            self.pending = chunk.split_off(take);
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// Reads a snapshot frame from `body` into a new file at `partial`'s path: checks magic,
/// version, length and checksum, and writes everything out (not yet fsync'd). On error the
/// caller drops `partial`, which removes the file.
async fn receive_snapshot<S, E>(
    body: S,
    partial: &PartialFile,
    stall: Duration,
) -> Result<(SnapshotHeader, tokio::fs::File), ReceiveError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let mut body = Incoming {
        stream: body,
        pending: Bytes::new(),
        stall,
    };
    let prefix = body
        .read_exact(SNAPSHOT_PREFIX_LEN, "the frame prefix")
        .await?;
    if prefix[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
        return Err(ReceiveError::Framing(
            "not a raftlite snapshot stream (bad magic); is the sender a raftlite node?".into(),
        ));
    }
    let version = prefix[SNAPSHOT_MAGIC.len()];
    if version != SNAPSHOT_VERSION {
        return Err(ReceiveError::Framing(format!(
            "snapshot stream version {version}, this node reads version {SNAPSHOT_VERSION}: \
             run the same raftlite version on every node"
        )));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&prefix[SNAPSHOT_MAGIC.len() + 1..]);
    let header_len = u32::from_le_bytes(len) as usize;
    if header_len > MAX_SNAPSHOT_HEADER {
        return Err(ReceiveError::Framing(format!(
            "snapshot header of {header_len} bytes, more than the {MAX_SNAPSHOT_HEADER} accepted"
        )));
    }
    let header = body.read_exact(header_len, "the snapshot header").await?;
    let header: SnapshotHeader = match postcard::take_from_bytes(&header) {
        Ok((h, [])) => h,
        Ok((_, rest)) => {
            return Err(ReceiveError::Framing(format!(
                "{} stray bytes after the snapshot header",
                rest.len()
            )))
        }
        Err(e) => {
            return Err(ReceiveError::Framing(format!(
                "undecodable snapshot header: {e}"
            )))
        }
    };

    let disk = |error: io::Error| ReceiveError::Disk {
        path: partial.path().to_path_buf(),
        error,
    };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(partial.path())
        .await
        .map_err(disk)?;
    raftlite_store::failpoint::hit("snapshot-receiving");
    let mut buf = Vec::with_capacity(SNAPSHOT_WRITE_BUFFER);
    let mut crc = crc32fast::Hasher::new();
    let mut remaining = header.size;
    while remaining > 0 {
        let Some(mut chunk) = body.next().await? else {
            return Err(ReceiveError::Framing(format!(
                "the body ended after {} of the snapshot's {} bytes",
                header.size - remaining,
                header.size
            )));
        };
        if chunk.len() as u64 > remaining {
            // `remaining` < chunk.len() fits in usize.
            body.pending = chunk.split_off(remaining as usize);
        }
        crc.update(&chunk);
        remaining -= chunk.len() as u64;
        buf.extend_from_slice(&chunk);
        if buf.len() >= SNAPSHOT_WRITE_BUFFER {
            file.write_all(&buf).await.map_err(disk)?;
            buf.clear();
        }
    }
    let mut trailer = [0u8; 4];
    trailer.copy_from_slice(&body.read_exact(4, "the checksum trailer").await?);
    let (sent, got) = (u32::from_le_bytes(trailer), crc.finalize());
    if sent != got {
        return Err(ReceiveError::Framing(format!(
            "checksum mismatch (sent {sent:08x}, received bytes hash to {got:08x}): \
             the snapshot was damaged in transit"
        )));
    }
    if body.next().await?.is_some() {
        return Err(ReceiveError::Framing(
            "unexpected bytes after the snapshot's checksum".into(),
        ));
    }
    file.write_all(&buf).await.map_err(disk)?;
    // Surfaces the error of a write still in flight.
    file.flush().await.map_err(disk)?;
    Ok((header, file))
}

/// What the snapshot route hands a received snapshot to: the node's [`Raft`] (tests use a
/// stand-in, as a real one needs a whole node).
trait SnapshotInstaller: Clone + Send + Sync + 'static {
    fn install(
        &self,
        vote: Vote,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>>> + Send;
}

impl SnapshotInstaller for Raft {
    fn install(
        &self,
        vote: Vote,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>>> + Send {
        self.install_full_snapshot(vote, snapshot)
    }
}

#[derive(Clone)]
struct SnapshotRoute<I> {
    installer: I,
    snapshots: SnapshotDir,
    keepalive: Duration,
}

/// The [`SNAPSHOT_PATH`] route alone, without a body limit.
fn snapshot_routes<I: SnapshotInstaller>(
    installer: I,
    snapshots: SnapshotDir,
    keepalive: Duration,
) -> Router {
    Router::new()
        .route(SNAPSHOT_PATH, post(handle_snapshot::<I>))
        .with_state(SnapshotRoute {
            installer,
            snapshots,
            keepalive,
        })
}

async fn handle_snapshot<I: SnapshotInstaller>(
    State(route): State<SnapshotRoute<I>>,
    body: Body,
) -> Response {
    let partial = PartialFile::new(route.snapshots.receiving_path());
    let started = Instant::now();
    let (head, file) =
        match receive_snapshot(body.into_data_stream(), &partial, SNAPSHOT_RECEIVE_STALL).await {
            Ok(received) => received,
            Err(e) => {
                tracing::warn!(error = %e, "snapshot transfer refused");
                return (e.status(), e.to_string()).into_response();
            }
        };
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        snapshot = %head.meta,
        size = head.size,
        secs,
        mib_per_sec = head.size as f64 / (1 << 20) as f64 / secs.max(1e-6),
        "snapshot received; installing"
    );
    // The install runs apart from this handler: if the sender goes away, the handler is
    // dropped, but the snapshot is already Raft's and its file must not be pulled from under it.
    let SnapshotRoute {
        installer,
        keepalive,
        ..
    } = route;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let answer = install_received(installer, head, file, partial).await;
        // The sender may have gone; the install happened all the same.
        let _ = tx.send(answer);
    });
    (
        [(header::CONTENT_TYPE, OCTET_STREAM)],
        Body::from_stream(answer_stream(rx, keepalive)),
    )
        .into_response()
}

/// fsyncs the received file, hands it to the installer and gives the tagged final answer.
async fn install_received<I: SnapshotInstaller>(
    installer: I,
    header: SnapshotHeader,
    file: tokio::fs::File,
    partial: PartialFile,
) -> Vec<u8> {
    if let Err(e) = file.sync_all().await {
        return failed_answer(format!(
            "cannot fsync the received snapshot {}: {e}",
            partial.path().display()
        ));
    }
    drop(file);
    let snapshot = match SnapshotFile::open(partial.path()) {
        Ok(s) => s,
        Err(e) => {
            return failed_answer(format!(
                "cannot reopen the received snapshot {}: {e}",
                partial.path().display()
            ))
        }
    };
    // From here the state machine owns the file: it renames it into place on install.
    let path = partial.keep();
    let result = installer
        .install(
            header.vote,
            Snapshot {
                meta: header.meta,
                snapshot,
            },
        )
        .await;
    // Raft answers only once the snapshot is installed (the file renamed away), or at once when
    // it is not needed (older than what is committed here, or from a stale leader): then the
    // file is left over. After a `Fatal` the state machine may still hold it; start-up cleans up.
    if result.is_ok() {
        remove_received(&path);
    }
    match postcard::to_allocvec(&result) {
        Ok(encoded) => {
            let mut answer = Vec::with_capacity(1 + encoded.len());
            answer.push(ANSWER_RESULT);
            answer.extend_from_slice(&encoded);
            answer
        }
        Err(e) => failed_answer(format!("cannot encode the install result: {e}")),
    }
}

fn failed_answer(message: String) -> Vec<u8> {
    tracing::warn!(error = %message, "received snapshot not installed");
    let mut answer = Vec::with_capacity(1 + message.len());
    answer.push(ANSWER_FAILED);
    answer.extend_from_slice(message.as_bytes());
    answer
}

/// Keep-alive bytes every `keepalive` until the final answer arrives on `rx`, then that.
fn answer_stream(
    rx: tokio::sync::oneshot::Receiver<Vec<u8>>,
    keepalive: Duration,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static {
    let mut ticks = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures::stream::unfold(Some((rx, ticks)), |state| async move {
        let (mut rx, mut ticks) = state?;
        tokio::select! {
            answer = &mut rx => {
                let answer = answer.unwrap_or_else(|_| {
                    failed_answer("the snapshot install task ended without an answer".into())
                });
                Some((Ok(Bytes::from(answer)), None))
            }
            _ = ticks.tick() => {
                Some((Ok(Bytes::from_static(&[ANSWER_KEEPALIVE])), Some((rx, ticks))))
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// The Raft RPC endpoints (`POST` [`APPEND_PATH`], [`VOTE_PATH`], [`PRE_VOTE_PATH`],
/// [`TRANSFER_LEADER_PATH`] with a [`RAFT_BODY_LIMIT`] request body limit, and
/// [`SNAPSHOT_PATH`] without one). Received snapshots are written into `snapshots`. Merge it
/// into the node's Raft listener.
pub fn raft_router(raft: Raft, snapshots: SnapshotDir) -> Router {
    let rpc = Router::new()
        .route(APPEND_PATH, post(handle_append))
        .route(VOTE_PATH, post(handle_vote))
        .route(PRE_VOTE_PATH, post(handle_pre_vote))
        .route(TRANSFER_LEADER_PATH, post(handle_transfer_leader))
        .with_state(raft.clone());
    with_body_limits(
        rpc,
        snapshot_routes(raft, snapshots, SNAPSHOT_KEEPALIVE),
        RAFT_BODY_LIMIT,
    )
}

/// `rpc`'s routes limited to `limit` body bytes, merged with the unlimited `snapshot` route.
fn with_body_limits(rpc: Router, snapshot: Router, limit: usize) -> Router {
    // The snapshot handler streams its body (axum's `Body` extractor ignores the limit anyway);
    // disabling it says that the route is unlimited on purpose.
    rpc.layer(DefaultBodyLimit::max(limit))
        .merge(snapshot.layer(DefaultBodyLimit::disable()))
}

async fn handle_append(State(raft): State<Raft>, body: Bytes) -> Response {
    match decode_request::<AppendEntriesRequest<TypeConfig>>(&body, APPEND_PATH) {
        Ok(req) => postcard_response(&raft.append_entries(req).await),
        Err(bad) => bad.into_response(),
    }
}

async fn handle_vote(State(raft): State<Raft>, body: Bytes) -> Response {
    match decode_request::<VoteRequest<TypeConfig>>(&body, VOTE_PATH) {
        Ok(req) => postcard_response(&raft.vote(req).await),
        Err(bad) => bad.into_response(),
    }
}

async fn handle_pre_vote(State(raft): State<Raft>, body: Bytes) -> Response {
    match decode_request::<VoteRequest<TypeConfig>>(&body, PRE_VOTE_PATH) {
        Ok(req) => postcard_response(&raft.pre_vote(req).await),
        Err(bad) => bad.into_response(),
    }
}

async fn handle_transfer_leader(State(raft): State<Raft>, body: Bytes) -> Response {
    match decode_request::<TransferLeaderRequest<TypeConfig>>(&body, TRANSFER_LEADER_PATH) {
        Ok(req) => postcard_response(&raft.handle_transfer_leader(req).await),
        Err(bad) => bad.into_response(),
    }
}

/// Decodes a postcard request body, or gives the 400 answer.
fn decode_request<T: DeserializeOwned>(body: &[u8], path: &str) -> Result<T, (StatusCode, String)> {
    postcard::from_bytes(body).map_err(|e| {
        tracing::warn!(path, len = body.len(), error = %e, "undecodable raft RPC body");
        (
            StatusCode::BAD_REQUEST,
            format!("cannot decode {path} request body: {e}"),
        )
    })
}

/// A postcard-encoded answer, or a 500 naming why it could not be encoded.
pub(crate) fn postcard_response<T: Serialize>(value: &T) -> Response {
    match postcard::to_allocvec(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, OCTET_STREAM)], bytes).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode raft RPC response");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode response: {e}"),
            )
                .into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::Read;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    use openraft::raft::TransferLeaderError;
    use raftlite_store::{Statement, TimelineRecord, Value, WriteRequest};

    use super::*;
    use crate::types::{
        Command, CommittedLeaderId, EntryPayload, LogId, Membership, StoredMembership,
    };

    fn log_id(term: u64, node: NodeId, index: u64) -> LogId {
        LogId::new(
            CommittedLeaderId {
                term,
                node_id: node,
            },
            index,
        )
    }

    fn nodes() -> BTreeMap<NodeId, NodeAddr> {
        (1..=3)
            .map(|i| {
                (
                    i,
                    NodeAddr {
                        raft_addr: format!("127.0.0.1:{}", 7000 + i),
                        api_addr: format!("127.0.0.1:{}", 8000 + i),
                    },
                )
            })
            .collect()
    }

    fn membership() -> Membership {
        Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes()).expect("valid membership")
    }

    fn snapshot_meta() -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(log_id(3, 1, 500)),
            last_membership: StoredMembership::new(Some(log_id(1, 1, 2)), membership()),
        }
    }

    #[test]
    fn an_append_batch_is_cut_to_its_byte_budget_but_never_to_nothing() {
        let chunk = |index: u64, bytes: usize| Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Normal(Command::RestoreChunk {
                restore_id: "r".into(),
                offset: 0,
                data: vec![7; bytes],
            }),
        };
        let entries: Vec<Entry> = (1..=16).map(|i| chunk(i, 1 << 20)).collect();
        // Each entry is 1 MiB plus a few bytes of framing: 7 fit in 8 MiB, not 8.
        assert_eq!(entries_within(&entries, APPEND_BATCH_BYTES), 7);
        assert_eq!(entries_within(&entries[..3], APPEND_BATCH_BYTES), 3);
        assert_eq!(entries_within(&[chunk(1, 20 << 20)], APPEND_BATCH_BYTES), 1);
        assert_eq!(entries_within(&[], APPEND_BATCH_BYTES), 0);
    }

    fn round_trip<T: Serialize + DeserializeOwned>(v: &T) -> T {
        let bytes = postcard::to_allocvec(v).expect("encode");
        postcard::from_bytes(&bytes).expect("decode")
    }

    #[test]
    fn append_entries_request_round_trips() {
        let entries: Vec<Entry> = vec![
            Entry {
                log_id: log_id(1, 1, 1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(1, 1, 2),
                payload: EntryPayload::Membership(membership()),
            },
            Entry {
                log_id: log_id(1, 1, 3),
                payload: EntryPayload::Normal(Command::InitTimeline(TimelineRecord {
                    id: "00ff".into(),
                    counter: 1,
                    parent: None,
                    parent_index: Some(7),
                    reason: "bootstrap".into(),
                    at_unix_ms: 1_700_000_000_000,
                })),
            },
            Entry {
                log_id: log_id(2, 3, 4),
                payload: EntryPayload::Normal(Command::Write {
                    requests: vec![WriteRequest {
                        statements: vec![
                            Statement::new("CREATE TABLE t (a, b)"),
                            Statement::with_params(
                                "INSERT INTO t VALUES (?, ?)",
                                vec![
                                    Value::Integer(-5),
                                    Value::Real(1.5),
                                    Value::Text("x".into()),
                                    Value::Blob(vec![0, 1, 255]),
                                    Value::Null,
                                ],
                            ),
                        ],
                        transaction: true,
                    }],
                    at_unix_ms: 42,
                    seed: u64::MAX,
                }),
            },
        ];
        let req = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(2, 3),
            prev_log_id: Some(log_id(1, 1, 0)),
            entries: entries.clone(),
            leader_commit: Some(log_id(2, 3, 3)),
        };
        let back = round_trip(&req);
        assert_eq!(back.vote, req.vote);
        assert_eq!(back.prev_log_id, req.prev_log_id);
        assert_eq!(back.leader_commit, req.leader_commit);
        assert_eq!(back.entries, entries);

        let empty = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new(1, 1),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        };
        let back = round_trip(&empty);
        assert_eq!(back.vote, empty.vote);
        assert!(back.prev_log_id.is_none() && back.entries.is_empty());

        // Responses, including remote errors, survive too.
        for r in [
            Ok(AppendEntriesResponse::Success),
            Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(2, 3, 3)))),
            Ok(AppendEntriesResponse::Conflict),
            Ok(AppendEntriesResponse::HigherVote(Vote::new(9, 2))),
            Err(RaftError::Fatal(Fatal::Stopped)),
        ] {
            let r: Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>> = r;
            assert_eq!(round_trip(&r), r);
        }
    }

    #[test]
    fn vote_request_round_trips() {
        let req = VoteRequest::<TypeConfig>::new(Vote::new(5, 2), Some(log_id(4, 1, 100)));
        assert_eq!(round_trip(&req), req);
        let mut req = VoteRequest::<TypeConfig>::new(Vote::new(1, 1), None);
        req.leadership_transfer = true;
        assert_eq!(round_trip(&req), req);

        let resp: Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>> = Ok(VoteResponse::new(
            Vote::new(5, 2),
            Some(log_id(4, 1, 100)),
            true,
        ));
        assert_eq!(round_trip(&resp), resp);
    }

    #[test]
    fn transfer_leader_messages_round_trip() {
        let req = TransferLeaderRequest::<TypeConfig>::new(
            Vote::new_committed(4, 1),
            3,
            Some(log_id(4, 1, 9)),
        );
        assert_eq!(round_trip(&req), req);
        for r in [
            Ok(Ok(())),
            Ok(Err(TransferLeaderError::LogNotFlushed {
                expected: Some(log_id(4, 1, 9)),
                actual: Some(log_id(4, 1, 7)),
            })),
            Err(Fatal::Stopped),
        ] {
            let r: Result<TransferLeaderResponse<TypeConfig>, Fatal<TypeConfig>> = r;
            assert_eq!(round_trip(&r), r);
        }
    }

    #[test]
    fn server_rejects_undecodable_body_with_400() {
        let (status, msg) = decode_request::<VoteRequest<TypeConfig>>(&[0xff; 2], VOTE_PATH)
            .expect_err("garbage must not decode");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(msg.contains(VOTE_PATH), "{msg}");
        let ok = postcard::to_allocvec(&VoteRequest::<TypeConfig>::new(Vote::new(1, 1), None))
            .expect("encode");
        assert!(decode_request::<VoteRequest<TypeConfig>>(&ok, VOTE_PATH).is_ok());
    }

    #[test]
    fn snapshot_answers_decode() {
        let ok: Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>> =
            Ok(SnapshotResponse::new(Vote::new_committed(3, 1)));
        let mut answer = vec![ANSWER_RESULT];
        answer.extend(postcard::to_allocvec(&ok).expect("encode"));
        assert_eq!(decode_snapshot_answer(&answer), Ok(ok));

        let err = decode_snapshot_answer(b"!disk full").expect_err("failure");
        assert!(err.contains("disk full"), "{err}");
        let err = decode_snapshot_answer(b"").expect_err("empty");
        assert!(err.contains("before answering"), "{err}");
        let err = decode_snapshot_answer(b"?").expect_err("bad tag");
        assert!(err.contains("0x3f"), "{err}");
        assert!(decode_snapshot_answer(&[ANSWER_RESULT, 0xff, 0xff]).is_err());
    }

    // --- post_postcard against a tiny echo server ---

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ping {
        n: u64,
        s: String,
    }

    async fn serve(router: Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        addr
    }

    async fn echo_server() -> SocketAddr {
        let router = Router::new()
            .route("/echo", post(|body: Bytes| async move { body }))
            .route(
                "/fail",
                post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
            )
            .route("/garbage", post(|| async { vec![0xffu8; 3] }));
        serve(router).await
    }

    /// An address nothing listens on (bound, then released).
    async fn closed_addr() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        drop(listener);
        addr
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn post_postcard_success() {
        let addr = echo_server().await;
        let client = raft_client();
        let ping = Ping {
            n: 7,
            s: "hello".into(),
        };
        let got: Ping = post_postcard(&client, &format!("http://{addr}/echo"), &ping, T)
            .await
            .expect("echo");
        assert_eq!(got, ping);
    }

    #[tokio::test]
    async fn post_postcard_http_error() {
        let addr = echo_server().await;
        let client = raft_client();
        let err = post_postcard::<_, Ping>(&client, &format!("http://{addr}/fail"), &1u8, T)
            .await
            .expect_err("500");
        match err {
            TransportError::Http { status, ref body } => {
                assert_eq!(status, reqwest::StatusCode::INTERNAL_SERVER_ERROR);
                assert_eq!(body, "boom");
            }
            other => panic!("expected Http, got {other:?}"),
        }
        // Unknown route: 404 is an Http error too.
        let err = post_postcard::<_, Ping>(&client, &format!("http://{addr}/nope"), &1u8, T)
            .await
            .expect_err("404");
        assert_eq!(err.status(), Some(reqwest::StatusCode::NOT_FOUND));
    }

    #[tokio::test]
    async fn post_postcard_decode_error() {
        let addr = echo_server().await;
        let client = raft_client();
        let err = post_postcard::<_, Ping>(&client, &format!("http://{addr}/garbage"), &1u8, T)
            .await
            .expect_err("garbage");
        assert!(matches!(err, TransportError::Decode(_)), "{err:?}");
    }

    #[tokio::test]
    async fn post_postcard_unreachable() {
        let addr = closed_addr().await;
        let client = raft_client();
        let err = post_postcard::<_, Ping>(&client, &format!("http://{addr}/echo"), &1u8, T)
            .await
            .expect_err("closed port");
        assert!(matches!(err, TransportError::Unreachable(_)), "{err:?}");
        // The cause is in the message, not just reqwest's generic "error sending request".
        assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
    }

    #[tokio::test]
    async fn post_postcard_timeout() {
        let router = Router::new().route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
        let addr = serve(router).await;
        let client = raft_client();
        let err = post_postcard::<_, Ping>(
            &client,
            &format!("http://{addr}/slow"),
            &1u8,
            Duration::from_millis(100),
        )
        .await
        .expect_err("timeout");
        assert!(matches!(err, TransportError::Timeout { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn factory_scheme_is_used_in_urls() {
        let peer = NodeAddr {
            raft_addr: "10.0.0.9:4002".into(),
            api_addr: String::new(),
        };
        let net = HttpNetworkFactory::new().new_client(2, &peer).await;
        assert_eq!(net.url(VOTE_PATH), "http://10.0.0.9:4002/raft/vote");
        let net = HttpNetworkFactory::with_client_and_scheme(raft_client(), "https")
            .new_client(2, &peer)
            .await;
        assert_eq!(net.url(APPEND_PATH), "https://10.0.0.9:4002/raft/append");
    }

    // --- HttpNetwork error mapping ---

    async fn network_to(addr: SocketAddr) -> HttpNetwork {
        let mut factory = HttpNetworkFactory::new();
        factory
            .new_client(
                2,
                &NodeAddr {
                    raft_addr: addr.to_string(),
                    api_addr: String::new(),
                },
            )
            .await
    }

    fn option() -> RPCOption {
        RPCOption::new(Duration::from_secs(2))
    }

    #[tokio::test]
    async fn vote_connection_refused_is_unreachable() {
        let mut net = network_to(closed_addr().await).await;
        let err = net
            .vote(VoteRequest::new(Vote::new(1, 1), None), option())
            .await
            .expect_err("closed port");
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
        let err = net
            .pre_vote(VoteRequest::new(Vote::new(1, 1), None), option())
            .await
            .expect_err("closed port: a pre-vote is never granted by default");
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    }

    /// A fake peer speaking the wire format, standing in for `raft_router` (which needs a real
    /// `Raft`): vote grants, pre-vote refuses, append answers with a remote Fatal error,
    /// transfer-leader accepts.
    async fn fake_peer() -> SocketAddr {
        let router = Router::new()
            .route(
                VOTE_PATH,
                post(|body: Bytes| async move {
                    let req: VoteRequest<TypeConfig> = match postcard::from_bytes(&body) {
                        Ok(r) => r,
                        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                    };
                    let resp: Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>> =
                        Ok(VoteResponse::new(req.vote, None, true));
                    postcard_response(&resp)
                }),
            )
            .route(
                PRE_VOTE_PATH,
                post(|body: Bytes| async move {
                    let req: VoteRequest<TypeConfig> = match postcard::from_bytes(&body) {
                        Ok(r) => r,
                        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                    };
                    let resp: Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>> =
                        Ok(VoteResponse::new(req.vote, Some(log_id(1, 1, 9)), false));
                    postcard_response(&resp)
                }),
            )
            .route(
                APPEND_PATH,
                post(|| async {
                    let resp: Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>> =
                        Err(RaftError::Fatal(Fatal::Stopped));
                    postcard_response(&resp)
                }),
            )
            .route(
                TRANSFER_LEADER_PATH,
                post(|body: Bytes| async move {
                    if postcard::from_bytes::<TransferLeaderRequest<TypeConfig>>(&body).is_err() {
                        return (StatusCode::BAD_REQUEST, "bad").into_response();
                    }
                    let resp: Result<TransferLeaderResponse<TypeConfig>, Fatal<TypeConfig>> =
                        Ok(Ok(()));
                    postcard_response(&resp)
                }),
            )
            .layer(DefaultBodyLimit::max(1024));
        serve(router).await
    }

    #[tokio::test]
    async fn network_maps_responses() {
        let addr = fake_peer().await;
        let mut net = network_to(addr).await;

        let resp = net
            .vote(VoteRequest::new(Vote::new(4, 1), None), option())
            .await
            .expect("vote");
        assert!(resp.vote_granted);
        assert_eq!(resp.vote, Vote::new(4, 1));

        // The pre-vote goes to its own route (the fake refuses there, unlike the default
        // implementation, which grants without asking).
        let resp = net
            .pre_vote(VoteRequest::new(Vote::new(5, 1), None), option())
            .await
            .expect("pre-vote");
        assert!(!resp.vote_granted);
        assert_eq!(resp.last_log_id, Some(log_id(1, 1, 9)));

        // A peer whose Raft has stopped is treated as down.
        let err = net
            .append_entries(
                AppendEntriesRequest {
                    vote: Vote::new_committed(4, 1),
                    prev_log_id: None,
                    entries: vec![],
                    leader_commit: None,
                },
                option(),
            )
            .await
            .expect_err("remote fatal");
        match err {
            RPCError::Unreachable(u) => {
                let msg = u.to_string();
                assert!(msg.contains("remote peer 2"), "{msg}");
                assert!(msg.contains("raft stopped"), "{msg}");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }

        let resp = net
            .transfer_leader(
                TransferLeaderRequest::new(Vote::new_committed(4, 1), 2, None),
                option(),
            )
            .await
            .expect("transfer leader");
        assert_eq!(resp, Ok(()));
    }

    fn write_entry(index: u64, bytes: usize) -> Entry {
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Normal(Command::Write {
                requests: vec![WriteRequest {
                    statements: vec![Statement::new("x".repeat(bytes))],
                    transaction: false,
                }],
                at_unix_ms: 0,
                seed: 0,
            }),
        }
    }

    /// A peer whose append route has a 1500-byte body limit and counts the batches it accepts.
    async fn limited_peer(accepted: Arc<AtomicUsize>) -> SocketAddr {
        let router = Router::new()
            .route(
                APPEND_PATH,
                post(move |body: Bytes| {
                    let accepted = accepted.clone();
                    async move {
                        let req: AppendEntriesRequest<TypeConfig> =
                            match postcard::from_bytes(&body) {
                                Ok(r) => r,
                                Err(e) => {
                                    return (StatusCode::BAD_REQUEST, e.to_string()).into_response()
                                }
                            };
                        accepted.fetch_add(req.entries.len(), Ordering::SeqCst);
                        let resp: Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>> =
                            Ok(AppendEntriesResponse::Success);
                        postcard_response(&resp)
                    }
                }),
            )
            .layer(DefaultBodyLimit::max(1500));
        serve(router).await
    }

    fn append_of(entries: Vec<Entry>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries,
            leader_commit: None,
        }
    }

    #[tokio::test]
    async fn append_over_the_peers_body_limit_is_halved_until_it_fits() {
        let accepted = Arc::new(AtomicUsize::new(0));
        let mut net = network_to(limited_peer(accepted.clone()).await).await;

        // 4 entries of ~1 KiB: 4 and 2 are refused (413), 1 is accepted: a partial success.
        let entries: Vec<Entry> = (1..=4).map(|i| write_entry(i, 1000)).collect();
        let resp = net
            .append_entries(append_of(entries), option())
            .await
            .expect("one entry fits");
        assert_eq!(
            resp,
            AppendEntriesResponse::PartialSuccess(Some(log_id(1, 1, 1)))
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        // A batch that fits is a plain success.
        let entries: Vec<Entry> = (1..=2).map(|i| write_entry(i, 100)).collect();
        let resp = net
            .append_entries(append_of(entries), option())
            .await
            .expect("fits");
        assert_eq!(resp, AppendEntriesResponse::Success);
        assert_eq!(accepted.load(Ordering::SeqCst), 3);

        // One entry over the limit cannot be cut: a network error, retried later.
        let err = net
            .append_entries(append_of(vec![write_entry(1, 4000)]), option())
            .await
            .expect_err("too large");
        assert!(matches!(err, RPCError::Network(_)), "{err:?}");
        assert!(err.to_string().contains("413"), "{err}");
    }

    // --- Snapshot transfer ---

    /// Deterministic bytes that do not compress to a pattern a bug could hide in.
    fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn snapshot_file(dir: &Path, data: &[u8]) -> SnapshotFile {
        let path = dir.join("source.sqlite");
        std::fs::write(&path, data).expect("write source");
        SnapshotFile::open(&path).expect("open source")
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[derive(Clone, Copy, Debug)]
    enum FakeOutcome {
        /// Renames the file to `installed.sqlite`, as the state machine renames it into place.
        Install,
        /// Answers without touching the file, as Raft does for a snapshot it does not need.
        Ignore,
        Fatal,
    }

    /// What the fake installer was given.
    #[derive(Debug)]
    struct Seen {
        vote: Vote,
        meta: SnapshotMeta,
        path: PathBuf,
        data: Vec<u8>,
    }

    /// Stands in for `Raft` behind the snapshot route.
    #[derive(Clone)]
    struct FakeInstaller {
        outcome: FakeOutcome,
        /// How long installing takes.
        takes: Duration,
        seen: Arc<Mutex<Option<Seen>>>,
    }

    impl FakeInstaller {
        fn new(outcome: FakeOutcome) -> Self {
            FakeInstaller {
                outcome,
                takes: Duration::ZERO,
                seen: Arc::new(Mutex::new(None)),
            }
        }

        fn seen(&self) -> Seen {
            self.seen
                .lock()
                .expect("lock")
                .take()
                .expect("the installer was called")
        }
    }

    impl SnapshotInstaller for FakeInstaller {
        fn install(
            &self,
            vote: Vote,
            snapshot: Snapshot,
        ) -> impl Future<Output = Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>>> + Send
        {
            let this = self.clone();
            async move {
                let Snapshot { meta, snapshot } = snapshot;
                let SnapshotFile { mut file, path } = snapshot;
                let mut data = Vec::new();
                file.read_to_end(&mut data).expect("read received file");
                *this.seen.lock().expect("lock") = Some(Seen {
                    vote,
                    meta,
                    path: path.clone(),
                    data,
                });
                if !this.takes.is_zero() {
                    // Plays a slow install (quick_check and copy of a big database).
                    tokio::time::sleep(this.takes).await;
                }
                match this.outcome {
                    FakeOutcome::Install => {
                        std::fs::rename(&path, path.with_file_name("installed.sqlite"))
                            .expect("rename into place");
                        Ok(SnapshotResponse::new(vote))
                    }
                    FakeOutcome::Ignore => Ok(SnapshotResponse::new(vote)),
                    FakeOutcome::Fatal => Err(Fatal::Stopped),
                }
            }
        }
    }

    /// A peer with only the snapshot route, receiving into a fresh snapshots directory.
    async fn snapshot_peer(
        installer: FakeInstaller,
        keepalive: Duration,
    ) -> (SocketAddr, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = SnapshotDir::open(dir.path()).expect("snapshot dir");
        let addr = serve(snapshot_routes(installer, snapshots, keepalive)).await;
        (addr, dir)
    }

    fn never_cancelled() -> impl Future<Output = ReplicationClosed> + Send + 'static {
        std::future::pending()
    }

    #[tokio::test]
    async fn a_multi_mib_snapshot_is_streamed_into_the_snapshots_dir_and_installed() {
        let installer = FakeInstaller::new(FakeOutcome::Install);
        let (addr, received) = snapshot_peer(installer.clone(), SNAPSHOT_KEEPALIVE).await;
        let source = tempfile::tempdir().expect("tempdir");
        // Not a multiple of the chunk or write-buffer sizes.
        let data = test_bytes(24 * 1024 * 1024 + 12_345, 7);
        let mut net = network_to(addr).await;
        let vote = Vote::new_committed(3, 1);

        let started = std::time::Instant::now();
        let resp = net
            .full_snapshot(
                vote,
                Snapshot {
                    meta: snapshot_meta(),
                    snapshot: snapshot_file(source.path(), &data),
                },
                never_cancelled(),
                option(),
            )
            .await
            .expect("snapshot sent");
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "streamed {} bytes in {secs:.3}s ({:.0} MiB/s)",
            data.len(),
            data.len() as f64 / (1 << 20) as f64 / secs
        );
        assert_eq!(resp, SnapshotResponse::new(vote));

        let seen = installer.seen();
        assert_eq!(seen.vote, vote);
        assert_eq!(seen.meta, snapshot_meta());
        assert!(
            seen.data == data,
            "received bytes differ from the sent file"
        );
        // Received at a path the state machine recognises as its own (renamed, not copied).
        assert_eq!(seen.path.parent(), Some(received.path()));
        let name = seen
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name");
        assert!(
            name.starts_with("receiving") && name.ends_with(".tmp"),
            "{name}"
        );
        assert_eq!(
            files_in(received.path()),
            vec!["installed.sqlite".to_string()]
        );
    }

    #[tokio::test]
    async fn a_snapshot_raft_does_not_install_leaves_no_file() {
        let installer = FakeInstaller::new(FakeOutcome::Ignore);
        let (addr, received) = snapshot_peer(installer.clone(), SNAPSHOT_KEEPALIVE).await;
        let source = tempfile::tempdir().expect("tempdir");
        let data = test_bytes(300_000, 3);
        let mut net = network_to(addr).await;
        let vote = Vote::new_committed(3, 1);
        let resp = net
            .full_snapshot(
                vote,
                Snapshot {
                    meta: snapshot_meta(),
                    snapshot: snapshot_file(source.path(), &data),
                },
                never_cancelled(),
                option(),
            )
            .await
            .expect("answered");
        assert_eq!(resp, SnapshotResponse::new(vote));
        assert!(installer.seen().data == data);
        assert_eq!(files_in(received.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_peer_whose_raft_stopped_is_unreachable_for_snapshots() {
        let (addr, _received) =
            snapshot_peer(FakeInstaller::new(FakeOutcome::Fatal), SNAPSHOT_KEEPALIVE).await;
        let source = tempfile::tempdir().expect("tempdir");
        let mut net = network_to(addr).await;
        let err = net
            .full_snapshot(
                Vote::new_committed(3, 1),
                Snapshot {
                    meta: snapshot_meta(),
                    snapshot: snapshot_file(source.path(), b"tiny"),
                },
                never_cancelled(),
                option(),
            )
            .await
            .expect_err("fatal");
        assert!(matches!(err, StreamingError::Unreachable(_)), "{err:?}");
        assert!(err.to_string().contains("raft stopped"), "{err}");
    }

    #[tokio::test]
    async fn a_snapshot_to_a_closed_port_is_unreachable() {
        let source = tempfile::tempdir().expect("tempdir");
        let mut net = network_to(closed_addr().await).await;
        let err = net
            .full_snapshot(
                Vote::new_committed(3, 1),
                Snapshot {
                    meta: snapshot_meta(),
                    snapshot: snapshot_file(source.path(), b"tiny"),
                },
                never_cancelled(),
                option(),
            )
            .await
            .expect_err("closed port");
        assert!(matches!(err, StreamingError::Unreachable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn an_unreadable_snapshot_file_is_a_storage_error() {
        let (addr, _received) =
            snapshot_peer(FakeInstaller::new(FakeOutcome::Install), SNAPSHOT_KEEPALIVE).await;
        let source = tempfile::tempdir().expect("tempdir");
        let path = source.path().join("write-only.sqlite");
        std::fs::write(&path, test_bytes(10_000, 1)).expect("write");
        // A write-only handle: its length is known, reading it fails.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        let mut net = network_to(addr).await;
        let err = net
            .full_snapshot(
                Vote::new_committed(3, 1),
                Snapshot {
                    meta: snapshot_meta(),
                    snapshot: SnapshotFile { file, path },
                },
                never_cancelled(),
                option(),
            )
            .await
            .expect_err("unreadable");
        assert!(matches!(err, StreamingError::StorageError(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_slow_install_is_kept_alive_past_the_stall_limit() {
        let mut installer = FakeInstaller::new(FakeOutcome::Install);
        let stall = Duration::from_millis(300);
        installer.takes = stall * 4;
        let (addr, _received) = snapshot_peer(installer, Duration::from_millis(20)).await;
        let source = tempfile::tempdir().expect("tempdir");
        let net = network_to(addr).await;
        let vote = Vote::new_committed(3, 1);
        let resp = net
            .send_snapshot(
                vote,
                Snapshot {
                    meta: snapshot_meta(),
                    snapshot: snapshot_file(source.path(), &test_bytes(100_000, 5)),
                },
                never_cancelled(),
                stall,
            )
            .await
            .expect("kept alive");
        assert_eq!(resp, SnapshotResponse::new(vote));
    }

    /// A peer that takes the snapshot request, reports it on `entered`, and never answers.
    async fn silent_peer(entered: tokio::sync::mpsc::Sender<()>) -> SocketAddr {
        let router = Router::new().route(
            SNAPSHOT_PATH,
            post(move |_body: Body| {
                let entered = entered.clone();
                async move {
                    let _ = entered.send(()).await;
                    std::future::pending::<String>().await
                }
            }),
        );
        serve(router).await
    }

    #[tokio::test]
    async fn a_stalled_snapshot_transfer_fails_after_the_stall_limit() {
        let (entered, _rx) = tokio::sync::mpsc::channel(4);
        let net = network_to(silent_peer(entered).await).await;
        let source = tempfile::tempdir().expect("tempdir");
        let stall = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(
            Duration::from_secs(20),
            net.send_snapshot(
                Vote::new_committed(3, 1),
                Snapshot {
                    meta: snapshot_meta(),
                    snapshot: snapshot_file(source.path(), &test_bytes(4 << 20, 9)),
                },
                never_cancelled(),
                stall,
            ),
        )
        .await
        .expect("the stall limit ends the transfer")
        .expect_err("stalled");
        assert!(matches!(err, StreamingError::Network(_)), "{err:?}");
        assert!(err.to_string().contains("no progress"), "{err}");
        assert!(started.elapsed() >= stall);
    }

    #[tokio::test]
    async fn a_cancelled_snapshot_transfer_stops_with_closed() {
        let (entered, mut entered_rx) = tokio::sync::mpsc::channel(4);
        let net = network_to(silent_peer(entered).await).await;
        let source = tempfile::tempdir().expect("tempdir");
        let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
        let cancel = async move {
            let _ = cancel_rx.await;
            ReplicationClosed::new("leader stepped down")
        };
        let snapshot = Snapshot {
            meta: snapshot_meta(),
            snapshot: snapshot_file(source.path(), &test_bytes(4 << 20, 11)),
        };
        let send = tokio::spawn(async move {
            net.send_snapshot(
                Vote::new_committed(3, 1),
                snapshot,
                cancel,
                Duration::from_secs(60),
            )
            .await
        });
        // Cancel once the transfer is under way.
        tokio::time::timeout(T, entered_rx.recv())
            .await
            .expect("the peer got the request")
            .expect("entered");
        cancel_tx.send(()).expect("cancel");
        let err = tokio::time::timeout(T, send)
            .await
            .expect("cancel ends the transfer")
            .expect("join")
            .expect_err("cancelled");
        assert!(matches!(err, StreamingError::Closed(_)), "{err:?}");
        assert!(err.to_string().contains("leader stepped down"), "{err}");
    }

    // --- Snapshot framing, receiver side ---

    fn test_header(size: u64) -> SnapshotHeader {
        SnapshotHeader {
            vote: Vote::new_committed(3, 1),
            meta: snapshot_meta(),
            size,
        }
    }

    /// The complete request body the sender produces for `data`.
    async fn frame_of(data: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let SnapshotFile { file, path } = snapshot_file(dir.path(), data);
        let outgoing = Outgoing {
            prefix: Some(snapshot_prefix(&test_header(data.len() as u64)).expect("prefix")),
            file: tokio::fs::File::from_std(file),
            path,
            size: data.len() as u64,
            remaining: data.len() as u64,
            crc: crc32fast::Hasher::new(),
            trailer_sent: false,
            progress: Arc::new(Progress::new()),
            failure: Arc::new(OnceLock::new()),
        };
        let chunks: Vec<io::Result<Bytes>> = outgoing.into_stream().collect().await;
        let mut frame = Vec::new();
        for chunk in chunks {
            frame.extend_from_slice(&chunk.expect("read"));
        }
        frame
    }

    /// Feeds `frame` to the receiver in `chunk`-byte pieces; gives the header and the file's
    /// bytes, or the refusal. Either way, says whether a file was left behind.
    async fn receive(
        frame: &[u8],
        chunk: usize,
    ) -> (Result<(SnapshotHeader, Vec<u8>), ReceiveError>, Vec<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = SnapshotDir::open(dir.path()).expect("snapshot dir");
        let pieces: Vec<Result<Bytes, std::convert::Infallible>> = frame
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let partial = PartialFile::new(snapshots.receiving_path());
        let result = match receive_snapshot(futures::stream::iter(pieces), &partial, T).await {
            Ok((header, file)) => {
                drop(file);
                let data = std::fs::read(partial.path()).expect("read received");
                Ok((header, data))
            }
            Err(e) => Err(e),
        };
        drop(partial);
        (result, files_in(dir.path()))
    }

    #[tokio::test]
    async fn the_receiver_reads_the_senders_frame_however_it_is_cut() {
        let data = test_bytes(10_000, 13);
        let frame = frame_of(&data).await;
        for chunk in [1, 7, 4096, frame.len()] {
            let (result, _) = receive(&frame, chunk).await;
            let (header, got) = result.expect("valid frame");
            assert_eq!(header.size, data.len() as u64);
            assert_eq!(header.vote, Vote::new_committed(3, 1));
            assert_eq!(header.meta, snapshot_meta());
            assert!(got == data, "chunk size {chunk}: bytes differ");
        }
        // An empty snapshot file is a valid frame too.
        let (result, _) = receive(&frame_of(&[]).await, 3).await;
        assert_eq!(result.expect("empty file").1, Vec::<u8>::new());
    }

    #[tokio::test]
    async fn a_damaged_frame_is_refused_and_leaves_no_file() {
        let data = test_bytes(50_000, 17);
        let frame = frame_of(&data).await;
        let header_len = frame.len() - data.len() - 4;

        let truncated = &frame[..frame.len() - 1000];
        let mut flipped = frame.clone();
        flipped[header_len + 20_000] ^= 0x40;
        let mut extra = frame.clone();
        extra.push(0);
        let mut magic = frame.clone();
        magic[0] = b'X';
        let mut version = frame.clone();
        version[4] = SNAPSHOT_VERSION + 1;
        let mut huge_header = frame.clone();
        huge_header[5..9].copy_from_slice(&u32::MAX.to_le_bytes());

        for (what, body, expect) in [
            ("truncated", truncated.to_vec(), "ended after"),
            ("flipped bit", flipped, "checksum mismatch"),
            ("extra byte", extra, "after the snapshot's checksum"),
            ("bad magic", magic, "bad magic"),
            ("other version", version, "version"),
            ("huge header", huge_header, "header of"),
            ("header only", frame[..header_len].to_vec(), "ended after 0"),
            ("cut prefix", frame[..3].to_vec(), "inside the frame prefix"),
        ] {
            let (result, left) = receive(&body, 4096).await;
            let err = match result {
                Err(e) => e,
                Ok(_) => panic!("{what}: accepted"),
            };
            assert!(matches!(err, ReceiveError::Framing(_)), "{what}: {err:?}");
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{what}");
            assert!(err.to_string().contains(expect), "{what}: {err}");
            assert_eq!(left, Vec::<String>::new(), "{what}: file left behind");
        }
    }

    #[tokio::test]
    async fn a_sender_that_goes_silent_is_given_up_and_its_file_removed() {
        let data = test_bytes(10_000, 19);
        let frame = frame_of(&data).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = SnapshotDir::open(dir.path()).expect("snapshot dir");
        // The prefix, header and some data, then nothing, without the connection closing.
        let first: Result<Bytes, std::convert::Infallible> =
            Ok(Bytes::copy_from_slice(&frame[..frame.len() / 2]));
        let body = futures::stream::iter([first]).chain(futures::stream::pending());
        let partial = PartialFile::new(snapshots.receiving_path());
        let err = receive_snapshot(Box::pin(body), &partial, Duration::from_millis(100))
            .await
            .expect_err("stalled");
        assert!(matches!(err, ReceiveError::Stalled(_)), "{err:?}");
        assert_eq!(err.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(
            partial.path().exists(),
            "the partial file exists until dropped"
        );
        drop(partial);
        assert_eq!(files_in(dir.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_truncated_snapshot_body_over_http_is_refused_and_leaves_no_file() {
        let installer = FakeInstaller::new(FakeOutcome::Install);
        let (addr, received) = snapshot_peer(installer.clone(), SNAPSHOT_KEEPALIVE).await;
        let data = test_bytes(200_000, 23);
        let frame = frame_of(&data).await;
        let client = raft_client();
        let url = format!("http://{addr}{SNAPSHOT_PATH}");

        let resp = client
            .post(&url)
            .body(frame[..frame.len() - 100_000].to_vec())
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST);
        let text = resp.text().await.expect("body");
        assert!(text.contains("ended after"), "{text}");
        assert_eq!(files_in(received.path()), Vec::<String>::new());

        let resp = client
            .post(&url)
            .body(b"GET / HTTP/1.1".to_vec())
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST);
        assert_eq!(files_in(received.path()), Vec::<String>::new());
        assert!(
            installer.seen.lock().expect("lock").is_none(),
            "nothing installed"
        );

        // The intact frame over the same route is installed.
        let resp = client
            .post(&url)
            .body(frame)
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), reqwest::StatusCode::OK);
        let body = resp.bytes().await.expect("body");
        let answer: Vec<u8> = body
            .iter()
            .copied()
            .skip_while(|&b| b == ANSWER_KEEPALIVE)
            .collect();
        assert_eq!(
            decode_snapshot_answer(&answer),
            Ok(Ok(SnapshotResponse::new(Vote::new_committed(3, 1))))
        );
        assert!(installer.seen().data == data);
    }

    #[tokio::test]
    async fn only_the_snapshot_route_is_exempt_from_the_body_limit() {
        let limit = 64 * 1024;
        let rpc = Router::new().route(
            APPEND_PATH,
            post(|body: Bytes| async move { body.len().to_string() }),
        );
        let installer = FakeInstaller::new(FakeOutcome::Install);
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = SnapshotDir::open(dir.path()).expect("snapshot dir");
        let router = with_body_limits(
            rpc,
            snapshot_routes(installer.clone(), snapshots, SNAPSHOT_KEEPALIVE),
            limit,
        );
        let addr = serve(router).await;

        let client = raft_client();
        let resp = client
            .post(format!("http://{addr}{APPEND_PATH}"))
            .body(vec![0u8; limit + 1])
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);

        let source = tempfile::tempdir().expect("tempdir");
        let data = test_bytes(16 * limit, 29);
        let mut net = network_to(addr).await;
        net.full_snapshot(
            Vote::new_committed(3, 1),
            Snapshot {
                meta: snapshot_meta(),
                snapshot: snapshot_file(source.path(), &data),
            },
            never_cancelled(),
            option(),
        )
        .await
        .expect("a snapshot far over the limit is accepted");
        assert!(installer.seen().data == data);
    }

    #[test]
    fn the_stall_limit_follows_openraft_but_keeps_several_keepalives() {
        assert_eq!(
            snapshot_stall(&RPCOption::new(Duration::from_secs(30))),
            Duration::from_millis(22_500)
        );
        assert_eq!(
            snapshot_stall(&RPCOption::new(Duration::from_millis(200))),
            MIN_SNAPSHOT_STALL
        );
        assert!(MIN_SNAPSHOT_STALL >= SNAPSHOT_KEEPALIVE * 4);
    }
}
