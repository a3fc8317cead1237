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
    let url = format!("{leader}/db/execute");
    let body = json!([[INSERT, VALUE]]).to_string();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, url, body, stop) = (http.clone(), url.clone(), body.clone(), stop.clone());
        writers.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let start = Instant::now();
                if stop(start) {
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
                    // Don't spin against a node that is refusing (e.g. 503 during an election).
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
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
}
