//! The envelope: what a sender unit signs, and how its bytes are laid out.
//!
//! The signature covers the *canonical bytes* of the envelope header, which include the SHA-256 digest
//! of the payload, so the payload can be streamed or stored apart from the header and still be bound to
//! the signature. The message id is the SHA-256 of the same canonical bytes: content-derived, so a
//! re-sent message carries the same id and is recognised as a duplicate at every hop.
//!
//! Canonical layout, version 1 (all integers big-endian; `str` is a u32 byte length then UTF-8;
//! `list<T>` is a u32 count then the items):
//!
//! ```text
//! "GOVX-ENVELOPE-V1\0"           17 bytes, domain separation
//! version         u16            = 1
//! kind            str            document | receipt | delivery-report | directory-segment | recall
//!                                | query | answer | data-record | data-delivery | subscription-request
//!                                | subscription-decision
//! sender          str            unit address
//! to              list<str>      main recipients (主送)
//! cc              list<str>      copy recipients (抄送)
//! priority        str            urgent | express | routine  (特急 / 加急 / 平件)
//! created_at_ms   u64            milliseconds since the Unix epoch
//! payload_digest  32 bytes       SHA-256 of the payload
//! payload_size    u64            payload length in bytes
//! metadata        list<(str,str)> sorted by key bytes, keys unique
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::address::UnitAddress;

/// Domain-separation tag that starts the canonical bytes of every envelope.
pub const ENVELOPE_DOMAIN: &[u8] = b"GOVX-ENVELOPE-V1\0";
/// The only envelope version this code speaks.
pub const ENVELOPE_VERSION: u16 = 1;
/// Bound on the canonical header, so a hostile header cannot make a node allocate without limit.
pub const MAX_HEADER_BYTES: usize = 256 * 1024;
/// Bound on recipients (主送 plus 抄送) of one envelope.
pub const MAX_RECIPIENTS: usize = 4096;

/// Why an envelope or its signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope bytes are malformed: {0}")]
    Malformed(String),
    /// A member of the JSON submission around the envelope (signature hex, payload base64) is not
    /// what section 6 of docs/protocol.md says; the envelope itself may be fine.
    #[error("the submission is malformed: {0}")]
    Submission(String),
    #[error("envelope version {0} is not supported (this node speaks version 1)")]
    Version(u16),
    #[error("the envelope has no recipients: give at least one main (to) recipient")]
    NoRecipients,
    #[error("recipient {0} is listed twice")]
    DuplicateRecipient(String),
    #[error("the envelope lists {0} recipients; at most {MAX_RECIPIENTS} are allowed")]
    TooManyRecipients(usize),
    #[error("payload digest does not match the envelope: the payload was altered or truncated")]
    PayloadDigest,
    #[error("payload is {actual} bytes but the envelope says {declared}")]
    PayloadSize { declared: u64, actual: u64 },
    #[error("signature does not verify against the sender's key: the envelope was forged or altered")]
    BadSignature,
}

/// What an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// An official document (公文) or any agency message.
    Document,
    /// A signed receipt from a recipient about a message (签收, 退回, ...).
    Receipt,
    /// A report from a recipient's home node, signed by the node, that a message reached inboxes.
    DeliveryReport,
    /// A signed directory segment (the node tree, or the units one node hosts). Travels between
    /// nodes on the directory protocol, never through inboxes.
    DirectorySegment,
    /// 撤回: the sender of a document withdraws it from recipients who have not settled it yet.
    Recall,
    /// 查询: a question to an authoritative unit, answered by a deadline (see `query`).
    Query,
    /// The answer to a query, signed by the asked unit.
    Answer,
    /// A base-data record signed by the unit that owns its topic (see `sharing`).
    DataRecord,
    /// A record on its way to subscribers, wrapped and signed by the owner's home node.
    DataDelivery,
    /// A unit asks a topic's owner for a subscription.
    SubscriptionRequest,
    /// The owner's home node grants or refuses a subscription request.
    SubscriptionDecision,
}

/// Urgency, which orders queues at every hop: 特急 before 加急 before 平件.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// 特急
    Urgent,
    /// 加急
    Express,
    /// 平件
    Routine,
}

macro_rules! wire_enum {
    ($t:ty, $what:literal, $( $v:ident => $s:literal ),+ $(,)?) => {
        impl $t {
            /// The wire spelling.
            pub fn as_str(&self) -> &'static str {
                match self { $( Self::$v => $s ),+ }
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $( $s => Ok(Self::$v), )+
                    other => Err(format!(concat!("unknown ", $what, " {:?}: expected one of {}"), other,
                        [$( $s ),+].join(", "))),
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(self.as_str()) }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
wire_enum!(Kind, "kind", Document => "document", Receipt => "receipt", DeliveryReport => "delivery-report", DirectorySegment => "directory-segment", Recall => "recall",
    Query => "query", Answer => "answer",
    DataRecord => "data-record", DataDelivery => "data-delivery", SubscriptionRequest => "subscription-request",
    SubscriptionDecision => "subscription-decision");
wire_enum!(Priority, "priority", Urgent => "urgent", Express => "express", Routine => "routine");

impl Priority {
    /// Queue rank: lower goes first.
    pub fn rank(&self) -> u8 {
        match self {
            Priority::Urgent => 0,
            Priority::Express => 1,
            Priority::Routine => 2,
        }
    }

    /// Whether this is urgent (特急 or 加急): nodes verify, commit and send such messages ahead of
    /// routine ones, in batches and commits of their own.
    pub fn is_urgent(&self) -> bool {
        Priority::is_urgent_rank(self.rank())
    }

    /// [`Priority::is_urgent`] of the priority with queue rank `rank` (as stored).
    pub fn is_urgent_rank(rank: u8) -> bool {
        rank < Priority::Routine.rank()
    }
}

/// A 32-byte SHA-256 digest, written as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

/// A message id: the SHA-256 of the envelope's canonical bytes.
pub type MessageId = Digest;

impl Digest {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| format!("{s:?} is not a SHA-256 digest: expected 64 hex characters"))?;
        Ok(Digest(out))
    }
}
impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}
impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// SHA-256 of a payload.
pub fn digest_payload(payload: &[u8]) -> Digest {
    Digest(Sha256::digest(payload).into())
}

/// The signed header of a message. The payload travels beside it, bound by `payload_digest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u16,
    pub kind: Kind,
    pub sender: UnitAddress,
    /// Main recipients (主送).
    pub to: Vec<UnitAddress>,
    /// Copy recipients (抄送).
    #[serde(default)]
    pub cc: Vec<UnitAddress>,
    pub priority: Priority,
    pub created_at_ms: u64,
    pub payload_digest: Digest,
    pub payload_size: u64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl Envelope {
    /// A version-1 envelope for `payload`, created now.
    pub fn new(
        kind: Kind,
        sender: UnitAddress,
        to: Vec<UnitAddress>,
        cc: Vec<UnitAddress>,
        priority: Priority,
        payload: &[u8],
    ) -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            kind,
            sender,
            to,
            cc,
            priority,
            created_at_ms: crate::now_ms(),
            payload_digest: digest_payload(payload),
            payload_size: payload.len() as u64,
            metadata: BTreeMap::new(),
        }
    }

    /// All recipients, main then copy, in envelope order.
    pub fn recipients(&self) -> impl Iterator<Item = &UnitAddress> {
        self.to.iter().chain(self.cc.iter())
    }

    /// Checks the rules that do not need the directory: version, recipients present and unique.
    pub fn check_shape(&self) -> Result<(), EnvelopeError> {
        if self.version != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(self.version));
        }
        if self.to.is_empty() {
            return Err(EnvelopeError::NoRecipients);
        }
        let n = self.to.len() + self.cc.len();
        if n > MAX_RECIPIENTS {
            return Err(EnvelopeError::TooManyRecipients(n));
        }
        let mut seen = std::collections::HashSet::with_capacity(n);
        for r in self.recipients() {
            if !seen.insert(r) {
                return Err(EnvelopeError::DuplicateRecipient(r.to_string()));
            }
        }
        // The limit every node applies when it decodes canonical bytes: refuse here what a later hop
        // would refuse, rather than accept a message that can never leave this node.
        let header = self.canonical_bytes().len();
        if header > MAX_HEADER_BYTES {
            return Err(EnvelopeError::Malformed(format!(
                "header is {header} bytes, more than the limit of {MAX_HEADER_BYTES}: shorten the metadata"
            )));
        }
        Ok(())
    }

    /// The canonical bytes that are signed and hashed (see the module documentation).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(ENVELOPE_DOMAIN);
        b.extend_from_slice(&self.version.to_be_bytes());
        put_str(&mut b, self.kind.as_str());
        put_str(&mut b, self.sender.as_str());
        put_list(&mut b, &self.to);
        put_list(&mut b, &self.cc);
        put_str(&mut b, self.priority.as_str());
        b.extend_from_slice(&self.created_at_ms.to_be_bytes());
        b.extend_from_slice(&self.payload_digest.0);
        b.extend_from_slice(&self.payload_size.to_be_bytes());
        b.extend_from_slice(&(self.metadata.len() as u32).to_be_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut b, k);
            put_str(&mut b, v);
        }
        b
    }

    /// Parses canonical bytes back into an envelope. Refuses anything that would not re-encode to
    /// exactly the same bytes, so the bytes a node stores are always the bytes that were signed.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        if bytes.len() > MAX_HEADER_BYTES {
            return Err(EnvelopeError::Malformed(format!(
                "header is {} bytes, more than the limit of {MAX_HEADER_BYTES}",
                bytes.len()
            )));
        }
        let mut r = Reader { b: bytes };
        let domain = r.take(ENVELOPE_DOMAIN.len())?;
        if domain != ENVELOPE_DOMAIN {
            return Err(EnvelopeError::Malformed("missing the GOVX-ENVELOPE-V1 domain tag".into()));
        }
        let version = u16::from_be_bytes(r.array()?);
        if version != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(version));
        }
        let kind = r.str()?.parse().map_err(EnvelopeError::Malformed)?;
        let sender = r.address()?;
        let to = r.addresses()?;
        let cc = r.addresses()?;
        let priority = r.str()?.parse().map_err(EnvelopeError::Malformed)?;
        let created_at_ms = u64::from_be_bytes(r.array()?);
        let payload_digest = Digest(r.array()?);
        let payload_size = u64::from_be_bytes(r.array()?);
        let n = u32::from_be_bytes(r.array()?) as usize;
        let mut metadata = BTreeMap::new();
        let mut last: Option<String> = None;
        for _ in 0..n {
            let k = r.str()?;
            let v = r.str()?;
            if last.as_deref().is_some_and(|l| l.as_bytes() >= k.as_bytes()) {
                return Err(EnvelopeError::Malformed("metadata keys are not sorted and unique".into()));
            }
            last = Some(k.clone());
            metadata.insert(k, v);
        }
        if !r.b.is_empty() {
            return Err(EnvelopeError::Malformed(format!("{} trailing bytes", r.b.len())));
        }
        Ok(Envelope {
            version,
            kind,
            sender,
            to,
            cc,
            priority,
            created_at_ms,
            payload_digest,
            payload_size,
            metadata,
        })
    }

    /// The content-derived message id.
    pub fn message_id(&self) -> MessageId {
        Digest(Sha256::digest(self.canonical_bytes()).into())
    }

    /// Signs the envelope with the sender unit's key.
    pub fn sign(self, key: &SigningKey) -> SignedEnvelope {
        let bytes = self.canonical_bytes();
        let signature = key.sign(&bytes).to_bytes();
        SignedEnvelope { id: Digest(Sha256::digest(&bytes).into()), envelope: self, bytes, signature }
    }

    /// Checks that `payload` is the one this envelope was signed over.
    pub fn check_payload(&self, payload: &[u8]) -> Result<(), EnvelopeError> {
        if payload.len() as u64 != self.payload_size {
            return Err(EnvelopeError::PayloadSize {
                declared: self.payload_size,
                actual: payload.len() as u64,
            });
        }
        if digest_payload(payload) != self.payload_digest {
            return Err(EnvelopeError::PayloadDigest);
        }
        Ok(())
    }
}

/// An envelope with its canonical bytes, id and the sender's signature over those bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEnvelope {
    pub envelope: Envelope,
    /// The canonical bytes, exactly as signed.
    pub bytes: Vec<u8>,
    pub id: MessageId,
    pub signature: [u8; 64],
}

impl SignedEnvelope {
    /// Rebuilds a signed envelope from an envelope and a signature received from elsewhere.
    pub fn from_parts(envelope: Envelope, signature: [u8; 64]) -> SignedEnvelope {
        let bytes = envelope.canonical_bytes();
        SignedEnvelope { id: Digest(Sha256::digest(&bytes).into()), envelope, bytes, signature }
    }

    /// Parses canonical bytes and a signature as they travel between nodes.
    pub fn from_canonical(bytes: Vec<u8>, signature: [u8; 64]) -> Result<SignedEnvelope, EnvelopeError> {
        let envelope = Envelope::from_canonical_bytes(&bytes)?;
        Ok(SignedEnvelope { id: Digest(Sha256::digest(&bytes).into()), envelope, bytes, signature })
    }

    /// Verifies the signature against one public key (strict: no malleable signatures).
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), EnvelopeError> {
        let sig = Signature::from_bytes(&self.signature);
        key.verify_strict(&self.bytes, &sig).map_err(|_| EnvelopeError::BadSignature)
    }

    /// The signature as 128 hex characters.
    pub fn signature_hex(&self) -> String {
        hex::encode(self.signature)
    }
}

/// Verifies many (envelope, key) pairs at once. Returns one result per item, in order, the same as
/// [`SignedEnvelope::verify`] gives for each. The items are checked in one batch (about twice as fast
/// per signature), and only when the batch fails are they checked one by one to find the culprits.
///
/// Batch verification checks one random combination of the verification equations on points, so it
/// accepts signatures that strict verification refuses: an R or a key of small order, an R that is not
/// canonically encoded. Such items are never batched; they go to strict verification on their own. One
/// difference remains, inherent to batching cofactorless Ed25519: a signer who deliberately adds a
/// small-order component to R (R = rB + T, R itself not of small order) gets a signature that strict
/// verification refuses and a batch accepts for some coefficients. Only the holder of the signing key
/// can make one; no conforming signer does (docs/protocol.md, "Signatures").
pub fn verify_batch(items: &[(&SignedEnvelope, &VerifyingKey)]) -> Vec<Result<(), EnvelopeError>> {
    let mut verdicts: Vec<Option<Result<(), EnvelopeError>>> = vec![None; items.len()];
    let batch: Vec<usize> = (0..items.len()).filter(|&i| batch_safe(items[i].0, items[i].1)).collect();
    if batch.len() >= 2 {
        let msgs: Vec<&[u8]> = batch.iter().map(|&i| items[i].0.bytes.as_slice()).collect();
        let sigs: Vec<Signature> = batch.iter().map(|&i| Signature::from_bytes(&items[i].0.signature)).collect();
        let keys: Vec<VerifyingKey> = batch.iter().map(|&i| *items[i].1).collect();
        if ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok() {
            for &i in &batch {
                verdicts[i] = Some(Ok(()));
            }
        }
    }
    items.iter().zip(verdicts).map(|((e, k), v)| v.unwrap_or_else(|| e.verify(k))).collect()
}

/// The y coordinates (sign bit clear, little-endian) of the eight points of small order: 0 (order 4),
/// 1 (the identity), -1 (order 2) and the two of the points of order 8.
const SMALL_ORDER_Y: [[u8; 32]; 5] = [
    [0; 32],
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ],
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0, 0xd5, 0xdf,
        0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f, 0x2a, 0x20,
        0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a,
    ],
];

/// Whether the batch equation judges this item as strict verification does: the key is not weak, and R
/// is canonically encoded (y < p) and not of small order. Byte checks only, so batching stays cheap.
fn batch_safe(e: &SignedEnvelope, key: &VerifyingKey) -> bool {
    let mut y = [0u8; 32];
    y.copy_from_slice(&e.signature[..32]);
    y[31] &= 0x7f;
    let at_least_p = y[31] == 0x7f && y[1..31].iter().all(|&b| b == 0xff) && y[0] >= 0xed;
    !key.is_weak() && !at_least_p && !SMALL_ORDER_Y.contains(&y)
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u32).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_list(b: &mut Vec<u8>, items: &[UnitAddress]) {
    b.extend_from_slice(&(items.len() as u32).to_be_bytes());
    for i in items {
        put_str(b, i.as_str());
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        if self.b.len() < n {
            return Err(EnvelopeError::Malformed("header is truncated".into()));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], EnvelopeError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    fn str(&mut self) -> Result<String, EnvelopeError> {
        let n = u32::from_be_bytes(self.array()?) as usize;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| EnvelopeError::Malformed("a string is not UTF-8".into()))
    }
    fn address(&mut self) -> Result<UnitAddress, EnvelopeError> {
        self.str()?.parse().map_err(|e: crate::AddressError| EnvelopeError::Malformed(e.to_string()))
    }
    fn addresses(&mut self) -> Result<Vec<UnitAddress>, EnvelopeError> {
        let n = u32::from_be_bytes(self.array()?) as usize;
        if n > MAX_RECIPIENTS {
            return Err(EnvelopeError::TooManyRecipients(n));
        }
        (0..n).map(|_| self.address()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn sample() -> Envelope {
        let mut e = Envelope::new(
            Kind::Document,
            "gz.yuexiu/liurong-street".parse().unwrap(),
            vec!["gz.haizhu/civil-affairs".parse().unwrap()],
            vec!["gz/civil-affairs".parse().unwrap()],
            Priority::Express,
            b"hello",
        );
        e.metadata.insert("title".into(), "关于做好防汛工作的通知".into());
        e
    }

    #[test]
    fn canonical_bytes_round_trip() {
        let e = sample();
        let back = Envelope::from_canonical_bytes(&e.canonical_bytes()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn signature_binds_every_field() {
        let k = key(7);
        let s = sample().sign(&k);
        s.verify(&k.verifying_key()).unwrap();
        let mut tampered = s.envelope.clone();
        tampered.priority = Priority::Urgent;
        let forged = SignedEnvelope::from_parts(tampered, s.signature);
        assert_eq!(forged.verify(&k.verifying_key()), Err(EnvelopeError::BadSignature));
        assert_ne!(forged.id, s.id, "the id must change with the content");
        assert_eq!(s.verify(&key(8).verifying_key()), Err(EnvelopeError::BadSignature));
    }

    #[test]
    fn batch_verification_finds_the_culprit() {
        let k = key(1);
        let good = sample().sign(&k);
        let mut bad = sample().sign(&k);
        bad.signature[0] ^= 1;
        let vk = k.verifying_key();
        let res = verify_batch(&[(&good, &vk), (&bad, &vk), (&good, &vk)]);
        assert_eq!(res, vec![Ok(()), Err(EnvelopeError::BadSignature), Ok(())]);
    }

    #[test]
    fn small_order_list_is_exactly_the_torsion_points() {
        // An order-8 point, and its multiples: all eight points of small order.
        let mut enc = SMALL_ORDER_Y[3];
        let p8 = VerifyingKey::from_bytes(&enc).unwrap().to_edwards();
        let mut q = p8;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..8 {
            assert!(q.is_small_order());
            let mut y = q.compress().to_bytes();
            seen.insert(y);
            y[31] &= 0x7f;
            assert!(SMALL_ORDER_Y.contains(&y), "{} missing", hex::encode(y));
            q += p8;
        }
        assert_eq!(seen.len(), 8);
        for y in SMALL_ORDER_Y {
            for sign in [0u8, 0x80] {
                enc = y;
                enc[31] |= sign;
                if let Ok(k) = VerifyingKey::from_bytes(&enc) {
                    assert!(k.is_weak());
                }
            }
        }
    }

    #[test]
    fn oversized_header_is_refused_before_acceptance() {
        let mut e = sample();
        e.metadata.insert("note".into(), "x".repeat(MAX_HEADER_BYTES));
        assert!(matches!(e.check_shape(), Err(EnvelopeError::Malformed(_))));
        assert!(Envelope::from_canonical_bytes(&e.canonical_bytes()).is_err());
    }

    #[test]
    fn refuses_truncated_and_trailing_bytes() {
        let b = sample().canonical_bytes();
        assert!(Envelope::from_canonical_bytes(&b[..b.len() - 1]).is_err());
        let mut longer = b.clone();
        longer.push(0);
        assert!(Envelope::from_canonical_bytes(&longer).is_err());
    }

    #[test]
    fn payload_binding() {
        let e = sample();
        e.check_payload(b"hello").unwrap();
        assert!(matches!(e.check_payload(b"hellO"), Err(EnvelopeError::PayloadDigest)));
        assert!(matches!(e.check_payload(b"hell"), Err(EnvelopeError::PayloadSize { .. })));
    }
}
