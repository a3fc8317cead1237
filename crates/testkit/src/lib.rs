//! Test-only helpers for raftlite.
//!
//! # `S3TestServer`: a real S3-compatible server, in process
//!
//! [`S3TestServer::start`] serves the S3 protocol (signature v4, path-style requests) from a
//! temporary directory, using [`s3s-fs`](https://docs.rs/s3s-fs/0.14.1) behind `s3s`'s
//! service and a hyper 1 server. It runs on a dedicated background thread with its own tokio
//! runtime, so it works the same from `#[tokio::test]` tests (any flavour) and from plain
//! blocking tests that spawn `raftlite` processes: the constructor is synchronous, the port is
//! bound (and accepting) before it returns, and [`S3TestServer::stop`] / `Drop` shut it down
//! and delete its data.
//!
//! ```no_run
//! let s3 = raftlite_testkit::S3TestServer::start().expect("start S3 test server");
//! // In-process client (object_store 0.14, `aws` feature):
//! //   AmazonS3Builder::new()
//! //       .with_endpoint(s3.endpoint())
//! //       .with_bucket_name(s3.bucket())
//! //       .with_access_key_id(s3.access_key())
//! //       .with_secret_access_key(s3.secret_key())
//! //       .with_region(s3.region())
//! //       .with_allow_http(true)
//! //       .build()?;
//! // Child process: std::process::Command::new(..).envs(s3.env_vars())
//! s3.set_unavailable(true); // every request now answers 503 ServiceUnavailable
//! s3.set_unavailable(false);
//! ```
//!
//! * Credentials are fixed ([`ACCESS_KEY`], [`SECRET_KEY`]); requests signed with anything else
//!   are refused (403), unsigned ones too.
//! * The region is not checked by the server, but clients must sign with one: use
//!   [`S3TestServer::region`] (`us-east-1`).
//! * The bucket [`BUCKET`] exists from the start. An object `KEY` is stored as the plain file
//!   [`S3TestServer::object_path`]`(KEY)` = `root_dir()/BUCKET/KEY`, so a test can corrupt,
//!   truncate or delete it behind the client's back. s3s-fs serves the file as it is on disk
//!   (it does not re-verify its stored MD5/ETag), which is what a corruption test wants.
//!   Its own bookkeeping lives in hidden `root_dir()/.bucket-*.json` files and
//!   `.upload-*` multipart state; leave those alone.
//! * [`S3TestServer::set_unavailable`] makes every request answer `503 ServiceUnavailable`
//!   (an S3 XML error body) without reaching the store, until switched back.
//!   [`S3TestServer::request_count`] counts every request received, including those.
//!
//! # object_store 0.14 (`AmazonS3Builder`) against this server
//!
//! Checked by `tests/object_store.rs` (put/get/range/head/list/delete, a 20 MiB multipart
//! upload, abort, conditional puts, copy/rename, bulk delete, checksums, tags, bad
//! credentials, the unavailable switch):
//!
//! * **Needed:** `with_endpoint("http://127.0.0.1:PORT")` and `with_allow_http(true)` (an
//!   `http://` endpoint fails every request with reqwest's `BadScheme` without it), the fixed
//!   access key / secret, and `with_region("us-east-1")`. Path-style requests are
//!   object_store's default (`with_virtual_hosted_style_request(false)`): keep it, the server
//!   is not set up for bucket-in-hostname requests.
//! * **Gotcha:** `with_client_options(..)` *replaces* all client options, `allow_http`
//!   included. Call it before `with_allow_http(true)`, or use
//!   `ClientOptions::new().with_allow_http(true)`, or every request fails with `BadScheme`.
//! * **Retries:** object_store retries 5xx answers (so the 503s of
//!   [`S3TestServer::set_unavailable`]) and connection errors with backoff, by default up to
//!   10 times for up to 3 minutes. A "destination down" test needs a small `RetryConfig`
//!   via `with_retry(..)` (e.g. `max_retries: 2`, `retry_timeout: 2s`, 10–50 ms backoff) or the
//!   error surfaces only after minutes.
//! * **Work with object_store's defaults, no option needed** (s3s-fs 0.14.1 implements them):
//!   signed payloads (the default `x-amz-content-sha256`) and `with_unsigned_payload(true)`;
//!   `with_checksum_algorithm(Checksum::SHA256)` and `Checksum::CRC64NVME`, also on multipart
//!   parts (s3s-fs verifies the `x-amz-checksum-*` header and answers `BadDigest` on a
//!   mismatch); conditional puts with the default `S3ConditionalPut::ETagMatch` (`PutMode::Create`
//!   = `If-None-Match: *` gives `Error::AlreadyExists` when the key exists, `PutMode::Update`
//!   = `If-Match: <etag>` gives `Error::Precondition` on a stale ETag); multipart upload and
//!   abort; `copy`/`rename`; bulk delete (`delete_stream`, `POST ?delete`, no need for
//!   `with_disable_bulk_delete`); tags on put (accepted, not stored: s3s-fs has no tagging).
//! * **Opt-in:** `copy_if_not_exists` is refused client-side (`Error::NotSupported`) unless
//!   `with_copy_if_not_exists(S3CopyIfNotExists::Multipart)` is set; with it, it works here
//!   (`UploadPartCopy` + conditional complete).
//! * Real S3-compatible servers differ on exactly these points (conditional writes, checksum
//!   headers, tagging, copy-if-not-exists, bulk delete), so production code should keep
//!   them configurable rather than rely on this server accepting them.

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{Body, HttpError, HttpResponse};
use tokio::sync::oneshot;

/// Access key the server accepts (`AWS_ACCESS_KEY_ID`).
pub const ACCESS_KEY: &str = "raftlite-test-access-key";
/// Secret key the server accepts (`AWS_SECRET_ACCESS_KEY`).
pub const SECRET_KEY: &str = "raftlite-test-secret-key";
/// Region clients sign with.
pub const REGION: &str = "us-east-1";
/// The bucket created at start.
pub const BUCKET: &str = "raftlite-test";

/// How long a stopping server waits for in-flight connections before dropping them.
const GRACEFUL_TIMEOUT: Duration = Duration::from_secs(2);

/// An S3-compatible server (s3s-fs over a temporary directory) on `127.0.0.1`, running on its
/// own thread and tokio runtime. See the [crate documentation](crate) for the client options.
pub struct S3TestServer {
    addr: SocketAddr,
    root: PathBuf,
    unavailable: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    // Declared last: deleted after the server thread has been joined (see `Drop`).
    dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for S3TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3TestServer")
            .field("endpoint", &self.endpoint())
            .field("root", &self.root)
            .field("unavailable", &self.is_unavailable())
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl S3TestServer {
    /// Starts a server on a free port of `127.0.0.1` (below the ephemeral range), over a new
    /// temporary directory holding the bucket [`BUCKET`].
    ///
    /// Synchronous and quick: callable from blocking tests and from inside a tokio runtime
    /// alike. The listener is bound before this returns, so the server can be used at once.
    pub fn start() -> io::Result<S3TestServer> {
        let dir = tempfile::Builder::new().prefix("raftlite-s3-").tempdir()?;
        let root = dir.path().join("s3");
        std::fs::create_dir(&root)?;
        // A bucket is a directory under the root for s3s-fs.
        std::fs::create_dir(root.join(BUCKET))?;
        // FileSystem canonicalizes the root; use the same path for `root_dir()`.
        let root = root.canonicalize()?;

        let fs = s3s_fs::FileSystem::new(&root)
            .map_err(|e| io::Error::other(format!("s3s-fs: {e:?}")))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let s3 = builder.build();

        let listener = bind_free_port()?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;

        let unavailable = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let service = Switchable {
            inner: s3,
            unavailable: Arc::clone(&unavailable),
            requests: Arc::clone(&requests),
        };

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-test-server")
            .enable_all()
            .build()?;
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("s3-test-server-{}", addr.port()))
            .spawn(move || {
                let result = runtime.block_on(serve(listener, service, shutdown_rx));
                if let Err(e) = result {
                    eprintln!("S3TestServer on {addr}: {e}");
                }
                // Connection tasks still running past the graceful timeout are dropped here.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;

        Ok(S3TestServer {
            addr,
            root,
            unavailable,
            requests,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
            dir: Some(dir),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bucket that exists from the start ([`BUCKET`]).
    pub fn bucket(&self) -> &'static str {
        BUCKET
    }

    /// [`ACCESS_KEY`].
    pub fn access_key(&self) -> &'static str {
        ACCESS_KEY
    }

    /// [`SECRET_KEY`].
    pub fn secret_key(&self) -> &'static str {
        SECRET_KEY
    }

    /// [`REGION`] (`us-east-1`).
    pub fn region(&self) -> &'static str {
        REGION
    }

    /// Environment for a child process using the AWS conventions (also what
    /// `object_store::aws::AmazonS3Builder::from_env` reads): `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`,
    /// `AWS_ALLOW_HTTP=true`. The bucket is not included (there is no standard variable).
    pub fn env_vars(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_DEFAULT_REGION", REGION.to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The same settings as object_store configuration keys, bucket included, for
    /// `AmazonS3Builder::with_config(key.parse().unwrap(), value)`: `aws_access_key_id`,
    /// `aws_secret_access_key`, `aws_region`, `aws_endpoint`, `aws_allow_http`, `aws_bucket`,
    /// `aws_virtual_hosted_style_request=false`.
    pub fn object_store_options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_access_key_id", ACCESS_KEY.to_string()),
            ("aws_secret_access_key", SECRET_KEY.to_string()),
            ("aws_region", REGION.to_string()),
            ("aws_endpoint", self.endpoint()),
            ("aws_allow_http", "true".to_string()),
            ("aws_bucket", BUCKET.to_string()),
            ("aws_virtual_hosted_style_request", "false".to_string()),
        ]
    }

    /// The directory s3s-fs serves: each bucket is a subdirectory, each object a file in it.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The file holding object `key` of [`BUCKET`] (`root_dir()/BUCKET/key`), whether or not
    /// it exists yet.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.join(BUCKET).join(key)
    }

    /// While `true`, every request is answered `503 ServiceUnavailable` without reaching the
    /// store ("destination down"). Takes effect for the next request, also on open
    /// connections.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Whether [`S3TestServer::set_unavailable`] is on.
    pub fn is_unavailable(&self) -> bool {
        self.unavailable.load(Ordering::SeqCst)
    }

    /// Number of HTTP requests received so far, 503-answered ones included.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stops the server: no new connections, in-flight ones get up to two seconds, then are
    /// dropped; returns once the server thread has exited. The data stays in
    /// [`S3TestServer::root_dir`] until the `S3TestServer` is dropped. Idempotent.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for S3TestServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// Accept loop, until `shutdown` fires (or its sender is dropped).
async fn serve(
    listener: StdTcpListener,
    service: Switchable,
    mut shutdown: oneshot::Receiver<()>,
) -> io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let http = ConnBuilder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // E.g. EMFILE: back off a little instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(stream), service.clone());
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(GRACEFUL_TIMEOUT, graceful.shutdown()).await;
    Ok(())
}

/// The S3 service behind an "unavailable" switch and a request counter.
#[derive(Clone)]
struct Switchable {
    inner: S3Service,
    unavailable: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl Service<Request<Incoming>> for Switchable {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = BoxFuture<Result<HttpResponse, HttpError>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if self.unavailable.load(Ordering::SeqCst) {
            let resp = unavailable_response(req.uri().path());
            return Box::pin(async move { Ok(resp) });
        }
        Service::call(&self.inner, req)
    }
}

fn unavailable_response(resource: &str) -> HttpResponse {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>ServiceUnavailable</Code>\
         <Message>S3TestServer is set unavailable</Message><Resource>{}</Resource></Error>",
        xml_escape(resource)
    );
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = resp.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    // The request body is not read: have the client open a fresh connection next time.
    headers.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    resp
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Binds `127.0.0.1` on a free port in 32000..32768: below Linux's ephemeral range (from
/// 32768), so client sockets cannot take it, and above the 20000..32000 range the raftlite
/// integration tests (`tests/common/mod.rs::free_port`) hand out, so the two never compete.
/// The listener is kept bound, so there is no window for another process to take the port.
fn bind_free_port() -> io::Result<StdTcpListener> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 32_000;
    const SPAN: u32 = 768;
    let base = (std::process::id() % 24) * 32;
    let mut last_err = None;
    for _ in 0..SPAN {
        let offset = (base + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
        let port = (LOW + offset) as u16;
        match StdTcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last_err = Some(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "no free TCP port on 127.0.0.1 in {LOW}..{}: {last_err:?}",
            LOW + SPAN
        ),
    ))
}
