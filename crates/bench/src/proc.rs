//! What `/proc` says about a process: memory (VmRSS, VmHWM) and storage traffic, and the
//! machine's load.

use crate::waits::POLL;

/// `/proc/PID/status` figures, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcMem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// Reads VmRSS and VmHWM of `pid`; `None` once it has exited (or off Linux).
pub fn proc_mem(pid: u32) -> Option<ProcMem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
    };
    Some(ProcMem {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// Bytes a process sent to storage and fetched from it (`write_bytes` and `read_bytes` of
/// `/proc/PID/io`: direct writes, and page-cache pages it dirtied, whether or not flushed yet).
#[derive(Clone, Copy, Debug)]
pub struct DiskIo {
    pub written: u64,
    pub read: u64,
}

impl DiskIo {
    pub fn since(self, before: DiskIo) -> DiskIo {
        DiskIo {
            written: self.written.saturating_sub(before.written),
            read: self.read.saturating_sub(before.read),
        }
    }
}

pub fn proc_io(pid: u32) -> Option<DiskIo> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().parse::<u64>().ok())
    };
    Some(DiskIo {
        written: field("write_bytes:")?,
        read: field("read_bytes:")?,
    })
}

/// Resets `pid`'s VmHWM to its current RSS (Linux >= 4.0), so that a later VmHWM is the peak of
/// what happened in between. `false` when not permitted.
pub fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// The first three fields of `/proc/loadavg`: other work on the machine skews every figure.
pub fn load_average() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// The server's memory around one backup.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerMem {
    /// VmRSS just before the backup started.
    pub rss_before_kib: Option<u64>,
    /// VmHWM just before: the peak of the server's whole life so far (the fill included).
    pub hwm_before_kib: Option<u64>,
    /// The peak during the backup: VmHWM after a reset at the start when `exact`, otherwise the
    /// largest VmRSS sampled every [`POLL`].
    pub peak_kib: Option<u64>,
    pub exact: bool,
}

/// Runs `work` while watching the memory of process `pid` (see [`ServerMem`]).
pub async fn watch_memory<F: std::future::Future>(pid: u32, work: F) -> (F::Output, ServerMem) {
    let before = proc_mem(pid);
    let exact = reset_hwm(pid);
    let (out, sampled) = sample_peaks(&[pid], work).await;
    let sampled = before
        .map(|m| m.rss_kib)
        .max(sampled.into_iter().flatten().max());
    let after = proc_mem(pid);
    let peak = match (exact, after) {
        (true, Some(m)) => Some(m.hwm_kib).max(sampled),
        _ => sampled,
    };
    let mem = ServerMem {
        rss_before_kib: before.map(|m| m.rss_kib),
        hwm_before_kib: before.map(|m| m.hwm_kib),
        peak_kib: peak,
        exact: exact && after.is_some(),
    };
    (out, mem)
}

/// Runs `work` while sampling the VmRSS of every process in `pids` every [`POLL`]; returns
/// its output and each process's largest sample.
pub async fn sample_peaks<F: std::future::Future>(
    pids: &[u32],
    work: F,
) -> (F::Output, Vec<Option<u64>>) {
    let mut peaks: Vec<Option<u64>> = vec![None; pids.len()];
    let mut tick = tokio::time::interval(POLL);
    tokio::pin!(work);
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick() => {
                for (peak, &pid) in peaks.iter_mut().zip(pids) {
                    if let Some(m) = proc_mem(pid) {
                        *peak = (*peak).max(Some(m.rss_kib));
                    }
                }
            }
        }
    };
    (out, peaks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_memory_is_readable() {
        let Some(mem) = proc_mem(std::process::id()) else {
            return; // not Linux
        };
        assert!(mem.rss_kib > 0 && mem.hwm_kib >= mem.rss_kib, "{mem:?}");
    }
}
