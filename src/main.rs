//! `raftlite`: a Raft-replicated SQLite server. See README.md and ARCHITECTURE.md.

mod backup_cli;
mod config;
mod recovery_cli;
mod restore_cli;
mod serve;
mod tls;

use clap::Parser;

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    let cli = config::Cli::parse();
    let outcome = match cli.command {
        config::Command::Serve(args) => {
            async_runtime().and_then(|rt| rt.block_on(serve::run(args)))
        }
        config::Command::Backup(args) => {
            async_runtime().and_then(|rt| rt.block_on(backup_cli::run(args)))
        }
        config::Command::Restore(args) => {
            async_runtime().and_then(|rt| rt.block_on(restore_cli::run(args)))
        }
        config::Command::Doctor(args) => recovery_cli::doctor(args),
        config::Command::Recover(args) => async_runtime().and_then(|rt| {
            rt.block_on(async {
                init_cli_tracing();
                recovery_cli::recover(args).await
            })
        }),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftlite: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// glibc gives busy threads their own malloc arenas (up to 8 per core) and keeps what they
/// freed; a server whose blocking threads each touched large buffers (group-commit batches,
/// restore chunks) then holds far more memory than it uses. Two arenas are plenty for this
/// workload.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Warnings of offline commands go to stderr.
fn init_cli_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .try_init();
}

fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}
