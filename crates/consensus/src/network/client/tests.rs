//! The RPC messages' wire encoding, batch cutting, and how [`HttpNetwork`] maps a peer's
//! answers and failures to openraft's errors.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use openraft::raft::TransferLeaderError;
use raftlite_store::{Statement, TimelineRecord, Value, WriteRequest};

use super::*;
use crate::network::postcard_response;
use crate::network::test_support::{closed_addr, log_id, membership, network_to, option, serve};
use crate::types::{Command, EntryPayload};

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
                    let req: AppendEntriesRequest<TypeConfig> = match postcard::from_bytes(&body) {
                        Ok(r) => r,
                        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
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
