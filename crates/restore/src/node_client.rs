//! The HTTP client of one node, as the backup and restore commands talk to it: its URL
//! normalized, credentials sent only as a header, an extra CA or none checked, and errors that
//! name the node and their root cause ("Connection refused") with what to do.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{StatusCode, Url};
use tokio::io::AsyncWriteExt;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one read from the node: the leader copies the whole database before the
/// first byte of the answer, so this is generous.
const READ_TIMEOUT: Duration = Duration::from_secs(600);
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// How to reach a node: `--node`, `-u`, `--ca-cert`, `--insecure`.
#[derive(Clone, Debug, Default)]
pub struct NodeSettings {
    /// `host:port` or `http(s)://host:port[/path]`.
    pub node: String,
    /// `USER:PASSWORD`.
    pub user: Option<String>,
    /// A PEM CA certificate to trust besides the system's.
    pub ca_cert: Option<PathBuf>,
    /// Accept any certificate (testing only).
    pub insecure: bool,
}

/// Why a node could not be set up, reached, or answered badly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid --node URL: {0}; expected e.g. http://127.0.0.1:4001")]
    UrlSyntax(String),
    #[error("invalid --node URL: put credentials in -u USER:PASSWORD, not in the URL")]
    UrlCredentials,
    #[error("invalid --node URL `{0}`: the scheme must be http or https")]
    UrlScheme(String),
    #[error("invalid --node URL `{0}`: no host")]
    UrlNoHost(String),
    #[error("invalid --node URL `{0}`: remove the query string or fragment")]
    UrlQuery(String),
    #[error("invalid -u value: expected USER:PASSWORD")]
    User,
    #[error("cannot read --ca-cert {}", path.display())]
    ReadCaCert {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--ca-cert {} is not a PEM certificate file", path.display())]
    BadCaCert {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("--ca-cert {} holds no PEM certificate", path.display())]
    NoCaCert { path: PathBuf },
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("no answer from the node {base} in time ({detail})")]
    Timeout { base: String, detail: String },
    #[error(
        "cannot connect to the node {base}: {detail} (trust its CA with --ca-cert FILE, or skip \
         the check with --insecure)"
    )]
    Certificate { base: String, detail: String },
    #[error("cannot connect to the node {base}: {detail} (is raftlite running there?)")]
    Connect { base: String, detail: String },
    #[error("request to the node {base} failed: {detail}")]
    Request { base: String, detail: String },
    /// A non-200 answer: the method, URL, status, the server's message and a hint.
    #[error("{0}")]
    Http(String),
    #[error("cannot create {}", path.display())]
    CreateSnapshot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the snapshot download from {url} broke off after {total} bytes: {detail}; run the \
         backup again"
    )]
    BrokeOff {
        url: String,
        total: u64,
        detail: String,
    },
    #[error(
        "cannot write the snapshot to {} (is TMPDIR full? it needs room for the whole \
         database)",
        path.display()
    )]
    WriteSnapshot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", path.display())]
    FlushSnapshot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the snapshot download from {url} ended after {total} of {expected} bytes; run the \
         backup again"
    )]
    ShortSnapshot {
        url: String,
        total: u64,
        expected: u64,
    },
    #[error(
        "the answer of {url} is not a SQLite database ({total} bytes); is {base} a raftlite node?"
    )]
    NotSqlite {
        url: String,
        total: u64,
        base: String,
    },
}

/// Told how far a download got: a progress bar in the CLI.
pub trait DownloadProgress: Send + Sync {
    /// The node answered; `len` is the size it announced, if any.
    fn started(&self, len: Option<u64>);
    /// `bytes` more arrived.
    fn received(&self, bytes: u64);
    /// The download ended (complete or not).
    fn finished(&self);
}

/// Progress that nobody watches.
pub struct NoDownloadProgress;

impl DownloadProgress for NoDownloadProgress {
    fn started(&self, _len: Option<u64>) {}
    fn received(&self, _bytes: u64) {}
    fn finished(&self) {}
}

pub struct NodeClient {
    /// `http(s)://host:port[/path]`, no trailing `/`.
    pub base: String,
    pub client: reqwest::Client,
    pub auth: Option<(String, String)>,
}

/// A downloaded snapshot.
pub struct Downloaded {
    pub bytes: u64,
    /// `x-raftlite-applied-index`, when the node sent it.
    pub applied_header: Option<u64>,
}

impl NodeClient {
    pub fn new(conn: &NodeSettings) -> Result<NodeClient, NodeError> {
        NodeClient::with_read_timeout(conn, READ_TIMEOUT)
    }

    /// [`NodeClient::new`] with another limit for one read from the node (a restore answers
    /// only once the whole cluster switched to the new file).
    pub fn with_read_timeout(
        conn: &NodeSettings,
        read_timeout: Duration,
    ) -> Result<NodeClient, NodeError> {
        let base = normalize_node_url(&conn.node)?;
        let auth = match conn.user.as_deref() {
            None => None,
            Some(raw) => match raw.split_once(':') {
                Some((user, pass)) if !user.is_empty() => {
                    Some((user.to_string(), pass.to_string()))
                }
                _ => return Err(NodeError::User),
            },
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(read_timeout)
            .user_agent(concat!("raftlite-backup/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &conn.ca_cert {
            let pem = std::fs::read(path).map_err(|source| NodeError::ReadCaCert {
                path: path.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                NodeError::BadCaCert {
                    path: path.clone(),
                    source,
                }
            })?;
            if certs.is_empty() {
                return Err(NodeError::NoCaCert { path: path.clone() });
            }
            builder = builder.tls_certs_merge(certs);
        }
        if conn.insecure {
            builder = builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        let client = builder.build().map_err(NodeError::Client)?;
        Ok(NodeClient { base, client, auth })
    }

    /// `request` with this client's credentials, if any.
    pub fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((user, pass)) => request.basic_auth(user, Some(pass)),
            None => request,
        }
    }

    /// Streams the node's consistent copy into `target`. Returns its size.
    pub async fn download_snapshot(
        &self,
        target: &Path,
        progress: &dyn DownloadProgress,
    ) -> Result<Downloaded, NodeError> {
        // With raftlite's meta table, which a user's download leaves out: the backup records
        // the copy's applied position and timeline.
        let url = format!("{}/db/backup?raftlite_meta", self.base);
        let request = self.authorized(self.client.get(&url));
        let mut resp = request.send().await.map_err(|e| self.transport_error(&e))?;
        if resp.status() != StatusCode::OK {
            return Err(http_error(resp, &url).await);
        }
        let expected = resp.content_length();
        let applied_header = resp
            .headers()
            .get("x-raftlite-applied-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());

        progress.started(expected);
        let result = async {
            let file = tokio::fs::File::create(target).await.map_err(|source| {
                NodeError::CreateSnapshot {
                    path: target.to_path_buf(),
                    source,
                }
            })?;
            let mut file = tokio::io::BufWriter::with_capacity(256 * 1024, file);
            let mut total: u64 = 0;
            let mut head = Vec::with_capacity(SQLITE_HEADER.len());
            while let Some(chunk) = resp.chunk().await.map_err(|e| NodeError::BrokeOff {
                url: url.clone(),
                total,
                detail: innermost(&e),
            })? {
                if head.len() < SQLITE_HEADER.len() {
                    let take = (SQLITE_HEADER.len() - head.len()).min(chunk.len());
                    head.extend_from_slice(&chunk[..take]);
                }
                file.write_all(&chunk)
                    .await
                    .map_err(|source| NodeError::WriteSnapshot {
                        path: target.to_path_buf(),
                        source,
                    })?;
                total += chunk.len() as u64;
                progress.received(chunk.len() as u64);
            }
            file.flush()
                .await
                .map_err(|source| NodeError::FlushSnapshot {
                    path: target.to_path_buf(),
                    source,
                })?;
            if let Some(expected) = expected {
                if expected != total {
                    return Err(NodeError::ShortSnapshot {
                        url: url.clone(),
                        total,
                        expected,
                    });
                }
            }
            if head != SQLITE_HEADER {
                return Err(NodeError::NotSqlite {
                    url: url.clone(),
                    total,
                    base: self.base.clone(),
                });
            }
            Ok(total)
        }
        .await;
        progress.finished();
        Ok(Downloaded {
            bytes: result?,
            applied_header,
        })
    }

    /// A request that failed before any answer, naming the node and what to do.
    pub fn transport_error(&self, e: &reqwest::Error) -> NodeError {
        let detail = innermost(e);
        let base = self.base.clone();
        if e.is_timeout() {
            NodeError::Timeout { base, detail }
        } else if detail.contains("certificate") {
            NodeError::Certificate { base, detail }
        } else if e.is_connect() {
            NodeError::Connect { base, detail }
        } else {
            NodeError::Request { base, detail }
        }
    }
}

/// `e`'s message, followed by its innermost cause in parentheses when the message does not
/// already say it (object_store's "error sending request" hides "Connection refused").
pub fn with_root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let text = e.to_string();
    let mut root = None;
    let mut source = e.source();
    while let Some(s) = source {
        root = Some(s.to_string());
        source = s.source();
    }
    match root {
        Some(root) if !text.contains(&root) => format!("{} ({root})", text.trim_end()),
        _ => text,
    }
}

/// The innermost cause of a reqwest error ("Connection refused (os error 111)"); the outer
/// ones are reqwest's wrappers.
pub fn innermost(e: &reqwest::Error) -> String {
    let mut last = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// A non-200 answer as an error with the server's `error` message (or body) and a hint.
async fn http_error(resp: reqwest::Response, url: &str) -> NodeError {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| excerpt(&text));
    let mut msg = format!("GET {url}: HTTP {status}");
    if !detail.is_empty() {
        msg.push_str(": ");
        msg.push_str(&detail);
    }
    msg.push_str(match status {
        StatusCode::UNAUTHORIZED => " (give credentials with -u USER:PASSWORD)",
        StatusCode::FORBIDDEN => " (the user needs the `backup` permission)",
        StatusCode::SERVICE_UNAVAILABLE => {
            " (the cluster has no leader right now; retry in a moment)"
        }
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => " (is this a raftlite node?)",
        _ => "",
    });
    NodeError::Http(msg)
}

/// The first 300 characters of an answer's body, trimmed.
pub fn excerpt(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &t[..i]),
        None => t.to_owned(),
    }
}

/// `http://` added when no scheme is given, trailing `/`s dropped; credentials, queries and
/// fragments refused.
fn normalize_node_url(raw: &str) -> Result<String, NodeError> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| NodeError::UrlSyntax(e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(NodeError::UrlCredentials);
    }
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(NodeError::UrlScheme(raw.to_owned()));
    }
    if url.host_str().is_none() {
        return Err(NodeError::UrlNoHost(raw.to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(NodeError::UrlQuery(raw.to_owned()));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls() {
        assert_eq!(
            normalize_node_url("127.0.0.1:4001/").unwrap(),
            "http://127.0.0.1:4001"
        );
        assert_eq!(
            normalize_node_url("https://db.example/raftlite/").unwrap(),
            "https://db.example/raftlite"
        );
        let err = normalize_node_url("http://admin:hunter2@127.0.0.1:4001").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(normalize_node_url("ftp://x").is_err());
        assert!(normalize_node_url("http://x/?a=1").is_err());
    }
}
