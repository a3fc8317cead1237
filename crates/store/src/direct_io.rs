//! Direct writes (`O_DIRECT | O_DSYNC`) with the fallback every caller needs: the Raft log's
//! segments and a restore's staging file both write large blocks this way, skipping the copy
//! into fresh page cache (the largest CPU cost we measured for them) and the separate fsync.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Alignment of direct writes: offsets, lengths and buffer addresses must be multiples of the
/// device's logical block size, at most 4 KiB on the devices we run on.
pub const ALIGN: usize = 4096;

/// Opens `path` with `options` plus `O_DIRECT | O_DSYNC` (each write durable when it returns,
/// the file's size included); `Ok(None)` when the file system refuses direct I/O (tmpfs does):
/// the caller then writes through the page cache and fsyncs.
pub fn open(options: &OpenOptions, path: &Path) -> io::Result<Option<File>> {
    let flags = rustix::fs::OFlags::DIRECT | rustix::fs::OFlags::DSYNC;
    match options.clone().custom_flags(flags.bits() as i32).open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if refused(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a direct open or write failed for want of alignment or support (`EINVAL`), which
/// a write through the page cache does not meet.
pub fn refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

/// Where in `buffer` an [`ALIGN`]-aligned address starts (below [`ALIGN`] for a byte buffer; a
/// larger answer could only mean an unaligned write, which a direct write refuses).
pub fn aligned_start(buffer: &[u8]) -> usize {
    buffer.as_ptr().align_offset(ALIGN).min(ALIGN)
}
