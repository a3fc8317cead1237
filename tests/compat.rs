//! rqlite query options against real nodes: queued writes, read levels, freshness, db_timeout,
//! `/readyz?sync` and leadership hand-over with `POST /leader`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let (status, text) = http_post(url, body.to_string()).expect("POST");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

fn get(url: &str) -> (u16, Value) {
    let (status, text) = http_get(url).expect("GET");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

fn setup(c: &Cluster) -> String {
    let leader = c.wait_leader(secs(10));
    let base = c.nodes[leader].base_url();
    let (status, v) = post(
        &format!("{base}/db/execute"),
        &json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]),
    );
    assert_eq!(status, 200, "{v}");
    base
}

#[test]
fn queued_writes_answer_with_a_sequence_number_and_wait_waits_until_applied() {
    let c = Cluster::start(1, &[]);
    let base = setup(&c);
    let (status, v) = post(
        &format!("{base}/db/execute?queue"),
        &json!([["INSERT INTO t(v) VALUES(?)", "queued"]]),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"], json!([]));
    let first = v["sequence_number"].as_u64().expect("sequence_number");
    let (status, v) = post(
        &format!("{base}/db/execute?queue&wait"),
        &json!([["INSERT INTO t(v) VALUES(?)", "waited"]]),
    );
    assert_eq!(status, 200, "{v}");
    let second = v["sequence_number"].as_u64().expect("sequence_number");
    assert!(
        second > first,
        "sequence numbers increase: {first} then {second}"
    );
    // With wait, the write is applied by the time the answer arrives.
    let rows = query_i64s(&base, "SELECT count(*) FROM t WHERE v = 'waited'", "none").unwrap();
    assert_eq!(rows, vec![1]);
    wait_for(
        || (c.count_rows(0, "t") == 2).then_some(()),
        secs(5),
        "the queued write to be applied",
    );
}

#[test]
fn read_levels_freshness_and_auto_on_a_follower() {
    let c = Cluster::start(3, &[]);
    let base = setup(&c);
    let leader = c.wait_leader(secs(10));
    let (_, _) = post(
        &format!("{base}/db/execute"),
        &json!([["INSERT INTO t(v) VALUES(?)", "x"]]),
    );
    let follower = c.followers(leader)[0];
    let fbase = c.nodes[follower].base_url();
    wait_for(
        || (c.try_count_rows(follower, "t").ok() == Some(1)).then_some(()),
        secs(10),
        "the follower to apply the row",
    );
    let q = urlencode("SELECT count(*) FROM t");
    for level in ["none", "weak", "strong", "linearizable", "auto", "bogus"] {
        let (status, v) = get(&format!("{fbase}/db/query?level={level}&q={q}"));
        assert_eq!(status, 200, "level {level}: {v}");
        assert_eq!(
            v["results"][0]["values"],
            json!([[1]]),
            "level {level}: {v}"
        );
    }
    // Heartbeats arrive every 150 ms, so a 5 s bound holds and a 1 ns bound cannot.
    let (status, v) = get(&format!("{fbase}/db/query?level=none&freshness=5s&q={q}"));
    assert_eq!(status, 200);
    assert_eq!(v["results"][0]["values"], json!([[1]]), "{v}");
    let (status, v) = get(&format!("{fbase}/db/query?level=none&freshness=1ns&q={q}"));
    assert_eq!(status, 200);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("stale read")),
        "{v}"
    );
    // The leader is always fresh enough.
    let (_, v) = get(&format!("{base}/db/query?level=none&freshness=1ns&q={q}"));
    assert_eq!(v["results"][0]["values"], json!([[1]]), "{v}");
    // freshness_strict also bounds the age of the last applied write. Time passing is what is
    // tested here (the last write must become older than 1 s), so this sleep stays.
    std::thread::sleep(Duration::from_millis(1200));
    let (_, v) = get(&format!(
        "{fbase}/db/query?level=none&freshness=1s&freshness_strict&q={q}"
    ));
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("freshness_strict")),
        "{v}"
    );
    let (status, v) = get(&format!("{fbase}/db/query?level=none&freshness=soon&q={q}"));
    assert_eq!(status, 400, "{v}");
}

#[test]
fn db_timeout_interrupts_a_long_query() {
    let c = Cluster::start(1, &[]);
    let base = setup(&c);
    let q = urlencode(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
         SELECT count(*) FROM c WHERE x < 0",
    );
    let started = std::time::Instant::now();
    let (status, v) = get(&format!("{base}/db/query?db_timeout=100ms&q={q}"));
    assert_eq!(status, 200, "{v}");
    assert!(started.elapsed() < secs(5));
    assert!(
        v["results"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("db_timeout")),
        "{v}"
    );
}

#[test]
fn readyz_sync_and_noleader() {
    let c = Cluster::start(1, &[]);
    let base = c.nodes[0].base_url();
    let (status, text) = http_get(&format!("{base}/readyz?sync")).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("[+]node ok"), "{text}");
    let (status, text) = http_get(&format!("{base}/readyz?noleader")).unwrap();
    assert_eq!(status, 200, "{text}");
}

#[test]
fn post_leader_hands_leadership_to_another_voter() {
    let c = Cluster::start(3, &[]);
    let base = setup(&c);
    let old = c.wait_leader(secs(10));
    let old_id = c.nodes[old].id;
    // Sent to a follower: forwarded to the leader.
    let follower = c.followers(old)[0];
    let (status, v) = post(
        &format!("{}/leader?timeout=20s", c.nodes[follower].base_url()),
        &json!({}),
    );
    assert_eq!(status, 200, "{v}");
    let new_id: u64 = v["leader"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("new leader id");
    assert_ne!(new_id, old_id, "{v}");
    let new = wait_for(
        || c.leader_index().filter(|i| c.nodes[*i].id != old_id),
        secs(10),
        "the new leader to be visible",
    );
    assert_eq!(c.nodes[new].id, new_id);
    // The cluster keeps accepting writes, through the old leader too.
    let (status, v) = post(
        &format!("{base}/db/execute"),
        &json!([["INSERT INTO t(v) VALUES(?)", "after"]]),
    );
    assert_eq!(status, 200, "{v}");
    // A single-voter cluster has nobody to hand over to.
    let single = Cluster::start(1, &[]);
    let (status, v) = post(
        &format!("{}/leader", single.nodes[0].base_url()),
        &json!({}),
    );
    assert_eq!(status, 503, "{v}");
}
