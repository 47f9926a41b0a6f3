//! Storage of base-data sharing: topic logs and subscriptions at the owner's home node, cursors
//! and delivered records at the subscriber's home node. Writes ride in the group commit, either
//! inside a custody job ([`SharingRow`], so a delivery and its rows are one decision) or as a
//! [`SharingJob`] of their own.

use futures::future::BoxFuture;

use super::{Custody, EventRow, StorageError};

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

/// Reads of base-data sharing.
pub trait SharingStore: Send + Sync {
    /// The highest sequence number of a topic's log (0 when empty).
    fn topic_head<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<i64, StorageError>>;
    /// Topic and sequence number of a record already in a log.
    fn topic_record<'a>(&'a self, record_id: &'a [u8; 32]) -> BoxFuture<'a, Result<Option<(String, i64)>, StorageError>>;
    /// Records of a topic with `from <= seq <= to`, in order, at most `max_bytes` of them (header,
    /// signature, payload) except that the first goes whatever its size: cut before loading.
    fn topic_log<'a>(&'a self, topic: &'a str, from: i64, to: i64, max_bytes: usize) -> BoxFuture<'a, Result<Vec<TopicLogRow>, StorageError>>;
    /// The first sequence number of a topic published at or after `at_ms`.
    fn topic_seq_at<'a>(&'a self, topic: &'a str, at_ms: i64) -> BoxFuture<'a, Result<Option<i64>, StorageError>>;
    /// Owner side: subscriptions to topics owned by `owner` (every one when `None`).
    fn owner_subscriptions<'a>(&'a self, owner: Option<&'a str>) -> BoxFuture<'a, Result<Vec<SubscriptionRow>, StorageError>>;
    /// Owner side: the granted subscribers of a topic.
    fn granted_subscriptions<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<Vec<SubscriptionRow>, StorageError>>;
    /// Subscriber side: a unit's subscriptions.
    fn local_subscriptions<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<Vec<SubscriptionRow>, StorageError>>;
    /// Subscriber side: records delivered to `unit` of `topic` with `seq > after`, in order, at most
    /// `limit` and `max_bytes` of them (the first whatever its size): cut before loading.
    fn data_records<'a>(&'a self, unit: &'a str, topic: &'a str, after: i64, limit: u32, max_bytes: usize)
        -> BoxFuture<'a, Result<Vec<DataInboxRow>, StorageError>>;
    /// Subscriber side: the end of the run of records without gaps that starts at `first`
    /// (`first - 1` when record `first` itself has not arrived).
    fn data_contiguous_end<'a>(&'a self, unit: &'a str, topic: &'a str, first: i64) -> BoxFuture<'a, Result<i64, StorageError>>;
    /// Subscriber side: how many records of `unit`'s `topic` are held after `seq`.
    fn data_count_after<'a>(&'a self, unit: &'a str, topic: &'a str, seq: i64) -> BoxFuture<'a, Result<i64, StorageError>>;
}
