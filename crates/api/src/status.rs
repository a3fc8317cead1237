//! What a node tells about itself and the cluster, in rqlite's shapes: `/status`, `/nodes`,
//! `GET /leader`, `/readyz` and `/metrics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use raftlite_consensus::node::RaftNode;
use raftlite_consensus::{NodeAddr, NodeId};
use serde_json::{json, Value as Json};

use crate::error::ApiError;
use crate::forward::api_base;
use crate::params::{flag, timeout_of, Params};
use crate::respond::{json_response, struct_response};
use crate::state::ApiState;

/// Raft states by the names rqlite shows (hashicorp/raft's `RaftState.String`). A learner
/// (openraft's name for a non-voter) follows the leader: hashicorp/raft calls it a Follower.
fn state_name(state: openraft::ServerState) -> &'static str {
    match state {
        openraft::ServerState::Leader => "Leader",
        openraft::ServerState::Follower | openraft::ServerState::Learner => "Follower",
        openraft::ServerState::Candidate => "Candidate",
        openraft::ServerState::Shutdown => "Shutdown",
    }
}

/// rqlite's `Store.Ready` (store/store.go): open, and a leader is known. `/readyz` answers 200
/// exactly when this holds; `/status` shows it as `store.ready`.
fn is_ready(node: &RaftNode) -> bool {
    node.leader().is_some()
}

/// Go's `runtime.GOOS` for the platform this binary was built for.
fn go_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    }
}

/// Go's `runtime.GOARCH` for the architecture this binary was built for.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// rqlite's `os` section of `/status` (`http/service.go`, `handleStatus`).
fn os_status() -> Json {
    let mut os = serde_json::Map::new();
    os.insert("pid".into(), json!(std::process::id()));
    os.insert("ppid".into(), json!(std::os::unix::process::parent_id()));
    // SAFETY: sysconf only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    os.insert("page_size".into(), json!(page_size.max(0)));
    // Like rqlite, left out when it cannot be found.
    if let Ok(exe) = std::env::current_exe() {
        os.insert("executable".into(), json!(exe.display().to_string()));
    }
    if let Some(host) = hostname() {
        os.insert("hostname".into(), json!(host));
    }
    Json::Object(os)
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    std::str::from_utf8(&buf[..len]).ok().map(str::to_owned)
}

/// rqlite's `runtime` section, with Go's keys and the Rust equivalents as values: the target's
/// OS and architecture under Go's names, the CPUs this process may use, the Tokio tasks alive
/// (rqlite: goroutines) and the compiler that built this binary.
fn runtime_status() -> Json {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let tasks = tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_alive_tasks())
        .unwrap_or(0);
    json!({
        "GOARCH": go_arch(),
        "GOOS": go_os(),
        "GOMAXPROCS": cpus,
        "num_cpu": cpus,
        "num_goroutine": tasks,
        "version": env!("RAFTLITE_RUSTC_VERSION"),
        "kubernetes_hint": std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
    })
}

/// RFC 3339 with nanoseconds, as Go marshals a `time.Time`.
fn rfc3339(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// `GET /status`. The sections and the fields clients read have rqlite's names and JSON types
/// (`http/service.go` `handleStatus`, `store/store.go` `Stats`): node ids are strings,
/// `store.leader` is `{"node_id": "", "addr": ""}` without a leader, `store.ready` is
/// rqlite's `Store.Ready`. raftlite's own fields (timeline, restore, backup, ...) sit beside them.
pub(crate) async fn status(State(state): State<Arc<ApiState>>, Query(params): Params) -> Response {
    let node = &state.node;
    let m = node.metrics();
    let store = node.store();
    // The committed state, read without the writer's lock: /status answers while an entry
    // (a long write, say) is being applied.
    let meta = tokio::task::spawn_blocking(move || {
        (store.committed_meta(), store.committed_pending_restore())
    })
    .await;
    let (timeline, history, chunks_held) = match meta {
        Ok((Ok(meta), pending)) => (
            meta.timeline().map(|t| json!(t)).unwrap_or(Json::Null),
            json!(meta.timeline_history),
            match pending {
                Ok(Some((restore_id, chunks, bytes))) => {
                    json!({ "restore_id": restore_id, "chunks": chunks, "bytes": bytes })
                }
                _ => Json::Null,
            },
        ),
        _ => (Json::Null, Json::Null, Json::Null),
    };
    let leader = node.leader();
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let members: Vec<Json> = membership
        .nodes()
        .map(|(id, addr)| {
            json!({
                "id": id.to_string(),
                "addr": addr.raft_addr,
                "suffrage": if voters.contains(id) { "Voter" } else { "Nonvoter" },
            })
        })
        .collect();
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let db_size = node.store().file_size();
    // hashicorp/raft's `last_contact`: "0" on the leader, "never" before any contact.
    let last_contact = match node.since_leader_contact() {
        Some(d) if d.is_zero() => "0".to_owned(),
        Some(d) => raftlite_store::go_duration::format_go_duration(d),
        None => "never".to_owned(),
    };
    let now = std::time::SystemTime::now();
    let uptime = state.started.elapsed();
    let body = json!({
        "os": os_status(),
        "runtime": runtime_status(),
        "http": {
            "bind_addr": state.http.bind_addr,
            "auth": if state.auth.is_some() { "enabled" } else { "disabled" },
            // rqlite writes this flag as a string.
            "tls": { "enabled": state.http.tls.to_string() },
        },
        "node": {
            "start_time": rfc3339(now.checked_sub(uptime).unwrap_or(now)),
            "current_time": rfc3339(now),
            "uptime": raftlite_store::go_duration::format_go_duration(uptime),
            "id": node.id().to_string(),
            "uptime_secs": uptime.as_secs(),
            "api_addr": node.addr().api_addr,
        },
        "build": {
            "version": env!("CARGO_PKG_VERSION"),
            "compiler_toolchain": "rustc",
            "compiler_command": env!("RAFTLITE_RUSTC_VERSION"),
        },
        "store": {
            "open": true,
            "node_id": node.id().to_string(),
            "addr": node.addr().raft_addr,
            "leader": {
                "node_id": leader.as_ref().map(|(id, _)| id.to_string()).unwrap_or_default(),
                "addr": leader.as_ref().map(|(_, a)| a.raft_addr.clone()).unwrap_or_default(),
                "api_addr": leader.as_ref().map(|(_, a)| a.api_addr.clone()).unwrap_or_default(),
            },
            "ready": is_ready(node),
            "nodes": members,
            "fsm_index": applied,
            "db_applied_index": applied,
            "dir": state.data_dir.display().to_string(),
            "db_size": db_size,
            "sqlite3": {
                "path": node.store().path().display().to_string(),
                "db_size": db_size,
                "version": raftlite_store::sqlite_version(),
            },
            "timeline": timeline,
            "timeline_history": history,
            // The restore this node runs as leader, and the chunks of an unfinished restore it
            // holds: a client whose answer was lost waits while either moves.
            "restore": {
                "in_progress": node.restore_progress(),
                "chunks_held": chunks_held,
            },
            "raft": {
                "state": state_name(m.state),
                "term": m.current_term,
                "applied_index": applied,
                "commit_index": m.cluster_committed.map(|l| l.index).unwrap_or(applied),
                "last_log_index": m.last_log_index.unwrap_or(0),
                "snapshot_index": m.snapshot.map(|l| l.index).unwrap_or(0),
                "last_snapshot_index": m.snapshot.map(|l| l.index).unwrap_or(0),
                "purged_index": m.purged.map(|l| l.index).unwrap_or(0),
                "num_peers": voters.iter().filter(|v| **v != node.id()).count(),
                "last_contact": last_contact,
                "voter": voters.contains(&node.id()),
                // Node ids are strings everywhere in /status, as in rqlite.
                "voters": voters.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
            },
        },
        "backup": backup_status(state.backups.as_deref()),
        "archive": match &state.archiver {
            Some(a) => a.status(state.node.archive_hold()),
            None => json!({ "destination": null }),
        },
    });
    let body = match params.get("key") {
        Some(path) => sub_json(&body, path),
        None => body,
    };
    json_response(StatusCode::OK, &body, flag(&params, "pretty"))
}

/// rqlite's `getSubJSON` (`http/service.go`): follows the dotted `key`; a missing key gives
/// `{}`, and a value that is not an object ends the walk there.
fn sub_json(body: &Json, key: &str) -> Json {
    if key.is_empty() {
        return body.clone();
    }
    let mut at = body;
    for k in key.split('.') {
        match at {
            Json::Object(map) => match map.get(k) {
                Some(v) => at = v,
                None => return json!({}),
            },
            other => return other.clone(),
        }
    }
    at.clone()
}

/// What a node looks like from here: rqlite's `Node` (`http/nodes.go`), with its JSON field
/// order and `omitempty` rules (but `time`, see there). rqlite asks each node for its metadata; this node opens a TCP
/// connection to its Raft address, so a peer's `version` is `"unknown"` when it answers
/// (rqlite's word for a node that gives none) and `""` when it does not, as in rqlite.
#[derive(serde::Serialize, Clone, Debug)]
struct NodeJson {
    id: String,
    api_addr: String,
    addr: String,
    version: String,
    voter: bool,
    reachable: bool,
    leader: bool,
    /// Always present (rqlite omits a zero): rqlite-rs 0.6 requires it in every entry.
    time: f64,
    #[serde(skip_serializing_if = "String::is_empty")]
    time_s: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

/// Contacts `addr` now (itself needs no contact) and describes it as a [`NodeJson`].
async fn node_entry(
    state: &ApiState,
    id: NodeId,
    addr: &NodeAddr,
    voter: bool,
    leader: Option<NodeId>,
    probe_timeout: Duration,
) -> NodeJson {
    let started = Instant::now();
    let (reachable, error, version) = if id == state.node.id() {
        (true, String::new(), env!("CARGO_PKG_VERSION"))
    } else {
        match tokio::time::timeout(
            probe_timeout,
            tokio::net::TcpStream::connect(&addr.raft_addr),
        )
        .await
        {
            Ok(Ok(_)) => (true, String::new(), "unknown"),
            Ok(Err(e)) => (false, e.to_string(), ""),
            Err(_) => (false, format!("no answer within {probe_timeout:?}"), ""),
        }
    };
    let elapsed = started.elapsed();
    NodeJson {
        id: id.to_string(),
        api_addr: api_base(addr),
        addr: addr.raft_addr.clone(),
        version: version.to_owned(),
        voter,
        reachable,
        // rqlite sets these only for a node that answered.
        leader: reachable && Some(id) == leader,
        time: if reachable {
            elapsed.as_secs_f64()
        } else {
            0.0
        },
        time_s: if reachable {
            raftlite_store::go_duration::format_go_duration(elapsed)
        } else {
            String::new()
        },
        error,
    }
}

/// `GET /nodes` (rqlite's `handleNodes`): the voters, or every member with `?nonvoters`, each
/// contacted now (concurrently), sorted by id as strings; `?ver=2` gives `{"nodes": [...]}`,
/// otherwise an object keyed by node id.
pub(crate) async fn nodes(State(state): State<Arc<ApiState>>, Query(params): Params) -> Response {
    let m = state.node.metrics();
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let leader = m.current_leader;
    let probe_timeout = match timeout_of(&params) {
        Ok(t) => t.min(Duration::from_secs(5)),
        Err(e) => return e.into_response(),
    };
    let with_nonvoters = flag(&params, "nonvoters");
    let mut members: Vec<(NodeId, NodeAddr)> = membership
        .nodes()
        .filter(|(id, _)| with_nonvoters || voters.contains(id))
        .map(|(id, addr)| (*id, addr.clone()))
        .collect();
    members.sort_by_key(|(id, _)| id.to_string());
    let entries: Vec<NodeJson> = futures::future::join_all(members.iter().map(|(id, addr)| {
        node_entry(
            &state,
            *id,
            addr,
            voters.contains(id),
            leader,
            probe_timeout,
        )
    }))
    .await;
    let pretty = flag(&params, "pretty");
    if params.get("ver").map(String::as_str) == Some("2") {
        #[derive(serde::Serialize)]
        struct Nodes {
            nodes: Vec<NodeJson>,
        }
        return struct_response(&Nodes { nodes: entries }, pretty);
    }
    let legacy: std::collections::BTreeMap<String, NodeJson> =
        entries.into_iter().map(|e| (e.id.clone(), e)).collect();
    struct_response(&legacy, pretty)
}

pub(crate) async fn readyz(State(state): State<Arc<ApiState>>, Query(params): Params) -> Response {
    if flag(&params, "sync") && !flag(&params, "noleader") {
        let timeout = match timeout_of(&params) {
            Ok(t) => t,
            Err(e) => return e.into_response(),
        };
        if !caught_up(&state.node, timeout).await {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "[+]node ok\n[-]sync not ok: the node has not applied its log within the timeout\n",
            )
                .into_response();
        }
    }
    let has_leader = is_ready(&state.node);
    let (status, body) = if flag(&params, "noleader") || has_leader {
        (
            StatusCode::OK,
            if has_leader {
                "[+]node ok\n[+]leader ok\n[+]store ok\n"
            } else {
                "[+]node ok\n"
            },
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "[+]node ok\n[-]leader not ok: no leader is known yet\n",
        )
    };
    (status, body).into_response()
}

/// `GET /leader` (rqlite's `handleLeader`): the leader as one `/nodes` entry (see
/// [`node_entry`]), or 503 when none is known.
pub(crate) async fn leader(State(state): State<Arc<ApiState>>, Query(params): Params) -> Response {
    let probe_timeout = match timeout_of(&params) {
        Ok(t) => t.min(Duration::from_secs(5)),
        Err(e) => return e.into_response(),
    };
    match state.node.leader() {
        Some((id, addr)) => {
            let voter = state
                .node
                .metrics()
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == id);
            let entry = node_entry(&state, id, &addr, voter, Some(id), probe_timeout).await;
            struct_response(&entry, flag(&params, "pretty"))
        }
        None => ApiError::NoLeader.into_response(),
    }
}

/// Whether this node applies everything in its log within `timeout` (`/readyz?sync`).
async fn caught_up(node: &RaftNode, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let target = node.metrics().last_log_index.unwrap_or(0);
    loop {
        let applied = node.metrics().last_applied.map(|l| l.index).unwrap_or(0);
        if applied >= target {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let m = state.node.metrics();
    metrics::gauge!("raftlite_raft_term").set(m.current_term as f64);
    metrics::gauge!("raftlite_raft_applied_index")
        .set(m.last_applied.map(|l| l.index).unwrap_or(0) as f64);
    metrics::gauge!("raftlite_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
    metrics::gauge!("raftlite_raft_is_leader").set(if state.node.is_leader() { 1.0 } else { 0.0 });
    metrics::gauge!("raftlite_raft_leader_id").set(m.current_leader.unwrap_or(0) as f64);
    metrics::gauge!("raftlite_db_size_bytes").set(state.node.store().file_size() as f64);
    match &state.metrics {
        Some(handle) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => ApiError::NotFound("metrics are not enabled".into()).into_response(),
    }
}

/// `backup` in `/status`: the service's state, or nulls when backups are off.
fn backup_status(service: Option<&raftlite_backup::service::BackupService>) -> Json {
    match service {
        Some(s) => s.status(),
        None => json!({ "destination": null, "schedule": "off", "last": null }),
    }
}

/// `GET /debug/raft-stats`: openraft's runtime statistics of this node as a text table (batch
/// sizes, and latency percentiles per log stage: proposed, received, submitted, persisted,
/// committed, applied). Only in a build with `--features raft-stats`.
#[cfg(feature = "runtime-stats")]
pub(crate) async fn raft_stats(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<crate::state::ApiState>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.node.raft_stats_text().await {
        Ok(text) => text.into_response(),
        Err(e) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("raft is not running: {e}"),
        )
            .into_response(),
    }
}
