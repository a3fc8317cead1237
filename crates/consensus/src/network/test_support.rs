//! Set-ups the network's unit tests share: a cluster's metadata, servers on loopback, a client
//! to them, snapshot files and a stand-in for `Raft` behind the snapshot route.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use openraft::errors::{Fatal, ReplicationClosed};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::SnapshotResponse;

use super::snapshot::SnapshotInstaller;
use super::{HttpNetwork, HttpNetworkFactory};
use crate::types::SnapshotFile;
use crate::types::{
    CommittedLeaderId, LogId, Membership, NodeAddr, NodeId, Snapshot, SnapshotMeta,
    StoredMembership, TypeConfig, Vote,
};

pub(super) fn log_id(term: u64, node: NodeId, index: u64) -> LogId {
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

pub(super) fn membership() -> Membership {
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes()).expect("valid membership")
}

pub(super) fn snapshot_meta() -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: Some(log_id(3, 1, 500)),
        last_membership: StoredMembership::new(Some(log_id(1, 1, 2)), membership()),
    }
}

pub(super) async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// An address nothing listens on (bound, then released).
pub(super) async fn closed_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    drop(listener);
    addr
}

/// Long enough for anything on loopback to answer, short enough to end a stuck test.
pub(super) const T: Duration = Duration::from_secs(5);

pub(super) async fn network_to(addr: SocketAddr) -> HttpNetwork {
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

pub(super) fn option() -> RPCOption {
    RPCOption::new(Duration::from_secs(2))
}

/// Deterministic bytes that do not compress to a pattern a bug could hide in.
pub(super) fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
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

pub(super) fn snapshot_file(dir: &Path, data: &[u8]) -> SnapshotFile {
    let path = dir.join("source.sqlite");
    std::fs::write(&path, data).expect("write source");
    SnapshotFile::open(&path).expect("open source")
}

#[derive(Clone, Copy, Debug)]
pub(super) enum FakeOutcome {
    /// Renames the file to `installed.sqlite`, as the state machine renames it into place.
    Install,
    /// Answers without touching the file, as Raft does for a snapshot it does not need.
    Ignore,
    Fatal,
}

/// What the fake installer was given.
#[derive(Debug)]
pub(super) struct Seen {
    pub(super) vote: Vote,
    pub(super) meta: SnapshotMeta,
    pub(super) path: PathBuf,
    pub(super) data: Vec<u8>,
}

/// Stands in for `Raft` behind the snapshot route.
#[derive(Clone)]
pub(super) struct FakeInstaller {
    pub(super) outcome: FakeOutcome,
    /// How long installing takes.
    pub(super) takes: Duration,
    pub(super) seen: Arc<Mutex<Option<Seen>>>,
}

impl FakeInstaller {
    pub(super) fn new(outcome: FakeOutcome) -> Self {
        FakeInstaller {
            outcome,
            takes: Duration::ZERO,
            seen: Arc::new(Mutex::new(None)),
        }
    }

    pub(super) fn seen(&self) -> Seen {
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
    ) -> impl Future<Output = Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>>> + Send {
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

pub(super) fn never_cancelled() -> impl Future<Output = ReplicationClosed> + Send + 'static {
    std::future::pending()
}
