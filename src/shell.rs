//! `raftlite shell`: an interactive SQL shell like rqlite's CLI.

use crate::config::ShellArgs;

pub fn run(_args: ShellArgs) -> anyhow::Result<()> {
    anyhow::bail!("the shell is not implemented yet")
}
