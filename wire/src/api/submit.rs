//! Submitting: a signed message with its payload, the answers to single and batch submissions,
//! the error body every refusal carries, and how much of an attachment a node holds.

use serde::{Deserialize, Serialize};

use super::encoding::{b64_decode, b64_encode, signature_from_hex};
use crate::envelope::{Envelope, EnvelopeError, MessageId, SignedEnvelope};

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
