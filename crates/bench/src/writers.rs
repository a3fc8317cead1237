//! Concurrent single-row writers, and what a measurement window saw of them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::http::{insert_once, INSERT, VALUE};

/// Run before each measurement and not counted: fills connection pools and caches.
pub const WARMUP: Duration = Duration::from_secs(1);

/// What one measurement window saw.
#[derive(Default)]
pub struct Stats {
    pub acked: u64,
    pub failed: u64,
    pub latencies: Vec<Duration>,
    pub window: Duration,
    /// How the failures looked (`HTTP 503`, `SQL error: ...`), with counts, for the report.
    pub failures: BTreeMap<String, u64>,
}

impl Stats {
    pub fn per_sec(&self) -> f64 {
        self.acked as f64 / self.window.as_secs_f64()
    }

    /// Nearest-rank percentile in milliseconds (`p` in 0..=1); `None` without samples.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        let n = self.latencies.len();
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n.max(1));
        self.latencies.get(rank - 1).map(|d| d.as_secs_f64() * 1e3)
    }

    /// Prints the failures, one line per kind, each after `prefix`.
    pub fn print_failures(&self, prefix: &str) {
        for (kind, count) in &self.failures {
            eprintln!("{prefix}{count} x {kind}");
        }
    }
}

/// A sent insert: when it started and ended, and how it went.
pub struct Sample {
    start: Instant,
    end: Instant,
    outcome: Result<(), String>,
}

/// One kind of acknowledged write that clients send back to back: a raftlite INSERT, an etcd
/// put. The same loop, windows and statistics then serve every system measured.
pub trait WriteOp: Clone + Send + Sync + 'static {
    /// Sends write number `seq` of client `client`; `Ok` only once it is acknowledged,
    /// otherwise a short description of the failure (failures are counted by description).
    fn send(
        &self,
        client: usize,
        seq: u64,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// A single-row INSERT into `bench` through raftlite's `POST /db/execute`.
#[derive(Clone)]
pub struct RaftliteInsert {
    http: reqwest::Client,
    url: String,
    body: String,
}

impl RaftliteInsert {
    pub fn new(http: &reqwest::Client, leader: &str) -> Self {
        RaftliteInsert {
            http: http.clone(),
            url: format!("{leader}/db/execute"),
            body: json!([[INSERT, VALUE]]).to_string(),
        }
    }
}

impl WriteOp for RaftliteInsert {
    async fn send(&self, _client: usize, _seq: u64) -> Result<(), String> {
        insert_once(&self.http, &self.url, self.body.clone()).await
    }
}

/// `clients` writers inserting single rows into `bench` on `leader` back to back, each until
/// `stop` says so (asked with the time before every insert); every attempt is recorded.
pub fn spawn_writers<S>(
    http: &reqwest::Client,
    leader: &str,
    clients: usize,
    stop: S,
) -> tokio::task::JoinSet<Vec<Sample>>
where
    S: Fn(Instant) -> bool + Clone + Send + 'static,
{
    spawn_clients(RaftliteInsert::new(http, leader), clients, stop)
}

/// `clients` writers sending `op` back to back, each until `stop` says so (asked with the time
/// before every write); every attempt is recorded.
pub fn spawn_clients<W, S>(op: W, clients: usize, stop: S) -> tokio::task::JoinSet<Vec<Sample>>
where
    W: WriteOp,
    S: Fn(Instant) -> bool + Clone + Send + 'static,
{
    let mut writers = tokio::task::JoinSet::new();
    for client in 0..clients {
        let (op, stop) = (op.clone(), stop.clone());
        writers.spawn(async move {
            let mut samples = Vec::new();
            for seq in 0u64.. {
                let start = Instant::now();
                if stop(start) {
                    break;
                }
                let outcome = op.send(client, seq).await;
                let failed = outcome.is_err();
                samples.push(Sample {
                    start,
                    end: Instant::now(),
                    outcome,
                });
                if failed {
                    // Don't spin against a node that is refusing (e.g. 503 during an election).
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            samples
        });
    }
    writers
}

/// Waits for every writer and returns all their samples.
pub async fn join_writers(
    mut writers: tokio::task::JoinSet<Vec<Sample>>,
) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    while let Some(done) = writers.join_next().await {
        samples.extend(done.context("a client task failed")?);
    }
    Ok(samples)
}

/// The writers' samples that fall inside `from..until` as throughput and latency figures, and
/// how many writes were acknowledged in all (warm-up included: for the `COUNT(*)` check).
pub fn window_stats(samples: Vec<Sample>, from: Instant, until: Instant) -> (Stats, u64) {
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
    (stats, acked_total)
}

/// One client count measured on a running cluster.
pub struct Measured {
    pub clients: usize,
    pub stats: Stats,
    /// What the cluster holds after the run (`COUNT(*)`, etcd's key count) and the writes
    /// acknowledged on it so far, warm-up included: the first must not be below the second.
    pub check: (u64, u64),
}

/// Measures every count in `clients` in turn on one running cluster: [`WARMUP`], then
/// `duration` counted, of `op(run)` (`run` numbers the measurements, so that writes can differ
/// between them), then `stored()`, what the cluster holds. `label` names it in progress lines.
pub async fn measure_runs<W, C, Fut>(
    label: &str,
    clients: &[usize],
    duration: Duration,
    op: impl Fn(usize) -> W,
    mut stored: C,
) -> anyhow::Result<Vec<Measured>>
where
    W: WriteOp,
    C: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let mut acked_total = 0;
    let mut out = Vec::new();
    for (run, &n) in clients.iter().enumerate() {
        eprintln!("bench: {label}, {n} clients for {duration:?}");
        let start = Instant::now();
        let (measure_from, end) = (start + WARMUP, start + WARMUP + duration);
        let writers = spawn_clients(op(run), n, move |now| now >= end);
        let samples = join_writers(writers).await?;
        let (stats, acked) = window_stats(samples, measure_from, end);
        acked_total += acked;
        stats.print_failures(&format!("bench: {label}, {n} clients: "));
        let count = stored().await?;
        out.push(Measured {
            clients: n,
            stats,
            check: (count, acked_total),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_samples_inside_the_window_count() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let sample = |start: u64, end: u64, ok: bool| Sample {
            start: at(start),
            end: at(end),
            outcome: if ok { Ok(()) } else { Err("HTTP 503".into()) },
        };
        let samples = vec![
            sample(0, 5, true),    // warm-up: acknowledged, not measured
            sample(10, 14, true),  // measured
            sample(12, 13, false), // measured failure
            sample(15, 30, true),  // ends after the window
            sample(16, 18, true),  // measured
        ];
        let (stats, acked_total) = window_stats(samples, at(10), at(20));
        assert_eq!(acked_total, 4);
        assert_eq!(stats.acked, 2);
        assert_eq!(stats.failed, 1);
        assert_eq!(stats.failures.get("HTTP 503"), Some(&1));
        assert_eq!(stats.window, Duration::from_millis(10));
        assert_eq!(stats.per_sec(), 200.0);
        assert_eq!(stats.percentile_ms(0.5), Some(2.0));
        assert_eq!(stats.percentile_ms(0.99), Some(4.0));
        assert_eq!(Stats::default().percentile_ms(0.5), None);
    }

    /// Counts its sends and refuses every fifth, without any server.
    #[derive(Clone, Default)]
    struct Fake {
        sent: std::sync::Arc<std::sync::Mutex<Vec<(usize, u64)>>>,
    }

    impl WriteOp for Fake {
        async fn send(&self, client: usize, seq: u64) -> Result<(), String> {
            self.sent
                .lock()
                .map_err(|e| e.to_string())?
                .push((client, seq));
            if seq % 5 == 4 {
                return Err("refused".into());
            }
            tokio::task::yield_now().await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn every_client_numbers_its_writes_and_stops_when_told() {
        let fake = Fake::default();
        let sent = fake.sent.clone();
        let stop_sent = fake.sent.clone();
        // Stops once 40 writes went out in all, whichever client sent them.
        let stop = move |_: Instant| stop_sent.lock().unwrap().len() >= 40;
        let samples = join_writers(spawn_clients(fake, 3, stop)).await.unwrap();
        let sent = sent.lock().unwrap().clone();
        assert_eq!(samples.len(), sent.len());
        let mut distinct = sent.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), sent.len(), "a (client, seq) was sent twice");
        for client in 0..3 {
            let seqs: Vec<u64> = sent
                .iter()
                .filter(|(c, _)| *c == client)
                .map(|&(_, seq)| seq)
                .collect();
            assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
        }
        let refused = samples.iter().filter(|s| s.outcome.is_err()).count();
        assert_eq!(refused, sent.iter().filter(|(_, seq)| seq % 5 == 4).count());
    }
}
