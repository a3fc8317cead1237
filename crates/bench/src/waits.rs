//! How long the bench waits for anything, and how often it looks.

use std::time::{Duration, Instant};

use anyhow::bail;

/// Every wait (node ready, membership, a request) gives up after this long.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How often child processes and the server are sampled (exit, `/proc/PID/status`).
pub const POLL: Duration = Duration::from_millis(5);

/// Polls `check` until it succeeds. Fails early when `exited` names a process that died (it
/// would never succeed then) and after [`DEADLINE`], quoting `check`'s last complaint.
pub async fn poll_until<T, F, Fut, E>(what: &str, mut check: F, mut exited: E) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
    E: FnMut() -> Option<String>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        let why = match check().await {
            Ok(v) => return Ok(v),
            Err(why) => why,
        };
        if let Some(gone) = exited() {
            bail!("{gone} while waiting for {what}");
        }
        if Instant::now() >= deadline {
            bail!("timed out after {DEADLINE:?} waiting for {what} (last: {why})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
