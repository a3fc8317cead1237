//! `raftlite`: a Raft-replicated SQLite server. See README.md and ARCHITECTURE.md.

mod bench;
mod config;
mod serve;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = config::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftlite: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        config::Command::Serve(args) => runtime.block_on(serve::run(args)),
        config::Command::Bench(args) => runtime.block_on(bench::run(args)),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftlite: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
