//! Durable custody storage behind one trait.
//!
//! Writes arrive as [`WriteJob`]s and are applied many at a time in one transaction by the group
//! committer (`relay::committer`): that is where throughput comes from, and nothing is acknowledged
//! before its transaction commits. Reads serve the forwarders, the inbox and the status API.
//! SQLite (WAL) is the embedded default; PostgreSQL (`storage.url`) implements the same trait.

pub mod attachments;
pub mod citations;
mod gather;
#[cfg(test)]
pub mod conformance;
pub mod health;
pub mod move_to_postgres;
pub mod recovery;
pub mod sharing;
pub mod postgres;
pub mod sqlite;
pub mod uploads;

use exchange_wire::api::RecipientState;
use futures::future::BoxFuture;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// A storage failure. Nothing was committed when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database holds fewer committed transactions than its commit mark records: acknowledged
    /// writes were lost (a damaged or truncated WAL, or an older copy put in place).
    #[error(
        "the database has lost committed transactions: it holds {in_database} commits but {mark} records {marked}; \
         its write-ahead log was damaged or truncated, or an older copy of the file was put in place"
    )]
    LostCommits { marked: u64, in_database: u64, mark: std::path::PathBuf },
    /// This replica no longer holds the database's lease (PostgreSQL, active/standby): another
    /// replica may be active, so nothing was written.
    #[error("this replica no longer holds the lease on its database: another replica may be active; nothing was written")]
    Fenced,
    /// This storage engine does not do what was asked; the message says what to do instead.
    #[error("{0}")]
    Unsupported(&'static str),
}

/// A message row.
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub id: [u8; 32],
    pub header: Vec<u8>,
    pub signature: [u8; 64],
    pub payload: Vec<u8>,
    pub kind: String,
    pub sender: String,
    pub priority: u8,
    pub created_at_ms: i64,
    pub received_at_ms: i64,
    pub received_from: Option<String>,
    /// JSON list of custody hops.
    pub hops: String,
}

/// Work for a neighbour.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub message_id: [u8; 32],
    pub next_hop: String,
    /// JSON list of recipients.
    pub recipients: String,
    pub priority: u8,
    pub enqueued_at_ms: i64,
}

/// A message landing in a unit's inbox.
#[derive(Debug, Clone)]
pub struct InboxRow {
    pub unit: String,
    pub message_id: [u8; 32],
    pub delivered_at_ms: i64,
}

/// A per-recipient status fact (applied only if it moves the state forward).
#[derive(Debug, Clone)]
pub struct TrackingRow {
    pub message_id: [u8; 32],
    pub recipient: String,
    pub state: RecipientState,
    pub node: String,
    pub at_ms: i64,
    pub detail: Option<String>,
    pub receipt_id: Option<[u8; 32]>,
}

/// An entry for the hash-chained audit log: a custody fact (for tracing), a refusal or an admin action.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub at_ms: i64,
    /// `custody`, `refusal` or `admin`.
    pub category: &'static str,
    pub message_id: Option<[u8; 32]>,
    pub event: &'static str,
    pub unit: Option<String>,
    pub peer: Option<String>,
    pub detail: Option<String>,
}

impl EventRow {
    /// The entry's hash: SHA-256 over the previous entry's hash and this entry's fields, each
    /// length-prefixed (absent optional fields are a single 0 byte; present ones a 1 byte first).
    pub fn chain_hash(&self, prev: &[u8; 32]) -> [u8; 32] {
        self.chain_hash_with(prev, self.category, self.event)
    }

    /// [`Self::chain_hash`] with `category` and `event` given separately (as read back from storage).
    pub fn chain_hash_with(&self, prev: &[u8; 32], category: &str, event: &str) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"GOVX-AUDIT-V1\0");
        h.update(prev);
        h.update(self.at_ms.to_be_bytes());
        let mut put = |s: Option<&[u8]>| match s {
            None => h.update([0u8]),
            Some(b) => {
                h.update([1u8]);
                h.update((b.len() as u32).to_be_bytes());
                h.update(b);
            }
        };
        put(Some(category.as_bytes()));
        put(self.message_id.as_ref().map(|m| m.as_slice()));
        put(Some(event.as_bytes()));
        put(self.unit.as_deref().map(str::as_bytes));
        put(self.peer.as_deref().map(str::as_bytes));
        put(self.detail.as_deref().map(str::as_bytes));
        h.finalize().into()
    }
}

/// Taking custody of one message: stored only if its id is new, together with everything that follows
/// from it. If the id is already held, nothing of this is written (the duplicate is recognised).
#[derive(Debug, Clone, Default)]
pub struct Custody {
    pub message: Option<MessageRow>,
    pub outbox: Vec<OutboxRow>,
    pub inbox: Vec<InboxRow>,
    pub tracking: Vec<TrackingRow>,
    pub events: Vec<EventRow>,
    /// Messages born of this one (a delivery report), stored only when this one is new.
    pub follow_ups: Vec<Custody>,
    /// 撤回 to decide for units hosted here (a recall that is new).
    pub recalls: Vec<RecallRow>,
    /// Recalls whose report this job carries: their outcomes are marked reported.
    pub recalls_reported: Vec<[u8; 32]>,
    /// Base-data sharing rows that follow from this message (see `storage::sharing`).
    pub sharing: Vec<sharing::SharingRow>,
}

/// A recall to decide for one unit hosted here.
#[derive(Debug, Clone)]
pub struct RecallRow {
    pub recall_id: [u8; 32],
    pub message_id: [u8; 32],
    pub unit: String,
    pub original_sender: String,
    pub priority: u8,
    pub at_ms: i64,
}

/// A decided recall whose report is still to be sent.
#[derive(Debug, Clone)]
pub struct RecallOutcomeRow {
    pub recall_id: [u8; 32],
    pub message_id: [u8; 32],
    pub unit: String,
    pub outcome: String,
    pub original_sender: String,
    pub priority: u8,
}

/// Facts recorded unconditionally (acknowledgements from a neighbour, audit entries).
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// Outbox rows the neighbour acknowledged (by outbox seq): removed.
    pub outbox_done: Vec<i64>,
    /// Outbox rows refused for good: kept as dead letters with the reason.
    pub outbox_dead: Vec<(i64, String)>,
    pub tracking: Vec<TrackingRow>,
    pub events: Vec<EventRow>,
}

/// A change to node state outside custody (operators' actions, directory segments, tokens); always
/// recorded in the audit log with its `events`.
#[derive(Debug, Clone)]
pub enum AdminOp {
    /// Store (replace) the held version of a directory segment.
    PutSegment(SegmentRow),
    /// Store a new unit token (its hash only).
    IssueToken(TokenRow),
    /// Revoke a unit token by id.
    RevokeToken { id: String, at_ms: i64 },
    /// Register (or replace) a unit's webhook. A new registration starts after `from_seq`; a
    /// replacement keeps its position unless `restart` (then it starts after `from_seq` again).
    SetWebhook { unit: String, url: String, from_seq: i64, restart: bool },
    /// Remove a unit's webhook.
    RemoveWebhook { unit: String },
    /// The webhook acknowledged the inbox up to `seq`.
    AdvanceWebhook { unit: String, seq: i64 },
    /// Put dead letters back in their queue (`None`: all of them).
    ResendDead(Option<Vec<i64>>),
    /// Delete dead letters for good (`None`: all of them).
    PurgeDead(Option<Vec<i64>>),
    /// Drop payloads and signed-for inbox entries of settled messages received before this time.
    Retention { before_ms: i64 },
}

/// A directory segment as stored.
#[derive(Debug, Clone)]
pub struct SegmentRow {
    /// `tree`, or the node id whose units it lists.
    pub owner: String,
    pub version: i64,
    pub header: Vec<u8>,
    pub signature: Vec<u8>,
    pub payload: Vec<u8>,
}

/// A unit token as stored (hash only).
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    pub hash: [u8; 32],
    pub unit: String,
    pub label: String,
    pub issued_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// One unit of work for the group committer.
#[derive(Debug, Clone)]
pub enum WriteJob {
    Custody(Custody),
    /// 签收 or 退回: flip the inbox entry from delivered to `state` (`signed-for` or `returned`) and
    /// take custody of the receipt, atomically. Only one of them can ever apply to an entry.
    SignFor { unit: String, message_id: [u8; 32], state: &'static str, receipt: Custody },
    Record(Record),
    Admin { op: AdminOp, events: Vec<EventRow> },
    /// Base-data sharing: publish, decide, acknowledge (see `storage::sharing`).
    Sharing(sharing::SharingJob),
    /// Writes nothing of consequence (a timestamp): readiness proves the write path with it.
    Probe { at_ms: i64 },
}

/// What became of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Stored,
    /// An admin action changed this many items.
    Affected(u64),
    /// The message id was already held; nothing was written.
    Duplicate,
    /// The job could not apply (for a sign-for: why).
    Conflict(String),
}

/// Outbox entry joined with its message, ready to send.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub seq: i64,
    pub message_id: [u8; 32],
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

/// The storage interface. Every method is a single transaction.
pub trait Store: Send + Sync + 'static {
    /// Applies jobs in one transaction, in order; returns one outcome per job. Returns an error (and
    /// commits nothing) if the transaction fails.
    fn commit<'a>(&'a self, jobs: &'a [WriteJob]) -> BoxFuture<'a, Result<Vec<JobOutcome>, StorageError>>;
    /// Live outbox entries for `hop`, urgent first: at most `max_messages`, and at most `max_bytes`
    /// of parcels as encoded on the wire (`network::protocol::parcel_size_bound`), except that the
    /// first entry goes whatever its size. Cut to size before any payload is loaded.
    fn outbox_batch<'a>(&'a self, hop: &'a str, max_messages: usize, max_bytes: usize)
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
    /// [`citations::cited`]) is still needed: received at or after `before_ms`, waiting in an outbox
    /// (dead letters included), or in an inbox. Answered from the citations recorded with each
    /// message, never by reading every header.
    fn attachment_in_use<'a>(&'a self, sha256_hex: &'a str, before_ms: i64) -> BoxFuture<'a, Result<bool, StorageError>>;
    /// Canonical headers of documents held here that `unit` may read (it sent them, or they are in
    /// its inbox and were not recalled) and that cite `sha256_hex` (lower-case hex; see
    /// [`citations::cited`]), newest first, at most `limit`. The caller checks them strictly.
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

/// Rank of a state: tracking only ever moves forward. `failed` ranks below `delivered`, so a dead
/// letter resent by an operator and delivered after all shows as delivered.
pub fn state_rank(s: RecipientState) -> i64 {
    match s {
        RecipientState::Accepted => 0,
        RecipientState::InTransit => 1,
        RecipientState::Failed => 2,
        RecipientState::Delivered => 3,
        RecipientState::SignedFor
        | RecipientState::Returned
        | RecipientState::Recalled
        | RecipientState::Answered
        | RecipientState::TimedOut => 4,
    }
}
