//! rqlite's `POST /db/load`.
//!
//! **Load**: the body is a SQLite file (it starts with the 16-byte header `SQLite format 3\0`)
//! or SQL text; the first 16 bytes decide. SQL text is buffered (at most [`MAX_LOAD_BYTES`]),
//! split into statements; `BEGIN`/`COMMIT`/`END` are dropped (dumps carry them and raftlite runs
//! the rest as one transaction, all or nothing) and the rest is applied as ONE statement string,
//! as rqlite does (`handleLoad` executes the body as a single statement): the answer has one
//! result, `{"results":[{"last_insert_id":..,"rows_affected":..}]}` as SQLite reports them after
//! the text's last statement, or `{"results":[{"error":".."}]}` (nothing applied). A text with
//! a PRAGMA rqlite refuses ([`crate::pragma`]) anywhere in it is answered 200
//! `{"results":[],"error":"disallowed pragma"}` (rqlite looks only at the start of the text).
//! A SQLite file is never held in memory: the body is streamed into a scratch file under
//! `<data-dir>/snapshots/` (no size limit but the disk), which the leader restores through the
//! log with [`RaftNode::restore_file`](raftlite_consensus::node::RaftNode) (`PRAGMA
//! integrity_check`, 1 MiB chunk entries, one commit at which every node swaps the file in on a
//! new timeline). A follower that knows the leader stores nothing: it streams the upload on to
//! the leader as it arrives, at most [`CHUNKS_IN_FLIGHT`] chunks held, hashing it on the way
//! (see [`relay_upload`]); it answers 301 under `?redirect`, before reading the body. A follower
//! that knows no leader, and any node given a request that was already forwarded, stores the
//! upload first like the leader and decides at its end (answering 503 when it still cannot
//! forward). `?reason=` is recorded in the new timeline (default
//! `load via /db/load`); `?timeline_id=` (1-64 characters of `0-9 a-z A-Z _ -`) chooses its id,
//! so a client whose answer is lost can tell from `/status` whether the restore took effect.
//! With `?timeout` the whole request is answered by then, forwarding included (a file restore
//! goes on in the background; `/status` tells its outcome); without it SQL text waits up to 10 s
//! for its commit and a file restore as long as it takes while the leader lives (a forwarded one
//! is answered 503 once the leader it went to stops leading or falls silent for 5 s). SQL text is applied as one entry, so
//! past `--max-entry-bytes` once parsed it is refused with 413.
//! Answers: 200 with `results`, `time`, `timeline` and `restore` (`index`, `size`, `sha256`,
//! `duration_secs`); 400 when the file is refused (nothing changed); 503 when the restore
//! stopped (all-old) or its outcome is unknown (the message names the timeline id to look for).
//! The scratch file is removed on every path (and at start-up after a crash).
//!
//! Old logs may still hold `Command::Load` entries (a whole file in one entry): they are still
//! applied, but nothing proposes them any more.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use raftlite_consensus::node::WriteError;
use raftlite_consensus::restore::{RestoreError, RestoreOutcome, RestoreRequest};
use raftlite_consensus::state_machine::SnapshotDir;
use raftlite_consensus::{NodeAddr, NodeId};
use raftlite_store::dump::{self, TransactionControl};
use raftlite_store::{Statement, WriteRequest};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::scratch::{blocking, snapshot_dir, Scratch, CHUNKS_IN_FLIGHT, CHUNK_BYTES};
use crate::error::ApiError;
use crate::forward::{
    leader_timed_out, to_leader, to_leader_streaming, LeaderOnly, LeaderOnlyStream,
    FORWARDED_HEADER,
};
use crate::limits::MAX_BODY_BYTES;
use crate::params::{flag, timeout_of, Params};
use crate::respond::{disallowed_pragma, json_response};
use crate::state::ApiState;
use crate::writes::write_with_timeout;
use crate::{pragma, rqlite};

/// The first 16 bytes of every SQLite database file.
pub const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Largest SQL text `/db/load` accepts: the statements are applied as one Raft entry, and
/// openraft gives each AppendEntries request one heartbeat interval to be received, decoded
/// and fsync'd by a follower. SQLite files have no such limit (they travel in 1 MiB chunks).
pub const MAX_LOAD_BYTES: usize = 16 * 1024 * 1024;

const _: () = assert!(
    MAX_LOAD_BYTES < raftlite_consensus::network::RAFT_BODY_LIMIT
        && MAX_LOAD_BYTES <= MAX_BODY_BYTES
);

/// How long a SQL-text load waits to be committed and applied unless `?timeout` says otherwise:
/// the default of every request (it is one entry of at most `--max-entry-bytes`).
const DEFAULT_LOAD_TIMEOUT: Duration = crate::limits::DEFAULT_TIMEOUT;

/// A forwarded restore may take long: the leader checks the whole file, sends it through the
/// log and waits for every node's swap before it answers.
const FORWARDED_RESTORE_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long an upload streamed through a follower ([`relay_upload`]) may take to arrive when the
/// request has no `?timeout`: in effect unbounded but by the leader's life, as when the upload
/// was stored before it was sent on; [`FORWARDED_RESTORE_TIMEOUT`] counts from its end.
const RELAYED_UPLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

fn too_large(detail: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "{detail}: SQL text sent to /db/load is limited to {} MiB because it is applied as one \
         Raft entry; nothing was applied. Split the text into smaller loads, or load a SQLite \
         database file instead (files have no size limit)",
        MAX_LOAD_BYTES / (1024 * 1024)
    ))
}

/// The upload stopped before its end (the client went away or the connection broke).
fn broken_upload(received: u64, e: &axum::Error) -> ApiError {
    ApiError::BadRequest(format!(
        "the upload broke off after {received} bytes ({e}); nothing was changed: send the \
         whole file again"
    ))
}

/// Reads and drops a request body, up to [`MAX_DRAIN_BYTES`] (a larger one is cut off).
async fn drain_body(body: Body) {
    let mut stream = body.into_data_stream();
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len();
        if seen > MAX_DRAIN_BYTES {
            break;
        }
    }
}

/// How much of a refused upload is read before the answer; beyond it the connection is closed.
const MAX_DRAIN_BYTES: usize = 64 * 1024 * 1024;

/// What a SQLite-file load records, from `?reason=` and `?timeline_id=`, checked before the
/// body is read so that a bad parameter costs no upload.
#[derive(Debug, PartialEq, Eq)]
struct FileLoadOptions {
    reason: String,
    timeline_id: Option<String>,
    /// The sha256 (lowercase hex) the client says the file has: a file that arrives different
    /// (cut short, damaged, or a streamed backup that failed its checks) is refused.
    expect_sha256: Option<String>,
}

/// The request header that carries [`FileLoadOptions::expect_sha256`]. `raftlite restore`
/// sends it when it streams a backup (the manifest's sha256 of the database file).
pub const EXPECT_SHA256_HEADER: &str = "x-raftlite-expect-sha256";

const DEFAULT_LOAD_REASON: &str = "load via /db/load";
/// Longest `?reason=`: it is stored in every node's timeline history.
const MAX_REASON_CHARS: usize = 256;
const MAX_TIMELINE_ID_CHARS: usize = 64;

fn file_load_options(
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<FileLoadOptions, ApiError> {
    let expect_sha256 = match headers.get(EXPECT_SHA256_HEADER) {
        None => None,
        Some(value) => {
            let hex = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ApiError::BadRequest(format!(
                    "invalid {EXPECT_SHA256_HEADER} header: give the file's sha256 as 64 hex \
                     digits; nothing was changed"
                )));
            }
            Some(hex)
        }
    };
    let timeline_id = match params.get("timeline_id") {
        None => None,
        Some(id) => {
            let valid = (1..=MAX_TIMELINE_ID_CHARS).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return Err(ApiError::BadRequest(format!(
                    "invalid timeline_id {:?}: use 1-{MAX_TIMELINE_ID_CHARS} characters of \
                     0-9 a-z A-Z _ -; nothing was changed",
                    id.chars().take(80).collect::<String>()
                )));
            }
            Some(id.clone())
        }
    };
    let reason = match params.get("reason").map(|r| r.trim()) {
        None | Some("") => DEFAULT_LOAD_REASON.to_string(),
        Some(r) if r.chars().count() > MAX_REASON_CHARS || r.chars().any(char::is_control) => {
            return Err(ApiError::BadRequest(format!(
                "invalid reason: use at most {MAX_REASON_CHARS} characters without control \
                 characters (it is recorded in the timeline history); nothing was changed"
            )))
        }
        Some(r) => r.to_string(),
    };
    Ok(FileLoadOptions {
        reason,
        timeline_id,
        expect_sha256,
    })
}

pub(super) async fn load(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    metrics::counter!("raftlite_http_requests_total", "endpoint" => "load").increment(1);
    let started = Instant::now();
    let result: Result<Response, ApiError> = async {
        let checked = (|| {
            let timeout = match params.get("timeout") {
                Some(_) => timeout_of(&params)?,
                None => DEFAULT_LOAD_TIMEOUT,
            };
            Ok::<_, ApiError>((timeout, file_load_options(&params, &headers)?))
        })();
        let (timeout, options) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                // Read (and drop) what the client is still sending before answering: a client
                // whose upload is cut off mid-way may never see the answer.
                drain_body(body).await;
                return Err(e);
            }
        };
        let ctx = LoadContext {
            state: &state,
            params: &params,
            method,
            uri: &uri,
            headers: &headers,
            started,
            timeout,
        };
        // A follower answers a redirect before reading the upload: the client sends it again
        // to the leader, so reading it here would be wasted.
        if flag(&params, "redirect") && !state.node.is_leader() {
            let leader = state.node.leader();
            return Ok(ctx
                .forward(Bytes::new(), WriteError::NotLeader { leader })
                .await);
        }
        let mut upload = body.into_data_stream();
        let mut head: Vec<Bytes> = Vec::new();
        let mut received = 0u64;
        while received < SQLITE_MAGIC.len() as u64 {
            match upload.next().await {
                Some(Ok(chunk)) => {
                    received += chunk.len() as u64;
                    head.push(chunk);
                }
                Some(Err(e)) => return Err(broken_upload(received, &e)),
                None => break,
            }
        }
        if starts_with_magic(&head) {
            return load_file(ctx, options, head, upload).await;
        }
        let body = buffer_text(head, upload).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::BadRequest(
                "the body is empty: send a SQLite database file or SQL text".into(),
            ));
        }
        // Checked here, on a follower too: rqlite refuses a breaking PRAGMA on the node that
        // received the request, before it looks for the leader.
        let statement = match parse_load_text(&body).await? {
            LoadText::Statement(statement) => statement,
            LoadText::DisallowedPragma => {
                return Ok(disallowed_pragma(
                    &rqlite::response_options(&params),
                    started,
                ))
            }
        };
        if !state.node.is_leader() {
            let leader = state.node.leader();
            return Ok(ctx.forward(body, WriteError::NotLeader { leader }).await);
        }
        load_sql(ctx, body, statement).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Whether the first bytes of the upload (in however many chunks they came) are the SQLite
/// header.
fn starts_with_magic(chunks: &[Bytes]) -> bool {
    let mut head = Vec::with_capacity(SQLITE_MAGIC.len());
    for chunk in chunks {
        let take = (SQLITE_MAGIC.len() - head.len()).min(chunk.len());
        head.extend_from_slice(&chunk[..take]);
        if head.len() == SQLITE_MAGIC.len() {
            break;
        }
    }
    head == SQLITE_MAGIC
}

/// The rest of a SQL-text upload in memory, refused past [`MAX_LOAD_BYTES`] (text is applied
/// as one entry, so it must fit in memory anyway).
async fn buffer_text(head: Vec<Bytes>, mut upload: BodyDataStream) -> Result<Bytes, ApiError> {
    let mut text: Vec<u8> = Vec::new();
    for chunk in head {
        text.extend_from_slice(&chunk);
    }
    while let Some(chunk) = upload.next().await {
        let chunk = chunk.map_err(|e| broken_upload(text.len() as u64, &e))?;
        if text.len() + chunk.len() > MAX_LOAD_BYTES {
            return Err(too_large(&format!(
                "the body has more than {MAX_LOAD_BYTES} bytes"
            )));
        }
        text.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(text))
}

struct LoadContext<'a> {
    state: &'a ApiState,
    params: &'a HashMap<String, String>,
    method: Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    started: Instant,
    timeout: Duration,
}

impl LoadContext<'_> {
    async fn forward(&self, body: Bytes, err: WriteError) -> Response {
        let req = LeaderOnly {
            method: self.method.clone(),
            uri: self.uri,
            headers: self.headers,
            body,
            redirect: flag(self.params, "redirect"),
        };
        to_leader(self.state, req, err).await
    }

    /// Forwards a spooled upload to the leader, read from disk in chunks as it is sent; the
    /// scratch file goes when the request body is done with (sent, or the request failed).
    async fn forward_file(&self, file: Scratch, err: WriteError) -> Response {
        let req = LeaderOnlyStream {
            method: self.method.clone(),
            uri: self.uri,
            headers: self.headers,
            body: reqwest::Body::wrap_stream(file_chunks(file)),
            redirect: flag(self.params, "redirect"),
        };
        to_leader_streaming(self.state, req, err, Some(FORWARDED_RESTORE_TIMEOUT)).await
    }

    /// The leader a follower streams a SQLite upload on to ([`relay_upload`]): a known leader
    /// other than this node, for a request not already forwarded. `None` on the leader, and
    /// wherever [`to_leader_streaming`] would answer without sending anything (no leader known,
    /// a forwarded request): there the upload is stored first and leadership looked at again at
    /// its end, as before.
    fn relay_target(&self) -> Option<(NodeId, NodeAddr)> {
        let node = &self.state.node;
        if node.is_leader() || self.headers.contains_key(FORWARDED_HEADER) {
            return None;
        }
        node.leader().filter(|(id, _)| *id != node.id())
    }
}

/// The bytes of `file` in [`CHUNK_BYTES`] chunks; the file is removed when the stream ends or
/// is dropped.
fn file_chunks(
    file: Scratch,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::try_unfold((file, None), |(file, open)| async move {
        let mut reader = match open {
            Some(reader) => reader,
            None => tokio::fs::File::open(file.path()).await?,
        };
        let mut buf = vec![0u8; CHUNK_BYTES];
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), (file, Some(reader)))))
    })
}

/// An upload stored in a scratch file, with its size and sha256 (lowercase hex).
struct Spooled {
    file: Scratch,
    size: u64,
    sha256: String,
}

/// Writes the upload (its first chunks already read) to a scratch file under
/// `<data-dir>/snapshots/`, chunk by chunk (memory stays bounded whatever the size), hashing
/// it on the way (the restore then need not read it again for its sha256).
async fn spool_upload(
    snapshots: &SnapshotDir,
    head: Vec<Bytes>,
    mut upload: BodyDataStream,
) -> Result<Spooled, ApiError> {
    use sha2::Digest;
    let scratch = Scratch::new(snapshots, "load-upload");
    let disk_error = |e: std::io::Error| {
        ApiError::Internal(format!(
            "cannot store the uploaded database in {}: {e}; the data dir needs room for a \
             copy of the file (is its disk full?); nothing was changed",
            scratch.path().display()
        ))
    };
    let file = tokio::fs::File::create(scratch.path())
        .await
        .map_err(disk_error)?;
    let mut out = tokio::io::BufWriter::with_capacity(CHUNK_BYTES, file);
    let mut size = 0u64;
    let mut hasher = sha2::Sha256::new();
    for chunk in head {
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(disk_error)?;
        size += chunk.len() as u64;
    }
    while let Some(chunk) = upload.next().await {
        let chunk = chunk.map_err(|e| broken_upload(size, &e))?;
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(disk_error)?;
        size += chunk.len() as u64;
    }
    out.flush().await.map_err(disk_error)?;
    drop(out);
    let sha256 = raftlite_store::hex::encode(&hasher.finalize());
    Ok(Spooled {
        file: scratch,
        size,
        sha256,
    })
}

/// Refuses an upload whose sha256 is not the one the client named in
/// [`EXPECT_SHA256_HEADER`] (if it named one).
fn check_sha256(expected: Option<&str>, size: u64, sha256: &str) -> Result<(), ApiError> {
    match expected {
        Some(expected) if expected != sha256 => Err(ApiError::BadRequest(format!(
            "the uploaded file ({size} bytes) has sha256 {sha256}, but the client expected \
             {expected} ({EXPECT_SHA256_HEADER}): it was cut short or damaged on the way, \
             or its source failed a check; nothing was changed"
        ))),
        _ => Ok(()),
    }
}

/// A follower's SQLite upload, streamed on to the leader as it arrives instead of being stored
/// here first: memory holds at most [`CHUNKS_IN_FLIGHT`] chunks, the follower's disk nothing,
/// and the leader (which stores and checks it as any upload) starts receiving at once. The
/// client's answer is the one a stored upload got:
///
/// - the upload is read to its end whatever happens to the forwarded request (as storing it
///   did), so the client always sees the answer;
/// - an upload that breaks off, or whose sha256 is not the one in [`EXPECT_SHA256_HEADER`]
///   (checked here, on the bytes as they passed), is answered 400 by this node as before, and
///   the forwarded body is cut off with an error instead of being ended, so the leader never
///   sees a complete upload and restores nothing;
/// - otherwise the answer is the leader's, or [`to_leader_streaming`]'s own (a leader that
///   stopped leading or fell silent), with the same time limits: what is left of `?timeout`
///   for the whole request, else none for the upload and [`FORWARDED_RESTORE_TIMEOUT`] from
///   its end.
async fn relay_upload(
    ctx: &LoadContext<'_>,
    options: &FileLoadOptions,
    head: Vec<Bytes>,
    upload: BodyDataStream,
    (leader_id, leader): (NodeId, NodeAddr),
) -> Result<Response, ApiError> {
    let (chunks, mut to_send) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    let (forwarded_tx, forwarded_rx) = oneshot::channel::<()>();
    let (uploaded_tx, uploaded_rx) = oneshot::channel::<()>();
    // With `?timeout`, what is left of it bounds the whole exchange (to_leader_streaming).
    let restore_bound = crate::limits::remaining()
        .is_none()
        .then_some(FORWARDED_RESTORE_TIMEOUT);
    let err = WriteError::NotLeader {
        leader: Some((leader_id, leader.clone())),
    };
    let req = LeaderOnlyStream {
        method: ctx.method.clone(),
        uri: ctx.uri,
        headers: ctx.headers,
        body: reqwest::Body::wrap_stream(futures::stream::poll_fn(move |cx| to_send.poll_recv(cx))),
        redirect: flag(ctx.params, "redirect"),
    };
    let forward = async {
        let forwarding = to_leader_streaming(ctx.state, req, err, Some(RELAYED_UPLOAD_TIMEOUT));
        let restore_timeout = async {
            match (uploaded_rx.await, restore_bound) {
                (Ok(()), Some(bound)) => tokio::time::sleep(bound).await,
                // A broken upload is answered by relay_chunks; with `?timeout`, see above.
                _ => std::future::pending().await,
            }
        };
        let response = tokio::select! {
            response = forwarding => response,
            () = restore_timeout => {
                leader_timed_out(leader_id, &leader, FORWARDED_RESTORE_TIMEOUT).into_response()
            }
        };
        // The forwarded request is over: the rest of the upload is read and dropped.
        let _ = forwarded_tx.send(());
        response
    };
    let expected = options.expect_sha256.as_deref();
    let (relayed, response) = tokio::join!(
        relay_chunks(head, upload, expected, chunks, forwarded_rx, uploaded_tx),
        forward
    );
    relayed?;
    Ok(response)
}

/// Reads the upload (its first chunks already read) to its end, handing each chunk to the
/// forwarded request until that is over, and hashing it. Ends the forwarded body cleanly only
/// when the upload is whole and has the expected sha256; otherwise cuts it off with an error
/// and answers as [`spool_upload`] and [`load_file`] do.
async fn relay_chunks(
    head: Vec<Bytes>,
    mut upload: BodyDataStream,
    expected: Option<&str>,
    chunks: mpsc::Sender<std::io::Result<Bytes>>,
    mut forwarded: oneshot::Receiver<()>,
    uploaded: oneshot::Sender<()>,
) -> Result<(), ApiError> {
    use sha2::Digest;
    let mut to_leader = Some(chunks);
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    let mut head = head.into_iter();
    loop {
        let chunk = match head.next() {
            Some(chunk) => chunk,
            None => match upload.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    cut_off(to_leader.take(), &mut forwarded).await;
                    return Err(broken_upload(size, &e));
                }
                None => break,
            },
        };
        hasher.update(&chunk);
        size += chunk.len() as u64;
        if let Some(tx) = &to_leader {
            tokio::select! {
                sent = tx.send(Ok(chunk)) => {
                    if sent.is_err() {
                        to_leader = None;
                    }
                }
                _ = &mut forwarded => to_leader = None,
            }
        }
    }
    let sha256 = raftlite_store::hex::encode(&hasher.finalize());
    if let Err(e) = check_sha256(expected, size, &sha256) {
        cut_off(to_leader.take(), &mut forwarded).await;
        return Err(e);
    }
    let _ = uploaded.send(());
    Ok(())
}

/// Ends the forwarded body with an error (the connection to the leader is dropped mid-body), so
/// the leader takes the upload for a broken one.
async fn cut_off(
    to_leader: Option<mpsc::Sender<std::io::Result<Bytes>>>,
    forwarded: &mut oneshot::Receiver<()>,
) {
    let Some(tx) = to_leader else {
        return;
    };
    let refused = std::io::Error::other("the upload to the follower broke off or failed its check");
    tokio::select! {
        _ = tx.send(Err(refused)) => {}
        _ = forwarded => {}
    }
}

/// What SQL text sent to `/db/load` turns into.
#[derive(Debug)]
enum LoadText {
    /// One statement string holding every statement of the text but its transaction control,
    /// run as rqlite runs the text: one exec, one result (`http/service.go` `handleLoad`
    /// sends `[]string{string(body)}` as one statement with `RollbackOnError`).
    Statement(Statement),
    /// A statement of the text is a PRAGMA rqlite refuses (see [`crate::pragma`]).
    DisallowedPragma,
}

/// Splits SQL text into its statements, drops the transaction control dumps carry (raftlite
/// runs the load in its own transaction, so all or nothing is applied) and joins the rest back
/// into one statement string. Every statement is checked against rqlite's breaking PRAGMAs
/// (rqlite checks only the start of the whole text).
fn sql_to_load(text: &str) -> Result<LoadText, ApiError> {
    let mut statements = Vec::new();
    for (i, sql) in dump::split_sql(text).into_iter().enumerate() {
        match dump::transaction_control(&sql) {
            Some(TransactionControl::Begin) | Some(TransactionControl::Commit) => {}
            Some(TransactionControl::Rollback) => {
                return Err(ApiError::BadRequest(format!(
                    "statement {} of the SQL text is ROLLBACK ({sql:?}): sqlite3 writes that \
                     when a dump failed, so the text is probably incomplete; nothing was \
                     applied. Dump the database again, or remove the ROLLBACK if the text is \
                     meant to be applied",
                    i + 1
                )))
            }
            None if pragma::is_breaking_pragma(&sql) => return Ok(LoadText::DisallowedPragma),
            None => statements.push(sql),
        }
    }
    if statements.is_empty() {
        return Err(ApiError::BadRequest(
            "the SQL text holds no statements to apply".into(),
        ));
    }
    // Each piece but the last ends with its `;`.
    Ok(LoadText::Statement(Statement::new(statements.join("\n"))))
}

/// Checks SQL text as [`sql_to_load`] does; the text must be UTF-8.
async fn parse_load_text(body: &Bytes) -> Result<LoadText, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| {
            ApiError::BadRequest(format!(
                "the body is neither a SQLite database file (it does not start with the \
                 16-byte header \"SQLite format 3\\0\") nor UTF-8 SQL text ({e}); nothing \
                 was applied"
            ))
        })?
        .to_string();
    blocking(move || sql_to_load(&text)).await
}

/// Applies SQL text (already parsed into one statement) as one write; the answer holds one
/// result, as rqlite's does.
async fn load_sql(
    ctx: LoadContext<'_>,
    body: Bytes,
    statement: Statement,
) -> Result<Response, ApiError> {
    let request = WriteRequest {
        statements: vec![statement],
        transaction: true,
    };
    let opts = rqlite::response_options(ctx.params);
    match write_with_timeout(&ctx.state.node, request, ctx.timeout).await {
        Ok(outcome) => Ok(json_response(
            StatusCode::OK,
            &rqlite::encode_results(
                &outcome.results,
                &opts,
                Some(ctx.started.elapsed().as_secs_f64()),
                flag(ctx.params, "raft_index").then_some(outcome.raft_index),
            ),
            opts.pretty,
        )),
        Err(err) => Ok(ctx.forward(body, err).await),
    }
}

/// A SQLite file: streamed on to the leader by a follower that knows it ([`relay_upload`]);
/// otherwise spooled to disk, then restored through the log by the leader
/// ([`raftlite_consensus::restore`]), or forwarded to it.
async fn load_file(
    ctx: LoadContext<'_>,
    options: FileLoadOptions,
    head: Vec<Bytes>,
    upload: BodyDataStream,
) -> Result<Response, ApiError> {
    if let Some(err) = ctx.relay_target() {
        return relay_upload(&ctx, &options, head, upload, err).await;
    }
    let snapshots = snapshot_dir(ctx.state)?;
    let Spooled { file, size, sha256 } = spool_upload(&snapshots, head, upload).await?;
    check_sha256(options.expect_sha256.as_deref(), size, &sha256)?;
    if !ctx.state.node.is_leader() {
        let leader = ctx.state.node.leader();
        return Ok(ctx
            .forward_file(file, WriteError::NotLeader { leader })
            .await);
    }
    tracing::info!(bytes = size, reason = %options.reason, "database upload received; restoring");
    let node = ctx.state.node.clone();
    let request = RestoreRequest {
        path: file.path().to_path_buf(),
        reason: options.reason,
        timeline_id: options.timeline_id,
        sha256: Some(sha256),
        disposable: true,
    };
    // Its own task: a client that goes away must not cut a restore short (after its commit is
    // proposed, only finishing tells the outcome), and the task keeps the file until it is over.
    let restore = tokio::spawn(async move {
        let outcome = node.restore_file(request, &|_, _| {}).await;
        (outcome, file)
    });
    let (outcome, file) = restore
        .await
        .map_err(|e| ApiError::Internal(format!("the restore task failed: {e}")))?;
    match outcome {
        Ok(outcome) => {
            drop(file);
            Ok(restored(&ctx, &outcome))
        }
        // Leadership moved before anything was proposed: the new leader restores it.
        Err(RestoreError::NotLeader { leader }) => Ok(ctx
            .forward_file(file, WriteError::NotLeader { leader })
            .await),
        Err(e) => {
            drop(file);
            Err(ApiError::from(e))
        }
    }
}

/// rqlite's answer shape, plus the new timeline and what the restore did.
fn restored(ctx: &LoadContext<'_>, outcome: &RestoreOutcome) -> Response {
    let opts = rqlite::response_options(ctx.params);
    let mut response = rqlite::encode_results(
        &[],
        &opts,
        Some(ctx.started.elapsed().as_secs_f64()),
        flag(ctx.params, "raft_index").then_some(outcome.index),
    );
    if let Some(obj) = response.as_object_mut() {
        obj.insert("timeline".into(), json!(outcome.timeline));
        obj.insert(
            "restore".into(),
            json!({
                "index": outcome.index,
                "size": outcome.size,
                "sha256": outcome.sha256,
                "restore_id": outcome.restore_id,
                "duration_secs": outcome.duration.as_secs_f64(),
            }),
        );
    }
    json_response(StatusCode::OK, &response, opts.pretty)
}

#[cfg(test)]
mod tests;
