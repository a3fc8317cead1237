//! `raftlite serve`: classify the data dir, start Raft and the HTTP servers, bootstrap or join.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use raftlite_api::server::{router, ApiState, JoinRequest};
use raftlite_consensus::network::raft_router;
use raftlite_consensus::node::{NodeConfig, RaftNode};
use raftlite_consensus::startup::{classify, DataDirState};
use raftlite_consensus::NodeAddr;
use tokio::net::TcpListener;

use crate::config::{resolve, ServeArgs, ServeConfig};

const NODE_ID_FILE: &str = "node-id";

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = resolve(args)?;
    init_tracing(&config.log_level);

    let state = classify(&config.data_dir);
    if !state.can_start() {
        bail!(
            "refusing to start on data dir {}: {state}",
            config.data_dir.display()
        );
    }
    tracing::info!(data_dir = %config.data_dir.display(), state = state.name(), "{state}");

    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let node_id = resolve_node_id(&config.data_dir, config.node_id)?;
    let addr = NodeAddr {
        raft_addr: config.raft_advertise_addr.clone(),
        api_addr: config.http_advertise_addr.clone(),
    };

    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on --http-addr {}", config.http_addr))?;
    let raft_listener = TcpListener::bind(config.raft_addr)
        .await
        .with_context(|| format!("cannot listen on --raft-addr {}", config.raft_addr))?;

    let mut node_config = NodeConfig::new(node_id, &config.data_dir, addr.clone());
    node_config.snapshot_threshold = config.snapshot_threshold;
    let node = RaftNode::start(node_config).await?;

    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
        .ok();
    let api = Arc::new(ApiState {
        node: node.clone(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?,
        metrics,
        started: Instant::now(),
        data_dir: config.data_dir.clone(),
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http = tokio::spawn(serve_until(http_listener, router(api), stop_rx.clone()));
    let raft = tokio::spawn(serve_until(
        raft_listener,
        raft_router(node.raft().clone()),
        stop_rx,
    ));
    tracing::info!(
        node_id,
        http = %config.http_addr,
        raft = %config.raft_addr,
        "raftlite is listening"
    );

    if matches!(state, DataDirState::Empty) && config.join.is_empty() {
        node.bootstrap().await?;
    }
    let joins = join_targets(&config);
    if !joins.is_empty() {
        tokio::spawn(join_cluster(joins, node_id, addr));
    }

    wait_for_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = http.await;
        let _ = raft.await;
    })
    .await;
    Ok(())
}

async fn serve_until(
    listener: TcpListener,
    app: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "server stopped");
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(format!("{level},openraft=warn")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The node id: the flag, else the one this data dir was created with, else a new random one.
/// A flag that contradicts the data dir is refused: the log's vote belongs to the old id.
fn resolve_node_id(data_dir: &Path, flag: Option<u64>) -> anyhow::Result<u64> {
    let path = data_dir.join(NODE_ID_FILE);
    let stored = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().parse::<u64>().with_context(|| {
            format!("{} is damaged: expected a node id number", path.display())
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let id = match (flag, stored) {
        (Some(f), Some(s)) if f != s => bail!(
            "--node-id {f} contradicts data dir {} which belongs to node {s}; use --node-id {s} \
             or a different --data-dir",
            data_dir.display()
        ),
        (Some(f), _) => f,
        (None, Some(s)) => s,
        // Below 2^53 so the id survives JSON number handling in every client language.
        (None, None) => (rand::random::<u64>() % ((1u64 << 53) - 1)) + 1,
    };
    if stored.is_none() {
        write_synced(&path, id.to_string().as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(id)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn join_targets(config: &ServeConfig) -> Vec<String> {
    let own = [
        format!("http://{}", config.http_advertise_addr),
        format!("https://{}", config.http_advertise_addr),
    ];
    config
        .join
        .iter()
        .filter(|url| !own.contains(url))
        .cloned()
        .collect()
}

/// Asks the listed members to add this node until one accepts. Joining an existing member is
/// a no-op on the leader, so this also runs after restarts.
async fn join_cluster(targets: Vec<String>, node_id: u64, addr: NodeAddr) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client for joining");
            return;
        }
    };
    let body = JoinRequest {
        id: serde_json::json!(node_id),
        addr: addr.raft_addr.clone(),
        api_addr: addr.api_addr.clone(),
    };
    let mut attempt: u32 = 0;
    loop {
        for target in &targets {
            let url = format!("{}/join", target.trim_end_matches('/'));
            match client.post(&url).json(&body).send().await {
                Ok(resp) if resp.status().is_success() => {
                    tracing::info!(%url, "joined the cluster");
                    return;
                }
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    tracing::warn!(%url, %status, body = %text, "join refused; will retry");
                }
                Err(e) => tracing::warn!(%url, error = %e, "join failed; will retry"),
            }
        }
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt.min(4)))).await;
    }
}
