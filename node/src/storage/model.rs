//! The rows storage writes: plain data, decided by the rules (`relay::custody`, `settlement`,
//! `retention`, `relay::sharing`) and only stored, loaded and kept unique by the engines.

use exchange_wire::api::RecipientState;

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

/// Owner side: one record of a topic log, numbered within its topic.
#[derive(Debug, Clone)]
pub struct TopicLogRow {
    pub topic: String,
    pub seq: i64,
    pub record_id: [u8; 32],
    pub subject: String,
    pub publisher: String,
    pub published_at_ms: i64,
    pub header: Vec<u8>,
    pub signature: Vec<u8>,
    pub payload: Vec<u8>,
}

/// A subscription, at the owner's home node (`owner` side) or the subscriber's (`local` side).
#[derive(Debug, Clone)]
pub struct SubscriptionRow {
    pub topic: String,
    pub subscriber: String,
    pub owner: String,
    /// Owner side: `pending`, `granted`, `refused`. Local side: also `requested`.
    pub state: String,
    /// Where it was asked to start (`beginning`, `now`, `seq:N`, `time:MS`).
    pub start: String,
    pub first_seq: Option<i64>,
    /// Local side: acknowledged up to here.
    pub cursor: i64,
    pub request_id: [u8; 32],
    pub requested_at_ms: i64,
    pub decided_at_ms: Option<i64>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    /// Owner side: the backlog still to send, `(next, end)`, while a grant's backfill is under way.
    pub backfill: Option<(i64, i64)>,
}

/// Subscriber side: a record delivered to one unit.
#[derive(Debug, Clone)]
pub struct DataInboxRow {
    pub unit: String,
    pub topic: String,
    pub seq: i64,
    pub first_seq: i64,
    pub delivery_id: [u8; 32],
    pub record_id: [u8; 32],
    pub subject: String,
    pub published_at_ms: i64,
    pub delivered_at_ms: i64,
    pub header: Vec<u8>,
    pub signature: Vec<u8>,
    pub payload: Vec<u8>,
}
