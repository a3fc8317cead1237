//! Ctrl-C and SIGTERM for the backup and restore commands: the work in progress is dropped (its
//! temporary files with it) and the command fails saying what was cleaned up.

use std::future::Future;

/// The command was interrupted; `cleanup` says what that left behind (or did not).
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {signal}; {cleanup}")]
pub struct Interrupted {
    pub signal: &'static str,
    pub cleanup: String,
}

/// Runs `work` unless Ctrl-C or SIGTERM comes first; then `work` is dropped (its temporary
/// files with it) and the command fails with `cleanup` in the message.
pub async fn interruptible<T, E: From<Interrupted>>(
    work: impl Future<Output = Result<T, E>>,
    cleanup: &str,
) -> Result<T, E> {
    tokio::select! {
        result = work => result,
        signal = shutdown_signal() => Err(Interrupted {
            signal,
            cleanup: cleanup.to_string(),
        }
        .into()),
    }
}

/// Resolves on the first Ctrl-C or SIGTERM; never, if no handler can be installed.
pub async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = async {
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    term.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => "Ctrl-C",
            _ = term => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c.await;
        "Ctrl-C"
    }
}
