//! The node-to-node relay protocol: a batch of parcels handed over for custody, answered with one
//! result per parcel after the receiver's commit.
//!
//! The envelope travels as its canonical bytes, exactly as the sender unit signed them, so no hop can
//! change a signed field without breaking the signature, and no re-encoding can drift.

use exchange_wire::UnitAddress;
use exchange_wire::receipt::Hop;
use serde::{Deserialize, Serialize};

/// The libp2p protocol name of custody transfer.
pub const RELAY_PROTOCOL: &str = "/gov-exchange/relay/1";
/// The libp2p protocol name of directory propagation.
pub const DIRECTORY_PROTOCOL: &str = "/gov-exchange/directory/1";
/// The libp2p protocol name of message tracing (operators' `trace`).
pub const TRACE_PROTOCOL: &str = "/gov-exchange/trace/1";
/// The libp2p protocol name of attachment transfer (chunks, each acknowledged after its commit).
pub const ATTACHMENT_PROTOCOL: &str = "/gov-exchange/attachment/1";

/// One message handed to the next node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parcel {
    /// Canonical envelope bytes.
    #[serde(with = "serde_bytes")]
    pub header: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// The recipients the receiving node becomes responsible for (a subset of the envelope's).
    pub recipients: Vec<UnitAddress>,
    /// Custody hops so far, ingress node first.
    pub hops: Vec<Hop>,
    /// The version of the directory segment holding the sender's keys (its node's unit segment, or
    /// the node tree for a node's own messages) at the handing node. A receiver holding an older
    /// version answers [`ParcelResult::Retry`] instead of judging the signature by stale keys.
    #[serde(default)]
    pub sender_segment_version: u64,
}

/// A batch of parcels.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferRequest {
    pub parcels: Vec<Parcel>,
}

/// A custody-transfer request as the relay codec reads it: a batch, or the note that one arrived
/// larger than this node accepts (its bytes were read and dropped, never held).
#[derive(Debug, Clone)]
pub enum RelayRequest {
    Batch(TransferRequest),
    Oversized { limit: u64 },
}

/// What the receiver did with one parcel. `Stored` and `Duplicate` both mean the receiver holds it
/// durably: the sender may drop it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ParcelResult {
    Stored,
    Duplicate,
    /// Refused for good (a forged signature, an unknown unit): retrying cannot help.
    Refused { code: String, reason: String },
    /// Not taken now, nothing stored: try again shortly (the receiver's directory is behind).
    Retry { reason: String },
}

/// The answer to a batch, one result per parcel in order. Sent only after the commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferResponse {
    pub results: Vec<ParcelResult>,
    /// Set (with `results` empty) when the receiver read nothing of the batch because its encoding
    /// was larger than the receiver's limit, given here in bytes: the sender splits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub too_large: Option<u64>,
}

impl TransferResponse {
    /// The answer to a batch the receiver took in (or refused parcel by parcel).
    pub fn results(results: Vec<ParcelResult>) -> TransferResponse {
        TransferResponse { results, too_large: None }
    }
}

/// What the CBOR encoding of one parcel costs besides its five variable parts: the field names
/// (`header`, `signature`, `payload`, `recipients`, `hops`, `sender_segment_version`: 64 bytes with
/// their heads), the map head, three byte-string heads (at most 9 bytes each), two array heads and the
/// version number (at most 9 bytes each), rounded up.
pub const PARCEL_OVERHEAD_BYTES: usize = 128;

/// What the CBOR encoding of a request costs besides its parcels (map head, `parcels`, array head).
pub const REQUEST_OVERHEAD_BYTES: usize = 32;

/// An upper bound on the encoded size of a parcel, from the lengths of its parts: the header,
/// signature and payload bytes, and the recipients and hops *as JSON* (as the outbox stores them).
/// CBOR never takes more than JSON for these lists: a string's head (1 to 3 bytes for a unit address
/// or node id) replaces its two quotes and separator, and a hop's two field names and number take
/// fewer bytes than their JSON spelling. Storage computes the same sum in SQL before loading
/// anything, so a batch is cut to size before its payloads are read.
pub fn parcel_size_bound(header: usize, signature: usize, payload: usize, recipients_json: usize, hops_json: usize) -> usize {
    header + signature + payload + recipients_json + hops_json + PARCEL_OVERHEAD_BYTES
}

/// Asks a neighbour for the custody events it holds about one message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceRequest {
    #[serde(with = "serde_bytes")]
    pub message_id: Vec<u8>,
}

/// The custody events for the message held by the asked node and, recursively, by the nodes it
/// handed the message to or received it from (except the asker): the trace follows the tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceResponse {
    pub events: Vec<exchange_wire::api::CustodyEvent>,
    /// Nodes on the message's path that could not be asked.
    pub unreachable: Vec<exchange_wire::NodeId>,
}

/// A signed directory segment exactly as its signer made it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentParcel {
    #[serde(with = "serde_bytes")]
    pub header: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// Segments pushed to a neighbour: all of them when a link comes up, the changed ones afterwards.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectoryPush {
    pub segments: Vec<SegmentParcel>,
}

/// What the neighbour did with each segment: `new`, `known`, or `refused: <code>: <reason>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectoryAck {
    pub results: Vec<String>,
}

/// Attachment transfer, driven by the node that holds the attachment and is about to hand over the
/// document describing it: it asks how much the neighbour holds, then sends the rest chunk by chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AttachmentRequest {
    /// How much of this attachment do you hold?
    Offer {
        sha256: exchange_wire::Digest,
        size: u64,
        /// The signed document the attachment belongs to, so the receiver can pass the chunks on
        /// toward the document's recipients as they become durable there (cut-through), before the
        /// document itself arrives. Absent from older senders: the receiver then waits for the
        /// document, as before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        document: Option<OfferedFor>,
    },
    /// The bytes from `offset` (one chunk; the receiver's committed length).
    Chunk {
        sha256: exchange_wire::Digest,
        size: u64,
        offset: u64,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
}

/// A document exactly as its sender signed it (canonical header bytes and signature; no payload).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfferedFor {
    #[serde(with = "serde_bytes")]
    pub header: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// The receiver's answer, sent after the chunk is durable.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum AttachmentResponse {
    /// Bytes held durably from the start; `complete` once every byte is there and verified.
    Held { committed: u64, complete: bool },
    /// Not taken (wrong offset, digest mismatch, storage trouble): the sender asks again, unless
    /// the refusal is permanent.
    /// `permanent`: retrying cannot help (the attachment is over the receiver's size limit).
    Refused {
        reason: String,
        #[serde(default)]
        permanent: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use exchange_wire::Digest;

    /// The offer as nodes before cut-through wrote and read it.
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    enum OldAttachmentRequest {
        Offer { sha256: Digest, size: u64 },
    }

    #[test]
    fn offers_with_and_without_their_document_read_on_old_and_new_nodes() {
        let sha256 = exchange_wire::digest_payload(b"scan");
        let old = cbor4ii::serde::to_vec(Vec::new(), &OldAttachmentRequest::Offer { sha256, size: 4 }).unwrap();
        let read: AttachmentRequest = cbor4ii::serde::from_slice(&old).unwrap();
        assert!(matches!(read, AttachmentRequest::Offer { size: 4, document: None, .. }));

        let document = Some(OfferedFor { header: b"header".to_vec(), signature: vec![7; 64] });
        let new = cbor4ii::serde::to_vec(Vec::new(), &AttachmentRequest::Offer { sha256, size: 4, document }).unwrap();
        let read: AttachmentRequest = cbor4ii::serde::from_slice(&new).unwrap();
        assert!(matches!(read, AttachmentRequest::Offer { document: Some(OfferedFor { ref header, .. }), .. } if header == b"header"));
        let by_an_old_node: OldAttachmentRequest = cbor4ii::serde::from_slice(&new).unwrap();
        assert_eq!(by_an_old_node, OldAttachmentRequest::Offer { sha256, size: 4 });
    }
}
