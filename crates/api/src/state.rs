//! What every handler shares: the node, the HTTP client that reaches other members, and the
//! server's configuration.

use std::sync::Arc;
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use raftlite_consensus::node::RaftNode;

use crate::auth::AuthStore;
use crate::limits::Limits;
use raftlite_backup::service::archiver::Archiver;
use raftlite_backup::service::BackupService;

/// Everything the handlers share: one per server, behind an `Arc`.
pub struct ApiState {
    pub node: RaftNode,
    pub client: reqwest::Client,
    pub metrics: Option<PrometheusHandle>,
    pub started: Instant,
    pub data_dir: std::path::PathBuf,
    /// HTTP Basic auth (`--auth FILE`); `None` lets every request through.
    pub auth: Option<Arc<AuthStore>>,
    /// `POST /backups` (`--backup-to`); `None` answers 400.
    pub backups: Option<Arc<BackupService>>,
    /// The continuous log archive (`--archive-to`), for `/status`; `None` when off.
    pub archiver: Option<Arc<Archiver>>,
    /// Requests in flight, bodies held, response size (`--max-*`).
    pub limits: Limits,
    /// The HTTP listener, as `/status` shows it (rqlite's `http` section).
    pub http: HttpInfo,
}

/// What `/status` says about the HTTP listener.
#[derive(Clone, Debug, Default)]
pub struct HttpInfo {
    /// The address the API listens on (rqlite's `http.bind_addr`).
    pub bind_addr: String,
    /// Whether the API is served over HTTPS.
    pub tls: bool,
}
