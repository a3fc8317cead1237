//! Joins decided by the leader's committed membership only (issue 16, defect 2).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// `voter` flag of node `id` in `/nodes?ver=2` of `base`, `None` when it is not listed.
fn listed_as_voter(base: &str, id: u64) -> Option<bool> {
    let (status, body) = http_get(&format!("{base}/nodes?ver=2")).ok()?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    v["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"].as_str() == Some(id.to_string().as_str()))
        .and_then(|n| n["voter"].as_bool())
}

/// A wiped node that rejoins through a follower whose membership is stale (it was down when the
/// node was removed, so it still lists it at the same address) must end up a voter: the
/// follower may not answer "already a member" from its own view, and the joiner keeps asking
/// until it sees itself in the leader's membership.
#[test]
fn wiped_node_rejoining_through_a_stale_follower_becomes_a_voter() {
    let mut c = Cluster::start(5, &[]);
    let leader = c.wait_leader(Duration::from_secs(20));
    let followers = c.followers(leader);
    let (stale, rejoining) = (followers[0], followers[1]);
    let leader_base = c.nodes[leader].base_url();
    let rejoining_id = c.nodes[rejoining].id;

    // The last join's promotion may still be in flight when the harness returns.
    for node in &c.nodes {
        wait_for(
            || (listed_as_voter(&leader_base, node.id) == Some(true)).then_some(()),
            Duration::from_secs(20),
            &format!("node {} to be a voter", node.id),
        );
    }

    c.nodes[stale].kill9();
    // 503 is retryable (e.g. a membership change still being committed).
    wait_for(
        || {
            let removed = http_request_as(
                "DELETE",
                &format!("{leader_base}/remove"),
                None,
                Some(&json!({ "id": rejoining_id }).to_string()),
            )
            .ok()?;
            assert!(
                matches!(removed.status, 200 | 503),
                "remove: HTTP {}: {}",
                removed.status,
                removed.body
            );
            (removed.status == 200).then_some(())
        },
        Duration::from_secs(20),
        "DELETE /remove of the node that will be wiped",
    );
    c.nodes[rejoining].kill9();
    std::fs::remove_dir_all(&c.nodes[rejoining].data_dir).expect("wipe the removed node");
    assert_eq!(listed_as_voter(&leader_base, rejoining_id), None);

    // The stale follower must be asked before the leader's appends reach it: poll its /status
    // tightly and start the joiner the moment it answers.
    c.nodes[stale].restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.nodes[stale].status().is_err() {
        assert!(
            Instant::now() < deadline,
            "the restarted follower's /status never answered"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let via = c.nodes[stale].base_url();
    c.nodes[rejoining].start(Some(&via));

    wait_for(
        || (listed_as_voter(&leader_base, rejoining_id) == Some(true)).then_some(()),
        Duration::from_secs(30),
        "the leader's /nodes to list the rejoined node as a voter",
    );
    c.nodes[rejoining].wait_ready(Duration::from_secs(15));

    // It really is replicated to: a write through the leader reaches its database.
    let write = execute_at(
        &leader_base,
        &json!([
            "CREATE TABLE rejoined (id INTEGER PRIMARY KEY)",
            "INSERT INTO rejoined (id) VALUES (7)"
        ]),
    )
    .expect("write through the leader");
    check_results(&write).expect("write results");
    wait_ids_present(
        &c,
        rejoining,
        "SELECT id FROM rejoined",
        &[7],
        Duration::from_secs(15),
    );
}
