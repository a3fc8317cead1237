//! The nemesis: faults injected into a real multi-process cluster while clients write, then
//! checks that nothing acknowledged was lost.
//!
//! Faults (chosen by a seeded RNG): kill -9 of the leader or a follower then restart, SIGSTOP and
//! SIGCONT of the leader or a follower, full-cluster kill and restart, kill -9 of a follower while
//! it receives or installs a snapshot, and remove / wipe / rejoin of a follower. Meanwhile client
//! threads insert unique keys and move money between bank accounts under `?transaction`, every
//! request with `?timeout=`, and time each answer.
//!
//! Checks: every node is ready again after each fault; no answer comes later than the request's
//! timeout plus [`SLACK`] (answers of a node that was itself stopped meanwhile are exempt: a
//! stopped process cannot answer); at the end every acknowledged insert and transfer is on every
//! node, every node holds the same data, the bank's total is unchanged and its balances match its
//! transfer ledger; no node's log contains "panicked".
//!
//! Settings (environment): `RAFTLITE_NEMESIS_SEED` (default: from the clock; printed at the
//! start as `nemesis seed: N`), `RAFTLITE_NEMESIS_SECS` (time spent injecting faults, default
//! 45), `RAFTLITE_NEMESIS_NODES` (3 or 5, default 3), `RAFTLITE_NEMESIS_PAD_MIB` (bytes of
//! padding rows, which make snapshots large enough to be caught in transfer, default 4).
//! A long soak: `RAFTLITE_NEMESIS_SECS=1800 cargo test --release --test nemesis -- --nocapture`.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// `?timeout=` of every client request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How much later than its `?timeout` an answer may come (scheduling, a forward, the answer's
/// own transfer) before it counts as late.
const SLACK: Duration = Duration::from_secs(3);
/// The client gives up here: anything reaching it is a hang.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2 + 3 + 5);
/// Every node must answer `/readyz` 200 this soon after a fault ends.
const READY_BOUND: Duration = Duration::from_secs(45);
/// A follower down for the snapshot fault waits at most this long for the leader to purge its
/// log past the follower's position.
const PURGE_BOUND: Duration = Duration::from_secs(45);
const SNAPSHOT_THRESHOLD: &str = "300";
const INSERT_WORKERS: u64 = 3;
const BANK_WORKERS: u64 = 2;
const ACCOUNTS: i64 = 8;
const INITIAL_BALANCE: i64 = 1000;

// ---------------------------------------------------------------------------
// Settings, faults, randomness
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fault {
    KillLeader,
    KillFollower,
    PauseLeader,
    PauseFollower,
    KillAll,
    KillDuringSnapshot,
    RemoveWipeRejoin,
}

impl Fault {
    const ALL: [Fault; 7] = [
        Fault::KillLeader,
        Fault::KillFollower,
        Fault::PauseLeader,
        Fault::PauseFollower,
        Fault::KillAll,
        Fault::KillDuringSnapshot,
        Fault::RemoveWipeRejoin,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill-leader",
            Fault::KillFollower => "kill-follower",
            Fault::PauseLeader => "pause-leader",
            Fault::PauseFollower => "pause-follower",
            Fault::KillAll => "kill-all",
            Fault::KillDuringSnapshot => "kill-during-snapshot",
            Fault::RemoveWipeRejoin => "remove-wipe-rejoin",
        }
    }
}

struct Settings {
    seed: u64,
    budget: Duration,
    nodes: usize,
    pad_mib: u64,
    faults: Vec<Fault>,
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={value:?} is not a number: {e}")),
    )
}

impl Settings {
    fn from_env() -> Settings {
        let seed = env_u64("RAFTLITE_NEMESIS_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
        let nodes = env_u64("RAFTLITE_NEMESIS_NODES").unwrap_or(3) as usize;
        assert!(
            nodes == 3 || nodes == 5,
            "RAFTLITE_NEMESIS_NODES must be 3 or 5"
        );
        let faults = Fault::ALL.to_vec();
        Settings {
            seed,
            budget: Duration::from_secs(env_u64("RAFTLITE_NEMESIS_SECS").unwrap_or(45)),
            nodes,
            pad_mib: env_u64("RAFTLITE_NEMESIS_PAD_MIB").unwrap_or(4),
            faults,
        }
    }
}

/// splitmix64: any seed, including 0, gives a good stream.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high - low + 1))
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------
// What the clients see
// ---------------------------------------------------------------------------

/// Which nodes are stopped with SIGSTOP. Each node's generation moves at every STOP and CONT,
/// so a client can tell whether its target was stopped at any moment of its request.
struct Pauses(Mutex<Vec<(u64, bool)>>);

impl Pauses {
    fn new(nodes: usize) -> Pauses {
        Pauses(Mutex::new(vec![(0, false); nodes]))
    }

    fn get(&self, node: usize) -> (u64, bool) {
        self.0.lock().map(|v| v[node]).unwrap_or((0, true))
    }

    fn set(&self, node: usize, paused: bool) {
        if let Ok(mut v) = self.0.lock() {
            v[node] = (v[node].0 + 1, paused);
        }
    }
}

#[derive(Default)]
struct Stats {
    acked_inserts: Mutex<Vec<i64>>,
    acked_transfers: Mutex<Vec<i64>>,
    declined_transfers: AtomicU64,
    /// Answers other than an acknowledgement, by kind ("HTTP 503", "transport", ...).
    not_acked: Mutex<BTreeMap<String, u64>>,
    answers: AtomicU64,
    /// Answers of a node that was stopped during the request: not held to the latency bound.
    exempt: AtomicU64,
    max_latency: Mutex<(Duration, String)>,
    late: Mutex<Vec<String>>,
}

impl Stats {
    fn count_not_acked(&self, kind: String) {
        if let Ok(mut m) = self.not_acked.lock() {
            *m.entry(kind).or_default() += 1;
        }
    }
}

enum Answer {
    Ok(Value),
    Refused,
}

struct Client {
    http: reqwest::blocking::Client,
    urls: Vec<String>,
    pauses: Arc<Pauses>,
    stats: Arc<Stats>,
}

impl Client {
    /// POSTs `body` to node `node`'s `/db/execute` with `?timeout=`, times the answer and
    /// records it. `Ok` is a 200 body; every other outcome is counted and `Refused`.
    fn execute(&self, node: usize, body: &Value, transaction: bool) -> Answer {
        let url = format!(
            "{}/db/execute?timeout={}ms{}",
            self.urls[node],
            REQUEST_TIMEOUT.as_millis(),
            if transaction { "&transaction" } else { "" }
        );
        let before = self.pauses.get(node);
        let started = Instant::now();
        let outcome = self
            .http
            .post(&url)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .and_then(|resp| {
                let status = resp.status().as_u16();
                resp.text().map(|text| (status, text))
            });
        let elapsed = started.elapsed();
        let after = self.pauses.get(node);
        self.stats.answers.fetch_add(1, Ordering::Relaxed);
        let describe = match &outcome {
            Ok((status, _)) => format!("HTTP {status}"),
            Err(e) if e.is_timeout() => "no answer (client timeout)".to_owned(),
            Err(_) => "transport error".to_owned(),
        };
        if before != after || before.1 {
            self.stats.exempt.fetch_add(1, Ordering::Relaxed);
        } else {
            let what = format!("node {} answered {describe} after {elapsed:?}", node + 1);
            if let Ok(mut max) = self.stats.max_latency.lock() {
                if elapsed > max.0 {
                    *max = (elapsed, what.clone());
                }
            }
            if elapsed > REQUEST_TIMEOUT + SLACK {
                if let Ok(mut late) = self.stats.late.lock() {
                    late.push(format!("{what} (body {body})"));
                }
            }
        }
        match outcome {
            Ok((200, text)) => match serde_json::from_str::<Value>(&text) {
                Ok(v) => Answer::Ok(v),
                Err(_) => {
                    self.stats.count_not_acked("HTTP 200 without JSON".into());
                    Answer::Refused
                }
            },
            _ => {
                self.stats.count_not_acked(describe);
                Answer::Refused
            }
        }
    }
}

fn insert_worker(client: Client, worker: u64, seed: u64, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(seed);
    let mut seq = 0i64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let id = (worker as i64 + 1) * 1_000_000_000 + seq;
        let node = rng.below(client.urls.len() as u64) as usize;
        let body = json!([["INSERT INTO acked (id) VALUES (?)", id]]);
        match client.execute(node, &body, false) {
            Answer::Ok(resp) if check_results(&resp).is_ok() => {
                if let Ok(mut acked) = client.stats.acked_inserts.lock() {
                    acked.push(id);
                }
            }
            Answer::Ok(_) => {
                client
                    .stats
                    .count_not_acked("HTTP 200 with an error".into());
                thread::sleep(Duration::from_millis(20));
            }
            Answer::Refused => thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn bank_worker(client: Client, worker: u64, seed: u64, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(seed);
    let mut seq = 0i64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let transfer = (worker as i64 + 1) * 1_000_000_000 + seq;
        let from = rng.below(ACCOUNTS as u64) as i64;
        let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1) as i64) % ACCOUNTS;
        let amount = 1 + rng.below(200) as i64;
        // The CHECK on bal refuses an overdraft; under ?transaction that error undoes the whole
        // request, so a transfer is all three statements or nothing.
        let body = json!([
            ["UPDATE bank SET bal = bal - ? WHERE id = ?", amount, from],
            ["UPDATE bank SET bal = bal + ? WHERE id = ?", amount, to],
            [
                "INSERT INTO transfers (id, src, dst, amount) VALUES (?, ?, ?, ?)",
                transfer,
                from,
                to,
                amount
            ]
        ]);
        let node = rng.below(client.urls.len() as u64) as usize;
        match client.execute(node, &body, true) {
            Answer::Ok(resp) => match check_results(&resp) {
                Ok(()) => {
                    if let Ok(mut acked) = client.stats.acked_transfers.lock() {
                        acked.push(transfer);
                    }
                }
                Err(e) if e.contains("CHECK constraint") => {
                    client
                        .stats
                        .declined_transfers
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    client
                        .stats
                        .count_not_acked("HTTP 200 with an error".into());
                    thread::sleep(Duration::from_millis(20));
                }
            },
            Answer::Refused => thread::sleep(Duration::from_millis(20)),
        }
    }
}

// ---------------------------------------------------------------------------
// The cluster as the nemesis drives it
// ---------------------------------------------------------------------------

struct Nemesis {
    c: Cluster,
    rng: Rng,
    seed: u64,
    pauses: Arc<Pauses>,
    started: Instant,
    injected: BTreeMap<&'static str, u64>,
    /// Notes about faults that could not be injected as planned.
    notes: Vec<String>,
}

impl Nemesis {
    fn fail(&self, what: &str) -> ! {
        panic!("nemesis seed {}: {what}", self.seed)
    }

    fn signal(&self, node: usize, signal: &str) {
        let Some(pid) = self.c.nodes[node].pid() else {
            self.fail(&format!("node {} has no process to {signal}", node + 1))
        };
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            self.fail(&format!("kill {signal} {pid} failed: {status:?}"));
        }
    }

    /// Copies node `node`'s data dir (and log) out of the cluster's temporary directory, which
    /// goes with the test, so the files that made it fail can be examined.
    fn keep_data_dir(&self, node: usize) -> String {
        let n = &self.c.nodes[node];
        let to = std::env::temp_dir().join(format!("raftlite-nemesis-{}-node-{}", self.seed, n.id));
        let copied = copy_dir(&n.data_dir, &to)
            .and_then(|()| std::fs::copy(n.log_path(), to.join("node.log")).map(|_| ()));
        match copied {
            Ok(()) => format!("its data dir and log are kept in {}", to.display()),
            Err(e) => format!("its data dir could not be kept ({e})"),
        }
    }

    fn leader(&self) -> usize {
        wait_for(
            || self.c.leader_index(),
            READY_BOUND,
            &format!("a leader (nemesis seed {})", self.seed),
        )
    }

    fn follower(&mut self) -> usize {
        let leader = self.leader();
        let followers = self.c.followers(leader);
        self.rng.pick(&followers)
    }

    /// Every node answers `/readyz` 200 (and its process runs) within [`READY_BOUND`].
    fn wait_all_ready(&mut self, after: &str) {
        let deadline = Instant::now() + READY_BOUND;
        for i in 0..self.c.nodes.len() {
            loop {
                if !self.c.nodes[i].is_running() {
                    let kept = self.keep_data_dir(i);
                    self.fail(&format!(
                        "node {} is not running after {after} (it refused to start or died); \
                         {kept}; its log tail:\n{}",
                        i + 1,
                        tail(&self.c.nodes[i].log_path(), 40)
                    ));
                }
                if matches!(http_get(&self.c.nodes[i].url("/readyz")), Ok((200, _))) {
                    break;
                }
                if Instant::now() >= deadline {
                    self.fail(&format!(
                        "node {} not ready within {READY_BOUND:?} after {after}",
                        i + 1
                    ));
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn inject(&mut self, fault: Fault) {
        let began = Instant::now();
        println!(
            "nemesis: [{:.1}s] {}",
            self.started.elapsed().as_secs_f64(),
            fault.name()
        );
        match fault {
            Fault::KillLeader => {
                let leader = self.leader();
                self.kill_and_restart(leader);
            }
            Fault::KillFollower => {
                let follower = self.follower();
                self.kill_and_restart(follower);
            }
            Fault::PauseLeader => {
                let leader = self.leader();
                self.pause(leader);
            }
            Fault::PauseFollower => {
                let follower = self.follower();
                self.pause(follower);
            }
            Fault::KillAll => {
                for node in &mut self.c.nodes {
                    node.kill9();
                }
                thread::sleep(self.rng.millis(0, 1000));
                let mut order: Vec<usize> = (0..self.c.nodes.len()).collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, self.rng.below(i as u64 + 1) as usize);
                }
                for i in order {
                    self.c.nodes[i].restart();
                    thread::sleep(self.rng.millis(0, 300));
                }
            }
            Fault::KillDuringSnapshot => self.kill_during_snapshot(),
            Fault::RemoveWipeRejoin => self.remove_wipe_rejoin(),
        }
        *self.injected.entry(fault.name()).or_default() += 1;
        let injected = began.elapsed();
        self.wait_all_ready(fault.name());
        println!(
            "nemesis:   injected in {:.1}s, every node ready {:.1}s later",
            injected.as_secs_f64(),
            (began.elapsed() - injected).as_secs_f64()
        );
    }

    fn kill_and_restart(&mut self, node: usize) {
        self.c.nodes[node].kill9();
        thread::sleep(self.rng.millis(0, 2000));
        self.c.nodes[node].restart();
    }

    /// SIGSTOP for 0.5-8 s: below and above the election timeout (1.5-3 s), and above a
    /// request's timeout plus slack, which requests forwarded to a stopped leader must keep.
    fn pause(&mut self, node: usize) {
        let pause = self.rng.millis(500, 8000);
        println!("nemesis:   node {} stopped for {pause:?}", node + 1);
        self.pauses.set(node, true);
        self.signal(node, "-STOP");
        thread::sleep(pause);
        self.signal(node, "-CONT");
        self.pauses.set(node, false);
    }

    fn raft_status(&self, node: usize, key: &str) -> Option<u64> {
        self.c.nodes[node].status().ok()?["store"]["raft"][key].as_u64()
    }

    /// A follower stays down until the leader purged its log past the follower's position, so
    /// it must catch up by snapshot; it is killed again while it receives the snapshot (0-300 ms
    /// after `snapshots/receiving-*.tmp` appears), while it installs it (0-300 ms after that
    /// file is gone) or 0-1.5 s after its restart, and restarted.
    fn kill_during_snapshot(&mut self) {
        let follower = self.follower();
        let Some(position) = self.raft_status(follower, "last_log_index") else {
            self.notes
                .push("kill-during-snapshot: the follower's /status did not answer".into());
            return self.kill_and_restart(follower);
        };
        self.c.nodes[follower].kill9();
        let leader = self.leader();
        let deadline = Instant::now() + PURGE_BOUND;
        loop {
            if self
                .raft_status(leader, "purged_index")
                .is_some_and(|purged| purged > position)
            {
                break;
            }
            if Instant::now() >= deadline {
                self.notes.push(format!(
                    "kill-during-snapshot: the leader did not purge past index {position} within \
                     {PURGE_BOUND:?}; the follower may have caught up from the log"
                ));
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
        let purged = self.raft_status(leader, "purged_index").unwrap_or(0);
        let snapshots = self.c.nodes[follower].data_dir.join("snapshots");
        self.c.nodes[follower].restart();
        let restarted = Instant::now();
        let when = match self.rng.below(3) {
            0 => {
                let delay = self.rng.millis(0, 300);
                if wait_receiving(&snapshots, true, Duration::from_secs(20)) {
                    thread::sleep(delay);
                    format!("{delay:?} after receiving-*.tmp appeared")
                } else {
                    self.notes.push(
                        "kill-during-snapshot: no receiving-*.tmp appeared within 20 s".into(),
                    );
                    "after no receiving-*.tmp appeared".to_owned()
                }
            }
            1 => {
                // Received in full: the commit, install and log purge follow.
                let delay = self.rng.millis(0, 300);
                if wait_receiving(&snapshots, true, Duration::from_secs(20))
                    && wait_receiving(&snapshots, false, Duration::from_secs(20))
                {
                    thread::sleep(delay);
                    format!("{delay:?} after receiving-*.tmp was gone (install)")
                } else {
                    self.notes
                        .push("kill-during-snapshot: no snapshot was received within 40 s".into());
                    "after no snapshot was received".to_owned()
                }
            }
            _ => {
                thread::sleep(self.rng.millis(0, 1500));
                "at random".to_owned()
            }
        };
        self.c.nodes[follower].kill9();
        println!(
            "nemesis:   node {} (down at index {position}, leader purged to {purged}) killed \
             {:?} after its restart, {when}",
            follower + 1,
            restarted.elapsed()
        );
        self.c.nodes[follower].restart();
    }

    /// `DELETE /remove` of a follower, kill -9, wipe its data dir, start it empty with `--join`
    /// naming a random other member, until the leader lists it as a voter again.
    fn remove_wipe_rejoin(&mut self) {
        let follower = self.follower();
        let id = self.c.nodes[follower].id;
        let deadline = Instant::now() + READY_BOUND;
        loop {
            let leader = self.leader();
            let removed = http_request_as(
                "DELETE",
                &self.c.nodes[leader].url("/remove"),
                None,
                Some(&json!({ "id": id }).to_string()),
            );
            if removed.as_ref().is_ok_and(|r| r.status == 200) {
                break;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("DELETE /remove of node {id}: {removed:?}"));
            }
            thread::sleep(Duration::from_millis(200));
        }
        self.c.nodes[follower].kill9();
        if let Err(e) = std::fs::remove_dir_all(&self.c.nodes[follower].data_dir) {
            self.fail(&format!("wipe node {id}'s data dir: {e}"));
        }
        let others: Vec<usize> = (0..self.c.nodes.len()).filter(|&i| i != follower).collect();
        let via = self.c.nodes[self.rng.pick(&others)].base_url();
        self.c.nodes[follower].start(Some(&via));
        let seed = self.seed;
        wait_for(
            || {
                let leader = self.c.leader_index()?;
                voters(&self.c.nodes[leader].base_url())?
                    .contains(&id)
                    .then_some(())
            },
            READY_BOUND,
            &format!("node {id} to be a voter again after its rejoin (nemesis seed {seed})"),
        );
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Waits until a `receiving-*.tmp` file is in `snapshots` (`present`) or none is.
fn wait_receiving(snapshots: &Path, present: bool, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        let found = std::fs::read_dir(snapshots).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("receiving-") && name.ends_with(".tmp")
            })
        });
        if found == present {
            return true;
        }
        thread::sleep(Duration::from_millis(2));
    }
    false
}

/// Voter ids in `/nodes?ver=2` of `base`.
fn voters(base: &str) -> Option<Vec<u64>> {
    let (status, body) = http_get(&format!("{base}/nodes?ver=2")).ok()?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    Some(
        v["nodes"]
            .as_array()?
            .iter()
            .filter(|n| n["voter"] == true)
            .filter_map(|n| n["id"].as_str()?.parse().ok())
            .collect(),
    )
}

fn all_rows(base: &str, sql: &str) -> Result<Vec<Vec<Value>>, String> {
    first_values(&query_at(base, sql, "none")?)
}

fn as_i64(v: &Value) -> i64 {
    v.as_i64().unwrap_or(i64::MIN)
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

#[test]
fn nemesis() {
    let settings = Settings::from_env();
    println!("nemesis seed: {}", settings.seed);
    println!(
        "nemesis: {} nodes, {:?} of faults ({}), ?timeout={REQUEST_TIMEOUT:?}, slack {SLACK:?}",
        settings.nodes,
        settings.budget,
        settings
            .faults
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let started = Instant::now();
    let c = Cluster::start(
        settings.nodes,
        &["--snapshot-threshold", SNAPSHOT_THRESHOLD],
    );
    let leader_base = c.nodes[c.wait_leader(Duration::from_secs(20))].base_url();
    let schema = json!([
        "CREATE TABLE acked (id INTEGER PRIMARY KEY)",
        "CREATE TABLE bank (id INTEGER PRIMARY KEY, bal INTEGER NOT NULL CHECK (bal >= 0))",
        "CREATE TABLE transfers (id INTEGER PRIMARY KEY, src INTEGER, dst INTEGER, amount INTEGER)",
        "CREATE TABLE padding (id INTEGER PRIMARY KEY, pad BLOB)"
    ]);
    check_results(&execute_at(&leader_base, &schema).expect("create tables")).expect("tables");
    let accounts: Vec<Value> = (0..ACCOUNTS)
        .map(|id| {
            json!([
                "INSERT INTO bank (id, bal) VALUES (?, ?)",
                id,
                INITIAL_BALANCE
            ])
        })
        .collect();
    check_results(&execute_at(&leader_base, &Value::Array(accounts)).expect("accounts"))
        .expect("accounts");
    // 256 KiB rows: a snapshot large enough to be caught in transfer.
    for _ in 0..settings.pad_mib * 4 {
        let pad = json!([["INSERT INTO padding (pad) VALUES (randomblob(262144))"]]);
        check_results(&execute_at(&leader_base, &pad).expect("padding")).expect("padding");
    }

    let urls: Vec<String> = c.nodes.iter().map(Node::base_url).collect();
    let pauses = Arc::new(Pauses::new(c.nodes.len()));
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let client = || Client {
        http: reqwest::blocking::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .pool_max_idle_per_host(0)
            .build()
            .expect("HTTP client"),
        urls: urls.clone(),
        pauses: pauses.clone(),
        stats: stats.clone(),
    };
    let mut workers = Vec::new();
    for w in 0..INSERT_WORKERS {
        let (client, stop) = (client(), stop.clone());
        let seed = settings.seed ^ (w + 1).wrapping_mul(0x1000_0000_01B3);
        workers.push(thread::spawn(move || insert_worker(client, w, seed, stop)));
    }
    for w in 0..BANK_WORKERS {
        let (client, stop) = (client(), stop.clone());
        let seed = settings.seed ^ (w + 101).wrapping_mul(0x1000_0000_01B3);
        workers.push(thread::spawn(move || bank_worker(client, w, seed, stop)));
    }

    let mut nemesis = Nemesis {
        c,
        rng: Rng::new(settings.seed),
        seed: settings.seed,
        pauses: pauses.clone(),
        started,
        injected: BTreeMap::new(),
        notes: Vec::new(),
    };
    // Every kind once in a seeded order, then seeded picks: a short run still sees each kind.
    let mut plan = settings.faults.clone();
    for i in (1..plan.len()).rev() {
        plan.swap(i, nemesis.rng.below(i as u64 + 1) as usize);
    }
    let faults_started = Instant::now();
    let mut next = 0;
    while faults_started.elapsed() < settings.budget {
        let fault = match plan.get(next) {
            Some(f) => *f,
            None => nemesis.rng.pick(&settings.faults),
        };
        next += 1;
        nemesis.inject(fault);
        thread::sleep(nemesis.rng.millis(300, 1500));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        if w.join().is_err() {
            nemesis.fail("a client thread panicked");
        }
    }
    nemesis.wait_all_ready("the last fault");

    // Everything acknowledged must be on every node once each has applied the leader's log.
    let leader = nemesis.leader();
    let leader_base = nemesis.c.nodes[leader].base_url();
    let marker = http_post(
        &format!("{leader_base}/db/execute?raft_index"),
        json!(["INSERT INTO acked (id) VALUES (1)"]).to_string(),
    )
    .ok()
    .filter(|(status, _)| *status == 200)
    .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
    .unwrap_or_else(|| nemesis.fail("the final write through the leader failed"));
    let index = marker["raft_index"]
        .as_u64()
        .unwrap_or_else(|| nemesis.fail(&format!("final write has no raft_index: {marker}")));
    for i in 0..nemesis.c.nodes.len() {
        let seed = nemesis.seed;
        wait_for(
            || (nemesis.raft_status(i, "applied_index")? >= index).then_some(()),
            Duration::from_secs(60),
            &format!(
                "node {} to apply index {index} (nemesis seed {seed})",
                i + 1
            ),
        );
    }
    let acked_inserts = stats
        .acked_inserts
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let acked_transfers = stats
        .acked_transfers
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let mut lost = 0usize;
    let mut problems = Vec::new();
    let mut fingerprints = Vec::new();
    for (i, node) in nemesis.c.nodes.iter().enumerate() {
        let base = node.base_url();
        let read = |sql: &str| {
            all_rows(&base, sql).unwrap_or_else(|e| {
                nemesis.fail(&format!("node {}: {sql}: {e}", i + 1));
            })
        };
        let present: HashSet<i64> = read("SELECT id FROM acked")
            .iter()
            .map(|r| as_i64(&r[0]))
            .collect();
        let missing: Vec<i64> = acked_inserts
            .iter()
            .copied()
            .filter(|id| !present.contains(id))
            .collect();
        let transfers = read("SELECT id, src, dst, amount FROM transfers");
        let ledger: HashSet<i64> = transfers.iter().map(|r| as_i64(&r[0])).collect();
        let missing_transfers: Vec<i64> = acked_transfers
            .iter()
            .copied()
            .filter(|id| !ledger.contains(id))
            .collect();
        let mut expected: HashMap<i64, i64> = (0..ACCOUNTS).map(|a| (a, INITIAL_BALANCE)).collect();
        for r in &transfers {
            *expected.entry(as_i64(&r[1])).or_default() -= as_i64(&r[3]);
            *expected.entry(as_i64(&r[2])).or_default() += as_i64(&r[3]);
        }
        let balances: HashMap<i64, i64> = read("SELECT id, bal FROM bank")
            .iter()
            .map(|r| (as_i64(&r[0]), as_i64(&r[1])))
            .collect();
        let total: i64 = balances.values().sum();
        lost += missing.len() + missing_transfers.len();
        if !missing.is_empty() {
            problems.push(format!(
                "node {}: {} acknowledged inserts missing (first {:?})",
                i + 1,
                missing.len(),
                &missing[..missing.len().min(10)]
            ));
        }
        if !missing_transfers.is_empty() {
            problems.push(format!(
                "node {}: {} acknowledged transfers missing (first {:?})",
                i + 1,
                missing_transfers.len(),
                &missing_transfers[..missing_transfers.len().min(10)]
            ));
        }
        if total != ACCOUNTS * INITIAL_BALANCE {
            problems.push(format!(
                "node {}: the bank holds {total}, not {}",
                i + 1,
                ACCOUNTS * INITIAL_BALANCE
            ));
        }
        if balances != expected {
            problems.push(format!(
                "node {}: balances {balances:?} do not match the transfer ledger {expected:?}",
                i + 1
            ));
        }
        let mut fingerprint = read("SELECT COUNT(*), SUM(id) FROM acked");
        fingerprint.extend(read("SELECT COUNT(*), SUM(id), SUM(amount) FROM transfers"));
        fingerprint.extend(read(
            "SELECT group_concat(bal) FROM (SELECT bal FROM bank ORDER BY id)",
        ));
        fingerprints.push(fingerprint);
    }
    if fingerprints.windows(2).any(|w| w[0] != w[1]) {
        problems.push(format!("the nodes hold different data: {fingerprints:?}"));
    }
    for node in &nemesis.c.nodes {
        let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
        let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
        if !panics.is_empty() {
            problems.push(format!(
                "node {} logged {} panics, first: {}",
                node.id,
                panics.len(),
                panics[0]
            ));
        }
    }
    let late = stats.late.lock().map(|v| v.clone()).unwrap_or_default();
    if !late.is_empty() {
        problems.push(format!(
            "{} answers came later than ?timeout {REQUEST_TIMEOUT:?} + slack {SLACK:?}, e.g.:\n  {}",
            late.len(),
            late[..late.len().min(10)].join("\n  ")
        ));
    }

    let max_latency = stats
        .max_latency
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let not_acked = stats
        .not_acked
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let faults_total: u64 = nemesis.injected.values().sum();
    println!("---- nemesis summary ----");
    println!("seed: {}", settings.seed);
    println!(
        "nodes: {}, faults for {:?}, whole run {:?}",
        settings.nodes,
        faults_started.elapsed(),
        started.elapsed()
    );
    println!("faults injected: {faults_total} {:?}", nemesis.injected);
    println!("writes acked: {}", acked_inserts.len());
    println!(
        "transfers acked: {} (declined for funds: {})",
        acked_transfers.len(),
        stats.declined_transfers.load(Ordering::Relaxed)
    );
    println!("not acknowledged: {not_acked:?}");
    println!("lost: {lost}");
    println!(
        "max latency: {:?} ({}); answers {}, from a stopped node (exempt) {}, late {}",
        max_latency.0,
        max_latency.1,
        stats.answers.load(Ordering::Relaxed),
        stats.exempt.load(Ordering::Relaxed),
        late.len()
    );
    for note in &nemesis.notes {
        println!("note: {note}");
    }
    if !problems.is_empty() {
        nemesis.c.dump_logs();
        nemesis.fail(&problems.join("\n"));
    }
}
