//! `raftlite bench`: measured throughput figures anyone can rerun.

use crate::config::BenchArgs;

pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench is not implemented yet")
}
