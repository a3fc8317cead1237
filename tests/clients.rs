//! Real rqlite client libraries against a real raftlite cluster, through a follower: the
//! `rqlite-rs` crate here, and Python's `pyrqlite` (DB-API) and SQLAlchemy (ORM, through the
//! `sqlalchemy-rqlite` dialect) with the scripts in `tests/python/`. The Python clients come from
//! the interpreter `RAFTLITE_TEST_PYTHON` names, or else from a venv the tests create under
//! `target/client-tools/` on first use (needs python3 with venv and pip, and PyPI); when neither
//! works the Python tests fail and say why (never a skip).

mod common;

use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
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

/// The pinned Python packages, installed into the provisioned venv (see [`python_with_clients`]).
const PYTHON_PACKAGES: &[&str] = &[
    "pyrqlite==2.2.3",
    "sqlalchemy-rqlite==2.0",
    "SQLAlchemy==2.0.59",
];

/// The interpreter with the Python clients, found once per test binary: `RAFTLITE_TEST_PYTHON`
/// when set, else `<target dir>/client-tools/python-venv/bin/python`, a venv this creates with
/// `python3 -m venv` and fills with [`PYTHON_PACKAGES`] from PyPI on first use (reused while its
/// stamp lists the same pins and the clients import). A missing interpreter, package or failed
/// install fails the test with what went wrong and how to fix it (never a skip).
fn python_with_clients() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(find_python) {
        Ok(python) => python.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn find_python() -> Result<PathBuf, String> {
    let pins = PYTHON_PACKAGES.join(" ");
    if let Some(python) = std::env::var_os("RAFTLITE_TEST_PYTHON") {
        let python = PathBuf::from(python);
        probe_python(&python).map_err(|e| {
            format!(
                "{e}\nRAFTLITE_TEST_PYTHON={} must have the Python clients: \
                 `{} -m pip install {pins}`, or unset RAFTLITE_TEST_PYTHON and the test installs \
                 them into a venv under target/client-tools itself",
                python.display(),
                python.display()
            )
        })?;
        client_tools::announce(&format!(
            "tests/clients.rs: Python clients from RAFTLITE_TEST_PYTHON={}",
            python.display()
        ));
        return Ok(python);
    }
    let venv_python = |dir: &Path| dir.join("bin").join("python");
    let dir = client_tools::provision(
        "python-venv",
        &PYTHON_PACKAGES.join("\n"),
        |dir| {
            client_tools::run_install(Command::new("python3").arg("-m").arg("venv").arg(dir))?;
            client_tools::run_install(
                Command::new(venv_python(dir))
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                    ])
                    .args(PYTHON_PACKAGES),
            )
        },
        |dir| probe_python(&venv_python(dir)),
    )
    .map_err(|e| {
        format!(
            "could not provision the Python clients ({pins}) in a venv under {}:\n{e}\n\
             This needs python3 with venv and pip (Debian/Ubuntu: apt-get install python3-venv) \
             and PyPI reachable (pip honours PIP_INDEX_URL and HTTPS_PROXY). Or install them \
             yourself and point the tests at that interpreter:\n  \
             python3 -m venv /tmp/raftlite-venv && /tmp/raftlite-venv/bin/pip install {pins}\n  \
             export RAFTLITE_TEST_PYTHON=/tmp/raftlite-venv/bin/python",
            client_tools::tools_root().display()
        )
    })?;
    let python = venv_python(&dir);
    client_tools::announce(&format!(
        "tests/clients.rs: Python clients from the provisioned venv {}",
        dir.display()
    ));
    Ok(python)
}

/// Imports the clients (and checks SQLAlchemy is 2.0) with `python`.
fn probe_python(python: &Path) -> Result<(), String> {
    let probe = Command::new(python)
        .args([
            "-c",
            "import pyrqlite, sqlalchemy, sqlalchemy_rqlite; \
             assert sqlalchemy.__version__.startswith('2.0.'), sqlalchemy.__version__",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "cannot run the Python interpreter {}: {e}",
                python.display()
            )
        })?;
    if probe.status.success() {
        return Ok(());
    }
    Err(format!(
        "{} lacks the Python clients (pyrqlite, SQLAlchemy 2.0, sqlalchemy-rqlite):\n{}",
        python.display(),
        String::from_utf8_lossy(&probe.stderr).trim()
    ))
}

/// Runs `tests/python/<script>` against a 3-node cluster, pointed at a follower. The script
/// prints `PASS name` / `FAIL name: why` for each of its checks and exits 1 when any failed.
fn run_python_checks(script: &str) {
    let python = python_with_clients();
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(10));
    let follower = c.followers(leader)[0];
    let (host, port) = c.nodes[follower]
        .http_addr
        .rsplit_once(':')
        .expect("host:port");
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(&python)
        .args([path.as_str(), host, port])
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "{script} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// pyrqlite 2.2.3 (DB-API): see `tests/python/pyrqlite_check.py`.
#[test]
fn pyrqlite_dbapi_through_a_follower() {
    run_python_checks("pyrqlite_check.py");
}

/// SQLAlchemy 2.0 with the sqlalchemy-rqlite dialect (`rqlite+pyrqlite://`): see
/// `tests/python/sqlalchemy_check.py`.
#[test]
fn sqlalchemy_orm_through_a_follower() {
    run_python_checks("sqlalchemy_check.py");
}
