//! HTTP Basic auth with rqlite's permissions file (`--auth FILE`, `--join-as USER`), against
//! real `raftlite` processes on 127.0.0.1.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    check_results, execute_as, http_request_as, tail, wait_for, Cluster, Creds, Node, Reply,
};
use serde_json::{json, Value};

const ADMIN: Creds<'static> = ("admin", "admin-pw");

/// One user per permission (user `u-<perm>`, password `pw-<perm>`), an `all` user and a `*`
/// entry granting only `ready`.
const PERMS: [&str; 11] = [
    "all",
    "execute",
    "query",
    "load",
    "backup",
    "status",
    "ready",
    "join",
    "join-read-only",
    "remove",
    "leader-ops",
];

/// A bcrypt hash (cost 4) of `hunter2`.
const HUNTER2_BCRYPT: &str = "$2b$04$IwipClhnPUpwV26ZmW4VTOWLxnwfn8hVrKVf6QMOZzi3JyxcJeLbO";

fn write_file(path: &Path, value: &Value) {
    std::fs::write(path, value.to_string())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn one_user_per_perm_file(dir: &Path) -> PathBuf {
    let mut users: Vec<Value> = PERMS
        .iter()
        .map(|p| json!({"username": format!("u-{p}"), "password": format!("pw-{p}"), "perms": [p]}))
        .collect();
    users.push(json!({"username": ADMIN.0, "password": ADMIN.1, "perms": ["all"]}));
    users.push(json!({"username": "hashed", "password": HUNTER2_BCRYPT, "perms": ["query"]}));
    users.push(json!({"username": "*", "perms": ["ready"]}));
    let path = dir.join("perms.json");
    write_file(&path, &Value::Array(users));
    path
}

fn request(method: &str, url: &str, creds: Option<Creds<'_>>, body: Option<&str>) -> Reply {
    http_request_as(method, url, creds, body).unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts the shape of every 401: the Basic challenge and a JSON `error`.
fn assert_challenge(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {reply:?}");
    assert_eq!(
        reply.www_authenticate.as_deref(),
        Some("Basic realm=\"raftlite\""),
        "{what}: {reply:?}"
    );
    let body: Value = serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("{what}: 401 body is not JSON ({e}): {}", reply.body));
    assert!(body["error"].is_string(), "{what}: {}", reply.body);
}

/// Starts one node with `--auth FILE` (plus `extra`) and waits until it is ready.
fn start_single(dir: &Path, file: &Path, extra: &[&str]) -> Node {
    let file = file.to_string_lossy().into_owned();
    let mut args = vec!["--auth", file.as_str()];
    args.extend_from_slice(extra);
    let mut node = Node::new(1, dir, &args);
    node.start(None);
    node.wait_ready(Duration::from_secs(30));
    node
}

fn count_rows(base: &str, creds: Creds<'_>, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    let v = common::query_i64s_as(base, creds, &sql, "none")
        .unwrap_or_else(|e| panic!("count {table}: {e}"));
    v.first().copied().unwrap_or(-1)
}

#[test]
fn every_endpoint_enforces_its_permission() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = one_user_per_perm_file(tmp.path());
    let node = start_single(tmp.path(), &file, &[]);
    let base = node.base_url();
    let created = execute_as(&base, ADMIN, &json!(["CREATE TABLE t (v INTEGER)"]))
        .unwrap_or_else(|e| panic!("create table: {e}"));
    check_results(&created).unwrap_or_else(|e| panic!("create table: {e}"));

    // (method, path, body, permissions needed). Bodies of /db/load, /join, /remove and
    // POST /leader are deliberately invalid so an authorized request is refused (400, or
    // 404/405 while an endpoint does not exist) and changes nothing.
    let rows: &[(&str, &str, Option<&str>, &[&str])] = &[
        (
            "POST",
            "/db/execute",
            Some(r#"["INSERT INTO t(v) VALUES(1)"]"#),
            &["execute"],
        ),
        ("GET", "/db/query?q=SELECT%201", None, &["query"]),
        ("POST", "/db/query", Some(r#"["SELECT 1"]"#), &["query"]),
        (
            "POST",
            "/db/request",
            Some(r#"["SELECT 1"]"#),
            &["execute", "query"],
        ),
        ("POST", "/db/load", Some(" "), &["load"]),
        ("GET", "/db/backup", None, &["backup"]),
        ("GET", "/backups", None, &["backup"]),
        ("GET", "/status", None, &["status"]),
        ("GET", "/nodes", None, &["status"]),
        ("GET", "/leader", None, &["status"]),
        ("GET", "/metrics", None, &["status"]),
        ("GET", "/readyz", None, &["ready"]),
        ("POST", "/join", Some("{}"), &["join"]),
        ("DELETE", "/remove", Some("{}"), &["remove"]),
        ("POST", "/leader", Some("not json"), &["leader-ops"]),
        ("GET", "/no-such-endpoint", None, &[]),
    ];
    let anyone: &[&str] = &["ready"];

    // (label, credentials, permissions the credentials carry).
    let user_names: Vec<(String, String, &str)> = PERMS
        .iter()
        .map(|p| (format!("u-{p}"), format!("pw-{p}"), *p))
        .collect();
    let mut users: Vec<(String, Option<Creds<'_>>, Vec<&str>)> = vec![
        ("anonymous".into(), None, vec![]),
        ("admin".into(), Some(ADMIN), vec!["all"]),
        (
            "admin with a wrong password".into(),
            Some((ADMIN.0, "nope")),
            vec![],
        ),
        ("unknown user".into(), Some(("mallory", "pw-all")), vec![]),
        (
            "bcrypt user".into(),
            Some(("hashed", "hunter2")),
            vec!["query"],
        ),
        (
            "bcrypt user, wrong password".into(),
            Some(("hashed", "hunter3")),
            vec![],
        ),
    ];
    for (user, password, perm) in &user_names {
        users.push((
            user.clone(),
            Some((user.as_str(), password.as_str())),
            vec![*perm],
        ));
    }

    let mut failures = Vec::new();
    let mut checked = 0;
    for (method, path, body, needed) in rows {
        for (label, creds, held) in &users {
            let granted = needed
                .iter()
                .all(|p| anyone.contains(p) || held.contains(p) || held.contains(&"all"));
            let reply = request(method, &format!("{base}{path}"), *creds, *body);
            checked += 1;
            let what = format!("{method} {path} as {label}");
            if granted {
                // Not 401; and not a server error either (501: not implemented yet).
                if reply.status == 401 || (reply.status >= 500 && reply.status != 501) {
                    failures.push(format!("{what}: expected not 401, got {reply:?}"));
                }
            } else if reply.status != 401 {
                failures.push(format!("{what}: expected 401, got {reply:?}"));
            } else {
                assert_challenge(&reply, &what);
                // An authenticated user lacking the permission is told which one.
                if creds.is_some() && !label.contains("wrong") && !label.contains("unknown") {
                    let missing = needed
                        .iter()
                        .find(|p| {
                            !anyone.contains(p) && !held.contains(p) && !held.contains(&"all")
                        })
                        .copied()
                        .unwrap_or("?");
                    if !reply.body.contains(missing) {
                        failures.push(format!(
                            "{what}: 401 does not name {missing}: {}",
                            reply.body
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The authorized inserts above were applied: u-all and admin each inserted one row.
    assert_eq!(
        count_rows(&base, ADMIN, "t"),
        3,
        "u-execute, u-all and admin inserted"
    );
}

const INSERT: &str = "INSERT INTO t(v) VALUES(2)";

#[test]
fn refused_writes_apply_nothing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = one_user_per_perm_file(tmp.path());
    let node = start_single(tmp.path(), &file, &[]);
    let base = node.base_url();
    let url = format!("{base}/db/execute");
    let resp = execute_as(
        &base,
        ADMIN,
        &json!(["CREATE TABLE t (v INTEGER)", "INSERT INTO t(v) VALUES(1)"]),
    )
    .unwrap_or_else(|e| panic!("setup: {e}"));
    check_results(&resp).unwrap_or_else(|e| panic!("setup: {e}"));
    let insert = &json!([INSERT]).to_string();

    for (label, creds) in [
        ("wrong password", Some((ADMIN.0, "admin-pw "))),
        ("empty password", Some((ADMIN.0, ""))),
        ("no credentials", None),
        ("query-only user", Some(("u-query", "pw-query"))),
    ] {
        let reply = request("POST", &url, creds, Some(insert));
        assert_challenge(&reply, label);
        let r = request("POST", &format!("{base}/db/request"), creds, Some(insert));
        assert_challenge(&r, &format!("{label} on /db/request"));
    }
    assert_eq!(
        count_rows(&base, ADMIN, "t"),
        1,
        "no refused write was applied"
    );

    // The same write with the right password is applied.
    let resp = execute_as(&base, ("u-execute", "pw-execute"), &json!([INSERT]))
        .unwrap_or_else(|e| panic!("authorized write: {e}"));
    check_results(&resp).unwrap_or_else(|e| panic!("authorized write: {e}"));
    assert_eq!(count_rows(&base, ADMIN, "t"), 2);
}

/// Starts a node expected to refuse to start; returns its log once the process has exited.
fn refused_start_log(dir: &Path, args: &[&str]) -> String {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let mut node = Node::new(1, dir, args);
    node.start(None);
    wait_for(
        || (!node.is_running()).then_some(()),
        Duration::from_secs(30),
        "the node to refuse to start and exit",
    );
    tail(&node.log_path(), 20)
}

#[test]
fn bad_auth_setup_refuses_to_start() {
    let tmp = tempfile::tempdir().expect("temp dir");

    let bad = tmp.path().join("bad-perms.json");
    write_file(
        &bad,
        &json!([{"username": "bob", "password": "x", "perms": ["query", "fly"]}]),
    );
    let bad_arg = bad.to_string_lossy().into_owned();
    let log = refused_start_log(&tmp.path().join("a"), &["--auth", &bad_arg]);
    assert!(
        log.contains("bad-perms.json") && log.contains("bob") && log.contains("fly"),
        "the message names the file, the user and the permission:\n{log}"
    );

    let missing = tmp.path().join("missing.json");
    let missing_arg = missing.to_string_lossy().into_owned();
    let log = refused_start_log(&tmp.path().join("b"), &["--auth", &missing_arg]);
    assert!(log.contains("missing.json"), "{log}");

    let file = one_user_per_perm_file(tmp.path());
    let file_arg = file.to_string_lossy().into_owned();
    let log = refused_start_log(
        &tmp.path().join("c"),
        &["--auth", &file_arg, "--join-as", "hashed"],
    );
    assert!(log.contains("hashed") && log.contains("bcrypt"), "{log}");

    let log = refused_start_log(&tmp.path().join("d"), &["--join-as", "admin"]);
    assert!(log.contains("--join-as") && log.contains("--auth"), "{log}");
}

#[test]
fn cluster_with_auth_joins_and_forwards() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("cluster-perms.json");
    write_file(
        &file,
        &json!([
            {"username": "admin", "password": "admin-pw", "perms": ["all"]},
            {"username": "joiner", "password": "join-pw", "perms": ["join"]},
            {"username": "writer", "password": "write-pw", "perms": ["execute"]},
            {"username": "reader", "password": "read-pw", "perms": ["query"]},
            {"username": "*", "perms": ["ready"]}
        ]),
    );
    let file_arg = file.to_string_lossy().into_owned();
    let c = Cluster::start_as(3, &["--auth", &file_arg, "--join-as", "joiner"], ADMIN);
    let leader = wait_for(
        || c.leader_index_as(ADMIN),
        Duration::from_secs(30),
        "a leader",
    );
    let follower = c.followers(leader)[0];
    let fbase = c.nodes[follower].base_url();

    let resp = execute_as(
        &c.nodes[leader].base_url(),
        ADMIN,
        &json!(["CREATE TABLE t (v INTEGER)"]),
    )
    .unwrap_or_else(|e| panic!("create table: {e}"));
    check_results(&resp).unwrap_or_else(|e| panic!("create table: {e}"));

    // A write with valid credentials sent to a follower is forwarded and applied everywhere.
    let resp = execute_as(
        &fbase,
        ("writer", "write-pw"),
        &json!(["INSERT INTO t(v) VALUES(7)"]),
    )
    .unwrap_or_else(|e| panic!("write via follower: {e}"));
    check_results(&resp).unwrap_or_else(|e| panic!("write via follower: {e}"));
    for i in 0..c.nodes.len() {
        wait_for(
            || (c.try_count_rows_as(i, ADMIN, "t").ok()? == 1).then_some(()),
            Duration::from_secs(20),
            &format!("node {} to have the forwarded row", c.nodes[i].id),
        );
    }

    // A query-only user, or no credentials, is refused by the follower with 401.
    let url = format!("{fbase}/db/execute");
    let body = r#"["INSERT INTO t(v) VALUES(8)"]"#;
    for (label, creds) in [("reader", Some(("reader", "read-pw"))), ("anonymous", None)] {
        let reply = request("POST", &url, creds, Some(body));
        assert_challenge(&reply, &format!("{label} writing via a follower"));
    }
    // The joiner may join but not write.
    let reply = request("POST", &url, Some(("joiner", "join-pw")), Some(body));
    assert_challenge(&reply, "joiner writing via a follower");
    // A forwarded request is checked by the leader with the client's own credentials: a
    // weak read (leader only) as reader through the follower works.
    let reply = request(
        "GET",
        &format!("{fbase}/db/query?q=SELECT%20COUNT(*)%20FROM%20t&level=weak"),
        Some(("reader", "read-pw")),
        None,
    );
    assert_eq!(
        reply.status, 200,
        "forwarded weak read as reader: {reply:?}"
    );
    assert!(reply.body.contains("[[1]]"), "{}", reply.body);

    for i in 0..c.nodes.len() {
        assert_eq!(
            c.try_count_rows_as(i, ADMIN, "t"),
            Ok(1),
            "node {}",
            c.nodes[i].id
        );
    }
}
