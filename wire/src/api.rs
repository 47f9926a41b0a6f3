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
        .map_err(|e| format!("payload is not valid base64 ({e}): encode it with the standard alphabet, with padding (RFC 4648 section 4)"))
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
        let sig = signature_from_hex(&self.signature).map_err(EnvelopeError::Submission)?;
        let payload = b64_decode(&self.payload).map_err(EnvelopeError::Submission)?;
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

// ---- Admin API (operators; `admin.listen`, loopback by default) ----

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

/// One entry of the node's hash-chained audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at_ms: u64,
    /// `custody`, `refusal` or `admin`.
    pub category: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// SHA-256 over the previous entry's hash and this entry's fields (see docs/operations.md).
    pub hash: String,
}

/// `GET /admin/v1/audit?after=&limit=`: a page of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_after: i64,
}

/// Where the audit chain breaks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditBreak {
    /// The first entry whose hash does not follow from its content and its predecessor.
    pub seq: i64,
    pub reason: String,
}

/// `GET /admin/v1/audit:verify`: the result of re-computing the whole chain, and of comparing it
/// with the latest signed checkpoint its holder (the parent; at the root, the node itself) keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditVerification {
    /// The chain is intact and, if a checkpoint was checked, matches it.
    pub ok: bool,
    /// Entries checked.
    pub entries: u64,
    /// The last entry: record it elsewhere to detect a truncated tail later.
    pub head_seq: i64,
    pub head_hash: String,
    pub first_break: Option<AuditBreak>,
    /// The comparison with the signed checkpoint (absent from nodes without checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointCheck>,
}

/// How the local audit log compares with the latest checkpoint of it that its holder keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointCheck {
    /// The node holding the checkpoint (the parent, or this node at the root; empty if unknown).
    pub holder: String,
    /// False when no checkpoint could be compared (none held yet, or the parent did not answer).
    pub checked: bool,
    /// False when the entry the checkpoint names is missing or has another hash.
    pub ok: bool,
    /// The entry the checkpoint names, and when the node signed it (ms since the epoch).
    pub seq: Option<i64>,
    pub at_ms: Option<u64>,
    /// What was found, and what to do when it differs.
    pub detail: String,
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

// ---- Admin API: the signed directory, unit tokens ----

/// One stored directory segment, as `GET /admin/v1/directory` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// `tree`, or the node id whose units the segment lists.
    pub owner: String,
    /// `node-tree` or `units`.
    pub kind: String,
    pub version: u64,
    /// The node whose key signed it.
    pub signer: NodeId,
    pub signed_at_ms: u64,
    /// Units listed (unit segments) or nodes listed (the tree).
    pub entries: u64,
}

/// `GET /admin/v1/directory`: what this node routes by.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectoryView {
    /// Sum of all segment versions: equal on every node that holds the same directory.
    pub version: u64,
    /// The pinned root key (trust anchor).
    pub root_key: String,
    pub segments: Vec<SegmentInfo>,
}

/// One segment's check in `GET /admin/v1/directory:verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentCheck {
    pub owner: String,
    pub version: u64,
    pub ok: bool,
    pub detail: String,
}

/// `GET /admin/v1/directory:verify`: every stored segment re-verified against the root key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectoryVerification {
    pub ok: bool,
    pub checks: Vec<SegmentCheck>,
}

/// `GET /admin/v1/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodesResponse {
    pub nodes: Vec<crate::directory::NodeRecord>,
}

/// `GET /admin/v1/units?node=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitsResponse {
    pub units: Vec<crate::directory::UnitRecord>,
}

/// Body of `POST /admin/v1/units` (on the unit's home node).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewUnit {
    pub address: UnitAddress,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub uscc: Option<String>,
    pub public_key: crate::keys::PublicKey,
}

/// Body of `POST /admin/v1/units/{node}/{unit}:rotate-key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotateKey {
    pub public_key: crate::keys::PublicKey,
    /// How long the old key stays valid beside the new one (0: it ends now).
    #[serde(default)]
    pub overlap_secs: u64,
    /// Revoke the old key now (stolen key): nothing created from now on verifies with it.
    #[serde(default)]
    pub revoke_old: bool,
}

/// Body of `POST /admin/v1/directory:hand-over-root`, at the root node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootHandoverRequest {
    /// The new root key: the public key of the key staged in `<key_file>.next` on the root node.
    pub public_key: crate::keys::PublicKey,
    /// How long the old root key stays the root node's key beside the new one (its libp2p identity
    /// accepted, what it signed before verifying).
    #[serde(default)]
    pub overlap_secs: u64,
}

/// Body of `POST /admin/v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssueToken {
    pub unit: UnitAddress,
    #[serde(default)]
    pub label: String,
}

/// The answer to `POST /admin/v1/tokens`: the token is shown this once; the node keeps its hash only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedToken {
    /// Handle for listing and revoking (the first 16 hex characters of the token's SHA-256).
    pub id: String,
    pub unit: UnitAddress,
    pub token: String,
}

/// A token as `GET /admin/v1/tokens` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub unit: UnitAddress,
    pub label: String,
    pub issued_at_ms: u64,
    pub revoked_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokensResponse {
    pub tokens: Vec<TokenInfo>,
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

/// How much of an attachment a node holds: the answer to an upload and to
/// `GET /v1/attachments/{sha256}`. An interrupted upload resumes at `committed_bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentStatus {
    pub sha256: crate::envelope::Digest,
    /// Bytes held durably from the start (the whole size once complete).
    pub committed_bytes: u64,
    /// Every byte is there and matches the SHA-256.
    pub complete: bool,
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Envelope, Kind, Priority};

    fn submission() -> SignedMessage {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let to = "gz.haizhu/civil-affairs".parse().unwrap();
        let e = Envelope::new(Kind::Document, "gz.yuexiu/liurong-street".parse().unwrap(), vec![to], vec![], Priority::Routine, b"hello");
        SignedMessage::new(&e.sign(&key), b"hello")
    }

    #[test]
    fn bad_base64_and_bad_signature_hex_are_named_as_such() {
        let mut m = submission();
        m.decode().unwrap();
        m.payload = "aGVsbG8*".into();
        let e = m.decode().unwrap_err();
        assert!(matches!(e, EnvelopeError::Submission(_)), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("payload is not valid base64") && !text.contains("envelope bytes"), "{text}");

        let mut m = submission();
        m.signature.pop();
        let text = m.decode().unwrap_err().to_string();
        assert!(text.contains("signature must be 128 hex characters") && !text.contains("envelope bytes"), "{text}");
    }
}
