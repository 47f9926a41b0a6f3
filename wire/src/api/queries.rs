//! A query asked from a unit of this node, and its outcome.

use serde::{Deserialize, Serialize};

use super::status::RecipientState;
use super::submit::SignedMessage;
use crate::address::{NodeId, UnitAddress};
use crate::envelope::MessageId;

/// A query asked from a unit of this node (`GET /v1/queries/{id}`): where it is, and its outcome —
/// the asked unit's signed answer, or a timeout at the deadline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryStatus {
    pub id: MessageId,
    /// The unit asked.
    pub asked: UnitAddress,
    pub topic: String,
    pub deadline_ms: u64,
    /// accepted, in-transit, delivered, then answered, timed-out or failed.
    pub state: RecipientState,
    /// The node that recorded the state.
    pub node: NodeId,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The answer exactly as the asked unit signed it, with its payload (when `answered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<SignedMessage>,
}
