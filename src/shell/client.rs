//! The server's HTTP API as the shell uses it: SQL, JSON, downloads and restores, with
//! credentials, TLS and redirects to the leader.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::blocking::{Body, Client, Response};
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::render::cell_text;
use super::split::is_query_like;
use super::CmdError;
use crate::args::ShellArgs;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request limit for SQL and status requests (the server itself gives up after 10 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// For backups and restores: the longest wait for the response headers, for one read of a
/// download, and for sending a whole upload.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// For restores: the node answers only once every node switched to the new file, after
/// checking and replicating all of it.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_REDIRECTS: usize = 5;
const SQLITE_HEADER: &[u8] = b"SQLite format 3\0";

/// The server's HTTP API, with credentials and redirect handling.
pub(super) struct Api {
    /// Base URL without a trailing `/`, e.g. `http://127.0.0.1:4001`.
    pub(super) base: String,
    /// `host:port`, for the prompt.
    pub(super) label: String,
    client: Client,
    auth: Option<(String, String)>,
}

/// Result of one SQL statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SqlOutput {
    Rows {
        columns: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    Executed {
        rows_affected: i64,
        last_insert_id: Option<i64>,
    },
}

/// Adds `http://` when no scheme is given and drops trailing `/`s.
fn normalize_url(raw: &str) -> anyhow::Result<(String, String)> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    let url = Url::parse(&with_scheme).with_context(|| {
        format!("invalid server URL `{raw}`; expected e.g. http://127.0.0.1:4001")
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        anyhow::bail!("invalid server URL `{raw}`: the scheme must be http or https");
    }
    let host = url
        .host_str()
        .with_context(|| format!("invalid server URL `{raw}`: no host"))?;
    if url.query().is_some() || url.fragment().is_some() {
        anyhow::bail!("invalid server URL `{raw}`: remove the query string or fragment");
    }
    let label = match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let base = url.as_str().trim_end_matches('/').to_owned();
    Ok((base, label))
}

/// Splits `-u USER:PASSWORD` at the first `:`.
fn parse_credentials(raw: &str) -> anyhow::Result<(String, String)> {
    match raw.split_once(':') {
        Some((user, pass)) if !user.is_empty() => Ok((user.to_owned(), pass.to_owned())),
        _ => anyhow::bail!("invalid -u value: expected USER:PASSWORD"),
    }
}

impl Api {
    pub(super) fn new(args: &ShellArgs) -> anyhow::Result<Api> {
        let (base, label) = normalize_url(&args.url)?;
        let auth = args
            .credentials
            .user
            .as_deref()
            .map(parse_credentials)
            .transpose()?;
        let mut builder = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TRANSFER_TIMEOUT)
            // Redirects are followed by hand, keeping the method, body and credentials.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("raftlite-shell/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &args.credentials.ca_cert {
            let pem = fs::read(path)
                .with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!("--ca-cert {} is not a PEM certificate file", path.display())
            })?;
            if certs.is_empty() {
                anyhow::bail!("--ca-cert {} holds no PEM certificate", path.display());
            }
            builder = builder.tls_certs_merge(certs);
        }
        if args.credentials.insecure {
            builder = builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        let client = builder.build().context("cannot set up the HTTP client")?;
        Ok(Api {
            base,
            label,
            client,
            auth,
        })
    }

    fn transport_error(&self, e: &reqwest::Error) -> CmdError {
        let mut parts: Vec<String> = Vec::new();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            let text = s.to_string();
            if !parts.iter().any(|p| p.contains(&text)) {
                parts.push(text);
            }
            source = s.source();
        }
        // The innermost cause is the informative one ("Connection refused (os error 111)",
        // "invalid peer certificate: UnknownIssuer"); the outer ones are reqwest's wrappers.
        let detail = parts.pop().unwrap_or_else(|| e.to_string());
        let base = &self.base;
        CmdError::Connection(if e.is_timeout() {
            format!("no answer from {base} in time ({detail})")
        } else if detail.contains("certificate") {
            format!(
                "cannot connect to {base}: {detail} (trust the server's CA with --ca-cert FILE, \
                 or skip the check with --insecure)"
            )
        } else if e.is_connect() {
            format!("cannot connect to {base}: {detail} (is raftlite running there?)")
        } else {
            format!("request to {base} failed: {detail}")
        })
    }

    /// Sends a request, following redirects (to the leader) with the same method, body and
    /// credentials. `body` is called again for every hop.
    fn send(
        &self,
        method: Method,
        path: &str,
        timeout: Option<Duration>,
        body: &mut dyn FnMut() -> Result<Option<(Body, &'static str)>, CmdError>,
    ) -> Result<Response, CmdError> {
        let mut url = Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| CmdError::Failed(format!("bad URL {}{path}: {e}", self.base)))?;
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.client.request(method.clone(), url.clone());
            if let Some((user, pass)) = &self.auth {
                req = req.basic_auth(user, Some(pass));
            }
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            if let Some((b, content_type)) = body()? {
                req = req.header(CONTENT_TYPE, content_type).body(b);
            }
            let resp = req.send().map_err(|e| self.transport_error(&e))?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let Some(location) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) else {
                return Ok(resp);
            };
            let next = url.join(location).map_err(|e| {
                CmdError::Failed(format!(
                    "the server redirected to a bad URL {location:?}: {e}"
                ))
            })?;
            if url.scheme() == "https" && next.scheme() != "https" {
                return Err(CmdError::Failed(format!(
                    "refusing to follow a redirect from HTTPS to {next}"
                )));
            }
            url = next;
        }
        Err(CmdError::Failed(format!(
            "too many redirects (more than {MAX_REDIRECTS}); last one to {url}"
        )))
    }

    /// Runs one statement with positional parameters.
    pub(super) fn sql(&self, sql: &str, params: &[&str]) -> Result<SqlOutput, CmdError> {
        let stmt = if params.is_empty() {
            Value::from(sql)
        } else {
            let mut v = vec![Value::from(sql)];
            v.extend(params.iter().map(|p| Value::from(*p)));
            Value::Array(v)
        };
        let body = Value::Array(vec![stmt]).to_string();
        let resp = self.send(
            Method::POST,
            "/db/request?level=weak",
            Some(REQUEST_TIMEOUT),
            &mut || Ok(Some((Body::from(body.clone()), "application/json"))),
        )?;
        let json = self.json_body(resp, "/db/request")?;
        parse_sql_response(&json, is_query_like(sql)).map_err(CmdError::Failed)
    }

    pub(super) fn get_json(&self, path: &str) -> Result<Value, CmdError> {
        let resp = self.send(Method::GET, path, Some(REQUEST_TIMEOUT), &mut || Ok(None))?;
        self.json_body(resp, path)
    }

    /// The JSON body of a 200 answer; anything else is an error carrying the server's message.
    fn json_body(&self, resp: Response, what: &str) -> Result<Value, CmdError> {
        if resp.status() != StatusCode::OK {
            return Err(http_error(resp, what));
        }
        let text = resp.text().map_err(|e| self.transport_error(&e))?;
        serde_json::from_str(&text).map_err(|e| {
            CmdError::Failed(format!(
                "{what}: the server's answer is not JSON ({e}): {}",
                excerpt(&text)
            ))
        })
    }

    /// Streams `GET path` into `dest` through a temporary file in the same directory, renamed
    /// into place once complete and synced. Returns the number of bytes.
    pub(super) fn download(
        &self,
        path: &str,
        dest: &Path,
        expect_sqlite: bool,
        progress: bool,
    ) -> Result<u64, CmdError> {
        let endpoint = path.split('?').next().unwrap_or(path);
        let mut resp = self.send(Method::GET, path, None, &mut || Ok(None))?;
        if resp.status() != StatusCode::OK {
            return Err(http_error(resp, endpoint));
        }
        let tmp = temp_path_for(dest)?;
        // Read before the body: reqwest's value shrinks as the body is consumed.
        let expected_len = resp.content_length();
        let bar = progress_bar(expected_len, progress);
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(|e| CmdError::Failed(format!("cannot create {}: {e}", tmp.display())))?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut total: u64 = 0;
            let mut head = Vec::with_capacity(SQLITE_HEADER.len());
            loop {
                let n = match resp.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(CmdError::Connection(format!(
                            "download from {}{endpoint} broke off after {total} bytes: {e}",
                            self.base
                        )))
                    }
                };
                let chunk = &buf[..n];
                if head.len() < SQLITE_HEADER.len() {
                    let take = (SQLITE_HEADER.len() - head.len()).min(n);
                    head.extend_from_slice(&chunk[..take]);
                }
                file.write_all(chunk).map_err(|e| {
                    CmdError::Failed(format!("cannot write {}: {e}", tmp.display()))
                })?;
                total += n as u64;
                bar.inc(n as u64);
            }
            if let Some(expected) = expected_len {
                if expected != total {
                    return Err(CmdError::Connection(format!(
                        "download from {}{endpoint} ended after {total} of {expected} bytes",
                        self.base
                    )));
                }
            }
            if expect_sqlite && head != SQLITE_HEADER {
                return Err(CmdError::Failed(format!(
                    "{endpoint}: the server's answer is not a SQLite database; nothing written"
                )));
            }
            file.sync_all()
                .map_err(|e| CmdError::Failed(format!("cannot sync {}: {e}", tmp.display())))?;
            drop(file);
            fs::rename(&tmp, dest).map_err(|e| {
                CmdError::Failed(format!(
                    "cannot rename {} to {}: {e}",
                    tmp.display(),
                    dest.display()
                ))
            })?;
            Ok(total)
        })();
        bar.finish_and_clear();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// `POST /db/load` with the bytes of `src`, streamed from the file as they are sent (never
    /// read whole). Returns the number of bytes sent and, when the server started a new
    /// timeline (a SQLite file), a line describing it.
    pub(super) fn restore(
        &self,
        src: &Path,
        progress: bool,
    ) -> Result<(u64, Option<String>), CmdError> {
        let len = fs::metadata(src)
            .map_err(|e| CmdError::Failed(format!("cannot read {}: {e}", src.display())))?
            .len();
        let bar = progress_bar(Some(len), progress);
        let resp = self.send(Method::POST, "/db/load", Some(RESTORE_TIMEOUT), &mut || {
            let file = File::open(src)
                .map_err(|e| CmdError::Failed(format!("cannot open {}: {e}", src.display())))?;
            bar.set_position(0);
            let reader = ProgressReader {
                inner: file,
                bar: bar.clone(),
            };
            Ok(Some((Body::sized(reader, len), "application/octet-stream")))
        });
        bar.finish_and_clear();
        let body = self.json_body(resp?, "/db/load")?;
        if let Some(err) = body.get("error").and_then(Value::as_str) {
            return Err(CmdError::Failed(format!("/db/load: {err}")));
        }
        if let Some(err) = body["results"].as_array().and_then(|r| {
            r.iter()
                .find_map(|r| r.get("error").and_then(Value::as_str))
        }) {
            return Err(CmdError::Failed(format!("/db/load: {err}")));
        }
        Ok((len, timeline_line(&body)))
    }
}

/// `New timeline #2 (id), log index N` from a `/db/load` answer that has a timeline.
fn timeline_line(answer: &Value) -> Option<String> {
    let timeline = answer.get("timeline")?;
    let id = timeline.get("id")?.as_str()?;
    let mut line = match timeline.get("counter").and_then(Value::as_u64) {
        Some(counter) => format!("New timeline #{counter} ({id})"),
        None => format!("New timeline {id}"),
    };
    if let Some(index) = answer
        .get("restore")
        .and_then(|r| r.get("index"))
        .and_then(Value::as_u64)
    {
        line.push_str(&format!(", in effect on every node from log index {index}"));
    }
    Some(line)
}

/// `<dir>/.<name>.tmp-<pid>` beside `dest`.
fn temp_path_for(dest: &Path) -> Result<PathBuf, CmdError> {
    let name = dest
        .file_name()
        .ok_or_else(|| CmdError::Failed(format!("{} is not a file name", dest.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    Ok(dest.with_file_name(tmp_name))
}

fn progress_bar(len: Option<u64>, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    match len {
        Some(len) => {
            let bar = ProgressBar::new(len);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} {bytes} {binary_bytes_per_sec}")
            {
                bar.set_style(style);
            }
            bar
        }
    }
}

struct ProgressReader<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn excerpt(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &t[..i]),
        None => t.to_owned(),
    }
}

/// A non-2xx answer as an error with the server's `error` message (or body) and a hint.
fn http_error(resp: Response, what: &str) -> CmdError {
    let status = resp.status();
    let text = resp.text().unwrap_or_default();
    let detail = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| excerpt(&text));
    let mut msg = format!("{what}: HTTP {status}");
    if !detail.is_empty() {
        msg.push_str(": ");
        msg.push_str(&detail);
    }
    match status {
        StatusCode::UNAUTHORIZED => msg.push_str(" (give credentials with -u USER:PASSWORD)"),
        StatusCode::FORBIDDEN => msg.push_str(" (the user lacks the permission for this)"),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            msg.push_str(" (this server does not support it)")
        }
        _ => {}
    }
    CmdError::Failed(msg)
}

/// Interprets the answer to a one-statement `/db/request`.
fn parse_sql_response(body: &Value, query_like: bool) -> Result<SqlOutput, String> {
    if let Some(err) = body.get("error").and_then(Value::as_str) {
        return Err(err.to_owned());
    }
    let result = body["results"]
        .as_array()
        .and_then(|r| r.first())
        .ok_or_else(|| format!("the server's answer has no results: {body}"))?;
    if let Some(err) = result.get("error") {
        return Err(err.as_str().map_or_else(|| err.to_string(), str::to_owned));
    }
    if let Some(cols) = result.get("columns").and_then(Value::as_array) {
        let columns = cols.iter().map(cell_text).collect();
        let rows = result["values"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|row| {
                        row.as_array()
                            .map(|cells| cells.iter().map(cell_text).collect())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Ok(SqlOutput::Rows { columns, rows });
    }
    let rows_affected = result.get("rows_affected").and_then(Value::as_i64);
    let last_insert_id = result.get("last_insert_id").and_then(Value::as_i64);
    if query_like && rows_affected.is_none() && last_insert_id.is_none() {
        return Ok(SqlOutput::Rows {
            columns: Vec::new(),
            rows: Vec::new(),
        });
    }
    Ok(SqlOutput::Executed {
        rows_affected: rows_affected.unwrap_or(0),
        last_insert_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn sql_responses_are_interpreted() {
        let rows = json!({"results": [{"columns": ["id", "v"], "types": ["integer", "blob"],
            "values": [[1, "AAE="], [2, null]]}]});
        assert_eq!(
            parse_sql_response(&rows, true),
            Ok(SqlOutput::Rows {
                columns: s(&["id", "v"]),
                rows: vec![s(&["1", "AAE="]), s(&["2", "NULL"])],
            })
        );
        let exec = json!({"results": [{"last_insert_id": 3, "rows_affected": 1}]});
        assert_eq!(
            parse_sql_response(&exec, false),
            Ok(SqlOutput::Executed {
                rows_affected: 1,
                last_insert_id: Some(3)
            })
        );
        let empty = json!({"results": [{}]});
        assert_eq!(
            parse_sql_response(&empty, false),
            Ok(SqlOutput::Executed {
                rows_affected: 0,
                last_insert_id: None
            })
        );
        assert_eq!(
            parse_sql_response(&empty, true),
            Ok(SqlOutput::Rows {
                columns: vec![],
                rows: vec![]
            })
        );
        let err = json!({"results": [{"error": "no such table: t"}]});
        assert_eq!(
            parse_sql_response(&err, true),
            Err("no such table: t".to_owned())
        );
        let top = json!({"results": [], "error": "not leader"});
        assert_eq!(parse_sql_response(&top, true), Err("not leader".to_owned()));
        assert!(parse_sql_response(&json!({}), true).is_err());
    }

    #[test]
    fn urls_and_credentials() {
        assert_eq!(
            normalize_url("http://127.0.0.1:4001/").unwrap(),
            (
                "http://127.0.0.1:4001".to_owned(),
                "127.0.0.1:4001".to_owned()
            )
        );
        assert_eq!(
            normalize_url("localhost:4011").unwrap(),
            (
                "http://localhost:4011".to_owned(),
                "localhost:4011".to_owned()
            )
        );
        assert_eq!(
            normalize_url("https://db.example").unwrap(),
            ("https://db.example".to_owned(), "db.example:443".to_owned())
        );
        assert_eq!(
            normalize_url("http://[::1]:4001").unwrap().1,
            "[::1]:4001".to_owned()
        );
        assert!(normalize_url("ftp://x").is_err());
        assert!(normalize_url("http://x:4001/?q=1").is_err());
        assert!(normalize_url("http://:99999").is_err());

        assert_eq!(
            parse_credentials("bob:se:cret").unwrap(),
            ("bob".to_owned(), "se:cret".to_owned())
        );
        assert_eq!(
            parse_credentials("bob:").unwrap(),
            ("bob".to_owned(), String::new())
        );
        assert!(parse_credentials("bob").is_err());
        assert!(parse_credentials(":pw").is_err());
    }

    #[test]
    fn restore_answers_name_the_new_timeline() {
        let answer = serde_json::json!({
            "results": [],
            "timeline": {"id": "abc", "counter": 3},
            "restore": {"index": 42}
        });
        assert_eq!(
            timeline_line(&answer).as_deref(),
            Some("New timeline #3 (abc), in effect on every node from log index 42")
        );
        assert_eq!(timeline_line(&serde_json::json!({"results": []})), None);
    }

    #[test]
    fn temp_file_sits_beside_the_destination() {
        let tmp = temp_path_for(Path::new("/x/y/backup.db")).unwrap();
        assert_eq!(tmp.parent(), Some(Path::new("/x/y")));
        let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".backup.db.tmp-"), "{name}");
        assert!(temp_path_for(Path::new("/")).is_err());
    }
}
