//! `raftlite serve`: classify the data dir, start Raft and the HTTP servers, bootstrap or join.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use raftlite_api::auth::{AuthStore, Perm};
use raftlite_api::server::{router, ApiState, JoinRequest};
use raftlite_backup::service::archiver::{ArchiveSettings, Archiver, DEFAULT_ARCHIVE_INTERVAL};
use raftlite_backup::service::copier::{Copier, CopyTarget};
use raftlite_backup::service::{BackupService, BackupSettings};
use raftlite_backup::{parse_duration, RetentionPolicy, Schedule};
use raftlite_consensus::node::{NodeConfig, RaftNode};
use raftlite_consensus::startup::{classify, DataDirState};
use raftlite_consensus::NodeAddr;
use tokio::net::TcpListener;

use crate::config::{is_off, resolve, ServeArgs, ServeConfig};

const NODE_ID_FILE: &str = "node-id";
/// Backups run hourly when a destination is set (or defaulted) and no schedule is given.
const DEFAULT_BACKUP_INTERVAL: Duration = Duration::from_secs(3600);
/// How long auto-restore keeps retrying a failing destination before the start fails.
const DEFAULT_AUTO_RESTORE_TIMEOUT: Duration = Duration::from_secs(120);
/// Restore drills of the newest backup run daily unless configured otherwise.
const DEFAULT_VERIFY_INTERVAL: Duration = Duration::from_secs(24 * 3600);

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = resolve(args)?;
    init_tracing(&config.log_level);
    let tls = crate::tls::TlsSetup::load(&config.security).context("refusing to start")?;
    let (auth, join_credentials) = load_auth(&config)?;
    let backups = load_backups(&config)?;
    let archiver = load_archiver(&config, backups.as_ref())?;
    let copier = load_copier(&config, backups.as_ref())?;

    let addr = NodeAddr {
        raft_addr: config.raft_advertise_addr.clone(),
        api_addr: tls.advertised_api_addr(&config.http_advertise_addr),
    };
    let mut state = classify(&config.data_dir);
    if config.recovery_mode && !state.can_start() {
        if !config.join.is_empty() {
            bail!(
                "refusing to start: --recovery-mode starts a new single-node cluster from this \
                 data dir, so --join makes no sense with it. To rejoin a running cluster \
                 instead, move the data dir aside, remove the node (DELETE /remove) and start \
                 it empty with --join"
            );
        }
        let node_id = resolve_node_id(&config.data_dir, config.node_id)?;
        state = run_recovery_mode(&config.data_dir, state, node_id, &addr).await?;
    } else if config.recovery_mode {
        tracing::warn!(
            state = state.name(),
            "--recovery-mode: nothing to recover; starting normally (remove the flag: it is \
             for one start after a loss)"
        );
    }
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

    let auto_restore = auto_restore_settings(&config)?;
    let mut http_listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on --http-addr {}", config.http_addr))?;
    if let Some(settings) = auto_restore {
        if !matches!(state, DataDirState::Empty) {
            tracing::info!(
                state = state.name(),
                "auto-restore skipped: the data dir already holds data; serving its own data \
                 (auto-restore only ever fills a brand-new empty node)"
            );
        } else if !config.join.is_empty() {
            tracing::info!(
                "auto-restore skipped: this node joins an existing cluster (--join), which \
                 gives it the cluster's data"
            );
        } else {
            http_listener = auto_restore_while_not_ready(
                &config,
                &tls,
                http_listener,
                &settings,
                node_id,
                &addr,
            )
            .await?;
            state = classify(&config.data_dir);
        }
    }
    let raft_listener = TcpListener::bind(config.raft_addr)
        .await
        .with_context(|| format!("cannot listen on --raft-addr {}", config.raft_addr))?;

    let mut node_config = NodeConfig::new(node_id, &config.data_dir, addr.clone());
    node_config.snapshot_threshold = config.snapshot_threshold;
    node_config.raft_client = Some((tls.raft_client()?, tls.raft_scheme()));
    node_config.max_entry_bytes = config.limits.max_entry_bytes;
    let node = RaftNode::start(node_config).await?;

    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
        .ok();
    if let Some(backups) = &backups {
        backups.register_metrics();
    }
    if let Some(archiver) = &archiver {
        archiver.register_metrics();
    }
    if let (Some(copier), Some(backups)) = (&copier, &backups) {
        copier.register_metrics();
        backups.attach_copier(Arc::clone(copier));
    }
    // Joins and forwarding to other members' APIs: https with the node CA when configured.
    let node_client = tls.api_client(Duration::from_secs(30))?;
    let api = Arc::new(ApiState {
        node: node.clone(),
        client: node_client.clone(),
        metrics,
        started: Instant::now(),
        data_dir: config.data_dir.clone(),
        auth,
        backups: backups.clone(),
        archiver: archiver.clone(),
        limits: config.limits.api,
        http: raftlite_api::server::HttpInfo {
            bind_addr: http_listener
                .local_addr()
                .map_or_else(|_| config.http_addr.to_string(), |a| a.to_string()),
            tls: tls.http_server.is_some(),
        },
    });
    let archive_task = archiver
        .clone()
        .map(|archiver| raftlite_backup::service::archiver::spawn(archiver, node.clone()));
    let mut backup_tasks = match backups {
        Some(service) => raftlite_backup::service::spawn(service, node.clone()),
        None => Vec::new(),
    };
    // The copies read the backup destination only: background tasks beside serving, never in
    // the write path.
    if let Some(copier) = copier {
        backup_tasks.extend(raftlite_backup::service::copier::spawn(
            copier,
            node.clone(),
        ));
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http = tokio::spawn(serve_until(
        http_listener,
        router(api),
        stop_rx.clone(),
        tls.http_server.clone(),
        "http",
    ));
    let raft = tokio::spawn(serve_until(
        raft_listener,
        node.raft_router(),
        stop_rx,
        tls.raft_server.clone(),
        "raft",
    ));
    tracing::info!(
        node_id,
        http = %config.http_addr,
        raft = %config.raft_addr,
        https = tls.http_server.is_some(),
        raft_tls = tls.raft_server.is_some(),
        "raftlite is listening"
    );

    if matches!(state, DataDirState::Empty) && config.join.is_empty() {
        node.bootstrap().await?;
    }
    let joins = join_targets(&config);
    if !joins.is_empty() {
        tokio::spawn(join_cluster(
            node.clone(),
            node_client,
            joins,
            node_id,
            addr,
            join_credentials,
        ));
    }

    wait_for_signal().await;
    tracing::info!("shutting down");
    // A backup cut short leaves no manifest, so it never counts.
    for task in backup_tasks {
        task.abort();
    }
    if let Some(task) = archive_task {
        task.abort();
    }
    node.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = http.await;
        let _ = raft.await;
    })
    .await;
    Ok(())
}

/// Serves `app` until `stop` turns true: over TLS when `tls` is set (see `crate::tls`), else
/// plain HTTP. `name` labels the server in logs.
async fn serve_until(
    listener: TcpListener,
    app: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
    tls: Option<Arc<rustls::ServerConfig>>,
    name: &'static str,
) {
    if let Some(config) = tls {
        crate::tls::serve_tls(listener, config, app, stop, name).await;
        return;
    }
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(server = name, error = %e, "server stopped");
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

/// What `--auth` and `--join-as` amount to: the loaded permissions file, and the credentials
/// this node joins with. Any problem refuses the start.
type AuthSetup = (Option<Arc<AuthStore>>, Option<(String, String)>);

fn load_auth(config: &ServeConfig) -> anyhow::Result<AuthSetup> {
    let security = &config.security;
    let Some(path) = &security.auth else {
        if let Some(user) = &security.join_as {
            bail!(
                "refusing to start: --join-as {user:?} needs --auth FILE, the permissions file \
                 that holds this user's password"
            );
        }
        return Ok((None, None));
    };
    let store = AuthStore::load(path).context("refusing to start")?;
    let credentials = match &security.join_as {
        Some(user) => {
            let credentials = store.join_credentials(user).context("refusing to start")?;
            if !store.user_has(user, Perm::Join) && !store.anyone_has(Perm::Join) {
                tracing::warn!(
                    auth_file = %path.display(),
                    "--join-as {user:?} lacks the \"join\" permission: members using the same \
                     --auth file will refuse this node's joins with 401; grant \"join\" to it"
                );
            }
            Some(credentials)
        }
        None => {
            if !config.join.is_empty() && !store.anyone_has(Perm::Join) {
                tracing::warn!(
                    auth_file = %path.display(),
                    "--auth is set without --join-as and the \"*\" user lacks the \"join\" \
                     permission: joining will be refused with 401; pass --join-as USER naming \
                     a user with the \"join\" permission"
                );
            }
            None
        }
    };
    tracing::info!(auth_file = %path.display(), "HTTP Basic auth is on");
    Ok((Some(Arc::new(store)), credentials))
}

/// `--recovery-mode`: recovers a data dir whose log is lost or damaged (or whose database is
/// damaged) and returns its new classification; a healthy data dir starts as usual.
async fn run_recovery_mode(
    data_dir: &Path,
    state: DataDirState,
    node_id: u64,
    addr: &NodeAddr,
) -> anyhow::Result<DataDirState> {
    match raftlite_consensus::recovery::recover_in_place(data_dir, &state, node_id, addr).await {
        Ok(None) => Ok(state),
        Ok(Some(outcome)) => {
            tracing::warn!(
                moved_aside = ?outcome.moved_aside,
                timeline = outcome.timeline.as_ref().map(|t| t.id.as_str()).unwrap_or(""),
                "RECOVERY MODE: {}",
                outcome.summary
            );
            Ok(classify(data_dir))
        }
        Err(e) => bail!(
            "refusing to start on data dir {}: --recovery-mode could not recover: {e}",
            data_dir.display()
        ),
    }
}

/// `--auto-restore-from` / `--auto-restore FILE`, resolved (`None`: off).
fn auto_restore_settings(
    config: &ServeConfig,
) -> anyhow::Result<Option<raftlite_restore::auto_restore::AutoRestoreSettings>> {
    let a = &config.auto_restore;
    let (from, store_options, if_empty_ok, timeout) = match (&a.from, &a.file) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => bail!(
            "refusing to start: --auto-restore-from and --auto-restore are both set; keep one"
        ),
        (Some(from), None) => (
            from.clone(),
            Vec::new(),
            a.if_empty_ok,
            DEFAULT_AUTO_RESTORE_TIMEOUT,
        ),
        (None, Some(file)) => {
            let parsed = raftlite_backup::auto_backup::load_restore(file)
                .context("refusing to start: bad --auto-restore file")?;
            for note in &parsed.notes {
                tracing::info!("--auto-restore: {note}");
            }
            (
                parsed.to,
                parsed.store_options,
                a.if_empty_ok || parsed.continue_on_failure,
                parsed.timeout.unwrap_or(DEFAULT_AUTO_RESTORE_TIMEOUT),
            )
        }
    };
    Ok(Some(raftlite_restore::auto_restore::AutoRestoreSettings {
        from,
        store_options,
        identity_file: a.identity.clone(),
        passphrase_env: config.backup.passphrase_env.clone(),
        if_empty_ok,
        timeout,
    }))
}

/// Runs the auto-restore while the HTTP address answers 503 ("restore in progress") to every
/// request, `/readyz` included; returns a fresh listener on the same address for the real API.
async fn auto_restore_while_not_ready(
    config: &ServeConfig,
    tls: &crate::tls::TlsSetup,
    listener: TcpListener,
    settings: &raftlite_restore::auto_restore::AutoRestoreSettings,
    node_id: u64,
    addr: &NodeAddr,
) -> anyhow::Result<TcpListener> {
    use axum::response::IntoResponse;
    let source = settings.from.clone();
    let not_ready = axum::Router::new().fallback(move || {
        let body = format!(
            "[-]restore: auto-restore from {source} in progress; the node serves when it is done\n"
        );
        async move {
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                [(axum::http::header::RETRY_AFTER, "5")],
                body,
            )
                .into_response()
        }
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve_until(
        listener,
        not_ready,
        stop_rx,
        tls.http_server.clone(),
        "http",
    ));
    tracing::info!(from = %settings.from, "auto-restore: the data dir is empty and this node bootstraps; restoring the newest backup before serving");
    let result = raftlite_restore::auto_restore::restore_into_empty(
        &config.data_dir,
        settings,
        node_id,
        addr,
    )
    .await
    .map_err(anyhow::Error::from);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    match result {
        Ok(raftlite_restore::auto_restore::AutoRestoreOutcome::Restored {
            id,
            timeline,
            index,
        }) => tracing::info!(
            backup = %id,
            backup_index = index,
            timeline = %timeline.id,
            counter = timeline.counter,
            "auto-restore done: serving the backup's data on a new timeline"
        ),
        Ok(raftlite_restore::auto_restore::AutoRestoreOutcome::NothingToRestore) => tracing::warn!(
            from = %settings.from,
            "auto-restore: no backup in the destination; starting empty (--auto-restore-if-empty-ok)"
        ),
        Err(e) => return Err(e.context("refusing to start: auto-restore failed")),
    }
    TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on --http-addr {}", config.http_addr))
}

/// The log archiver of `--archive-to`, if on: to the backup destination (`backup`) or to a
/// destination of its own, compressed and encrypted as the backups are.
fn load_archiver(
    config: &ServeConfig,
    backups: Option<&Arc<BackupService>>,
) -> anyhow::Result<Option<Arc<Archiver>>> {
    let backup = &config.backup;
    let Some(to) = &backup.archive_to else {
        if backups.is_some() && backup.passphrase_env.is_some() {
            tracing::info!(
                "the log archive is off: with --backup-passphrase-env each segment would cost \
                 about a second of CPU (age scrypt); encrypt to --backup-recipient keys to have \
                 it on by default, or give --archive-to backup to accept the cost"
            );
        }
        return Ok(None);
    };
    if backup.passphrase_env.is_some() {
        tracing::warn!(
            "--archive-to with --backup-passphrase-env: every archive segment costs about a \
             second of CPU on the leader (age scrypt); --backup-recipient keys cost nothing alike"
        );
    }
    let interval = match &backup.archive_interval {
        None => DEFAULT_ARCHIVE_INTERVAL,
        Some(v) => {
            let every = parse_duration(v).map_err(|e| {
                anyhow::anyhow!("refusing to start: invalid --archive-interval `{v}`: {e}")
            })?;
            if every < Duration::from_millis(100) || every > Duration::from_secs(3600) {
                bail!("refusing to start: invalid --archive-interval `{v}`: must be between 100ms and 1h");
            }
            every
        }
    };
    let (encryption, level) = match backups {
        Some(b) => (b.options().encryption.clone(), b.options().level),
        None => (None, 3),
    };
    let dest = if to == "backup" {
        match backups {
            Some(b) => b.destination().clone(),
            None => bail!(
                "refusing to start: --archive-to backup archives beside the backups, but backups \
                 are off; give --backup-to, or a destination URL to --archive-to"
            ),
        }
    } else {
        if backups.is_none() {
            tracing::warn!(
                "--archive-to {to}: backups are off, so the archive has no base backups to \
                 replay from and is not encrypted; turn backups on with --backup-to"
            );
        }
        raftlite_backup::Destination::parse_with_options(
            to,
            [("max_retries", "4"), ("retry_timeout_secs", "30")],
        )
        .context("refusing to start: bad --archive-to")?
    };
    let mut archiver = Archiver::new(ArchiveSettings {
        dest,
        encryption,
        zstd_level: level,
        interval,
    });
    if let Some(b) = backups {
        if to == "backup" {
            archiver = archiver.with_base_backups(Arc::clone(b));
        }
    }
    tracing::info!(
        destination = archiver.label(),
        interval_ms = interval.as_millis() as u64,
        "the leader archives the committed log to {} (segments at least every {:?})",
        archiver.label(),
        interval
    );
    Ok(Some(Arc::new(archiver)))
}

/// The copies of `--backup-copy-to`, if any, all checked now: a bad URL or retention rule, a
/// copy without backups, or a copy that is the backup destination refuses the start. The log
/// archive is copied along when it lies beside the backups (`--archive-to backup`).
fn load_copier(
    config: &ServeConfig,
    backups: Option<&Arc<BackupService>>,
) -> anyhow::Result<Option<Arc<Copier>>> {
    let backup = &config.backup;
    let urls: Vec<&String> = backup.copy_to.iter().filter(|url| !is_off(url)).collect();
    if urls.is_empty() {
        if backup.copy_keep != raftlite_backup::KeepRules::default() {
            tracing::warn!(
                "--backup-copy-keep-* is set but there is no --backup-copy-to: it has no effect"
            );
        }
        return Ok(None);
    }
    let Some(service) = backups else {
        bail!(
            "refusing to start: --backup-copy-to copies the backups, but backups are off \
             (--backup-to off); give --backup-to, or remove --backup-copy-to"
        );
    };
    let retention = if backup.copy_keep == raftlite_backup::KeepRules::default() {
        None
    } else {
        Some(backup.copy_keep.as_given().map_err(|e| {
            let value = backup.copy_keep.keep_within.as_deref().unwrap_or_default();
            anyhow::anyhow!(
                "refusing to start: invalid --backup-copy-keep-within `{value}`: {}",
                match e {
                    raftlite_backup::KeepRulesError::KeepWithin(reason) => reason,
                    other => other.to_string(),
                }
            )
        })?)
    };
    let mut targets = Vec::new();
    for url in urls {
        // Bounded retries, as for the backup destination: a copy that is down fails its pass
        // within seconds and is retried later, instead of hanging for minutes.
        let dest = raftlite_backup::Destination::parse_with_options(
            url,
            [("max_retries", "4"), ("retry_timeout_secs", "30")],
        )
        .context("refusing to start: bad --backup-copy-to")?;
        targets.push(CopyTarget {
            dest,
            retention: retention.clone(),
        });
    }
    let copy_archive = backup.archive_to.as_deref() == Some("backup");
    let copier = Copier::new(service, targets, copy_archive).context("refusing to start")?;
    for (label, policy) in copier.describe() {
        tracing::info!(
            copy = %label,
            retention = %policy,
            archive = copy_archive,
            "finished backups{} are copied to {label} (retention: {policy})",
            if copy_archive { " and the log archive" } else { "" }
        );
    }
    if !copy_archive && backup.archive_to.is_some() {
        tracing::info!(
            "the log archive has a destination of its own (--archive-to URL) and is not copied; \
             copies hold backups only"
        );
    }
    Ok(Some(Arc::new(copier)))
}

/// Backup settings (`--backup-*`, `--auto-backup`), all checked now: a bad destination URL,
/// recipient, level, schedule, duration, identity file or an unset passphrase variable
/// refuses the start. `None` when backups are off (`--backup-to off`).
fn load_backups(config: &ServeConfig) -> anyhow::Result<Option<Arc<BackupService>>> {
    let backup = &config.backup;
    let auto = match &backup.auto_backup {
        Some(path) => {
            if backup.to.is_some() && !backup.to_is_default {
                bail!(
                    "refusing to start: --auto-backup and --backup-to are both set; the \
                     auto-backup file names the destination, so keep one of them"
                );
            }
            if backup.interval.is_some() || backup.cron.is_some() {
                bail!(
                    "refusing to start: --auto-backup sets the interval itself; remove \
                     --backup-interval / --backup-cron or the auto-backup file"
                );
            }
            Some(
                raftlite_backup::auto_backup::load(path)
                    .context("refusing to start: bad --auto-backup file")?,
            )
        }
        None => None,
    };
    let (to, store_options) = match (&auto, &backup.to) {
        (Some(auto), _) => (auto.to.clone(), auto.store_options.clone()),
        (None, Some(to)) => (to.clone(), Vec::new()),
        (None, None) => {
            if !backup.recipients.is_empty() || backup.passphrase_env.is_some() {
                tracing::warn!(
                    "--backup-recipient / --backup-passphrase-env are set but backups are off \
                     (--backup-to off): they have no effect"
                );
            }
            tracing::info!("backups are off (--backup-to off); POST /backups is refused");
            return Ok(None);
        }
    };
    let bad = |flag: &str, value: &str, reason: String| {
        anyhow::anyhow!("refusing to start: invalid {flag} `{value}`: {reason}")
    };
    if backup.tz.is_some() && backup.cron.is_none() {
        bail!("refusing to start: --backup-tz applies to --backup-cron only; add a cron schedule or remove it");
    }
    let schedule = match (&auto, &backup.interval, &backup.cron) {
        (Some(auto), _, _) => Some(Schedule::interval(auto.interval)?),
        (None, Some(_), Some(_)) => {
            bail!("refusing to start: --backup-interval and --backup-cron are both set; choose one")
        }
        (None, None, Some(cron)) => Some(Schedule::cron(cron, backup.tz.as_deref())?),
        (None, Some(interval), None) if is_off(interval) => None,
        (None, Some(interval), None) => Some(Schedule::interval(
            parse_duration(interval).map_err(|e| bad("--backup-interval", interval, e))?,
        )?),
        (None, None, None) => Some(Schedule::interval(DEFAULT_BACKUP_INTERVAL)?),
    };
    let verify_interval = match &backup.verify_interval {
        None => Some(DEFAULT_VERIFY_INTERVAL),
        Some(v) if is_off(v) => None,
        Some(v) => {
            let every = parse_duration(v).map_err(|e| bad("--backup-verify-interval", v, e))?;
            if every < Duration::from_secs(1) {
                return Err(bad(
                    "--backup-verify-interval",
                    v,
                    "must be at least 1s (or `off`)".into(),
                ));
            }
            Some(every)
        }
    };
    let keep = &backup.keep;
    let retention = if *keep == raftlite_backup::KeepRules::default() {
        RetentionPolicy::server_default()
    } else {
        keep.as_given().map_err(|e| {
            let reason = match e {
                raftlite_backup::KeepRulesError::KeepWithin(reason) => reason,
                other => other.to_string(),
            };
            bad(
                "--backup-keep-within",
                keep.keep_within.as_deref().unwrap_or_default(),
                reason,
            )
        })?
    };
    let mut settings = BackupSettings::new(to);
    settings.store_options = store_options;
    settings.recipients = backup.recipients.clone();
    settings.passphrase_env = backup.passphrase_env.clone();
    settings.level = auto.as_ref().and_then(|a| a.level).unwrap_or(backup.level);
    settings.schedule = schedule;
    settings.verify_interval = verify_interval;
    settings.identity_file = backup.identity.clone();
    settings.retention = retention;
    if let Some(every) = backup.full_every {
        if every == 0 {
            bail!(
                "refusing to start: --backup-full-every must be at least 1 (1: every backup is full)"
            );
        }
        settings.full_every = every;
    }
    if backup.archive_to.as_deref() == Some("backup") {
        let window = backup.archive_keep_within.as_deref().unwrap_or("7d");
        let within = parse_duration(window).map_err(|e| {
            anyhow::anyhow!("refusing to start: invalid --archive-keep-within `{window}`: {e}")
        })?;
        if within.is_zero() {
            bail!("refusing to start: --archive-keep-within must be longer than 0, e.g. `7d`");
        }
        settings.archive_keep_within = Some(within);
    }
    let service = BackupService::from_settings(settings, &config.data_dir)
        .context("refusing to start: bad backup settings")?;
    if let Some(auto) = &auto {
        for note in &auto.notes {
            tracing::info!("--auto-backup: {note}");
        }
    }
    tracing::info!(
        destination = service.label(),
        default_destination = backup.to_is_default,
        schedule = %service.schedule_description(),
        encryption = %service.encryption_name(),
        level = service.options().level,
        "backups go to {} ({}){}",
        service.label(),
        service.schedule_description(),
        if backup.to_is_default {
            "; the default destination: set --backup-to (or RAFTLITE_BACKUP_TO) to choose one, `off` to disable"
        } else {
            ""
        }
    );
    Ok(Some(Arc::new(service)))
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

/// Asks the listed members to add this node until it sees itself as a voter in a membership
/// it has applied and a leader has reached it. A 200 alone does not end it: only the leader's
/// committed membership decides, and a member that answered may have had a stale view, so the
/// join is asked again until this node's own state confirms it. A restarted member that already
/// is a voter under a leader stops without asking.
/// `credentials` (from `--join-as`) are sent as HTTP Basic auth.
async fn join_cluster(
    node: RaftNode,
    client: reqwest::Client,
    targets: Vec<String>,
    node_id: u64,
    addr: NodeAddr,
    credentials: Option<(String, String)>,
) {
    let body = JoinRequest {
        id: serde_json::json!(node_id),
        addr: addr.raft_addr.clone(),
        api_addr: addr.api_addr.clone(),
    };
    let mut attempt: u32 = 0;
    loop {
        for target in &targets {
            if node.is_voter_with_leader() {
                tracing::info!("this node is a voter of the cluster and has a leader");
                return;
            }
            // The member answers within the `?timeout` it is given (a paused or partitioned
            // leader included); the client's own limit only catches a member that hangs.
            let url = format!(
                "{}/join?timeout={}s",
                target.trim_end_matches('/'),
                JOIN_REQUEST_TIMEOUT.as_secs()
            );
            let mut request = client
                .post(&url)
                .timeout(JOIN_REQUEST_TIMEOUT + Duration::from_secs(2))
                .json(&body);
            if let Some((user, password)) = &credentials {
                request = request.basic_auth(user, Some(password));
            }
            match request.send().await {
                Ok(resp) if resp.status().is_success() => {
                    if wait_for_membership(&node, JOIN_CONFIRM_WAIT).await {
                        tracing::info!(%url, "joined the cluster");
                        return;
                    }
                    tracing::warn!(
                        %url,
                        "the join was accepted but this node has not seen itself as a voter \
                         under a leader within {JOIN_CONFIRM_WAIT:?}; asking again"
                    );
                }
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    tracing::warn!(%url, %status, body = %text, "join refused; will retry");
                }
                Err(e) => {
                    // The whole chain: the cause (refused, TLS certificate problem) is in it.
                    let error = crate::tls::error_chain(&e);
                    tracing::warn!(%url, %error, "join failed; will retry")
                }
            }
        }
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt.min(4)))).await;
    }
}

/// The `?timeout` of each join request: long enough for the leader to probe the joiner's Raft
/// address and wait for a short catch-up, short enough that a paused member does not hold the
/// joiner for the node-to-node client's 30 s.
const JOIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a joining node waits, after a member accepted its join, to see itself as a voter
/// under a leader before it asks again.
const JOIN_CONFIRM_WAIT: Duration = Duration::from_secs(5);

/// Waits up to `wait` for [`RaftNode::is_voter_with_leader`].
async fn wait_for_membership(node: &RaftNode, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if node.is_voter_with_leader() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
