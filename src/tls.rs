//! TLS for `raftlite serve`: HTTPS on the HTTP API (`--http-cert`/`--http-key`, optionally
//! requiring client certificates with `--http-ca-cert` + `--http-verify-client`), TLS on the
//! Raft port (`--node-cert`/`--node-key`, mutual with `--node-ca` + `--node-verify-client`),
//! and the HTTPS clients nodes use to reach each other (Raft RPC, joins, forwarding).
//!
//! rustls with the aws-lc-rs provider: the provider reqwest's `rustls` feature already uses, so
//! only one crypto library is built, and it builds with a C compiler alone (no cmake or nasm).
//! Every config names its provider explicitly; nothing depends on a process-wide default.
//!
//! Which CA verifies what:
//! - peers' Raft ports are verified against `--node-ca`;
//! - other members' HTTP APIs (joins, forwarding) against `--node-ca` and `--http-ca-cert`;
//! - without either, against the system's CA certificates.
//!
//! Node-to-node clients present `--node-cert`, so with `--http-verify-client` the node
//! certificates must be signed by `--http-ca-cert` (simplest: one CA for everything).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::SecurityConfig;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS record type of a handshake: the first byte a TLS client sends.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Why TLS could not be set up. Each message names the flag and file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    // The io error is in the message rather than a `source`, so `{:#}` does not repeat it.
    #[error("{flag} {}: cannot read the file: {error}; check the path and its permissions", path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("{flag} {}: {problem}", path.display())]
    Invalid {
        flag: &'static str,
        path: PathBuf,
        problem: String,
    },

    #[error(
        "{key_flag} {} does not match the certificate in {cert_flag} {}: {problem}; pass the \
         private key the certificate was issued for",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        key_flag: &'static str,
        key: PathBuf,
        cert_flag: &'static str,
        cert: PathBuf,
        problem: String,
    },

    #[error("{0}")]
    Flags(String),

    #[error("cannot set up TLS: {0}")]
    Setup(String),

    #[error("cannot build the {what} HTTP client: {message}")]
    Client { what: &'static str, message: String },
}

fn invalid(flag: &'static str, path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        flag,
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Everything TLS-related `serve` needs, loaded and checked once at start-up.
#[derive(Debug)]
pub struct TlsSetup {
    /// HTTPS on the HTTP API, when `--http-cert` is set.
    pub http_server: Option<Arc<ServerConfig>>,
    /// TLS on the Raft port, when `--node-cert` is set.
    pub raft_server: Option<Arc<ServerConfig>>,
    raft_client: ClientConfig,
    api_client: ClientConfig,
}

impl TlsSetup {
    /// Checks the flags' combinations, reads and checks every file, and builds the configs.
    pub fn load(sec: &SecurityConfig) -> Result<TlsSetup, TlsError> {
        check_flags(sec)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());

        let http_server = match (&sec.http_cert, &sec.http_key) {
            (Some(cert), Some(key)) => {
                let identity = load_identity(&provider, "--http-cert", cert, "--http-key", key)?;
                let client_ca = sec
                    .http_verify_client
                    .then_some(sec.http_ca_cert.as_deref())
                    .flatten()
                    .map(|p| ("--http-ca-cert", p));
                Some(Arc::new(server_config(&provider, identity, client_ca)?))
            }
            _ => None,
        };

        let node_identity = match (&sec.node_cert, &sec.node_key) {
            (Some(cert), Some(key)) => Some(load_identity(
                &provider,
                "--node-cert",
                cert,
                "--node-key",
                key,
            )?),
            _ => None,
        };
        let raft_server = match &node_identity {
            Some(identity) => {
                let client_ca = sec
                    .node_verify_client
                    .then_some(sec.node_ca.as_deref())
                    .flatten()
                    .map(|p| ("--node-ca", p));
                Some(Arc::new(server_config(
                    &provider,
                    identity.clone(),
                    client_ca,
                )?))
            }
            None => None,
        };

        let mut raft_roots = RootCertStore::empty();
        let mut api_roots = RootCertStore::empty();
        if let Some(ca) = &sec.node_ca {
            add_roots("--node-ca", ca, &mut raft_roots)?;
            add_roots("--node-ca", ca, &mut api_roots)?;
        }
        if let Some(ca) = &sec.http_ca_cert {
            add_roots("--http-ca-cert", ca, &mut api_roots)?;
        }
        if raft_roots.is_empty() || api_roots.is_empty() {
            let system = system_roots();
            if raft_roots.is_empty() {
                if node_identity.is_some() {
                    tracing::warn!(
                        "--node-cert without --node-ca: peers' Raft certificates are checked \
                         against the system's CA certificates; pass --node-ca FILE for a \
                         private CA"
                    );
                }
                raft_roots = system.clone();
            }
            if api_roots.is_empty() {
                api_roots = system;
            }
        }
        if sec.node_ca.is_some() && node_identity.is_none() {
            tracing::warn!(
                "--node-ca without --node-cert: the Raft port stays plain HTTP and peers are \
                 reached over http; --node-ca is used only to verify other members' HTTPS APIs"
            );
        }

        let raft_client = client_config(&provider, raft_roots, node_identity.clone())?;
        let api_client = client_config(&provider, api_roots, node_identity)?;
        Ok(TlsSetup {
            http_server,
            raft_server,
            raft_client,
            api_client,
        })
    }

    /// URL scheme of this cluster's Raft ports.
    pub fn raft_scheme(&self) -> &'static str {
        if self.raft_server.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The API address other nodes and clients are told: `https://HOST:PORT` when the API
    /// speaks HTTPS (nodes build `http://` URLs from a bare `HOST:PORT`).
    pub fn advertised_api_addr(&self, addr: &str) -> String {
        if self.http_server.is_some() && !addr.contains("://") {
            format!("https://{addr}")
        } else {
            addr.to_owned()
        }
    }

    /// The client for Raft RPCs: the usual Raft transport settings, trusting `--node-ca` and
    /// presenting `--node-cert`.
    pub fn raft_client(&self) -> Result<reqwest::Client, TlsError> {
        raftlite_consensus::network::raft_client_builder()
            .tls_backend_preconfigured(self.raft_client.clone())
            .build()
            .map_err(|e| TlsError::Client {
                what: "Raft",
                message: error_chain(&e),
            })
    }

    /// The client for joins and forwarding to other members' HTTP APIs.
    pub fn api_client(&self, timeout: Duration) -> Result<reqwest::Client, TlsError> {
        reqwest::Client::builder()
            .timeout(timeout)
            .tls_backend_preconfigured(self.api_client.clone())
            .build()
            .map_err(|e| TlsError::Client {
                what: "node-to-node",
                message: error_chain(&e),
            })
    }
}

/// Refuses combinations of flags that cannot work, saying which flag is missing.
fn check_flags(sec: &SecurityConfig) -> Result<(), TlsError> {
    let need = |ok: bool, message: &str| {
        if ok {
            Ok(())
        } else {
            Err(TlsError::Flags(message.to_owned()))
        }
    };
    need(
        sec.http_key.is_some() || sec.http_cert.is_none(),
        "--http-cert needs --http-key, the PEM private key of that certificate",
    )?;
    need(
        sec.http_cert.is_some() || sec.http_key.is_none(),
        "--http-key needs --http-cert, the PEM certificate (chain) it belongs to",
    )?;
    need(
        !sec.http_verify_client || sec.http_cert.is_some(),
        "--http-verify-client needs --http-cert and --http-key: client certificates are only \
         checked over HTTPS",
    )?;
    need(
        !sec.http_verify_client || sec.http_ca_cert.is_some(),
        "--http-verify-client needs --http-ca-cert, the CA that client certificates must be \
         signed by",
    )?;
    need(
        sec.node_key.is_some() || sec.node_cert.is_none(),
        "--node-cert needs --node-key, the PEM private key of that certificate",
    )?;
    need(
        sec.node_cert.is_some() || sec.node_key.is_none(),
        "--node-key needs --node-cert, the PEM certificate (chain) it belongs to",
    )?;
    need(
        !sec.node_verify_client || sec.node_cert.is_some(),
        "--node-verify-client needs --node-cert and --node-key: peers' certificates are only \
         checked when the Raft port speaks TLS",
    )?;
    need(
        !sec.node_verify_client || sec.node_ca.is_some(),
        "--node-verify-client needs --node-ca, the CA that other nodes' certificates must be \
         signed by",
    )?;
    if sec.http_ca_cert.is_some() && !sec.http_verify_client {
        tracing::info!(
            "--http-ca-cert without --http-verify-client: API clients need no certificate; the \
             CA is used only to verify other members' HTTPS APIs"
        );
    }
    Ok(())
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        flag,
        path: path.to_path_buf(),
        error,
    })
}

fn pem_problem(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a PEM block has no end line {:?} (is the file truncated?)",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "malformed PEM begin line {:?}",
            String::from_utf8_lossy(line)
        ),
        pem::Error::Base64Decode(m) => format!("a PEM block is not valid base64 ({m})"),
        other => other.to_string(),
    }
}

/// Every certificate in a PEM file, in order; at least one.
fn load_certs(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(flag, path)?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        match item {
            Ok(cert) => certs.push(cert),
            Err(e) => return Err(invalid(flag, path, pem_problem(&e))),
        }
    }
    if certs.is_empty() {
        let hint = if contains(&bytes, b"PRIVATE KEY-----") {
            "it holds a private key, not a certificate; are the cert and key flags swapped?"
        } else {
            "expected a PEM `-----BEGIN CERTIFICATE-----` block"
        };
        return Err(invalid(
            flag,
            path,
            format!("contains no certificate: {hint}"),
        ));
    }
    Ok(certs)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
fn load_key(flag: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(flag, path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            let hint = if contains(&bytes, b"ENCRYPTED PRIVATE KEY") {
                "the key is encrypted; write an unencrypted copy (e.g. `openssl pkey -in KEY \
                 -out KEY.plain`) readable only by raftlite"
            } else if contains(&bytes, b"BEGIN CERTIFICATE") {
                "it holds a certificate, not a key; are the cert and key flags swapped?"
            } else {
                "expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block"
            };
            Err(invalid(
                flag,
                path,
                format!("contains no private key: {hint}"),
            ))
        }
        Err(e) => Err(invalid(flag, path, pem_problem(&e))),
    }
}

/// A certificate chain and its private key, checked to belong together.
struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({} certificate(s), key)", self.certs.len())
    }
}

fn load_identity(
    provider: &CryptoProvider,
    cert_flag: &'static str,
    cert: &Path,
    key_flag: &'static str,
    key: &Path,
) -> Result<Identity, TlsError> {
    let certs = load_certs(cert_flag, cert)?;
    let private_key = load_key(key_flag, key)?;
    match CertifiedKey::from_der(certs.clone(), private_key.clone_key(), provider) {
        Ok(_) => Ok(Identity {
            certs,
            key: private_key,
        }),
        Err(rustls::Error::InconsistentKeys(why)) => Err(TlsError::KeyMismatch {
            key_flag,
            key: key.to_path_buf(),
            cert_flag,
            cert: cert.to_path_buf(),
            problem: match why {
                rustls::InconsistentKeys::KeyMismatch => {
                    "the key's public key is not the one in the certificate".to_owned()
                }
                other => format!("{other:?}"),
            },
        }),
        Err(e) => Err(invalid(
            key_flag,
            key,
            format!(
                "cannot be used with the certificate in {cert_flag} {}: {e}",
                cert.display()
            ),
        )),
    }
}

fn add_roots(flag: &'static str, path: &Path, store: &mut RootCertStore) -> Result<(), TlsError> {
    for cert in load_certs(flag, path)? {
        store.add(cert).map_err(|e| {
            invalid(
                flag,
                path,
                format!("holds a certificate that cannot be used as a CA: {e}"),
            )
        })?;
    }
    Ok(())
}

/// The system's CA certificates, best effort: none found only means https:// peers must be
/// trusted through `--node-ca`/`--http-ca-cert`.
fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!(error = %e, "cannot load some system CA certificates");
    }
    let mut store = RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "system CA certificates loaded");
    store
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    identity: Identity,
    client_ca: Option<(&'static str, &Path)>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = match client_ca {
        Some((flag, path)) => {
            let mut roots = RootCertStore::empty();
            add_roots(flag, path, &mut roots)?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| {
                        invalid(
                            flag,
                            path,
                            format!("cannot verify client certificates with it: {e}"),
                        )
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(identity.certs, identity.key)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    roots: RootCertStore,
    identity: Option<Identity>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(roots);
    match identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.certs, identity.key)
            .map_err(|e| TlsError::Setup(e.to_string())),
        None => Ok(builder.with_no_client_auth()),
    }
}

pub use raftlite_consensus::network::error_chain;

// ---------------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------------

/// Serves `app` over TLS on `listener` until `stop` turns true (or its sender is dropped), then
/// lets open connections finish their current request and returns once all have closed.
/// Failed handshakes are logged at debug level and only end that connection. `name` says
/// which server it is in logs.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
    name: &'static str,
) {
    let acceptor = TlsAcceptor::from(config);
    // Every connection task holds a sender; `recv` returns `None` once all have ended.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Per-connection failures (reset before accept) and resource exhaustion
                // (EMFILE): log, pause briefly so a persistent error does not spin, go on.
                tracing::debug!(server = name, error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve_connection(
            tcp,
            peer,
            acceptor.clone(),
            app.clone(),
            stop.clone(),
            open_tx.clone(),
            name,
        ));
    }
    drop(open_tx);
    let _ = open_rx.recv().await;
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
    _open: mpsc::Sender<()>,
    name: &'static str,
) {
    let handshake = async {
        if is_plain_http(&tcp).await {
            refuse_plain_http(tcp, peer, name).await;
            return None;
        }
        match acceptor.accept(tcp).await {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::debug!(server = name, %peer, error = %e, "TLS handshake failed");
                None
            }
        }
    };
    let stream = tokio::select! {
        _ = stopped(&mut stop) => return,
        done = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => match done {
            Ok(Some(stream)) => stream,
            Ok(None) => return,
            Err(_) => {
                tracing::debug!(server = name, %peer, "TLS handshake timed out");
                return;
            }
        },
    };

    let builder = auto::Builder::new(TokioExecutor::new());
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(server = name, %peer, error = %e, "connection ended with an error");
    }
}

/// Resolves once `stop` is true or its sender is gone (without holding the watch's lock).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// True when the client's first byte looks like a plain-HTTP request line rather than a TLS
/// handshake (which starts with 0x16).
async fn is_plain_http(tcp: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1) => first[0] != TLS_HANDSHAKE_RECORD && first[0].is_ascii_uppercase(),
        _ => false,
    }
}

/// Answers a plain-HTTP request on a TLS port with a 400 that says to use https.
async fn refuse_plain_http(mut tcp: TcpStream, peer: SocketAddr, name: &'static str) {
    tracing::debug!(server = name, %peer, "plain HTTP request on a TLS port refused");
    let body = "this port speaks HTTPS only; use an https:// URL\n";
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.write_all(response.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).expect("create test file");
        f.write_all(contents).expect("write test file");
        path
    }

    fn provider() -> CryptoProvider {
        rustls::crypto::aws_lc_rs::default_provider()
    }

    #[test]
    fn missing_file_names_flag_and_path() {
        let err = load_certs("--http-cert", Path::new("/nonexistent/cert.pem")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("--http-cert"), "{msg}");
        assert!(msg.contains("/nonexistent/cert.pem"), "{msg}");
        assert!(msg.contains("cannot read"), "{msg}");
    }

    #[test]
    fn file_without_pem_blocks_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = write(dir.path(), "junk.pem", b"hello, not a certificate\n");
        let msg = load_certs("--node-cert", &junk).unwrap_err().to_string();
        assert!(msg.contains("contains no certificate"), "{msg}");
        let msg = load_key("--node-key", &junk).unwrap_err().to_string();
        assert!(msg.contains("contains no private key"), "{msg}");

        let truncated = write(
            dir.path(),
            "trunc.pem",
            b"-----BEGIN CERTIFICATE-----\nMIIB\n",
        );
        let msg = load_certs("--node-ca", &truncated).unwrap_err().to_string();
        assert!(
            msg.contains("--node-ca") && msg.contains("end line"),
            "{msg}"
        );
    }

    #[test]
    fn encrypted_key_is_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = write(
            dir.path(),
            "enc.pem",
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let msg = load_key("--http-key", &key).unwrap_err().to_string();
        assert!(msg.contains("encrypted"), "{msg}");
    }

    #[test]
    fn flag_combinations_are_checked() {
        let p = || Some(PathBuf::from("/x.pem"));
        let cases = [
            (
                SecurityConfig {
                    http_cert: p(),
                    ..Default::default()
                },
                "--http-key",
            ),
            (
                SecurityConfig {
                    http_key: p(),
                    ..Default::default()
                },
                "--http-cert",
            ),
            (
                SecurityConfig {
                    http_cert: p(),
                    http_key: p(),
                    http_verify_client: true,
                    ..Default::default()
                },
                "--http-ca-cert",
            ),
            (
                SecurityConfig {
                    node_cert: p(),
                    node_key: p(),
                    node_verify_client: true,
                    ..Default::default()
                },
                "--node-ca",
            ),
            (
                SecurityConfig {
                    node_verify_client: true,
                    node_ca: p(),
                    ..Default::default()
                },
                "--node-cert",
            ),
        ];
        for (sec, wanted) in cases {
            let msg = check_flags(&sec).unwrap_err().to_string();
            assert!(msg.contains(wanted), "{msg} should name {wanted}");
        }
        assert!(check_flags(&SecurityConfig::default()).is_ok());
    }

    #[test]
    fn no_flags_means_plain_http() {
        let setup = TlsSetup::load(&SecurityConfig::default()).expect("no TLS flags load");
        assert!(setup.http_server.is_none() && setup.raft_server.is_none());
        assert_eq!(setup.raft_scheme(), "http");
        assert_eq!(
            setup.advertised_api_addr("127.0.0.1:4001"),
            "127.0.0.1:4001"
        );
        setup.raft_client().expect("raft client");
        setup
            .api_client(Duration::from_secs(1))
            .expect("api client");
    }

    #[test]
    fn key_of_another_certificate_is_a_mismatch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let make = |name: &str| {
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
                .expect("params")
                .self_signed(&key)
                .expect("cert");
            (
                write(dir.path(), &format!("{name}.crt"), cert.pem().as_bytes()),
                write(
                    dir.path(),
                    &format!("{name}.key"),
                    key.serialize_pem().as_bytes(),
                ),
            )
        };
        let (cert_a, key_a) = make("a");
        let (_cert_b, key_b) = make("b");
        let p = provider();
        load_identity(&p, "--http-cert", &cert_a, "--http-key", &key_a).expect("matching pair");
        let err = load_identity(&p, "--http-cert", &cert_a, "--http-key", &key_b).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("b.key") && msg.contains("a.crt"), "{msg}");

        // Swapped flags are recognised.
        let msg = load_certs("--http-cert", &key_a).unwrap_err().to_string();
        assert!(msg.contains("swapped"), "{msg}");
        let msg = load_key("--http-key", &cert_a).unwrap_err().to_string();
        assert!(msg.contains("swapped"), "{msg}");

        // A full setup with these files: HTTPS advertised, Raft over https.
        let sec = SecurityConfig {
            http_cert: Some(cert_a.clone()),
            http_key: Some(key_a.clone()),
            node_cert: Some(cert_a.clone()),
            node_key: Some(key_a),
            node_ca: Some(cert_a),
            node_verify_client: true,
            ..Default::default()
        };
        let setup = TlsSetup::load(&sec).expect("setup");
        assert_eq!(setup.raft_scheme(), "https");
        assert_eq!(
            setup.advertised_api_addr("127.0.0.1:4001"),
            "https://127.0.0.1:4001"
        );
        assert_eq!(
            setup.advertised_api_addr("https://db1:4001"),
            "https://db1:4001"
        );
    }
}
