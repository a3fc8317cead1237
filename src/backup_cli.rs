//! `raftlite backup create|list|prune|verify`: the command-line face of the backup engine
//! (`crates/backup`). Arguments in, tables and JSON out; the node client, scratch space,
//! destinations and signals are `raftlite_restore`'s, shared with `raftlite restore`.
//!
//! - `create` streams `GET {node}/db/backup` (a consistent copy taken by the leader at one
//!   applied index while writes go on) into a private temporary directory under the system temp
//!   dir (`TMPDIR`), reads the copy's own `_raftlite_meta` (applied position and timeline
//!   history), and hands it to [`create_backup`], which compresses, encrypts and uploads it with
//!   the manifest written last. The temporary directory is removed at the end, on error and on
//!   Ctrl-C/SIGTERM too.
//! - `list` prints the complete backups of a destination, newest first, each with its kind (full
//!   or incremental), an incremental's parent and the destinations it was copied to, then the
//!   sets that could not be used (bad manifest) and the incomplete ones (no manifest: in progress
//!   or failed), then the log archive's coverage per timeline (index and time range, gaps).
//! - `verify` downloads and checks backups end to end ([`verify_backup`]), then (unless one
//!   `--id` is asked for) the log archive of every cluster and timeline: segment hashes, names
//!   and chain continuity, and the entries when the identity opens them.
//! - `prune` applies the `--keep-*` rules, never deleting a base backup the log archive's
//!   retained window needs, and with `--archive-keep-within` prunes the archive too.
//! - `copy` copies finished backups (and the log archive) that `--to` lacks from `--from`
//!   ([`copy_destination`]): each object checked against its hash before it lands, manifests
//!   last, so an interrupted or refused copy never shows a half set; running it again moves only
//!   what is still missing.
//!
//! Exit status: 0 on success, 1 when `verify` found a backup or archive timeline that fails a
//! check or `copy` could not copy everything, 2 for any other error (bad flags, node or
//! destination unreachable, ...; `main` maps errors to 2).
//!
//! Cloud destinations retry failing requests (object_store's default: up to 10 retries within
//! 3 minutes). `RAFTLITE_BACKUP_MAX_RETRIES` (a count) and `RAFTLITE_BACKUP_RETRY_TIMEOUT_SECS`
//! (seconds) bound that, e.g. to fail fast in scripts and tests
//! ([`raftlite_restore::open_destination`]).
//!
//! Credentials never appear in output: destinations print as [`Destination`] displays them
//! (scheme, bucket, prefix), passphrases are read from the environment variable the flag names,
//! and `-u USER:PASSWORD` is only ever sent as a header.

use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use raftlite_backup::copy::{copy_labels, CopyReport};
use raftlite_backup::{
    checks_of, copy_destination, create_backup, encryption_from, failed_check, human_bytes,
    identity_from, list_backups, read_manifest, verify_backup, BackupId, BackupKind, Check,
    CopySelection, CreateOptions, Destination, KeepRules, Manifest,
};
use raftlite_restore::snapshot::backup_meta;
use raftlite_restore::{
    check_reachable, engine_error, interruptible, open_destination, DownloadProgress, NodeClient,
    NodeSettings, ScratchDir,
};
use serde::Serialize;

use crate::config::{
    BackupArgs, BackupCommand, BackupCopyArgs, BackupCreateArgs, BackupListArgs, BackupVerifyArgs,
    NodeConnection,
};

/// Exit status of `verify` when a backup failed a check.
const EXIT_VERIFY_FAILED: i32 = 1;
/// Exit status of `copy` when something could not be copied.
const EXIT_COPY_INCOMPLETE: i32 = 1;
/// zstd levels accepted by `--level`.
const LEVELS: std::ops::RangeInclusive<i32> = 1..=22;

/// `raftlite backup prune`: applies the `--keep-*` rules to a destination (each cluster on its
/// own, or only `--cluster`'s), deleting each doomed set manifest first, and cleans up
/// superseded sets and incomplete ones older than a day. Base backups the log archive's window
/// needs stay (`--archive-keep-within`, 7d when not given). With `--archive-keep-within`, then
/// prunes the archive of each cluster to what the kept backups and the window need. Fails
/// after printing the report when anything could not be deleted.
async fn prune(args: crate::config::BackupPruneArgs) -> anyhow::Result<()> {
    use raftlite_backup::archive::{
        archive_clusters, archive_needs, kept_backups, prune_archive, DEFAULT_ARCHIVE_KEEP_WITHIN,
    };
    let keep = &args.keep;
    let rules = KeepRules {
        keep_last: keep.keep_last,
        keep_hourly: keep.keep_hourly,
        keep_daily: keep.keep_daily,
        keep_weekly: keep.keep_weekly,
        keep_monthly: keep.keep_monthly,
        keep_within: keep.keep_within.clone(),
    };
    let archive_window = args
        .archive_keep_within
        .as_deref()
        .map(|text| {
            raftlite_backup::parse_duration(text).map_err(|e| anyhow!("--archive-keep-within: {e}"))
        })
        .transpose()?;
    // The archive alone may be pruned; backups never without a rule.
    let policy = match archive_window {
        None => Some(rules.policy()?),
        Some(_) => Some(rules.as_given()?).filter(|p| !p.is_empty()),
    };
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
    let listing = list_backups(&dest).await.map_err(engine_error)?;
    let report = match &policy {
        Some(policy) => {
            let needs = archive_needs(
                &dest,
                &listing.backups,
                args.cluster.as_deref(),
                archive_window.unwrap_or(DEFAULT_ARCHIVE_KEEP_WITHIN),
                now_unix_ms,
            )
            .await
            .map_err(engine_error)?;
            let report = raftlite_backup::retention::prune_keeping(
                &dest,
                &listing,
                args.cluster.as_deref(),
                policy,
                now_unix_ms,
                &needs.into_keys().collect(),
                args.dry_run,
            )
            .await
            .map_err(engine_error)?;
            Some(report)
        }
        None => None,
    };

    let mut archives = Vec::new();
    let backups_failed = report.as_ref().map_or(0, |r| r.failed.len());
    if let Some(window) = archive_window.filter(|_| backups_failed == 0) {
        let kept = match &report {
            Some(r) => kept_backups(&listing.backups, r.kept.iter().map(|(id, _)| id.clone())),
            None => listing.backups.clone(),
        };
        let clusters = match &args.cluster {
            Some(c) => vec![c.clone()],
            None => archive_clusters(&dest).await.map_err(engine_error)?,
        };
        for cluster in clusters {
            archives.push(
                prune_archive(&dest, &cluster, window, now_unix_ms, &kept, args.dry_run)
                    .await
                    .map_err(engine_error)?,
            );
        }
    }

    if args.json {
        match &report {
            Some(report) => {
                let mut json = PrunedJson::from(report);
                json.archive = archive_window.map(|_| archives.as_slice());
                print_json(&json)?;
            }
            None => print_json(&ArchiveOnlyJson {
                dry_run: args.dry_run,
                archive: &archives,
            })?,
        }
    } else {
        if let Some(report) = &report {
            print_prune_report(report, &dest, args.cluster.as_deref())?;
        }
        print_archive_prune(&archives, &dest)?;
        if backups_failed > 0 && archive_window.is_some() {
            eprintln!(
                "note: the log archive was not pruned because some backups could not be deleted"
            );
        }
    }
    if backups_failed > 0 {
        let n = backups_failed;
        bail!(
            "{n} backup set{} in {dest} could not be (fully) deleted (listed above); a set \
             whose manifest.json is gone no longer counts as a backup; run the same prune again \
             to retry",
            if n == 1 { "" } else { "s" }
        );
    }
    let archive_failures: Vec<String> = archives
        .iter()
        .flat_map(|a| {
            a.failures()
                .map(|(t, reason)| format!("{}/{t}: {reason}", a.cluster_id))
                .collect::<Vec<_>>()
        })
        .collect();
    if !archive_failures.is_empty() {
        bail!(
            "the log archive in {dest} could not be fully pruned: {}",
            archive_failures.join("; ")
        );
    }
    Ok(())
}

/// What archive retention did, per cluster and timeline: each object deleted, each run of kept
/// segments with its reason, and a summary line per cluster.
fn print_archive_prune(
    archives: &[raftlite_backup::archive::ArchivePruneReport],
    dest: &Destination,
) -> anyhow::Result<()> {
    use raftlite_backup::archive::{rfc3339_utc, PrunedKind};
    let mut out = io::stdout().lock();
    for archive in archives {
        let would = if archive.dry_run { "would " } else { "" };
        let cluster = &archive.cluster_id;
        for t in &archive.timelines {
            let timeline = &t.timeline_id;
            for k in &t.kept {
                writeln!(
                    out,
                    "keep archive {cluster}/{timeline} {}-{} ({} segment{}: {})",
                    k.first_index,
                    k.last_index,
                    k.segments,
                    if k.segments == 1 { "" } else { "s" },
                    k.reason
                )?;
            }
            for o in &t.deleted {
                let kind = match o.kind {
                    PrunedKind::Segment => "segment",
                    PrunedKind::Gap => "gap record",
                };
                writeln!(
                    out,
                    "{would}delete archive {cluster}/{timeline} {kind} {}-{}",
                    o.first_index, o.last_index
                )?;
            }
            if let Some(reason) = &t.failed {
                writeln!(out, "failed archive {cluster}/{timeline}: {reason}")?;
            }
        }
        let deleted = archive.deleted_count();
        let kept: u64 = archive
            .timelines
            .iter()
            .flat_map(|t| t.kept.iter().map(|k| k.segments))
            .sum();
        writeln!(
            out,
            "{}log archive of cluster {cluster} in {dest}, retained from {}: {kept} segments \
             kept, {deleted} objects {}deleted",
            if archive.dry_run { "dry run, " } else { "" },
            rfc3339_utc(archive.window_start_unix_ms),
            if archive.dry_run { "would be " } else { "" },
        )?;
    }
    Ok(())
}

/// `backup prune --json` with only `--archive-keep-within`: `{"dry_run", "archive": [...]}`.
#[derive(Serialize)]
struct ArchiveOnlyJson<'a> {
    dry_run: bool,
    archive: &'a [raftlite_backup::archive::ArchivePruneReport],
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

/// `{"dry_run", "kept": [{"id", "reasons"}], "deleted", "cleaned", "failed": [{"id", "reason"}]}`,
/// plus `"archive": [ArchivePruneReport]` with `--archive-keep-within`.
#[derive(Serialize)]
struct PrunedJson<'a> {
    dry_run: bool,
    kept: Vec<KeptJson<'a>>,
    deleted: &'a [BackupId],
    cleaned: &'a [BackupId],
    failed: Vec<FailedJson<'a>>,
    /// With `--archive-keep-within`: what archive retention did, per cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    archive: Option<&'a [raftlite_backup::archive::ArchivePruneReport]>,
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
            archive: None,
        }
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
        BackupCommand::Copy(args) => {
            let complete = interruptible(
                copy(args),
                "a set whose copy was cut short has no manifest in the copy, so it does not \
                 count there; run the same copy again",
            )
            .await?;
            if !complete {
                let _ = io::stdout().flush();
                std::process::exit(EXIT_COPY_INCOMPLETE);
            }
            Ok(())
        }
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

// ---------------------------------------------------------------------------------------------
// backup copy
// ---------------------------------------------------------------------------------------------

/// `raftlite backup copy`: prints what was copied, skipped and failed; `Ok(false)` when
/// something could not be copied (the caller exits with [`EXIT_COPY_INCOMPLETE`]).
async fn copy(args: BackupCopyArgs) -> anyhow::Result<bool> {
    let ids = args
        .id
        .iter()
        .map(|id| id.parse::<BackupId>().map_err(engine_error))
        .collect::<Result<Vec<_>, _>>()?;
    let from = open_destination(&args.from)?;
    let to = open_destination(&args.to)?;
    let select = CopySelection {
        archive: !args.no_archive && ids.is_empty(),
        ids,
        cluster: args.cluster.clone(),
        recopy: args.recopy,
        pace: args
            .max_rate
            .map(|rate| std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rate as u64))),
    };
    let spinner = spinner(
        io::stderr().is_terminal(),
        format!("copying what {to} lacks from {from}"),
    );
    let copied = copy_destination(&from, &to, &select).await;
    spinner.finish_and_clear();
    let report = copied.map_err(engine_error)?;
    if args.json {
        print_json(&report)?;
    } else {
        print_copy_report(&report)?;
    }
    if !report.is_complete() {
        let n = report.failed.len();
        eprintln!(
            "error: {n} object{} could not be copied to {to} (listed above); fix the cause and \
             run the same command again: only what is still missing moves",
            if n == 1 { "" } else { "s" }
        );
    }
    Ok(report.is_complete())
}

fn print_copy_report(report: &CopyReport) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    for set in &report.copied {
        writeln!(
            out,
            "copied   {}  {}  {}",
            set.id,
            set.kind,
            human_bytes(set.stored_size)
        )?;
    }
    for set in &report.skipped {
        writeln!(out, "skipped  {}  ({})", set.id, set.reason)?;
    }
    for failure in &report.failed {
        writeln!(out, "failed   {}: {}", failure.object, failure.reason)?;
    }
    if let Some(a) = &report.archive {
        writeln!(
            out,
            "log archive: {} object{} copied ({} segment{}, {}), {} already there{}",
            a.copied,
            if a.copied == 1 { "" } else { "s" },
            a.segments,
            if a.segments == 1 { "" } else { "s" },
            human_bytes(a.copied_bytes),
            a.present,
            if a.pruned_in_copy > 0 {
                format!(
                    ", {} older than the copy's own archive retention keeps",
                    a.pruned_in_copy
                )
            } else {
                String::new()
            }
        )?;
    }
    writeln!(
        out,
        "{} -> {}: {} backup{} copied ({}), {} already there, {} skipped, {} failed",
        report.from,
        report.to,
        report.copied.len(),
        if report.copied.len() == 1 { "" } else { "s" },
        human_bytes(report.copied_bytes),
        report.present,
        report.skipped.len(),
        report.failed.len()
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// backup create
// ---------------------------------------------------------------------------------------------

async fn create(args: BackupCreateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    // Everything that can be checked locally is checked before any transfer.
    let encryption = encryption_from(&args.recipient, args.passphrase_env.as_deref())?;
    if !LEVELS.contains(&args.level) {
        bail!(
            "--level {} is not a zstd level: use {} (fastest) to {} (smallest); 3 is the default",
            args.level,
            LEVELS.start(),
            LEVELS.end()
        );
    }
    let node = node_client(&args.connection, None)?;
    let dest = open_destination(&args.to)?;
    check_reachable(&dest).await?;
    let progress = io::stderr().is_terminal();

    let scratch = ScratchDir::new()?;
    let db = scratch.path().join("db.sqlite");
    let downloaded = node
        .download_snapshot(&db, &SnapshotBar::new(progress))
        .await?;
    let download_time = started.elapsed();
    let meta = backup_meta(&node, &db, &downloaded).await?;

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

// ---------------------------------------------------------------------------------------------
// The node and progress
// ---------------------------------------------------------------------------------------------

/// The client of `--node` (`-u`, `--ca-cert`, `--insecure`); `read_timeout` replaces the
/// default limit for one read from the node (a restore answers only once the whole cluster
/// switched to the new file).
pub(crate) fn node_client(
    conn: &NodeConnection,
    read_timeout: Option<Duration>,
) -> anyhow::Result<NodeClient> {
    let settings = NodeSettings {
        node: conn.node.clone(),
        user: conn.credentials.user.clone(),
        ca_cert: conn.credentials.ca_cert.clone(),
        insecure: conn.credentials.insecure,
    };
    let client = match read_timeout {
        Some(limit) => NodeClient::with_read_timeout(&settings, limit)?,
        None => NodeClient::new(&settings)?,
    };
    if conn.credentials.insecure {
        eprintln!("warning: --insecure: the node's TLS certificate is not verified");
    }
    Ok(client)
}

/// The snapshot download's progress bar (shown once the node announced the size, if at all).
struct SnapshotBar {
    visible: bool,
    bar: OnceLock<ProgressBar>,
}

impl SnapshotBar {
    fn new(visible: bool) -> SnapshotBar {
        SnapshotBar {
            visible,
            bar: OnceLock::new(),
        }
    }
}

impl DownloadProgress for SnapshotBar {
    fn started(&self, len: Option<u64>) {
        let _ = self.bar.set(progress_bar(len, self.visible));
    }
    fn received(&self, bytes: u64) {
        if let Some(bar) = self.bar.get() {
            bar.inc(bytes);
        }
    }
    fn finished(&self) {
        if let Some(bar) = self.bar.get() {
            bar.finish_and_clear();
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

/// One backup in JSON: the id, then the manifest's fields (`kind` and `parent` among them),
/// then the destinations it was copied to.
#[derive(Serialize)]
struct ListedJson<'a> {
    id: &'a BackupId,
    #[serde(flatten)]
    manifest: &'a Manifest,
    copies: Vec<&'a str>,
}

async fn list(args: BackupListArgs) -> anyhow::Result<()> {
    let dest = open_destination(&args.from)?;
    if args.archive {
        return list_archive_only(&dest, args.json).await;
    }
    let listing = list_backups(&dest).await.map_err(engine_error)?;
    let labels = copy_labels(&dest, &listing).await;
    let copies_of = |id: &BackupId| -> Vec<&str> {
        listing
            .copies
            .get(id)
            .into_iter()
            .flatten()
            .map(|key| labels.get(key).map_or(key.as_str(), String::as_str))
            .collect()
    };
    if args.json {
        let out: Vec<ListedJson<'_>> = listing
            .backups
            .iter()
            .map(|(id, manifest)| ListedJson {
                id,
                manifest,
                copies: copies_of(id),
            })
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
            "KIND",
            "PARENT",
            "COPIES",
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
                    m.kind.to_string(),
                    match (&m.kind, &m.parent) {
                        (BackupKind::Incremental, Some(parent)) => parent.id.set().to_string(),
                        _ => "-".to_string(),
                    },
                    match copies_of(id).join(",") {
                        copies if copies.is_empty() => "-".to_string(),
                        copies => copies,
                    },
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
    drop(out);
    print_archive_coverage(&dest).await
}

/// `backup list --archive`: the archive's coverage per cluster and timeline, with each
/// timeline's record from the destination's history; `--json` prints
/// `[{"cluster_id", "timeline_id", "counter", "parent", "parent_index", "reason", "first_index",
/// "last_index", "first_at", "last_at", "segments", "bytes", "gaps": [[from, to]]}]`. Fails when
/// the archive cannot be listed.
async fn list_archive_only(dest: &Destination, json: bool) -> anyhow::Result<()> {
    use raftlite_backup::archive::{archive_clusters, list_archive, rfc3339_utc, timeline_history};
    if !json {
        return print_archive_coverage(dest).await;
    }
    let mut out = Vec::new();
    for cluster in archive_clusters(dest).await.map_err(engine_error)? {
        let archive = list_archive(dest, &cluster).await.map_err(engine_error)?;
        for w in &archive.warnings {
            eprintln!("warning: cluster {cluster}: {w}");
        }
        let history = timeline_history(dest, &cluster)
            .await
            .map_err(engine_error)?;
        for t in &archive.timelines {
            let record = history.iter().find(|r| r.id == t.timeline_id);
            out.push(serde_json::json!({
                "cluster_id": cluster,
                "timeline_id": t.timeline_id,
                "counter": record.map(|r| r.counter),
                "parent": record.and_then(|r| r.parent.clone()),
                "parent_index": record.and_then(|r| r.parent_index),
                "reason": record.map(|r| r.reason.clone()),
                "first_index": t.first_index,
                "last_index": t.last_index,
                "first_at": t.first_at_unix_ms.map(rfc3339_utc),
                "last_at": t.last_at_unix_ms.map(rfc3339_utc),
                "segments": t.segments,
                "bytes": t.bytes,
                "gaps": t.gaps,
            }));
        }
    }
    print_json(&out)?;
    Ok(())
}

/// The log archive's coverage per cluster and timeline (text only: `--json` stays the array of
/// backups that scripts parse). Nothing is printed for a destination without an archive; a
/// failed archive listing is a warning, the backups above stand.
async fn print_archive_coverage(dest: &Destination) -> anyhow::Result<()> {
    use raftlite_backup::archive::{archive_clusters, list_archive, rfc3339_utc};
    let clusters = match archive_clusters(dest).await {
        Ok(clusters) => clusters,
        Err(e) => {
            eprintln!("warning: cannot list the log archive: {e}");
            return Ok(());
        }
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut warnings = Vec::new();
    for cluster in &clusters {
        let archive = match list_archive(dest, cluster).await {
            Ok(archive) => archive,
            Err(e) => {
                warnings.push(format!("cluster {cluster}: {e}"));
                continue;
            }
        };
        warnings.extend(
            archive
                .warnings
                .iter()
                .map(|w| format!("cluster {cluster}: {w}")),
        );
        let time = |t: Option<i64>| t.map_or_else(|| "-".to_string(), rfc3339_utc);
        for t in &archive.timelines {
            let gaps = if t.gaps.is_empty() {
                "none".to_string()
            } else {
                t.gaps
                    .iter()
                    .map(|(a, b)| format!("{a}-{b}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            rows.push(vec![
                cluster.clone(),
                t.timeline_id.get(..8).unwrap_or(&t.timeline_id).to_string(),
                t.first_index.to_string(),
                t.last_index.to_string(),
                t.segments.to_string(),
                human_bytes(t.bytes),
                time(t.first_at_unix_ms),
                time(t.last_at_unix_ms),
                gaps,
            ]);
        }
    }
    if rows.is_empty() && warnings.is_empty() {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    writeln!(out)?;
    writeln!(
        out,
        "log archive (point-in-time restore covers FIRST..LAST except GAPS):"
    )?;
    if !rows.is_empty() {
        let header = [
            "CLUSTER", "TIMELINE", "FIRST", "LAST", "SEGMENTS", "STORED", "FROM", "TO", "GAPS",
        ]
        .map(str::to_string)
        .to_vec();
        write!(out, "{}", render_table(&header, &rows))?;
    }
    for w in &warnings {
        writeln!(out, "  warning: {w}")?;
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
    // One backup asked for by id is just that backup; otherwise the archive is checked too.
    let archive_ok = if args.id.is_none() {
        verify_archives(&dest, identity.as_ref(), args.json).await?
    } else {
        true
    };
    Ok(failed == 0 && archive_ok)
}

/// Checks the log archive of every cluster and timeline in `dest`
/// ([`raftlite_backup::archive::verify_archive_timeline`]: every segment's hashes, names and
/// chain, and the entries when `identity` opens them), printing one line per timeline and one
/// per problem. `--json` keeps stdout the array of backup reports scripts parse, so there the
/// lines go to stderr. Nothing is printed for a destination without an archive. `false` when
/// anything failed, including a listing.
async fn verify_archives(
    dest: &Destination,
    identity: Option<&raftlite_backup::Identity>,
    json: bool,
) -> anyhow::Result<bool> {
    use raftlite_backup::archive::{archive_clusters, list_archive, verify_archive_timeline};
    let say = |line: String| -> io::Result<()> {
        if json {
            eprintln!("{line}");
            Ok(())
        } else {
            let mut out = io::stdout().lock();
            writeln!(out, "{line}").and_then(|()| out.flush())
        }
    };
    let clusters = match archive_clusters(dest).await {
        Ok(clusters) => clusters,
        Err(e) => {
            say(format!("FAILED  log archive: cannot list it: {e}"))?;
            return Ok(false);
        }
    };
    let progress = io::stderr().is_terminal() && !json;
    let mut ok = true;
    for cluster in clusters {
        let listing = match list_archive(dest, &cluster).await {
            Ok(listing) => listing,
            Err(e) => {
                say(format!("FAILED  archive {cluster}: cannot list it: {e}"))?;
                ok = false;
                continue;
            }
        };
        for warning in &listing.warnings {
            eprintln!("warning: archive {cluster}: {warning}");
        }
        for timeline in &listing.timelines {
            let name = format!("{cluster}/{}", timeline.timeline_id);
            let bar = spinner(progress, format!("verifying the archive of {name}"));
            let result =
                verify_archive_timeline(dest, &cluster, &timeline.timeline_id, identity).await;
            bar.finish_and_clear();
            match result {
                Ok(report) if report.problems.is_empty() => {
                    say(format!(
                        "OK      archive {name}: {} segments, {} entries ({}-{}), chain unbroken{}",
                        report.segments_checked,
                        report.entries,
                        timeline.first_index,
                        timeline.last_index,
                        if timeline.gaps.is_empty() {
                            String::new()
                        } else {
                            format!(", {} recorded gap(s)", timeline.gaps.len())
                        }
                    ))?;
                    ok &= verify_replays(dest, &cluster, &timeline.timeline_id, identity, &say)
                        .await?;
                }
                Ok(report) => {
                    ok = false;
                    say(format!(
                        "FAILED  archive {name}: {} problem{} in {} segments checked",
                        report.problems.len(),
                        if report.problems.len() == 1 { "" } else { "s" },
                        report.segments_checked
                    ))?;
                    for p in &report.problems {
                        say(format!("  {}: {}", p.path, p.problem))?;
                    }
                }
                Err(e) => {
                    ok = false;
                    say(format!("FAILED  archive {name}: {e}"))?;
                }
            }
        }
    }
    Ok(ok)
}

/// Replays the archive of one timeline from each base backup to the next and compares the
/// contents ([`raftlite_restore::point_in_time::check_replay_between_bases`]), one line per
/// pair. `false` when any pair differs or could not be replayed.
async fn verify_replays(
    dest: &Destination,
    cluster: &str,
    timeline: &str,
    identity: Option<&raftlite_backup::Identity>,
    say: &impl Fn(String) -> io::Result<()>,
) -> anyhow::Result<bool> {
    let scratch = raftlite_restore::scratch::ScratchDir::new()?;
    let checks = raftlite_restore::point_in_time::check_replay_between_bases(
        dest,
        cluster,
        timeline,
        identity,
        scratch.path(),
        &mut |line| tracing::debug!("{line}"),
    )
    .await;
    let checks = match checks {
        Ok(checks) => checks,
        Err(e) => {
            say(format!(
                "FAILED  archive {cluster}/{timeline}: cannot replay it between base backups: {e}"
            ))?;
            return Ok(false);
        }
    };
    let mut ok = true;
    for check in checks {
        let what = format!(
            "archive {cluster}/{timeline} replayed from backup {} (entry {}) to backup {} \
             (entry {})",
            check.from, check.from_index, check.to, check.to_index
        );
        match check.outcome {
            Ok(entries) => say(format!("OK      {what}: {entries} entries, same content"))?,
            Err(reason) => {
                ok = false;
                say(format!("FAILED  {what}: {reason}"))?;
            }
        }
    }
    Ok(ok)
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

pub(crate) fn human_duration(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(human_duration(Duration::from_millis(2340)), "2.3 s");
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
            copies: vec!["s3://copy/raftlite"],
        })
        .unwrap();
        assert_eq!(json["id"], "c1/20250102T030405.678Z-2-42");
        assert_eq!(json["log_index"], 42);
        assert_eq!(json["kind"], "full");
        assert_eq!(json["copies"], serde_json::json!(["s3://copy/raftlite"]));
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
