//! Real rqlite client libraries against a real raftlite cluster: the `rqlite-rs` crate here, and
//! Python's `pyrqlite` (DB-API) when `.ci/run` has installed it (see `tests/pyrqlite_check.py`).

mod common;

use std::num::NonZeroU16;
use std::time::Duration;

use common::*;
use rqlite_rs::prelude::*;
use rqlite_rs::request::{RqliteFreshnessLevel, RqliteQueryParam};

#[derive(FromRow, Debug, PartialEq)]
struct Person {
    id: i64,
    name: String,
    age: i64,
    photo: Vec<u8>,
}

fn host(node: &Node) -> String {
    node.http_addr.clone()
}

fn client(node: &Node, params: Vec<RqliteQueryParam>) -> RqliteClient {
    RqliteClientBuilder::new()
        .known_host(host(node))
        .default_query_params(params)
        .build()
        .expect("build rqlite-rs client")
}

#[test]
fn rqlite_rs_through_a_follower() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(10));
    let follower = c.followers(leader)[0];
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let db = client(&c.nodes[follower], vec![]);
        assert!(db.ready().await, "/readyz through rqlite-rs");

        db.exec(
            rqlite_rs::query!(
                "CREATE TABLE person (id INTEGER PRIMARY KEY, name TEXT, age INTEGER, photo BLOB)"
            )
            .expect("query"),
        )
        .await
        .expect("create table");

        let inserted = db
            .exec(
                rqlite_rs::query!(
                    "INSERT INTO person(name, age, photo) VALUES(?, ?, ?)",
                    "alice",
                    42i64,
                    vec![0u8, 1, 2, 255]
                )
                .expect("query"),
            )
            .await
            .expect("parameterized insert");
        assert_eq!(inserted.last_insert_id(), Some(1));
        assert_eq!(inserted.rows_affected(), Some(1));

        let batch = db
            .batch(vec![
                rqlite_rs::query!(
                    "INSERT INTO person(name, age, photo) VALUES(?, ?, ?)",
                    "bob",
                    7i64,
                    vec![9u8]
                )
                .expect("query"),
                rqlite_rs::query!(
                    "INSERT INTO person(name, age, photo) VALUES(?, ?, ?)",
                    "carol",
                    30i64,
                    Vec::<u8>::new()
                )
                .expect("query"),
            ])
            .await
            .expect("batch");
        assert_eq!(batch.len(), 2);

        // A transaction that fails part-way leaves nothing behind.
        let tx = db
            .transaction(vec![
                rqlite_rs::query!("INSERT INTO person(name, age, photo) VALUES('dave', 1, x'00')")
                    .expect("query"),
                rqlite_rs::query!("INSERT INTO nope VALUES(1)").expect("query"),
            ])
            .await
            .expect("transaction request");
        assert_eq!(tx.len(), 2, "the failing statement is reported");

        let rows = db
            .fetch(
                rqlite_rs::query!("SELECT id, name, age, photo FROM person ORDER BY id")
                    .expect("query"),
            )
            .await
            .expect("select");
        let people: Vec<Person> = rows.into_typed().expect("typed rows");
        assert_eq!(
            people,
            vec![
                Person {
                    id: 1,
                    name: "alice".into(),
                    age: 42,
                    photo: vec![0, 1, 2, 255]
                },
                Person {
                    id: 2,
                    name: "bob".into(),
                    age: 7,
                    photo: vec![9]
                },
                Person {
                    id: 3,
                    name: "carol".into(),
                    age: 30,
                    photo: vec![]
                },
            ]
        );

        // Reads through the follower at every level rqlite-rs offers.
        for level in ["none", "weak", "strong"] {
            let level_param = match level {
                "none" => RqliteFreshnessLevel::None,
                "weak" => RqliteFreshnessLevel::Weak,
                _ => RqliteFreshnessLevel::Strong,
            };
            let reader = client(
                &c.nodes[follower],
                vec![
                    RqliteQueryParam::Level(level_param),
                    RqliteQueryParam::Freshness(NonZeroU16::new(5).expect("non-zero")),
                ],
            );
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let rows = reader
                    .fetch(rqlite_rs::query!("SELECT count(*) AS n FROM person").expect("query"))
                    .await
                    .unwrap_or_else(|e| panic!("level {level}: {e}"));
                let n: i64 = rows[0].get("n").expect("n");
                if n == 3 {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "level {level}: {n} rows"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        let nodes = db.nodes().await.expect("nodes");
        assert_eq!(nodes.len(), 3);
        let leader_node = db.leader().await.expect("leader").expect("a leader");
        assert_eq!(leader_node.id, c.nodes[leader].id.to_string());

        db.queue(vec![rqlite_rs::query!(
            "INSERT INTO person(name, age, photo) VALUES('queued', 5, x'01')"
        )
        .expect("query")])
            .await
            .expect("queued write");
        let strong = client(
            &c.nodes[follower],
            vec![RqliteQueryParam::Level(RqliteFreshnessLevel::Strong)],
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let rows = strong
                .fetch(
                    rqlite_rs::query!("SELECT count(*) AS n FROM person WHERE name = 'queued'")
                        .expect("query"),
                )
                .await
                .expect("select queued");
            if rows[0].get::<i64>("n").expect("n") == 1 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "queued write never applied"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// Runs `tests/pyrqlite_check.py` (pyrqlite, DB-API) against a 3-node cluster through a
/// follower. `.ci/run` installs pyrqlite into a venv and sets `RAFTLITE_TEST_PYTHON`; without it
/// the test says so and passes, so `cargo test` works on a machine without Python packages.
#[test]
fn pyrqlite_dbapi_script() {
    let Ok(python) = std::env::var("RAFTLITE_TEST_PYTHON") else {
        eprintln!("RAFTLITE_TEST_PYTHON is not set: skipping the pyrqlite check (.ci/run sets it)");
        return;
    };
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(10));
    let follower = c.followers(leader)[0];
    let (host, port) = c.nodes[follower]
        .http_addr
        .rsplit_once(':')
        .expect("host:port");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pyrqlite_check.py");
    let output = std::process::Command::new(python)
        .args([script, host, port])
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "pyrqlite script failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
