//! Streaming a backup from its destination into a restore request's body, with bounded memory.

use std::io::{self, Write};
use std::sync::Arc;

use raftlite_backup::{BackupError, BackupId, Destination, Identity};

/// A backup to stream, and the sha256 its database file must have.
#[derive(Clone)]
pub struct BackupStream {
    pub dest: Destination,
    pub id: BackupId,
    pub identity: Option<Identity>,
    pub plain_sha256: String,
}

/// The request header that makes the node check the upload's sha256.
pub const EXPECT_SHA256_HEADER: &str = "x-raftlite-expect-sha256";
/// Bytes per piece of a streamed backup.
const STREAM_CHUNK: usize = 1 << 20;

/// Told how far an upload got: a progress bar in the CLI, nothing in the benchmarks.
pub trait UploadProgress: Send + Sync {
    /// `bytes` more plain bytes went to the request body.
    fn sent(&self, bytes: u64);
    /// Every byte was sent and checked; the node now checks, replicates and swaps in the file.
    fn all_sent(&self);
}

/// Progress that nobody watches.
pub struct NoProgress;

impl UploadProgress for NoProgress {
    fn sent(&self, _bytes: u64) {}
    fn all_sent(&self) {}
}

/// The plain bytes of a streamed backup, sent to the request body in [`STREAM_CHUNK`] pieces
/// (from the decompression thread, hence the blocking send).
struct BodySink {
    tx: tokio::sync::mpsc::Sender<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    progress: Arc<dyn UploadProgress>,
}

impl BodySink {
    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(STREAM_CHUNK));
        let len = piece.len() as u64;
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| io::Error::other("the upload to the node stopped"))?;
        self.progress.sent(len);
        Ok(())
    }
}

impl Write for BodySink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = STREAM_CHUNK - self.buf.len();
        let take = room.min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() >= STREAM_CHUNK {
            self.send_buffered()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
    }
}

/// The request body streaming `backup`, and the task that feeds it: the body ends only after
/// the task's every check passed; a failed check ends it with an error, which cuts the upload
/// off (the node refuses an incomplete upload). The task's result says which.
pub fn backup_body(
    backup: BackupStream,
    progress: Arc<dyn UploadProgress>,
) -> (
    reqwest::Body,
    tokio::task::JoinHandle<Result<(), BackupError>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Vec<u8>>>(4);
    let sink = BodySink {
        tx: tx.clone(),
        buf: Vec::with_capacity(STREAM_CHUNK),
        progress: progress.clone(),
    };
    let feeder = tokio::spawn(async move {
        let streamed = raftlite_backup::stream_backup(
            &backup.dest,
            &backup.id,
            backup.identity.as_ref(),
            sink,
        )
        .await;
        match &streamed {
            Ok(_) => progress.all_sent(),
            Err(e) => {
                let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
            }
        }
        // Dropping the last sender ends the body (after an error, the error ended it).
        drop(tx);
        streamed.map(|_| ())
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    (reqwest::Body::wrap_stream(stream), feeder)
}
