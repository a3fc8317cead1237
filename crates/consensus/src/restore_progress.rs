//! What a restore led by this node is doing, kept on the node for `/status` (a type of its own so
//! that the node and the restore driver both use it without importing each other).

/// What the restore this node runs as leader is doing: `/status` shows it, so a client whose
/// answer was lost can tell a restore still under way from one that ended without effect.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreProgress {
    /// The timeline the restore starts if it takes effect.
    pub timeline_id: String,
    /// `checking` (integrity_check and hash), `sending` (chunks), `committing`.
    pub phase: &'static str,
    pub bytes_sent: u64,
    pub bytes_total: u64,
    pub started_at_unix_ms: i64,
}
