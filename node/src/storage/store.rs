//! The storage interface every engine implements (SQLite, PostgreSQL), and the records its reads
//! return. The conformance suite (`storage::conformance`) holds every engine to it.

use std::collections::BTreeSet;

use futures::future::BoxFuture;

use super::error::StorageError;
use super::jobs::{JobOutcome, WriteJob};
use super::model::{RecallOutcomeRow, SegmentRow, TokenRow};
use super::{recovery, sharing};

/// Nothing to skip (see [`Store::outbox_batch_skipping`]).
static EMPTY_SKIP: BTreeSet<i64> = BTreeSet::new();

/// A transaction that never ends early (see [`Store::commit_parts`]).
fn never() -> bool {
    false
}

/// The parts of `jobs` that `cuts` mark (see [`Store::commit_parts`]), in order; cuts out of order
/// or out of range are passed over, so there is always at least one part.
pub(crate) fn parts<'a>(jobs: &'a [WriteJob], cuts: &[usize]) -> Vec<&'a [WriteJob]> {
    let mut parts = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &end in cuts {
        if end > start && end < jobs.len() {
            parts.push(&jobs[start..end]);
            start = end;
        }
    }
    parts.push(&jobs[start..]);
    parts
}

/// The storage interface. Every method is a single transaction.
pub trait Store: Send + Sync + 'static {
    /// Applies jobs in one transaction, in order; returns one outcome per job. Returns an error (and
    /// commits nothing) if the transaction fails.
    fn commit<'a>(&'a self, jobs: &'a [WriteJob]) -> BoxFuture<'a, Result<Vec<JobOutcome>, StorageError>> {
        self.commit_parts(jobs, &[], &never)
    }
    /// As [`Store::commit`], but the transaction may end early: `cuts` are positions in `jobs`
    /// (ascending) where one part ends and the next begins. After each part but the last the store
    /// asks `end_early`; if it says so, the parts applied so far are committed and only their
    /// outcomes returned (a prefix of `jobs`: the caller commits the rest later). Applying parts in
    /// one transaction is the same as committing them one after another, only with one fsync. The
    /// group committer ends a routine transaction so when 特急 work arrives: a recipient's node can
    /// take a thousand 签收 in one transaction, and the urgent document would wait for all of them.
    fn commit_parts<'a>(&'a self, jobs: &'a [WriteJob], cuts: &'a [usize], end_early: &'a (dyn Fn() -> bool + Send + Sync))
        -> BoxFuture<'a, Result<Vec<JobOutcome>, StorageError>>;
    /// Live outbox entries for `hop`, urgent first: at most `max_messages`, and at most `max_bytes`
    /// of parcels as encoded on the wire (`network::protocol::parcel_size_bound`), except that the
    /// first entry goes whatever its size. Cut to size before any payload is loaded.
    fn outbox_batch<'a>(&'a self, hop: &'a str, max_messages: usize, max_bytes: usize)
        -> BoxFuture<'a, Result<Vec<OutboxItem>, StorageError>> {
        self.outbox_batch_skipping(hop, max_messages, max_bytes, &EMPTY_SKIP, u8::MAX)
    }
    /// As [`Store::outbox_batch`], leaving out the entries whose positions are in `skip` (a
    /// forwarder's batches already on the link, not yet acknowledged) and those whose priority rank
    /// is not below `more_urgent_than` (`u8::MAX`: none). The entries skipped cost only their keys;
    /// no payload of theirs is loaded. The rank bound is for the batches of urgent entries that go
    /// beyond a full window: reading a whole routine batch only to keep its urgent entries loaded
    /// hundreds of payloads for nothing while the urgent ones waited.
    fn outbox_batch_skipping<'a>(&'a self, hop: &'a str, max_messages: usize, max_bytes: usize, skip: &'a BTreeSet<i64>, more_urgent_than: u8)
        -> BoxFuture<'a, Result<Vec<OutboxItem>, StorageError>>;
    /// A unit's inbox after `after`: at most `limit` entries and `max_bytes` of stored messages
    /// (header, signature, payload), the first entry whatever its size. Cut to size before any
    /// payload is loaded, so a page may hold fewer than `limit` entries.
    fn inbox<'a>(&'a self, unit: &'a str, after: i64, limit: u32, max_bytes: usize) -> BoxFuture<'a, Result<Vec<InboxRecord>, StorageError>>;
    /// A page of a unit's inbox entries still waiting to be settled (delivered, neither signed for
    /// nor returned) after `after`, at most `limit`, headers only (no payloads).
    fn inbox_unsettled<'a>(&'a self, unit: &'a str, after: i64, limit: u32) -> BoxFuture<'a, Result<Vec<InboxHeader>, StorageError>>;
    /// One inbox entry.
    fn inbox_entry<'a>(&'a self, unit: &'a str, id: &'a [u8; 32]) -> BoxFuture<'a, Result<Option<InboxRecord>, StorageError>>;
    fn message<'a>(&'a self, id: &'a [u8; 32]) -> BoxFuture<'a, Result<Option<StoredMessage>, StorageError>>;
    fn tracking<'a>(&'a self, id: &'a [u8; 32]) -> BoxFuture<'a, Result<Vec<TrackingRecord>, StorageError>>;
    /// Audit-log entries about one message (its custody events), in order.
    fn events<'a>(&'a self, id: &'a [u8; 32]) -> BoxFuture<'a, Result<Vec<EventRecord>, StorageError>>;
    /// A page of the audit log after `after`.
    fn audit_page(&self, after: i64, limit: u32) -> BoxFuture<'_, Result<Vec<EventRecord>, StorageError>>;
    /// Re-computes the whole audit chain.
    fn audit_verify(&self) -> BoxFuture<'_, Result<ChainCheck, StorageError>>;
    /// Outbox statistics per next hop (live entries and dead letters).
    fn queue_stats(&self) -> BoxFuture<'_, Result<Vec<QueueStat>, StorageError>>;
    /// All dead letters.
    fn dead_letters(&self) -> BoxFuture<'_, Result<Vec<DeadLetterRecord>, StorageError>>;
    /// Decided recalls not yet reported to their senders.
    fn unreported_recalls(&self) -> BoxFuture<'_, Result<Vec<RecallOutcomeRow>, StorageError>>;
    /// Queries asked from units of this node with no outcome yet (id and canonical header), so their
    /// deadlines are watched again after a restart.
    fn open_queries(&self) -> BoxFuture<'_, Result<Vec<([u8; 32], Vec<u8>)>, StorageError>>;
    /// Whether a message that cites the attachment with this SHA-256 (lower-case hex; see
    /// [`citations::cited`](super::citations::cited)) is still needed: received at or after `before_ms`, waiting in an outbox
    /// (dead letters included), or in an inbox. Answered from the citations recorded with each
    /// message, never by reading every header.
    fn attachment_in_use<'a>(&'a self, sha256_hex: &'a str, before_ms: i64) -> BoxFuture<'a, Result<bool, StorageError>>;
    /// Canonical headers of documents held here that `unit` may read (it sent them, or they are in
    /// its inbox and were not recalled) and that cite `sha256_hex` (lower-case hex; see
    /// [`citations::cited`](super::citations::cited)), newest first, at most `limit`. The caller checks them strictly.
    fn documents_readable_by<'a>(&'a self, sha256_hex: &'a str, unit: &'a str, limit: u32) -> BoxFuture<'a, Result<Vec<Vec<u8>>, StorageError>>;
    /// The last inbox position of a unit (0 when its inbox is empty).
    fn inbox_last_seq<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<i64, StorageError>>;
    /// Every registered webhook.
    fn webhooks(&self) -> BoxFuture<'_, Result<Vec<WebhookRow>, StorageError>>;
    /// Every directory segment held.
    fn segments(&self) -> BoxFuture<'_, Result<Vec<SegmentRow>, StorageError>>;
    /// Every unit token (hashes), revoked ones included.
    fn tokens(&self) -> BoxFuture<'_, Result<Vec<TokenRow>, StorageError>>;
    /// The reads of base-data sharing.
    fn sharing(&self) -> &dyn sharing::SharingStore;
    /// The online copy and the reads of the reconciliation after a restore.
    fn recovery(&self) -> &dyn recovery::RecoveryStore;
}

/// Outbox entry joined with its message, ready to send.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub seq: i64,
    pub message_id: [u8; 32],
    /// Priority rank (`Priority::rank`: 0 特急, 1 加急, 2 平件).
    pub priority: u8,
    pub kind: String,
    pub sender: String,
    pub enqueued_at_ms: i64,
    pub recipients: String,
    pub header: Vec<u8>,
    pub signature: Vec<u8>,
    pub payload: Vec<u8>,
    pub hops: String,
}

/// An inbox entry with its message.
#[derive(Debug, Clone)]
pub struct InboxRecord {
    pub seq: i64,
    pub message_id: [u8; 32],
    pub delivered_at_ms: i64,
    pub state: String,
    pub header: Vec<u8>,
    pub signature: Vec<u8>,
    pub payload: Vec<u8>,
}

/// An inbox entry with its message's header only (no payload).
#[derive(Debug, Clone)]
pub struct InboxHeader {
    pub seq: i64,
    pub message_id: [u8; 32],
    pub header: Vec<u8>,
}

/// A stored message.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub header: Vec<u8>,
    pub signature: Vec<u8>,
    pub payload: Vec<u8>,
    pub hops: String,
}

/// A tracking row as read.
#[derive(Debug, Clone)]
pub struct TrackingRecord {
    pub recipient: String,
    pub state: String,
    pub node: String,
    pub at_ms: i64,
    pub detail: Option<String>,
    pub receipt_id: Option<Vec<u8>>,
}

/// An audit-log entry as read.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub seq: i64,
    pub at_ms: i64,
    pub category: String,
    pub message_id: Option<Vec<u8>>,
    pub event: String,
    pub unit: Option<String>,
    pub peer: Option<String>,
    pub detail: Option<String>,
    pub hash: Vec<u8>,
}

/// The outbox toward one next hop.
#[derive(Debug, Clone, Default)]
pub struct QueueStat {
    pub hop: String,
    pub depth: i64,
    pub bytes: i64,
    pub oldest_enqueued_ms: Option<i64>,
    pub dead: i64,
}

/// A unit's webhook as stored: where to push, and how far its inbox was acknowledged.
#[derive(Debug, Clone)]
pub struct WebhookRow {
    pub unit: String,
    pub url: String,
    pub pushed_seq: i64,
}

/// A dead letter as read.
#[derive(Debug, Clone)]
pub struct DeadLetterRecord {
    pub seq: i64,
    pub message_id: Vec<u8>,
    pub hop: String,
    pub recipients: String,
    pub reason: String,
    pub enqueued_at_ms: i64,
    pub attempts: i64,
}

/// The result of re-computing the audit chain.
#[derive(Debug, Clone)]
pub struct ChainCheck {
    pub entries: u64,
    pub head_seq: i64,
    pub head_hash: [u8; 32],
    /// The first entry that does not follow, and why.
    pub first_break: Option<(i64, String)>,
}
