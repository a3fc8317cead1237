//! Running blocking storage work (redb, SQLite) from async code.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `f` on the current worker thread when the runtime can lend it (multi-thread runtime):
/// the caller is waiting for the result anyway, and handing the work to the blocking pool and
/// back costs two thread wake-ups per log append or apply, which dominate a small write.
/// Elsewhere (a current-thread runtime, as in some tests) it uses the blocking pool.
pub async fn run_blocking<T, F>(f: F) -> Result<T, tokio::task::JoinError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => Ok(tokio::task::block_in_place(f)),
        _ => tokio::task::spawn_blocking(f).await,
    }
}
