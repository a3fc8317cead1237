//! `raftlite backup create|list|verify`: the command-line face of the backup engine
//! (`crates/backup`).
//!
//! - `create` streams `GET {node}/db/backup` (a consistent copy taken by the leader at one
//!   applied index while writes go on) into a private temporary directory under the system temp
//!   dir (`TMPDIR`), reads the copy's own `_raftlite_meta` (applied position and timeline
//!   history), and hands it to [`create_backup`], which compresses, encrypts and uploads it with
//!   the manifest written last. The temporary directory is removed at the end, on error and on
//!   Ctrl-C/SIGTERM too.
//! - `list` prints the complete backups of a destination, newest first, then the sets that could
//!   not be used (bad manifest) and the incomplete ones (no manifest: in progress or failed).
//! - `verify` downloads and checks backups end to end ([`verify_backup`]).
//!
//! Exit status: 0 on success, 1 when `verify` found a backup that fails a check, 2 for any
//! other error (bad flags, node or destination unreachable, ...; `main` maps errors to 2).
//!
//! Cloud destinations retry failing requests (object_store's default: up to 10 retries within
//! 3 minutes). `RAFTLITE_BACKUP_MAX_RETRIES` (a count) and `RAFTLITE_BACKUP_RETRY_TIMEOUT_SECS`
//! (seconds) bound that, e.g. to fail fast in scripts and tests.
//!
//! Credentials never appear in output: destinations print as [`Destination`] displays them
//! (scheme, bucket, prefix), passphrases are read from the environment variable the flag names,
//! and `-u USER:PASSWORD` is only ever sent as a header.

use std::future::Future;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use raftlite_backup::{
    create_backup, list_backups, read_manifest, verify_backup, BackupError, BackupId, BackupMeta,
    CreateOptions, Destination, Encryption, Identity, Manifest, VerifyReport,
};
use reqwest::{StatusCode, Url};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::config::{
    BackupArgs, BackupCommand, BackupCreateArgs, BackupListArgs, BackupVerifyArgs, NodeConnection,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one read from the node: the leader copies the whole database before the
/// first byte of the answer, so this is generous.
const READ_TIMEOUT: Duration = Duration::from_secs(600);
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";
/// Environment variables bounding the retries of cloud destinations.
const MAX_RETRIES_ENV: &str = "RAFTLITE_BACKUP_MAX_RETRIES";
const RETRY_TIMEOUT_ENV: &str = "RAFTLITE_BACKUP_RETRY_TIMEOUT_SECS";
/// Exit status of `verify` when a backup failed a check.
const EXIT_VERIFY_FAILED: i32 = 1;
/// zstd levels accepted by `--level`.
const LEVELS: std::ops::RangeInclusive<i32> = 1..=22;

/// `raftlite backup prune`: applies the `--keep-*` rules to a destination (each cluster on its
/// own, or only `--cluster`'s), deleting each doomed set manifest first, and cleans up
/// superseded sets and incomplete ones older than a day. Fails after printing the report when
/// any set could not be deleted.
async fn prune(args: crate::config::BackupPruneArgs) -> anyhow::Result<()> {
    let policy = prune_policy(&args.keep)?;
    if let Some(cluster) = &args.cluster {
        BackupId::new(cluster, "check").map_err(|_| {
            anyhow!(
                "--cluster {cluster:?} is not a cluster id: 1-128 characters of A-Z a-z 0-9 . _ - \
                 (the part before the `/` in the ids `raftlite backup list` prints)"
            )
        })?;
    }
    let dest = open_destination(&args.from)?;
    let now_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| {
            anyhow!("the system clock is before 1970; retention needs the real time, fix the clock")
        })?;
    let report = raftlite_backup::prune(
        &dest,
        args.cluster.as_deref(),
        &policy,
        now_unix_ms,
        args.dry_run,
    )
    .await
    .map_err(engine_error)?;

    if args.json {
        print_json(&PrunedJson::from(&report))?;
    } else {
        print_prune_report(&report, &dest, args.cluster.as_deref())?;
    }
    if !report.failed.is_empty() {
        let n = report.failed.len();
        bail!(
            "{n} backup set{} in {dest} could not be (fully) deleted (listed above); a set \
             whose manifest.json is gone no longer counts as a backup; run the same prune again \
             to retry",
            if n == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// The retention policy the `--keep-*` flags describe; refuses none at all.
fn prune_policy(
    keep: &crate::config::PruneKeepArgs,
) -> anyhow::Result<raftlite_backup::RetentionPolicy> {
    let keep_within = keep
        .keep_within
        .as_deref()
        .map(|text| {
            raftlite_backup::parse_duration(text).map_err(|e| anyhow!("--keep-within: {e}"))
        })
        .transpose()?;
    let policy = raftlite_backup::RetentionPolicy {
        keep_last: keep.keep_last,
        keep_hourly: keep.keep_hourly,
        keep_daily: keep.keep_daily,
        keep_weekly: keep.keep_weekly,
        keep_monthly: keep.keep_monthly,
        keep_within,
    };
    if policy.is_empty() {
        bail!(
            "give at least one --keep-* rule (--keep-last, --keep-hourly, --keep-daily, \
             --keep-weekly, --keep-monthly, --keep-within); prune never guesses what to delete"
        );
    }
    Ok(policy)
}

fn print_prune_report(
    report: &raftlite_backup::PruneReport,
    dest: &Destination,
    cluster: Option<&str>,
) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    let would = if report.dry_run { "would " } else { "" };
    for (id, reasons) in &report.kept {
        writeln!(out, "keep {id} ({})", reasons.join(", "))?;
    }
    for id in &report.deleted {
        writeln!(out, "{would}delete {id}")?;
    }
    for id in &report.cleaned {
        writeln!(
            out,
            "{would}clean {id} (superseded, or incomplete for over a day)"
        )?;
    }
    for (id, reason) in &report.failed {
        writeln!(out, "failed {id}: {reason}")?;
    }
    let scope = match cluster {
        Some(c) => format!("cluster {c} in {dest}"),
        None => dest.to_string(),
    };
    let (kept, deleted, cleaned) = (
        report.kept.len(),
        report.deleted.len(),
        report.cleaned.len(),
    );
    if report.dry_run {
        writeln!(
            out,
            "dry run, {scope}: {kept} kept, {deleted} would be deleted, {cleaned} would be \
             cleaned up; nothing was deleted"
        )?;
    } else {
        writeln!(
            out,
            "{scope}: {kept} kept, {deleted} deleted, {cleaned} cleaned up, {} failed",
            report.failed.len()
        )?;
    }
    Ok(())
}

/// `{"dry_run", "kept": [{"id", "reasons"}], "deleted", "cleaned", "failed": [{"id", "reason"}]}`
#[derive(Serialize)]
struct PrunedJson<'a> {
    dry_run: bool,
    kept: Vec<KeptJson<'a>>,
    deleted: &'a [BackupId],
    cleaned: &'a [BackupId],
    failed: Vec<FailedJson<'a>>,
}

#[derive(Serialize)]
struct KeptJson<'a> {
    id: &'a BackupId,
    reasons: &'a [&'static str],
}

#[derive(Serialize)]
struct FailedJson<'a> {
    id: &'a BackupId,
    reason: &'a str,
}

impl<'a> From<&'a raftlite_backup::PruneReport> for PrunedJson<'a> {
    fn from(report: &'a raftlite_backup::PruneReport) -> Self {
        PrunedJson {
            dry_run: report.dry_run,
            kept: report
                .kept
                .iter()
                .map(|(id, reasons)| KeptJson { id, reasons })
                .collect(),
            deleted: &report.deleted,
            cleaned: &report.cleaned,
            failed: report
                .failed
                .iter()
                .map(|(id, reason)| FailedJson { id, reason })
                .collect(),
        }
    }
}

/// What opens encrypted backups: an age identity file, or a passphrase from the environment
/// variable `passphrase_env`; `None` for neither.
pub(crate) fn identity_from(
    identity_file: Option<&Path>,
    passphrase_env: Option<&str>,
) -> anyhow::Result<Option<Identity>> {
    match (identity_file, passphrase_env) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the age identity file {}", path.display()))?;
            Ok(Some(Identity::from_identity_file(&text).map_err(|e| {
                anyhow!("the age identity file {}: {e}", path.display())
            })?))
        }
        (None, Some(var)) => Ok(Some(
            Identity::passphrase(passphrase_from_env(var)?).map_err(engine_error)?,
        )),
        (None, None) => Ok(None),
    }
}

/// Entry point of `raftlite backup`.
pub async fn run(args: BackupArgs) -> anyhow::Result<()> {
    match args.command {
        BackupCommand::Create(args) => {
            interruptible(
                create(args),
                "the temporary copy was removed and no manifest was written, so nothing \
                 partial counts as a backup",
            )
            .await
        }
        BackupCommand::List(args) => list(args).await,
        BackupCommand::Prune(args) => prune(args).await,
        BackupCommand::Verify(args) => {
            let all_passed =
                interruptible(verify(args), "the temporary files were removed").await?;
            if !all_passed {
                let _ = io::stdout().flush();
                std::process::exit(EXIT_VERIFY_FAILED);
            }
            Ok(())
        }
    }
}

/// Runs `work` unless Ctrl-C or SIGTERM comes first; then `work` is dropped (its temporary
/// files with it) and the command fails with `cleanup` in the message.
pub(crate) async fn interruptible<T>(
    work: impl Future<Output = anyhow::Result<T>>,
    cleanup: &str,
) -> anyhow::Result<T> {
    tokio::select! {
        result = work => result,
        signal = shutdown_signal() => bail!("interrupted by {signal}; {cleanup}"),
    }
}

/// Resolves on the first Ctrl-C or SIGTERM; never, if no handler can be installed.
async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = async {
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    term.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => "Ctrl-C",
            _ = term => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c.await;
        "Ctrl-C"
    }
}

// ---------------------------------------------------------------------------------------------
// backup create
// ---------------------------------------------------------------------------------------------

async fn create(args: BackupCreateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    // Everything that can be checked locally is checked before any transfer.
    let encryption = encryption_of(&args.recipient, args.passphrase_env.as_deref())?;
    if !LEVELS.contains(&args.level) {
        bail!(
            "--level {} is not a zstd level: use {} (fastest) to {} (smallest); 3 is the default",
            args.level,
            LEVELS.start(),
            LEVELS.end()
        );
    }
    let node = NodeClient::new(&args.connection)?;
    let dest = open_destination(&args.to)?;
    check_reachable(&dest).await?;
    let progress = io::stderr().is_terminal();

    let scratch = ScratchDir::new()?;
    let db = scratch.path().join("db.sqlite");
    let downloaded = node.download_snapshot(&db, progress).await?;
    let download_time = started.elapsed();

    let state = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || raftlite_store::probe(&db))
            .await
            .map_err(|e| anyhow!("reading the snapshot's metadata failed: {e}"))?
    }
    .map_err(|e| {
        anyhow!(
            "the snapshot from {} is not a readable SQLite database: {e}",
            node.base
        )
    })?
    .ok_or_else(|| {
        anyhow!(
            "the snapshot from {} vanished from {}",
            node.base,
            db.display()
        )
    })?;
    let applied = state.applied.ok_or_else(|| {
        anyhow!(
            "the snapshot from {} records no applied Raft position in _raftlite_meta; is it a \
             raftlite node whose cluster has bootstrapped?",
            node.base
        )
    })?;
    if let Some(index) = downloaded.applied_header {
        if index != applied.index {
            bail!(
                "the snapshot from {} says it reflects log index {} but the node announced {}; \
                 the copy is inconsistent, run the backup again",
                node.base,
                applied.index,
                index
            );
        }
    }
    let meta = BackupMeta::of_database(applied.leader_node, &state).map_err(engine_error)?;

    let spinner = spinner(
        progress,
        format!(
            "compressing{} and uploading {} to {dest}",
            if encryption.is_some() {
                ", encrypting"
            } else {
                ""
            },
            human_bytes(downloaded.bytes)
        ),
    );
    let upload_started = Instant::now();
    let opts = CreateOptions {
        level: args.level,
        encryption,
    };
    let created = create_backup(&db, meta, &dest, &opts).await;
    spinner.finish_and_clear();
    let manifest = created.map_err(engine_error)?;
    let upload_time = upload_started.elapsed();
    drop(scratch);

    let id = manifest.id().map_err(engine_error)?;
    // The engine writes the manifest last; reading it back proves the set is complete (and that
    // the id printed is the one `list` and `verify` use).
    match read_manifest(&dest, &id).await {
        Ok(stored) if stored == manifest => {}
        Ok(_) => eprintln!(
            "warning: the manifest read back for backup {id} differs from the one written; \
             run `raftlite backup verify --from {dest} --id {id}`"
        ),
        Err(e) => eprintln!("warning: could not read back the manifest just written: {e}"),
    }
    let total = started.elapsed();

    if args.json {
        let out = CreatedJson {
            id: &id,
            manifest: &manifest,
            duration_ms: total.as_millis() as u64,
        };
        print_json(&out)?;
    } else {
        let mut out = io::stdout().lock();
        writeln!(out, "backup created: {id}")?;
        writeln!(out, "  destination  {dest}")?;
        writeln!(
            out,
            "  timeline     #{} ({})",
            manifest.timeline.counter, manifest.timeline.id
        )?;
        writeln!(
            out,
            "  log index    {} (term {}, leader node {})",
            manifest.log_index, manifest.log_term, manifest.node_id
        )?;
        writeln!(
            out,
            "  size         {} plain, {} stored (zstd level {}{})",
            human_bytes(manifest.plain_size),
            human_bytes(manifest.stored_size),
            manifest.compression.level,
            match &manifest.encryption {
                Some(e) => format!(", encrypted {}", e.scheme),
                None => ", not encrypted".to_string(),
            }
        )?;
        writeln!(
            out,
            "  duration     {} (snapshot download {}, compress and upload {})",
            human_duration(total),
            human_duration(download_time),
            human_duration(upload_time)
        )?;
    }
    Ok(())
}

/// `{"id": ..., <manifest fields>, "duration_ms": ...}`
#[derive(Serialize)]
struct CreatedJson<'a> {
    id: &'a BackupId,
    #[serde(flatten)]
    manifest: &'a Manifest,
    duration_ms: u64,
}

/// `--recipient`s or `--passphrase-env`, never both.
fn encryption_of(
    recipients: &[String],
    passphrase_env: Option<&str>,
) -> anyhow::Result<Option<Encryption>> {
    match (recipients.is_empty(), passphrase_env) {
        (true, None) => Ok(None),
        (false, Some(_)) => bail!(
            "give either --recipient (age public keys) or --passphrase-env, not both: a backup \
             is encrypted one way"
        ),
        (false, None) => Encryption::recipients(recipients)
            .map(Some)
            .map_err(engine_error),
        (true, Some(var)) => {
            let passphrase = passphrase_from_env(var)?;
            Encryption::passphrase(passphrase)
                .map(Some)
                .map_err(engine_error)
        }
    }
}

/// The passphrase held by the environment variable NAMED `var`.
pub(crate) fn passphrase_from_env(var: &str) -> anyhow::Result<String> {
    // Someone may pass the passphrase itself instead of a variable's name: only echo names that
    // look like conventional variable names.
    let shown = if !var.is_empty()
        && var
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        format!("the environment variable {var}")
    } else {
        "the environment variable named by --passphrase-env".to_string()
    };
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Ok(p),
        Ok(_) => bail!("{shown} is empty; put the passphrase in it"),
        Err(std::env::VarError::NotPresent) => bail!(
            "{shown} is not set; --passphrase-env takes the NAME of a variable holding the \
             passphrase (e.g. `export RAFTLITE_BACKUP_PASSPHRASE=...` and \
             `--passphrase-env RAFTLITE_BACKUP_PASSPHRASE`)"
        ),
        Err(std::env::VarError::NotUnicode(_)) => {
            bail!("{shown} does not hold valid UTF-8; age passphrases are text")
        }
    }
}

/// A backup-engine error as an `anyhow` error with its (already complete) message only: the
/// messages embed their sources, so a chain would repeat them.
pub(crate) fn engine_error(e: BackupError) -> anyhow::Error {
    anyhow!("{e}")
}

/// Parses a destination URL, with the retry bounds from the environment.
pub(crate) fn open_destination(url: &str) -> anyhow::Result<Destination> {
    Destination::parse_with_options(url, retry_options()?).map_err(engine_error)
}

/// `max_retries` / `retry_timeout_secs` from [`MAX_RETRIES_ENV`] / [`RETRY_TIMEOUT_ENV`].
fn retry_options() -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut options = Vec::new();
    if let Some(value) = non_empty_env(MAX_RETRIES_ENV)? {
        value
            .trim()
            .parse::<u32>()
            .map_err(|_| anyhow!("{MAX_RETRIES_ENV}={value:?} is not a count (e.g. 3)"))?;
        options.push(("max_retries", value));
    }
    if let Some(value) = non_empty_env(RETRY_TIMEOUT_ENV)? {
        let secs: f64 = value.trim().parse().map_err(|_| {
            anyhow!("{RETRY_TIMEOUT_ENV}={value:?} is not a number of seconds (e.g. 30)")
        })?;
        if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
            bail!("{RETRY_TIMEOUT_ENV}={value:?} must be between 0 and 86400 seconds");
        }
        options.push(("retry_timeout_secs", value));
    }
    Ok(options)
}

fn non_empty_env(var: &str) -> anyhow::Result<Option<String>> {
    match std::env::var(var) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{var} does not hold valid UTF-8"),
    }
}

/// Fails unless the destination answers: reading the manifest of a backup that does not exist
/// must come back "not found". Done before the snapshot is transferred, so a dead or
/// misconfigured destination costs no copy of the database.
async fn check_reachable(dest: &Destination) -> anyhow::Result<()> {
    let probe = BackupId::new("raftlite-reachability-check", "none").map_err(engine_error)?;
    match read_manifest(dest, &probe).await {
        Ok(_) | Err(BackupError::NotFound { .. }) | Err(BackupError::BadManifest { .. }) => Ok(()),
        Err(e) => {
            // The store's own error, not the engine's wording about downloading a backup.
            let cause = match std::error::Error::source(&e) {
                Some(source) => with_root_cause(source),
                None => e.to_string(),
            };
            bail!(
                "cannot reach the backup destination {dest}: {cause}; check the URL, the \
                 endpoint and credentials in the environment (AWS_*, GOOGLE_*, AZURE_*) and \
                 connectivity; nothing was backed up"
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The node: GET /db/backup
// ---------------------------------------------------------------------------------------------

pub(crate) struct NodeClient {
    /// `http(s)://host:port[/path]`, no trailing `/`.
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) auth: Option<(String, String)>,
}

struct Downloaded {
    bytes: u64,
    /// `x-raftlite-applied-index`, when the node sent it.
    applied_header: Option<u64>,
}

impl NodeClient {
    fn new(conn: &NodeConnection) -> anyhow::Result<NodeClient> {
        NodeClient::with_read_timeout(conn, READ_TIMEOUT)
    }

    /// [`NodeClient::new`] with another limit for one read from the node (a restore answers
    /// only once the whole cluster switched to the new file).
    pub(crate) fn with_read_timeout(
        conn: &NodeConnection,
        read_timeout: Duration,
    ) -> anyhow::Result<NodeClient> {
        let base = normalize_node_url(&conn.node)?;
        let auth = match conn.user.as_deref() {
            None => None,
            Some(raw) => match raw.split_once(':') {
                Some((user, pass)) if !user.is_empty() => {
                    Some((user.to_string(), pass.to_string()))
                }
                _ => bail!("invalid -u value: expected USER:PASSWORD"),
            },
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(read_timeout)
            .user_agent(concat!("raftlite-backup/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &conn.ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!("--ca-cert {} is not a PEM certificate file", path.display())
            })?;
            if certs.is_empty() {
                bail!("--ca-cert {} holds no PEM certificate", path.display());
            }
            builder = builder.tls_certs_merge(certs);
        }
        if conn.insecure {
            eprintln!("warning: --insecure: the node's TLS certificate is not verified");
            builder = builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        let client = builder.build().context("cannot set up the HTTP client")?;
        Ok(NodeClient { base, client, auth })
    }

    /// `request` with this client's credentials, if any.
    pub(crate) fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((user, pass)) => request.basic_auth(user, Some(pass)),
            None => request,
        }
    }

    /// Streams the node's consistent copy into `target`. Returns its size.
    async fn download_snapshot(&self, target: &Path, progress: bool) -> anyhow::Result<Downloaded> {
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

        let bar = progress_bar(expected, progress);
        let result = async {
            let file = tokio::fs::File::create(target)
                .await
                .with_context(|| format!("cannot create {}", target.display()))?;
            let mut file = tokio::io::BufWriter::with_capacity(256 * 1024, file);
            let mut total: u64 = 0;
            let mut head = Vec::with_capacity(SQLITE_HEADER.len());
            while let Some(chunk) = resp.chunk().await.map_err(|e| {
                anyhow!(
                    "the snapshot download from {url} broke off after {total} bytes: {}; run \
                     the backup again",
                    innermost(&e)
                )
            })? {
                if head.len() < SQLITE_HEADER.len() {
                    let take = (SQLITE_HEADER.len() - head.len()).min(chunk.len());
                    head.extend_from_slice(&chunk[..take]);
                }
                file.write_all(&chunk).await.with_context(|| {
                    format!(
                        "cannot write the snapshot to {} (is TMPDIR full? it needs room for the \
                         whole database)",
                        target.display()
                    )
                })?;
                total += chunk.len() as u64;
                bar.inc(chunk.len() as u64);
            }
            file.flush()
                .await
                .with_context(|| format!("cannot write {}", target.display()))?;
            if let Some(expected) = expected {
                if expected != total {
                    bail!(
                        "the snapshot download from {url} ended after {total} of {expected} \
                         bytes; run the backup again"
                    );
                }
            }
            if head != SQLITE_HEADER {
                bail!(
                    "the answer of {url} is not a SQLite database ({total} bytes); is {} a \
                     raftlite node?",
                    self.base
                );
            }
            Ok(total)
        }
        .await;
        bar.finish_and_clear();
        Ok(Downloaded {
            bytes: result?,
            applied_header,
        })
    }

    pub(crate) fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        let detail = innermost(e);
        let base = &self.base;
        if e.is_timeout() {
            anyhow!("no answer from the node {base} in time ({detail})")
        } else if detail.contains("certificate") {
            anyhow!(
                "cannot connect to the node {base}: {detail} (trust its CA with --ca-cert FILE, \
                 or skip the check with --insecure)"
            )
        } else if e.is_connect() {
            anyhow!("cannot connect to the node {base}: {detail} (is raftlite running there?)")
        } else {
            anyhow!("request to the node {base} failed: {detail}")
        }
    }
}

/// `e`'s message, followed by its innermost cause in parentheses when the message does not
/// already say it (object_store's "error sending request" hides "Connection refused").
fn with_root_cause(e: &(dyn std::error::Error + 'static)) -> String {
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
pub(crate) fn innermost(e: &reqwest::Error) -> String {
    let mut last = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// A non-200 answer as an error with the server's `error` message (or body) and a hint.
async fn http_error(resp: reqwest::Response, url: &str) -> anyhow::Error {
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
    anyhow!(msg)
}

pub(crate) fn excerpt(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &t[..i]),
        None => t.to_owned(),
    }
}

/// `http://` added when no scheme is given, trailing `/`s dropped; credentials, queries and
/// fragments refused.
fn normalize_node_url(raw: &str) -> anyhow::Result<String> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|e| anyhow!("invalid --node URL: {e}; expected e.g. http://127.0.0.1:4001"))?;
    if !url.username().is_empty() || url.password().is_some() {
        bail!("invalid --node URL: put credentials in -u USER:PASSWORD, not in the URL");
    }
    if url.scheme() != "http" && url.scheme() != "https" {
        bail!("invalid --node URL `{raw}`: the scheme must be http or https");
    }
    if url.host_str().is_none() {
        bail!("invalid --node URL `{raw}`: no host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("invalid --node URL `{raw}`: remove the query string or fragment");
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A private (0700) directory under the system temp dir, removed with everything in it when
/// dropped.
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    const PREFIX: &'static str = "raftlite-backup-";

    pub(crate) fn new() -> anyhow::Result<ScratchDir> {
        let base = std::env::temp_dir();
        ScratchDir::remove_stale(&base);
        let mut last_error = None;
        for _ in 0..16 {
            let path = base.join(format!(
                "{}{}-{:016x}",
                ScratchDir::PREFIX,
                std::process::id(),
                rand::random::<u64>()
            ));
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(0o700);
            }
            match builder.create(&path) {
                Ok(()) => return Ok(ScratchDir(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
                Err(e) => {
                    last_error = Some(e);
                    break;
                }
            }
        }
        bail!(
            "cannot create a temporary directory in {}: {}; set TMPDIR to a writable directory \
             with room for the whole database",
            base.display(),
            last_error.map_or_else(|| "unknown error".to_string(), |e| e.to_string())
        )
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// Removes the scratch directories of earlier runs that were killed (`kill -9`, power
    /// loss): `raftlite-backup-<pid>-<random>` whose process no longer exists and that nothing
    /// touched for [`STALE_AFTER`] (a process of another PID namespace sharing this temp dir
    /// is not visible in `/proc`). Best effort; only where `/proc` tells which processes live.
    fn remove_stale(base: &Path) {
        let proc = Path::new("/proc");
        if !proc.join("self").exists() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(base) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(ScratchDir::PREFIX))
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
            else {
                continue;
            };
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir
                && pid != std::process::id()
                && !proc.join(pid.to_string()).exists()
                && untouched_for(&entry.path()) >= STALE_AFTER
            {
                // Someone else's (another user's) directory simply fails to go: ignored.
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// How long a dead run's scratch directory is left alone before a later run removes it.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Time since `dir` or anything directly in it was last modified (zero when unknown).
fn untouched_for(dir: &Path) -> Duration {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut newest = modified(dir);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            newest = newest.max(modified(&entry.path()));
        }
    }
    newest
        .and_then(|t| t.elapsed().ok())
        .unwrap_or(Duration::ZERO)
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => eprintln!(
                "warning: could not remove the temporary directory {}: {e}; delete it by hand",
                self.0.display()
            ),
        }
    }
}

fn progress_bar(len: Option<u64>, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(len) => (
            ProgressBar::new(len),
            "snapshot {bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "snapshot {spinner} {bytes} {binary_bytes_per_sec}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

pub(crate) fn spinner(visible: bool, message: String) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

// ---------------------------------------------------------------------------------------------
// backup list
// ---------------------------------------------------------------------------------------------

/// One backup in JSON: the id, then the manifest's fields.
#[derive(Serialize)]
struct ListedJson<'a> {
    id: &'a BackupId,
    #[serde(flatten)]
    manifest: &'a Manifest,
}

async fn list(args: BackupListArgs) -> anyhow::Result<()> {
    let dest = open_destination(&args.from)?;
    let listing = list_backups(&dest).await.map_err(engine_error)?;
    if args.json {
        let out: Vec<ListedJson<'_>> = listing
            .backups
            .iter()
            .map(|(id, manifest)| ListedJson { id, manifest })
            .collect();
        print_json(&out)?;
        // stdout stays a JSON array; the rest goes to stderr.
        for w in &listing.warnings {
            eprintln!("warning: {w}");
        }
        for id in &listing.incomplete {
            eprintln!("incomplete: {id} (no manifest.json: in progress or failed; not a backup)");
        }
        return Ok(());
    }

    let mut out = io::stdout().lock();
    if listing.backups.is_empty() {
        writeln!(out, "no complete backups in {dest}")?;
    } else {
        let header = [
            "ID",
            "CREATED",
            "TIMELINE",
            "INDEX",
            "PLAIN",
            "STORED",
            "ENCRYPTED",
            "VERIFIED",
        ]
        .map(str::to_string)
        .to_vec();
        let rows: Vec<Vec<String>> = listing
            .backups
            .iter()
            .map(|(id, m)| {
                vec![
                    id.to_string(),
                    m.created_at.clone(),
                    format!(
                        "#{} {}",
                        m.timeline.counter,
                        m.timeline.id.get(..8).unwrap_or(&m.timeline.id)
                    ),
                    m.log_index.to_string(),
                    human_bytes(m.plain_size),
                    human_bytes(m.stored_size),
                    if m.encryption.is_some() { "yes" } else { "no" }.to_string(),
                    if listing.verified.contains(id) {
                        "yes"
                    } else {
                        "no"
                    }
                    .to_string(),
                ]
            })
            .collect();
        write!(out, "{}", render_table(&header, &rows))?;
        writeln!(
            out,
            "{} backup{} in {dest}, newest first",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" }
        )?;
    }
    if !listing.warnings.is_empty() {
        writeln!(out)?;
        writeln!(out, "unusable (manifest present but bad; not restorable):")?;
        for w in &listing.warnings {
            writeln!(out, "  warning: {w}")?;
        }
    }
    if !listing.incomplete.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "incomplete (no manifest.json: in progress or failed; not backups):"
        )?;
        for id in &listing.incomplete {
            writeln!(out, "  {id}")?;
        }
    }
    Ok(())
}

/// Columns padded to their widest cell, two spaces apart; numbers right-aligned.
fn render_table(header: &[String], rows: &[Vec<String>]) -> String {
    let numeric = |col: usize| matches!(col, 2..=5);
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            if i > 0 {
                s.push_str("  ");
            }
            if numeric(i) {
                s.push_str(&format!("{cell:>width$}"));
            } else {
                s.push_str(&format!("{cell:<width$}"));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// backup verify
// ---------------------------------------------------------------------------------------------

/// One check a verification passed, for the report.
#[derive(Serialize)]
struct Check {
    check: &'static str,
    detail: String,
}

#[derive(Serialize)]
struct VerifiedJson {
    id: String,
    ok: bool,
    /// The checks passed (all of them when `ok`).
    checks: Vec<Check>,
    failed_check: Option<&'static str>,
    error: Option<String>,
    manifest: Option<Manifest>,
}

/// Verifies the chosen backups; `Ok(false)` when any failed a check.
async fn verify(args: BackupVerifyArgs) -> anyhow::Result<bool> {
    if args.identity.is_some() && args.passphrase_env.is_some() {
        bail!(
            "give either --identity (an age identity file) or --passphrase-env, not both: a \
             backup is encrypted one way"
        );
    }
    let identity = identity_from(args.identity.as_deref(), args.passphrase_env.as_deref())?;
    let dest = open_destination(&args.from)?;

    // (id, reason it cannot even be tried)
    let mut targets: Vec<(BackupId, Option<String>)> = Vec::new();
    if let Some(raw) = &args.id {
        let id: BackupId = raw.trim().parse().map_err(engine_error)?;
        targets.push((id, None));
    } else {
        let listing = list_backups(&dest).await.map_err(engine_error)?;
        if args.all {
            targets.extend(listing.backups.iter().map(|(id, _)| (id.clone(), None)));
            targets.extend(
                listing
                    .warnings
                    .iter()
                    .map(|w| (w.id.clone(), Some(w.reason.clone()))),
            );
        } else {
            for w in &listing.warnings {
                eprintln!("warning: {w}");
            }
            if let Some((id, _)) = listing.backups.first() {
                targets.push((id.clone(), None));
            }
        }
        if targets.is_empty() {
            bail!(
                "no complete backup in {dest} to verify{}; list them with `raftlite backup list \
                 --from {dest}`",
                if listing.incomplete.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} incomplete set(s) without manifest.json)",
                        listing.incomplete.len()
                    )
                }
            );
        }
    }

    let progress = io::stderr().is_terminal();
    let mut reports = Vec::new();
    let mut failed = 0usize;
    for (id, unusable) in targets {
        let outcome = match unusable {
            Some(reason) => Err(("manifest", format!("backup {id} in {dest}: {reason}"))),
            None => {
                let bar = spinner(progress, format!("verifying {id}"));
                let result = verify_backup(&dest, &id, identity.as_ref()).await;
                bar.finish_and_clear();
                if result.is_ok() {
                    // Best effort: marks the set verified for retention and `backup list`; a
                    // read-only credential only loses that marker.
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0);
                    if let Err(e) = raftlite_backup::mark_verified(&dest, &id, now).await {
                        eprintln!(
                            "note: {id} passed, but its verified marker was not written: {e}"
                        );
                    }
                }
                result.map_err(|e| (failed_check(&e), e.to_string()))
            }
        };
        let report = match outcome {
            Ok(report) => VerifiedJson {
                id: id.to_string(),
                ok: true,
                checks: checks_of(&report, identity.as_ref()),
                failed_check: None,
                error: None,
                manifest: Some(report.manifest),
            },
            Err((check, error)) => {
                failed += 1;
                VerifiedJson {
                    id: id.to_string(),
                    ok: false,
                    checks: Vec::new(),
                    failed_check: Some(check),
                    error: Some(error),
                    manifest: None,
                }
            }
        };
        if !args.json {
            print_verified(&report)?;
        }
        reports.push(report);
    }
    if args.json {
        print_json(&reports)?;
    } else if reports.len() > 1 {
        println!(
            "{} verified, {} passed, {} failed",
            reports.len(),
            reports.len() - failed,
            failed
        );
    }
    Ok(failed == 0)
}

fn print_verified(report: &VerifiedJson) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if report.ok {
        writeln!(out, "OK      {}", report.id)?;
        let width = report
            .checks
            .iter()
            .map(|c| c.check.len())
            .max()
            .unwrap_or(0);
        for c in &report.checks {
            writeln!(out, "  {:<width$}  {}", c.check, c.detail)?;
        }
    } else {
        writeln!(
            out,
            "FAILED  {}: {} check failed: {}",
            report.id,
            report.failed_check.unwrap_or("verify"),
            report.error.as_deref().unwrap_or("")
        )?;
    }
    out.flush()
}

/// The checks a successful verification did, in order.
fn checks_of(report: &VerifyReport, identity: Option<&Identity>) -> Vec<Check> {
    let m = &report.manifest;
    let mut checks = vec![
        Check {
            check: "manifest",
            detail: format!(
                "format {}, cluster {}, timeline #{}, log index {}, created {}",
                m.format_version, m.cluster_id, m.timeline.counter, m.log_index, m.created_at
            ),
        },
        Check {
            check: "stored object",
            detail: format!(
                "{}, {}: size and sha256 as recorded",
                m.object_name(),
                human_bytes(report.stored_size)
            ),
        },
    ];
    if let Some(e) = &m.encryption {
        checks.push(Check {
            check: "decryption",
            detail: format!(
                "{} with the given {}, authenticated",
                e.scheme,
                match identity {
                    Some(Identity::Passphrase(_)) => "passphrase",
                    _ => "identity",
                }
            ),
        });
    }
    checks.extend([
        Check {
            check: "zstd frame",
            detail: format!("complete, checksum ok (level {})", m.compression.level),
        },
        Check {
            check: "plain database",
            detail: format!(
                "{}: size and sha256 as recorded",
                human_bytes(report.plain_size)
            ),
        },
        Check {
            check: "integrity_check",
            detail: "ok".to_string(),
        },
        Check {
            check: "page count",
            detail: format!(
                "{} pages of {} bytes as recorded",
                report.page_count, report.page_size
            ),
        },
        Check {
            check: "_raftlite_meta",
            detail: format!(
                "timeline #{} ({}), log index {} as recorded",
                m.timeline.counter, m.timeline.id, m.log_index
            ),
        },
    ]);
    checks
}

/// The name of the check a verification error stands for.
fn failed_check(e: &BackupError) -> &'static str {
    match e {
        BackupError::NotFound { .. } | BackupError::BadManifest { .. } => "manifest",
        BackupError::InvalidId { .. } => "backup id",
        BackupError::Download { .. } => "download",
        BackupError::Truncated { .. } | BackupError::StoredSizeMismatch { .. } => "stored size",
        BackupError::StoredHashMismatch { .. } => "stored sha256",
        BackupError::IdentityRequired { .. } => "decryption (identity required)",
        BackupError::WrongKey { .. } => "decryption (wrong key)",
        BackupError::InvalidIdentity { .. } | BackupError::Decrypt { .. } => "decryption",
        BackupError::BadZstdFrame { .. } => "zstd frame",
        BackupError::PlainSizeMismatch { .. } => "plain size",
        BackupError::PlainHashMismatch { .. } => "plain sha256",
        BackupError::IntegrityCheck { .. } => "integrity_check",
        BackupError::PageCountMismatch { .. } => "page count",
        BackupError::RestoredMetaMismatch { .. } => "_raftlite_meta",
        BackupError::Local { .. } => "local file",
        _ => "verify",
    }
}

// ---------------------------------------------------------------------------------------------
// Output helpers
// ---------------------------------------------------------------------------------------------

pub(crate) fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot render JSON")?;
    let mut out = io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        // The reader went away (`| head`): not an error of ours.
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `512 B`, `1.5 KiB`, `12.3 MiB`, `1.20 GiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit >= 2 {
        format!("{value:.2} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub(crate) fn human_duration(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12 * 1024 * 1024 + 300 * 1024), "12.3 MiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.00 GiB");
        assert_eq!(human_duration(Duration::from_millis(2340)), "2.3 s");
    }

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

    #[test]
    fn ids_from_manifests() {
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "format_version": 1, "cluster_id": "c1", "node_id": 1,
            "timeline": {"id": "t", "counter": 2}, "log_index": 42, "log_term": 3,
            "created_at": "2025-01-02T03:04:05.678Z", "created_at_unix_ms": 1_735_787_045_678i64,
            "sqlite_page_size": 4096, "sqlite_page_count": 2,
            "plain_sha256": "00", "plain_size": 1, "stored_sha256": "00", "stored_size": 1,
            "compression": {"algorithm": "zstd", "level": 3}, "encryption": null,
            "raftlite_version": "0.1.0"
        }))
        .unwrap();
        let id = manifest.id().unwrap();
        assert_eq!(id.to_string(), "c1/20250102T030405.678Z-2-42");
        let json = serde_json::to_value(ListedJson {
            id: &id,
            manifest: &manifest,
        })
        .unwrap();
        assert_eq!(json["id"], "c1/20250102T030405.678Z-2-42");
        assert_eq!(json["log_index"], 42);
    }

    #[test]
    fn encryption_choices() {
        assert!(encryption_of(&[], None).unwrap().is_none());
        let err = encryption_of(&["age1x".to_string()], Some("X")).unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
        // A passphrase passed instead of a variable name is not echoed.
        let err = encryption_of(&[], Some("my secret words")).unwrap_err();
        assert!(!err.to_string().contains("my secret"), "{err}");
        let err = encryption_of(&[], Some("RAFTLITE_TEST_SURELY_UNSET_VAR")).unwrap_err();
        assert!(
            err.to_string()
                .contains("RAFTLITE_TEST_SURELY_UNSET_VAR is not set"),
            "{err}"
        );
    }

    #[test]
    fn tables_align() {
        let header = ["ID", "CREATED", "TIMELINE", "INDEX"]
            .map(str::to_string)
            .to_vec();
        let rows = vec![vec![
            "c/s".to_string(),
            "t".to_string(),
            "1".to_string(),
            "12345".to_string(),
        ]];
        let text = render_table(&header, &rows);
        assert_eq!(
            text,
            "ID   CREATED  TIMELINE  INDEX\nc/s  t               1  12345\n"
        );
    }
}
