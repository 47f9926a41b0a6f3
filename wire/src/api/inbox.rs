//! A unit's inbox: reading it page by page, signing for (签收) what was read, and push delivery of
//! new items to the unit's webhook.

use serde::{Deserialize, Serialize};

use super::status::RecipientState;
use super::submit::{ErrorBody, SignedMessage};
use crate::address::{NodeId, UnitAddress};
use crate::envelope::MessageId;

/// A message in an inbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxItem {
    /// Position in this unit's inbox; pass the last one seen as `after` to read on.
    pub seq: i64,
    pub id: MessageId,
    pub delivered_at_ms: u64,
    /// `delivered`, `signed-for`, `returned` or `recalled`.
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

/// One receipt in a batch sign-for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignForItem {
    pub message_id: MessageId,
    pub receipt: SignedMessage,
}

/// `POST /v1/units/{node}/{unit}/inbox:sign-for`: up to 1000 receipts by one unit in one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchSignForRequest {
    pub receipts: Vec<SignForItem>,
}

/// One result per receipt, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchSignForResponse {
    pub results: Vec<SignForResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SignForResult {
    SignedFor(SignForResponse),
    Refused(ErrorBody),
}

// ---- Push delivery (webhooks) ----

/// Body of `PUT /v1/units/{node}/{unit}/webhook`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookRequest {
    /// `http://` or `https://` URL the node POSTs new inbox items to.
    pub url: String,
    /// Push what the inbox already holds too (default: only what arrives from now on).
    #[serde(default)]
    pub from_start: bool,
}

/// A unit's webhook as the node holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookInfo {
    pub unit: UnitAddress,
    pub url: String,
    /// Inbox position pushed so far: every item up to it was acknowledged (2xx) by the webhook.
    pub pushed_seq: i64,
}

/// What the node POSTs to a webhook: new items of the unit's inbox, in order. The body is signed by
/// the node: header `X-Exchange-Signature` is the hex ed25519 signature of the exact body bytes by
/// the node key named in `X-Exchange-Node` (its public key is in the node tree). Delivery is at least
/// once: acknowledge with any 2xx; items are identified by `id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookDelivery {
    pub node: NodeId,
    pub unit: UnitAddress,
    pub items: Vec<InboxItem>,
}
