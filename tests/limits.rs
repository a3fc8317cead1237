//! Bounds on what one request may cost (issue 16, defects 3-5), against real processes:
//! `?timeout` honoured when the leader is paused (SIGSTOP), oversized writes refused before the
//! log, query results capped, and a flood of large requests leaving memory bounded and the node
//! ready.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// How much later than its `?timeout` a request may be answered.
const SLACK: Duration = Duration::from_secs(1);

/// Peak resident memory (VmHWM) a single node may reach under the flood test: the documented
/// `--max-buffered-body-bytes` default (256 MiB) of bodies, their parsed copies and the
/// process's own baseline.
const FLOOD_RSS_LIMIT_MIB: u64 = 768;

fn client(timeout: Duration) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(0)
        .build()
        .expect("build HTTP client")
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
    took: Duration,
}

fn send(request: reqwest::blocking::RequestBuilder) -> Answer {
    let started = Instant::now();
    let response = request
        .send()
        .expect("the node answers (no transport error)");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().unwrap_or_default();
    Answer {
        status,
        retry_after,
        body,
        took: started.elapsed(),
    }
}

/// The answer came within `timeout` + [`SLACK`] as a retryable 503 with a JSON error.
fn assert_timely_503(what: &str, answer: &Answer, timeout: Duration) {
    assert!(
        answer.took <= timeout + SLACK,
        "{what}: answered after {:?}, more than ?timeout {timeout:?} + {SLACK:?} (HTTP {}: {})",
        answer.took,
        answer.status,
        answer.body
    );
    assert_eq!(answer.status, 503, "{what}: {}", answer.body);
    assert!(answer.retry_after.is_some(), "{what}: no Retry-After");
    let error: Value = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {}", answer.body));
    assert!(error["error"].is_string(), "{what}: no error: {error}");
}

/// A stand-in for a joining node's Raft port: answers every request at once, so a member's
/// reachability check of the joiner passes.
fn fake_raft_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    addr
}

fn term_of(node: &Node) -> u64 {
    node.status().expect("status")["store"]["raft"]["term"]
        .as_u64()
        .expect("term")
}

#[test]
fn requests_to_a_follower_of_a_paused_leader_are_answered_within_their_timeout() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(20));
    check_results(
        &c.nodes[leader]
            .execute(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]))
            .expect("create"),
    )
    .expect("create ok");
    let follower = &c.nodes[c.followers(leader)[0]];
    let base = follower.base_url();
    let timeout = Duration::from_secs(2);
    // Far above ?timeout: a late answer shows as a late answer, not as a client error.
    let http = client(Duration::from_secs(60));
    let raft_addr = fake_raft_port();
    // A SQLite file to load (the cluster's own database), fetched before the leader stops.
    let database = http
        .get(format!("{}/db/backup", c.nodes[leader].base_url()))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.bytes())
        .expect("GET /db/backup from the leader");
    let paused = Paused::new(&c.nodes[leader]);

    let cases: Vec<(&str, reqwest::blocking::RequestBuilder, Duration)> = vec![
        (
            "write",
            http.post(format!("{base}/db/execute?timeout=2s"))
                .json(&json!([["INSERT INTO t(v) VALUES(?)", "a"]])),
            timeout,
        ),
        (
            "queued write",
            http.post(format!("{base}/db/execute?queue&timeout=2s"))
                .json(&json!([["INSERT INTO t(v) VALUES(?)", "q"]])),
            timeout,
        ),
        (
            "weak read",
            http.get(format!(
                "{base}/db/query?level=weak&timeout=2s&q=SELECT%20COUNT(*)%20FROM%20t"
            )),
            timeout,
        ),
        (
            "linearizable read",
            http.get(format!(
                "{base}/db/query?level=linearizable&timeout=2s&q=SELECT%20COUNT(*)%20FROM%20t"
            )),
            timeout,
        ),
        (
            "unified request",
            http.post(format!("{base}/db/request?timeout=2s"))
                .json(&json!([["INSERT INTO t(v) VALUES(?)", "r"]])),
            timeout,
        ),
        (
            "SQL load",
            http.post(format!("{base}/db/load?timeout=2s"))
                .header("content-type", "text/plain")
                .body("INSERT INTO t(v) VALUES('load');"),
            timeout,
        ),
        (
            "join",
            http.post(format!("{base}/join?timeout=2s")).json(&json!({
                "id": 9, "addr": raft_addr, "api_addr": "127.0.0.1:9"
            })),
            timeout,
        ),
        (
            "SQL load with the default timeout",
            http.post(format!("{base}/db/load"))
                .header("content-type", "text/plain")
                .body("INSERT INTO t(v) VALUES('load2');"),
            Duration::from_secs(10),
        ),
        (
            // A file restore has no default deadline (it may take minutes), but a forwarded one
            // ends once the leader it went to is gone: here, when the others elect a new one.
            "file load without ?timeout",
            http.post(format!("{base}/db/load"))
                .header("content-type", "application/octet-stream")
                .body(database.to_vec()),
            Duration::from_secs(10),
        ),
        (
            // Without ?timeout the default (10 s) bounds it, not the node-to-node client's 30 s.
            "write with the default timeout",
            http.post(format!("{base}/db/execute"))
                .json(&json!([["INSERT INTO t(v) VALUES(?)", "d"]])),
            Duration::from_secs(10),
        ),
    ];
    // All at once, before the followers could elect another leader (that takes at least an
    // election timeout): each one is forwarded to the paused leader.
    std::thread::scope(|s| {
        let mut running = Vec::new();
        for (what, request, limit) in cases {
            running.push((what, limit, s.spawn(move || send(request))));
        }
        for (what, limit, answer) in running {
            assert_timely_503(what, &answer.join().expect("request thread"), limit);
        }
    });
    drop(paused);

    // A leader that lost its quorum: linearizable reads and writes on it stop at ?timeout.
    let leader = c.wait_leader(Duration::from_secs(30));
    let followers: Vec<Paused> = c
        .followers(leader)
        .into_iter()
        .map(|i| Paused::new(&c.nodes[i]))
        .collect();
    let lbase = c.nodes[leader].base_url();
    let answer = send(http.get(format!(
        "{lbase}/db/query?level=linearizable&timeout=2s&q=SELECT%201"
    )));
    assert_timely_503("linearizable read without quorum", &answer, timeout);
    let answer = send(
        http.post(format!("{lbase}/db/execute?timeout=2s"))
            .json(&json!([["INSERT INTO t(v) VALUES(?)", "nq"]])),
    );
    assert_timely_503("write without quorum", &answer, timeout);
    drop(followers);
    c.wait_leader(Duration::from_secs(30));
}

#[test]
fn an_oversized_write_is_refused_before_the_log_and_costs_no_election() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(20));
    check_results(
        &c.nodes[leader]
            .execute(json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]))
            .expect("create"),
    )
    .expect("create ok");
    let terms: Vec<u64> = c.nodes.iter().map(term_of).collect();
    let follower = c.followers(leader)[0];
    let http = client(Duration::from_secs(60));
    // 12 MiB of SQL: above the default --max-entry-bytes (4 MiB) and any value it accepts.
    let huge = format!("INSERT INTO t(v) VALUES('{}')", "x".repeat(12 << 20));
    for node in [leader, follower] {
        let base = c.nodes[node].base_url();
        for (what, url, body) in [
            (
                "execute (text/plain)",
                format!("{base}/db/execute"),
                huge.clone(),
            ),
            (
                "queued execute",
                format!("{base}/db/execute?queue"),
                huge.clone(),
            ),
            ("request", format!("{base}/db/request"), huge.clone()),
        ] {
            let answer = send(
                http.post(&url)
                    .header("content-type", "text/plain")
                    .body(body),
            );
            assert_eq!(answer.status, 413, "{what} on node {node}: {}", answer.body);
            let error: Value = serde_json::from_str(&answer.body).expect("JSON error");
            let message = error["error"].as_str().unwrap_or_default();
            assert!(
                message.contains("--max-entry-bytes"),
                "{what}: the error names the limit: {message}"
            );
        }
    }
    // A write below the limit still goes through, and nothing moved leadership.
    let fits = json!([["INSERT INTO t(v) VALUES(?)", "y".repeat(3 << 20)]]);
    check_results(&c.nodes[leader].execute(fits).expect("3 MiB write")).expect("3 MiB ok");
    assert_eq!(c.leader_index(), Some(leader), "leadership moved");
    let after: Vec<u64> = c.nodes.iter().map(term_of).collect();
    assert_eq!(after, terms, "a term changed: an election happened");
    assert_eq!(c.count_rows(leader, "t"), 1);
}

#[test]
fn a_query_whose_results_pass_the_response_cap_is_refused() {
    let c = Cluster::start(1, &[]);
    let base = c.nodes[0].base_url();
    // 80 rows of 1 MB: above the default --max-response-bytes (64 MiB).
    let setup = json!([
        "CREATE TABLE big(b BLOB)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 80) \
         INSERT INTO big SELECT zeroblob(1000000) FROM n"
    ]);
    check_results(&c.nodes[0].execute(setup).expect("setup")).expect("setup ok");
    let http = client(Duration::from_secs(60));
    let answer = send(http.get(format!("{base}/db/query?q=SELECT%20b%20FROM%20big")));
    assert_eq!(
        answer.status,
        413,
        "{}",
        &answer.body[..answer.body.len().min(300)]
    );
    let error: Value = serde_json::from_str(&answer.body).expect("JSON error");
    assert!(
        error["error"]
            .as_str()
            .unwrap_or_default()
            .contains("--max-response-bytes"),
        "the error names the flag: {error}"
    );
    // Smaller results are unaffected.
    let count = query_i64s(&base, "SELECT COUNT(*) FROM big", "weak").expect("count");
    assert_eq!(count, vec![80]);
}

fn peak_rss_mib(node: &Node) -> u64 {
    let pid = node.pid().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kib / 1024
}

#[test]
fn a_flood_of_large_requests_leaves_memory_bounded_and_the_node_ready() {
    let mut c = Cluster::start(1, &[]);
    let base = c.nodes[0].base_url();
    check_results(
        &c.nodes[0]
            .execute(json!(["CREATE TABLE t(v TEXT)"]))
            .expect("create"),
    )
    .expect("create ok");
    const CLIENTS: usize = 64;
    const ROUNDS: usize = 3;
    // Half the clients send writes that fit in one entry, half send 16 MiB ones.
    let fits = Arc::new(format!("INSERT INTO t VALUES('{}')", "f".repeat(3 << 20)));
    let huge = Arc::new(format!("INSERT INTO t VALUES('{}')", "h".repeat(16 << 20)));
    let done = Arc::new(AtomicBool::new(false));
    let not_ready = Arc::new(AtomicUsize::new(0));
    let readyz_polls = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (done, not_ready, polls) = (done.clone(), not_ready.clone(), readyz_polls.clone());
        let url = format!("{base}/readyz");
        std::thread::spawn(move || {
            let http = client(Duration::from_secs(2));
            while !done.load(Ordering::Relaxed) {
                match http.get(&url).send() {
                    Ok(r) if r.status().as_u16() == 200 => {}
                    _ => {
                        not_ready.fetch_add(1, Ordering::Relaxed);
                    }
                }
                polls.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let body = if i % 2 == 0 {
                    fits.clone()
                } else {
                    huge.clone()
                };
                let url = format!("{base}/db/execute");
                s.spawn(move || {
                    let http = client(Duration::from_secs(60));
                    (0..ROUNDS)
                        .map(|_| {
                            http.post(&url)
                                .header("content-type", "text/plain")
                                .body(body.as_str().to_owned())
                                .send()
                                .map(|r| r.status().as_u16())
                                .unwrap_or(0)
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    });
    done.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher");
    let peak = peak_rss_mib(&c.nodes[0]);
    let count = |code: u16| statuses.iter().filter(|s| **s == code).count();
    eprintln!(
        "flood: {} requests: {} ok, {} 413, {} 503, {} other; peak RSS {peak} MiB; readyz {} \
         polls, {} not ready",
        statuses.len(),
        count(200),
        count(413),
        count(503),
        statuses.len() - count(200) - count(413) - count(503),
        readyz_polls.load(Ordering::Relaxed),
        not_ready.load(Ordering::Relaxed),
    );
    assert!(
        statuses.iter().all(|s| [200, 413, 503].contains(s)),
        "every request gets a clear answer: {statuses:?}"
    );
    assert!(count(200) > 0, "some writes that fit went through");
    assert!(
        peak <= FLOOD_RSS_LIMIT_MIB,
        "peak RSS {peak} MiB, more than {FLOOD_RSS_LIMIT_MIB} MiB"
    );
    assert_eq!(
        not_ready.load(Ordering::Relaxed),
        0,
        "/readyz failed during the flood"
    );
    c.nodes[0].wait_ready(Duration::from_secs(10));
}
