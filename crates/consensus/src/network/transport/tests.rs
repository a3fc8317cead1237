//! [`post_postcard`] against a tiny echo server: each way a call fails is its own error.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde::{Deserialize, Serialize};

use super::*;
use crate::network::test_support::{closed_addr, serve, T};

// --- post_postcard against a tiny echo server ---

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Ping {
    n: u64,
    s: String,
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
