//! JSON shapes of the agency HTTP API and the admin API (see `docs/openapi.yaml`).

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::address::{NodeId, UnitAddress};
use crate::envelope::{Envelope, EnvelopeError, Kind, MessageId, SignedEnvelope};
use crate::receipt::Hop;

/// Base64 (standard alphabet, padded) as used for payloads in JSON.
pub fn b64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard padded base64.
pub fn b64_decode(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("payload is not valid base64: {e}"))
}

/// Decodes a 128-hex-character ed25519 signature.
pub fn signature_from_hex(s: &str) -> Result<[u8; 64], String> {
    let mut sig = [0u8; 64];
    hex::decode_to_slice(s, &mut sig).map_err(|_| "signature must be 128 hex characters".to_string())?;
    Ok(sig)
}

/// A signed envelope with its payload, as submitted by an agency and as read from an inbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedMessage {
    pub envelope: Envelope,
    /// The sender's ed25519 signature over the envelope's canonical bytes, 128 hex characters.
    pub signature: String,
    /// The payload, base64.
    pub payload: String,
}

impl SignedMessage {
    pub fn new(signed: &SignedEnvelope, payload: &[u8]) -> SignedMessage {
        SignedMessage {
            envelope: signed.envelope.clone(),
            signature: signed.signature_hex(),
            payload: b64_encode(payload),
        }
    }

    /// Decodes signature and payload and checks the payload against the envelope. The signature itself
    /// is checked by whoever knows the sender's key.
    pub fn decode(&self) -> Result<(SignedEnvelope, Vec<u8>), EnvelopeError> {
        let sig = signature_from_hex(&self.signature).map_err(EnvelopeError::Malformed)?;
        let payload = b64_decode(&self.payload).map_err(EnvelopeError::Malformed)?;
        self.envelope.check_shape()?;
        self.envelope.check_payload(&payload)?;
        Ok((SignedEnvelope::from_parts(self.envelope.clone(), sig), payload))
    }
}

/// The answer to an accepted submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub id: MessageId,
    /// True when the node already held this message: nothing new was stored, nothing will be sent twice.
    pub duplicate: bool,
    pub accepted_at_ms: u64,
}

/// Several submissions in one request (one group commit; each item is accepted or refused on its own).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchSubmitRequest {
    pub messages: Vec<SignedMessage>,
}

/// One result per submitted item, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchSubmitResponse {
    pub results: Vec<BatchItemResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BatchItemResult {
    Accepted(SubmitResponse),
    Refused(ErrorBody),
}

/// The body of every error answer: a stable machine code and a message a person can act on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

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
    /// A node refused it for good; `detail` says why.
    Failed,
}

impl RecipientState {
    pub fn as_str(&self) -> &'static str {
        match self {
            RecipientState::Accepted => "accepted",
            RecipientState::InTransit => "in-transit",
            RecipientState::Delivered => "delivered",
            RecipientState::SignedFor => "signed-for",
            RecipientState::Failed => "failed",
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

/// A message in an inbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxItem {
    /// Position in this unit's inbox; pass the last one seen as `after` to read on.
    pub seq: i64,
    pub id: MessageId,
    pub delivered_at_ms: u64,
    /// `delivered` or `signed-for`.
    pub state: RecipientState,
    pub message: SignedMessage,
}

/// A page of an inbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxResponse {
    pub unit: UnitAddress,
    pub items: Vec<InboxItem>,
    /// The `after` to pass for the next page.
    pub next_after: i64,
}

/// The answer to a sign-for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignForResponse {
    pub message_id: MessageId,
    pub receipt_id: MessageId,
    pub duplicate: bool,
}

/// One custody fact recorded by one node (admin API), for tracing a message hop by hop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustodyEvent {
    pub node: NodeId,
    pub at_ms: u64,
    /// What happened, in the order the node recorded it: `accepted` (from an agency), `received` (from
    /// `peer`), `forwarded` (acknowledged by `peer`), `delivered` (into `unit`'s inbox), `signed-for`
    /// (by `unit`), `receipt` (a receipt from `unit` reached the sender's node), `delivery-reported`
    /// (node `peer` reported delivery to `unit`), `hop` (a custody hop at `peer`, from a delivery
    /// report; one per report, so hops shared by several reports repeat), `failed` (refused for good).
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
