//! `raftlite`: a Raft-replicated SQLite server. See README.md and ARCHITECTURE.md.

mod auto_backup;
mod backup_cli;
mod bench;
mod config;
mod serve;
mod shell;
mod tls;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = config::Cli::parse();
    let outcome = match cli.command {
        // The shell is a blocking, line-at-a-time program: no async runtime.
        config::Command::Shell(args) => shell::run(args),
        config::Command::Serve(args) => {
            async_runtime().and_then(|rt| rt.block_on(serve::run(args)))
        }
        config::Command::Bench(args) => {
            async_runtime().and_then(|rt| rt.block_on(bench::run(args)))
        }
        config::Command::Backup(args) => {
            async_runtime().and_then(|rt| rt.block_on(backup_cli::run(args)))
        }
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftlite: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}
