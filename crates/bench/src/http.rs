//! The HTTP side of every measurement: the client, rqlite's response shapes, the bench table.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use crate::waits::DEADLINE;

/// The inserted value: 16 characters, the same for every row, so only the write path is measured.
pub const VALUE: &str = "raftlite-bench-v";
pub const INSERT: &str = "INSERT INTO bench(v) VALUES(?)";
pub const CREATE: &str = "CREATE TABLE bench (id INTEGER PRIMARY KEY, v TEXT)";

/// The benchmark's HTTP client: requests give up after [`DEADLINE`], up to `idle_per_host`
/// pooled connections per node (`None`: reqwest's default).
pub fn client(idle_per_host: Option<usize>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(DEADLINE);
    if let Some(n) = idle_per_host {
        builder = builder.pool_max_idle_per_host(n);
    }
    // A proxy from the environment would measure the proxy, not raftlite.
    builder
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")
}

/// Runs each statement in `statements` with `POST /db/execute` on `leader`; any error fails.
pub async fn execute_each(
    http: &reqwest::Client,
    leader: &str,
    statements: &[&str],
) -> anyhow::Result<()> {
    for statement in statements {
        let doc = post(http, &format!("{leader}/db/execute"), &json!([statement])).await?;
        if let Some(err) = result_error(&doc) {
            bail!("{statement} failed: {err}");
        }
    }
    Ok(())
}

/// `Ok` only for an acknowledged insert; otherwise a short description of the failure.
pub async fn insert_once(http: &reqwest::Client, url: &str, body: String) -> Result<(), String> {
    let resp = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request error: {e}"))?;
    let status = resp.status();
    let doc: Value = resp
        .json()
        .await
        .map_err(|e| format!("HTTP {status}, unreadable body: {e}"))?;
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    match result_error(&doc) {
        Some(err) => Err(format!("error in response: {err}")),
        None => Ok(()),
    }
}

/// The first `error` in an rqlite response, at the top level or in a statement's result; a
/// response without a `results` array counts as an error too.
pub fn result_error(doc: &Value) -> Option<String> {
    if let Some(err) = doc.get("error") {
        return Some(err.to_string());
    }
    let Some(results) = doc.get("results").and_then(Value::as_array) else {
        return Some(format!("no results in {doc}"));
    };
    results
        .iter()
        .find_map(|r| r.get("error").map(Value::to_string))
}

/// `SELECT COUNT(*) FROM bench` at level `strong`, so it reflects everything committed.
pub async fn count_rows(http: &reqwest::Client, leader: &str) -> anyhow::Result<u64> {
    let url = format!("{leader}/db/query?level=strong");
    let doc = post(http, &url, &json!(["SELECT COUNT(*) FROM bench"])).await?;
    if let Some(err) = result_error(&doc) {
        bail!("SELECT COUNT(*) failed: {err}");
    }
    doc.pointer("/results/0/values/0/0")
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("SELECT COUNT(*) returned no count: {doc}"))
}

pub async fn post(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    send_json(http.post(url).json(body))
        .await
        .with_context(|| format!("POST {url}"))
}

pub async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    send_json(http.get(url))
        .await
        .with_context(|| format!("GET {url}"))
}

/// Sends a request and returns its JSON body; any status but 2xx is an error quoting the body.
pub async fn send_json(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("HTTP {status}: {}", text.trim());
    }
    serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))
}

/// Streams `GET /db/backup` (a consistent copy of the database) into `to`; returns its size.
pub async fn download_db(
    http: &reqwest::Client,
    leader: &str,
    to: &Path,
    timeout: Duration,
) -> anyhow::Result<u64> {
    use tokio::io::AsyncWriteExt;
    let url = format!("{leader}/db/backup");
    let mut resp = http
        .get(&url)
        .timeout(timeout)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        bail!("GET {url}: HTTP {status}: {}", text.trim());
    }
    let mut file = tokio::fs::File::create(to)
        .await
        .with_context(|| format!("cannot create {}", to.display()))?;
    let mut size = 0u64;
    while let Some(chunk) = resp.chunk().await.with_context(|| format!("GET {url}"))? {
        if size == 0 && !chunk.starts_with(b"SQLite format 3\0") {
            bail!("GET {url} did not return a SQLite file");
        }
        file.write_all(&chunk)
            .await
            .with_context(|| format!("cannot write {}", to.display()))?;
        size += chunk.len() as u64;
    }
    file.flush().await?;
    Ok(size)
}
