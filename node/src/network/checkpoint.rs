//! The audit checkpoint protocol (`/gov-exchange/audit-checkpoint/1`): a node signs the head of its
//! audit chain (last entry, its chain hash, the time) with its node key and hands it to its parent,
//! which keeps the latest one per child; the child asks for it back to check its own log against
//! it. Only a node's children may hand or ask, each about itself. Messages are a few hundred bytes;
//! the codec takes at most [`MAX_MESSAGE_BYTES`] each way.

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The libp2p protocol name.
pub const CHECKPOINT_PROTOCOL: &str = "/gov-exchange/audit-checkpoint/1";

/// The largest request or response read.
pub const MAX_MESSAGE_BYTES: u64 = 4 * 1024;

/// Domain separation: a checkpoint signature is never valid as any other signature of the node.
const CONTEXT: &[u8] = b"GOVX-AUDIT-CHECKPOINT-V1\0";

/// A node's audit chain head, signed with its node key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    /// The node whose log this is.
    pub node: String,
    /// The last entry's sequence number.
    pub seq: i64,
    /// The last entry's chain hash (32 bytes).
    #[serde(with = "serde_bytes")]
    pub hash: Vec<u8>,
    /// When the node signed it (ms since the epoch, the node's clock).
    pub at_ms: u64,
    /// Ed25519 over [`SignedCheckpoint::signed_bytes`] (64 bytes).
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl SignedCheckpoint {
    /// Signs `node`'s head (`seq`, `hash`) at `at_ms`.
    pub fn sign(key: &SigningKey, node: &str, seq: i64, hash: [u8; 32], at_ms: u64) -> SignedCheckpoint {
        let signature = key.sign(&signed_bytes(node, seq, &hash, at_ms)).to_bytes().to_vec();
        SignedCheckpoint { node: node.to_owned(), seq, hash: hash.to_vec(), at_ms, signature }
    }

    /// Whether `key` signed exactly this checkpoint.
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        let Ok(signature) = <[u8; 64]>::try_from(self.signature.as_slice()) else { return false };
        self.hash.len() == 32 && key.verify(&signed_bytes(&self.node, self.seq, &self.hash, self.at_ms), &Signature::from_bytes(&signature)).is_ok()
    }
}

/// What is signed: the context, then each field length-prefixed or fixed-size.
fn signed_bytes(node: &str, seq: i64, hash: &[u8], at_ms: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(CONTEXT.len() + 4 + node.len() + 8 + 32 + 8);
    b.extend_from_slice(CONTEXT);
    b.extend_from_slice(&(node.len() as u32).to_be_bytes());
    b.extend_from_slice(node.as_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(hash);
    b.extend_from_slice(&at_ms.to_be_bytes());
    b
}

/// A child's request to its parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CheckpointRequest {
    /// Keep this checkpoint of my log (it must be signed by me and not go back).
    Hand(SignedCheckpoint),
    /// The latest checkpoint of my log you hold.
    Latest,
}

/// The parent's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CheckpointResponse {
    /// Kept (or already held).
    Stored,
    /// Not kept, and why (for the child's log and operator).
    Refused { reason: String },
    /// The latest checkpoint held for the asker, if any.
    Latest(Option<SignedCheckpoint>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_every_field() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let cp = SignedCheckpoint::sign(&key, "gz.haizhu", 41, [3; 32], 1_000);
        assert!(cp.verify(&key.verifying_key()));
        for altered in [
            SignedCheckpoint { seq: 40, ..cp.clone() },
            SignedCheckpoint { hash: vec![4; 32], ..cp.clone() },
            SignedCheckpoint { at_ms: 999, ..cp.clone() },
            SignedCheckpoint { node: "gz.yuexiu".into(), ..cp.clone() },
            SignedCheckpoint { hash: vec![3; 31], ..cp.clone() },
        ] {
            assert!(!altered.verify(&key.verifying_key()), "{altered:?}");
        }
        assert!(!cp.verify(&SigningKey::from_bytes(&[8; 32]).verifying_key()));
    }
}
