//! Raft RPC transport: HTTP POSTs with postcard bodies, and snapshots streamed from disk.
//!
//! Client side (`client.rs`): [`HttpNetworkFactory`] / [`HttpNetwork`] implement openraft's
//! [`RaftNetworkV2`](openraft::network::v2::RaftNetworkV2) and POST postcard-encoded requests to
//! a peer's `raft_addr`: AppendEntries ([`APPEND_PATH`]), votes ([`VOTE_PATH`],
//! [`PRE_VOTE_PATH`]) and leadership transfers ([`TRANSFER_LEADER_PATH`]). Server side
//! (`server.rs`): [`raft_router`] decodes them, hands them to the local
//! [`Raft`](crate::types::Raft) and answers with the postcard-encoded
//! `Result<Response, RaftError<..>>` (or `Result<Response, Fatal<..>>` where openraft's call
//! returns that).
//!
//! A snapshot (an SQLite file, possibly gigabytes) travels in one POST to [`SNAPSHOT_PATH`]
//! whose body is streamed from the open file and, on the receiver, straight into a file in the
//! snapshots directory, so neither side holds it in memory (`snapshot.rs`: the framing, the
//! sender, and the route that receives and installs):
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
//! [`post_postcard`] (`transport.rs`, with the HTTP client's settings) is the shared one-shot
//! helper (also usable by the rest of the codebase for node-to-node calls); its
//! [`TransportError`] distinguishes "could not connect" from "timed out" from "peer answered
//! badly", which is what openraft needs to decide between backing off and retrying.
//!
//! This file holds what the parts share: the routes' paths, the size limits and the free-space
//! answer. The parts use each other in one direction only: `client` and `server` use
//! `snapshot`, and all three use `transport`.

mod client;
mod server;
mod snapshot;
mod transport;

#[cfg(test)]
mod test_support;

pub use client::{HttpNetwork, HttpNetworkFactory};
pub(crate) use server::postcard_response;
pub use server::raft_router;
pub use transport::{
    error_chain, post_postcard, raft_client, raft_client_builder, TransportError, CONNECT_TIMEOUT,
};

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
