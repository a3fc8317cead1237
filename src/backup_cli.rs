//! `raftlite backup create|list|verify`.

use crate::config::BackupArgs;

pub async fn run(_args: BackupArgs) -> anyhow::Result<()> {
    anyhow::bail!("backup commands are not implemented yet")
}
