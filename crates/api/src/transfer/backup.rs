//! rqlite's `GET /db/backup`.
//!
//! **Backup** (served by the leader; a follower forwards, or answers 301 under `?redirect`, or
//! serves its own copy under `?noleader`): a consistent copy of the database is taken with
//! `Store::snapshot_to` into a scratch file under `<data-dir>/snapshots/` and streamed to the
//! client in chunks, so memory stays bounded whatever the size; the scratch file is removed when
//! the response ends (and at start-up after a crash). `?fmt=sql` streams a SQL text dump
//! instead, `?vacuum` a `VACUUM INTO` copy, and `?compress` gzips the body (a `.gz` file: no
//! `Content-Encoding`, as rqlite does). The file holds the user's schema only: raftlite's own
//! tables are dropped from the copy (their pages zeroed; see
//! [`raftlite_store::strip_internal_tables`]) unless `?raftlite_meta` asks to keep them, which
//! only raftlite's own tools do (`raftlite backup create` reads the applied position and
//! timeline from the copy). Either file loads back with `/db/load`.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use raftlite_store::dump;
use raftlite_store::{MetaState, StoreError};
use tokio::sync::mpsc;

use super::scratch::{blocking, snapshot_dir, Scratch, CHUNKS_IN_FLIGHT, CHUNK_BYTES};
use crate::error::ApiError;
use crate::forward::backup_to_leader;
use crate::params::{flag, Params};
use crate::state::ApiState;

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

pub(super) async fn backup(
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
        let keep_meta = flag(&params, "raftlite_meta");
        if !flag(&params, "noleader") && !state.node.is_leader() {
            return Ok(backup_to_leader(
                &state,
                Method::GET,
                &uri,
                &headers,
                flag(&params, "redirect"),
            )
            .await);
        }
        let snapshots = snapshot_dir(&state)?;
        let store = state.node.store();
        let (file, meta) = blocking(move || {
            let copy = Scratch::new(&snapshots, "backup");
            let meta = store.snapshot_to(copy.path())?;
            if format == Format::Binary && !keep_meta {
                raftlite_store::strip_internal_tables(copy.path())?;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let mut p = HashMap::new();
        assert_eq!(format_of(&p).ok(), Some(Format::Binary));
        p.insert("fmt".to_string(), "SQL".to_string());
        assert_eq!(format_of(&p).ok(), Some(Format::Sql));
        p.insert("fmt".to_string(), "csv".to_string());
        assert!(format_of(&p).is_err());
    }
}
