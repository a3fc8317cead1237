//! The rows every large database of the benchmarks is made of: text and blobs that are half
//! random bytes, half words (zstd has real work and gets about 1.5x, not 100x), inserted through
//! the HTTP API ([`fill_database`]) or written to a local file ([`build_source`]).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::http::{result_error, send_json};
use crate::report::mib_of;

/// The filler table: one row is [`FILL_NOTE_BYTES`] of text and [`FILL_BLOB_BYTES`] of blob.
pub const FILL_CREATE: &str = "CREATE TABLE filler (id INTEGER PRIMARY KEY, note TEXT, data BLOB)";
const FILL_INSERT: &str = "INSERT INTO filler(note, data) VALUES(?, ?)";
pub const FILL_BLOB_BYTES: usize = 16 * 1024;
pub const FILL_NOTE_BYTES: usize = 1024;
/// Rows per `POST /db/execute` while filling (about 2.2 MB of JSON: blobs travel as hex).
const FILL_ROWS_PER_REQUEST: usize = 64;
/// Fill requests in flight at once.
pub const FILL_LOADERS: usize = 2;
/// Blobs alternate random and word chunks of this size.
const FILL_CHUNK: usize = 1024;
/// Rows per transaction while the source file is built.
const BUILD_ROWS_PER_TX: u64 = 512;
const WORDS: &[&str] = &[
    "raft",
    "log",
    "entry",
    "term",
    "leader",
    "follower",
    "vote",
    "commit",
    "apply",
    "snapshot",
    "backup",
    "restore",
    "timeline",
    "index",
    "page",
    "table",
    "row",
    "blob",
    "text",
    "value",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "on",
    "with",
    "as",
    "cluster",
    "node",
    "write",
    "read",
    "query",
    "insert",
    "update",
    "delete",
    "select",
    "from",
    "where",
    "order",
    "group",
    "limit",
    "checkpoint",
    "journal",
    "wal",
    "fsync",
    "durable",
    "replica",
    "quorum",
    "election",
    "heartbeat",
    "append",
    "truncate",
    "purge",
    "install",
    "verify",
    "manifest",
    "object",
    "store",
    "bucket",
];
/// Fills the `filler` table until `target` bytes of text and blobs are in: [`FILL_LOADERS`]
/// requests of [`FILL_ROWS_PER_REQUEST`] rows in flight, each request one transaction. Returns
/// the rows and bytes inserted.
pub async fn fill_database(
    http: &reqwest::Client,
    leader: &str,
    target: u64,
    deadline: Duration,
) -> anyhow::Result<(u64, u64)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let added = Arc::new(AtomicU64::new(0));
    let url = format!("{leader}/db/execute?transaction");
    let mut loaders = tokio::task::JoinSet::new();
    for _ in 0..FILL_LOADERS {
        let (http, url, added) = (http.clone(), url.clone(), added.clone());
        loaders.spawn(async move {
            let mut rows = 0u64;
            while added.load(Ordering::Relaxed) < target {
                let (body, bytes) = fill_request();
                let req = http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
                let doc = send_json(req).await.context("a fill request failed")?;
                if let Some(err) = result_error(&doc) {
                    bail!("a fill request failed: {err}");
                }
                rows += FILL_ROWS_PER_REQUEST as u64;
                added.fetch_add(bytes, Ordering::Relaxed);
            }
            Ok(rows)
        });
    }
    let give_up = Instant::now() + deadline;
    let mut progress = tokio::time::interval(Duration::from_secs(10));
    progress.tick().await;
    let mut rows = 0;
    loop {
        tokio::select! {
            joined = loaders.join_next() => match joined {
                None => break,
                Some(done) => rows += done.context("a fill task failed")??,
            },
            _ = progress.tick() => eprintln!(
                "bench: filled {:.0} of {:.0} MiB",
                mib_of(added.load(Ordering::Relaxed)),
                mib_of(target)
            ),
            _ = tokio::time::sleep_until(give_up.into()) => {
                bail!("filling the database took longer than {deadline:?}")
            }
        }
    }
    Ok((rows, added.load(Ordering::Relaxed)))
}

/// One fill request: a JSON array of [`FILL_ROWS_PER_REQUEST`] inserts, and the bytes of text
/// and blob it carries. Blobs alternate [`FILL_CHUNK`]s of random bytes and words (sent as
/// `x'..'` hex, which the API decodes), notes are words: together about 1.5x compressible.
fn fill_request() -> (String, u64) {
    let mut rng = rand::rng();
    let mut blob = vec![0u8; FILL_BLOB_BYTES];
    let rows: Vec<Value> = (0..FILL_ROWS_PER_REQUEST)
        .map(|_| {
            fill_blob(&mut rng, &mut blob);
            json!([
                FILL_INSERT,
                words(&mut rng, FILL_NOTE_BYTES),
                hex_literal(&blob)
            ])
        })
        .collect();
    let bytes = FILL_ROWS_PER_REQUEST * (FILL_BLOB_BYTES + FILL_NOTE_BYTES);
    (Value::Array(rows).to_string(), bytes as u64)
}

/// Builds the source file at `path`: rows of the backup bench's shape until `target` bytes of
/// text and blob are in. Returns the rows and bytes inserted.
pub fn build_source(path: &Path, target: u64) -> anyhow::Result<(u64, u64)> {
    let mut conn = rusqlite::Connection::open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // A scratch file rebuilt on failure: no journal, no fsync while filling.
    conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")?;
    conn.execute_batch(FILL_CREATE)?;
    let mut rng = rand::rng();
    let mut blob = vec![0u8; FILL_BLOB_BYTES];
    let (mut rows, mut bytes) = (0u64, 0u64);
    while bytes < target {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare(FILL_INSERT)?;
            for _ in 0..BUILD_ROWS_PER_TX {
                if bytes >= target {
                    break;
                }
                fill_blob(&mut rng, &mut blob);
                let note = words(&mut rng, FILL_NOTE_BYTES);
                insert.execute(rusqlite::params![note, blob])?;
                rows += 1;
                bytes += (FILL_BLOB_BYTES + FILL_NOTE_BYTES) as u64;
            }
        }
        tx.commit()?;
    }
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        bail!("the built file fails quick_check: {check}");
    }
    drop(conn);
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot fsync {}", path.display()))?;
    Ok((rows, bytes))
}

/// Refills `blob` with alternating [`FILL_CHUNK`]s of random bytes and words.
pub fn fill_blob(rng: &mut impl rand::RngCore, blob: &mut [u8]) {
    for (i, chunk) in blob.chunks_mut(FILL_CHUNK).enumerate() {
        if i % 2 == 0 {
            rng.fill_bytes(chunk);
        } else {
            chunk.copy_from_slice(words(rng, chunk.len()).as_bytes());
        }
    }
}

/// Exactly `len` bytes of random words from [`WORDS`], separated by spaces.
fn words(rng: &mut impl rand::Rng, len: usize) -> String {
    let mut text = String::with_capacity(len + 16);
    while text.len() < len {
        text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        text.push(' ');
    }
    text.truncate(len);
    text
}

/// `x'0aff..'`: how the rqlite API takes a blob parameter in JSON.
pub fn hex_literal(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len() + 3);
    s.push_str("x'");
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s.push('\'');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_rows_have_the_promised_shape() {
        let (body, bytes) = fill_request();
        let doc: Value = serde_json::from_str(&body).expect("the body is JSON");
        let rows = doc.as_array().expect("an array of statements");
        assert_eq!(rows.len(), FILL_ROWS_PER_REQUEST);
        assert_eq!(
            bytes as usize,
            rows.len() * (FILL_BLOB_BYTES + FILL_NOTE_BYTES)
        );
        let note = rows[0][1].as_str().expect("a text note");
        let blob = rows[0][2].as_str().expect("a hex blob");
        assert_eq!(note.len(), FILL_NOTE_BYTES);
        assert!(!note.starts_with("x'"), "a note must not read as a blob");
        assert_eq!(blob.len(), 2 * FILL_BLOB_BYTES + 3);
        assert!(blob.starts_with("x'") && blob.ends_with('\''));
    }

    #[test]
    fn hex_literals() {
        assert_eq!(hex_literal(&[0x00, 0x0a, 0xff]), "x'000aff'");
        assert_eq!(hex_literal(&[]), "x''");
    }
}
