//! `raftlite restore`: replaces the whole cluster's database, online, with a SQLite file or a
//! backup. The front-end: arguments in, progress bars and the report out; the work is in
//! `raftlite_restore` ([`source`](raftlite_restore::source) prepares what is sent,
//! [`outcome`](raftlite_restore::outcome) sends it and tells what became of it).
//!
//! The source is prepared on the operator's machine, then streamed to `POST {node}/db/load`
//! (any member: a follower forwards the upload to the leader), which checks it again, sends it
//! through the Raft log in chunks and has every node swap it in at one log index on a new
//! timeline (`raftlite_consensus::restore`).
//!
//! Sources:
//! - a SQLite file, never modified. A file in WAL mode is copied (with its `-wal` when there is
//!   one) into a private temporary directory and consolidated there with SQLite's backup API,
//!   so committed transactions still in the WAL come along; opening the original, even
//!   read-only, would create a `-shm` beside it. A file beside a hot rollback journal (a writer
//!   crashed or is mid-transaction) is refused. The file must pass `PRAGMA integrity_check`
//!   before anything is sent.
//! - `-`: stdin, spooled to a temporary file first (memory stays bounded).
//! - a backup destination URL (anything with `://`): `--id` or the newest verified backup (else
//!   the newest), streamed to the node as it downloads, decrypted and decompressed on the way,
//!   without a local copy: the stored bytes' and the database's size and sha256 are checked
//!   against the manifest as they pass, the upload ends only once every check passed (a failed
//!   check cuts it off, and the node refuses a cut-off upload), and the node checks the
//!   database's sha256 again (header `x-raftlite-expect-sha256`) and runs `integrity_check`.
//!
//! The client picks the new timeline's id (`?timeline_id=`). When the answer is lost, or the
//! node says the outcome is unknown, every member's `/status` is polled (the members are asked
//! for with `/nodes` before the upload): the restore took effect (all-new) exactly when a node's
//! current timeline is that id; the polling goes on while the leader reports the restore in
//! progress or chunks keep arriving, and ends [`POLL_FOR`] after that stops.
//!
//! Exit status: 0 only when the restore took effect; 2 otherwise (refused, failed, all-old, bad
//! flags, node unreachable; `main` maps errors to 2).

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use raftlite_backup::human_bytes;
use raftlite_restore::outcome::{
    load, peer_bases, poll_timeline, Answer, Polled, ANSWER_TIMEOUT, POLL_FOR,
};
use raftlite_restore::point_in_time::{prepare_point_in_time, Target};
use raftlite_restore::source::{
    prepare_backup, prepare_local_file, spool_stdin, BackupSource, Prepared,
};
use raftlite_restore::upload::UploadProgress;
use raftlite_restore::{interruptible, ScratchDir};
use serde_json::{json, Value};

use crate::backup_cli::{human_duration, node_client, print_json, spinner};
use crate::config::RestoreArgs;

/// Entry point of `raftlite restore`.
pub async fn run(args: RestoreArgs) -> anyhow::Result<()> {
    // Chosen before anything is sent so that every message can name it.
    let timeline_id = format!("{:032x}", rand::random::<u128>());
    let cleanup = format!(
        "the temporary files were removed. If the upload had finished, the restore may still \
         take effect: it did if /status shows the current timeline {timeline_id}"
    );
    interruptible(restore(args, timeline_id), &cleanup).await
}

async fn restore(args: RestoreArgs, timeline_id: String) -> anyhow::Result<()> {
    let started = Instant::now();
    let is_backup = args.from.contains("://");
    if !is_backup {
        if args.id.is_some() {
            bail!("--id picks a backup: it needs --from with a backup destination URL");
        }
        if args.identity.is_some() || args.passphrase_env.is_some() {
            bail!(
                "--identity and --passphrase-env decrypt backups: they need --from with a \
                 backup destination URL"
            );
        }
    }
    let target = point_in_time_target(&args)?;
    if target.is_some() && !is_backup {
        bail!(
            "--to-index, --to-time and --to-latest replay the log archived beside backups: they              need --from with a backup destination URL"
        );
    }
    if args.timeline.is_some() && target.is_none() {
        bail!("--timeline picks the archive to replay: use it with --to-index, --to-time or --to-latest");
    }
    let node = node_client(&args.connection, Some(ANSWER_TIMEOUT))?;
    let progress = io::stderr().is_terminal();
    let scratch = ScratchDir::new()?;

    let prepared = if let Some(target) = target {
        let dest = raftlite_restore::destination::open_destination(&args.from)?;
        let identity = raftlite_backup::identity_from(
            args.identity.as_deref(),
            args.passphrase_env.as_deref(),
        )?;
        let built = prepare_point_in_time(
            &dest,
            args.timeline.as_deref(),
            target,
            identity.as_ref(),
            scratch.path(),
            &mut |line| eprintln!("{line}"),
        )
        .await?;
        eprintln!(
            "replayed {} archived entries onto backup {}: the database as of log entry {}{}",
            built.entries_replayed,
            built.base,
            built.index,
            built
                .at_unix_ms
                .map(|ms| format!(" (last write at {})", rfc3339_ms(ms)))
                .unwrap_or_default()
        );
        if let Some(later) = &built.checked_against {
            eprintln!("checked: replaying the archive on to backup {later} gives its content");
        }
        let label = format!(
            "{} at log entry {} of timeline {}",
            args.from, built.index, built.timeline_id
        );
        let bar = spinner(
            progress,
            format!("checking {label} (PRAGMA integrity_check)"),
        );
        let prepared = prepare_local_file(built.path.clone(), label, scratch.path()).await;
        bar.finish_and_clear();
        prepared?
    } else if is_backup {
        let source = BackupSource {
            from: args.from.clone(),
            id: args.id.clone(),
            identity: args.identity.clone(),
            passphrase_env: args.passphrase_env.clone(),
        };
        prepare_backup(&source, scratch.path(), &mut |line| eprintln!("{line}")).await?
    } else {
        let (path, label) = if args.from == "-" {
            (spool_stdin(scratch.path()).await?, "stdin".to_string())
        } else {
            (PathBuf::from(&args.from), args.from.clone())
        };
        let bar = spinner(
            progress,
            format!("checking {label} (PRAGMA integrity_check)"),
        );
        let prepared = prepare_local_file(path, label, scratch.path()).await;
        bar.finish_and_clear();
        prepared?
    };
    if prepared.consolidated_wal {
        eprintln!(
            "note: {} is in WAL mode; its -wal was consolidated into a temporary copy, which is \
             what is restored",
            prepared.label
        );
    }

    let reason = format!("restore from {}", prepared.label);
    // Asked now, while the cluster answers: if the answer is lost, any of them can tell.
    let peers = peer_bases(&node).await;
    let bar = upload_bar(prepared.size, progress);
    let sent = Arc::new(BarProgress(bar.clone()));
    let outcome = load(&node, &prepared, &timeline_id, &reason, sent).await;
    bar.finish_and_clear();
    let outcome = outcome?;
    drop(scratch);
    let answer = match outcome {
        Answer::Restored(answer) => answer,
        Answer::Unknown(why) => {
            eprintln!(
                "the outcome is unknown ({why}); asking /status of {} while the restore is under \
                 way (and up to {} s after it stops moving) whether the cluster is on the new \
                 timeline {timeline_id}",
                std::iter::once(node.base.as_str())
                    .chain(peers.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(", "),
                POLL_FOR.as_secs()
            );
            return match poll_timeline(&node, &peers, &timeline_id).await {
                Polled::TookEffect(timeline) => {
                    report_polled(&args, &prepared, &timeline, started.elapsed())
                }
                Polled::Other(current) => bail!(
                    "the restore did not take effect (all-old): {why}; /status shows timeline \
                     {current}, not {timeline_id}, and no restore has been under way for {} s; \
                     every node keeps its old data; retry when the cluster is healthy",
                    POLL_FOR.as_secs()
                ),
                Polled::Unreachable(e) => bail!(
                    "the outcome of the restore is unknown ({why}) and no node's /status \
                     answered within {} s ({e}); it took effect on every node or on none: it \
                     did if /status shows the current timeline {timeline_id}",
                    POLL_FOR.as_secs()
                ),
            };
        }
    };
    report(&args, &prepared, &answer, &timeline_id, started.elapsed())
}

/// The point in time the `--to-*` flags ask for, if any.
fn point_in_time_target(args: &RestoreArgs) -> anyhow::Result<Option<Target>> {
    Ok(match (&args.to_index, &args.to_time, args.to_latest) {
        (Some(index), None, false) => Some(Target::Index(*index)),
        (None, Some(text), false) => {
            let at = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
                anyhow::anyhow!(
                    "--to-time `{text}` is not an RFC 3339 time ({e}); write it like                      2026-12-07T14:03:00Z or 2026-12-07T15:03:00+01:00"
                )
            })?;
            Some(Target::Time(at.timestamp_millis()))
        }
        (None, None, true) => Some(Target::Latest),
        (None, None, false) => None,
        _ => bail!("give one of --to-index, --to-time and --to-latest"),
    })
}

fn rfc3339_ms(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| unix_ms.to_string())
}

fn upload_bar(len: u64, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "upload {bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// The CLI's progress bar as an upload's progress.
struct BarProgress(ProgressBar);

impl UploadProgress for BarProgress {
    fn sent(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn all_sent(&self) {
        waiting_style(&self.0);
    }
}

fn waiting_style(bar: &ProgressBar) {
    if bar.is_hidden() {
        return;
    }
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message("the cluster checks, replicates and swaps in the file");
    bar.enable_steady_tick(Duration::from_millis(120));
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

fn report(
    args: &RestoreArgs,
    prepared: &Prepared,
    answer: &Value,
    timeline_id: &str,
    total: Duration,
) -> anyhow::Result<()> {
    let timeline = &answer["timeline"];
    let restore = &answer["restore"];
    if timeline["id"].as_str() != Some(timeline_id) {
        eprintln!(
            "warning: the node reports timeline {} but {timeline_id} was asked for",
            timeline["id"]
        );
    }
    if args.json {
        let mut out = answer.clone();
        if let Some(obj) = out.as_object_mut() {
            obj.insert("source".into(), json!(prepared.label));
            obj.insert("outcome".into(), json!("took effect (all-new)"));
            obj.insert("duration_secs".into(), json!(total.as_secs_f64()));
        }
        return print_json(&out);
    }
    let mut out = io::stdout().lock();
    writeln!(out, "restore took effect on the whole cluster (all-new)")?;
    writeln!(out, "  source       {}", prepared.label)?;
    writeln!(
        out,
        "  size         {} (sha256 {})",
        human_bytes(restore["size"].as_u64().unwrap_or(prepared.size)),
        restore["sha256"].as_str().unwrap_or("?")
    )?;
    writeln!(out, "  timeline     {}", timeline_text(timeline))?;
    writeln!(
        out,
        "  log index    {} (every node switched to the new data there)",
        restore["index"]
    )?;
    writeln!(
        out,
        "  duration     {} (cluster {})",
        human_duration(total),
        human_duration(Duration::from_secs_f64(
            restore["duration_secs"]
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .unwrap_or(0.0)
        ))
    )?;
    Ok(())
}

/// The outcome told by `/status` after a lost answer.
fn report_polled(
    args: &RestoreArgs,
    prepared: &Prepared,
    timeline: &Value,
    total: Duration,
) -> anyhow::Result<()> {
    if args.json {
        return print_json(&json!({
            "source": prepared.label,
            "outcome": "took effect (all-new)",
            "confirmed_by": "/status",
            "timeline": timeline,
            "size": prepared.size,
            "duration_secs": total.as_secs_f64(),
        }));
    }
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "restore took effect on the whole cluster (all-new), confirmed by /status"
    )?;
    writeln!(out, "  source       {}", prepared.label)?;
    writeln!(out, "  size         {}", human_bytes(prepared.size))?;
    writeln!(out, "  timeline     {}", timeline_text(timeline))?;
    writeln!(out, "  duration     {}", human_duration(total))?;
    Ok(())
}

/// `#2 (id), after #1's parent id at index N`.
fn timeline_text(timeline: &Value) -> String {
    let mut text = format!(
        "#{} ({})",
        timeline["counter"],
        timeline["id"].as_str().unwrap_or("?")
    );
    if let Some(parent) = timeline["parent"].as_str() {
        text.push_str(&format!(", parent {parent}"));
        if let Some(at) = timeline["parent_index"].as_u64() {
            text.push_str(&format!(" at index {at}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timelines_read_well() {
        let t = json!({"id": "abc", "counter": 2, "parent": "p", "parent_index": 7});
        assert_eq!(timeline_text(&t), "#2 (abc), parent p at index 7");
    }
}
