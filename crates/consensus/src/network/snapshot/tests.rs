//! The snapshot transfer end to end over loopback (to a stand-in for `Raft`), its stall and
//! cancel limits, and the receiver's checks of the frame.

use std::net::SocketAddr;

use openraft::network::v2::RaftNetworkV2;

use super::*;
use crate::network::raft_client;
use crate::network::test_support::{
    closed_addr, network_to, never_cancelled, option, serve, snapshot_file, snapshot_meta,
    test_bytes, FakeInstaller, FakeOutcome, T,
};

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

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
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
