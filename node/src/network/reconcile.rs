//! The reconciliation protocol (`/gov-exchange/reconcile/1`): a node restored from a backup asks its
//! parent and children which messages they exchanged with it since the backup, a page at a time, and
//! asks them to carry again what they had handed over and it no longer holds. Only tree neighbours
//! may ask; each answers about the asker alone.

use serde::{Deserialize, Serialize};

/// The libp2p protocol name.
pub const RECONCILE_PROTOCOL: &str = "/gov-exchange/reconcile/1";

/// Most ids in one list page or one re-send request (about 200 KiB on the wire).
pub const PAGE: u32 = 4096;

/// Which handovers to list, seen from the asked neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Messages the neighbour handed to the asker (its `forwarded` custody events).
    ToAsker,
    /// Messages the neighbour received from the asker (its `received` custody events).
    FromAsker,
}

/// A request from a restored node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReconcileRequest {
    /// Handovers in `[since_ms, until_ms)` (the neighbour's clock), after cursor `after` (0 first).
    List { direction: Direction, since_ms: u64, until_ms: u64, after: i64, limit: u32 },
    /// Queue these messages (handed to the asker before) for the asker again.
    Resend { ids: Vec<serde_bytes::ByteBuf> },
}

/// One handover.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exchanged {
    #[serde(with = "serde_bytes")]
    pub id: Vec<u8>,
    /// The message's kind, empty if the neighbour no longer holds the message row.
    pub kind: String,
    pub at_ms: u64,
}

/// What became of one message of a [`ReconcileRequest::Resend`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResendOutcome {
    /// Put back in the outbox for the asker: it will be handed over again.
    Requeued,
    /// Already waiting in the outbox for the asker (or kept there as a dead letter).
    Queued,
    /// Cannot be carried again: the neighbour no longer holds it whole.
    Gone { reason: String },
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReconcileResponse {
    /// A page of handovers; `next` is the cursor for the next page, `None` at the end.
    Listed { items: Vec<Exchanged>, next: Option<i64> },
    /// One outcome per id, in order, after the commit.
    Resent { outcomes: Vec<ResendOutcome> },
    /// Not answered: the asker is not a parent or child, the request is too large, or storage failed.
    Refused { reason: String },
}
