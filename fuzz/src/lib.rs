//! Fuzz targets: one function per decoder that reads bytes from outside a node, each taking any
//! bytes and calling the same parsing code the node (or the CLI) runs on them, then checking what
//! must hold of whatever it accepts.
//!
//! A target must never panic, whatever the input: a panic is a crash of the node's task (or of the
//! CLI) on input an attacker chooses. Two ways run them: `cargo fuzz run <target>` (libFuzzer,
//! coverage-guided, the `fuzz_targets/` binaries; fuzz/README.md), and `cargo test -p
//! exchange-fuzz`, which replays the committed corpus and a bounded number of mutations of it
//! ([`mutate`]) on every CI run.

use exchange_node_core::network::protocol::{AttachmentRequest, DirectoryPush, TraceRequest, TransferRequest};
use exchange_node_core::network::reconcile::ReconcileRequest;
use exchange_wire::api::{BatchSignForRequest, BatchSubmitRequest, RetentionRequest, SignedMessage, WebhookRequest};
use exchange_wire::directory::Segment;
use exchange_wire::sharing::{AckRequest, BatchPublishRequest, DecideRequest, RecordFacts, RequestFacts};
use exchange_wire::{Envelope, Kind, Priority, PublicKey, SignedEnvelope, UnitAddress, document, keys, query, receipt};

/// Every target, by the name of its corpus folder and libFuzzer binary.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("envelope", envelope),
    ("signed_message", signed_message),
    ("api_json", api_json),
    ("peer_request", peer_request),
    ("directory_segment", directory_segment),
    ("attachment_metadata", attachment_metadata),
    ("key_file", key_file),
];

/// Canonical envelope bytes, as they arrive in every parcel from a neighbour. Whatever decodes must
/// re-encode to exactly the same bytes (the bytes stored are the bytes signed), and every
/// interpreter of an envelope's metadata must answer without panicking.
pub fn envelope(data: &[u8]) {
    let Ok(e) = Envelope::from_canonical_bytes(data) else { return };
    assert_eq!(e.canonical_bytes(), data, "a decoded envelope re-encodes to other bytes");
    interpret(&e, &[]);
    let signed = SignedEnvelope::from_canonical(data.to_vec(), [0; 64]).expect("decoded once, decodes again");
    assert_eq!(signed.id, e.message_id());
}

/// Runs every reading of an envelope's metadata and payload the node makes, by kind.
fn interpret(e: &Envelope, payload: &[u8]) {
    let _ = e.check_shape();
    let _ = e.check_payload(payload);
    let _ = document::attachments(e);
    let _ = document::check(e);
    let _ = query::facts(e);
    let _ = query::answered(e);
    let _ = receipt::Receipt::from_envelope(e);
    let _ = receipt::recalled_message(e);
    let _ = receipt::DeliveryReport::from_envelope(e, payload);
    let _ = RecordFacts::from_envelope(e);
    let _ = RequestFacts::from_envelope(e);
    let _ = exchange_wire::sharing::Delivery::from_envelope(e, payload);
    let _ = exchange_wire::sharing::Decision::from_envelope(e, payload);
}

/// `POST /v1/messages` and every other body carrying a signed message: JSON, then the decoding of
/// signature and base64 payload.
pub fn signed_message(data: &[u8]) {
    let Ok(m) = serde_json::from_slice::<SignedMessage>(data) else { return };
    if let Ok((signed, payload)) = m.decode() {
        assert_eq!(signed.envelope, m.envelope);
        interpret(&signed.envelope, &payload);
    }
    interpret(&m.envelope, &[]);
}

/// The other JSON bodies of the agency and admin APIs. The first byte picks the type, so that
/// libFuzzer learns each one's shape.
pub fn api_json(data: &[u8]) {
    let Some((which, body)) = data.split_first() else { return };
    match which % 8 {
        0 => {
            if let Ok(b) = serde_json::from_slice::<BatchSubmitRequest>(body) {
                b.messages.iter().for_each(|m| drop(m.decode()));
            }
        }
        1 => {
            if let Ok(b) = serde_json::from_slice::<BatchSignForRequest>(body) {
                b.receipts.iter().for_each(|r| drop(r.receipt.decode()));
            }
        }
        2 => drop(serde_json::from_slice::<WebhookRequest>(body)),
        3 => drop(serde_json::from_slice::<RetentionRequest>(body)),
        4 => {
            if let Ok(b) = serde_json::from_slice::<BatchPublishRequest>(body) {
                b.records.iter().for_each(|m| drop(m.decode()));
            }
        }
        5 => drop(serde_json::from_slice::<DecideRequest>(body)),
        6 => drop(serde_json::from_slice::<AckRequest>(body)),
        _ => {
            // Addresses and keys as they appear in paths and query strings.
            if let Ok(s) = std::str::from_utf8(body) {
                let _ = s.parse::<UnitAddress>();
                let _ = s.parse::<exchange_wire::NodeId>();
                let _ = s.parse::<exchange_wire::MessageId>();
                let _ = s.parse::<PublicKey>();
                let _ = s.parse::<exchange_wire::sharing::StartFrom>();
            }
        }
    }
}

/// A request from a neighbour over libp2p (CBOR): custody batches, directory pushes, attachment
/// chunks, traces, reconciliation. The first byte picks the protocol. Each parcel of a batch is then
/// opened as the node opens it.
pub fn peer_request(data: &[u8]) {
    let Some((which, body)) = data.split_first() else { return };
    match which % 5 {
        0 => {
            let Ok(batch) = cbor4ii::serde::from_slice::<TransferRequest>(body) else { return };
            for p in batch.parcels {
                let Ok(signature) = <[u8; 64]>::try_from(p.signature.as_slice()) else { continue };
                if let Ok(signed) = SignedEnvelope::from_canonical(p.header, signature) {
                    interpret(&signed.envelope, &p.payload);
                }
            }
        }
        1 => {
            let Ok(push) = cbor4ii::serde::from_slice::<DirectoryPush>(body) else { return };
            for p in push.segments {
                let Ok(signature) = <[u8; 64]>::try_from(p.signature.as_slice()) else { continue };
                if let Ok(signed) = SignedEnvelope::from_canonical(p.header, signature) {
                    let _ = Segment::from_envelope(&signed, &p.payload);
                }
            }
        }
        2 => drop(cbor4ii::serde::from_slice::<AttachmentRequest>(body)),
        3 => drop(cbor4ii::serde::from_slice::<TraceRequest>(body)),
        _ => drop(cbor4ii::serde::from_slice::<ReconcileRequest>(body)),
    }
}

/// `data` as a directory segment: its first byte picks the type (node tree, units of 越秀, catalog)
/// and the version, the rest is the payload, in an unsigned envelope that matches it.
pub fn segment_envelope(data: &[u8]) -> Option<(SignedEnvelope, &[u8])> {
    let (which, payload) = data.split_first()?;
    let (kind, owner) = match which % 3 {
        0 => ("node-tree", "gz"),
        1 => ("units", "gz.yuexiu"),
        _ => ("catalog", "gz"),
    };
    let me = UnitAddress::of_node(&owner.parse().expect("a node id"));
    let mut e = Envelope::new(Kind::DirectorySegment, me.clone(), vec![me], vec![], Priority::Urgent, payload);
    e.metadata.insert("segment.type".into(), kind.into());
    e.metadata.insert("segment.version".into(), (u64::from(*which) / 3).to_string());
    Some((SignedEnvelope::from_parts(e, [0; 64]), payload))
}

/// A directory segment's payload (JSON: the node tree, a node's units, the data-sharing catalog),
/// in an envelope that matches it: the first byte picks the segment type and version, so the fuzzer
/// reaches the JSON decoding behind the digest check.
pub fn directory_segment(data: &[u8]) {
    let Some((signed, payload)) = segment_envelope(data) else { return };
    let owner = signed.envelope.sender.node_part().to_owned();
    if let Ok(segment) = Segment::from_envelope(&signed, payload) {
        // What was accepted must sign again into the same kind of segment.
        let (again, bytes) = segment.envelope(&owner.parse().expect("a node id"));
        let resigned = SignedEnvelope::from_parts(again, [0; 64]);
        assert_eq!(Segment::from_envelope(&resigned, &bytes).as_ref().ok(), Some(&segment));
    }
}

/// A document's metadata as a sender may write it (key/value pairs separated by NUL bytes), read
/// as the node and the CLI read attachments' descriptions and the GB/T 9704 fields.
pub fn attachment_metadata(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\0');
    let mut e = Envelope::new(
        Kind::Document,
        "gz.yuexiu/a".parse().expect("an address"),
        vec!["gz.haizhu/b".parse().expect("an address")],
        vec![],
        Priority::Routine,
        b"",
    );
    while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
        e.metadata.insert(k.to_owned(), v.to_owned());
    }
    if let Ok(attachments) = document::attachments(&e) {
        for a in &attachments {
            // What is accepted must describe itself back into the same metadata.
            let mut again = std::collections::BTreeMap::new();
            a.describe(1, &mut again);
            let mut only = e.clone();
            only.metadata = again;
            assert_eq!(document::attachments(&only).ok().as_deref(), Some(std::slice::from_ref(a)));
        }
    }
    let _ = document::check(&e);
    // An envelope the node would sign and send must decode back, unchanged, at the next node.
    if e.check_shape().is_ok() {
        assert_eq!(Envelope::from_canonical_bytes(&e.canonical_bytes()).ok(), Some(e));
    }
}

/// A unit or node key file (`exchange-admin keygen`, `node.key`), and a public key as listed in
/// the directory.
pub fn key_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(key) = keys::parse(&text, "fuzz.key") {
        // A parsed key signs, and its public key parses back.
        let public = PublicKey(key.verifying_key());
        assert_eq!(public.to_hex().parse::<PublicKey>().ok(), Some(public));
    }
    let _ = text.parse::<PublicKey>();
}

/// One mutation of `input`, for the bounded run in `cargo test`: bit flips, byte changes,
/// insertions, deletions, duplications of a slice and splices with `other`, as libFuzzer's simplest
/// mutators do, driven by the xorshift state `rng`.
pub fn mutate(input: &[u8], other: &[u8], rng: &mut u64) -> Vec<u8> {
    let mut next = |bound: usize| -> usize {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        (*rng % bound.max(1) as u64) as usize
    };
    let mut out = input.to_vec();
    for _ in 0..1 + next(4) {
        let len = out.len();
        match next(7) {
            0 if len > 0 => out[next(len)] ^= 1 << next(8),
            1 if len > 0 => out[next(len)] = [0, 0xff, b'"', b'{', b'0', 0x80, b'\\', 0x1b][next(8)],
            2 => out.insert(next(len + 1), next(256) as u8),
            3 if len > 0 => {
                let at = next(len);
                out.drain(at..(at + 1 + next(16)).min(len));
            }
            4 if len > 0 => {
                let at = next(len);
                let piece = out[at..(at + 1 + next(32)).min(len)].to_vec();
                let to = next(len + 1);
                out.splice(to..to, piece);
            }
            5 if !other.is_empty() => {
                let at = next(other.len());
                let piece = &other[at..(at + 1 + next(64)).min(other.len())];
                let to = next(len + 1);
                out.truncate(to);
                out.extend_from_slice(piece);
            }
            _ if len > 0 => {
                // An interesting integer, big-endian, where the formats keep lengths and counts.
                let value: u32 = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fff_ffff, u32::MAX][next(8)];
                let at = next(len);
                for (i, b) in value.to_be_bytes().iter().enumerate() {
                    if let Some(slot) = out.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            _ => out.push(next(256) as u8),
        }
    }
    out
}
