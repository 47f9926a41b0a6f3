//! Storage of base-data sharing: topic logs and subscriptions at the owner's home node, cursors
//! and delivered records at the subscriber's home node. Writes ride in the group commit, either
//! inside a custody job ([`SharingRow`], so a delivery and its rows are one decision) or as a
//! [`SharingJob`] of their own. The rows are in `storage::model` and the jobs in `storage::jobs`
//! (re-exported here); this file holds the reads.

use futures::future::BoxFuture;

pub use super::jobs::{SharingJob, SharingRow};
pub use super::model::{DataInboxRow, SubscriptionRow, TopicLogRow};
use super::error::StorageError;

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
