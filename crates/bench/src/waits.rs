//! How long the bench waits for anything, and how often it looks.

use std::time::Duration;

/// Every wait (node ready, membership, a request) gives up after this long.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How often child processes and the server are sampled (exit, `/proc/PID/status`).
pub const POLL: Duration = Duration::from_millis(5);
