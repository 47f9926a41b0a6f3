//! Storage side of backup, restore and the reconciliation after a restore: a consistent copy of the
//! database taken while writes go on, a check of such a copy, and the reads a neighbour answers a
//! restored node's questions with (what it handed over to, or received from, that node and when).
//! Re-queueing goes through the group committer as an ordinary custody job.

use std::path::Path;

use futures::future::BoxFuture;

use super::error::StorageError;

/// A custody handover found in the audit log: `forwarded` to, or `received` from, a neighbour.
#[derive(Debug, Clone)]
pub struct ExchangedRow {
    /// The audit entry's position (the cursor for the next page).
    pub seq: i64,
    pub message_id: [u8; 32],
    /// The message's kind, when the message row is still held.
    pub kind: Option<String>,
    pub at_ms: i64,
}

/// A page of handovers and the cursor for the next page (`None` at the end).
#[derive(Debug, Clone, Default)]
pub struct ExchangedPage {
    pub rows: Vec<ExchangedRow>,
    pub next: Option<i64>,
}

/// A message as a re-queue needs it.
#[derive(Debug, Clone)]
pub struct RequeueCandidate {
    pub id: [u8; 32],
    pub header: Vec<u8>,
    /// 0 once retention purged the payload.
    pub payload_len: i64,
    /// An outbox entry for the asking neighbour exists (waiting, or a dead letter).
    pub queued: bool,
}

/// A message held here and when it was taken into custody.
#[derive(Debug, Clone, Copy)]
pub struct HeldRow {
    pub id: [u8; 32],
    pub received_at_ms: i64,
}

/// High-water marks of a database file, read from the file itself.
#[derive(Debug, Clone, Default)]
pub struct FileMarks {
    pub audit_last_seq: i64,
    pub audit_head_hash: Vec<u8>,
    pub messages: i64,
    pub messages_last_seq: i64,
    pub inbox_last_seq: i64,
    pub outbox_last_seq: i64,
    /// Committed write transactions the file holds (`node_state.commits`, see the commit mark).
    pub commits: i64,
}

/// Recovery reads and the online copy.
pub trait RecoveryStore: Send + Sync {
    /// Writes a consistent copy of the whole database into `out` (an existing, empty file) on a
    /// connection of its own, inside one read transaction: writers are not blocked, and the copy is
    /// the database as it was when the transaction began. Streams page by page (bounded memory).
    fn snapshot_into<'a>(&'a self, out: &'a Path) -> BoxFuture<'a, Result<(), StorageError>>;

    /// Up to `limit` custody entries `event` (`forwarded` or `received`) naming neighbour `peer`,
    /// recorded in `[since_ms, until_ms)`, after audit position `after` (0: from the start of the
    /// window), in log order.
    fn exchanged<'a>(
        &'a self,
        event: &'a str,
        peer: &'a str,
        window: (i64, i64),
        after: i64,
        limit: u32,
    ) -> BoxFuture<'a, Result<ExchangedPage, StorageError>>;

    /// Of `ids`, the messages held here, with the time each was taken into custody.
    fn held<'a>(&'a self, ids: &'a [[u8; 32]]) -> BoxFuture<'a, Result<Vec<HeldRow>, StorageError>>;

    /// Of `ids`, the messages held here, with what is needed to queue them again for `hop`.
    fn requeue_candidates<'a>(&'a self, ids: &'a [[u8; 32]], hop: &'a str)
        -> BoxFuture<'a, Result<Vec<RequeueCandidate>, StorageError>>;
}
