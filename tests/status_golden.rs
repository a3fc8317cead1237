//! The monitoring endpoints as rqlite clients read them: `/status`, `/nodes` (both formats),
//! `/leader` and `/readyz`, field by field with the JSON types rqlite gives, on every member
//! of a 3-node cluster (leader and followers) and on a node with no leader. Also the Go
//! duration syntax of every duration query parameter.
//!
//! Where the shapes come from (rqlite source, `http/` and `store/`):
//! - `/status`: `http/service.go` `handleStatus` builds the top-level `os`, `runtime`, `store`,
//!   `http`, `node` and `build` sections; `store` is `store/store.go` `Stats`, whose `node_id` is
//!   the Raft id (a string), `leader` is `map[string]string{"node_id", "addr"}` from
//!   `LeaderWithID` (both `""` without a leader) and `ready` is `Store.Ready()`.
//! - `/nodes`, `/leader`: `http/nodes.go` `Node` (`id`, `api_addr`, `addr`, `version`, `voter`,
//!   `reachable`, `leader`, `time`, `time_s`, `error`), the legacy format being a map keyed by
//!   id (`encodeLegacy`), `?ver=2` `{"nodes": [...]}` (`encode`), voters only unless
//!   `?nonvoters` (`handleNodes`).
//! - what clients read: gorqlite `cluster.go` `updateClusterInfo` asserts
//!   `status["store"]["leader"]["node_id"].(string)` (a number panics with "interface {} is
//!   float64, not string"), then reads the legacy `/nodes` map's `api_addr` (parsed as a URL),
//!   `reachable` and `leader`; rqlite-js `StatusApiClient.status` returns the parsed `/status`.
//! - durations: `http/query_params.go` `NewQueryParams` checks `timeout`, `freshness`,
//!   `db_timeout` and `linearizable_timeout` with Go's `time.ParseDuration`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn get_json(url: &str) -> (u16, Value) {
    let (status, body) = http_get(url).unwrap_or_else(|e| panic!("{e}"));
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, v)
}

fn string_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} is not a string in {v}"))
}

fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} is not a non-negative integer in {v}"))
}

fn bool_at(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or_else(|| panic!("{pointer} is not a bool in {v}"))
}

/// The `/status` fields rqlite has, with rqlite's JSON types, on a node whose leader is
/// `leader`.
fn check_status(node: &Node, leader: &Node) {
    let (code, s) = get_json(&node.url("/status"));
    assert_eq!(code, 200, "{s}");

    // store (store/store.go, Stats)
    assert!(bool_at(&s, "/store/open"));
    assert_eq!(string_at(&s, "/store/node_id"), node.id.to_string());
    assert_eq!(string_at(&s, "/store/addr"), node.raft_addr);
    assert_eq!(
        string_at(&s, "/store/leader/node_id"),
        leader.id.to_string()
    );
    assert_eq!(string_at(&s, "/store/leader/addr"), leader.raft_addr);
    assert!(bool_at(&s, "/store/ready"), "{s}");
    let state = string_at(&s, "/store/raft/state");
    let want_state = if node.id == leader.id {
        "Leader"
    } else {
        "Follower"
    };
    assert_eq!(state, want_state);
    u64_at(&s, "/store/raft/term");
    u64_at(&s, "/store/raft/applied_index");
    u64_at(&s, "/store/raft/commit_index");
    u64_at(&s, "/store/raft/last_log_index");
    u64_at(&s, "/store/raft/last_snapshot_index");
    assert_eq!(u64_at(&s, "/store/raft/num_peers"), 2);
    string_at(&s, "/store/raft/last_contact");
    assert!(bool_at(&s, "/store/raft/voter"));
    let voters = s.pointer("/store/raft/voters").and_then(Value::as_array);
    assert_eq!(
        voters.map(|v| v.iter().filter_map(Value::as_str).count()),
        Some(3),
        "raftlite's store.raft.voters: three ids, as strings"
    );
    u64_at(&s, "/store/fsm_index");
    u64_at(&s, "/store/db_applied_index");
    string_at(&s, "/store/dir");
    let nodes = s
        .pointer("/store/nodes")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("store.nodes is not an array: {s}"));
    assert_eq!(nodes.len(), 3, "{s}");
    for n in nodes {
        string_at(n, "/id");
        string_at(n, "/addr");
        assert_eq!(string_at(n, "/suffrage"), "Voter");
    }

    // os (handleStatus: os.Getpid, os.Getppid, os.Getpagesize, os.Executable, os.Hostname)
    assert_eq!(
        u64_at(&s, "/os/pid"),
        u64::from(node.pid().expect("running"))
    );
    u64_at(&s, "/os/ppid");
    assert!(u64_at(&s, "/os/page_size") >= 4096);
    assert!(string_at(&s, "/os/executable").contains("raftlite"));
    string_at(&s, "/os/hostname");

    // runtime (handleStatus: runtime.GOARCH, GOOS, GOMAXPROCS, NumCPU, NumGoroutine, Version)
    let goos = string_at(&s, "/runtime/GOOS");
    if cfg!(target_os = "linux") {
        assert_eq!(goos, "linux");
    }
    if cfg!(target_arch = "x86_64") {
        assert_eq!(string_at(&s, "/runtime/GOARCH"), "amd64");
    }
    if cfg!(target_arch = "aarch64") {
        assert_eq!(string_at(&s, "/runtime/GOARCH"), "arm64");
    }
    assert!(u64_at(&s, "/runtime/GOMAXPROCS") >= 1);
    assert!(u64_at(&s, "/runtime/num_cpu") >= 1);
    u64_at(&s, "/runtime/num_goroutine");
    assert!(string_at(&s, "/runtime/version").starts_with("rustc"));
    bool_at(&s, "/runtime/kubernetes_hint");

    // http (handleStatus: bind_addr, auth via prettyEnabled, tls via tlsStats: "enabled" is
    // a string there)
    assert_eq!(string_at(&s, "/http/bind_addr"), node.http_addr);
    assert_eq!(string_at(&s, "/http/auth"), "disabled");
    assert_eq!(string_at(&s, "/http/tls/enabled"), "false");

    // node (handleStatus: start_time and current_time are time.Time, uptime Duration.String)
    for key in ["/node/start_time", "/node/current_time"] {
        let t = string_at(&s, key);
        assert!(
            t.len() >= 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
    }
    raftlite_store::go_duration::parse_go_duration(string_at(&s, "/node/uptime"))
        .unwrap_or_else(|e| panic!("node.uptime: {e}"));
    assert_eq!(string_at(&s, "/node/id"), node.id.to_string());

    // build (cmd/rqlited/main.go sets BuildInfo: version and compiler among them)
    assert_eq!(string_at(&s, "/build/version"), env!("CARGO_PKG_VERSION"));
    string_at(&s, "/build/compiler_toolchain");

    // raftlite's own sections are still there.
    assert!(s.pointer("/store/timeline").is_some(), "{s}");
    assert!(s.pointer("/store/restore/in_progress").is_some(), "{s}");
    assert!(s.pointer("/backup").is_some(), "{s}");

    // ?key walks the document as rqlite's getSubJSON: a missing key is `{}`.
    let (_, v) = get_json(&node.url("/status?key=store.leader.node_id"));
    assert_eq!(v, Value::String(leader.id.to_string()));
    let (_, v) = get_json(&node.url("/status?key=store.no_such_key"));
    assert_eq!(v, serde_json::json!({}));
}

/// One entry of `/nodes` or `/leader`: http/nodes.go `Node`.
fn check_node_entry(entry: &Value, node: &Node, leader: &Node) {
    assert_eq!(string_at(entry, "/id"), node.id.to_string());
    assert_eq!(string_at(entry, "/addr"), node.raft_addr);
    assert_eq!(
        string_at(entry, "/api_addr"),
        format!("http://{}", node.http_addr)
    );
    string_at(entry, "/version");
    assert!(bool_at(entry, "/voter"));
    assert!(bool_at(entry, "/reachable"), "{entry}");
    assert_eq!(bool_at(entry, "/leader"), node.id == leader.id, "{entry}");
    assert!(entry.pointer("/time").is_some_and(Value::is_f64), "{entry}");
    string_at(entry, "/time_s");
    assert!(entry.get("error").is_none(), "{entry}");
}

/// What gorqlite's `updateClusterInfo` (cluster.go) does with `/status` and `/nodes`: the
/// leader's node id must be a string, and the legacy `/nodes` must name the leader's API host.
fn gorqlite_discovery(node: &Node) -> (String, Vec<String>) {
    let (_, s) = get_json(&node.url("/status"));
    let leader_id = s["store"]["leader"]["node_id"]
        .as_str()
        .unwrap_or_else(|| panic!("gorqlite would panic: store.leader.node_id is not a string"))
        .to_owned();
    assert!(!leader_id.is_empty());
    assert!(
        s["store"].get("metadata").is_none(),
        "rqlite 6+ has no metadata"
    );
    let (_, nodes) = get_json(&node.url("/nodes"));
    let nodes = nodes.as_object().expect("legacy /nodes is an object");
    let mut leader = Vec::new();
    let mut others = Vec::new();
    for v in nodes.values() {
        if !v["reachable"].as_bool().unwrap_or(false) {
            continue;
        }
        let api = v["api_addr"].as_str().expect("api_addr string");
        let host = api
            .strip_prefix("http://")
            .expect("api_addr is a URL")
            .trim_end_matches('/')
            .to_owned();
        if v["leader"].as_bool() == Some(true) {
            leader.push(host);
        } else {
            others.push(host);
        }
    }
    assert_eq!(leader.len(), 1, "one leader in {nodes:?}");
    (leader.remove(0), others)
}

#[test]
fn status_nodes_leader_as_rqlite_clients_read_them() {
    let c = Cluster::start(3, &[]);
    let li = c.wait_leader(Duration::from_secs(10));
    let leader = &c.nodes[li];
    // Every member knows the leader (a follower learns it from the first heartbeat).
    for node in &c.nodes {
        wait_for(
            || {
                let (_, v) = get_json(&node.url("/status?key=store.leader.node_id"));
                (v == Value::String(leader.id.to_string())).then_some(())
            },
            Duration::from_secs(10),
            "every node to know the leader",
        );
    }
    for node in &c.nodes {
        check_status(node, leader);

        let (code, v2) = get_json(&node.url("/nodes?ver=2"));
        assert_eq!(code, 200, "{v2}");
        let list = v2["nodes"].as_array().expect("nodes array");
        let ids: Vec<&str> = list.iter().map(|n| string_at(n, "/id")).collect();
        assert_eq!(ids, ["1", "2", "3"], "sorted by id");
        for (entry, member) in list.iter().zip(&c.nodes) {
            check_node_entry(entry, member, leader);
        }
        let (code, legacy) = get_json(&node.url("/nodes"));
        assert_eq!(code, 200, "{legacy}");
        for member in &c.nodes {
            check_node_entry(&legacy[member.id.to_string()], member, leader);
        }

        let (code, l) = get_json(&node.url("/leader"));
        assert_eq!(code, 200, "{l}");
        check_node_entry(&l, leader, leader);

        let (leader_host, others) = gorqlite_discovery(node);
        assert_eq!(leader_host, leader.http_addr);
        assert_eq!(others.len(), 2);

        let (code, body) = http_get(&node.url("/readyz")).expect("readyz");
        assert_eq!(code, 200, "{body}");
        assert!(body.starts_with("[+]node ok\n[+]leader ok"), "{body}");
    }
}

/// Without a leader rqlite's `store.leader` is `{"node_id": "", "addr": ""}`, `store.ready`
/// false, `/readyz` 503 (handleReadyz: "leader does not exist") and `/leader` 503.
#[test]
fn status_without_a_leader() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = Node::new(7, dir.path(), &[]);
    // Joins a cluster that does not exist: it serves, but never learns of a leader.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    node.start(Some(&nowhere));
    let s: Value = wait_for(
        || {
            let (code, body) = http_get(&node.url("/status")).ok()?;
            (code == 200).then(|| serde_json::from_str(&body).ok())?
        },
        Duration::from_secs(30),
        "/status to answer",
    );
    assert_eq!(string_at(&s, "/store/node_id"), "7");
    assert_eq!(string_at(&s, "/store/leader/node_id"), "");
    assert_eq!(string_at(&s, "/store/leader/addr"), "");
    assert!(!bool_at(&s, "/store/ready"));
    let (code, body) = http_get(&node.url("/readyz")).expect("readyz");
    assert_eq!(code, 503, "{body}");
    let (code, body) = http_get(&node.url("/leader")).expect("leader");
    assert_eq!(code, 503, "{body}");
    let (code, body) = http_get(&node.url("/readyz?noleader")).expect("readyz");
    assert_eq!(code, 200, "{body}");
}

/// Every duration parameter takes Go's `time.ParseDuration` syntax; what Go refuses is a 400
/// naming the parameter.
#[test]
fn duration_parameters_use_go_syntax() {
    let c = Cluster::start(1, &[]);
    let node = &c.nodes[0];
    let (code, body) = http_post(
        &node.url("/db/execute"),
        r#"["CREATE TABLE t (id INTEGER PRIMARY KEY)"]"#,
    )
    .expect("create");
    assert_eq!(code, 200, "{body}");
    for good in ["1m30s", "1h2m3.5s", "2.5s", "1500ms", "%2B10s", "10s500ms"] {
        for path in [
            format!("/db/query?q=SELECT%201&timeout={good}"),
            format!("/db/query?q=SELECT%201&level=none&freshness={good}"),
            format!("/db/query?q=SELECT%201&db_timeout={good}"),
            format!("/db/query?q=SELECT%201&level=strong&linearizable_timeout={good}"),
            format!("/nodes?timeout={good}"),
            format!("/readyz?sync&timeout={good}"),
        ] {
            let (code, body) = http_get(&node.url(&path)).expect("GET");
            assert_eq!(code, 200, "{path}: {body}");
        }
        let (code, body) = http_post(
            &node.url(&format!("/db/execute?timeout={good}")),
            r#"["INSERT INTO t DEFAULT VALUES"]"#,
        )
        .expect("POST");
        assert_eq!(code, 200, "{good}: {body}");
    }
    for (bad, why) in [
        ("10", "missing unit"),
        ("1d", "unknown unit"),
        ("soon", "invalid duration"),
        ("-1s", "negative"),
        ("3000000h", "too long"),
        ("1%20s", "unknown unit"),
    ] {
        for key in ["timeout", "freshness", "db_timeout", "linearizable_timeout"] {
            // rqlite checks them on every endpoint, whether it uses them or not.
            for path in [
                format!("/db/query?q=SELECT%201&level=none&{key}={bad}"),
                format!("/status?{key}={bad}"),
                format!("/readyz?{key}={bad}"),
                format!("/nodes?{key}={bad}"),
            ] {
                let (code, body) = http_get(&node.url(&path)).expect("GET");
                assert_eq!(code, 400, "{path}: {body}");
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let error = v["error"].as_str().unwrap_or_default();
                assert!(
                    error.starts_with(&format!("{key} is not a valid duration"))
                        && error.contains(why),
                    "{path}: {body}"
                );
            }
        }
    }
}

/// `/status` and `/metrics` answer while a long write is being applied: neither waits for the
/// writer connection (`/status` reads the committed meta on a read-only connection). The write
/// (millions of rows from a recursive CTE) is seen in flight by its pages reaching the WAL;
/// then `/status` and `/metrics` must answer well before the write does: sooner than the write
/// takes from their answer to its own. When `/status` read the meta on the writer, it answered
/// only once the apply committed, just before the write's response.
#[test]
fn status_and_metrics_answer_while_a_long_write_is_applied() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    let c = Cluster::start(1, &[]);
    let node = &c.nodes[c.wait_leader(Duration::from_secs(10))];
    check_results(
        &node
            .execute(serde_json::json!([
                "CREATE TABLE big(a INTEGER, b INTEGER)"
            ]))
            .expect("create"),
    )
    .expect("create");
    let wal = node.data_dir.join("db.sqlite-wal");
    let wal_len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    let baseline = wal_len();
    let body = serde_json::json!([
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 4000000) \
         INSERT INTO big SELECT x, x * 2 FROM c"
    ])
    .to_string();
    // The shared client's timeout is shorter than this write may take on a busy machine.
    let long_client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("client");
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let resp = long_client
                .post(node.url("/db/execute?timeout=5m"))
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
                .and_then(|r| r.text());
            done.store(true, Ordering::SeqCst);
            resp
        });
        wait_for(
            || (wal_len() > baseline + (8 << 20) || done.load(Ordering::SeqCst)).then_some(()),
            Duration::from_secs(120),
            "the long write's pages to reach the WAL",
        );
        assert!(
            !done.load(Ordering::SeqCst),
            "the write finished before it was seen in flight: make it larger"
        );
        let asked = Instant::now();
        let (code, status) = get_json(&node.url("/status"));
        assert_eq!(code, 200, "{status}");
        assert_eq!(string_at(&status, "/store/raft/state"), "Leader");
        assert!(status.pointer("/store/timeline/id").is_some(), "{status}");
        let (code, metrics) = http_get(&node.url("/metrics")).expect("metrics");
        assert_eq!(code, 200, "{metrics}");
        assert!(metrics.contains("raftlite_db_size_bytes"), "{metrics}");
        let answered = Instant::now();
        let resp = writer
            .join()
            .expect("writer thread")
            .expect("the long write");
        let written = Instant::now();
        let v: Value = serde_json::from_str(&resp).expect("JSON");
        check_results(&v).expect("the long write");
        let probes = answered - asked;
        let rest = written - answered;
        assert!(
            probes < rest,
            "/status and /metrics took {probes:?} during the write, which then took {rest:?} \
             more: they waited for the apply"
        );
    });
}
