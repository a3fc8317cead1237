//! Harness for integration tests that run real `raftlite` processes on
//! 127.0.0.1. Every wait has a deadline; when a test panics, the cluster's
//! `Drop` prints the tail of each node's log and kills all processes.
#![allow(dead_code)]

pub mod client_tools;

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const LOG_TAIL_LINES: usize = 60;

// ---------------------------------------------------------------------------
// Generic helpers
// ---------------------------------------------------------------------------

/// `raftlite` as a test runs it: no inherited `RAFTLITE_*`/`AWS_*` settings (the test passes
/// what it means), stdin closed, stdout and stderr piped.
pub fn cli_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftlite"));
    clear_inherited_settings(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Removes the `RAFTLITE_*` and `AWS_*` variables this process inherited from `cmd`'s
/// environment.
pub fn clear_inherited_settings(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("AWS_") || key.starts_with("RAFTLITE_") {
            cmd.env_remove(key);
        }
    }
}

/// The outcome of a CLI process run to completion by [`run_to_completion`].
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Killed at the deadline.
    pub timed_out: bool,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            if self.timed_out { " (TIMED OUT)" } else { "" },
            self.stdout,
            self.stderr
        )
    }
}

impl Run {
    /// Asserts a clean exit 0.
    pub fn ok(self) -> Run {
        assert!(
            self.code == Some(0) && !self.timed_out,
            "expected success: {self:?}"
        );
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Waits for `child` (spawned with piped stdout and stderr, read on threads so a full pipe
/// never blocks it); past `deadline` it is killed and the run says `timed_out`.
pub fn run_to_completion(child: &mut Child, deadline: Duration) -> Run {
    fn reader(
        pipe: Option<impl std::io::Read + Send + 'static>,
    ) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    }
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let until = Instant::now() + deadline;
    let (code, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (status.code(), false),
            Ok(None) if Instant::now() < until => sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break (None, true);
            }
        }
    };
    Run {
        code,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        timed_out,
    }
}

/// Polls `cond` until it returns `Some`, panicking with `what` after `timeout`.
pub fn wait_for<T>(mut cond: impl FnMut() -> Option<T>, timeout: Duration, what: &str) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        sleep(POLL_INTERVAL);
    }
}

/// Picks a free TCP port on 127.0.0.1 below the kernel's ephemeral range (32768+ on Linux).
/// Ports from `bind(:0)` come from that range, which outgoing connections also use, so such a
/// port could be taken by any client socket between the probe and the node's bind. Here each
/// test process walks its own slice of 20000..32000 (by pid) and checks each port by binding.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let base = (std::process::id() % 60) * 200;
    for _ in 0..SPAN {
        let offset = (base + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
        let port = (LOW + offset) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port on 127.0.0.1 in {LOW}..{}", LOW + SPAN)
}

/// Last `n` lines of a file, or a note saying why it could not be read.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

// ---------------------------------------------------------------------------
// HTTP helpers (free functions so that writer threads can use plain URLs)
// ---------------------------------------------------------------------------

fn client() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .timeout(HTTP_TIMEOUT)
            // No keep-alive pool: nodes are killed and restarted on the same
            // ports, and stale pooled connections only add noise.
            .pool_max_idle_per_host(0)
            .build()
            .expect("build HTTP client")
    })
}

/// Percent-encodes a query-string component.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// GET `url`; returns status and body text. `Err` only for transport errors.
pub fn http_get(url: &str) -> Result<(u16, String), String> {
    let resp = client()
        .get(url)
        .send()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .text()
        .map_err(|e| format!("GET {url}: reading body: {e}"))?;
    Ok((status, body))
}

/// POST a raw JSON body to `url`; returns status and body text.
pub fn http_post(url: &str, body: impl Into<String>) -> Result<(u16, String), String> {
    let resp = client()
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.into())
        .send()
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .map_err(|e| format!("POST {url}: reading body: {e}"))?;
    Ok((status, text))
}

/// Parses a 200 response as JSON; anything else is an `Err` with the body.
fn ok_json(what: &str, (status, body): (u16, String)) -> Result<Value, String> {
    if status != 200 {
        return Err(format!("{what}: HTTP {status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{what}: bad JSON ({e}): {body}"))
}

/// `POST {base}/db/execute`; `Ok` is the whole response on HTTP 200 (which
/// may still contain per-result errors: see [`check_results`]).
pub fn execute_at(base: &str, body: &Value) -> Result<Value, String> {
    ok_json(
        "execute",
        http_post(&format!("{base}/db/execute"), body.to_string())?,
    )
}

/// `GET {base}/db/query?q=SQL&level=LEVEL`.
pub fn query_at(base: &str, sql: &str, level: &str) -> Result<Value, String> {
    let url = format!(
        "{base}/db/query?q={}&level={}",
        urlencode(sql),
        urlencode(level)
    );
    ok_json("query", http_get(&url)?)
}

/// `Err` if the response has no `results` array or any result has an `error`.
pub fn check_results(resp: &Value) -> Result<(), String> {
    let results = resp["results"]
        .as_array()
        .ok_or_else(|| format!("response has no results array: {resp}"))?;
    match results.iter().find(|r| r.get("error").is_some()) {
        Some(r) => Err(format!("statement failed: {}", r["error"])),
        None => Ok(()),
    }
}

/// `values` of the first query result (rqlite omits it for empty results).
pub fn first_values(resp: &Value) -> Result<Vec<Vec<Value>>, String> {
    check_results(resp)?;
    let first = &resp["results"][0];
    match first.get("values") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => {
            serde_json::from_value(v.clone()).map_err(|e| format!("bad values ({e}): {resp}"))
        }
    }
}

/// Runs a single-column integer query and returns the column.
pub fn query_i64s(base: &str, sql: &str, level: &str) -> Result<Vec<i64>, String> {
    first_values(&query_at(base, sql, level)?)?
        .iter()
        .map(|row| {
            row.first()
                .and_then(Value::as_i64)
                .ok_or_else(|| format!("not an integer row: {row:?}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// One raftlite process
// ---------------------------------------------------------------------------

pub struct Node {
    pub id: u64,
    pub http_addr: String,
    pub raft_addr: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// `--join` value of the last `start`, reused by `restart`.
    join: Option<String>,
    /// Extra environment variables of the process (see [`Node::set_envs`]).
    envs: Vec<(String, String)>,
}

impl Node {
    /// A node (not started) whose data lives in `<dir>/node-<id>` and whose
    /// log is `<dir>/node-<id>.log`. Both ports are allocated now.
    pub fn new(id: u64, dir: &Path, extra_args: &[&str]) -> Node {
        Node {
            id,
            http_addr: format!("127.0.0.1:{}", free_port()),
            raft_addr: format!("127.0.0.1:{}", free_port()),
            data_dir: dir.join(format!("node-{id}")),
            child: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            join: None,
            envs: Vec::new(),
        }
    }

    pub fn log_path(&self) -> PathBuf {
        let parent = self.data_dir.parent().unwrap_or(Path::new("."));
        parent.join(format!("node-{}.log", self.id))
    }

    /// `http://HOST:PORT` of this node's API.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Spawns `raftlite serve`, appending stdout/stderr to the node's log.
    pub fn start(&mut self, join: Option<&str>) {
        assert!(self.child.is_none(), "node {} is already started", self.id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open node log");
        let log_err = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftlite"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args([
                "--http-addr",
                &self.http_addr,
                "--raft-addr",
                &self.raft_addr,
            ])
            .args(["--node-id", &self.id.to_string()]);
        if let Some(j) = join {
            cmd.args(["--join", j]);
        }
        // Test nodes back up only when a test asks (a --backup-to flag or env var wins over
        // this); the default destination is tested on its own.
        cmd.args(&self.extra_args)
            .env("RAFTLITE_BACKUP_TO", "off")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = cmd.spawn().expect("spawn raftlite");
        self.child = Some(child);
        self.join = join.map(str::to_owned);
    }

    /// Starts again with the same flags (including `--join`) as last time.
    pub fn restart(&mut self) {
        let join = self.join.clone();
        self.start(join.as_deref());
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (via the `kill` command), wait up to 10 s, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        eprintln!("node {} ignored SIGTERM for 10 s; killing it", self.id);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// True if the process was started and has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The process id while started (for signals such as SIGSTOP/SIGCONT, and /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True if started and not stopped by the harness (no syscall needed).
    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }

    pub fn execute(&self, body: Value) -> Result<Value, String> {
        execute_at(&self.base_url(), &body)
    }

    pub fn query(&self, sql: &str, level: &str) -> Result<Value, String> {
        query_at(&self.base_url(), sql, level)
    }

    pub fn status(&self) -> Result<Value, String> {
        ok_json("status", http_get(&self.url("/status"))?)
    }

    /// Number of cluster members listed by this node's `/nodes`.
    pub fn member_count(&self) -> Result<usize, String> {
        let v = ok_json("nodes", http_get(&self.url("/nodes"))?)?;
        match &v {
            Value::Array(a) => Ok(a.len()),
            Value::Object(o) => match o.get("nodes") {
                Some(Value::Array(a)) => Ok(a.len()),
                _ => Ok(o.len()),
            },
            _ => Err(format!("unexpected /nodes body: {v}")),
        }
    }

    /// Waits until `/readyz` answers 200; panics (with the log tail) if the
    /// process exits or the deadline passes.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                panic!(
                    "node {} is not running; log tail:\n{}",
                    self.id,
                    tail(&self.log_path(), LOG_TAIL_LINES)
                );
            }
            if let Ok((200, _)) = http_get(&self.url("/readyz")) {
                return;
            }
            if Instant::now() >= deadline {
                panic!("node {} not ready after {timeout:?}", self.id);
            }
            sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ---------------------------------------------------------------------------
// A cluster of nodes sharing one temporary directory
// ---------------------------------------------------------------------------

pub struct Cluster {
    pub nodes: Vec<Node>,
    tmp: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n): node 1 bootstraps, the others join it
    /// one at a time. Returns once all are ready and `/nodes` on the leader
    /// lists all `n` members.
    pub fn start(n: usize, extra_args: &[&str]) -> Cluster {
        Cluster::start_with(n, extra_args, None)
    }

    fn start_with(n: usize, extra_args: &[&str], creds: Option<Creds<'_>>) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("raftlite-it-")
            .tempdir()
            .expect("create temp dir");
        let nodes = (1..=n as u64)
            .map(|id| Node::new(id, tmp.path(), extra_args))
            .collect();
        let mut c = Cluster { nodes, tmp };
        c.nodes[0].start(None);
        c.nodes[0].wait_ready(Duration::from_secs(30));
        let join_url = c.nodes[0].base_url();
        for i in 1..n {
            c.nodes[i].start(Some(&join_url));
            c.nodes[i].wait_ready(Duration::from_secs(30));
            let want = i + 1;
            wait_for(
                || {
                    let members = match creds {
                        None => c.nodes[c.leader_index()?].member_count(),
                        Some(creds) => c.nodes[c.leader_index_as(creds)?].member_count_as(creds),
                    };
                    (members.ok()? >= want).then_some(())
                },
                Duration::from_secs(30),
                &format!("leader's /nodes to list {want} members"),
            );
        }
        c
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Index of a started node whose `/status` says it is the Leader.
    pub fn leader_index(&self) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.is_started()
                && n.status()
                    .map(|s| s["store"]["raft"]["state"] == "Leader")
                    .unwrap_or(false)
        })
    }

    pub fn wait_leader(&self, timeout: Duration) -> usize {
        wait_for(|| self.leader_index(), timeout, "a leader to be elected")
    }

    /// Waits until exactly one node calls itself leader. A restarted node whose committed vote was
    /// its own re-establishes its old leadership at start-up (openraft) and says "Leader" until it
    /// hears of the newer term; `wait_leader` could pick it in that moment.
    pub fn wait_sole_leader(&self, timeout: Duration) -> usize {
        wait_for(
            || {
                let leaders: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| {
                        self.nodes[i].is_started()
                            && self.nodes[i]
                                .status()
                                .map(|s| s["store"]["raft"]["state"] == "Leader")
                                .unwrap_or(false)
                    })
                    .collect();
                (leaders.len() == 1).then(|| leaders[0])
            },
            timeout,
            "exactly one node to call itself leader",
        )
    }

    /// Indices of started nodes other than `leader`.
    pub fn followers(&self, leader: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| i != leader && self.nodes[i].is_started())
            .collect()
    }

    /// `SELECT COUNT(*)` with `level=none` (local read).
    pub fn try_count_rows(&self, node: usize, table: &str) -> Result<i64, String> {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        query_i64s(&self.nodes[node].base_url(), &sql, "none").and_then(|v| {
            v.first()
                .copied()
                .ok_or_else(|| "no COUNT(*) row".to_owned())
        })
    }

    pub fn count_rows(&self, node: usize, table: &str) -> i64 {
        self.try_count_rows(node, table).unwrap_or_else(|e| {
            panic!("count rows of {table} on node {}: {e}", self.nodes[node].id)
        })
    }

    /// Prints the tail of every node's log to stderr.
    pub fn dump_logs(&self) {
        for n in &self.nodes {
            eprintln!(
                "===== node {} (http {}, raft {}) log tail: {} =====\n{}",
                n.id,
                n.http_addr,
                n.raft_addr,
                n.log_path().display(),
                tail(&n.log_path(), LOG_TAIL_LINES)
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for n in &mut self.nodes {
            n.kill9();
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP Basic auth (servers started with --auth FILE)
// ---------------------------------------------------------------------------

/// `(user, password)` for HTTP Basic auth.
pub type Creds<'a> = (&'a str, &'a str);

/// An HTTP answer: status, body and the `WWW-Authenticate` header, if any.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub www_authenticate: Option<String>,
}

/// Sends `method url` with optional Basic credentials and an optional JSON body.
/// `Err` only for transport errors.
pub fn http_request_as(
    method: &str,
    url: &str,
    creds: Option<Creds<'_>>,
    body: Option<&str>,
) -> Result<Reply, String> {
    let m = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|e| format!("bad method {method}: {e}"))?;
    let mut req = client().request(m, url);
    if let Some((user, password)) = creds {
        req = req.basic_auth(user, Some(password));
    }
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_owned());
    }
    let resp = req.send().map_err(|e| format!("{method} {url}: {e}"))?;
    let status = resp.status().as_u16();
    let www_authenticate = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp
        .text()
        .map_err(|e| format!("{method} {url}: reading body: {e}"))?;
    Ok(Reply {
        status,
        body,
        www_authenticate,
    })
}

/// `POST {base}/db/execute` as `creds`; `Ok` is the JSON response on HTTP 200.
pub fn execute_as(base: &str, creds: Creds<'_>, body: &Value) -> Result<Value, String> {
    let r = http_request_as(
        "POST",
        &format!("{base}/db/execute"),
        Some(creds),
        Some(&body.to_string()),
    )?;
    ok_json("execute", (r.status, r.body))
}

/// Single-column integer query (`GET /db/query?q=SQL&level=LEVEL`) as `creds`.
pub fn query_i64s_as(
    base: &str,
    creds: Creds<'_>,
    sql: &str,
    level: &str,
) -> Result<Vec<i64>, String> {
    let url = format!(
        "{base}/db/query?q={}&level={}",
        urlencode(sql),
        urlencode(level)
    );
    let r = http_request_as("GET", &url, Some(creds), None)?;
    first_values(&ok_json("query", (r.status, r.body))?)?
        .iter()
        .map(|row| {
            row.first()
                .and_then(Value::as_i64)
                .ok_or_else(|| format!("not an integer row: {row:?}"))
        })
        .collect()
}

impl Node {
    /// `/status` as `creds`.
    pub fn status_as(&self, creds: Creds<'_>) -> Result<Value, String> {
        let r = http_request_as("GET", &self.url("/status"), Some(creds), None)?;
        ok_json("status", (r.status, r.body))
    }

    /// Number of members listed by `/nodes`, asked as `creds`.
    pub fn member_count_as(&self, creds: Creds<'_>) -> Result<usize, String> {
        let r = http_request_as("GET", &self.url("/nodes"), Some(creds), None)?;
        match ok_json("nodes", (r.status, r.body))? {
            Value::Array(a) => Ok(a.len()),
            Value::Object(o) => match o.get("nodes") {
                Some(Value::Array(a)) => Ok(a.len()),
                _ => Ok(o.len()),
            },
            v => Err(format!("unexpected /nodes body: {v}")),
        }
    }
}

impl Cluster {
    /// [`Cluster::start`] for nodes started with `--auth`: `/status` and `/nodes` are asked as
    /// `creds` (a user with the `status` permission). `/readyz` must be open to everyone (the
    /// `*` user needs `ready`).
    pub fn start_as(n: usize, extra_args: &[&str], creds: Creds<'_>) -> Cluster {
        Cluster::start_with(n, extra_args, Some(creds))
    }

    /// [`Cluster::leader_index`] asking `/status` as `creds`.
    pub fn leader_index_as(&self, creds: Creds<'_>) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.is_started()
                && n.status_as(creds)
                    .map(|s| s["store"]["raft"]["state"] == "Leader")
                    .unwrap_or(false)
        })
    }

    /// `SELECT COUNT(*)` with `level=none` (local read) as `creds`.
    pub fn try_count_rows_as(
        &self,
        node: usize,
        creds: Creds<'_>,
        table: &str,
    ) -> Result<i64, String> {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        query_i64s_as(&self.nodes[node].base_url(), creds, &sql, "none").and_then(|v| {
            v.first()
                .copied()
                .ok_or_else(|| "no COUNT(*) row".to_owned())
        })
    }
}

// ---------------------------------------------------------------------------
// Binary bodies (backup and load)
// ---------------------------------------------------------------------------

/// A client that never follows redirects, so a `301` can be inspected.
fn raw_client() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("build HTTP client")
    })
}

/// A response with its raw body.
pub struct RawResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GET `url` without following redirects; the body as bytes.
pub fn http_get_raw(url: &str) -> Result<RawResponse, String> {
    let resp = raw_client()
        .get(url)
        .send()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .bytes()
        .map_err(|e| format!("GET {url}: reading body: {e}"))?
        .to_vec();
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

/// POST `body` (bytes) to `url` with `content_type`, without following redirects.
pub fn http_post_raw(url: &str, content_type: &str, body: Vec<u8>) -> Result<RawResponse, String> {
    let resp = raw_client()
        .post(url)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .bytes()
        .map_err(|e| format!("POST {url}: reading body: {e}"))?
        .to_vec();
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

// ---------------------------------------------------------------------------
// Environment of node processes (e.g. AWS_* for an S3 backup destination)
// ---------------------------------------------------------------------------

impl Node {
    /// Extra environment variables for the process, from the next `start` on.
    pub fn set_envs(&mut self, envs: &[(String, String)]) {
        self.envs = envs.to_vec();
    }
}

impl Cluster {
    /// [`Cluster::start`] with extra environment variables for every node's process.
    pub fn start_with_envs(n: usize, extra_args: &[&str], envs: &[(String, String)]) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("raftlite-it-")
            .tempdir()
            .expect("create temp dir");
        let nodes = (1..=n as u64)
            .map(|id| {
                let mut node = Node::new(id, tmp.path(), extra_args);
                node.set_envs(envs);
                node
            })
            .collect();
        let mut c = Cluster { nodes, tmp };
        c.nodes[0].start(None);
        c.nodes[0].wait_ready(Duration::from_secs(30));
        let join_url = c.nodes[0].base_url();
        for i in 1..n {
            c.nodes[i].start(Some(&join_url));
            c.nodes[i].wait_ready(Duration::from_secs(30));
            let want = i + 1;
            wait_for(
                || {
                    let members = c.nodes[c.leader_index()?].member_count();
                    (members.ok()? >= want).then_some(())
                },
                Duration::from_secs(30),
                &format!("leader's /nodes to list {want} members"),
            );
        }
        c
    }
}

/// Polls node `idx` (level=none) until every id in `want` is in `sql`'s
/// result; panics listing some missing ids after `timeout`.
pub fn wait_ids_present(c: &Cluster, idx: usize, sql: &str, want: &[i64], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let result = query_i64s(&c.nodes[idx].base_url(), sql, "none");
        let missing: Vec<i64> = match &result {
            Ok(ids) => {
                let have: std::collections::HashSet<i64> = ids.iter().copied().collect();
                want.iter()
                    .copied()
                    .filter(|id| !have.contains(id))
                    .collect()
            }
            Err(_) => want.to_vec(),
        };
        if missing.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "node {}: {} of {} ids still missing after {timeout:?} (first: {:?}; last query: {:?})",
                c.nodes[idx].id,
                missing.len(),
                want.len(),
                &missing[..missing.len().min(20)],
                result.map(|v| v.len())
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends a signal (`STOP`, `CONT`) to a node's process.
pub fn signal(node: &Node, name: &str) {
    let pid = node.pid().expect("node is running");
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A node paused with SIGSTOP, resumed (SIGCONT) however the test ends.
pub struct Paused<'a>(&'a Node);

impl<'a> Paused<'a> {
    pub fn new(node: &'a Node) -> Paused<'a> {
        signal(node, "STOP");
        Paused(node)
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}
