//! `S3TestServer` from plain blocking tests: ports, stop, cleanup, raw HTTP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use raftlite_testkit::S3TestServer;

/// One raw HTTP/1.1 request; returns the status line and the rest of the response.
fn raw_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (status, rest) = response.split_once("\r\n").unwrap_or((&response, ""));
    (status.to_string(), rest.to_string())
}

#[test]
fn start_serves_stop_frees_port_drop_removes_data() {
    let mut s3 = S3TestServer::start().expect("start");
    let addr = s3.addr();
    assert!(addr.ip().is_loopback());
    assert!(
        addr.port() < 32768,
        "port {} is in the ephemeral range",
        addr.port()
    );
    assert_eq!(s3.endpoint(), format!("http://127.0.0.1:{}", addr.port()));
    assert_eq!(s3.region(), "us-east-1");
    assert!(
        s3.root_dir().join(s3.bucket()).is_dir(),
        "bucket exists at start"
    );

    let env = s3.env_vars();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("AWS_ACCESS_KEY_ID").as_deref(), Some(s3.access_key()));
    assert_eq!(
        get("AWS_SECRET_ACCESS_KEY").as_deref(),
        Some(s3.secret_key())
    );
    assert_eq!(get("AWS_REGION").as_deref(), Some("us-east-1"));
    assert_eq!(get("AWS_ENDPOINT_URL"), Some(s3.endpoint()));
    assert_eq!(get("AWS_ALLOW_HTTP").as_deref(), Some("true"));

    // Unsigned requests are refused by the auth layer: the server answers S3 errors.
    let (status, body) = raw_get(addr, &format!("/{}/anything", s3.bucket()));
    assert!(status.contains(" 403 "), "{status}\n{body}");

    s3.set_unavailable(true);
    let (status, body) = raw_get(addr, "/");
    assert!(status.contains(" 503 "), "{status}\n{body}");
    assert!(body.contains("<Code>ServiceUnavailable</Code>"), "{body}");
    s3.set_unavailable(false);
    let (status, _) = raw_get(addr, "/");
    assert!(status.contains(" 403 "), "{status}");
    assert_eq!(s3.request_count(), 3);

    let root = s3.root_dir().to_path_buf();
    s3.stop();
    s3.stop(); // idempotent
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "still accepting after stop()"
    );
    assert!(root.is_dir(), "data stays until drop");
    drop(s3);
    assert!(!root.exists(), "data removed on drop");
}

#[test]
fn several_servers_at_once_get_distinct_ports() {
    let servers: Vec<S3TestServer> = (0..4)
        .map(|_| S3TestServer::start().expect("start"))
        .collect();
    let mut ports: Vec<u16> = servers.iter().map(|s| s.addr().port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), servers.len());
    for s in &servers {
        let (status, _) = raw_get(s.addr(), "/");
        assert!(status.contains(" 403 "), "{status}");
    }
}
