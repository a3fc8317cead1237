//! `raftlite doctor` (what a data dir holds and what to do, changing nothing) and
//! `raftlite recover` (offline lost-quorum recovery of a stopped node).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use raftlite_consensus::log_store;
use raftlite_consensus::node::DataDirLayout;
use raftlite_consensus::recovery::{rewrite_membership, validate_members, Member};
use raftlite_consensus::startup::{classify, DataDirState};
use raftlite_consensus::state_machine::{log_id_to_position, SnapshotDir};
use serde_json::{json, Value};

/// Arguments of `raftlite doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// The data dir to examine (the node may be stopped or running; nothing is changed).
    #[arg(
        long,
        value_name = "DIR",
        env = "RAFTLITE_DATA_DIR",
        default_value = "./raftlite-data"
    )]
    pub data_dir: PathBuf,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `raftlite recover`.
#[derive(Debug, Clone, Args)]
pub struct RecoverArgs {
    /// Data dir of a STOPPED surviving node.
    #[arg(long, value_name = "DIR", env = "RAFTLITE_DATA_DIR")]
    pub data_dir: PathBuf,

    /// The new cluster's voters: ID=RAFT_ADDR[@API_ADDR], comma-separated (usually just this
    /// node, e.g. `1=10.0.0.1:4002`). The API address is taken from the old membership when
    /// omitted.
    #[arg(
        long,
        value_name = "ID=RAFT_ADDR[,...]",
        value_delimiter = ',',
        required = true
    )]
    pub members: Vec<String>,
}

/// `raftlite doctor`: prints the start-up classification, indexes, timeline history and the
/// recommended action. Never writes.
pub fn doctor(args: DoctorArgs) -> anyhow::Result<()> {
    let report = diagnose(&args.data_dir);
    let text = if args.json {
        format!("{}\n", serde_json::to_string_pretty(&report)?)
    } else {
        render_report(&report)
    };
    // A reader that stops early (`| head`) is not an error worth a panic or a message.
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn diagnose(data_dir: &Path) -> Value {
    let layout = DataDirLayout::new(data_dir);
    let state = classify(data_dir);
    let database = match raftlite_store::probe_checked(&layout.db) {
        Ok(None) => json!({"file": layout.db, "present": false}),
        Ok(Some(meta)) => json!({
            "file": layout.db,
            "present": true,
            "applied": meta.applied,
            "data_changed_index": meta.data_changed.map(|p| p.index),
            "timeline": meta.timeline(),
            "timeline_history": meta.timeline_history,
        }),
        Err(e) => json!({"file": layout.db, "present": true, "error": e.to_string()}),
    };
    let log = match log_store::probe(&layout.raft) {
        Ok(p) => json!({
            "file": layout.raft.join(log_store::LOG_FILE_NAME),
            "present": p.exists,
            "vote": p.vote.map(|v| v.to_string()),
            "last_purged_index": p.last_purged.map(|l| l.index),
            "last_index": p.last_log_id.map(|l| l.index),
            "committed_index": p.committed.map(|l| l.index),
        }),
        Err(e) => json!({"file": layout.raft.join(log_store::LOG_FILE_NAME), "error": e}),
    };
    let snapshot = match SnapshotDir::read_only(&layout.snapshots).newest() {
        Ok(Some(stored)) => json!({
            "file": stored.data,
            "id": stored.id,
            "index": stored.meta.last_log_id.as_ref().map(|l| log_id_to_position(l).index),
        }),
        Ok(None) => Value::Null,
        Err(e) => json!({"error": e.to_string()}),
    };
    json!({
        "data_dir": data_dir,
        "classification": state.name(),
        "detail": state.to_string(),
        "database": database,
        "log": log,
        "snapshot": snapshot,
        "recommended_action": recommended_action(&state),
    })
}

fn recommended_action(state: &DataDirState) -> String {
    match state {
        DataDirState::Empty => "nothing here yet: `raftlite serve` bootstraps a new cluster (or \
                                joins one with --join); --auto-restore-from DEST restores the \
                                newest backup first"
            .into(),
        DataDirState::Consistent { .. } => "healthy: start the node normally".into(),
        DataDirState::DbLost { .. } => "start the node normally: the database is rebuilt from \
                                        the snapshot and the log"
            .into(),
        DataDirState::LogLost { .. } => "the Raft log is gone: if other members still run, \
                                         move this data dir aside and start empty with --join; \
                                         otherwise start with --recovery-mode (a new single-node \
                                         cluster from this data on a new timeline) or restore \
                                         a backup"
            .into(),
        DataDirState::Corrupt { .. } => "a file is damaged: if other members still run, move \
                                         this data dir aside and start empty with --join; \
                                         otherwise start with --recovery-mode (it moves the \
                                         damaged part aside and keeps what can be kept) or \
                                         restore a backup"
            .into(),
    }
}

fn render_report(r: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    // Writing to a String cannot fail.
    macro_rules! println {
        ($($arg:tt)*) => {{
            let _ = writeln!(out, $($arg)*);
        }};
    }
    let s = |v: &Value| match v {
        Value::Null => "none".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    println!("data dir:        {}", s(&r["data_dir"]));
    println!("classification:  {}", s(&r["classification"]));
    println!("                 {}", s(&r["detail"]));
    let db = &r["database"];
    if let Some(e) = db["error"].as_str() {
        println!("database:        {} DAMAGED: {e}", s(&db["file"]));
    } else if db["present"] == false {
        println!("database:        {} (absent)", s(&db["file"]));
    } else {
        println!(
            "database:        {} at index {} (term {}), data last changed at {}",
            s(&db["file"]),
            s(&db["applied"]["index"]),
            s(&db["applied"]["term"]),
            s(&db["data_changed_index"])
        );
    }
    let log = &r["log"];
    if let Some(e) = log["error"].as_str() {
        println!("raft log:        DAMAGED: {e}");
    } else if log["present"] == false {
        println!("raft log:        {} (absent)", s(&log["file"]));
    } else {
        println!(
            "raft log:        {}: vote {}, purged up to {}, last index {}, committed {}",
            s(&log["file"]),
            s(&log["vote"]),
            s(&log["last_purged_index"]),
            s(&log["last_index"]),
            s(&log["committed_index"])
        );
    }
    match &r["snapshot"] {
        Value::Null => println!("snapshot:        none"),
        snap if snap["error"].is_string() => {
            println!("snapshot:        DAMAGED: {}", s(&snap["error"]))
        }
        snap => println!(
            "snapshot:        {} at index {}",
            s(&snap["id"]),
            s(&snap["index"])
        ),
    }
    println!("timelines:");
    match db["timeline_history"].as_array() {
        Some(history) if !history.is_empty() => {
            for t in history {
                let parent = match (&t["parent"], &t["parent_index"]) {
                    (Value::String(p), idx) => format!(" from {p} at index {}", s(idx)),
                    _ => String::new(),
                };
                println!(
                    "  #{} {}{parent}: {} ({} ms)",
                    s(&t["counter"]),
                    s(&t["id"]),
                    s(&t["reason"]),
                    s(&t["at_unix_ms"])
                );
            }
        }
        _ => println!("  none"),
    }
    println!("recommended:     {}", s(&r["recommended_action"]));
    out
}

/// `raftlite recover`: lost-quorum recovery of a stopped node (see
/// `raftlite_consensus::recovery::rewrite_membership`).
pub async fn recover(args: RecoverArgs) -> anyhow::Result<()> {
    let members: Vec<Member> = args
        .members
        .iter()
        .map(|m| m.parse::<Member>())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("invalid --members: {e}"))?;
    validate_members(&members).map_err(|e| anyhow::anyhow!("invalid --members: {e}"))?;
    let lock_hint = DataDirLayout::new(&args.data_dir).raft;
    eprintln!(
        "raftlite recover: rewriting the membership of {} OFFLINE (the node must be stopped); \
         every entry in its log is treated as committed",
        args.data_dir.display()
    );
    let outcome = rewrite_membership(&args.data_dir, &members)
        .await
        .with_context(|| {
            format!(
                "recover refused for {} (is the node stopped? its log is {})",
                args.data_dir.display(),
                lock_hint.display()
            )
        })?;
    tracing::warn!(data_dir = %args.data_dir.display(), "{}", outcome.summary);
    println!("RECOVERED: {}", outcome.summary);
    if let Some(t) = &outcome.timeline {
        println!("new timeline: #{} {} ({})", t.counter, t.id, t.reason);
    }
    Ok(())
}
