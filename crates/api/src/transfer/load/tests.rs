//! /db/load's checks of its input, and a follower's relay of an upload to the leader.

use super::*;
use axum::http::HeaderValue;

fn loaded_sql(text: &str) -> Option<String> {
    match sql_to_load(text) {
        Ok(LoadText::Statement(s)) => Some(s.sql),
        _ => None,
    }
}

#[test]
fn dumps_lose_their_transaction_control_and_run_as_one_statement() {
    let dump = "PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\nCREATE TABLE t(x);\n\
                    INSERT INTO t VALUES('a;b');\nCREATE TRIGGER tr AFTER INSERT ON t BEGIN \
                    SELECT 1; END;\nCOMMIT;\n";
    assert_eq!(
        loaded_sql(dump).as_deref(),
        Some(
            "PRAGMA foreign_keys=OFF;\nCREATE TABLE t(x);\nINSERT INTO t VALUES('a;b');\n\
                 CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;"
        )
    );
    assert_eq!(
        loaded_sql("INSERT INTO t VALUES (1)").as_deref(),
        Some("INSERT INTO t VALUES (1)")
    );
    assert!(matches!(
        sql_to_load("BEGIN; INSERT INTO t VALUES (1); ROLLBACK; -- due to errors"),
        Err(ApiError::BadRequest(m)) if m.contains("ROLLBACK")
    ));
    assert!(matches!(
        sql_to_load("BEGIN TRANSACTION; COMMIT;"),
        Err(ApiError::BadRequest(_))
    ));
}

#[test]
fn a_breaking_pragma_anywhere_in_the_text_refuses_the_load() {
    for text in [
        "PRAGMA journal_mode=DELETE;",
        "CREATE TABLE t(x);\nPRAGMA synchronous = OFF;\nINSERT INTO t VALUES (1);",
        "BEGIN;\n  pragma main.wal_checkpoint(TRUNCATE);\nCOMMIT;",
    ] {
        assert!(
            matches!(sql_to_load(text), Ok(LoadText::DisallowedPragma)),
            "{text:?}"
        );
    }
    // Reads of those pragmas, and others, are loaded.
    assert!(loaded_sql("PRAGMA journal_mode; PRAGMA foreign_keys=OFF;").is_some());
}

#[test]
fn file_load_options_are_checked() {
    let p = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let none = HeaderMap::new();
    assert_eq!(
        file_load_options(&p(&[]), &none).ok(),
        Some(FileLoadOptions {
            reason: DEFAULT_LOAD_REASON.into(),
            timeline_id: None,
            expect_sha256: None,
        })
    );
    assert_eq!(
        file_load_options(
            &p(&[("timeline_id", "aB_-9"), ("reason", " from x ")]),
            &none
        )
        .ok(),
        Some(FileLoadOptions {
            reason: "from x".into(),
            timeline_id: Some("aB_-9".into()),
            expect_sha256: None,
        })
    );
    let long = "a".repeat(65);
    for bad in ["", "a b", "é", "a/b", long.as_str()] {
        assert!(
            file_load_options(&p(&[("timeline_id", bad)]), &none).is_err(),
            "{bad:?}"
        );
    }
    assert!(file_load_options(&p(&[("reason", "a\nb")]), &none).is_err());
    assert!(file_load_options(&p(&[("reason", &"r".repeat(257))]), &none).is_err());
    // The expected sha256: 64 hex digits, any case, kept lowercase.
    let sha = "AB".repeat(32);
    let mut headers = HeaderMap::new();
    headers.insert(EXPECT_SHA256_HEADER, HeaderValue::from_str(&sha).unwrap());
    assert_eq!(
        file_load_options(&p(&[]), &headers)
            .ok()
            .and_then(|o| o.expect_sha256),
        Some("ab".repeat(32))
    );
    for bad in ["", "ab", &"g".repeat(64), &"a".repeat(65)] {
        let mut headers = HeaderMap::new();
        headers.insert(EXPECT_SHA256_HEADER, HeaderValue::from_str(bad).unwrap());
        assert!(file_load_options(&p(&[]), &headers).is_err(), "{bad:?}");
    }
}

#[test]
fn the_header_may_arrive_in_pieces() {
    let pieces = |parts: &[&[u8]]| -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
    };
    assert!(starts_with_magic(&pieces(&[
        b"SQLite",
        b" format 3\0",
        b"rest"
    ])));
    assert!(starts_with_magic(&pieces(&[b"SQLite format 3\0"])));
    assert!(!starts_with_magic(&pieces(&[b"SQLite format 3"])));
    assert!(!starts_with_magic(&pieces(&[b"CREATE TABLE t(x);"])));
    assert!(!starts_with_magic(&[]));
}

// ---- a follower's upload streamed on to the leader ----

/// An upload of `chunks`, broken off after them with `broken`.
fn upload(chunks: &[&'static [u8]], broken: bool) -> BodyDataStream {
    let mut items: Vec<std::io::Result<Bytes>> =
        chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
    if broken {
        items.push(Err(std::io::Error::other("connection reset")));
    }
    Body::from_stream(futures::stream::iter(items)).into_data_stream()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    raftlite_store::hex::encode(&sha2::Sha256::digest(data))
}

/// Runs [`relay_chunks`] with the leader reading everything; returns its result, what the
/// leader got (`Err` if its body was cut off) and whether the end of the upload was told.
async fn relay(
    head: &[&'static [u8]],
    rest: BodyDataStream,
    expected: Option<&str>,
) -> (Result<(), ApiError>, Result<Vec<u8>, String>, bool) {
    let (tx, mut rx) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    let (_forwarded_tx, forwarded_rx) = oneshot::channel();
    let (uploaded_tx, uploaded_rx) = oneshot::channel();
    let head = head.iter().map(|c| Bytes::from_static(c)).collect();
    let leader = async {
        let mut got: Vec<u8> = Vec::new();
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Ok(chunk) => got.extend_from_slice(&chunk),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(got)
    };
    let (relayed, got) = tokio::join!(
        relay_chunks(head, rest, expected, tx, forwarded_rx, uploaded_tx),
        leader
    );
    (relayed, got, uploaded_rx.await.is_ok())
}

#[tokio::test]
async fn a_whole_upload_reaches_the_leader_in_order_and_ends_cleanly() {
    let whole = b"SQLite format 3\0abcdefgh";
    let sha = sha256_hex(whole);
    for expected in [None, Some(sha.as_str())] {
        let rest = upload(&[b"abc", b"defgh"], false);
        let (relayed, got, told) = relay(&[b"SQLite format 3\0"], rest, expected).await;
        assert!(relayed.is_ok());
        assert_eq!(got.as_deref(), Ok(&whole[..]));
        assert!(told);
    }
}

#[tokio::test]
async fn an_upload_with_another_sha256_is_refused_and_cut_off() {
    let expected = "0".repeat(64);
    let rest = upload(&[b"abc"], false);
    let (relayed, got, told) = relay(&[b"SQLite format 3\0"], rest, Some(&expected)).await;
    assert!(
        matches!(&relayed, Err(ApiError::BadRequest(m)) if m.starts_with("the uploaded file (19 bytes) has sha256")),
        "{:?}",
        relayed.map_err(|e| e.to_string())
    );
    assert!(got.is_err(), "the leader must not see a whole upload");
    assert!(!told);
}

#[tokio::test]
async fn a_broken_upload_is_refused_and_cut_off() {
    let rest = upload(&[b"abc"], true);
    let (relayed, got, told) = relay(&[b"SQLite format 3\0"], rest, None).await;
    assert!(
        matches!(&relayed, Err(ApiError::BadRequest(m)) if m.starts_with("the upload broke off after 19 bytes")),
        "{:?}",
        relayed.map_err(|e| e.to_string())
    );
    assert!(got.is_err(), "the leader must not see a whole upload");
    assert!(!told);
}

/// Once the forwarded request is over (the leader answered, or the forward gave up), the
/// rest of the upload is still read to its end (the client then sees the answer), and its
/// sha256 still checked; nothing waits on a leader that no longer reads.
#[tokio::test]
async fn the_upload_is_read_to_its_end_after_the_forward_is_over() {
    let many: Vec<&'static [u8]> = vec![b"0123456789"; 4 * CHUNKS_IN_FLIGHT];
    // The leader stopped reading (its end of the channel is gone).
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    drop(rx);
    let (_forwarded_tx, forwarded_rx) = oneshot::channel();
    let (uploaded_tx, _) = oneshot::channel();
    let relayed = relay_chunks(
        Vec::new(),
        upload(&many, false),
        None,
        tx,
        forwarded_rx,
        uploaded_tx,
    );
    assert!(relayed.await.is_ok());
    // The leader's end is still there but no longer read; the forward is over.
    let (tx, _rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let (forwarded_tx, forwarded_rx) = oneshot::channel();
    forwarded_tx.send(()).unwrap();
    let (uploaded_tx, _) = oneshot::channel();
    let expected = "0".repeat(64);
    let relayed = tokio::time::timeout(
        Duration::from_secs(10),
        relay_chunks(
            Vec::new(),
            upload(&many, false),
            Some(&expected),
            tx,
            forwarded_rx,
            uploaded_tx,
        ),
    )
    .await
    .expect("the relay must not wait on a leader that no longer reads");
    assert!(matches!(relayed, Err(ApiError::BadRequest(_))));
}

/// What the relay relies on: a request body that ends with an error reaches the server as
/// a broken body, never as a complete one (hyper drops the connection mid-body).
#[tokio::test]
async fn a_body_cut_off_with_an_error_never_arrives_whole() {
    // What the server's handler sees: each chunk's size, then `Ok(())` for a complete body
    // or `Err` for a broken one.
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Result<usize, String>>();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: Body| async move {
            let mut stream = body.into_data_stream();
            loop {
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        let _ = seen_tx.send(Ok(chunk.len()));
                    }
                    Some(Err(e)) => {
                        let _ = seen_tx.send(Err(e.to_string()));
                        break;
                    }
                    None => {
                        let _ = seen_tx.send(Ok(0));
                        break;
                    }
                }
            }
            "done"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let (tx, mut rx) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    let body = reqwest::Body::wrap_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let sent = tokio::spawn(
        reqwest::Client::new()
            .post(format!("http://{addr}/"))
            .body(body)
            .send(),
    );
    tx.send(Ok(Bytes::from_static(b"SQLite format 3\0")))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv()).await;
    assert_eq!(first.ok().flatten(), Some(Ok(16)));
    tx.send(Err(std::io::Error::other("cut off")))
        .await
        .unwrap();
    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv()).await;
    assert!(matches!(end, Ok(Some(Err(_)))), "the server saw {end:?}");
    assert!(sent.await.unwrap().is_err());
    server.abort();
}
