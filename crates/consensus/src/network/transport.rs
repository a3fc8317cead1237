//! The wire under the Raft RPCs: [`post_postcard`] (one POST, postcard both ways), the
//! [`TransportError`] it fails with, and the HTTP client every node-to-node call uses.

use std::error::Error as StdError;
use std::time::Duration;

use openraft::errors::{RemoteError, Unreachable};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{NodeId, TypeConfig};

/// Connect timeout of [`raft_client`], the client of [`super::HttpNetworkFactory`]. Peers are on
/// a LAN (or localhost); a connect that takes longer than this means the peer is down, and
/// openraft should back off.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Content type of every Raft request and answer body (postcard, or the snapshot frame).
pub(super) const OCTET_STREAM: &str = "application/octet-stream";

/// At most this many bytes of a non-2xx response body are kept in [`TransportError::Http`].
const MAX_ERROR_BODY: usize = 1024;

/// Why a [`post_postcard`] call failed.
///
/// The variants carrying a `reqwest::Error` display its whole source chain (reqwest's own
/// message is only "error sending request for url (...)"; the cause, e.g. "Connection refused",
/// is in the chain), because openraft logs errors with plain `Display`.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing reached the peer: connection refused, DNS failure, connect timeout, or an
    /// address that does not form a valid URL. Callers should back off before retrying.
    #[error("unreachable: {}", error_chain(.0))]
    Unreachable(reqwest::Error),

    /// The request was sent (or being sent) but no complete answer arrived within `timeout`.
    #[error("timed out after {timeout:?}: {}", error_chain(.error))]
    Timeout {
        timeout: Duration,
        error: reqwest::Error,
    },

    /// The peer answered with a non-2xx status. `body` is the start of its (text) body.
    #[error("HTTP {status}: {body}")]
    Http {
        status: reqwest::StatusCode,
        body: String,
    },

    /// The peer answered 2xx but the body is not a postcard value of the expected type.
    #[error("undecodable response body: {0}")]
    Decode(postcard::Error),

    /// The request could not be postcard-encoded (a bug, not a network condition).
    #[error("cannot encode request: {0}")]
    Encode(postcard::Error),

    /// Any other transport failure after connecting (connection reset, truncated body, ...).
    #[error("transport error: {}", error_chain(.0))]
    Network(reqwest::Error),
}

impl TransportError {
    /// Sorts a reqwest error into Unreachable / Timeout / Network.
    fn from_reqwest(error: reqwest::Error, timeout: Duration) -> Self {
        // A connect timeout is both `is_connect` and `is_timeout`: it is an unreachable peer.
        if error.is_connect() || error.is_builder() {
            TransportError::Unreachable(error)
        } else if error.is_timeout() {
            TransportError::Timeout { timeout, error }
        } else {
            TransportError::Network(error)
        }
    }

    /// The HTTP status of an [`TransportError::Http`] error.
    pub fn status(&self) -> Option<reqwest::StatusCode> {
        match self {
            TransportError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `error: cause: cause-of-cause`, skipping causes whose text is already included.
pub fn error_chain(error: &dyn StdError) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = e.source();
    }
    out
}

/// POSTs `req` postcard-encoded to `url` and decodes a postcard `Resp` from a 2xx answer.
/// `timeout` bounds the whole exchange (connect, send, and reading the response body).
pub async fn post_postcard<Req, Resp>(
    client: &reqwest::Client,
    url: &str,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, TransportError>
where
    Req: Serialize + ?Sized,
    Resp: DeserializeOwned,
{
    let body = postcard::to_allocvec(req).map_err(TransportError::Encode)?;
    let resp = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, OCTET_STREAM)
        .timeout(timeout)
        .body(body)
        .send()
        .await
        .map_err(|e| TransportError::from_reqwest(e, timeout))?;

    let status = resp.status();
    if !status.is_success() {
        return Err(TransportError::Http {
            status,
            body: error_body(resp).await,
        });
    }

    let bytes = resp
        .bytes()
        .await
        .map_err(|e| TransportError::from_reqwest(e, timeout))?;
    postcard::from_bytes(&bytes).map_err(TransportError::Decode)
}

/// The start of a non-2xx answer's body, best effort: it is only for the error message.
pub(super) async fn error_body(resp: reqwest::Response) -> String {
    match resp.bytes().await {
        Ok(b) => {
            let b = &b[..b.len().min(MAX_ERROR_BODY)];
            String::from_utf8_lossy(b).into_owned()
        }
        Err(e) => format!("<unreadable body: {}>", error_chain(&e)),
    }
}

/// The HTTP client the Raft transport uses: pooled keep-alive connections, TCP_NODELAY (Raft
/// RPCs are small, latency-bound request/response exchanges), short connect timeout, no proxy.
pub fn raft_client() -> reqwest::Client {
    raft_client_builder()
        .build()
        // Building only fails on TLS backend / resolver initialisation, neither of which this
        // configuration uses; fall back to a default client rather than failing.
        .unwrap_or_else(|e| {
            tracing::warn!(error = %error_chain(&e), "cannot build raft HTTP client, using defaults");
            reqwest::Client::new()
        })
}

/// The settings of [`raft_client`], for callers that add TLS before building.
pub fn raft_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(60))
        .no_proxy()
}

/// The peer `target` answered but its Raft has stopped (`Fatal`: shut down, panicked, or a
/// storage failure): it will not take part until restarted, so openraft should back off from it
/// as from a node that is down. (openraft 0.10's network errors have no remote-error case.)
/// Both the RPCs and the snapshot sender get such answers.
pub(super) fn remote_failure<E: StdError + 'static>(
    target: NodeId,
    error: E,
) -> Unreachable<TypeConfig> {
    Unreachable::new(&RemoteError::<TypeConfig, E>::new(target, error))
}

#[cfg(test)]
mod tests;
