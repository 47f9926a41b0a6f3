//! The storage side of the floor: what the node's own store spends for one envelope passing one node,
//! measured in this process before any node runs, as the signature floor is (`floor.rs`).
//!
//! Why: the signature floor leaves out storage, yet custody means every envelope is made durable at
//! every node it passes. The nodes' CPU per document can only approach the floor as closely as the
//! store lets it, so the benchmark measures that share too and prints both side by side; where the
//! ≤ 2.0× target is out of reach, this line shows how much of the gap storage alone takes.
//!
//! What one envelope-hop is here, written as a relay writes it (`relay::custody::take`, the
//! forwarder's `answered`): taking custody (the message row, its `received` audit entry and an outbox
//! entry, in a group commit with the others), reading it back from the outbox for the next hop, and
//! recording the neighbour's acknowledgement (the outbox entry done, a `forwarded` audit entry). The
//! store is `SqliteStore` opened exactly as `exchange-node run` opens it (WAL, an fsync per commit),
//! on the benchmark's own folder, so the same disk.

use std::time::Instant;

use anyhow::Context;
use ed25519_dalek::SigningKey;
use exchange_node_core::relay::handover::event;
use exchange_node_core::storage::{Custody, MessageRow, OutboxRow, Record, SqliteStore, Store, WriteJob};
use exchange_wire::{Kind, NodeId, Priority, UnitAddress};
use serde_json::{Value, json};

use super::{benchmark_document, make_payload};

/// Envelopes per group commit: about what the nodes commit together at full load (the bench's
/// `mean jobs/commit` column shows 370-520 there).
const PER_COMMIT: usize = 400;
/// Commits measured (after one to warm up).
const COMMITS: usize = 20;

/// What one envelope-hop cost the store, in CPU µs of this process (all its threads, SQLite's
/// worker threads included) and in wall-clock µs.
#[derive(Debug, Clone, Copy)]
pub(super) struct StorageFloor {
    cpu_us: f64,
    wall_us: f64,
}

/// CPU time of this process so far (user and system, all threads), in µs.
fn process_cpu_us() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given and reads nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// Where the measured envelopes come from and go: the benchmark's own route, 越秀 → 广州 → 海珠.
struct Route {
    sender: UnitAddress,
    recipient: UnitAddress,
    from: NodeId,
    next: NodeId,
    key: SigningKey,
}

impl Route {
    fn new() -> anyhow::Result<Route> {
        Ok(Route {
            sender: "gz.yuexiu/liurong-street".parse()?,
            recipient: "gz.haizhu/civil-affairs".parse()?,
            from: "gz.yuexiu".parse()?,
            next: "gz.haizhu".parse()?,
            key: exchange_wire::keys::generate(),
        })
    }

    /// The rows a relay (广州) writes when it takes custody of envelope `i` of `size` payload bytes,
    /// and its id.
    fn custody_of(&self, i: usize, size: usize, now_ms: u64) -> (Custody, [u8; 32]) {
        let payload = make_payload(i, size);
        let signed = benchmark_document(i, &self.sender, &self.recipient, &payload).sign(&self.key);
        let id = signed.id.0;
        let hops = json!([{ "node": self.from.as_str(), "at_ms": now_ms }, { "node": "gz", "at_ms": now_ms }]).to_string();
        let message = MessageRow {
            id,
            header: signed.bytes,
            signature: signed.signature,
            payload,
            kind: Kind::Document.as_str().to_string(),
            sender: self.sender.to_string(),
            priority: Priority::Routine.rank(),
            created_at_ms: now_ms as i64,
            received_at_ms: now_ms as i64,
            received_from: Some(self.from.to_string()),
            hops,
        };
        let outbox = OutboxRow {
            message_id: id,
            next_hop: self.next.to_string(),
            recipients: json!([self.recipient.to_string()]).to_string(),
            priority: Priority::Routine.rank(),
            enqueued_at_ms: now_ms as i64,
        };
        let events = vec![event(id, now_ms, "received", None, Some(&self.from), None)];
        (Custody { message: Some(message), outbox: vec![outbox], events, ..Custody::default() }, id)
    }
}

impl StorageFloor {
    /// Passes `(COMMITS + 1) × PER_COMMIT` envelopes of `size` bytes through a fresh store in
    /// `folder` (removed afterwards) and returns the cost of one, the first commit left out.
    pub(super) fn measure(folder: &std::path::Path, size: usize) -> anyhow::Result<StorageFloor> {
        let dir = tempfile::tempdir_in(folder).context("cannot make a folder for the storage measurement")?;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let route = Route::new()?;
        runtime.block_on(async {
            let store = SqliteStore::open_standalone(&dir.path().join("node.db")).await?;
            let now = exchange_wire::now_ms();
            // Rows are made before the clock starts: signing belongs to the other floor.
            let rounds: Vec<Vec<(Custody, [u8; 32])>> =
                (0..=COMMITS).map(|c| (0..PER_COMMIT).map(|i| route.custody_of(c * PER_COMMIT + i, size, now)).collect()).collect();
            let (mut cpu_us, mut wall_us) = (0.0, 0.0);
            for (round, jobs) in rounds.into_iter().enumerate() {
                let (cpu, wall) = (process_cpu_us(), Instant::now());
                let (custody, ids): (Vec<WriteJob>, Vec<[u8; 32]>) = jobs.into_iter().map(|(c, id)| (WriteJob::Custody(c), id)).unzip();
                store.commit(&custody).await?;
                let batch = store.outbox_batch(route.next.as_str(), PER_COMMIT, 64 << 20).await?;
                anyhow::ensure!(batch.len() == PER_COMMIT, "the outbox gave {} of {PER_COMMIT} entries", batch.len());
                let record = Record {
                    outbox_done: batch.iter().map(|o| o.seq).collect(),
                    events: ids.iter().map(|id| event(*id, now, "forwarded", None, Some(&route.next), None)).collect(),
                    ..Record::default()
                };
                store.commit(&[WriteJob::Record(record)]).await?;
                if round > 0 {
                    cpu_us += process_cpu_us() - cpu;
                    wall_us += wall.elapsed().as_secs_f64() * 1e6;
                }
            }
            let n = (COMMITS * PER_COMMIT) as f64;
            Ok(StorageFloor { cpu_us: cpu_us / n, wall_us: wall_us / n })
        })
    }

    /// Prints the cost of one envelope-hop and what `hops` of them per document come to.
    pub(super) fn print(&self, hops: u32) {
        println!(
            "   storage (the node's SQLite store, measured here): {:.1} µs CPU per envelope passing one node ({:.1} µs wall; groups of {PER_COMMIT}, fsync per commit)",
            self.cpu_us, self.wall_us
        );
        println!(
            "   {hops} envelope-hops per message (each envelope through each node) → {:.1} µs of storage per message",
            self.per_message_us(hops)
        );
    }

    /// The storage CPU per message: `hops` envelope-hops.
    pub(super) fn per_message_us(&self, hops: u32) -> f64 {
        self.cpu_us * hops as f64
    }

    /// The result's `storage_floor` object.
    pub(super) fn json(&self, hops: u32) -> Value {
        json!({
            "cpu_us_per_envelope_hop": self.cpu_us,
            "wall_us_per_envelope_hop": self.wall_us,
            "envelope_hops_per_message": hops,
            "cpu_us_per_message": self.per_message_us(hops),
            "envelopes_per_commit": PER_COMMIT,
        })
    }
}
