//! A sent message's status at the sender's home node: each recipient's state, its receipt, the
//! custody hops.

use serde::{Deserialize, Serialize};

use crate::address::{NodeId, UnitAddress};
use crate::envelope::{Envelope, Kind, MessageId};
use crate::receipt::Hop;

/// A recipient's state, as the sender's node knows it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum RecipientState {
    /// Committed at the ingress node.
    Accepted,
    /// Held by the node named in `node`.
    InTransit,
    /// In the recipient's inbox at its home node.
    Delivered,
    /// The recipient signed for it (签收), with a verified signed receipt.
    SignedFor,
    /// The recipient returned it (退回), with a signed receipt giving the reason (in `detail`).
    Returned,
    /// The sender withdrew it (撤回) before the recipient settled it.
    Recalled,
    /// A node refused it for good; `detail` says why.
    Failed,
    /// (Queries) the asked unit's signed answer reached the asker's node by the deadline.
    Answered,
    /// (Queries) no answer reached the asker's node by the deadline.
    TimedOut,
}

impl RecipientState {
    pub fn as_str(&self) -> &'static str {
        match self {
            RecipientState::Accepted => "accepted",
            RecipientState::InTransit => "in-transit",
            RecipientState::Delivered => "delivered",
            RecipientState::SignedFor => "signed-for",
            RecipientState::Returned => "returned",
            RecipientState::Recalled => "recalled",
            RecipientState::Failed => "failed",
            RecipientState::Answered => "answered",
            RecipientState::TimedOut => "timed-out",
        }
    }
}

/// A signed receipt as shown to the sender, so it can be verified offline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiptView {
    pub id: MessageId,
    pub envelope: Envelope,
    pub signature: String,
}

/// Per-recipient status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecipientStatus {
    pub unit: UnitAddress,
    pub state: RecipientState,
    /// The node that recorded the state (for in-transit: the node holding the message).
    pub node: NodeId,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<ReceiptView>,
}

/// The status of a message at the sender's home node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    pub id: MessageId,
    pub kind: Kind,
    pub sender: UnitAddress,
    pub created_at_ms: u64,
    pub recipients: Vec<RecipientStatus>,
    /// Custody hops reported back by delivering nodes, in order of time.
    pub hops: Vec<Hop>,
}
