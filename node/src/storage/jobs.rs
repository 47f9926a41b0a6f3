//! The units of work of the group committer: what one transaction applies, and what became of it.
//! A custody job and a sharing job may carry each other (a delivery is custody of a message with
//! sharing rows; a publication carries the custody of its deliveries), so both live here.

use super::model::{DataInboxRow, EventRow, InboxRow, MessageRow, OutboxRow, RecallRow, SegmentRow, SubscriptionRow, TokenRow, TopicLogRow, TrackingRow};

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
    pub sharing: Vec<SharingRow>,
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
    /// It records the handover of 特急 or 加急 entries: committed ahead of routine work (see
    /// [`WriteJob::is_urgent`]), so that the link's few urgent batches are free again without
    /// waiting for a routine commit. Not stored.
    pub urgent: bool,
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
    Sharing(SharingJob),
    /// Writes nothing of consequence (a timestamp): readiness proves the write path with it.
    Probe { at_ms: i64 },
}

impl WriteJob {
    /// Whether this job takes custody of a 特急 or 加急 message (a document, or a receipt signed for
    /// one) or records a neighbour's answer for such messages: the committer lets such jobs go ahead
    /// of routine ones.
    pub fn is_urgent(&self) -> bool {
        let custody = match self {
            WriteJob::Custody(c) => c,
            WriteJob::SignFor { receipt, .. } => receipt,
            WriteJob::Record(r) => return r.urgent,
            _ => return false,
        };
        custody.message.as_ref().is_some_and(|m| exchange_wire::Priority::is_urgent_rank(m.priority))
    }
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

/// Sharing rows decided together with a custody job (written only when its message is new).
#[derive(Debug, Clone)]
pub enum SharingRow {
    /// Owner side: a subscription request arrived; stored as pending unless the unit already
    /// has a pending or granted subscription to the topic.
    Requested(SubscriptionRow),
    /// Subscriber side: the unit sent a request (replaces a refused one).
    LocalRequested(SubscriptionRow),
    /// Subscriber side: the owner's node decided request `request_id` (a decision about an earlier
    /// request, refused and asked again since, changes nothing).
    Decided {
        unit: String,
        topic: String,
        request_id: [u8; 32],
        state: String,
        first_seq: Option<i64>,
        reason: Option<String>,
        decided_by: String,
        at_ms: i64,
    },
    /// Subscriber side: a record arrived for a unit.
    Delivered(DataInboxRow),
}

/// Sharing work for the group committer.
#[derive(Debug, Clone)]
pub enum SharingJob {
    /// Owner side: append a record to its topic log with its delivery to the current subscribers.
    /// A record already in the log is a duplicate: nothing is written.
    Publish { log: TopicLogRow, delivery: Option<Box<Custody>>, events: Vec<EventRow> },
    /// Owner side: decide a pending subscription, with the decision and any backfill to send.
    /// Refused as a conflict unless the subscription is pending.
    Decide {
        topic: String,
        subscriber: String,
        state: String,
        first_seq: Option<i64>,
        decided_by: String,
        reason: Option<String>,
        at_ms: i64,
        /// The backlog left after the first page, `(next, end)`.
        backfill: Option<(i64, i64)>,
        messages: Vec<Custody>,
        events: Vec<EventRow>,
    },
    /// Owner side: one more page of a grant's backlog, and what is left after it.
    Backfill { topic: String, subscriber: String, left: Option<(i64, i64)>, messages: Vec<Custody> },
    /// Subscriber side: move a cursor forward (never back).
    Ack { unit: String, topic: String, seq: i64, events: Vec<EventRow> },
}
