//! What custody decisions are made of: a verified message handed over ([`Incoming`]), the node's
//! own facts it is judged with ([`Context`]), and what a commit changed ([`Summary`]), read after
//! the commit to wake forwarders and long-polls and to count. Kept apart from the rules so the rules
//! for documents (`custody`) and for data sharing (`sharing::delivery`) share them without leaning
//! on each other.

use std::collections::BTreeSet;

use ed25519_dalek::SigningKey;
use exchange_wire::receipt::{Hop, ReceiptType};
use exchange_wire::{Kind, NodeId, SignedEnvelope, UnitAddress};

use crate::directory::Directory;
use crate::storage::EventRow;

/// A verified message arriving at this node.
pub struct Incoming {
    pub signed: SignedEnvelope,
    pub payload: Vec<u8>,
    /// The recipients this node becomes responsible for.
    pub recipients: Vec<UnitAddress>,
    /// The neighbour that handed it over, or `None` for an agency (or this node itself).
    pub from: Option<NodeId>,
    /// Custody hops before this node.
    pub hops: Vec<Hop>,
}

/// What the node needs to know about its own work.
pub struct Context<'a> {
    pub here: &'a NodeId,
    pub dir: &'a Directory,
    pub node_key: SigningKey,
    pub now_ms: u64,
}

/// Facts about a custody decision, used after the commit for wake-ups and metrics.
#[derive(Debug, Default)]
pub struct Summary {
    /// Neighbours that got new outbox work, with how many entries.
    pub next_hops: BTreeSet<NodeId>,
    /// Of those, the neighbours that got an entry more urgent than routine (特急, 加急).
    pub urgent_hops: BTreeSet<NodeId>,
    /// Inbox deliveries by kind.
    pub delivered: Vec<Kind>,
    /// Creation-to-delivery latencies of deliveries here, in milliseconds.
    pub latencies_ms: Vec<u64>,
    /// Receipts that reached their original sender here, by type.
    pub receipts_returned: Vec<ReceiptType>,
    /// Recalls to decide here (their reports follow the commit).
    pub recalls: usize,
    /// Answers to queries asked here that arrived (each may still be too late to count).
    pub answers: usize,
    /// Subscription requests that reached their owner here (decided after the commit).
    pub sharing_requests: usize,
    /// Topics of base-data records delivered to subscribers here, one per subscriber.
    pub data_delivered: Vec<String>,
}

impl Summary {
    pub(crate) fn merge(&mut self, other: Summary) {
        self.next_hops.extend(other.next_hops);
        self.urgent_hops.extend(other.urgent_hops);
        self.delivered.extend(other.delivered);
        self.latencies_ms.extend(other.latencies_ms);
        self.receipts_returned.extend(other.receipts_returned);
        self.recalls += other.recalls;
        self.answers += other.answers;
        self.sharing_requests += other.sharing_requests;
        self.data_delivered.extend(other.data_delivered);
    }
}

/// A custody entry for the audit log.
pub fn event(id: [u8; 32], at_ms: u64, event: &'static str, unit: Option<&UnitAddress>, peer: Option<&NodeId>, detail: Option<String>) -> EventRow {
    EventRow {
        at_ms: at_ms as i64,
        category: "custody",
        message_id: Some(id),
        event,
        unit: unit.map(|u| u.to_string()),
        peer: peer.map(|p| p.to_string()),
        detail,
    }
}
