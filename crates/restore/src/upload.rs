//! The bodies of a restore request (`POST /db/load`), streamed with bounded memory: a file in
//! [`UPLOAD_CHUNK`] pieces, or a backup from its destination, decrypted and decompressed on
//! the way.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use raftlite_backup::{BackupError, BackupId, Destination, Identity};
use tokio::io::AsyncReadExt;

/// A backup to stream, and the sha256 its database file must have.
#[derive(Clone)]
pub struct BackupStream {
    pub dest: Destination,
    pub id: BackupId,
    pub identity: Option<Identity>,
    /// The database's sha256, for the node to check; `None` for an incremental, whose page
    /// digest the stream checks itself.
    pub plain_sha256: Option<String>,
    /// For an incremental: where its links' page frames wait while the full backup streams.
    pub chain_scratch: Option<std::path::PathBuf>,
}

/// The request header that makes the node check the upload's sha256.
pub const EXPECT_SHA256_HEADER: &str = "x-raftlite-expect-sha256";
/// Bytes per piece of a streamed backup.
const STREAM_CHUNK: usize = 1 << 20;
/// Bytes read from the file per chunk of the upload.
const UPLOAD_CHUNK: usize = 256 * 1024;

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
        let streamed = match &backup.chain_scratch {
            Some(scratch) => {
                raftlite_backup::stream_chain(
                    &backup.dest,
                    &backup.id,
                    backup.identity.as_ref(),
                    sink,
                    scratch,
                )
                .await
            }
            None => {
                raftlite_backup::stream_backup(
                    &backup.dest,
                    &backup.id,
                    backup.identity.as_ref(),
                    sink,
                )
                .await
            }
        };
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

/// The file in [`UPLOAD_CHUNK`] pieces, counted on `progress`, told [`UploadProgress::all_sent`]
/// once all is sent (the cluster works then).
pub fn file_body(path: PathBuf, progress: Arc<dyn UploadProgress>) -> reqwest::Body {
    let stream = futures::stream::try_unfold(None, move |open: Option<tokio::fs::File>| {
        let path = path.clone();
        let progress = progress.clone();
        async move {
            let mut file = match open {
                Some(file) => file,
                None => tokio::fs::File::open(&path).await?,
            };
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                progress.all_sent();
                return Ok(None);
            }
            buf.truncate(n);
            progress.sent(n as u64);
            Ok::<_, io::Error>(Some((buf, Some(file))))
        }
    });
    reqwest::Body::wrap_stream(stream)
}
