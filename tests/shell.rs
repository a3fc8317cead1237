//! `raftlite-shell` with a script piped to stdin: against a real 1-node server, and against a
//! tiny fake HTTP server for what needs a scripted answer (redirects, credentials, backup and
//! restore transfers).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{free_port, wait_for, Cluster, Node};

/// A shell run never takes longer than this; past it the process is killed and the test fails.
const SHELL_DEADLINE: Duration = Duration::from_secs(60);

struct ShellRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for ShellRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `raftlite-shell ARGS...` with `script` on stdin.
fn run_shell(args: &[&str], script: &str) -> ShellRun {
    let home = tempfile::tempdir().expect("temp HOME");
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftlite-shell"))
        .args(args)
        .env_remove("RAFTLITE_URL")
        .env_remove("RAFTLITE_USER")
        .env("HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raftlite-shell");
    let mut stdin = child.stdin.take().expect("stdin");
    let script = script.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(script.as_bytes());
    });
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("stdout")));
    let err = reader(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + SHELL_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for shell") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("raftlite-shell {args:?} did not finish within {SHELL_DEADLINE:?}");
        }
        sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    ShellRun {
        code: status.code(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------
// Against a real server
// ---------------------------------------------------------------------------

#[test]
fn script_creates_inserts_selects_and_inspects_the_schema() {
    let cluster = Cluster::start(1, &[]);
    let url = cluster.nodes[0].base_url();
    let script = "\
CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT);
CREATE INDEX foo_name ON foo(name);
INSERT INTO foo(name) VALUES ('fiona');
INSERT INTO foo(name)
   VALUES ('a;b'), (NULL);   -- two rows; the ; in the literal does not split
SELECT * FROM foo ORDER BY id;
SELECT * FROM foo WHERE id > 100;
.tables
.schema
.schema FOO
.indexes
.timer on
SELECT COUNT(*) AS n FROM foo;
.timer off
.nodes
.status
";
    let run = run_shell(&[&url], script);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
    let out = &run.stdout;

    assert!(
        out.contains("1 row(s) affected, last insert id 1\n"),
        "{run:?}"
    );
    assert!(
        out.contains("2 row(s) affected, last insert id 3\n"),
        "{run:?}"
    );
    let table = "\
+----+-------+
| id | name  |
+----+-------+
| 1  | fiona |
| 2  | a;b   |
| 3  | NULL  |
+----+-------+
";
    assert!(out.contains(table), "{run:?}");
    // An empty result still shows its columns.
    assert!(
        out.contains("+----+------+\n| id | name |\n+----+------+\n"),
        "{run:?}"
    );
    // .tables: user tables only, not _raftlite_meta.
    assert!(
        out.contains("+------+\n| name |\n+------+\n| foo  |\n+------+\n"),
        "{run:?}"
    );
    assert!(!out.contains("_raftlite_meta"), "{run:?}");
    // .schema, and .schema TABLE (case-insensitive), both with the index.
    let create = "CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT);\n\
                  CREATE INDEX foo_name ON foo(name);\n";
    assert_eq!(out.matches(create).count(), 2, "{run:?}");
    // .indexes
    assert!(out.contains("| foo_name | foo   |"), "{run:?}");
    // .timer on: a run time after the statement, and only while on.
    assert!(
        out.contains("| n |\n+---+\n| 3 |\n+---+\nRun Time: "),
        "{run:?}"
    );
    assert_eq!(out.matches("Run Time: ").count(), 1, "{run:?}");
    // .nodes
    assert!(
        out.contains("| id | api_addr") && out.contains("| reachable | leader |"),
        "{run:?}"
    );
    assert!(out.contains(&format!("| 1  | {url} ")), "{run:?}");
    // .status is pretty JSON.
    assert!(out.contains("\"raft\": {"), "{run:?}");
}

#[test]
fn a_failing_statement_makes_the_exit_status_1_and_the_script_goes_on() {
    let cluster = Cluster::start(1, &[]);
    let url = cluster.nodes[0].base_url();
    let run = run_shell(&[&url], "SELECT * FROM nope;\nSELECT 41 + 1 AS answer;\n");
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("Error: ") && run.stderr.contains("no such table: nope"),
        "{run:?}"
    );
    assert!(run.stdout.contains("| 42     |"), "{run:?}");

    // A statement without a final `;` at the end of the input still runs.
    let run = run_shell(&[&url], "SELECT 'last' AS x");
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("| last |"), "{run:?}");
}

#[test]
fn unknown_dot_commands_point_to_help() {
    let cluster = Cluster::start(1, &[]);
    let url = cluster.nodes[0].base_url();
    let run = run_shell(&[&url], ".frobnicate\n.help\n");
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("unknown command \".frobnicate\"") && run.stderr.contains(".help"),
        "{run:?}"
    );
    assert!(run.stdout.contains(".backup FILE"), "{run:?}");
}

#[test]
fn exit_stops_reading() {
    let cluster = Cluster::start(1, &[]);
    let url = cluster.nodes[0].base_url();
    let run = run_shell(&[&url], "SELECT 1 AS one;\n.exit\nSELECT * FROM nope;\n");
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("| one |"), "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
}

#[test]
fn an_unreachable_server_is_named_and_fails_the_script() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let run = run_shell(&[&url], "SELECT 1;\nSELECT 2;\n.tables\n");
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains(&url), "{run:?}");
    // The script stops at the first connection error.
    assert_eq!(run.stderr.matches("Error: ").count(), 1, "{run:?}");

    // Setup errors are reported before anything is read.
    let run = run_shell(&["ftp://127.0.0.1:1"], "SELECT 1;\n");
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("http or https"), "{run:?}");
    let run = run_shell(&[&url, "-u", "no-colon"], "SELECT 1;\n");
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("USER:PASSWORD"), "{run:?}");
}

#[test]
fn backup_writes_a_valid_sqlite_file() {
    let cluster = Cluster::start(1, &[]);
    let url = cluster.nodes[0].base_url();
    let dir = tempfile::tempdir().expect("temp dir");
    let dest = dir.path().join("backup.db");
    let script = format!(
        "CREATE TABLE t (x);\nINSERT INTO t VALUES (1), (2), (3);\n.backup '{}'\n",
        dest.display()
    );
    let run = run_shell(&[&url], &script);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("Backup written to"), "{run:?}");
    assert_eq!(files_in(dir.path()), vec!["backup.db"], "no temp file left");
    let conn = rusqlite::Connection::open(&dest).expect("open the backup");
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
        .expect("query the backup");
    assert_eq!(n, 3);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check");
    assert_eq!(check, "ok");
}

#[test]
fn dump_and_restore_round_trip() {
    let cluster = Cluster::start(1, &[]);
    let url = cluster.nodes[0].base_url();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("copy.db");
    let sql = dir.path().join("copy.sql");
    let script = format!(
        "CREATE TABLE t (x);\nINSERT INTO t VALUES ('kept');\n.backup {}\n.dump {}\n\
         INSERT INTO t VALUES ('dropped');\n.restore {}\nSELECT x FROM t;\n",
        db.display(),
        sql.display(),
        db.display()
    );
    let run = run_shell(&[&url], &script);
    assert_eq!(run.code, Some(0), "{run:?}");
    let dump = std::fs::read_to_string(&sql).expect("read the dump");
    assert!(dump.contains("CREATE TABLE t"), "{dump}");
    assert!(run.stdout.contains("| kept |"), "{run:?}");
    assert!(!run.stdout.contains("dropped |"), "{run:?}");
}

/// A CA and a server certificate for 127.0.0.1 (rcgen): `(ca PEM, cert PEM, key PEM)`.
fn test_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("generate CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "raftlite shell test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("generate key");
    let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("leaf params");
    let cert = params.signed_by(&key, &issuer).expect("sign leaf");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn https_with_ca_cert_or_insecure_and_basic_auth() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca_pem, cert_pem, key_pem) = test_pki();
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (ca, cert, key, auth) = (
        path("ca.pem"),
        path("srv.pem"),
        path("srv.key"),
        path("auth.json"),
    );
    std::fs::write(&ca, &ca_pem).expect("write CA");
    std::fs::write(&cert, &cert_pem).expect("write cert");
    std::fs::write(&key, &key_pem).expect("write key");
    std::fs::write(
        &auth,
        r#"[{"username": "alice", "password": "s3cret", "perms": ["all"]}]"#,
    )
    .expect("write auth file");
    let mut node = Node::new(
        1,
        dir.path(),
        &["--http-cert", &cert, "--http-key", &key, "--auth", &auth],
    );
    node.start(None);
    let url = format!("https://{}", node.http_addr);

    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM")])
        .build()
        .expect("HTTPS client");
    wait_for(
        || {
            let resp = client
                .get(format!("{url}/readyz"))
                .basic_auth("alice", Some("s3cret"))
                .send()
                .ok()?;
            (resp.status() == 200).then_some(())
        },
        Duration::from_secs(30),
        "the HTTPS node to be ready",
    );

    let script = "CREATE TABLE t (x);\nINSERT INTO t VALUES ('secure');\nSELECT x FROM t;\n";
    let run = run_shell(&[&url, "--ca-cert", &ca, "-u", ALICE], script);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("| secure |"), "{run:?}");

    // The server's certificate is not trusted without --ca-cert: a clear error with a hint.
    let run = run_shell(&[&url, "-u", ALICE], "SELECT 1;\n");
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains(&url) && run.stderr.contains("--ca-cert"),
        "{run:?}"
    );

    // --insecure skips the check, with a warning.
    let run = run_shell(&[&url, "--insecure", "-u", ALICE], "SELECT x FROM t;\n");
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("| secure |"), "{run:?}");
    assert!(run.stderr.contains("--insecure"), "{run:?}");

    // Wrong or missing credentials.
    let run = run_shell(
        &[&url, "--ca-cert", &ca, "-u", "alice:wrong"],
        "SELECT 1;\n",
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("HTTP 401"), "{run:?}");
    let run = run_shell(&[&url, "--ca-cert", &ca], "SELECT 1;\n");
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("-u USER:PASSWORD"), "{run:?}");
}

// ---------------------------------------------------------------------------
// Against a fake server
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    /// Path and query.
    target: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

struct Canned {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn canned(status: u16, body: impl Into<Vec<u8>>) -> Canned {
    Canned {
        status,
        headers: Vec::new(),
        body: body.into(),
    }
}

struct FakeServer {
    base: String,
    log: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeServer {
    /// Answers every request with `handler`; one request per connection.
    fn start(handler: impl Fn(&Recorded) -> Canned + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake server");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = Arc::clone(&log);
        // The thread blocks in accept until the test process exits.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Some(req) = serve_one(stream, &handler) {
                    log2.lock().unwrap_or_else(|e| e.into_inner()).push(req);
                }
            }
        });
        FakeServer { base, log }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn serve_one(stream: TcpStream, handler: &dyn Fn(&Recorded) -> Canned) -> Option<Recorded> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    let req = Recorded {
        method,
        target,
        headers,
        body,
    };
    let answer = handler(&req);
    let mut head = format!(
        "HTTP/1.1 {} Canned\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        answer.body.len()
    );
    for (k, v) in &answer.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&answer.body);
    let _ = stream.flush();
    Some(req)
}

fn fake_sqlite_bytes(len: usize) -> Vec<u8> {
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend((0..len).map(|i| (i * 7 % 251) as u8));
    bytes
}

const ALICE: &str = "alice:s3cret";
const ALICE_BASIC: &str = "Basic YWxpY2U6czNjcmV0";

#[test]
fn backup_streams_to_the_file_with_credentials() {
    let payload = fake_sqlite_bytes(300_000);
    let served = payload.clone();
    let fake = FakeServer::start(move |req| match req.target.as_str() {
        "/db/backup" => canned(200, served.clone()),
        _ => canned(404, "{\"error\":\"no\"}"),
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let dest = dir.path().join("b.db");
    let run = run_shell(
        &[&fake.base, "-u", ALICE],
        &format!(".backup {}\n", dest.display()),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "Backup written to {} (300016 bytes)",
            dest.display()
        )),
        "{run:?}"
    );
    assert_eq!(std::fs::read(&dest).expect("read backup"), payload);
    assert_eq!(files_in(dir.path()), vec!["b.db"], "no temp file left");
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(
        reqs[0].headers.get("authorization").map(String::as_str),
        Some(ALICE_BASIC)
    );
}

#[test]
fn failed_backups_leave_nothing_behind() {
    let fake = FakeServer::start(|req| match req.target.as_str() {
        "/db/backup" => canned(404, "{\"error\":\"not found\"}"),
        "/db/backup?fmt=sql" => canned(200, "CREATE TABLE t(x);\n"),
        _ => canned(200, "<html>a proxy page</html>"),
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let dest = dir.path().join("b.db");
    let run = run_shell(&[&fake.base], &format!(".backup {}\n", dest.display()));
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("/db/backup: HTTP 404") && run.stderr.contains("not found"),
        "{run:?}"
    );
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );

    // .dump writes the SQL text as it comes.
    let sql = dir.path().join("d.sql");
    let run = run_shell(&[&fake.base], &format!(".dump {}\n", sql.display()));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        std::fs::read_to_string(&sql).expect("read dump"),
        "CREATE TABLE t(x);\n"
    );
    assert_eq!(files_in(dir.path()), vec!["d.sql"]);
}

#[test]
fn a_backup_that_is_not_sqlite_is_refused() {
    let fake = FakeServer::start(|_| canned(200, "<html>a proxy page</html>"));
    let dir = tempfile::tempdir().expect("temp dir");
    let dest = dir.path().join("b.db");
    let run = run_shell(&[&fake.base], &format!(".backup {}\n", dest.display()));
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("not a SQLite database"), "{run:?}");
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

#[test]
fn redirects_are_followed_with_method_body_and_credentials() {
    let fake = FakeServer::start(|req| {
        if req.target.contains("hop=1") {
            canned(
                200,
                r#"{"results":[{"columns":["x"],"types":["integer"],"values":[[7]]}]}"#,
            )
        } else {
            Canned {
                status: 301,
                headers: vec![(
                    "Location".to_owned(),
                    "/db/request?level=weak&hop=1".to_owned(),
                )],
                body: Vec::new(),
            }
        }
    });
    let run = run_shell(&[&fake.base, "-u", ALICE], "SELECT 7 AS x;\n");
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("| 7 |"), "{run:?}");
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    for r in &reqs {
        assert_eq!(r.method, "POST", "{r:?}");
        assert_eq!(r.body, br#"["SELECT 7 AS x"]"#, "{r:?}");
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some(ALICE_BASIC),
            "{r:?}"
        );
    }
    assert_eq!(reqs[0].target, "/db/request?level=weak");
    assert_eq!(reqs[1].target, "/db/request?level=weak&hop=1");
}

#[test]
fn http_errors_are_reported_with_a_hint() {
    let fake = FakeServer::start(|_| canned(401, "{\"error\":\"unauthorized\"}"));
    let run = run_shell(&[&fake.base], "SELECT 1;\n.status\n");
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(run.stderr.matches("HTTP 401").count(), 2, "{run:?}");
    assert!(run.stderr.contains("-u USER:PASSWORD"), "{run:?}");
}

#[test]
fn restore_uploads_the_file() {
    let fake = FakeServer::start(|req| match (req.method.as_str(), req.target.as_str()) {
        ("POST", "/db/load") if req.body.starts_with(b"SQLite format 3\0") => {
            canned(200, "{\"results\":[]}")
        }
        ("POST", "/db/load") => canned(200, "{\"results\":[{\"error\":\"not a database\"}]}"),
        _ => canned(404, "{\"error\":\"no\"}"),
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.db");
    let payload = fake_sqlite_bytes(200_000);
    std::fs::write(&good, &payload).expect("write source");
    let run = run_shell(
        &[&fake.base, "-u", ALICE],
        &format!(".restore {}\n", good.display()),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("Database restored from"), "{run:?}");
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].body, payload);
    assert_eq!(
        reqs[0].headers.get("content-type").map(String::as_str),
        Some("application/octet-stream")
    );
    assert_eq!(
        reqs[0].headers.get("authorization").map(String::as_str),
        Some(ALICE_BASIC)
    );

    // An error in the answer fails the command; a missing file fails before any request.
    let bad = dir.path().join("bad.db");
    std::fs::write(&bad, "garbage").expect("write source");
    let missing = PathBuf::from(dir.path()).join("missing.db");
    let run = run_shell(
        &[&fake.base],
        &format!(
            ".restore {}\n.restore {}\n",
            bad.display(),
            missing.display()
        ),
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("not a database"), "{run:?}");
    assert!(run.stderr.contains("missing.db"), "{run:?}");
    assert_eq!(fake.requests().len(), 2);
}
