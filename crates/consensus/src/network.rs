//! Raft RPC transport: HTTP POSTs with postcard bodies.
//!
//! Client side: [`HttpNetworkFactory`] / [`HttpNetwork`] implement openraft's network traits and
//! POST postcard-encoded requests to a peer's `raft_addr`. Server side: [`raft_router`] decodes
//! them, hands them to the local [`Raft`] and answers with the postcard-encoded
//! `Result<Response, RaftError<..>>`.
//!
//! [`post_postcard`] is the shared one-shot helper (also usable by the rest of the codebase for
//! node-to-node calls); its [`TransportError`] distinguishes "could not connect" from "timed out"
//! from "peer answered badly", which is what openraft needs to decide between backing off and
//! retrying.

use std::error::Error as StdError;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use openraft::error::{
    Infallible, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError,
    RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{Entry, NodeAddr, NodeId, Raft, TypeConfig};

/// Path of the AppendEntries RPC.
pub const APPEND_PATH: &str = "/raft/append";
/// Path of the RequestVote RPC.
pub const VOTE_PATH: &str = "/raft/vote";
/// Path of the InstallSnapshot (chunk) RPC.
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";
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

/// Request body limit of [`raft_router`]: snapshot chunks are up to 3 MiB plus framing and
/// AppendEntries batches can be large, so axum's 2 MiB default is too small.
pub const RAFT_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Encoded entry bytes one AppendEntries carries at most (always at least one entry, whatever
/// its size). openraft 0.9 bounds a batch only by count (`max_payload_entries`) and gives it one
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
        // Best effort: the body is only for the error message.
        let body = match resp.bytes().await {
            Ok(b) => {
                let b = &b[..b.len().min(MAX_ERROR_BODY)];
                String::from_utf8_lossy(b).into_owned()
            }
            Err(e) => format!("<unreadable body: {}>", error_chain(&e)),
        };
        return Err(TransportError::Http { status, body });
    }

    let bytes = resp
        .bytes()
        .await
        .map_err(|e| TransportError::from_reqwest(e, timeout))?;
    postcard::from_bytes(&bytes).map_err(TransportError::Decode)
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

type RpcResult<T, E = Infallible> = Result<T, RPCError<NodeId, NodeAddr, RaftError<NodeId, E>>>;

impl HttpNetwork {
    fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// POSTs `req` to `path` and unpacks the peer's `Result<Resp, RaftError<NodeId, E>>`.
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Result<Resp, RaftError<NodeId, E>>, TransportError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: StdError + DeserializeOwned,
    {
        post_postcard(&self.client, &self.url(path), req, option.hard_ttl()).await
    }

    #[allow(clippy::result_large_err)] // the error type is fixed by openraft's RaftNetwork
    fn unpack<Resp, E>(
        &self,
        res: Result<Result<Resp, RaftError<NodeId, E>>, TransportError>,
    ) -> RpcResult<Resp, E>
    where
        E: StdError + 'static,
    {
        match res {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(raft_err)) => Err(RPCError::RemoteError(RemoteError::new(
                self.target,
                raft_err,
            ))),
            Err(e) => Err(transport_to_rpc_error(e)),
        }
    }
}

/// Unreachable → `RPCError::Unreachable` (openraft backs off); everything else →
/// `RPCError::Network` (openraft retries on its next tick).
///
/// Timeouts map to `Network`, not `RPCError::Timeout`: the latter needs the *local* node id,
/// which a transport built by [`HttpNetworkFactory::new`] does not know, and openraft treats both
/// the same way (no backoff, retry later).
fn transport_to_rpc_error<E: StdError>(e: TransportError) -> RPCError<NodeId, NodeAddr, E> {
    match e {
        TransportError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

impl RaftNetwork<TypeConfig> for HttpNetwork {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let fit = entries_within(&rpc.entries, APPEND_BATCH_BYTES);
        // The follower commits only up to the last entry it received, so `leader_commit` can
        // stay as it is.
        let sent_only_to = if fit < rpc.entries.len() {
            rpc.entries.truncate(fit);
            rpc.entries.last().map(|e| e.log_id)
        } else {
            None
        };
        let n_entries = rpc.entries.len() as u64;
        let res = self
            .call::<_, AppendEntriesResponse<NodeId>, Infallible>(APPEND_PATH, &rpc, &option)
            .await;
        match res {
            Ok(Ok(AppendEntriesResponse::Success)) if sent_only_to.is_some() => {
                Ok(AppendEntriesResponse::PartialSuccess(sent_only_to))
            }
            // The peer's body limit rejected the batch: let openraft send fewer entries.
            Err(e @ TransportError::Http { status, .. })
                if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE && n_entries > 1 =>
            {
                Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(n_entries / 2).with_source_error(&e),
                ))
            }
            res => self.unpack(res),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let res = self
            .call::<_, InstallSnapshotResponse<NodeId>, InstallSnapshotError>(
                SNAPSHOT_PATH,
                &rpc,
                &option,
            )
            .await;
        self.unpack(res)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let res = self
            .call::<_, VoteResponse<NodeId>, Infallible>(VOTE_PATH, &rpc, &option)
            .await;
        self.unpack(res)
    }
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// The Raft RPC endpoints (`POST /raft/append`, `/raft/vote`, `/raft/snapshot`), with a
/// [`RAFT_BODY_LIMIT`] request body limit. Merge it into the node's Raft listener.
pub fn raft_router(raft: Raft) -> Router {
    Router::new()
        .route(APPEND_PATH, post(handle_append))
        .route(VOTE_PATH, post(handle_vote))
        .route(SNAPSHOT_PATH, post(handle_snapshot))
        .layer(DefaultBodyLimit::max(RAFT_BODY_LIMIT))
        .with_state(raft)
}

async fn handle_append(State(raft): State<Raft>, body: Bytes) -> Response {
    match decode_request::<AppendEntriesRequest<TypeConfig>>(&body, APPEND_PATH) {
        Ok(req) => postcard_response(&raft.append_entries(req).await),
        Err(bad) => bad.into_response(),
    }
}

async fn handle_vote(State(raft): State<Raft>, body: Bytes) -> Response {
    match decode_request::<VoteRequest<NodeId>>(&body, VOTE_PATH) {
        Ok(req) => postcard_response(&raft.vote(req).await),
        Err(bad) => bad.into_response(),
    }
}

async fn handle_snapshot(State(raft): State<Raft>, body: Bytes) -> Response {
    match decode_request::<InstallSnapshotRequest<TypeConfig>>(&body, SNAPSHOT_PATH) {
        Ok(req) => postcard_response(&raft.install_snapshot(req).await),
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
    use std::net::SocketAddr;

    use openraft::error::{Fatal, SnapshotMismatch};
    use openraft::{
        CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, SnapshotSegmentId,
        StoredMembership, Vote,
    };
    use raftlite_store::{Statement, TimelineRecord, Value, WriteRequest};
    use serde::Deserialize;

    use super::*;
    use crate::types::Command;

    fn log_id(term: u64, node: NodeId, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, node), index)
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

    fn membership() -> Membership<NodeId, NodeAddr> {
        Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes())
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
        let entries: Vec<Entry<TypeConfig>> = (1..=16).map(|i| chunk(i, 1 << 20)).collect();
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
        let entries: Vec<Entry<TypeConfig>> = vec![
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
            let r: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> = r;
            assert_eq!(round_trip(&r), r);
        }
    }

    #[test]
    fn vote_request_round_trips() {
        let req = VoteRequest::<NodeId>::new(Vote::new(5, 2), Some(log_id(4, 1, 100)));
        assert_eq!(round_trip(&req), req);
        let req = VoteRequest::<NodeId>::new(Vote::new(1, 1), None);
        assert_eq!(round_trip(&req), req);

        let resp: Result<VoteResponse<NodeId>, RaftError<NodeId>> = Ok(VoteResponse::new(
            Vote::new(5, 2),
            Some(log_id(4, 1, 100)),
            true,
        ));
        assert_eq!(round_trip(&resp), resp);
    }

    #[test]
    fn install_snapshot_request_round_trips() {
        let req = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta {
                last_log_id: Some(log_id(3, 1, 500)),
                last_membership: StoredMembership::new(Some(log_id(1, 1, 2)), membership()),
                snapshot_id: "3-1-500-abc".into(),
            },
            offset: 3 * 1024 * 1024,
            data: (0..=255u8).cycle().take(100_000).collect(),
            done: false,
        };
        assert_eq!(round_trip(&req), req);

        let err: Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> =
            Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(
                SnapshotMismatch {
                    expect: SnapshotSegmentId {
                        id: "a".into(),
                        offset: 0,
                    },
                    got: SnapshotSegmentId {
                        id: "a".into(),
                        offset: 10,
                    },
                },
            )));
        assert_eq!(round_trip(&err), err);
    }

    #[test]
    fn server_rejects_undecodable_body_with_400() {
        let (status, msg) = decode_request::<VoteRequest<NodeId>>(&[0xff; 2], VOTE_PATH)
            .expect_err("garbage must not decode");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(msg.contains(VOTE_PATH), "{msg}");
        let ok = postcard::to_allocvec(&VoteRequest::<NodeId>::new(Vote::new(1, 1), None))
            .expect("encode");
        assert!(decode_request::<VoteRequest<NodeId>>(&ok, VOTE_PATH).is_ok());
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
    }

    /// A fake peer speaking the wire format, standing in for `raft_router` (which needs a real
    /// `Raft`): vote grants, append answers with a remote Fatal error, snapshot answers 413.
    async fn fake_peer() -> SocketAddr {
        let router = Router::new()
            .route(
                VOTE_PATH,
                post(|body: Bytes| async move {
                    let req: VoteRequest<NodeId> = match postcard::from_bytes(&body) {
                        Ok(r) => r,
                        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                    };
                    let resp: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
                        Ok(VoteResponse::new(req.vote, None, true));
                    postcard_response(&resp)
                }),
            )
            .route(
                APPEND_PATH,
                post(|| async {
                    let resp: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
                        Err(RaftError::Fatal(Fatal::Stopped));
                    postcard_response(&resp)
                }),
            )
            .route(
                SNAPSHOT_PATH,
                post(|| async { (StatusCode::PAYLOAD_TOO_LARGE, "too big") }),
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
            RPCError::RemoteError(re) => {
                assert_eq!(re.target, 2);
                assert_eq!(re.source, RaftError::Fatal(Fatal::Stopped));
            }
            other => panic!("expected RemoteError, got {other:?}"),
        }

        // A non-2xx answer is a Network error.
        let err = net
            .install_snapshot(
                InstallSnapshotRequest {
                    vote: Vote::new_committed(4, 1),
                    meta: SnapshotMeta::default(),
                    offset: 0,
                    data: vec![1, 2, 3],
                    done: true,
                },
                option(),
            )
            .await
            .expect_err("413");
        assert!(matches!(err, RPCError::Network(_)), "{err:?}");
    }

    #[tokio::test]
    async fn append_over_body_limit_is_payload_too_large() {
        // The append route extracts the body, so the 1 KiB limit applies (axum answers 413).
        let router = Router::new()
            .route(
                APPEND_PATH,
                post(|body: Bytes| async move { body.len().to_string() }),
            )
            .layer(DefaultBodyLimit::max(1024));
        let limited = serve(router).await;
        let mut net = network_to(limited).await;
        let entries: Vec<Entry<TypeConfig>> = (1..=4)
            .map(|i| Entry {
                log_id: log_id(1, 1, i),
                payload: EntryPayload::Normal(Command::Write {
                    requests: vec![WriteRequest {
                        statements: vec![Statement::new("x".repeat(1000))],
                        transaction: false,
                    }],
                    at_unix_ms: 0,
                    seed: 0,
                }),
            })
            .collect();
        let err = net
            .append_entries(
                AppendEntriesRequest {
                    vote: Vote::new_committed(1, 1),
                    prev_log_id: None,
                    entries,
                    leader_commit: None,
                },
                option(),
            )
            .await
            .expect_err("too large");
        match err {
            RPCError::PayloadTooLarge(p) => assert_eq!(p.entries_hint(), 2),
            other => panic!("expected PayloadTooLarge, got {other:?}"),
        }
    }
}
