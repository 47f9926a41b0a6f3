//! Durable custody storage behind one trait.
//!
//! Writes arrive as [`WriteJob`]s and are applied many at a time in one transaction by the group
//! committer (`relay::committer`): that is where throughput comes from, and nothing is acknowledged
//! before its transaction commits. Reads serve the forwarders, the inbox and the status API.
//! SQLite (WAL) is the embedded default; PostgreSQL (`storage.url`) implements the same trait.
//!
//! This file only names the parts: the rows (`model`), the jobs of the group commit (`jobs`), the
//! trait and what its reads return (`store`), the error (`error`), and the engines (`sqlite`,
//! `postgres`), which import those files by path. The re-exports below are the paths the rest of
//! the node uses (`crate::storage::WriteJob`).

pub mod attachments;
pub mod citations;
#[cfg(test)]
pub mod conformance;
pub mod error;
mod gather;
pub mod health;
pub mod jobs;
pub mod model;
pub mod move_to_postgres;
pub mod postgres;
pub mod recovery;
pub mod sharing;
pub mod sqlite;
pub mod store;
pub mod upload_limits;
pub mod uploads;

pub use error::StorageError;
pub use jobs::{AdminOp, Custody, JobOutcome, Record, WriteJob};
pub use model::{EventRow, InboxRow, MessageRow, OutboxRow, RecallOutcomeRow, RecallRow, SegmentRow, TokenRow, TrackingRow, state_rank};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use store::{
    ChainCheck, DeadLetterRecord, EventRecord, InboxHeader, InboxRecord, OutboxItem, QueueStat, Store, StoredMessage, TrackingRecord,
    WebhookRow,
};
