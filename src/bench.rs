//! `raftlite bench`: measured throughput figures anyone can rerun.
//!
//! One run measures plain SQLite (the ceiling: one fsync'd single-row transaction at a time) and
//! then real `raftlite serve` clusters on loopback, started from this very binary, under 1..N
//! concurrent HTTP clients. Only acknowledged inserts count (HTTP 200 and no `error`), and after
//! every measurement a strong `COUNT(*)` checks that no acknowledged insert is missing.
//!
//! With `--backup-db-mib N` it measures backups instead (see [`run_backup_bench`]): the time and
//! memory of a backup of an N MiB database beside `sqlite3 .backup` + `zstd`, and the inserts/s
//! of 16 clients while one runs. With `--restore-db-mib N` it measures a cluster restore from
//! such a backup (see [`run_restore_bench`]) beside `zstd -d` + `cp`. With
//! `--backup-wal-db-mib [N]` it measures how far the WAL grows while a backup of an N MiB
//! database runs under 16 writers, and what the backup costs the writes (see
//! [`run_backup_wal_bench`]).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use crate::config::BenchArgs;

/// Every wait (node ready, membership, a request) gives up after this long.
const DEADLINE: Duration = Duration::from_secs(30);
/// Run before each measurement and not counted: fills connection pools and caches.
const WARMUP: Duration = Duration::from_secs(1);
/// The inserted value: 16 characters, the same for every row, so only the write path is measured.
const VALUE: &str = "raftlite-bench-v";
const INSERT: &str = "INSERT INTO bench(v) VALUES(?)";
const CREATE: &str = "CREATE TABLE bench (id INTEGER PRIMARY KEY, v TEXT)";

/// One measured configuration: a line of the table.
struct Row {
    cluster: String,
    clients: usize,
    stats: Stats,
    /// `SELECT COUNT(*)` after the run and the inserts acknowledged so far (warm-up included);
    /// `None` for the SQLite baseline, which has nothing to verify.
    check: Option<(u64, u64)>,
}

/// What one measurement window saw.
#[derive(Default)]
struct Stats {
    acked: u64,
    failed: u64,
    latencies: Vec<Duration>,
    window: Duration,
    /// How the failures looked (`HTTP 503`, `SQL error: ...`), with counts, for the report.
    failures: BTreeMap<String, u64>,
}

impl Stats {
    fn per_sec(&self) -> f64 {
        self.acked as f64 / self.window.as_secs_f64()
    }

    /// Nearest-rank percentile in milliseconds (`p` in 0..=1); `None` without samples.
    fn percentile_ms(&self, p: f64) -> Option<f64> {
        let n = self.latencies.len();
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n.max(1));
        self.latencies.get(rank - 1).map(|d| d.as_secs_f64() * 1e3)
    }

    fn merge(&mut self, other: Stats) {
        self.acked += other.acked;
        self.failed += other.failed;
        self.latencies.extend(other.latencies);
        for (k, v) in other.failures {
            *self.failures.entry(k).or_default() += v;
        }
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match (
        args.backup_db_mib,
        args.restore_db_mib,
        args.backup_wal_db_mib,
    ) {
        (Some(mib), None, None) => return run_backup_bench(&args, mib).await,
        (None, Some(mib), None) => return run_restore_bench(&args, mib).await,
        (None, None, Some(mib)) => return run_backup_wal_bench(&args, mib).await,
        (None, None, None) => {}
        _ => bail!("give one of --backup-db-mib, --restore-db-mib and --backup-wal-db-mib"),
    }
    if args.duration_secs == 0 || args.clients.contains(&0) || args.nodes.contains(&0) {
        bail!("--duration-secs, --clients and --nodes must all be at least 1");
    }
    let work = WorkDir::create(args.work_dir.clone())?;
    let duration = Duration::from_secs(args.duration_secs);
    // Dropping the measurement future on Ctrl-C drops its guards, so nodes are killed then too.
    let rows = tokio::select! {
        rows = measure_all(&args, &work.path, duration) => rows?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    print_report(&args, &rows)?;
    // The figures are printed either way, but a run that lost acknowledged writes must not pass.
    match rows
        .iter()
        .find(|r| r.check.is_some_and(|(count, acked)| count < acked))
    {
        Some(r) => bail!(
            "{} with {} clients lost acknowledged inserts",
            r.cluster,
            r.clients
        ),
        None => Ok(()),
    }
}

async fn measure_all(
    args: &BenchArgs,
    work: &Path,
    duration: Duration,
) -> anyhow::Result<Vec<Row>> {
    eprintln!(
        "bench: sqlite baseline for {duration:?} (work dir {})",
        work.display()
    );
    let db = work.join("baseline.sqlite");
    let stats = tokio::task::spawn_blocking(move || sqlite_baseline(&db, duration))
        .await
        .context("the sqlite baseline thread failed")??;
    let mut rows = vec![Row {
        cluster: "sqlite baseline".into(),
        clients: 1,
        stats,
        check: None,
    }];

    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(max_clients)
        .timeout(DEADLINE)
        // A proxy from the environment would measure the proxy, not raftlite.
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")?;
    for &size in &args.nodes {
        let name = format!("{size}-node");
        eprintln!("bench: starting a {name} cluster");
        let mut cluster = Cluster {
            dir: work.join(&name),
            nodes: Vec::new(),
            extra_args: Vec::new(),
        };
        let result = measure_cluster(&mut cluster, &http, size, &args.clients, duration).await;
        match result {
            Ok(stats) => rows.extend(stats.into_iter().map(|(clients, stats, check)| Row {
                cluster: name.clone(),
                clients,
                stats,
                check: Some(check),
            })),
            Err(e) => {
                cluster.print_log_tails();
                return Err(e.context(format!("{name} cluster")));
            }
        }
    } // `cluster` is dropped here: its nodes are killed before the next one starts.
    Ok(rows)
}

/// Plain SQLite as durable as it gets: WAL, `synchronous=FULL`, one autocommit INSERT at a time.
fn sqlite_baseline(path: &Path, duration: Duration) -> anyhow::Result<Stats> {
    let conn = rusqlite::Connection::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("{} refused WAL mode (got {mode})", path.display());
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute(CREATE, [])?;
    let mut insert = conn.prepare(INSERT)?;
    let start = Instant::now();
    let (measure_from, end) = (start + WARMUP, start + WARMUP + duration);
    let mut stats = Stats {
        window: duration,
        ..Stats::default()
    };
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        insert.execute([VALUE])?;
        let t1 = Instant::now();
        if t0 >= measure_from && t1 <= end {
            stats.acked += 1;
            stats.latencies.push(t1 - t0);
        }
    }
    stats.latencies.sort_unstable();
    Ok(stats)
}

/// Starts the cluster, creates the table and measures every client count in turn.
async fn measure_cluster(
    cluster: &mut Cluster,
    http: &reqwest::Client,
    size: usize,
    clients: &[usize],
    duration: Duration,
) -> anyhow::Result<Vec<(usize, Stats, (u64, u64))>> {
    let leader = cluster.start(http, size).await?;
    let created = post(http, &format!("{leader}/db/execute"), &json!([CREATE])).await?;
    if let Some(err) = result_error(&created) {
        bail!("CREATE TABLE failed: {err}");
    }
    let url = format!("{leader}/db/execute");
    let body = json!([[INSERT, VALUE]]).to_string();
    let mut acked_total = 0;
    let mut out = Vec::new();
    for &n in clients {
        eprintln!("bench: {size}-node, {n} clients for {duration:?}");
        let start = Instant::now();
        let (measure_from, end) = (start + WARMUP, start + WARMUP + duration);
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                tokio::spawn(client_loop(
                    http.clone(),
                    url.clone(),
                    body.clone(),
                    measure_from,
                    end,
                ))
            })
            .collect();
        let mut stats = Stats {
            window: duration,
            ..Stats::default()
        };
        for task in tasks {
            let (measured, acked) = task.await.context("a client task failed")?;
            stats.merge(measured);
            acked_total += acked;
        }
        stats.latencies.sort_unstable();
        for (kind, count) in &stats.failures {
            eprintln!("bench: {size}-node, {n} clients: {count} x {kind}");
        }
        let count = count_rows(http, &leader).await?;
        out.push((n, stats, (count, acked_total)));
    }
    Ok(out)
}

/// One client: inserts back to back until `end`. Returns what completed inside the measurement
/// window, and how many inserts were acknowledged at any time (for the `COUNT(*)` check).
async fn client_loop(
    http: reqwest::Client,
    url: String,
    body: String,
    measure_from: Instant,
    end: Instant,
) -> (Stats, u64) {
    let mut stats = Stats::default();
    let mut acked_total = 0;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let outcome = insert_once(&http, &url, body.clone()).await;
        let t1 = Instant::now();
        let counted = t0 >= measure_from && t1 <= end;
        match outcome {
            Ok(()) => {
                acked_total += 1;
                if counted {
                    stats.acked += 1;
                    stats.latencies.push(t1 - t0);
                }
            }
            Err(kind) => {
                if counted {
                    stats.failed += 1;
                    *stats.failures.entry(kind).or_default() += 1;
                }
                // Don't spin against a node that is refusing (e.g. 503 during an election).
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    (stats, acked_total)
}

/// `Ok` only for an acknowledged insert; otherwise a short description of the failure.
async fn insert_once(http: &reqwest::Client, url: &str, body: String) -> Result<(), String> {
    let resp = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request error: {e}"))?;
    let status = resp.status();
    let doc: Value = resp
        .json()
        .await
        .map_err(|e| format!("HTTP {status}, unreadable body: {e}"))?;
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    match result_error(&doc) {
        Some(err) => Err(format!("error in response: {err}")),
        None => Ok(()),
    }
}

/// The first `error` in an rqlite response, at the top level or in a statement's result; a
/// response without a `results` array counts as an error too.
fn result_error(doc: &Value) -> Option<String> {
    if let Some(err) = doc.get("error") {
        return Some(err.to_string());
    }
    let Some(results) = doc.get("results").and_then(Value::as_array) else {
        return Some(format!("no results in {doc}"));
    };
    results
        .iter()
        .find_map(|r| r.get("error").map(Value::to_string))
}

/// `SELECT COUNT(*) FROM bench` at level `strong`, so it reflects everything committed.
async fn count_rows(http: &reqwest::Client, leader: &str) -> anyhow::Result<u64> {
    let url = format!("{leader}/db/query?level=strong");
    let doc = post(http, &url, &json!(["SELECT COUNT(*) FROM bench"])).await?;
    if let Some(err) = result_error(&doc) {
        bail!("SELECT COUNT(*) failed: {err}");
    }
    doc.pointer("/results/0/values/0/0")
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("SELECT COUNT(*) returned no count: {doc}"))
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    send_json(http.post(url).json(body))
        .await
        .with_context(|| format!("POST {url}"))
}

async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    send_json(http.get(url))
        .await
        .with_context(|| format!("GET {url}"))
}

/// Sends a request and returns its JSON body; any status but 2xx is an error quoting the body.
async fn send_json(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("HTTP {status}: {}", text.trim());
    }
    serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))
}

/// A node process, killed when its [`Cluster`] is dropped.
struct Node {
    id: u64,
    url: String,
    log: PathBuf,
    child: Child,
    http_port: u16,
    raft_port: u16,
    join: Option<String>,
}

/// The nodes of one cluster under `dir` (`n<ID>/` data dirs and `node-<ID>.log` files). Dropping
/// it kills every node, whatever path led there.
struct Cluster {
    dir: PathBuf,
    nodes: Vec<Node>,
    /// Extra `serve` flags given to every node started (or restarted) from now on.
    extra_args: Vec<String>,
}

impl Cluster {
    /// Starts `size` nodes and returns the leader's URL once it lists all of them as voters.
    async fn start(&mut self, http: &reqwest::Client, size: usize) -> anyhow::Result<String> {
        std::fs::create_dir(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let ports = free_ports(2 * size)?;
        for (i, pair) in ports.chunks(2).enumerate() {
            let join = self.nodes.first().map(|n| n.url.clone());
            self.spawn(i as u64 + 1, pair[0], pair[1], join)?;
            // Node 1 must have bootstrapped before the others ask it to let them join.
            if i == 0 {
                self.wait_ready(http, 0).await?;
            }
        }
        for i in 1..size {
            self.wait_ready(http, i).await?;
        }
        let first = format!("http://127.0.0.1:{}", ports[0]);
        let what = format!("the leader to list all {size} nodes as voters in /nodes?ver=2");
        self.wait_for(&what, || leader_with_voters(http, &first, size))
            .await
    }

    fn spawn(
        &mut self,
        id: u64,
        http_port: u16,
        raft_port: u16,
        join: Option<String>,
    ) -> anyhow::Result<()> {
        let log_path = self.dir.join(format!("node-{id}.log"));
        let child = self.launch(id, http_port, raft_port, join.as_deref(), &log_path)?;
        self.nodes.push(Node {
            id,
            url: format!("http://127.0.0.1:{http_port}"),
            log: log_path,
            child,
            http_port,
            raft_port,
            join,
        });
        Ok(())
    }

    /// Starts `raftlite serve` for node `id`, appending its output to `log_path`.
    fn launch(
        &self,
        id: u64,
        http_port: u16,
        raft_port: u16,
        join: Option<&str>,
        log_path: &Path,
    ) -> anyhow::Result<Child> {
        let exe = std::env::current_exe().context("cannot locate the raftlite binary")?;
        // Appending: a restarted node's log follows its first run's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .args(["--node-id", &id.to_string()])
            .arg("--data-dir")
            .arg(self.dir.join(format!("n{id}")))
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args(["--raft-addr", &format!("127.0.0.1:{raft_port}")])
            .args(&self.extra_args);
        if let Some(url) = join {
            cmd.args(["--join", url]);
        }
        clean_env(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start node {id}"))
    }

    /// Kills the node at `index` and starts it again, with the same data dir and ports and the
    /// current `extra_args`; returns once it answers `/readyz`.
    async fn restart(&mut self, http: &reqwest::Client, index: usize) -> anyhow::Result<()> {
        let Some(node) = self.nodes.get_mut(index) else {
            bail!("no node at position {index}");
        };
        let _ = node.child.kill();
        node.child
            .wait()
            .with_context(|| format!("cannot reap node {}", node.id))?;
        let (id, http_port, raft_port) = (node.id, node.http_port, node.raft_port);
        let (join, log) = (node.join.clone(), node.log.clone());
        let child = self.launch(id, http_port, raft_port, join.as_deref(), &log)?;
        if let Some(node) = self.nodes.get_mut(index) {
            node.child = child;
        }
        self.wait_ready(http, index).await
    }

    /// The process id of the node at `index`.
    fn pid(&self, index: usize) -> anyhow::Result<u32> {
        self.nodes
            .get(index)
            .map(|n| n.child.id())
            .ok_or_else(|| anyhow!("no node at position {index}"))
    }

    async fn wait_ready(&mut self, http: &reqwest::Client, index: usize) -> anyhow::Result<()> {
        let (id, url) = match self.nodes.get(index) {
            Some(node) => (node.id, format!("{}/readyz", node.url)),
            None => bail!("no node at position {index}"),
        };
        let what = format!("node {id} to answer 200 on {url}");
        self.wait_for(&what, || async {
            let resp = http.get(&url).send().await.map_err(|e| e.to_string())?;
            resp.error_for_status().map(drop).map_err(|e| e.to_string())
        })
        .await
    }

    /// Polls `check` until it succeeds, failing early if a node exits and after [`DEADLINE`].
    async fn wait_for<T, F, Fut>(&mut self, what: &str, mut check: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let why = match check().await {
                Ok(v) => return Ok(v),
                Err(why) => why,
            };
            for node in &mut self.nodes {
                if let Ok(Some(status)) = node.child.try_wait() {
                    bail!(
                        "node {} exited ({status}) while waiting for {what}",
                        node.id
                    );
                }
            }
            if Instant::now() >= deadline {
                bail!("timed out after {DEADLINE:?} waiting for {what} (last: {why})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn print_log_tails(&self) {
        for node in &self.nodes {
            let text = std::fs::read(&node.log).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- last lines of {} ---", node.log.display());
            for line in &lines[lines.len().saturating_sub(20)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// RAFTLITE_* settings from the caller's environment would make the figures irreproducible; the
/// logs go to files that are read, not to a terminal: no colour escapes.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RAFTLITE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1");
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}

/// Asks `node` who leads, then asks the leader whether every node 1..=size is a voter. Returns
/// the leader's URL.
async fn leader_with_voters(
    http: &reqwest::Client,
    node: &str,
    size: usize,
) -> Result<String, String> {
    let doc = get_json(http, &format!("{node}/leader"))
        .await
        .map_err(|e| format!("{e:#}"))?;
    let leader = doc
        .pointer("/api_addr")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no leader in {doc}"))?
        .trim_end_matches('/')
        .to_owned();
    let doc = get_json(http, &format!("{leader}/nodes?ver=2"))
        .await
        .map_err(|e| format!("{e:#}"))?;
    let nodes = doc
        .get("nodes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let voter = |id: usize| {
        nodes.iter().any(|n| {
            n.get("id").and_then(Value::as_str) == Some(id.to_string().as_str())
                && n.get("voter").and_then(Value::as_bool) == Some(true)
        })
    };
    match (1..=size).find(|&id| !voter(id)) {
        None => Ok(leader),
        Some(id) => Err(format!("node {id} is not a voter yet: {doc}")),
    }
}

/// Distinct free loopback ports: all listeners are held until every port is chosen.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot allocate a loopback port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// The benchmark's files; a directory we created ourselves is removed again on drop.
struct WorkDir {
    path: PathBuf,
    remove: bool,
}

impl WorkDir {
    fn create(given: Option<PathBuf>) -> anyhow::Result<Self> {
        if let Some(path) = given {
            std::fs::create_dir_all(&path)
                .with_context(|| format!("cannot create --work-dir {}", path.display()))?;
            // Leftovers (an old bench table, old node data) would distort or break the run.
            if std::fs::read_dir(&path)?.next().is_some() {
                bail!(
                    "--work-dir {} is not empty; give a new or empty directory",
                    path.display()
                );
            }
            return Ok(WorkDir {
                path,
                remove: false,
            });
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("raftlite-bench-{}-{nanos}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(WorkDir { path, remove: true })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn print_report(args: &BenchArgs, rows: &[Row]) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let version = env!("CARGO_PKG_VERSION");
    let baseline = rows.first().map_or(0.0, |r| r.stats.per_sec());
    let ratio = |r: &Row| r.stats.per_sec() / baseline.max(f64::MIN_POSITIVE);
    let round = |x: f64| (x * 100.0).round() / 100.0;
    if args.json {
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "cluster": r.cluster,
                    "clients": r.clients,
                    "inserts_per_sec": round(r.stats.per_sec()),
                    "ratio_vs_baseline": round(ratio(r)),
                    "p50_ms": r.stats.percentile_ms(0.50).map(round),
                    "p99_ms": r.stats.percentile_ms(0.99).map(round),
                    "acknowledged": r.stats.acked,
                    "failed": r.stats.failed,
                    "failures": r.stats.failures,
                    "count_after": r.check.map(|c| c.0),
                    "acknowledged_total": r.check.map(|c| c.1),
                })
            })
            .collect();
        let doc = json!({
            "raftlite_version": version,
            "cores": cores,
            "duration_secs": args.duration_secs,
            "warmup_secs": WARMUP.as_secs(),
            "rows": rows,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "raftlite {version} bench, {cores} cores: acknowledged single-row INSERTs, {} s per row after {} s warm-up",
        args.duration_secs,
        WARMUP.as_secs()
    );
    println!(
        "{:<16} {:>7} {:>10} {:>9} {:>8} {:>8} {:>7}  COUNT(*) >= acked",
        "cluster", "clients", "inserts/s", "vs sqlite", "p50 ms", "p99 ms", "failed"
    );
    let ms = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.2}"));
    for r in rows {
        let check = match r.check {
            None => String::new(),
            Some((count, acked)) if count >= acked => format!("ok ({count} >= {acked})"),
            Some((count, acked)) => format!("LOST ({count} < {acked})"),
        };
        println!(
            "{:<16} {:>7} {:>10.1} {:>8.2}x {:>8} {:>8} {:>7}  {check}",
            r.cluster,
            r.clients,
            r.stats.per_sec(),
            ratio(r),
            ms(r.stats.percentile_ms(0.50)),
            ms(r.stats.percentile_ms(0.99)),
            r.stats.failed,
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// `raftlite bench --backup-db-mib N`: backup time, memory and the writes' slowdown (issue 4)
// ---------------------------------------------------------------------------------------------
//
// One run, one single-node cluster (started from this binary with `--backup-to file://...`):
//
// 1. setup, not measured: the database is filled to N MiB through `POST /db/execute` with
//    batched rows of text and blobs that are half random bytes, half words (zstd has real work
//    and gets about 1.5x, not 100x), then copied with `GET /db/backup`;
// 2. the shell baseline on that copy: `sqlite3 copy ".backup tmp"` then `zstd -1 -T2 tmp`;
// 3. raftlite's backup at zstd level 1 through `POST /backups` (or, where the server has no such
//    endpoint yet, `raftlite backup create` as a child process), unencrypted, then after a
//    restart with `--backup-recipient` encrypted to a fresh age X25519 key: wall time and the
//    peak RSS of the process doing the work;
// 4. single-row inserts/s of 16 clients without a backup, then while one runs.

/// Concurrent single-row writers in the throughput windows.
const BACKUP_BENCH_CLIENTS: usize = 16;
/// zstd level of every backup measured here, and of the shell baseline (`zstd -1`).
const BACKUP_LEVEL: i32 = 1;
/// The filler table: one row is [`FILL_NOTE_BYTES`] of text and [`FILL_BLOB_BYTES`] of blob.
const FILL_CREATE: &str = "CREATE TABLE filler (id INTEGER PRIMARY KEY, note TEXT, data BLOB)";
const FILL_INSERT: &str = "INSERT INTO filler(note, data) VALUES(?, ?)";
const FILL_BLOB_BYTES: usize = 16 * 1024;
const FILL_NOTE_BYTES: usize = 1024;
/// Rows per `POST /db/execute` while filling (about 2.2 MB of JSON: blobs travel as hex).
const FILL_ROWS_PER_REQUEST: usize = 64;
/// Fill requests in flight at once.
const FILL_LOADERS: usize = 2;
/// Blobs alternate random and word chunks of this size.
const FILL_CHUNK: usize = 1024;
/// `--snapshot-threshold` of the node: more log entries than the run writes.
const NO_RAFT_SNAPSHOTS: u64 = 10_000_000;
/// How often child processes and the server are sampled (exit, `/proc/PID/status`).
const POLL: Duration = Duration::from_millis(5);
/// The issue's targets.
const TARGET_RSS_MIB: f64 = 200.0;
const TARGET_WRITE_RATIO: f64 = 0.70;
const WORDS: &[&str] = &[
    "raft",
    "log",
    "entry",
    "term",
    "leader",
    "follower",
    "vote",
    "commit",
    "apply",
    "snapshot",
    "backup",
    "restore",
    "timeline",
    "index",
    "page",
    "table",
    "row",
    "blob",
    "text",
    "value",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "on",
    "with",
    "as",
    "cluster",
    "node",
    "write",
    "read",
    "query",
    "insert",
    "update",
    "delete",
    "select",
    "from",
    "where",
    "order",
    "group",
    "limit",
    "checkpoint",
    "journal",
    "wal",
    "fsync",
    "durable",
    "replica",
    "quorum",
    "election",
    "heartbeat",
    "append",
    "truncate",
    "purge",
    "install",
    "verify",
    "manifest",
    "object",
    "store",
    "bucket",
];

/// How a backup was taken: the brief's preferred path, or the fallback when the server has no
/// `POST /backups` (404).
#[derive(Clone, Debug)]
enum BackupPath {
    Endpoint,
    Cli { why: String },
}

impl BackupPath {
    fn describe(&self) -> String {
        match self {
            BackupPath::Endpoint => "POST /backups (the server takes and uploads it)".into(),
            BackupPath::Cli { why } => format!(
                "`raftlite backup create` as a child process (POST /backups unavailable: {why})"
            ),
        }
    }
}

/// `/proc/PID/status` figures, in KiB.
#[derive(Clone, Copy, Debug, Default)]
struct ProcMem {
    rss_kib: u64,
    hwm_kib: u64,
}

/// Reads VmRSS and VmHWM of `pid`; `None` once it has exited (or off Linux).
fn proc_mem(pid: u32) -> Option<ProcMem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
    };
    Some(ProcMem {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// Bytes a process sent to storage and fetched from it (`write_bytes` and `read_bytes` of
/// `/proc/PID/io`: direct writes, and page-cache pages it dirtied, whether or not flushed yet).
#[derive(Clone, Copy, Debug)]
struct DiskIo {
    written: u64,
    read: u64,
}

impl DiskIo {
    fn since(self, before: DiskIo) -> DiskIo {
        DiskIo {
            written: self.written.saturating_sub(before.written),
            read: self.read.saturating_sub(before.read),
        }
    }
}

fn proc_io(pid: u32) -> Option<DiskIo> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().parse::<u64>().ok())
    };
    Some(DiskIo {
        written: field("write_bytes:")?,
        read: field("read_bytes:")?,
    })
}

/// Resets `pid`'s VmHWM to its current RSS (Linux >= 4.0), so that a later VmHWM is the peak of
/// what happened in between. `false` when not permitted.
fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// The server's memory around one backup.
#[derive(Clone, Copy, Debug, Default)]
struct ServerMem {
    /// VmRSS just before the backup started.
    rss_before_kib: Option<u64>,
    /// VmHWM just before: the peak of the server's whole life so far (the fill included).
    hwm_before_kib: Option<u64>,
    /// The peak during the backup: VmHWM after a reset at the start when `exact`, otherwise the
    /// largest VmRSS sampled every [`POLL`].
    peak_kib: Option<u64>,
    exact: bool,
}

/// Runs `work` while watching the memory of process `pid` (see [`ServerMem`]).
async fn watch_memory<F: std::future::Future>(pid: u32, work: F) -> (F::Output, ServerMem) {
    let before = proc_mem(pid);
    let exact = reset_hwm(pid);
    let mut sampled = before.map(|m| m.rss_kib);
    let mut tick = tokio::time::interval(POLL);
    tokio::pin!(work);
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick() => {
                if let Some(m) = proc_mem(pid) {
                    sampled = sampled.max(Some(m.rss_kib));
                }
            }
        }
    };
    let after = proc_mem(pid);
    let peak = match (exact, after) {
        (true, Some(m)) => Some(m.hwm_kib).max(sampled),
        _ => sampled,
    };
    let mem = ServerMem {
        rss_before_kib: before.map(|m| m.rss_kib),
        hwm_before_kib: before.map(|m| m.hwm_kib),
        peak_kib: peak,
        exact: exact && after.is_some(),
    };
    (out, mem)
}

/// A child process killed (and reaped) when dropped, whatever path leads there.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Both are no-ops for a child already reaped by `try_wait`.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A finished child process: exit status, wall time and the last VmHWM seen before it exited
/// (sampled every [`POLL`], so a peak in its last few milliseconds can be missed).
struct ChildRun {
    status: std::process::ExitStatus,
    wall: Duration,
    peak_kib: Option<u64>,
}

/// Runs `cmd` to completion, killing it after `deadline`.
async fn run_child(mut cmd: Command, what: &str, deadline: Duration) -> anyhow::Result<ChildRun> {
    let start = Instant::now();
    let mut child = ChildGuard(
        cmd.spawn()
            .with_context(|| format!("cannot start {what}"))?,
    );
    let pid = child.0.id();
    let mut peak_kib = None;
    loop {
        if let Some(m) = proc_mem(pid) {
            peak_kib = peak_kib.max(Some(m.hwm_kib));
        }
        if let Some(status) = child
            .0
            .try_wait()
            .with_context(|| format!("waiting for {what}"))?
        {
            return Ok(ChildRun {
                status,
                wall: start.elapsed(),
                peak_kib,
            });
        }
        if start.elapsed() >= deadline {
            bail!("{what} did not finish within {deadline:?}; killed");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `cmd` with stdin closed and stdout/stderr appended to `log`.
fn logged(mut cmd: Command, log: &Path) -> anyhow::Result<Command> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    Ok(cmd)
}

/// A `file://` URL for an absolute path, percent-encoding anything but unreserved characters.
fn file_url(path: &Path) -> anyhow::Result<String> {
    let text = path
        .to_str()
        .ok_or_else(|| anyhow!("{} is not valid UTF-8", path.display()))?;
    let mut url = String::from("file://");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(char::from(b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(url)
}

/// Flushes the machine's dirty pages (`sync`), so that a measured phase does not pay for the
/// writeback of the one before (the 1 GiB copy, the baseline's files). Best effort.
async fn settle_disk() {
    if let Some(sync) = find_tool("sync") {
        let mut cmd = Command::new(sync);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Err(e) = run_child(cmd, "sync", DEADLINE).await {
            eprintln!("bench: sync failed ({e:#}); going on");
        }
    }
}

/// Looks `name` up in `PATH`, then in /usr/bin.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The database built for the run.
struct DbInfo {
    rows: u64,
    /// Text and blob bytes inserted.
    payload_bytes: u64,
    /// Size of the consistent copy taken with `GET /db/backup`: what every backup reads.
    size_bytes: u64,
    build: Duration,
}

/// `sqlite3 .backup` + `zstd -1 -T2` on the copy.
struct Baseline {
    sqlite: ChildRun,
    zstd: ChildRun,
    wall: Duration,
    out_bytes: u64,
}

/// What a backup's manifest says (read from the destination directory).
struct ManifestInfo {
    set: String,
    plain_size: u64,
    stored_size: u64,
    level: Option<i64>,
    encryption: String,
}

/// One measured raftlite backup.
struct BackupRun {
    label: String,
    wall: Duration,
    /// The server around the backup.
    server: ServerMem,
    /// The CLI child's peak when the CLI did the work.
    cli_peak_kib: Option<u64>,
    /// Whether the backup was meant to be encrypted (the node has a recipient).
    encrypted: bool,
    manifest: ManifestInfo,
}

impl BackupRun {
    /// Peak RSS of the process that did the work: the CLI child, else the server.
    fn worker_peak_kib(&self) -> Option<u64> {
        self.cli_peak_kib.or(self.server.peak_kib)
    }
}

/// One throughput window: [`Stats`] of the inserts inside it, and every insert acknowledged
/// at any time (for the `COUNT(*)` check).
struct WriteWindow {
    stats: Stats,
    acked_total: u64,
    /// The backup that ran during the window, if any.
    backup: Option<BackupRun>,
}

struct BackupReport {
    /// `/proc/loadavg` before the node started: other work on the machine skews every figure.
    load_before: Option<String>,
    db_mib: u64,
    db: DbInfo,
    baseline: Result<Baseline, String>,
    path: BackupPath,
    backups: Vec<BackupRun>,
    idle: WriteWindow,
    during: WriteWindow,
    /// `SELECT COUNT(*) FROM bench` and the inserts acknowledged in both windows.
    check: (u64, u64),
    notes: Vec<String>,
}

/// `raftlite bench --backup-db-mib N`; the steps are described at the top of this section.
async fn run_backup_bench(args: &BenchArgs, mib: u64) -> anyhow::Result<()> {
    if mib == 0 || args.duration_secs == 0 {
        bail!("--backup-db-mib and --duration-secs must be at least 1");
    }
    let work = WorkDir::create(args.work_dir.clone())?;
    let root = std::fs::canonicalize(&work.path)
        .with_context(|| format!("cannot resolve {}", work.path.display()))?;
    let window = Duration::from_secs(args.duration_secs);
    // Dropping the measurement future on Ctrl-C drops its guards: nodes and children are killed.
    let report = tokio::select! {
        report = measure_backups(&root, mib, window) => report?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    print_backup_report(args, &report)?;
    let (count, acked) = report.check;
    if count < acked {
        bail!("the node lost acknowledged inserts: COUNT(*) {count} < {acked} acknowledged");
    }
    Ok(())
}

/// Time allowed for one long operation on an `mib` database (fill, copy, one backup): generous
/// (at least 1 MiB/s), but finite.
fn long_deadline(mib: u64) -> Duration {
    DEADLINE + Duration::from_secs(mib)
}

/// What the backup benchmarks share: an HTTP client for the writers, a cluster (not started)
/// that backs up to a `file://` destination under `work` and takes no Raft snapshots, and the
/// backupper that asks it for backups through `POST /backups`.
fn backup_bench_setup(
    work: &Path,
    mib: u64,
) -> anyhow::Result<(reqwest::Client, Cluster, Backupper)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(BACKUP_BENCH_CLIENTS + FILL_LOADERS)
        .timeout(DEADLINE)
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")?;
    let dest_dir = work.join("backups");
    std::fs::create_dir(&dest_dir)
        .with_context(|| format!("cannot create {}", dest_dir.display()))?;
    let dest_url = file_url(&dest_dir)?;
    let cluster = Cluster {
        dir: work.join("cluster"),
        nodes: Vec::new(),
        extra_args: vec![
            // A Raft snapshot (a full copy of the database) landing in one throughput window
            // and not the other would decide the comparison: none are taken during the run.
            "--snapshot-threshold".into(),
            NO_RAFT_SNAPSHOTS.to_string(),
            "--backup-to".into(),
            dest_url.clone(),
            "--backup-level".into(),
            BACKUP_LEVEL.to_string(),
        ],
    };
    let backupper = Backupper {
        path: BackupPath::Endpoint,
        dest_dir,
        dest_url,
        recipient: None,
        deadline: long_deadline(mib),
        logs: work.to_path_buf(),
        runs: 0,
    };
    Ok((http, cluster, backupper))
}

async fn measure_backups(work: &Path, mib: u64, window: Duration) -> anyhow::Result<BackupReport> {
    let (http, mut cluster, mut backupper) = backup_bench_setup(work, mib)?;
    let result = backup_scenario(&mut cluster, &mut backupper, &http, work, mib, window).await;
    if result.is_err() {
        cluster.print_log_tails();
    }
    result
}

async fn backup_scenario(
    cluster: &mut Cluster,
    backupper: &mut Backupper,
    http: &reqwest::Client,
    work: &Path,
    mib: u64,
    window: Duration,
) -> anyhow::Result<BackupReport> {
    let mut notes = Vec::new();
    let load_before = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    eprintln!(
        "bench: starting a 1-node cluster (work dir {})",
        work.display()
    );
    let leader = cluster.start(http, 1).await?;
    for create in [CREATE, FILL_CREATE] {
        let doc = post(http, &format!("{leader}/db/execute"), &json!([create])).await?;
        if let Some(err) = result_error(&doc) {
            bail!("{create} failed: {err}");
        }
    }

    eprintln!("bench: filling the database to {mib} MiB (setup, not measured)");
    let started = Instant::now();
    let (rows, payload_bytes) = fill_database(http, &leader, mib << 20, long_deadline(mib)).await?;
    let build = started.elapsed();
    let baseline_dir = work.join("baseline");
    std::fs::create_dir(&baseline_dir)
        .with_context(|| format!("cannot create {}", baseline_dir.display()))?;
    let copy = baseline_dir.join("copy.sqlite");
    let size_bytes = download_db(http, &leader, &copy, long_deadline(mib)).await?;
    let db = DbInfo {
        rows,
        payload_bytes,
        size_bytes,
        build,
    };
    eprintln!(
        "bench: {rows} rows, {:.1} MiB database, built in {:.1} s",
        mib_of(size_bytes),
        build.as_secs_f64()
    );

    eprintln!("bench: shell baseline: sqlite3 .backup + zstd -1 -T2");
    settle_disk().await;
    let baseline = shell_baseline(&copy, &baseline_dir, long_deadline(mib)).await?;
    match &baseline {
        Ok(b) => eprintln!("bench: shell baseline took {:.2} s", b.wall.as_secs_f64()),
        Err(why) => eprintln!("bench: shell baseline skipped: {why}"),
    }
    // Only the baseline reads the copy; a 1 GiB file less on the disk.
    let _ = std::fs::remove_file(&copy);

    let server = cluster.pid(0)?;
    let mut backups = Vec::new();
    eprintln!("bench: raftlite backup, zstd {BACKUP_LEVEL}, unencrypted");
    settle_disk().await;
    let run = backupper.take(http, &leader, server, "unencrypted").await?;
    eprintln!("bench: took {:.2} s", run.wall.as_secs_f64());
    backups.push(run);

    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    eprintln!("bench: restarting the node with --backup-recipient {recipient}");
    cluster
        .extra_args
        .extend(["--backup-recipient".to_string(), recipient.clone()]);
    backupper.recipient = Some(recipient);
    cluster.restart(http, 0).await?;
    let server = cluster.pid(0)?;
    eprintln!("bench: raftlite backup, zstd {BACKUP_LEVEL}, age X25519");
    settle_disk().await;
    let run = backupper.take(http, &leader, server, "age X25519").await?;
    eprintln!("bench: took {:.2} s", run.wall.as_secs_f64());
    backups.push(run);

    eprintln!("bench: {BACKUP_BENCH_CLIENTS} clients inserting for {window:?}, no backup");
    settle_disk().await;
    let idle = write_window(http, &leader, window, std::future::ready(Ok(None))).await?;
    eprintln!("bench: {:.1} inserts/s", idle.stats.per_sec());
    eprintln!("bench: {BACKUP_BENCH_CLIENTS} clients inserting while a backup (age X25519) runs");
    let during_backup = async {
        backupper
            .take(http, &leader, server, "age X25519, under writes")
            .await
            .map(Some)
    };
    settle_disk().await;
    let during = write_window(http, &leader, window, during_backup).await?;
    eprintln!(
        "bench: {:.1} inserts/s over {:.2} s of overlap",
        during.stats.per_sec(),
        during.stats.window.as_secs_f64()
    );
    let count = count_rows(http, &leader).await?;
    let acked = idle.acked_total + during.acked_total;

    for run in backups.iter().chain(during.backup.as_ref()) {
        if run.manifest.level != Some(i64::from(BACKUP_LEVEL)) {
            notes.push(format!(
                "{}: the manifest says zstd level {:?}, not {BACKUP_LEVEL}",
                run.label, run.manifest.level
            ));
        }
        let expected = if run.encrypted { "age-x25519" } else { "none" };
        if run.manifest.encryption != expected {
            notes.push(format!(
                "{}: the manifest says encryption {:?}, expected {expected:?}",
                run.label, run.manifest.encryption
            ));
        }
        if run.manifest.plain_size < size_bytes {
            notes.push(format!(
                "{}: backed up {} bytes, less than the {size_bytes} of the database",
                run.label, run.manifest.plain_size
            ));
        }
    }
    if let Some(run) = &during.backup {
        if run.wall < window {
            notes.push(format!(
                "the backup under writes finished after {:.2} s, before the {:.0} s window \
                 ended: the during-backup figure covers only that overlap",
                run.wall.as_secs_f64(),
                window.as_secs_f64()
            ));
        }
    }
    Ok(BackupReport {
        load_before,
        db_mib: mib,
        db,
        baseline,
        path: backupper.path.clone(),
        backups,
        idle,
        during,
        check: (count, acked),
        notes,
    })
}

/// Fills the `filler` table until `target` bytes of text and blobs are in: [`FILL_LOADERS`]
/// requests of [`FILL_ROWS_PER_REQUEST`] rows in flight, each request one transaction. Returns
/// the rows and bytes inserted.
async fn fill_database(
    http: &reqwest::Client,
    leader: &str,
    target: u64,
    deadline: Duration,
) -> anyhow::Result<(u64, u64)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let added = Arc::new(AtomicU64::new(0));
    let url = format!("{leader}/db/execute?transaction");
    let mut loaders = tokio::task::JoinSet::new();
    for _ in 0..FILL_LOADERS {
        let (http, url, added) = (http.clone(), url.clone(), added.clone());
        loaders.spawn(async move {
            let mut rows = 0u64;
            while added.load(Ordering::Relaxed) < target {
                let (body, bytes) = fill_request();
                let req = http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
                let doc = send_json(req).await.context("a fill request failed")?;
                if let Some(err) = result_error(&doc) {
                    bail!("a fill request failed: {err}");
                }
                rows += FILL_ROWS_PER_REQUEST as u64;
                added.fetch_add(bytes, Ordering::Relaxed);
            }
            Ok(rows)
        });
    }
    let give_up = Instant::now() + deadline;
    let mut progress = tokio::time::interval(Duration::from_secs(10));
    progress.tick().await;
    let mut rows = 0;
    loop {
        tokio::select! {
            joined = loaders.join_next() => match joined {
                None => break,
                Some(done) => rows += done.context("a fill task failed")??,
            },
            _ = progress.tick() => eprintln!(
                "bench: filled {:.0} of {:.0} MiB",
                mib_of(added.load(Ordering::Relaxed)),
                mib_of(target)
            ),
            _ = tokio::time::sleep_until(give_up.into()) => {
                bail!("filling the database took longer than {deadline:?}")
            }
        }
    }
    Ok((rows, added.load(Ordering::Relaxed)))
}

/// One fill request: a JSON array of [`FILL_ROWS_PER_REQUEST`] inserts, and the bytes of text
/// and blob it carries. Blobs alternate [`FILL_CHUNK`]s of random bytes and words (sent as
/// `x'..'` hex, which the API decodes), notes are words: together about 1.5x compressible.
fn fill_request() -> (String, u64) {
    let mut rng = rand::rng();
    let mut blob = vec![0u8; FILL_BLOB_BYTES];
    let rows: Vec<Value> = (0..FILL_ROWS_PER_REQUEST)
        .map(|_| {
            fill_blob(&mut rng, &mut blob);
            json!([
                FILL_INSERT,
                words(&mut rng, FILL_NOTE_BYTES),
                hex_literal(&blob)
            ])
        })
        .collect();
    let bytes = FILL_ROWS_PER_REQUEST * (FILL_BLOB_BYTES + FILL_NOTE_BYTES);
    (Value::Array(rows).to_string(), bytes as u64)
}

/// Refills `blob` with alternating [`FILL_CHUNK`]s of random bytes and words.
fn fill_blob(rng: &mut impl rand::RngCore, blob: &mut [u8]) {
    for (i, chunk) in blob.chunks_mut(FILL_CHUNK).enumerate() {
        if i % 2 == 0 {
            rng.fill_bytes(chunk);
        } else {
            chunk.copy_from_slice(words(rng, chunk.len()).as_bytes());
        }
    }
}

/// Exactly `len` bytes of random words from [`WORDS`], separated by spaces.
fn words(rng: &mut impl rand::Rng, len: usize) -> String {
    let mut text = String::with_capacity(len + 16);
    while text.len() < len {
        text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        text.push(' ');
    }
    text.truncate(len);
    text
}

/// `x'0aff..'`: how the rqlite API takes a blob parameter in JSON.
fn hex_literal(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len() + 3);
    s.push_str("x'");
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s.push('\'');
    s
}

/// Streams `GET /db/backup` (a consistent copy of the database) into `to`; returns its size.
async fn download_db(
    http: &reqwest::Client,
    leader: &str,
    to: &Path,
    timeout: Duration,
) -> anyhow::Result<u64> {
    use tokio::io::AsyncWriteExt;
    let url = format!("{leader}/db/backup");
    let mut resp = http
        .get(&url)
        .timeout(timeout)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        bail!("GET {url}: HTTP {status}: {}", text.trim());
    }
    let mut file = tokio::fs::File::create(to)
        .await
        .with_context(|| format!("cannot create {}", to.display()))?;
    let mut size = 0u64;
    while let Some(chunk) = resp.chunk().await.with_context(|| format!("GET {url}"))? {
        if size == 0 && !chunk.starts_with(b"SQLite format 3\0") {
            bail!("GET {url} did not return a SQLite file");
        }
        file.write_all(&chunk)
            .await
            .with_context(|| format!("cannot write {}", to.display()))?;
        size += chunk.len() as u64;
    }
    file.flush().await?;
    Ok(size)
}

/// `sqlite3 copy ".backup tmp"` then `zstd -1 -T2 tmp -o out`, timed together. `Ok(Err(why))`
/// when a tool is missing: the run goes on without a baseline.
async fn shell_baseline(
    copy: &Path,
    dir: &Path,
    deadline: Duration,
) -> anyhow::Result<Result<Baseline, String>> {
    let (Some(sqlite3), Some(zstd)) = (find_tool("sqlite3"), find_tool("zstd")) else {
        let missing: Vec<&str> = [
            ("sqlite3", find_tool("sqlite3")),
            ("zstd", find_tool("zstd")),
        ]
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(name, _)| *name)
        .collect();
        return Ok(Err(format!(
            "{} not found in PATH or /usr/bin",
            missing.join(" and ")
        )));
    };
    let (tmp, out) = (dir.join("backup.sqlite"), dir.join("backup.sqlite.zst"));
    let log = dir.join("tools.log");
    let start = Instant::now();
    let mut cmd = Command::new(&sqlite3);
    // Relative names: no quoting of paths inside the dot-command.
    cmd.current_dir(dir)
        .arg(copy)
        .arg(format!(".backup {}", file_name(&tmp)));
    let sqlite = run_child(logged(cmd, &log)?, "sqlite3 .backup", deadline).await?;
    if !sqlite.status.success() {
        bail!(
            "sqlite3 .backup failed ({}): {}",
            sqlite.status,
            log_tail(&log, 10)
        );
    }
    let mut cmd = Command::new(&zstd);
    cmd.current_dir(dir)
        .args(["-1", "-T2", "-q", "-f"])
        .arg(file_name(&tmp))
        .arg("-o")
        .arg(file_name(&out));
    let zstd = run_child(logged(cmd, &log)?, "zstd -1 -T2", deadline).await?;
    let wall = start.elapsed();
    if !zstd.status.success() {
        bail!("zstd failed ({}): {}", zstd.status, log_tail(&log, 10));
    }
    let out_bytes = std::fs::metadata(&out)
        .with_context(|| format!("zstd wrote no {}", out.display()))?
        .len();
    for file in [&tmp, &out] {
        let _ = std::fs::remove_file(file);
    }
    Ok(Ok(Baseline {
        sqlite,
        zstd,
        wall,
        out_bytes,
    }))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Takes backups of the node to `dest_url`, through `POST /backups` while the server has it,
/// through the CLI otherwise, and measures them.
struct Backupper {
    path: BackupPath,
    dest_dir: PathBuf,
    dest_url: String,
    /// For the CLI path: the recipient the server was (re)started with.
    recipient: Option<String>,
    deadline: Duration,
    /// Where CLI logs go.
    logs: PathBuf,
    runs: usize,
}

impl Backupper {
    async fn take(
        &mut self,
        http: &reqwest::Client,
        leader: &str,
        server: u32,
        label: &str,
    ) -> anyhow::Result<BackupRun> {
        let before = manifests(&self.dest_dir)?;
        if let BackupPath::Endpoint = self.path {
            let url = format!("{leader}/backups");
            let post_backup = async {
                let start = Instant::now();
                let resp = http
                    .post(&url)
                    .timeout(self.deadline)
                    .send()
                    .await
                    .with_context(|| format!("POST {url}"))?;
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                if status == reqwest::StatusCode::NOT_FOUND {
                    return Ok(Err(format!("HTTP 404 {}", text.trim())));
                }
                if !status.is_success() {
                    bail!("POST {url}: HTTP {status}: {}", text.trim());
                }
                // The answer comes once the manifest is written; seeing it confirms that.
                let manifest = wait_manifest(&self.dest_dir, &before, DEADLINE).await?;
                Ok(Ok((start.elapsed(), manifest)))
            };
            let (outcome, mem) = watch_memory(server, post_backup).await;
            match outcome? {
                Ok((wall, manifest)) => {
                    return Ok(BackupRun {
                        label: label.into(),
                        wall,
                        server: mem,
                        cli_peak_kib: None,
                        encrypted: self.recipient.is_some(),
                        manifest,
                    })
                }
                Err(why) => {
                    eprintln!("bench: POST /backups is not available ({why}); using the CLI");
                    self.path = BackupPath::Cli { why };
                }
            }
        }
        self.runs += 1;
        let log = self.logs.join(format!("backup-cli-{}.log", self.runs));
        let exe = std::env::current_exe().context("cannot locate the raftlite binary")?;
        let mut cmd = Command::new(exe);
        cmd.args(["backup", "create", "--node", leader, "--to", &self.dest_url])
            .args(["--level", &BACKUP_LEVEL.to_string()]);
        if let Some(r) = &self.recipient {
            cmd.args(["--recipient", r]);
        }
        clean_env(&mut cmd);
        let cmd = logged(cmd, &log)?;
        let (run, mem) = watch_memory(
            server,
            run_child(cmd, "raftlite backup create", self.deadline),
        )
        .await;
        let run = run?;
        if !run.status.success() {
            bail!(
                "raftlite backup create failed ({}):\n{}",
                run.status,
                log_tail(&log, 20)
            );
        }
        let manifest = wait_manifest(&self.dest_dir, &before, DEADLINE).await?;
        Ok(BackupRun {
            label: label.into(),
            wall: run.wall,
            server: mem,
            cli_peak_kib: run.peak_kib,
            encrypted: self.recipient.is_some(),
            manifest,
        })
    }
}

/// Every `manifest.json` under `dir`.
fn manifests(dir: &Path) -> anyhow::Result<std::collections::BTreeSet<PathBuf>> {
    let mut found = std::collections::BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.file_name().is_some_and(|n| n == "manifest.json") {
                found.insert(path);
            }
        }
    }
    Ok(found)
}

/// Waits (up to `deadline`) for a `manifest.json` under `dir` that is not in `before`, and
/// reads it.
async fn wait_manifest(
    dir: &Path,
    before: &std::collections::BTreeSet<PathBuf>,
    deadline: Duration,
) -> anyhow::Result<ManifestInfo> {
    let give_up = Instant::now() + deadline;
    loop {
        let new = manifests(dir)?.into_iter().find(|p| !before.contains(p));
        if let Some(path) = new {
            if let Ok(info) = read_manifest(dir, &path) {
                return Ok(info);
            }
        }
        if Instant::now() >= give_up {
            bail!(
                "no new readable manifest.json appeared under {} within {deadline:?}",
                dir.display()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn read_manifest(dir: &Path, path: &Path) -> anyhow::Result<ManifestInfo> {
    let text = std::fs::read_to_string(path)?;
    let doc: Value = serde_json::from_str(&text)?;
    let size = |key: &str| {
        doc.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("{} has no {key}", path.display()))
    };
    let set = path
        .parent()
        .and_then(|p| p.strip_prefix(dir).ok())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    Ok(ManifestInfo {
        set,
        plain_size: size("plain_size")?,
        stored_size: size("stored_size")?,
        level: doc.pointer("/compression/level").and_then(Value::as_i64),
        encryption: doc
            .pointer("/encryption/scheme")
            .and_then(Value::as_str)
            .unwrap_or("none")
            .to_string(),
    })
}

/// The writers' samples that fall inside `from..until` as throughput and latency figures (the
/// failures are printed), and how many writes were acknowledged in all.
fn window_stats(samples: Vec<Sample>, from: Instant, until: Instant) -> (Stats, u64) {
    let mut stats = Stats {
        window: until.saturating_duration_since(from),
        ..Stats::default()
    };
    let mut acked_total: u64 = 0;
    for s in samples {
        acked_total += u64::from(s.outcome.is_ok());
        if s.start < from || s.end > until {
            continue;
        }
        match s.outcome {
            Ok(()) => {
                stats.acked += 1;
                stats.latencies.push(s.end - s.start);
            }
            Err(kind) => {
                stats.failed += 1;
                *stats.failures.entry(kind).or_default() += 1;
            }
        }
    }
    stats.latencies.sort_unstable();
    for (kind, count) in &stats.failures {
        eprintln!("bench: {count} x {kind}");
    }
    (stats, acked_total)
}

/// A sent insert: when it started and ended, and how it went.
struct Sample {
    start: Instant,
    end: Instant,
    outcome: Result<(), String>,
}

/// [`BACKUP_BENCH_CLIENTS`] clients insert single rows for [`WARMUP`] then `window`. `backup` is
/// started when the warm-up ends; when it yields a run, only the inserts inside the overlap of
/// the window and the backup count (the backup is waited for even past the window).
async fn write_window<F>(
    http: &reqwest::Client,
    leader: &str,
    window: Duration,
    backup: F,
) -> anyhow::Result<WriteWindow>
where
    F: std::future::Future<Output = anyhow::Result<Option<BackupRun>>>,
{
    let url = format!("{leader}/db/execute");
    let body = json!([[INSERT, VALUE]]).to_string();
    let from = Instant::now() + WARMUP;
    let end = from + window;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..BACKUP_BENCH_CLIENTS {
        clients.spawn(timed_client(http.clone(), url.clone(), body.clone(), end));
    }
    tokio::time::sleep_until(from.into()).await;
    let backup = backup.await?;
    let until = match &backup {
        Some(_) => Instant::now().min(end),
        None => end,
    };
    let mut samples = Vec::new();
    while let Some(done) = clients.join_next().await {
        samples.extend(done.context("a client task failed")?);
    }
    let (stats, acked_total) = window_stats(samples, from, until);
    Ok(WriteWindow {
        stats,
        acked_total,
        backup,
    })
}

/// One client: inserts back to back until `end`, recording every attempt.
async fn timed_client(
    http: reqwest::Client,
    url: String,
    body: String,
    end: Instant,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    loop {
        let start = Instant::now();
        if start >= end {
            return samples;
        }
        let outcome = insert_once(&http, &url, body.clone()).await;
        let failed = outcome.is_err();
        samples.push(Sample {
            start,
            end: Instant::now(),
            outcome,
        });
        if failed {
            // Don't spin against a node that is refusing.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn mib_of(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn mib_of_kib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

fn print_backup_report(args: &BenchArgs, r: &BackupReport) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let version = env!("CARGO_PKG_VERSION");
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let baseline_secs = r.baseline.as_ref().ok().map(|b| b.wall.as_secs_f64());
    let vs_shell = |d: Duration| baseline_secs.map(|b| round(d.as_secs_f64() / b.max(1e-9)));
    let write_ratio = r.during.stats.per_sec() / r.idle.stats.per_sec().max(f64::MIN_POSITIVE);
    // The targets, judged on the idle backups (the one under writes is slowed by them).
    let slowest = r.backups.iter().map(|b| b.wall).max().unwrap_or_default();
    let fastest_ok = baseline_secs.map(|b| slowest.as_secs_f64() <= b);
    let peak_rss = r
        .backups
        .iter()
        .chain(r.during.backup.as_ref())
        .filter_map(|b| mib_of_kib(b.worker_peak_kib()))
        .fold(0.0, f64::max);
    let worker = match r.path {
        BackupPath::Endpoint => "server",
        BackupPath::Cli { .. } => "cli",
    };
    let backup_json = |b: &BackupRun| {
        json!({
            "label": b.label,
            "wall_secs": round(b.wall.as_secs_f64()),
            "ratio_vs_shell": vs_shell(b.wall),
            "worker": worker,
            "worker_peak_rss_mib": mib_of_kib(b.worker_peak_kib()).map(round),
            "server_rss_before_mib": mib_of_kib(b.server.rss_before_kib).map(round),
            "server_vmhwm_before_mib": mib_of_kib(b.server.hwm_before_kib).map(round),
            "server_peak_rss_mib": mib_of_kib(b.server.peak_kib).map(round),
            "server_peak_exact": b.server.exact,
            "plain_bytes": b.manifest.plain_size,
            "stored_bytes": b.manifest.stored_size,
            "zstd_level": b.manifest.level,
            "encryption": b.manifest.encryption,
            "set": b.manifest.set,
        })
    };
    let window_json = |w: &WriteWindow| {
        json!({
            "inserts_per_sec": round(w.stats.per_sec()),
            "window_secs": round(w.stats.window.as_secs_f64()),
            "p50_ms": w.stats.percentile_ms(0.50).map(round),
            "p99_ms": w.stats.percentile_ms(0.99).map(round),
            "acknowledged": w.stats.acked,
            "failed": w.stats.failed,
            "failures": w.stats.failures,
        })
    };
    if args.json {
        let baseline = match &r.baseline {
            Ok(b) => json!({
                "wall_secs": round(b.wall.as_secs_f64()),
                "sqlite3_backup_secs": round(b.sqlite.wall.as_secs_f64()),
                "zstd_secs": round(b.zstd.wall.as_secs_f64()),
                "sqlite3_peak_rss_mib": mib_of_kib(b.sqlite.peak_kib).map(round),
                "zstd_peak_rss_mib": mib_of_kib(b.zstd.peak_kib).map(round),
                "stored_bytes": b.out_bytes,
            }),
            Err(why) => json!({ "skipped": why }),
        };
        let mut during = window_json(&r.during);
        if let (Some(obj), Some(b)) = (during.as_object_mut(), &r.during.backup) {
            obj.insert("backup".into(), backup_json(b));
        }
        let doc = json!({
            "raftlite_version": version,
            "cores": cores,
            "load_average_before": r.load_before,
            "database": {
                "requested_mib": r.db_mib,
                "size_bytes": r.db.size_bytes,
                "rows": r.db.rows,
                "payload_bytes": r.db.payload_bytes,
                "build_secs": round(r.db.build.as_secs_f64()),
            },
            "shell_baseline": baseline,
            "backup_path": r.path.describe(),
            "snapshot_threshold": NO_RAFT_SNAPSHOTS,
            "backups": r.backups.iter().map(backup_json).collect::<Vec<_>>(),
            "writes": {
                "clients": BACKUP_BENCH_CLIENTS,
                "warmup_secs": WARMUP.as_secs(),
                "without_backup": window_json(&r.idle),
                "during_backup": during,
                "ratio": round(write_ratio),
            },
            "targets": {
                "backup_time_le_shell": fastest_ok,
                "peak_rss_lt_200_mib": peak_rss < TARGET_RSS_MIB,
                "writes_during_backup_ge_70_percent": write_ratio >= TARGET_WRITE_RATIO,
            },
            "count_check": { "count": r.check.0, "acknowledged": r.check.1 },
            "notes": r.notes,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }

    let opt = |x: Option<f64>, digits: usize| x.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    println!(
        "raftlite {version} backup bench, {cores} cores: {:.1} MiB database ({} rows of {} KiB \
         blob + {} KiB text, half random), built in {:.1} s (setup, not measured)",
        mib_of(r.db.size_bytes),
        r.db.rows,
        FILL_BLOB_BYTES / 1024,
        FILL_NOTE_BYTES / 1024,
        r.db.build.as_secs_f64()
    );
    println!("backups measured through {}", r.path.describe());
    if let Some(load) = &r.load_before {
        println!(
            "load average before the run: {load} (other work on the machine skews the figures)"
        );
    }
    println!(
        "node started with --backup-level {BACKUP_LEVEL} --snapshot-threshold \
         {NO_RAFT_SNAPSHOTS} (no Raft snapshot during the run); `sync` before each measured phase"
    );
    println!();
    println!(
        "{:<36} {:>8} {:>9} {:>13} {:>11}  notes",
        "backup (zstd level 1)", "wall s", "vs shell", "peak RSS MiB", "stored MiB"
    );
    match &r.baseline {
        Ok(b) => println!(
            "{:<36} {:>8.2} {:>8.2}x {:>13} {:>11.1}  sqlite3 .backup {:.2} s ({} MiB peak), \
             zstd {:.2} s ({} MiB peak)",
            "shell: sqlite3 .backup + zstd -T2",
            b.wall.as_secs_f64(),
            1.0,
            opt(mib_of_kib(b.sqlite.peak_kib.max(b.zstd.peak_kib)), 1),
            mib_of(b.out_bytes),
            b.sqlite.wall.as_secs_f64(),
            opt(mib_of_kib(b.sqlite.peak_kib), 1),
            b.zstd.wall.as_secs_f64(),
            opt(mib_of_kib(b.zstd.peak_kib), 1),
        ),
        Err(why) => println!("{:<36} skipped: {why}", "shell: sqlite3 .backup + zstd -T2"),
    }
    for b in r.backups.iter().chain(r.during.backup.as_ref()) {
        let server = format!(
            "server RSS {} MiB before (VmHWM so far {}), peak {}{}",
            opt(mib_of_kib(b.server.rss_before_kib), 1),
            opt(mib_of_kib(b.server.hwm_before_kib), 1),
            opt(mib_of_kib(b.server.peak_kib), 1),
            if b.server.exact { "" } else { " (sampled)" }
        );
        println!(
            "{:<36} {:>8.2} {:>9} {:>13} {:>11.1}  {} RSS; {server}",
            format!("raftlite, {}", b.label),
            b.wall.as_secs_f64(),
            vs_shell(b.wall).map_or("-".to_owned(), |x| format!("{x:.2}x")),
            opt(mib_of_kib(b.worker_peak_kib()), 1),
            mib_of(b.manifest.stored_size),
            if b.cli_peak_kib.is_some() {
                "CLI child"
            } else {
                "server (includes its baseline)"
            },
        );
    }
    println!();
    println!(
        "{:<36} {:>10} {:>8} {:>8} {:>7} {:>9}",
        format!("writes ({BACKUP_BENCH_CLIENTS} clients, 1-row INSERT)"),
        "inserts/s",
        "p50 ms",
        "p99 ms",
        "failed",
        "window s"
    );
    for (name, w) in [
        ("without backup", &r.idle),
        ("during backup (overlap)", &r.during),
    ] {
        println!(
            "{:<36} {:>10.1} {:>8} {:>8} {:>7} {:>9.2}",
            name,
            w.stats.per_sec(),
            opt(w.stats.percentile_ms(0.50), 2),
            opt(w.stats.percentile_ms(0.99), 2),
            w.stats.failed,
            w.stats.window.as_secs_f64()
        );
    }
    println!("{:<36} {:>9.0}%", "during / without", write_ratio * 100.0);
    println!();
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not judged",
    };
    println!("targets from the issue:");
    println!(
        "  raftlite backup time <= shell pipeline: {} (slowest idle backup {:.2} s vs {} s)",
        verdict(fastest_ok),
        slowest.as_secs_f64(),
        opt(baseline_secs, 2)
    );
    println!(
        "  peak RSS < {TARGET_RSS_MIB:.0} MiB: {} (highest {peak_rss:.1} MiB, {})",
        verdict(Some(peak_rss < TARGET_RSS_MIB)),
        match r.path {
            BackupPath::Endpoint => "the server's VmHWM, its baseline included",
            BackupPath::Cli { .. } => "the CLI child's VmHWM",
        }
    );
    println!(
        "  writes during backup >= {:.0}% of without: {} ({:.0}%)",
        TARGET_WRITE_RATIO * 100.0,
        verdict(Some(write_ratio >= TARGET_WRITE_RATIO)),
        write_ratio * 100.0
    );
    let (count, acked) = r.check;
    println!(
        "  COUNT(*) >= acknowledged inserts: {}",
        if count >= acked {
            format!("ok ({count} >= {acked})")
        } else {
            format!("LOST ({count} < {acked})")
        }
    );
    for note in &r.notes {
        println!("note: {note}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// `raftlite bench --backup-wal-db-mib N`: the WAL during a backup under writes (issue 16)
// ---------------------------------------------------------------------------------------------
//
// One single-node cluster (`--backup-to file://...`, zstd 1, no Raft snapshots), filled to N MiB
// as for `--backup-db-mib` (setup, not measured); then [`BACKUP_BENCH_CLIENTS`] clients insert
// single rows for `--duration-secs` without a backup (the baseline), and then again while one
// `POST /backups` runs, as the scheduler would start it, until it answers. Throughout, the size
// of `db.sqlite-wal` is sampled every [`WAL_SAMPLE`]: a backup that keeps checkpoints from
// completing shows as a WAL that grows for as long as the backup lasts.

/// How often the WAL's size is looked at.
const WAL_SAMPLE: Duration = Duration::from_millis(50);

/// One window of inserts with the WAL watched.
struct WalWindow {
    stats: Stats,
    acked_total: u64,
    wal_at_start: u64,
    wal_peak: u64,
    wal_at_end: u64,
    /// The largest size seen in each second of the window, for the report's timeline.
    wal_per_second: Vec<u64>,
}

struct WalReport {
    load_before: Option<String>,
    db_mib: u64,
    rows: u64,
    db_bytes: u64,
    build: Duration,
    baseline: WalWindow,
    during: WalWindow,
    backup: BackupRun,
    /// `SELECT COUNT(*) FROM bench` and the inserts acknowledged in both windows.
    check: (u64, u64),
}

/// `raftlite bench --backup-wal-db-mib N`; the steps are described at the top of this section.
async fn run_backup_wal_bench(args: &BenchArgs, mib: u64) -> anyhow::Result<()> {
    if mib == 0 || args.duration_secs == 0 {
        bail!("--backup-wal-db-mib and --duration-secs must be at least 1");
    }
    let work = WorkDir::create(args.work_dir.clone())?;
    let root = std::fs::canonicalize(&work.path)
        .with_context(|| format!("cannot resolve {}", work.path.display()))?;
    let window = Duration::from_secs(args.duration_secs);
    let report = tokio::select! {
        report = measure_backup_wal(&root, mib, window) => report?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    print_wal_report(args, &report)?;
    let (count, acked) = report.check;
    if count < acked {
        bail!("the node lost acknowledged inserts: COUNT(*) {count} < {acked} acknowledged");
    }
    Ok(())
}

async fn measure_backup_wal(work: &Path, mib: u64, window: Duration) -> anyhow::Result<WalReport> {
    let (http, mut cluster, mut backupper) = backup_bench_setup(work, mib)?;
    let result = backup_wal_scenario(&mut cluster, &mut backupper, &http, mib, window).await;
    if result.is_err() {
        cluster.print_log_tails();
    }
    result
}

async fn backup_wal_scenario(
    cluster: &mut Cluster,
    backupper: &mut Backupper,
    http: &reqwest::Client,
    mib: u64,
    window: Duration,
) -> anyhow::Result<WalReport> {
    let load_before = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    eprintln!(
        "bench: starting a 1-node cluster (work dir {})",
        cluster.dir.display()
    );
    let leader = cluster.start(http, 1).await?;
    for create in [CREATE, FILL_CREATE] {
        let doc = post(http, &format!("{leader}/db/execute"), &json!([create])).await?;
        if let Some(err) = result_error(&doc) {
            bail!("{create} failed: {err}");
        }
    }
    eprintln!("bench: filling the database to {mib} MiB (setup, not measured)");
    let started = Instant::now();
    let (rows, _) = fill_database(http, &leader, mib << 20, long_deadline(mib)).await?;
    let build = started.elapsed();
    let db_path = cluster.dir.join("n1").join("db.sqlite");
    let wal_path = cluster.dir.join("n1").join("db.sqlite-wal");
    let db_bytes = std::fs::metadata(&db_path)
        .with_context(|| format!("cannot stat {}", db_path.display()))?
        .len();
    eprintln!(
        "bench: {rows} rows, {:.1} MiB database, built in {:.1} s",
        mib_of(db_bytes),
        build.as_secs_f64()
    );

    eprintln!("bench: {BACKUP_BENCH_CLIENTS} clients inserting for {window:?}, no backup");
    settle_disk().await;
    let (baseline, ()) = wal_window(http, &leader, &wal_path, async {
        tokio::time::sleep(window).await;
        Ok(())
    })
    .await?;
    eprintln!(
        "bench: {:.1} inserts/s, WAL peak {:.1} MiB",
        baseline.stats.per_sec(),
        mib_of(baseline.wal_peak)
    );

    eprintln!("bench: {BACKUP_BENCH_CLIENTS} clients inserting while POST /backups runs");
    settle_disk().await;
    let server = cluster.pid(0)?;
    let (during, backup) = wal_window(http, &leader, &wal_path, async {
        backupper
            .take(http, &leader, server, "zstd 1, under writes")
            .await
    })
    .await?;
    if let BackupPath::Cli { why } = &backupper.path {
        bail!("POST /backups is not available ({why}); this mode measures the server's backup");
    }
    eprintln!(
        "bench: {:.1} inserts/s over the {:.2} s backup, WAL peak {:.1} MiB",
        during.stats.per_sec(),
        backup.wall.as_secs_f64(),
        mib_of(during.wal_peak)
    );
    let count = count_rows(http, &leader).await?;
    Ok(WalReport {
        load_before,
        db_mib: mib,
        rows,
        db_bytes,
        build,
        check: (count, baseline.acked_total + during.acked_total),
        baseline,
        during,
        backup,
    })
}

/// [`BACKUP_BENCH_CLIENTS`] clients insert single rows for [`WARMUP`], then while `work` runs;
/// only the inserts inside `work` count. The WAL at `wal` is sampled from the warm-up's end
/// until `work` is done.
async fn wal_window<F, T>(
    http: &reqwest::Client,
    leader: &str,
    wal: &Path,
    work: F,
) -> anyhow::Result<(WalWindow, T)>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let url = format!("{leader}/db/execute");
    let body = json!([[INSERT, VALUE]]).to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..BACKUP_BENCH_CLIENTS {
        let (http, url, body, stop) = (http.clone(), url.clone(), body.clone(), stop.clone());
        clients.spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let outcome = insert_once(&http, &url, body.clone()).await;
                let failed = outcome.is_err();
                samples.push(Sample {
                    start,
                    end: Instant::now(),
                    outcome,
                });
                if failed {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            samples
        });
    }
    tokio::time::sleep(WARMUP).await;
    let wal_len = || std::fs::metadata(wal).map_or(0, |m| m.len());
    let from = Instant::now();
    let wal_at_start = wal_len();
    let mut wal_per_second = vec![wal_at_start];
    let mut tick = tokio::time::interval(WAL_SAMPLE);
    tokio::pin!(work);
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick() => {
                let second = from.elapsed().as_secs() as usize;
                if wal_per_second.len() <= second {
                    wal_per_second.resize(second + 1, 0);
                }
                wal_per_second[second] = wal_per_second[second].max(wal_len());
            }
        }
    };
    let until = Instant::now();
    let wal_at_end = wal_len();
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    while let Some(done) = clients.join_next().await {
        samples.extend(done.context("a client task failed")?);
    }
    let out = out?;
    let (stats, acked_total) = window_stats(samples, from, until);
    let wal_peak = wal_per_second
        .iter()
        .copied()
        .chain([wal_at_end])
        .max()
        .unwrap_or(0);
    let window = WalWindow {
        stats,
        acked_total,
        wal_at_start,
        wal_peak,
        wal_at_end,
        wal_per_second,
    };
    Ok((window, out))
}

fn print_wal_report(args: &BenchArgs, r: &WalReport) -> anyhow::Result<()> {
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let ratio = r.during.stats.per_sec() / r.baseline.stats.per_sec().max(f64::MIN_POSITIVE);
    let window_json = |w: &WalWindow| {
        json!({
            "inserts_per_sec": round(w.stats.per_sec()),
            "window_secs": round(w.stats.window.as_secs_f64()),
            "p50_ms": w.stats.percentile_ms(0.50).map(round),
            "p99_ms": w.stats.percentile_ms(0.99).map(round),
            "failed": w.stats.failed,
            "wal_at_start_mib": round(mib_of(w.wal_at_start)),
            "wal_peak_mib": round(mib_of(w.wal_peak)),
            "wal_at_end_mib": round(mib_of(w.wal_at_end)),
            "wal_mib_per_second": w.wal_per_second.iter().map(|b| round(mib_of(*b))).collect::<Vec<_>>(),
        })
    };
    let doc = json!({
        "mode": "backup-wal",
        "version": env!("CARGO_PKG_VERSION"),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "load_before": r.load_before,
        "db_mib": r.db_mib,
        "db_bytes": r.db_bytes,
        "rows": r.rows,
        "build_secs": round(r.build.as_secs_f64()),
        "clients": BACKUP_BENCH_CLIENTS,
        "baseline": window_json(&r.baseline),
        "during_backup": window_json(&r.during),
        "write_ratio": round(ratio),
        "target_write_ratio": TARGET_WRITE_RATIO,
        "backup_secs": round(r.backup.wall.as_secs_f64()),
        "backup_plain_bytes": r.backup.manifest.plain_size,
        "backup_stored_bytes": r.backup.manifest.stored_size,
        "backup_set": r.backup.manifest.set,
        "count": r.check.0,
        "acked": r.check.1,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let per_second = |w: &WalWindow| {
        w.wal_per_second
            .iter()
            .map(|b| format!("{:.0}", mib_of(*b)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "raftlite {} bench --backup-wal-db-mib {}: {} cores, load before {}",
        env!("CARGO_PKG_VERSION"),
        r.db_mib,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        r.load_before.as_deref().unwrap_or("unknown")
    );
    println!(
        "database: {:.1} MiB, {} rows (built in {:.1} s); {BACKUP_BENCH_CLIENTS} clients inserting single rows",
        mib_of(r.db_bytes),
        r.rows,
        r.build.as_secs_f64()
    );
    for (name, w) in [("baseline", &r.baseline), ("during backup", &r.during)] {
        println!(
            "{name:>14}: {:8.1} inserts/s over {:6.2} s (p50 {} ms, p99 {} ms, {} failed); WAL {:.1} -> peak {:.1} -> {:.1} MiB",
            w.stats.per_sec(),
            w.stats.window.as_secs_f64(),
            w.stats.percentile_ms(0.50).map_or("-".into(), |v| format!("{v:.1}")),
            w.stats.percentile_ms(0.99).map_or("-".into(), |v| format!("{v:.1}")),
            w.stats.failed,
            mib_of(w.wal_at_start),
            mib_of(w.wal_peak),
            mib_of(w.wal_at_end),
        );
    }
    println!(
        "backup: POST /backups took {:.2} s, {:.1} MiB plain, {:.1} MiB stored",
        r.backup.wall.as_secs_f64(),
        mib_of(r.backup.manifest.plain_size),
        mib_of(r.backup.manifest.stored_size)
    );
    println!(
        "writes during the backup: {:.2} of the baseline (target >= {TARGET_WRITE_RATIO:.2})",
        ratio
    );
    println!(
        "WAL MiB per second, baseline:      {}",
        per_second(&r.baseline)
    );
    println!(
        "WAL MiB per second, during backup: {}",
        per_second(&r.during)
    );
    println!(
        "check: COUNT(*) {} >= {} acknowledged: {}",
        r.check.0,
        r.check.1,
        if r.check.0 >= r.check.1 {
            "ok"
        } else {
            "LOST WRITES"
        }
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// `raftlite bench --restore-db-mib N`: how long a cluster restore takes, and its memory
// ---------------------------------------------------------------------------------------------
//
// One run:
//
// 1. setup, not measured: an N MiB SQLite file is built locally with the rows of the backup
//    bench (half random bytes, half words: zstd gets about 1.5x), backed up with
//    `raftlite_backup::create_backup` (zstd level 3, the server's default, unencrypted) to a
//    file:// destination, and the file is deleted; the backup is verified as `raftlite backup
//    verify` does it, timed beside `zstd -d` of its object (reported on the setup line); a
//    3-node loopback cluster is started from this binary (`--backup-to off`: no scheduled
//    backup in the middle);
// 2. the floor, timed in the same run: `zstd -d` of the backup object to a file, then `cp` of
//    that file to a second location (no fsync: a lower bound); then the durable floor: that
//    decompressed file copied once per node, the copies in parallel, each followed by `sync`
//    of the copy (the least disk work of any restore that leaves the file durable everywhere);
// 3. the restore as `raftlite restore --from DEST --id ID` does it: the backup streamed
//    (download, decompress, both hashes checked on the way; no local copy) into
//    `POST /db/load?timeline_id=<chosen>` on the leader with the manifest's sha256 in
//    `x-raftlite-expect-sha256`; the clock stops when every node's
//    `/status` shows the chosen timeline and its local `COUNT(*)` the file's rows. Peak RSS of
//    each server process (VmHWM, reset just before) and of this process (the client side).

/// zstd level of the backup restored (the server's default `--backup-level`).
const RESTORE_BACKUP_LEVEL: i32 = 3;
/// Nodes of the restored cluster.
const RESTORE_NODES: usize = 3;
/// Rows per transaction while the source file is built.
const BUILD_ROWS_PER_TX: u64 = 512;

/// The source database and its backup.
struct RestoreSource {
    rows: u64,
    payload_bytes: u64,
    size_bytes: u64,
    build: Duration,
    backup: Duration,
    stored_bytes: u64,
    plain_sha256: String,
    /// The backup's data object on disk (what the floor decompresses).
    object: PathBuf,
    /// `raftlite backup verify` of it, beside `zstd -d` of its object just before.
    verify: Result<VerifyRun, String>,
}

/// A verify of the bench's backup (setup, timed): what `raftlite backup verify` and the
/// scheduled verification do (download, both hashes, decompression to a file that is
/// fsync'd, `integrity_check`), beside the decompression alone (`zstd -d` to a file, no hash,
/// no fsync), measured just before on the same object.
struct VerifyRun {
    verify: Duration,
    zstd: Duration,
}

/// `zstd -d` + `cp`, and the durable variant a cluster restore must at least do.
struct RestoreFloor {
    zstd: ChildRun,
    cp: ChildRun,
    wall: Duration,
    /// `zstd -d`, then the file copied and fsync'd once per node, the copies in parallel:
    /// the least disk work of any restore that leaves the file durable on every node.
    durable: Option<Duration>,
}

/// One server process around the restore.
struct NodeMem {
    id: u64,
    leader: bool,
    rss_before_kib: Option<u64>,
    /// VmHWM after a reset just before the restore (`exact`), else the largest VmRSS sampled.
    peak_kib: Option<u64>,
    exact: bool,
    /// What the node sent to and fetched from storage during the restore (`/proc/PID/io`).
    disk: Option<DiskIo>,
}

/// The measured restore.
struct RestoreRun {
    /// The backup's stream done: every byte sent and every check passed.
    downloaded: Duration,
    /// `POST /db/load` answered 200 (from the start).
    answered: Duration,
    /// Every node serves the restored data (from the start): the figure that counts.
    all_serving: Duration,
    /// What the node reported: the restore's own duration, its log index.
    cluster_secs: Option<f64>,
    index: Option<u64>,
    nodes: Vec<NodeMem>,
    /// This process's peak during the restore (the client side: download, decompression,
    /// upload): VmHWM after a reset; `None` when it could not be reset.
    client_peak_kib: Option<u64>,
}

/// One floor and the restore measured right after it.
struct RestoreRound {
    floor: Result<RestoreFloor, String>,
    run: RestoreRun,
}

impl RestoreRound {
    fn floor_secs(&self) -> Option<f64> {
        self.floor.as_ref().ok().map(|f| f.wall.as_secs_f64())
    }

    fn durable_secs(&self) -> Option<f64> {
        self.floor
            .as_ref()
            .ok()
            .and_then(|f| f.durable)
            .map(|d| d.as_secs_f64())
    }

    fn wall_secs(&self) -> f64 {
        self.run.all_serving.as_secs_f64()
    }

    fn ratio(&self) -> Option<f64> {
        self.floor_secs().map(|f| self.wall_secs() / f.max(1e-9))
    }

    fn durable_ratio(&self) -> Option<f64> {
        self.durable_secs().map(|d| self.wall_secs() / d.max(1e-9))
    }
}

struct RestoreReport {
    load_before: Option<String>,
    db_mib: u64,
    source: RestoreSource,
    rounds: Vec<RestoreRound>,
    notes: Vec<String>,
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// `raftlite bench --restore-db-mib N`; the steps are described at the top of this section.
async fn run_restore_bench(args: &BenchArgs, mib: u64) -> anyhow::Result<()> {
    if mib == 0 {
        bail!("--restore-db-mib must be at least 1");
    }
    if args.restore_runs == 0 {
        bail!("--restore-runs must be at least 1");
    }
    let work = WorkDir::create(args.work_dir.clone())?;
    let root = std::fs::canonicalize(&work.path)
        .with_context(|| format!("cannot resolve {}", work.path.display()))?;
    let report = tokio::select! {
        report = measure_restore(&root, mib, args.restore_runs) => report?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    print_restore_report(args, &report)
}

async fn measure_restore(work: &Path, mib: u64, runs: u32) -> anyhow::Result<RestoreReport> {
    let load_before = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    let dest_dir = work.join("backups");
    std::fs::create_dir(&dest_dir)
        .with_context(|| format!("cannot create {}", dest_dir.display()))?;
    let dest_url = file_url(&dest_dir)?;
    let dest = raftlite_backup::Destination::parse(&dest_url)
        .with_context(|| format!("cannot open {dest_url}"))?;

    eprintln!("bench: building a {mib} MiB database (setup, not measured)");
    let source_path = work.join("source.sqlite");
    let started = Instant::now();
    let (rows, payload_bytes) = {
        let path = source_path.clone();
        tokio::task::spawn_blocking(move || build_source(&path, mib << 20))
            .await
            .context("the build thread failed")??
    };
    let build = started.elapsed();
    let size_bytes = std::fs::metadata(&source_path)
        .with_context(|| format!("cannot read {}", source_path.display()))?
        .len();
    eprintln!(
        "bench: {rows} rows, {:.1} MiB file, built in {:.1} s; backing it up (zstd {RESTORE_BACKUP_LEVEL})",
        mib_of(size_bytes),
        build.as_secs_f64()
    );
    let started = Instant::now();
    let meta = raftlite_backup::BackupMeta {
        cluster_id: "bench-restore".into(),
        node_id: 0,
        timeline: raftlite_backup::TimelineRef {
            id: "bench-source".into(),
            counter: 1,
        },
        log_index: 0,
        log_term: 0,
        data_changed_index: None,
        leader_term: None,
        slot_unix_ms: None,
    };
    let options = raftlite_backup::CreateOptions {
        level: RESTORE_BACKUP_LEVEL,
        encryption: None,
    };
    let manifest = raftlite_backup::create_backup(&source_path, meta, &dest, &options)
        .await
        .context("the backup of the source file failed")?;
    let backup = started.elapsed();
    let id = manifest.id().context("the manifest names no backup id")?;
    let object = dest_dir
        .join(id.cluster_id())
        .join("backups")
        .join(id.set())
        .join(manifest.object_name());
    if !object.is_file() {
        bail!("the backup's data object is not at {}", object.display());
    }
    // Only the backup is restored from; a file less on the disk.
    let _ = std::fs::remove_file(&source_path);
    let verify = measure_verify(&dest, &id, &object, work)
        .await
        .map_err(|e| format!("{e:#}"));
    let source = RestoreSource {
        rows,
        payload_bytes,
        size_bytes,
        build,
        backup,
        stored_bytes: manifest.stored_size,
        plain_sha256: manifest.plain_sha256.clone(),
        object,
        verify,
    };
    eprintln!(
        "bench: backup {id}: {:.1} MiB stored, in {:.1} s; {}",
        mib_of(source.stored_bytes),
        backup.as_secs_f64(),
        verify_text(&source.verify)
    );

    let http = reqwest::Client::builder()
        .timeout(DEADLINE)
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")?;
    let mut cluster = Cluster {
        dir: work.join("cluster"),
        nodes: Vec::new(),
        extra_args: vec!["--backup-to".into(), "off".into()],
    };
    eprintln!("bench: starting a {RESTORE_NODES}-node cluster");
    let result = restore_scenario(&mut cluster, &http, work, mib, runs, &dest, &id, &source).await;
    if result.is_err() {
        cluster.print_log_tails();
    }
    let (rounds, notes) = result?;
    Ok(RestoreReport {
        load_before,
        db_mib: mib,
        source,
        rounds,
        notes,
    })
}

/// Runs `runs` rounds on one cluster, each a floor then a restore right after it (a new
/// timeline each), so every restore has a floor measured in the same conditions.
#[allow(clippy::too_many_arguments)]
async fn restore_scenario(
    cluster: &mut Cluster,
    http: &reqwest::Client,
    work: &Path,
    mib: u64,
    runs: u32,
    dest: &raftlite_backup::Destination,
    id: &raftlite_backup::BackupId,
    source: &RestoreSource,
) -> anyhow::Result<(Vec<RestoreRound>, Vec<String>)> {
    let mut notes = Vec::new();
    let leader = cluster.start(http, RESTORE_NODES).await?;
    let leader_index = cluster
        .nodes
        .iter()
        .position(|n| n.url == leader)
        .ok_or_else(|| anyhow!("the leader {leader} is not one of the started nodes"))?;
    let pids = (0..cluster.nodes.len())
        .map(|i| cluster.pid(i))
        .collect::<anyhow::Result<Vec<u32>>>()?;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
    let floor_dir = work.join("floor");
    std::fs::create_dir(&floor_dir)
        .with_context(|| format!("cannot create {}", floor_dir.display()))?;
    let mut rounds = Vec::new();
    for round in 1..=runs {
        let label = if runs > 1 {
            format!(" (run {round} of {runs})")
        } else {
            String::new()
        };
        // The last restore's log compaction (a snapshot and a purge on every node) must not
        // run under this floor.
        if let Some(index) = rounds.last().and_then(|k: &RestoreRound| k.run.index) {
            let what = format!("every node's log purged past the last restore (index {index})");
            if let Err(e) = cluster
                .wait_for(&what, || all_purged_to(http, &urls, index))
                .await
            {
                notes.push(format!(
                    "run {round}: {e:#}; its floor may be slowed by that"
                ));
            }
        }
        eprintln!("bench: floor: zstd -d + cp{label}");
        settle_disk().await;
        let floor = restore_floor(&source.object, &floor_dir, long_deadline(mib)).await?;
        match &floor {
            Ok(f) => eprintln!("bench: floor took {:.2} s", f.wall.as_secs_f64()),
            Err(why) => eprintln!("bench: floor skipped: {why}"),
        }

        let timeline_id = format!("{:032x}", rand::random::<u128>());
        eprintln!(
            "bench: restore: a backup streamed into POST /db/load, until every node serves \
             it{label}"
        );
        settle_disk().await;
        let before: Vec<Option<ProcMem>> = pids.iter().map(|&p| proc_mem(p)).collect();
        let io_before: Vec<Option<DiskIo>> = pids.iter().map(|&p| proc_io(p)).collect();
        let exact: Vec<bool> = pids.iter().map(|&p| reset_hwm(p)).collect();
        let me = std::process::id();
        let client_exact = reset_hwm(me);
        let plan = RestorePlan {
            dest,
            id,
            plain_sha256: &source.plain_sha256,
            node: &leader,
            all: &urls,
            timeline_id: &timeline_id,
            rows: source.rows,
            deadline: long_deadline(mib),
        };
        let restore = restore_once(http, &plan);
        let (outcome, sampled) = sample_peaks(&pids, restore).await;
        let after: Vec<Option<ProcMem>> = pids.iter().map(|&p| proc_mem(p)).collect();
        let io_after: Vec<Option<DiskIo>> = pids.iter().map(|&p| proc_io(p)).collect();
        let client_after = proc_mem(me);
        let (downloaded, answered, all_serving, answer) = outcome?;
        eprintln!(
            "bench: all {RESTORE_NODES} nodes served it at {:.2} s",
            all_serving.as_secs_f64()
        );

        let nodes = cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let hwm = match (exact[i], after[i]) {
                    (true, Some(m)) => Some(m.hwm_kib),
                    _ => None,
                };
                NodeMem {
                    id: node.id,
                    leader: i == leader_index,
                    rss_before_kib: before[i].map(|m| m.rss_kib),
                    peak_kib: hwm.max(sampled[i]),
                    exact: hwm.is_some(),
                    disk: io_after[i].zip(io_before[i]).map(|(a, b)| a.since(b)),
                }
            })
            .collect();
        let restore = answer.get("restore").cloned().unwrap_or(Value::Null);
        if restore.get("sha256").and_then(Value::as_str) != Some(source.plain_sha256.as_str()) {
            notes.push(format!(
                "run {round}: the cluster restored sha256 {} but the backup's manifest says {}",
                restore.get("sha256").unwrap_or(&Value::Null),
                source.plain_sha256
            ));
        }
        if !client_exact && round == 1 {
            notes.push("VmHWM could not be reset: the client's peak is not reported".into());
        }
        let run = RestoreRun {
            downloaded,
            answered,
            all_serving,
            cluster_secs: restore.get("duration_secs").and_then(Value::as_f64),
            index: restore.get("index").and_then(Value::as_u64),
            nodes,
            client_peak_kib: if client_exact {
                client_after.map(|m| m.hwm_kib)
            } else {
                None
            },
        };
        rounds.push(RestoreRound { floor, run });
    }
    Ok((rounds, notes))
}

/// Whether every node in `urls` reports its log purged up to `index` (the compaction after a
/// restore is done); `Err` names one that does not yet.
async fn all_purged_to(http: &reqwest::Client, urls: &[String], index: u64) -> Result<(), String> {
    for url in urls {
        let purged = get_json(http, &format!("{url}/status"))
            .await
            .ok()
            .and_then(|s| {
                s.pointer("/store/raft/purged_index")
                    .and_then(Value::as_u64)
            });
        if purged.is_none_or(|p| p < index) {
            return Err(format!("{url} has purged up to {purged:?}"));
        }
    }
    Ok(())
}

/// Builds the source file at `path`: rows of the backup bench's shape until `target` bytes of
/// text and blob are in. Returns the rows and bytes inserted.
fn build_source(path: &Path, target: u64) -> anyhow::Result<(u64, u64)> {
    let mut conn = rusqlite::Connection::open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // A scratch file rebuilt on failure: no journal, no fsync while filling.
    conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")?;
    conn.execute_batch(FILL_CREATE)?;
    let mut rng = rand::rng();
    let mut blob = vec![0u8; FILL_BLOB_BYTES];
    let (mut rows, mut bytes) = (0u64, 0u64);
    while bytes < target {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare(FILL_INSERT)?;
            for _ in 0..BUILD_ROWS_PER_TX {
                if bytes >= target {
                    break;
                }
                fill_blob(&mut rng, &mut blob);
                let note = words(&mut rng, FILL_NOTE_BYTES);
                insert.execute(rusqlite::params![note, blob])?;
                rows += 1;
                bytes += (FILL_BLOB_BYTES + FILL_NOTE_BYTES) as u64;
            }
        }
        tx.commit()?;
    }
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        bail!("the built file fails quick_check: {check}");
    }
    drop(conn);
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot fsync {}", path.display()))?;
    Ok((rows, bytes))
}

/// Times `zstd -d` of the backup's object to a file, then a verify of the backup (see
/// [`VerifyRun`]); both leave nothing behind.
async fn measure_verify(
    dest: &raftlite_backup::Destination,
    id: &raftlite_backup::BackupId,
    object: &Path,
    work: &Path,
) -> anyhow::Result<VerifyRun> {
    let Some(zstd) = find_tool("zstd") else {
        bail!("zstd not found in PATH or /usr/bin");
    };
    let dir = work.join("verify");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let plain = dir.join("db.sqlite");
    let log = dir.join("tools.log");
    settle_disk().await;
    let baseline = zstd_decompress(&zstd, object, &plain, &log, DEADLINE).await?;
    let _ = std::fs::remove_file(&plain);
    settle_disk().await;
    let started = Instant::now();
    let verified = raftlite_backup::verify_backup_in(dest, id, None, &dir).await;
    let verify = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    verified.with_context(|| format!("the verify of backup {id} failed"))?;
    Ok(VerifyRun {
        verify,
        zstd: baseline.wall,
    })
}

/// `zstd -d` of `object` into `out` (its output in `log`), timed; an error if it fails.
async fn zstd_decompress(
    zstd: &Path,
    object: &Path,
    out: &Path,
    log: &Path,
    deadline: Duration,
) -> anyhow::Result<ChildRun> {
    let mut cmd = Command::new(zstd);
    cmd.args(["-d", "-q", "-f"]).arg(object).arg("-o").arg(out);
    let run = run_child(logged(cmd, log)?, "zstd -d", deadline).await?;
    if !run.status.success() {
        bail!("zstd -d failed ({}): {}", run.status, log_tail(log, 10));
    }
    Ok(run)
}

fn verify_text(verify: &Result<VerifyRun, String>) -> String {
    match verify {
        Ok(v) => format!(
            "verified in {:.2} s ({:.2}x `zstd -d` of it to a file, {:.2} s just before)",
            v.verify.as_secs_f64(),
            v.verify.as_secs_f64() / v.zstd.as_secs_f64().max(1e-9),
            v.zstd.as_secs_f64()
        ),
        Err(why) => format!("verify not measured: {why}"),
    }
}

/// `zstd -d -q OBJECT -o dir/db.sqlite` then `cp dir/db.sqlite dir/copy.sqlite`, timed
/// together; both files are removed afterwards. `Ok(Err(why))` when a tool is missing.
async fn restore_floor(
    object: &Path,
    dir: &Path,
    deadline: Duration,
) -> anyhow::Result<Result<RestoreFloor, String>> {
    let (Some(zstd), Some(cp)) = (find_tool("zstd"), find_tool("cp")) else {
        return Ok(Err("zstd or cp not found in PATH or /usr/bin".into()));
    };
    let (plain, copy) = (dir.join("db.sqlite"), dir.join("copy.sqlite"));
    let log = dir.join("tools.log");
    let start = Instant::now();
    let zstd = zstd_decompress(&zstd, object, &plain, &log, deadline).await?;
    let mut cmd = Command::new(&cp);
    cmd.arg(&plain).arg(&copy);
    let cp = run_child(logged(cmd, &log)?, "cp", deadline).await?;
    let wall = start.elapsed();
    if !cp.status.success() {
        bail!("cp failed ({}): {}", cp.status, log_tail(&log, 10));
    }
    let _ = std::fs::remove_file(&copy);
    let durable = match find_tool("sh") {
        Some(sh) => {
            settle_disk().await;
            let start = Instant::now();
            let copies = (1..=RESTORE_NODES).map(|node| {
                let mut cmd = Command::new(&sh);
                cmd.args(["-c", r#"cp "$1" "$2" && sync "$2""#, "sh"])
                    .arg(&plain)
                    .arg(dir.join(format!("node-{node}.sqlite")));
                logged(cmd, &log).map(|cmd| run_child(cmd, "cp + sync", deadline))
            });
            let runs =
                futures::future::try_join_all(copies.collect::<anyhow::Result<Vec<_>>>()?).await?;
            let copied = start.elapsed();
            for node in 1..=RESTORE_NODES {
                let _ = std::fs::remove_file(dir.join(format!("node-{node}.sqlite")));
            }
            runs.iter()
                .all(|r| r.status.success())
                .then(|| zstd.wall + copied)
        }
        None => None,
    };
    let _ = std::fs::remove_file(&plain);
    Ok(Ok(RestoreFloor {
        zstd,
        cp,
        wall,
        durable,
    }))
}

/// Runs `work` while sampling the VmRSS of every process in `pids` every [`POLL`]; returns
/// its output and each process's largest sample.
async fn sample_peaks<F: std::future::Future>(
    pids: &[u32],
    work: F,
) -> (F::Output, Vec<Option<u64>>) {
    let mut peaks: Vec<Option<u64>> = vec![None; pids.len()];
    let mut tick = tokio::time::interval(POLL);
    tokio::pin!(work);
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick() => {
                for (peak, &pid) in peaks.iter_mut().zip(pids) {
                    if let Some(m) = proc_mem(pid) {
                        *peak = (*peak).max(Some(m.rss_kib));
                    }
                }
            }
        }
    };
    (out, peaks)
}

/// What [`restore_once`] restores, where, and how it knows it is done.
struct RestorePlan<'a> {
    dest: &'a raftlite_backup::Destination,
    id: &'a raftlite_backup::BackupId,
    /// The manifest's sha256 of the database file (the node checks the upload against it).
    plain_sha256: &'a str,
    /// The node that receives `POST /db/load`.
    node: &'a str,
    /// Every node: each must serve the restored data.
    all: &'a [String],
    timeline_id: &'a str,
    /// Rows of `filler` in the restored file.
    rows: u64,
    deadline: Duration,
}

/// The restore, timed from its start: `(downloaded, answered, all serving, the answer)`.
async fn restore_once(
    http: &reqwest::Client,
    plan: &RestorePlan<'_>,
) -> anyhow::Result<(Duration, Duration, Duration, Value)> {
    let RestorePlan {
        dest,
        id,
        plain_sha256,
        node,
        all,
        timeline_id,
        rows,
        deadline,
    } = *plan;
    let start = Instant::now();
    let give_up = start + deadline;
    let backup = raftlite_restore::upload::BackupStream {
        dest: dest.clone(),
        id: id.clone(),
        identity: None,
        plain_sha256: plain_sha256.to_string(),
    };
    let (body, feeder) = raftlite_restore::upload::backup_body(
        backup,
        std::sync::Arc::new(raftlite_restore::upload::NoProgress),
    );
    let feeder = tokio::spawn(async move {
        let fed = feeder.await;
        (fed, start.elapsed())
    });
    let url = format!("{node}/db/load?timeline_id={timeline_id}&reason=bench");
    let sent = http
        .post(&url)
        .timeout(deadline)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .header(raftlite_restore::upload::EXPECT_SHA256_HEADER, plain_sha256)
        .body(body)
        .send()
        .await;
    let (fed, downloaded) = feeder.await.context("the backup stream task failed")?;
    match fed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("streaming backup {id} failed: {e}"),
        Err(e) => bail!("the backup stream task failed: {e}"),
    }
    let resp = sent.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let text = resp.text().await.with_context(|| format!("POST {url}"))?;
    if !status.is_success() {
        bail!("POST {url}: HTTP {status}: {}", text.trim());
    }
    let answered = start.elapsed();
    let answer: Value =
        serde_json::from_str(&text).with_context(|| format!("POST {url}: not JSON: {text}"))?;

    let mut waiting: Vec<&String> = all.iter().collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for url in waiting {
            if !serves_restored(http, url, timeline_id, rows).await {
                still.push(url);
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if Instant::now() >= give_up {
            bail!(
                "{} did not serve the restored data within {deadline:?}",
                waiting
                    .iter()
                    .map(|u| u.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((downloaded, answered, start.elapsed(), answer))
}

/// Whether `node`'s `/status` shows `timeline_id` and its local `COUNT(*)` the file's rows.
async fn serves_restored(http: &reqwest::Client, node: &str, timeline_id: &str, rows: u64) -> bool {
    let Ok(status) = get_json(http, &format!("{node}/status")).await else {
        return false;
    };
    if status.pointer("/store/timeline/id").and_then(Value::as_str) != Some(timeline_id) {
        return false;
    }
    let url = format!("{node}/db/query?level=none&q=SELECT%20COUNT(*)%20FROM%20filler");
    let Ok(doc) = get_json(http, &url).await else {
        return false;
    };
    doc.pointer("/results/0/values/0/0").and_then(Value::as_u64) == Some(rows)
}

fn print_restore_report(args: &BenchArgs, r: &RestoreReport) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let version = env!("CARGO_PKG_VERSION");
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let opt = |x: Option<f64>, digits: usize| x.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    let ratio_text = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}x"));
    let runs = r.rounds.len();
    let ratios: Vec<f64> = r.rounds.iter().filter_map(RestoreRound::ratio).collect();
    let durable_ratios: Vec<f64> = r
        .rounds
        .iter()
        .filter_map(RestoreRound::durable_ratio)
        .collect();
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (!v.is_empty()).then_some((lo, hi))
    };
    // What no durable restore can beat, against the floor: above 3x in a round, no restore
    // that leaves the file durable on every node can be within 3x of that round's floor.
    let durable_vs_floor: Vec<f64> = r
        .rounds
        .iter()
        .filter_map(|k| Some(k.durable_secs()? / k.floor_secs()?.max(1e-9)))
        .collect();
    let median_wall = median(r.rounds.iter().map(RestoreRound::wall_secs).collect());
    let median_ratio = median(ratios.clone());
    let median_durable_ratio = median(durable_ratios.clone());
    // Each node's largest peak over the runs.
    let node_peaks: Vec<&NodeMem> = match r.rounds.first() {
        Some(first) => (0..first.run.nodes.len())
            .filter_map(|i| {
                r.rounds
                    .iter()
                    .filter_map(|k| k.run.nodes.get(i))
                    .max_by_key(|n| n.peak_kib)
            })
            .collect(),
        None => Vec::new(),
    };
    if args.json {
        let runs_json: Vec<Value> = r
            .rounds
            .iter()
            .map(|k| {
                let floor = match &k.floor {
                    Ok(f) => json!({
                        "wall_secs": round(f.wall.as_secs_f64()),
                        "zstd_secs": round(f.zstd.wall.as_secs_f64()),
                        "cp_secs": round(f.cp.wall.as_secs_f64()),
                        "durable_secs": f.durable.map(|d| round(d.as_secs_f64())),
                        "zstd_peak_rss_mib": mib_of_kib(f.zstd.peak_kib).map(round),
                    }),
                    Err(why) => json!({ "skipped": why }),
                };
                let nodes: Vec<Value> = k
                    .run
                    .nodes
                    .iter()
                    .map(|n| {
                        json!({
                            "node": n.id,
                            "leader": n.leader,
                            "rss_before_mib": mib_of_kib(n.rss_before_kib).map(round),
                            "peak_rss_mib": mib_of_kib(n.peak_kib).map(round),
                            "peak_exact": n.exact,
                            "disk_written_mib": n.disk.map(|d| round(mib_of(d.written))),
                            "disk_read_mib": n.disk.map(|d| round(mib_of(d.read))),
                        })
                    })
                    .collect();
                json!({
                    "floor": floor,
                    "restore": {
                        "nodes": RESTORE_NODES,
                        "wall_secs": round(k.wall_secs()),
                        "ratio_vs_floor": k.ratio().map(round),
                        "ratio_vs_durable_floor": k.durable_ratio().map(round),
                        "download_secs": round(k.run.downloaded.as_secs_f64()),
                        "answered_secs": round(k.run.answered.as_secs_f64()),
                        "cluster_restore_secs": k.run.cluster_secs.map(round),
                        "log_index": k.run.index,
                        "client_peak_rss_mib": mib_of_kib(k.run.client_peak_kib).map(round),
                        "servers": nodes,
                    },
                })
            })
            .collect();
        let doc = json!({
            "raftlite_version": version,
            "cores": cores,
            "load_average_before": r.load_before,
            "database": {
                "requested_mib": r.db_mib,
                "size_bytes": r.source.size_bytes,
                "rows": r.source.rows,
                "payload_bytes": r.source.payload_bytes,
                "build_secs": round(r.source.build.as_secs_f64()),
            },
            "backup": {
                "zstd_level": RESTORE_BACKUP_LEVEL,
                "stored_bytes": r.source.stored_bytes,
                "secs": round(r.source.backup.as_secs_f64()),
                "verify": match &r.source.verify {
                    Ok(v) => json!({
                        "secs": round(v.verify.as_secs_f64()),
                        "zstd_d_secs": round(v.zstd.as_secs_f64()),
                    }),
                    Err(why) => json!({ "skipped": why }),
                },
            },
            "runs": runs_json,
            "summary": {
                "runs": runs,
                "median_wall_secs": median_wall.map(round),
                "median_ratio_vs_floor": median_ratio.map(round),
                "median_ratio_vs_durable_floor": median_durable_ratio.map(round),
                "median_durable_floor_vs_floor": median(durable_vs_floor.clone()).map(round),
                "max_peak_rss_mib": node_peaks
                    .iter()
                    .filter_map(|n| mib_of_kib(n.peak_kib))
                    .reduce(f64::max)
                    .map(round),
            },
            "notes": r.notes,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }

    println!(
        "raftlite {version} restore bench, {cores} cores: {:.1} MiB database ({} rows of {} KiB \
         blob + {} KiB text, half random), built in {:.1} s; backup zstd {RESTORE_BACKUP_LEVEL} \
         {:.1} MiB stored, in {:.1} s (setup, not measured); {}",
        mib_of(r.source.size_bytes),
        r.source.rows,
        FILL_BLOB_BYTES / 1024,
        FILL_NOTE_BYTES / 1024,
        r.source.build.as_secs_f64(),
        mib_of(r.source.stored_bytes),
        r.source.backup.as_secs_f64(),
        verify_text(&r.source.verify)
    );
    if let Some(load) = &r.load_before {
        println!(
            "load average before the run: {load} (other work on the machine skews the figures)"
        );
    }
    println!(
        "{RESTORE_NODES}-node loopback cluster (--backup-to off); `sync` before each measured \
         phase; {runs} run(s), each a floor then a restore"
    );
    // Row labels carry "run N: " when there are several runs.
    let width = if runs > 1 { 54 } else { 44 };
    println!();
    println!(
        "{:<width$} {:>8} {:>9} {:>13}  notes",
        "restore", "wall s", "vs floor", "peak RSS MiB"
    );
    for (i, k) in r.rounds.iter().enumerate() {
        let run = if runs > 1 {
            format!("run {}: ", i + 1)
        } else {
            String::new()
        };
        match &k.floor {
            Ok(f) => println!(
                "{:<width$} {:>8.2} {:>8.2}x {:>13}  zstd -d {:.2} s, cp {:.2} s (no fsync)",
                format!("{run}floor: zstd -d + cp"),
                f.wall.as_secs_f64(),
                1.0,
                opt(mib_of_kib(f.zstd.peak_kib.max(f.cp.peak_kib)), 1),
                f.zstd.wall.as_secs_f64(),
                f.cp.wall.as_secs_f64(),
            ),
            Err(why) => println!(
                "{:<width$} skipped: {why}",
                format!("{run}floor: zstd -d + cp")
            ),
        }
        if let (Some(d), Some(f)) = (k.durable_secs(), k.floor_secs()) {
            println!(
                "{:<width$} {:>8.2} {:>8.2}x {:>13}  zstd -d, then {RESTORE_NODES} copies in \
                 parallel, each fsync'd",
                format!("{run}durable floor: zstd -d + {RESTORE_NODES} x (cp + sync)"),
                d,
                d / f.max(1e-9),
                "-",
            );
        }
        let server_peak = k
            .run
            .nodes
            .iter()
            .filter_map(|n| mib_of_kib(n.peak_kib))
            .fold(0.0, f64::max);
        println!(
            "{:<width$} {:>8.2} {:>9} {:>13}  streamed by {:.2} s, answered at {:.2} s (cluster \
             {} s), all {RESTORE_NODES} nodes serving at {:.2} s; client peak {} MiB; {} the \
             durable floor; {}",
            format!("{run}raftlite: backup streamed to POST /db/load"),
            k.wall_secs(),
            ratio_text(k.ratio()),
            format!("{server_peak:.1}"),
            k.run.downloaded.as_secs_f64(),
            k.run.answered.as_secs_f64(),
            opt(k.run.cluster_secs, 2),
            k.wall_secs(),
            opt(mib_of_kib(k.run.client_peak_kib), 1),
            ratio_text(k.durable_ratio()),
            disk_text(&k.run.nodes, RESTORE_NODES as u64 * r.source.size_bytes),
        );
    }
    if runs > 1 {
        let span =
            |v: &[f64]| range(v).map_or("-".to_owned(), |(lo, hi)| format!("{lo:.2}-{hi:.2}x"));
        println!();
        println!(
            "median of {runs} runs: all {RESTORE_NODES} nodes serving at {} s, {} the floor \
             (runs: {}), {} the durable floor (runs: {}); the durable floor itself took {} the \
             floor (runs: {})",
            opt(median_wall, 2),
            ratio_text(median_ratio),
            span(&ratios),
            ratio_text(median_durable_ratio),
            span(&durable_ratios),
            ratio_text(median(durable_vs_floor.clone())),
            span(&durable_vs_floor),
        );
    }
    println!();
    println!(
        "{:<24} {:>15} {:>15}",
        "server", "RSS before MiB", "peak RSS MiB"
    );
    for n in node_peaks {
        println!(
            "{:<24} {:>15} {:>15}",
            format!(
                "node {}{}",
                n.id,
                if n.leader { " (leader, upload)" } else { "" }
            ),
            opt(mib_of_kib(n.rss_before_kib), 1),
            format!(
                "{}{}",
                opt(mib_of_kib(n.peak_kib), 1),
                if n.exact { "" } else { " (sampled)" }
            ),
        );
    }
    if runs > 1 {
        println!("(each node's largest peak over the runs, and its RSS before that run)");
    }
    for note in &r.notes {
        println!("note: {note}");
    }
    Ok(())
}

/// The nodes' storage traffic during a restore, for the report, beside `floor_bytes`: what the
/// durable floor writes (the file once per node).
fn disk_text(nodes: &[NodeMem], floor_bytes: u64) -> String {
    let Some(each) = nodes
        .iter()
        .map(|n| n.disk)
        .collect::<Option<Vec<DiskIo>>>()
    else {
        return "storage traffic unknown (/proc/PID/io unreadable)".into();
    };
    let per_node = each
        .iter()
        .map(|d| format!("{:.0}", mib_of(d.written)))
        .collect::<Vec<_>>()
        .join("/");
    format!(
        "the nodes wrote {:.0} MiB to storage ({per_node} MiB by node; the durable floor \
         writes {:.0} MiB) and read {:.0} MiB",
        mib_of(each.iter().map(|d| d.written).sum()),
        mib_of(floor_bytes),
        mib_of(each.iter().map(|d| d.read).sum()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_traffic_is_summed_over_the_nodes_or_said_unknown() {
        let node = |written_mib: u64, read_mib: u64| NodeMem {
            id: 1,
            leader: false,
            rss_before_kib: None,
            peak_kib: None,
            exact: false,
            disk: Some(DiskIo {
                written: (2 * written_mib) << 20,
                read: read_mib << 20,
            })
            .map(|after| {
                after.since(DiskIo {
                    written: written_mib << 20,
                    read: 0,
                })
            }),
        };
        assert_eq!(
            disk_text(&[node(1024, 0), node(2048, 1024)], 3 << 30),
            "the nodes wrote 3072 MiB to storage (1024/2048 MiB by node; the durable floor writes \
             3072 MiB) and read 1024 MiB"
        );
        let unknown = NodeMem {
            disk: None,
            ..node(1, 1)
        };
        assert!(disk_text(&[node(1, 1), unknown], 0).contains("unknown"));
    }

    #[test]
    fn fill_rows_have_the_promised_shape() {
        let (body, bytes) = fill_request();
        let doc: Value = serde_json::from_str(&body).expect("the body is JSON");
        let rows = doc.as_array().expect("an array of statements");
        assert_eq!(rows.len(), FILL_ROWS_PER_REQUEST);
        assert_eq!(
            bytes as usize,
            rows.len() * (FILL_BLOB_BYTES + FILL_NOTE_BYTES)
        );
        let note = rows[0][1].as_str().expect("a text note");
        let blob = rows[0][2].as_str().expect("a hex blob");
        assert_eq!(note.len(), FILL_NOTE_BYTES);
        assert!(!note.starts_with("x'"), "a note must not read as a blob");
        assert_eq!(blob.len(), 2 * FILL_BLOB_BYTES + 3);
        assert!(blob.starts_with("x'") && blob.ends_with('\''));
    }

    #[test]
    fn hex_literals_and_file_urls() {
        assert_eq!(hex_literal(&[0x00, 0x0a, 0xff]), "x'000aff'");
        assert_eq!(hex_literal(&[]), "x''");
        assert_eq!(
            file_url(Path::new("/tmp/a b/c%d")).expect("UTF-8"),
            "file:///tmp/a%20b/c%25d"
        );
    }

    #[test]
    fn median_of_odd_even_and_no_runs() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn own_memory_is_readable() {
        let Some(mem) = proc_mem(std::process::id()) else {
            return; // not Linux
        };
        assert!(mem.rss_kib > 0 && mem.hwm_kib >= mem.rss_kib, "{mem:?}");
    }
}
