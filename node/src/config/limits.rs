//! `[limits]` and `[relay]`: what the node accepts, and how store-and-forward is tuned.

use serde::{Deserialize, Serialize};

/// Input limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest payload accepted from an agency or a peer, in bytes.
    pub max_payload_bytes: u64,
    /// Largest attachment accepted, in bytes. Attachments travel in chunks beside the document and
    /// never sit in memory whole, so this bounds disk use, not memory.
    pub max_attachment_bytes: u64,
    /// Longest a query may wait for its answer (its deadline at most this far ahead), in seconds.
    /// Questions that can wait longer are documents.
    pub max_query_secs: u64,
    /// How far an envelope's `created_at_ms` may be from the ingress node's clock, in seconds. Older
    /// envelopes are refused at ingress: a stolen key cannot backdate a message to before its
    /// revocation.
    pub clock_skew_secs: u64,
    /// Most bytes of stored messages (headers, signatures, payloads) one page holds: a page of an
    /// inbox or of a subscription's records, a webhook push, a page of a backlog sent to a new
    /// subscriber. The first item always goes, so one large message still moves; a page may hold
    /// fewer items than asked for. Bounds the node's memory per read, whatever the row counts.
    pub page_max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 8 * 1024 * 1024,
            max_attachment_bytes: 4 * 1024 * 1024 * 1024,
            max_query_secs: 3600,
            clock_skew_secs: 300,
            page_max_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Store-and-forward tuning.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Most messages in one batch to a peer.
    pub batch_max_messages: usize,
    /// Most bytes of one batch to a peer as encoded on the wire (headers, signatures, payloads,
    /// recipients, hops and framing), except that a single message goes whatever its size. A peer
    /// with the same settings reads up to `2 × max(batch_max_bytes, limits.max_payload_bytes) + 1 MiB`;
    /// one with smaller settings answers `too_large` and the batch is split.
    pub batch_max_bytes: usize,
    /// First retry delay after a failed send; doubles up to `retry_max_ms`, with full jitter.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Most write requests folded into one storage transaction (group commit).
    pub commit_max_requests: usize,
    /// When set, a storage transaction takes no more write requests once it holds this many jobs (a
    /// request always goes whole), at a cost in throughput (smaller commits write more pages per
    /// document); unset by default. A routine transaction already ends early when urgent work
    /// arrives (`relay::committer`), so this shortens that wait little (docs/performance.md).
    pub commit_max_jobs: Option<usize>,
    /// Batches a forwarder keeps in flight to one neighbour (1 to 4): the next goes out while the
    /// neighbour commits the one before, and acknowledgements are recorded beside the sending.
    pub window_batches: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_max_messages: 512,
            batch_max_bytes: 8 * 1024 * 1024,
            retry_initial_ms: 200,
            retry_max_ms: 10_000,
            commit_max_requests: 256,
            commit_max_jobs: None,
            window_batches: 4,
        }
    }
}
