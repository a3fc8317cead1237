//! Request decoding and the routes' body limits.

use openraft::network::v2::RaftNetworkV2;

use super::*;
use crate::network::raft_client;
use crate::network::test_support::{
    network_to, never_cancelled, option, serve, snapshot_file, snapshot_meta, test_bytes,
    FakeInstaller, FakeOutcome,
};
use crate::types::{Snapshot, Vote};

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
