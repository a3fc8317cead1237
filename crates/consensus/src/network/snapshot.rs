//! Snapshot transfer in one streamed POST to [`SNAPSHOT_PATH`] (the frame is drawn in the
//! module documentation of `network`): the framing both sides share, the sender
//! ([`SnapshotPeer::send`], which reads the file chunk by chunk and gives up on a transfer that
//! stalls), and the receiving route ([`snapshot_routes`]: into a file in the snapshots directory,
//! then installed while keep-alive bytes tell the sender the receiver is still at it).

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::{Stream, StreamExt};
use openraft::errors::{
    ErrorSource, Fatal, NetworkError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::SnapshotResponse;
use openraft::{RaftTypeConfig, StorageError};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::time::Instant;

use super::transport::{error_body, error_chain, remote_failure, TransportError, OCTET_STREAM};
use super::SNAPSHOT_PATH;
use crate::state_machine::{Raft, SnapshotDir};
use crate::types::{NodeId, Snapshot, SnapshotFile, SnapshotMeta, TypeConfig, Vote};

// ---------------------------------------------------------------------------------------------
// Framing shared by both sides
// ---------------------------------------------------------------------------------------------

/// The first bytes of a snapshot request body.
const SNAPSHOT_MAGIC: [u8; 4] = *b"RLSN";
/// The framing version; a receiver refuses any other.
const SNAPSHOT_VERSION: u8 = 1;
/// Magic, version and the header's length.
const SNAPSHOT_PREFIX_LEN: usize = SNAPSHOT_MAGIC.len() + 1 + 4;
/// Largest header accepted: a vote and a membership (node ids and addresses) take a few KiB,
/// so anything larger is a garbled length, refused before allocating it.
const MAX_SNAPSHOT_HEADER: usize = 1 << 20;
/// Bytes of the file per body chunk the sender reads.
const SNAPSHOT_CHUNK: usize = 256 << 10;
/// Bytes the receiver gathers before each write to disk.
const SNAPSHOT_WRITE_BUFFER: usize = 1 << 20;

/// The answer's keep-alive byte, sent while the receiver fsyncs and installs.
const ANSWER_KEEPALIVE: u8 = b'.';
/// Tag of the final answer: postcard of `Result<SnapshotResponse, Fatal>` follows.
const ANSWER_RESULT: u8 = b'=';
/// Tag of a receiver-side failure after the body was accepted: a UTF-8 message follows.
const ANSWER_FAILED: u8 = b'!';
/// Largest final answer accepted (a vote, a fatal error's message).
const MAX_SNAPSHOT_ANSWER: usize = 64 << 10;

/// How often the receiver sends [`ANSWER_KEEPALIVE`] while it installs.
pub(super) const SNAPSHOT_KEEPALIVE: Duration = Duration::from_secs(1);
/// The shortest stall the sender tolerates, whatever openraft's timeout: several keep-alives.
const MIN_SNAPSHOT_STALL: Duration = Duration::from_secs(5);
/// How long the receiver waits for the next body bytes before it gives up on a sender that
/// vanished without closing the connection (it would otherwise hold a partial file forever).
/// A live sender does not pause: it sends as fast as the link takes the bytes.
const SNAPSHOT_RECEIVE_STALL: Duration = Duration::from_secs(60);

/// What precedes a snapshot's bytes in the request body.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotHeader {
    /// The leader's vote, for `Raft::install_full_snapshot`.
    vote: Vote,
    meta: SnapshotMeta,
    /// The file's length: exactly this many bytes follow the header.
    size: u64,
}

/// Magic, version, header length and the postcard header: everything before the file's bytes.
fn snapshot_prefix(header: &SnapshotHeader) -> Result<Vec<u8>, String> {
    let encoded =
        postcard::to_allocvec(header).map_err(|e| format!("cannot encode snapshot header: {e}"))?;
    let len = u32::try_from(encoded.len())
        .ok()
        .filter(|&l| l as usize <= MAX_SNAPSHOT_HEADER)
        .ok_or_else(|| {
            format!(
                "snapshot header is {} bytes, more than the {MAX_SNAPSHOT_HEADER} a receiver accepts",
                encoded.len()
            )
        })?;
    let mut out = Vec::with_capacity(SNAPSHOT_PREFIX_LEN + encoded.len());
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.push(SNAPSHOT_VERSION);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&encoded);
    Ok(out)
}

/// How long the sender lets a snapshot transfer go without progress.
///
/// openraft gives `full_snapshot` one [`RPCOption`] built from `install_snapshot_timeout`,
/// a limit meant for one chunk and its installation. No total deadline fits both a small
/// database and a 1 GiB one over a slow link, and the receiver's install time (quick_check,
/// copy and fsync of the whole file) also grows with the size. So the limit is on *stalls*:
/// progress is the HTTP stack taking the next chunk of the file (the peer is reading) and,
/// once the body is sent, each keep-alive byte the receiver sends while it installs. The soft
/// TTL is what openraft recommends for a streaming transport's idle timeout; the floor keeps
/// several keep-alive intervals in it whatever the configuration.
pub(super) fn snapshot_stall(option: &RPCOption) -> Duration {
    option.soft_ttl().max(MIN_SNAPSHOT_STALL)
}

/// When a transfer last made progress; shared between the request body stream (the HTTP
/// stack's task polls it) and the watchdog in [`SnapshotPeer::send`].
struct Progress {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Progress {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    /// Resolves once nothing has happened for `stall`.
    async fn stalled(&self, stall: Duration) {
        loop {
            let deadline = self.last() + stall;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Why a guarded step of a snapshot transfer did not finish.
enum Interrupted {
    Closed(ReplicationClosed),
    Stalled,
}

/// Runs `fut` until it finishes, `cancel` resolves, or the transfer stalls.
async fn guarded<F, C>(
    fut: F,
    cancel: std::pin::Pin<&mut C>,
    progress: &Progress,
    stall: Duration,
) -> Result<F::Output, Interrupted>
where
    F: Future,
    C: Future<Output = ReplicationClosed> + ?Sized,
{
    tokio::select! {
        biased;
        closed = cancel => Err(Interrupted::Closed(closed)),
        _ = progress.stalled(stall) => Err(Interrupted::Stalled),
        out = fut => Ok(out),
    }
}

// ---------------------------------------------------------------------------------------------
// Sender
// ---------------------------------------------------------------------------------------------

/// The request body: prefix, the file's bytes read chunk by chunk, the checksum trailer.
struct Outgoing {
    prefix: Option<Vec<u8>>,
    file: tokio::fs::File,
    path: PathBuf,
    size: u64,
    remaining: u64,
    crc: crc32fast::Hasher,
    trailer_sent: bool,
    progress: Arc<Progress>,
    /// A local read failure, for the sender to report as such rather than as the HTTP
    /// stack's generic "body error".
    failure: Arc<OnceLock<String>>,
}

impl Outgoing {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if let Some(prefix) = self.prefix.take() {
            return Ok(Some(Bytes::from(prefix)));
        }
        if self.remaining > 0 {
            let want = usize::try_from(self.remaining.min(SNAPSHOT_CHUNK as u64))
                .unwrap_or(SNAPSHOT_CHUNK);
            let mut buf = vec![0u8; want];
            let n = self.file.read(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} ended after {} of its {} bytes",
                        self.path.display(),
                        self.size - self.remaining,
                        self.size
                    ),
                ));
            }
            buf.truncate(n);
            self.crc.update(&buf);
            self.remaining -= n as u64;
            return Ok(Some(Bytes::from(buf)));
        }
        if !self.trailer_sent {
            self.trailer_sent = true;
            let crc = self.crc.clone().finalize();
            return Ok(Some(Bytes::copy_from_slice(&crc.to_le_bytes())));
        }
        Ok(None)
    }

    fn into_stream(self) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        futures::stream::unfold(Some(self), |state| async move {
            let mut out = state?;
            match out.next_chunk().await {
                Ok(Some(chunk)) => {
                    out.progress.touch();
                    Some((Ok(chunk), Some(out)))
                }
                Ok(None) => {
                    out.progress.touch();
                    None
                }
                Err(e) => {
                    let _ = out
                        .failure
                        .set(format!("reading {}: {e}", out.path.display()));
                    Some((Err(e), None))
                }
            }
        })
    }
}

/// The peer a snapshot goes to: what the sender needs of the [`super::HttpNetwork`] to it.
pub(super) struct SnapshotPeer<'a> {
    pub(super) client: &'a reqwest::Client,
    pub(super) target: NodeId,
    /// The peer's Raft address, for error messages.
    pub(super) addr: &'a str,
    /// The peer's [`SNAPSHOT_PATH`] URL.
    pub(super) url: String,
}

impl SnapshotPeer<'_> {
    /// Streams `snapshot` to the peer and waits until it is installed there, giving up when the
    /// transfer makes no progress for `stall` (see [`snapshot_stall`]) or `cancel` resolves.
    pub(super) async fn send(
        &self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed>,
        stall: Duration,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let Snapshot { meta, snapshot } = snapshot;
        let SnapshotFile { file, path } = snapshot;
        let signature = meta.signature();
        // A local read failure is a storage error, as openraft's own chunked sender reports it.
        let storage = |what: String| {
            StreamingError::StorageError(StorageError::read_snapshot(
                Some(signature.clone()),
                <TypeConfig as RaftTypeConfig>::ErrorSource::from_string(what),
            ))
        };
        let network = |what: String| {
            StreamingError::Network(NetworkError::from_string(format!(
                "snapshot to node {} at {}: {what}",
                self.target, self.addr
            )))
        };

        let size = file
            .metadata()
            .map_err(|e| storage(format!("cannot stat {}: {e}", path.display())))?
            .len();
        let described = meta.to_string();
        let prefix = snapshot_prefix(&SnapshotHeader { vote, meta, size }).map_err(&network)?;
        let mut file = tokio::fs::File::from_std(file);
        file.seek(io::SeekFrom::Start(0))
            .await
            .map_err(|e| storage(format!("cannot seek in {}: {e}", path.display())))?;

        let progress = Arc::new(Progress::new());
        let failure = Arc::new(OnceLock::new());
        let body = Outgoing {
            prefix: Some(prefix),
            file,
            path,
            size,
            remaining: size,
            crc: crc32fast::Hasher::new(),
            trailer_sent: false,
            progress: progress.clone(),
            failure: failure.clone(),
        };
        tracing::info!(target_node = self.target, snapshot = %described, size, "sending snapshot");
        let started = Instant::now();
        let request = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, OCTET_STREAM)
            .body(reqwest::Body::wrap_stream(body.into_stream()))
            .send();

        let interrupted = |i: Interrupted, failure: &OnceLock<String>| match (i, failure.get()) {
            (Interrupted::Closed(closed), _) => StreamingError::Closed(closed),
            (Interrupted::Stalled, Some(local)) => storage(local.clone()),
            (Interrupted::Stalled, None) => network(format!(
                "no progress for {stall:?}: the peer stopped reading or answering"
            )),
        };
        let mut cancel = std::pin::pin!(cancel);
        let mut response = match guarded(request, cancel.as_mut(), &progress, stall).await {
            Err(i) => return Err(interrupted(i, &failure)),
            Ok(Err(e)) => {
                return Err(match failure.get() {
                    Some(local) => storage(local.clone()),
                    None if e.is_connect() || e.is_builder() => StreamingError::Unreachable(
                        Unreachable::new(&TransportError::Unreachable(e)),
                    ),
                    None => network(error_chain(&e)),
                })
            }
            Ok(Ok(response)) => response,
        };
        progress.touch();
        let status = response.status();
        if !status.is_success() {
            let body = guarded(error_body(response), cancel.as_mut(), &progress, stall)
                .await
                .map_err(|i| interrupted(i, &failure))?;
            return Err(network(format!("HTTP {status}: {body}")));
        }

        // The answer: keep-alive bytes while the peer installs, then the tagged result.
        let mut answer = Vec::new();
        loop {
            let chunk = guarded(response.chunk(), cancel.as_mut(), &progress, stall)
                .await
                .map_err(|i| interrupted(i, &failure))?
                .map_err(|e| network(format!("reading the answer: {}", error_chain(&e))))?;
            let Some(chunk) = chunk else { break };
            progress.touch();
            let mut chunk = &chunk[..];
            if answer.is_empty() {
                while let [ANSWER_KEEPALIVE, rest @ ..] = chunk {
                    chunk = rest;
                }
            }
            if answer.len() + chunk.len() > MAX_SNAPSHOT_ANSWER {
                return Err(network(format!(
                    "the answer is longer than {MAX_SNAPSHOT_ANSWER} bytes"
                )));
            }
            answer.extend_from_slice(chunk);
        }
        match decode_snapshot_answer(&answer) {
            Ok(Ok(resp)) => {
                let secs = started.elapsed().as_secs_f64();
                tracing::info!(
                    target_node = self.target,
                    snapshot = %described,
                    size,
                    secs,
                    mib_per_sec = size as f64 / (1 << 20) as f64 / secs.max(1e-6),
                    "snapshot sent and installed"
                );
                Ok(resp)
            }
            Ok(Err(fatal)) => Err(StreamingError::Unreachable(remote_failure(
                self.target,
                fatal,
            ))),
            Err(e) => Err(network(e)),
        }
    }
}

/// The receiver's final answer, keep-alives already stripped.
#[allow(clippy::type_complexity)]
fn decode_snapshot_answer(
    answer: &[u8],
) -> Result<Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>>, String> {
    match answer {
        [ANSWER_RESULT, rest @ ..] => postcard::from_bytes(rest)
            .map_err(|e| format!("undecodable answer after the snapshot: {e}")),
        [ANSWER_FAILED, rest @ ..] => Err(format!(
            "the peer could not install the snapshot: {}",
            String::from_utf8_lossy(rest)
        )),
        [] => Err("the peer closed the connection before answering".to_string()),
        [tag, ..] => Err(format!(
            "unexpected answer tag {tag:#04x} after the snapshot"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Receiver
// ---------------------------------------------------------------------------------------------

/// A file being received, removed when dropped unless [`PartialFile::keep`] was called: on
/// every refusal, error, and when the handler is dropped because the sender went away.
struct PartialFile {
    path: PathBuf,
    armed: bool,
}

impl PartialFile {
    fn new(path: PathBuf) -> Self {
        PartialFile { path, armed: true }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// The file is someone else's to remove from now on.
    fn keep(mut self) -> PathBuf {
        self.armed = false;
        std::mem::take(&mut self.path)
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if self.armed {
            remove_received(&self.path);
        }
    }
}

/// Removes a received snapshot file nobody will use; gone already is fine.
fn remove_received(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            file = %path.display(),
            error = %e,
            "cannot remove a received snapshot file; it is removed at the next start"
        ),
    }
}

/// Why a snapshot body was refused.
#[derive(Debug, thiserror::Error)]
enum ReceiveError {
    /// The body is not a well-formed snapshot frame.
    #[error("refused snapshot body: {0}")]
    Framing(String),
    /// The body could not be read (the sender went away mid-transfer).
    #[error("reading the snapshot body failed: {0}")]
    Body(String),
    #[error("no snapshot bytes arrived for {0:?}; giving up on the sender")]
    Stalled(Duration),
    #[error("cannot write the received snapshot to {}: {error}", .path.display())]
    Disk { path: PathBuf, error: io::Error },
}

impl ReceiveError {
    fn status(&self) -> StatusCode {
        match self {
            ReceiveError::Framing(_) | ReceiveError::Body(_) => StatusCode::BAD_REQUEST,
            ReceiveError::Stalled(_) => StatusCode::REQUEST_TIMEOUT,
            ReceiveError::Disk { error, .. } if error.kind() == io::ErrorKind::StorageFull => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            ReceiveError::Disk { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A request body read as a byte stream, with a stall limit.
struct Incoming<S> {
    stream: S,
    pending: Bytes,
    stall: Duration,
}

impl<S, E> Incoming<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    /// The next non-empty bytes, or `None` at the end of the body.
    async fn next(&mut self) -> Result<Option<Bytes>, ReceiveError> {
        if !self.pending.is_empty() {
            return Ok(Some(std::mem::take(&mut self.pending)));
        }
        loop {
            match tokio::time::timeout(self.stall, self.stream.next()).await {
                Err(_) => return Err(ReceiveError::Stalled(self.stall)),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(ReceiveError::Body(e.to_string())),
                Ok(Some(Ok(b))) if b.is_empty() => continue,
                Ok(Some(Ok(b))) => return Ok(Some(b)),
            }
        }
    }

    /// Exactly `n` bytes (`n` is small: prefix, header, trailer).
    async fn read_exact(&mut self, n: usize, what: &str) -> Result<Vec<u8>, ReceiveError> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some(mut chunk) = self.next().await? else {
                return Err(ReceiveError::Framing(format!(
                    "the body ended inside {what} ({} of {n} bytes)",
                    out.len()
                )));
            };
            let take = (n - out.len()).min(chunk.len());
            self.pending = chunk.split_off(take);
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// Reads a snapshot frame from `body` into a new file at `partial`'s path: checks magic,
/// version, length and checksum, and writes everything out (not yet fsync'd). On error the
/// caller drops `partial`, which removes the file.
async fn receive_snapshot<S, E>(
    body: S,
    partial: &PartialFile,
    stall: Duration,
) -> Result<(SnapshotHeader, tokio::fs::File), ReceiveError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let mut body = Incoming {
        stream: body,
        pending: Bytes::new(),
        stall,
    };
    let prefix = body
        .read_exact(SNAPSHOT_PREFIX_LEN, "the frame prefix")
        .await?;
    if prefix[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
        return Err(ReceiveError::Framing(
            "not a raftlite snapshot stream (bad magic); is the sender a raftlite node?".into(),
        ));
    }
    let version = prefix[SNAPSHOT_MAGIC.len()];
    if version != SNAPSHOT_VERSION {
        return Err(ReceiveError::Framing(format!(
            "snapshot stream version {version}, this node reads version {SNAPSHOT_VERSION}: \
             run the same raftlite version on every node"
        )));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&prefix[SNAPSHOT_MAGIC.len() + 1..]);
    let header_len = u32::from_le_bytes(len) as usize;
    if header_len > MAX_SNAPSHOT_HEADER {
        return Err(ReceiveError::Framing(format!(
            "snapshot header of {header_len} bytes, more than the {MAX_SNAPSHOT_HEADER} accepted"
        )));
    }
    let header = body.read_exact(header_len, "the snapshot header").await?;
    let header: SnapshotHeader = match postcard::take_from_bytes(&header) {
        Ok((h, [])) => h,
        Ok((_, rest)) => {
            return Err(ReceiveError::Framing(format!(
                "{} stray bytes after the snapshot header",
                rest.len()
            )))
        }
        Err(e) => {
            return Err(ReceiveError::Framing(format!(
                "undecodable snapshot header: {e}"
            )))
        }
    };

    let disk = |error: io::Error| ReceiveError::Disk {
        path: partial.path().to_path_buf(),
        error,
    };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(partial.path())
        .await
        .map_err(disk)?;
    raftlite_store::failpoint::hit("snapshot-receiving");
    let mut buf = Vec::with_capacity(SNAPSHOT_WRITE_BUFFER);
    let mut crc = crc32fast::Hasher::new();
    let mut remaining = header.size;
    while remaining > 0 {
        let Some(mut chunk) = body.next().await? else {
            return Err(ReceiveError::Framing(format!(
                "the body ended after {} of the snapshot's {} bytes",
                header.size - remaining,
                header.size
            )));
        };
        if chunk.len() as u64 > remaining {
            // `remaining` < chunk.len() fits in usize.
            body.pending = chunk.split_off(remaining as usize);
        }
        crc.update(&chunk);
        remaining -= chunk.len() as u64;
        buf.extend_from_slice(&chunk);
        if buf.len() >= SNAPSHOT_WRITE_BUFFER {
            file.write_all(&buf).await.map_err(disk)?;
            buf.clear();
        }
    }
    let mut trailer = [0u8; 4];
    trailer.copy_from_slice(&body.read_exact(4, "the checksum trailer").await?);
    let (sent, got) = (u32::from_le_bytes(trailer), crc.finalize());
    if sent != got {
        return Err(ReceiveError::Framing(format!(
            "checksum mismatch (sent {sent:08x}, received bytes hash to {got:08x}): \
             the snapshot was damaged in transit"
        )));
    }
    if body.next().await?.is_some() {
        return Err(ReceiveError::Framing(
            "unexpected bytes after the snapshot's checksum".into(),
        ));
    }
    file.write_all(&buf).await.map_err(disk)?;
    // Surfaces the error of a write still in flight.
    file.flush().await.map_err(disk)?;
    Ok((header, file))
}

/// What the snapshot route hands a received snapshot to: the node's [`Raft`] (tests use a
/// stand-in, as a real one needs a whole node).
pub(super) trait SnapshotInstaller: Clone + Send + Sync + 'static {
    fn install(
        &self,
        vote: Vote,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>>> + Send;
}

impl SnapshotInstaller for Raft {
    fn install(
        &self,
        vote: Vote,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>>> + Send {
        self.install_full_snapshot(vote, snapshot)
    }
}

#[derive(Clone)]
struct SnapshotRoute<I> {
    installer: I,
    snapshots: SnapshotDir,
    keepalive: Duration,
}

/// The [`SNAPSHOT_PATH`] route alone, without a body limit.
pub(super) fn snapshot_routes<I: SnapshotInstaller>(
    installer: I,
    snapshots: SnapshotDir,
    keepalive: Duration,
) -> Router {
    Router::new()
        .route(SNAPSHOT_PATH, post(handle_snapshot::<I>))
        .with_state(SnapshotRoute {
            installer,
            snapshots,
            keepalive,
        })
}

async fn handle_snapshot<I: SnapshotInstaller>(
    State(route): State<SnapshotRoute<I>>,
    body: Body,
) -> Response {
    let partial = PartialFile::new(route.snapshots.receiving_path());
    let started = Instant::now();
    let (head, file) =
        match receive_snapshot(body.into_data_stream(), &partial, SNAPSHOT_RECEIVE_STALL).await {
            Ok(received) => received,
            Err(e) => {
                tracing::warn!(error = %e, "snapshot transfer refused");
                return (e.status(), e.to_string()).into_response();
            }
        };
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        snapshot = %head.meta,
        size = head.size,
        secs,
        mib_per_sec = head.size as f64 / (1 << 20) as f64 / secs.max(1e-6),
        "snapshot received; installing"
    );
    // The install runs apart from this handler: if the sender goes away, the handler is
    // dropped, but the snapshot is already Raft's and its file must not be pulled from under it.
    let SnapshotRoute {
        installer,
        keepalive,
        ..
    } = route;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let answer = install_received(installer, head, file, partial).await;
        // The sender may have gone; the install happened all the same.
        let _ = tx.send(answer);
    });
    (
        [(header::CONTENT_TYPE, OCTET_STREAM)],
        Body::from_stream(answer_stream(rx, keepalive)),
    )
        .into_response()
}

/// fsyncs the received file, hands it to the installer and gives the tagged final answer.
async fn install_received<I: SnapshotInstaller>(
    installer: I,
    header: SnapshotHeader,
    file: tokio::fs::File,
    partial: PartialFile,
) -> Vec<u8> {
    if let Err(e) = file.sync_all().await {
        return failed_answer(format!(
            "cannot fsync the received snapshot {}: {e}",
            partial.path().display()
        ));
    }
    drop(file);
    let snapshot = match SnapshotFile::open(partial.path()) {
        Ok(s) => s,
        Err(e) => {
            return failed_answer(format!(
                "cannot reopen the received snapshot {}: {e}",
                partial.path().display()
            ))
        }
    };
    // From here the state machine owns the file: it renames it into place on install.
    let path = partial.keep();
    let result = installer
        .install(
            header.vote,
            Snapshot {
                meta: header.meta,
                snapshot,
            },
        )
        .await;
    // Raft answers only once the snapshot is installed (the file renamed away), or at once when
    // it is not needed (older than what is committed here, or from a stale leader): then the
    // file is left over. After a `Fatal` the state machine may still hold it; start-up cleans up.
    if result.is_ok() {
        remove_received(&path);
    }
    match postcard::to_allocvec(&result) {
        Ok(encoded) => {
            let mut answer = Vec::with_capacity(1 + encoded.len());
            answer.push(ANSWER_RESULT);
            answer.extend_from_slice(&encoded);
            answer
        }
        Err(e) => failed_answer(format!("cannot encode the install result: {e}")),
    }
}

fn failed_answer(message: String) -> Vec<u8> {
    tracing::warn!(error = %message, "received snapshot not installed");
    let mut answer = Vec::with_capacity(1 + message.len());
    answer.push(ANSWER_FAILED);
    answer.extend_from_slice(message.as_bytes());
    answer
}

/// Keep-alive bytes every `keepalive` until the final answer arrives on `rx`, then that.
fn answer_stream(
    rx: tokio::sync::oneshot::Receiver<Vec<u8>>,
    keepalive: Duration,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static {
    let mut ticks = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures::stream::unfold(Some((rx, ticks)), |state| async move {
        let (mut rx, mut ticks) = state?;
        tokio::select! {
            answer = &mut rx => {
                let answer = answer.unwrap_or_else(|_| {
                    failed_answer("the snapshot install task ended without an answer".into())
                });
                Some((Ok(Bytes::from(answer)), None))
            }
            _ = ticks.tick() => {
                Some((Ok(Bytes::from_static(&[ANSWER_KEEPALIVE])), Some((rx, ticks))))
            }
        }
    })
}

#[cfg(test)]
mod tests;
