//! Receipts and delivery reports: what travels back to a sender.
//!
//! Both are ordinary signed envelopes, routed and held in custody like documents, so they are as
//! durable and as verifiable as what they acknowledge.
//!
//! * A **receipt** (kind `receipt`) is signed by the recipient unit with its own key: non-repudiation
//!   of receipt. Metadata `receipt.for` names the message id, `receipt.type` says what happened
//!   (`signed-for` = 签收). It is addressed to the original sender; its payload is empty.
//! * A **delivery report** (kind `delivery-report`) is signed by the recipients' home node with its node
//!   key, from the node's own address `<node-id>/_node`, when a message lands in inboxes. Its JSON payload
//!   lists the recipients delivered and the hops the message took, so the sender's node can show where
//!   the message has been without asking every node.

use serde::{Deserialize, Serialize};

use crate::address::{NodeId, UnitAddress};
use crate::envelope::{Envelope, EnvelopeError, Kind, MessageId, Priority};

/// Metadata key naming the message a receipt or report is about.
pub const META_RECEIPT_FOR: &str = "receipt.for";
/// Metadata key naming the receipt type.
pub const META_RECEIPT_TYPE: &str = "receipt.type";
/// Metadata key giving the reason of a 退回 (return).
pub const META_RECEIPT_REASON: &str = "receipt.reason";
/// Metadata key naming the message a delivery report is about.
pub const META_REPORT_FOR: &str = "report.for";

/// What a recipient says about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptType {
    /// 签收: the recipient has taken the message.
    SignedFor,
    /// 退回: the recipient sends the message back, with a reason.
    Returned,
}

impl ReceiptType {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReceiptType::SignedFor => "signed-for",
            ReceiptType::Returned => "returned",
        }
    }
}

/// The receipt facts read from a receipt envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub for_message: MessageId,
    pub receipt_type: ReceiptType,
    /// Why a message was returned (退回); none for 签收.
    pub reason: Option<String>,
}

/// Builds the (unsigned) 签收 receipt a recipient signs for `message_id` from `original_sender`.
pub fn signed_for(
    recipient: UnitAddress,
    original_sender: UnitAddress,
    message_id: MessageId,
    priority: Priority,
) -> Envelope {
    let mut e = Envelope::new(Kind::Receipt, recipient, vec![original_sender], vec![], priority, b"");
    e.metadata.insert(META_RECEIPT_FOR.into(), message_id.to_hex());
    e.metadata.insert(META_RECEIPT_TYPE.into(), ReceiptType::SignedFor.as_str().into());
    e
}

/// Builds the (unsigned) 退回 receipt with which a recipient returns `message_id` to its sender.
pub fn returned(
    recipient: UnitAddress,
    original_sender: UnitAddress,
    message_id: MessageId,
    priority: Priority,
    reason: &str,
) -> Envelope {
    let mut e = signed_for(recipient, original_sender, message_id, priority);
    e.metadata.insert(META_RECEIPT_TYPE.into(), ReceiptType::Returned.as_str().into());
    e.metadata.insert(META_RECEIPT_REASON.into(), reason.into());
    e
}

impl Receipt {
    /// Reads the receipt facts from an envelope of kind `receipt`.
    pub fn from_envelope(e: &Envelope) -> Result<Receipt, EnvelopeError> {
        let bad = |m: &str| EnvelopeError::Malformed(format!("receipt: {m}"));
        if e.kind != Kind::Receipt {
            return Err(bad("envelope kind is not receipt"));
        }
        if e.payload_size != 0 {
            return Err(bad("a receipt carries no payload (payload_size must be 0)"));
        }
        let for_message = e
            .metadata
            .get(META_RECEIPT_FOR)
            .ok_or_else(|| bad("metadata receipt.for (the message id) is missing"))?
            .parse()
            .map_err(|m: String| bad(&m))?;
        let receipt_type = match e.metadata.get(META_RECEIPT_TYPE).map(String::as_str) {
            Some("signed-for") => ReceiptType::SignedFor,
            Some("returned") => ReceiptType::Returned,
            Some(other) => return Err(bad(&format!("receipt.type {other:?} is unknown; use signed-for or returned"))),
            None => return Err(bad("metadata receipt.type is missing")),
        };
        let reason = e.metadata.get(META_RECEIPT_REASON).cloned();
        if receipt_type == ReceiptType::Returned && reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Err(bad("a return (退回) must give its reason in metadata receipt.reason"));
        }
        if e.to.len() != 1 || !e.cc.is_empty() {
            return Err(bad("a receipt goes to exactly one unit, the original sender"));
        }
        Ok(Receipt { for_message, receipt_type, reason })
    }
}

/// Metadata key naming the document a recall (撤回) withdraws.
pub const META_RECALL_FOR: &str = "recall.for";
/// Metadata key giving the reason of a recall.
pub const META_RECALL_REASON: &str = "recall.reason";
/// Metadata key saying what a node report is about: `delivery` (default) or `recall`.
pub const META_REPORT_TYPE: &str = "report.type";

/// Builds the (unsigned) 撤回 of `message_id` that its sender signs, addressed to the recipients
/// to withdraw it from.
pub fn recall(sender: UnitAddress, recipients: Vec<UnitAddress>, message_id: MessageId, priority: Priority, reason: &str) -> Envelope {
    let mut e = Envelope::new(Kind::Recall, sender, recipients, vec![], priority, b"");
    e.metadata.insert(META_RECALL_FOR.into(), message_id.to_hex());
    e.metadata.insert(META_RECALL_REASON.into(), reason.into());
    e
}

/// The document a recall envelope withdraws (checking the recall's shape).
pub fn recalled_message(e: &Envelope) -> Result<MessageId, EnvelopeError> {
    let bad = |m: &str| EnvelopeError::Malformed(format!("recall: {m}"));
    if e.kind != Kind::Recall {
        return Err(bad("envelope kind is not recall"));
    }
    if e.payload_size != 0 {
        return Err(bad("a recall carries no payload"));
    }
    if e.metadata.get(META_RECALL_REASON).is_none_or(|r| r.trim().is_empty()) {
        return Err(bad("metadata recall.reason is missing: say why the document is withdrawn"));
    }
    e.metadata
        .get(META_RECALL_FOR)
        .ok_or_else(|| bad("metadata recall.for (the document id) is missing"))?
        .parse()
        .map_err(|m: String| bad(&m))
}

/// What a recall achieved for one recipient, decided at the recipient's home node in the same
/// transaction order as its 签收 or 退回, so sender and recipient always agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecallOutcome {
    pub unit: UnitAddress,
    /// `recalled`, or the state that was there first: `signed-for` or `returned`.
    pub outcome: String,
}

/// The payload of a node's report on a recall (kind `delivery-report`, `report.type = recall`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecallReport {
    /// The recall envelope's id.
    pub recall_id: MessageId,
    /// The document withdrawn.
    pub message_id: MessageId,
    pub node: NodeId,
    pub outcomes: Vec<RecallOutcome>,
}

impl NodeReport for RecallReport {
    const TYPE: &'static str = "recall";
    fn node(&self) -> &NodeId {
        &self.node
    }
    fn message_id(&self) -> MessageId {
        self.message_id
    }
}

/// The payload of a node's report that a next hop refused a document for good (kind
/// `delivery-report`, `report.type = failed`): the sender learns it, never a silent drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureReport {
    pub message_id: MessageId,
    /// The node holding the document as a dead letter.
    pub node: NodeId,
    /// The recipients it could not be carried to.
    pub units: Vec<UnitAddress>,
    pub reason: String,
}

impl NodeReport for FailureReport {
    const TYPE: &'static str = "failed";
    fn node(&self) -> &NodeId {
        &self.node
    }
    fn message_id(&self) -> MessageId {
        self.message_id
    }
}

/// A node's signed report to a document's sender about that document (a recall's outcomes, a
/// refusal further on): an envelope of kind `delivery-report` from `<node>/_node`, metadata
/// `report.for` (the document) and `report.type`, the report's JSON as payload.
pub trait NodeReport: Serialize + serde::de::DeserializeOwned {
    /// The `report.type` metadata value.
    const TYPE: &'static str;
    /// The reporting node.
    fn node(&self) -> &NodeId;
    /// The document reported on.
    fn message_id(&self) -> MessageId;

    /// The (unsigned) report envelope to the document's sender; sign it with the node key.
    fn envelope(&self, original_sender: UnitAddress, priority: Priority) -> (Envelope, Vec<u8>) {
        let payload = serde_json::to_vec(self).expect("a report serialises");
        let mut e = Envelope::new(Kind::DeliveryReport, UnitAddress::of_node(self.node()), vec![original_sender], vec![], priority, &payload);
        e.metadata.insert(META_REPORT_FOR.into(), self.message_id().to_hex());
        e.metadata.insert(META_REPORT_TYPE.into(), Self::TYPE.into());
        (e, payload)
    }

    /// Reads a report (the payload digest must already be checked), checking that envelope and
    /// payload agree on type, node and document.
    fn from_envelope(e: &Envelope, payload: &[u8]) -> Result<Self, EnvelopeError> {
        let bad = |m: String| EnvelopeError::Malformed(format!("{} report: {m}", Self::TYPE));
        if e.kind != Kind::DeliveryReport || e.metadata.get(META_REPORT_TYPE).map(String::as_str) != Some(Self::TYPE) {
            return Err(bad(format!("envelope is not a delivery-report of type {}", Self::TYPE)));
        }
        let r: Self = serde_json::from_slice(payload).map_err(|x| bad(x.to_string()))?;
        if UnitAddress::of_node(r.node()) != e.sender {
            return Err(bad(format!("signed by {} but reports for node {}", e.sender, r.node())));
        }
        if e.metadata.get(META_REPORT_FOR) != Some(&r.message_id().to_hex()) {
            return Err(bad("metadata report.for does not name the message in the payload".into()));
        }
        Ok(r)
    }
}

/// One custody hop of a message: the node that committed it, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    pub node: NodeId,
    pub at_ms: u64,
}

/// A recipient whose inbox received the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    pub unit: UnitAddress,
    pub at_ms: u64,
}

/// The payload of a delivery report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReport {
    pub message_id: MessageId,
    /// The node that delivered.
    pub node: NodeId,
    pub delivered: Vec<Delivered>,
    /// Custody hops from the ingress node to the delivering node, in order.
    pub hops: Vec<Hop>,
}

impl DeliveryReport {
    /// The (unsigned) report envelope from `node` to the original sender; sign it with the node key.
    pub fn envelope(&self, original_sender: UnitAddress, priority: Priority) -> (Envelope, Vec<u8>) {
        let payload = serde_json::to_vec(self).expect("a report serialises");
        let mut e = Envelope::new(
            Kind::DeliveryReport,
            UnitAddress::of_node(&self.node),
            vec![original_sender],
            vec![],
            priority,
            &payload,
        );
        e.metadata.insert(META_REPORT_FOR.into(), self.message_id.to_hex());
        (e, payload)
    }

    /// Reads a report from its envelope and payload (the payload digest must already be checked).
    pub fn from_envelope(e: &Envelope, payload: &[u8]) -> Result<DeliveryReport, EnvelopeError> {
        let bad = |m: String| EnvelopeError::Malformed(format!("delivery report: {m}"));
        if e.kind != Kind::DeliveryReport {
            return Err(bad("envelope kind is not delivery-report".into()));
        }
        let r: DeliveryReport = serde_json::from_slice(payload).map_err(|x| bad(x.to_string()))?;
        if UnitAddress::of_node(&r.node) != e.sender {
            return Err(bad(format!("signed by {} but reports for node {}", e.sender, r.node)));
        }
        if e.metadata.get(META_REPORT_FOR) != Some(&r.message_id.to_hex()) {
            return Err(bad("metadata report.for does not name the message in the payload".into()));
        }
        Ok(r)
    }
}
