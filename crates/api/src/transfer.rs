//! rqlite's `GET /db/backup` and `POST /db/load`.
//!
//! **Backup** (served by the leader; a follower forwards, or answers 301 under `?redirect`, or
//! serves its own copy under `?noleader`): a consistent copy of the database is taken with
//! `Store::snapshot_to` into a scratch file under `<data-dir>/snapshots/` and streamed to the
//! client in chunks, so memory stays bounded whatever the size; the scratch file is removed when
//! the response ends (and at start-up after a crash). `?fmt=sql` streams a SQL text dump
//! instead, `?vacuum` a `VACUUM INTO` copy, and `?compress` gzips the body (a `.gz` file: no
//! `Content-Encoding`, as rqlite does).
//!
//! **Load**: the body is a SQLite file (it starts with the 16-byte header `SQLite format 3\0`)
//! or SQL text. SQL text is split into statements; `BEGIN`/`COMMIT`/`END` are dropped (dumps
//! carry them and raftlite runs the rest as one transaction) and the statements are applied as
//! one `?transaction` write. A SQLite file is validated (header and `quick_check`) and then
//! replicated through Raft as one `Command::Load` entry that every node swaps in atomically,
//! starting a new timeline; a bad file is refused with 400 and nothing changes.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use openraft::error::{ClientWriteError, RaftError};
use raftlite_consensus::node::{unix_ms, DataDirLayout, WriteError};
use raftlite_consensus::state_machine::SnapshotDir;
use raftlite_consensus::Command;
use raftlite_store::dump::{self, TransactionControl};
use raftlite_store::{MetaState, Statement, StoreError, TimelineRecord, WriteRequest};
use serde_json::json;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::rqlite;
use crate::server::{
    flag, json_response, timeout_of, to_leader, to_leader_within, write_with_timeout, ApiState,
    LeaderOnly, MAX_BODY_BYTES,
};

/// The first 16 bytes of every SQLite database file.
pub const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Largest SQLite file `/db/load` accepts. The whole file travels in one Raft entry, and
/// openraft 0.9 gives each AppendEntries request one heartbeat interval to be received, decoded
/// and fsync'd by a follower; much larger entries time out and are resent until elections start.
/// 16 MiB replicates within that budget with margin on loopback; chunked entries (the cluster
/// restore) lift the limit.
pub const MAX_LOAD_BYTES: usize = 16 * 1024 * 1024;

const _: () = assert!(
    MAX_LOAD_BYTES < raftlite_consensus::network::RAFT_BODY_LIMIT
        && MAX_LOAD_BYTES <= MAX_BODY_BYTES
);

/// How long a load waits to be committed and applied unless `?timeout` says otherwise: a large
/// file is written, checked and fsync'd on every node.
const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Chunks a backup is streamed in, and how many may wait unsent (bounds memory per download).
const CHUNK_BYTES: usize = 256 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;

/// A forwarded backup may take long to stream; the shared client's 30 s limit is too short.
const FORWARDED_BACKUP_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long after a file load the leader waits for the snapshot that lets it purge the entry.
const PURGE_WAIT: Duration = Duration::from_secs(120);

type Params = Query<HashMap<String, String>>;

/// The routes of this module, merged into [`crate::server::router`].
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/db/backup", get(backup))
        .route("/db/load", post(load))
}

// ---------------------------------------------------------------------------------------------
// Scratch files
// ---------------------------------------------------------------------------------------------

/// A file under `<data-dir>/snapshots/` removed when dropped (start-up removes leftovers).
struct Scratch(PathBuf);

impl Scratch {
    fn new(snapshots: &SnapshotDir, purpose: &str) -> Scratch {
        Scratch(snapshots.scratch_path(purpose))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %self.0.display(), error = %e, "could not remove a scratch file")
            }
        }
    }
}

fn snapshot_dir(state: &ApiState) -> Result<SnapshotDir, ApiError> {
    let path = DataDirLayout::new(&state.data_dir).snapshots;
    std::fs::create_dir_all(&path).map_err(|e| {
        ApiError::Internal(format!(
            "cannot create the snapshots directory {}: {e}",
            path.display()
        ))
    })?;
    Ok(SnapshotDir::read_only(&path))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("background task failed: {e}")))?
}

// ---------------------------------------------------------------------------------------------
// GET /db/backup
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Binary,
    Sql,
}

fn format_of(params: &HashMap<String, String>) -> Result<Format, ApiError> {
    match params
        .get("fmt")
        .map(|f| f.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("binary") | Some("sqlite") => Ok(Format::Binary),
        Some("sql") => Ok(Format::Sql),
        Some(other) => Err(ApiError::BadRequest(format!(
            "unknown backup format fmt={other:?}: leave it out for the SQLite file, or use \
             fmt=sql for a SQL text dump"
        ))),
    }
}

async fn backup(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    metrics::counter!("raftlite_http_requests_total", "endpoint" => "backup").increment(1);
    let result: Result<Response, ApiError> = async {
        let format = format_of(&params)?;
        let compress = flag(&params, "compress");
        let vacuum = flag(&params, "vacuum");
        if !flag(&params, "noleader") && !state.node.is_leader() {
            return Ok(forward_backup(&state, &uri, &headers, flag(&params, "redirect")).await);
        }
        let snapshots = snapshot_dir(&state)?;
        let store = state.node.store();
        let (file, meta) = blocking(move || {
            let copy = Scratch::new(&snapshots, "backup");
            let meta = store.snapshot_to(copy.path())?;
            if !vacuum || format == Format::Sql {
                return Ok((copy, meta));
            }
            let vacuumed = Scratch::new(&snapshots, "backup-vacuum");
            dump::vacuum_copy(copy.path(), vacuumed.path())?;
            Ok((vacuumed, meta))
        })
        .await?;
        Ok(stream_backup(file, &meta, format, compress))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Streams `file` (a consistent copy) as the response body, as it is or as a SQL dump, gzipped
/// on request; the file is removed when the stream ends or the client goes away.
fn stream_backup(file: Scratch, meta: &MetaState, format: Format, compress: bool) -> Response {
    let length = match (format, compress) {
        (Format::Binary, false) => std::fs::metadata(file.path()).ok().map(|m| m.len()),
        _ => None,
    };
    let (tx, mut rx) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let produced = produce_backup(&file, format, compress, tx.clone());
        if let Err(e) = produced {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::warn!(error = %e, "backup stream failed; the client gets a truncated body");
                let _ = tx.blocking_send(Err(e));
            }
        }
        drop(file);
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut response = Body::from_stream(stream).into_response();
    let (content_type, extension) = match (format, compress) {
        (_, true) => (
            "application/octet-stream",
            if format == Format::Sql {
                "sql.gz"
            } else {
                "sqlite.gz"
            },
        ),
        (Format::Sql, false) => ("application/sql; charset=utf-8", "sql"),
        (Format::Binary, false) => ("application/octet-stream", "sqlite"),
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"backup.{extension}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(len) = length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if let Some(applied) = meta.applied {
        h.insert("x-raftlite-applied-index", HeaderValue::from(applied.index));
    }
    if let Some(Ok(v)) = meta.timeline().map(|t| HeaderValue::from_str(&t.id)) {
        h.insert("x-raftlite-timeline", v);
    }
    response
}

fn produce_backup(
    file: &Scratch,
    format: Format,
    compress: bool,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
) -> std::io::Result<()> {
    let sink = ChannelWriter::new(tx);
    if compress {
        let mut gz = flate2::write::GzEncoder::new(sink, flate2::Compression::default());
        write_backup(file.path(), format, &mut gz)?;
        gz.finish()?.flush()
    } else {
        let mut sink = sink;
        write_backup(file.path(), format, &mut sink)?;
        sink.flush()
    }
}

fn write_backup(path: &Path, format: Format, out: &mut impl Write) -> std::io::Result<()> {
    match format {
        Format::Binary => {
            let mut f = std::fs::File::open(path)?;
            std::io::copy(&mut f, out).map(|_| ())
        }
        Format::Sql => dump::dump_file(path, out).map_err(|e| match e {
            StoreError::Io { source, .. } => source,
            other => std::io::Error::other(other.to_string()),
        }),
    }
}

/// A [`Write`]r that hands fixed-size chunks to the response body; a dropped body (the client
/// went away) turns into a `BrokenPipe` error that ends the producer.
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<std::io::Result<Bytes>>) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK_BYTES),
        }
    }

    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client stopped reading the backup",
            )
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK_BYTES.saturating_sub(self.buf.len()).max(1);
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffer()
    }
}

/// A follower's answer to a backup request: the leader's backup streamed through (bounded
/// memory), or a 301 under `?redirect`, or an error when no leader is known.
async fn forward_backup(
    state: &ApiState,
    uri: &Uri,
    headers: &HeaderMap,
    redirect: bool,
) -> Response {
    let req = LeaderOnly {
        method: Method::GET,
        uri,
        headers,
        body: Bytes::new(),
        redirect,
    };
    let err = WriteError::NotLeader {
        leader: state.node.leader(),
    };
    to_leader_within(state, req, err, Some(FORWARDED_BACKUP_TIMEOUT)).await
}

// ---------------------------------------------------------------------------------------------
// POST /db/load
// ---------------------------------------------------------------------------------------------

fn too_large(detail: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "{detail}: /db/load accepts at most {} MiB because the whole database travels in one \
         Raft entry; use `raftlite restore` (coming in a later release) for larger databases",
        MAX_LOAD_BYTES / (1024 * 1024)
    ))
}

async fn load(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    metrics::counter!("raftlite_http_requests_total", "endpoint" => "load").increment(1);
    let started = Instant::now();
    let result: Result<Response, ApiError> = async {
        let body = body.map_err(|e| too_large(&format!("cannot read the request body ({e})")))?;
        if body.len() > MAX_LOAD_BYTES {
            return Err(too_large(&format!("the body has {} bytes", body.len())));
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::BadRequest(
                "the body is empty: send a SQLite database file or SQL text".into(),
            ));
        }
        let timeout = match params.get("timeout") {
            Some(_) => timeout_of(&params)?,
            None => DEFAULT_LOAD_TIMEOUT,
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
        if !state.node.is_leader() {
            let leader = state.node.leader();
            return Ok(ctx.forward(body, WriteError::NotLeader { leader }).await);
        }
        if body.starts_with(SQLITE_MAGIC) {
            load_file(ctx, body).await
        } else {
            load_sql(ctx, body).await
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
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
}

/// The statements of SQL text to load, without the transaction control dumps carry.
fn statements_to_load(text: &str) -> Result<Vec<Statement>, ApiError> {
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
            None => statements.push(Statement::new(sql)),
        }
    }
    if statements.is_empty() {
        return Err(ApiError::BadRequest(
            "the SQL text holds no statements to apply".into(),
        ));
    }
    Ok(statements)
}

async fn load_sql(ctx: LoadContext<'_>, body: Bytes) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body is neither a SQLite database file (it does not start with the 16-byte \
             header \"SQLite format 3\\0\") nor UTF-8 SQL text ({e}); nothing was applied"
        ))
    })?;
    let text = text.to_string();
    let statements = blocking(move || statements_to_load(&text)).await?;
    let request = WriteRequest {
        statements,
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

/// The new timeline a load starts, as the leader sees the current one. Applying the entry fills
/// in counter, parent and parent index from each node's own state (identical on all nodes).
fn next_timeline(meta: &MetaState) -> TimelineRecord {
    let current = meta.timeline();
    TimelineRecord {
        id: format!("{:032x}", rand::random::<u128>()),
        counter: current.map(|t| t.counter + 1).unwrap_or(1),
        parent: current.map(|t| t.id.clone()),
        parent_index: current.map(|_| meta.applied.map(|a| a.index).unwrap_or(0)),
        reason: "load".to_string(),
        at_unix_ms: unix_ms(),
    }
}

async fn load_file(ctx: LoadContext<'_>, body: Bytes) -> Result<Response, ApiError> {
    let snapshots = snapshot_dir(ctx.state)?;
    let bytes = body.clone();
    blocking(move || {
        let check = Scratch::new(&snapshots, "load-check");
        std::fs::write(check.path(), &bytes).map_err(|e| {
            ApiError::Internal(format!(
                "cannot write the uploaded database to {} for checking: {e}",
                check.path().display()
            ))
        })?;
        match raftlite_store::validate_database(check.path()) {
            Ok(_) => Ok(()),
            Err(StoreError::NotADatabase { detail, .. }) => Err(ApiError::BadRequest(format!(
                "the uploaded file is not a usable SQLite database ({detail}); nothing was \
                 changed. Check that the file is complete and undamaged (sqlite3 FILE \
                 'PRAGMA integrity_check')"
            ))),
            Err(e) => Err(ApiError::Internal(format!(
                "cannot check the uploaded database: {e}"
            ))),
        }
    })
    .await?;

    let store = ctx.state.node.store();
    let meta = blocking(move || store.meta().map_err(ApiError::from)).await?;
    let command = Command::Load {
        database: body.to_vec(),
        timeline: next_timeline(&meta),
    };
    let raft = ctx.state.node.raft().clone();
    let written = match tokio::time::timeout(ctx.timeout, raft.client_write(command)).await {
        Ok(Ok(written)) => written,
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            let err = WriteError::NotLeader {
                leader: f.leader_id.zip(f.leader_node),
            };
            return Ok(ctx.forward(body, err).await);
        }
        Ok(Err(e)) => {
            return Err(ApiError::Unavailable(format!(
                "the load was not committed: {e}; retry"
            )))
        }
        Err(_) => {
            return Err(ApiError::Unavailable(format!(
                "the load was not committed within {:?} (no quorum?); it may still be applied \
                 later: check /status before retrying",
                ctx.timeout
            )))
        }
    };
    let index = written.log_id.index;
    tracing::info!(index, bytes = body.len(), "database loaded through the log");
    tokio::spawn(compact_after_load(raft, index));

    let store = ctx.state.node.store();
    let meta = blocking(move || store.meta().map_err(ApiError::from)).await?;
    let opts = rqlite::response_options(ctx.params);
    let mut response = rqlite::encode_results(
        &[],
        &opts,
        Some(ctx.started.elapsed().as_secs_f64()),
        flag(ctx.params, "raft_index").then_some(index),
    );
    if let (Some(obj), Some(t)) = (response.as_object_mut(), meta.timeline()) {
        obj.insert("timeline".into(), json!(t));
    }
    Ok(json_response(StatusCode::OK, &response, opts.pretty))
}

/// After a file load: build a snapshot covering it, then purge the log up to it, so the large
/// entry does not linger in the leader's log and a lagging follower receives the (streamed)
/// snapshot instead. Followers drop the entry at their own next snapshot.
async fn compact_after_load(raft: raftlite_consensus::Raft, index: u64) {
    let deadline = Instant::now() + PURGE_WAIT;
    loop {
        if let Err(e) = raft.trigger().snapshot().await {
            tracing::warn!(error = %e, "cannot trigger a snapshot after a load");
            return;
        }
        let covered = raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= index),
                "a snapshot that covers the load",
            )
            .await;
        if covered.is_ok() {
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                index,
                "no snapshot covered the load within {PURGE_WAIT:?}; the entry stays in the \
                 log until the next one"
            );
            return;
        }
    }
    if let Err(e) = raft.trigger().purge_log(index).await {
        tracing::warn!(error = %e, "cannot purge the log after a load");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_lose_their_transaction_control_and_rollback_is_refused() {
        let dump = "PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\nCREATE TABLE t(x);\n\
                    INSERT INTO t VALUES('a;b');\nCREATE TRIGGER tr AFTER INSERT ON t BEGIN \
                    SELECT 1; END;\nCOMMIT;\n";
        let statements = statements_to_load(dump).unwrap_or_default();
        let sql: Vec<&str> = statements.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(
            sql,
            vec![
                "PRAGMA foreign_keys=OFF;",
                "CREATE TABLE t(x);",
                "INSERT INTO t VALUES('a;b');",
                "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;",
            ]
        );
        assert!(matches!(
            statements_to_load("BEGIN; INSERT INTO t VALUES (1); ROLLBACK; -- due to errors"),
            Err(ApiError::BadRequest(m)) if m.contains("ROLLBACK")
        ));
        assert!(matches!(
            statements_to_load("BEGIN TRANSACTION; COMMIT;"),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn formats() {
        let mut p = HashMap::new();
        assert_eq!(format_of(&p).ok(), Some(Format::Binary));
        p.insert("fmt".to_string(), "SQL".to_string());
        assert_eq!(format_of(&p).ok(), Some(Format::Sql));
        p.insert("fmt".to_string(), "csv".to_string());
        assert!(format_of(&p).is_err());
    }

    #[test]
    fn next_timeline_descends_from_the_current_one() {
        let meta = MetaState {
            applied: Some(raftlite_store::LogPosition {
                term: 2,
                leader_node: 1,
                index: 41,
            }),
            data_changed: None,
            membership_json: None,
            timeline_history: vec![TimelineRecord {
                id: "aa".into(),
                counter: 1,
                parent: None,
                parent_index: None,
                reason: "bootstrap".into(),
                at_unix_ms: 1,
            }],
        };
        let next = next_timeline(&meta);
        assert_eq!(next.counter, 2);
        assert_eq!(next.parent.as_deref(), Some("aa"));
        assert_eq!(next.parent_index, Some(41));
        assert_eq!(next.reason, "load");
        assert_eq!(next.id.len(), 32);
        assert_ne!(next.id, next_timeline(&meta).id);
    }
}
