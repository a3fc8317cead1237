use std::path::PathBuf;

/// Errors from the storage engine. Each says what happened and, where there is one, what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the meta table of {path} is damaged: {detail}")]
    CorruptMeta { path: PathBuf, detail: String },
    #[error("{path} is not a usable SQLite database: {detail}")]
    NotADatabase { path: PathBuf, detail: String },
    #[error("statement refused: {0}")]
    Refused(String),
    /// A query's rows passed the byte limit given to `Store::query_within`; collecting stopped.
    #[error("the query's results are larger than {limit} bytes, the most one response may carry")]
    ResultTooLarge { limit: usize },
}

impl StoreError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}
