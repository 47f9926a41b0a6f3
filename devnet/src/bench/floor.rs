//! The peer on the same machine, same run: the protocol's own work per message (ed25519
//! verification and signing, SHA-256), measured in the benchmark's process before any node runs,
//! and the floor it sets for the nodes' CPU per message.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use exchange_wire::envelope::verify_batch;
use exchange_wire::{SignedEnvelope, UnitAddress, digest_payload};
use serde_json::{Value, json};

use super::{benchmark_document, make_payload};

/// How many protocol operations all nodes together must perform for one document, counted from the
/// custody rules (`relay::custody` and `relay::Engine`):
///
/// * the document is verified by the ingress node (agency submission), by the city node and by the
///   destination node (each peer hand-over is verified): 3 verifications, 3 payload digests, 3 header
///   digests (the content-derived id);
/// * the destination node signs a delivery report with its node key (1 signature, 1 digest of the
///   report payload, 1 header digest); the city and ingress nodes verify it as it travels back: 2
///   verifications, 2 report payload digests, 2 header digests;
/// * with receipts: the recipient's receipt is verified at the destination node (sign-for), the city
///   and the ingress node: 3 verifications, 3 header digests (the receipt payload is empty).
#[derive(Debug, Clone, Copy)]
pub(super) struct FloorCounts {
    /// Each envelope (the document, its delivery report, the receipt) through each of the three
    /// nodes: what storage must make durable (`storage_floor.rs`).
    pub(super) envelope_hops: u32,
    verifications: u32,
    signatures: u32,
    payload_digests: u32,
    small_digests: u32,
}

impl FloorCounts {
    pub(super) fn new(sign_for: bool) -> FloorCounts {
        let (doc_v, doc_h) = (3, 3);
        let (rep_v, rep_s, rep_d) = (2, 1, 3 + 3);
        let (rec_v, rec_h) = if sign_for { (3, 3) } else { (0, 0) };
        FloorCounts { envelope_hops: if sign_for { 9 } else { 6 }, verifications: doc_v + rep_v + rec_v, signatures: rep_s, payload_digests: 3, small_digests: doc_h + rep_d + rec_h }
    }
}

/// Costs of the protocol's operations on this machine, in µs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Floor {
    verify_us: f64,
    verify_batch64_us: f64,
    sign_us: f64,
    digest_payload_us: f64,
    digest_header_us: f64,
}

/// Runs `f` repeatedly for at least `min` (after a short warm-up) and returns µs per call.
fn time_per_call(min: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < min {
        f();
        n += 1;
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

impl Floor {
    pub(super) fn measure(size: usize) -> Floor {
        let keys: Vec<SigningKey> = (0..64).map(|_| exchange_wire::keys::generate()).collect();
        let from: UnitAddress = "gz.yuexiu/liurong-street".parse().expect("valid address");
        let to: UnitAddress = "gz.haizhu/civil-affairs".parse().expect("valid address");
        let payload = make_payload(0, size);
        let envelopes: Vec<SignedEnvelope> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| benchmark_document(i, &from, &to, &payload).sign(k))
            .collect();
        let vk: Vec<_> = keys.iter().map(|k| k.verifying_key()).collect();
        let min = Duration::from_millis(300);
        let verify_us = time_per_call(min, || {
            envelopes[0].verify(&vk[0]).expect("verifies");
        });
        let pairs: Vec<(&SignedEnvelope, &ed25519_dalek::VerifyingKey)> = envelopes.iter().zip(&vk).collect();
        let verify_batch64_us = time_per_call(min, || {
            assert!(verify_batch(&pairs).iter().all(|r| r.is_ok()));
        }) / 64.0;
        let unsigned = envelopes[0].envelope.clone();
        let sign_us = time_per_call(min, || {
            std::hint::black_box(unsigned.clone().sign(&keys[0]));
        });
        let digest_payload_us = time_per_call(min, || {
            std::hint::black_box(digest_payload(std::hint::black_box(&payload)));
        });
        let header = envelopes[0].bytes.clone();
        let digest_header_us = time_per_call(min, || {
            std::hint::black_box(digest_payload(std::hint::black_box(&header)));
        });
        Floor { verify_us, verify_batch64_us, sign_us, digest_payload_us, digest_header_us }
    }

    /// The floor per message in µs: with the cheaper of batched and one-by-one verification (in debug
    /// builds batching can be the slower), or with one-by-one verification only.
    fn floor_us(&self, c: &FloorCounts, batched: bool) -> f64 {
        let v = if batched { self.verify_batch64_us.min(self.verify_us) } else { self.verify_us };
        c.verifications as f64 * v
            + c.signatures as f64 * self.sign_us
            + c.payload_digests as f64 * self.digest_payload_us
            + c.small_digests as f64 * self.digest_header_us
    }

    /// Prints what each operation costs here and the floor per message.
    pub(super) fn print(&self, c: &FloorCounts, size: usize) {
        println!("\n== Peer: the protocol's own work per message, measured in this process");
        println!(
            "   ed25519 verify {:.1} µs, in batches of 64 {:.1} µs each; sign {:.1} µs; SHA-256 of {} B {:.2} µs, of a header {:.2} µs",
            self.verify_us, self.verify_batch64_us, self.sign_us, size, self.digest_payload_us, self.digest_header_us
        );
        println!(
            "   required per message by all nodes: {} verifications, {} node signature, {} payload digests, {} header/report digests",
            c.verifications, c.signatures, c.payload_digests, c.small_digests
        );
        println!(
            "   floor: {:.1} µs per message with the cheaper verification ({:.1} µs verifying one by one)",
            self.floor_us(c, true),
            self.floor_us(c, false)
        );
    }

    /// Prints the nodes' CPU per message (`total_us`, all nodes together) against the floor, and
    /// against the floor with the store's share added (`storage_us` per message).
    pub(super) fn print_against(&self, c: &FloorCounts, total_us: f64, storage_us: f64) {
        let (floor_batched, floor_single) = (self.floor_us(c, true), self.floor_us(c, false));
        println!(
            "\n== Against the peer: {:.1} µs/msg measured over all nodes vs a floor of {:.1} µs/msg: {:.1}× (target ≤ 2.0×; {:.1}× against the one-by-one floor of {:.1} µs)",
            total_us,
            floor_batched,
            total_us / floor_batched,
            total_us / floor_single,
            floor_single
        );
        let with_storage = floor_batched + storage_us;
        println!(
            "   with storage: signatures {floor_batched:.1} + storage {storage_us:.1} = {with_storage:.1} µs/msg ({:.1}× the signature floor before any other work); the nodes are at {:.1}× that",
            with_storage / floor_batched,
            total_us / with_storage
        );
    }

    /// The result's `peer` object: the costs, the operations per message, the floor and the nodes'
    /// ratio to it (`total_us`: CPU per message over all nodes).
    pub(super) fn json(&self, c: &FloorCounts, total_us: f64, storage: Value) -> Value {
        let (floor_batched, floor_single) = (self.floor_us(c, true), self.floor_us(c, false));
        json!({
            "verify_us": self.verify_us,
            "verify_batch64_us_per_signature": self.verify_batch64_us,
            "sign_us": self.sign_us,
            "sha256_payload_us": self.digest_payload_us,
            "sha256_header_us": self.digest_header_us,
            "per_message": {
                "verifications": c.verifications,
                "node_signatures": c.signatures,
                "payload_digests": c.payload_digests,
                "header_and_report_digests": c.small_digests,
            },
            "floor_us_per_message": floor_batched,
            "floor_unbatched_us_per_message": floor_single,
            "ratio": total_us / floor_batched,
            "ratio_unbatched": total_us / floor_single,
            "target_ratio": 2.0,
            "storage_floor": storage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_counts_follow_the_custody_rules() {
        let with = FloorCounts::new(true);
        assert_eq!((with.verifications, with.signatures, with.payload_digests), (8, 1, 3));
        let without = FloorCounts::new(false);
        assert_eq!((without.verifications, without.signatures), (5, 1));
    }
}
