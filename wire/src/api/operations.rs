//! What operators see and do (admin API on `admin.listen`, loopback by default; `/healthz` and
//! `/readyz`): custody events and traces, the node's status, links and outboxes, dead letters,
//! retention, readiness.

use serde::{Deserialize, Serialize};

use crate::address::{NodeId, UnitAddress};
use crate::envelope::MessageId;

/// One custody fact recorded by one node (admin API), for tracing a message hop by hop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustodyEvent {
    pub node: NodeId,
    pub at_ms: u64,
    /// What happened, in the order the node recorded it: `accepted` (from an agency), `received` (from
    /// `peer`), `forwarded` (acknowledged by `peer`), `delivered` (into `unit`'s inbox), `signed-for`
    /// (by `unit`), `receipt` (a receipt from `unit` reached the sender's node), `delivery-reported`
    /// (node `peer` reported delivery to `unit`), `hop` (a custody hop at `peer`, from a delivery
    /// report; one per report, so hops shared by several reports repeat; a trace keeps one, and only for
    /// a node it could not ask), `failed` (refused for good).
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The custody events a node holds for a message (admin API).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventsResponse {
    pub id: MessageId,
    pub events: Vec<CustodyEvent>,
}

/// What `/healthz` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub node: NodeId,
    pub status: String,
    pub peer_id: String,
}

/// `GET /admin/v1/status`: what this node is and how it stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeId,
    pub name: String,
    pub tier: String,
    pub parent: Option<NodeId>,
    pub children: Vec<NodeId>,
    pub peer_id: String,
    pub directory_version: u64,
    /// Build version of the node binary.
    pub version: String,
    pub started_at_ms: u64,
    pub uptime_secs: u64,
}

/// A neighbour link, as `GET /admin/v1/peers` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerInfo {
    pub node: NodeId,
    /// `parent` or `child`.
    pub role: String,
    pub peer_id: String,
    pub connected: bool,
    /// Last time anything was heard from the peer (a ping, a batch, an answer).
    pub last_seen_ms: Option<u64>,
    /// Last measured round-trip time.
    pub rtt_ms: Option<f64>,
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeersResponse {
    pub peers: Vec<PeerInfo>,
}

/// The outbox toward one next hop, as `GET /admin/v1/queues` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueInfo {
    pub peer: NodeId,
    /// Entries waiting to be handed over.
    pub depth: u64,
    /// Payload bytes waiting.
    pub bytes: u64,
    /// Age of the oldest waiting entry.
    pub oldest_age_ms: Option<u64>,
    /// Entries the peer refused for good, kept for operators.
    pub dead_letters: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuesResponse {
    pub queues: Vec<QueueInfo>,
}

/// `GET /admin/v1/messages/{id}/trace`: custody events for a message from every node it crossed,
/// gathered by the node asked, which follows the message from neighbour to neighbour.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceResponse {
    pub id: MessageId,
    /// Every node's events, ordered by time.
    pub events: Vec<CustodyEvent>,
    /// Nodes whose events are included.
    pub nodes: Vec<NodeId>,
    /// Nodes the message reached that could not be asked (link down), so the trace may be partial.
    pub unreachable: Vec<NodeId>,
}

/// An outbox entry a neighbour refused for good.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Outbox sequence number: the handle for resend and purge.
    pub seq: i64,
    pub message_id: MessageId,
    pub peer: NodeId,
    pub recipients: Vec<UnitAddress>,
    pub reason: String,
    pub enqueued_at_ms: u64,
    pub attempts: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLettersResponse {
    pub dead_letters: Vec<DeadLetter>,
}

/// Body of `POST /admin/v1/dead-letters:resend` and `:purge`: the dead letters to act on (by `seq`);
/// `all: true` acts on every dead letter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeadLetterSelection {
    #[serde(default)]
    pub seqs: Vec<i64>,
    #[serde(default)]
    pub all: bool,
}

/// Body of `POST /admin/v1/retention:purge`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetentionRequest {
    /// Settled messages older than this many days lose their payloads and inbox entries; their ids
    /// and the audit log are kept, so a late re-send is still recognised.
    pub older_than_days: u32,
}

/// The answer to an administrative action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminActionResponse {
    /// How many items the action changed.
    pub affected: u64,
    pub message: String,
}

/// One readiness check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// `GET /readyz`: 200 when every check passes, 503 otherwise.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<Check>,
}
