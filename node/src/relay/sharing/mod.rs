//! Base-data sharing (数据共享交换) in the engine: the catalog in force, publishing records at the
//! owner's home node, subscription requests and decisions, and subscribers' ordered streams.
//!
//! * **Publish**: the owner unit signs a `data-record`; its home node checks signature, ownership
//!   (一数一源) and the topic's schema, numbers it within its topic, appends it to the topic log and,
//!   in the same commit, wraps it in one node-signed `data-delivery` addressed to every granted
//!   subscriber. That delivery is an ordinary message from then on: routed once per link, fanned out
//!   at the last shared node, deduplicated by its content-derived id.
//! * **Order**: the owner's home node is the one place that numbers a topic, and it numbers records
//!   one at a time under a lock, so every subscriber sees the same sequence. The subscriber's home
//!   node stores what arrives by sequence number and hands out only the run without gaps: a record
//!   whose predecessor has not arrived is held back, never skipped, never repeated.
//! * **Subscriptions** are requested by a unit (signed `subscription-request` to the owner),
//!   decided at the owner's home node (at once for `open` and `not-shared` topics, by the owner unit
//!   or an operator for `approval`), and answered with a node-signed `subscription-decision`. A
//!   grant carries the backlog from the requested start in the same commit.
//!
//! The parts: [`catalog`] (the catalog in force), [`publishing`], [`subscriptions`] (requests and
//! decisions), [`backfill`] (granted backlogs), [`reads`] (streams and acknowledgements), and
//! [`delivery`], the custody rules for sharing envelopes (pure functions, called by `custody`).

pub(crate) mod backfill;
pub(crate) mod catalog;
pub(crate) mod delivery;
mod publishing;
mod reads;
mod subscriptions;

use std::sync::Arc;

use exchange_wire::api::SignedMessage;
use exchange_wire::sharing::{DataItem, SubscriptionView};
use exchange_wire::{Digest, SignedEnvelope};

use crate::relay::Refusal;
use crate::sharing::{CatalogHandle, CompiledCatalog};
use crate::storage::EventRow;
use crate::storage::sharing::{DataInboxRow, SubscriptionRow};
use delivery::verify_unit;

/// The data-sharing part's state: the catalog in force (its schemas compiled), the lock under which
/// this node numbers published records and decides subscriptions, and the turn of the one task that
/// sends granted backlogs. The engine's sharing code (the files of this folder) reaches it only
/// through these methods.
#[derive(Default)]
pub struct Sharing {
    catalog: CatalogHandle,
    numbering: tokio::sync::Mutex<()>,
    backfill: tokio::sync::Mutex<()>,
}

impl Sharing {
    /// The catalog in force, if any.
    pub fn catalog(&self) -> Option<Arc<CompiledCatalog>> {
        self.catalog.current()
    }

    fn put_in_force(&self, catalog: Arc<CompiledCatalog>) {
        self.catalog.replace(catalog);
    }

    /// Held while records are numbered or subscriptions decided: the sequence numbers and the
    /// subscriber lists must not change between reading them and committing.
    async fn numbering(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.numbering.lock().await
    }

    /// Held by the one task that sends granted backlogs.
    async fn backfill_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.backfill.lock().await
    }
}

/// Sharing with `unit` is done at its home node only: this one.
fn check_home(here: &exchange_wire::NodeId, dir: &crate::directory::Directory, unit: &exchange_wire::UnitAddress) -> Result<(), Refusal> {
    match dir.home_of(unit) {
        Some(home) if &home == here => Ok(()),
        None => Err(Refusal::new("unknown-sender", 403, format!("unit {unit} is not in the directory"))),
        Some(home) => Err(Refusal::new("wrong-node", 403, format!("unit {unit} belongs to node {home}; use that node"))),
    }
}

fn sharing_event(id: Option<[u8; 32]>, event: &'static str, unit: Option<String>, detail: String) -> EventRow {
    EventRow { at_ms: exchange_wire::now_ms() as i64, category: "sharing", message_id: id, event, unit, peer: None, detail: Some(detail) }
}

fn corrupt(what: &str) -> Refusal {
    tracing::error!(what, "stored sharing data is unreadable");
    Refusal::new("storage", 500, format!("stored {what} is unreadable"))
}

/// A stored record (canonical header, signature, payload) as the publisher signed it.
fn signed_message(header: &[u8], signature: &[u8], payload: &[u8]) -> Result<(SignedEnvelope, SignedMessage), Refusal> {
    let sig: [u8; 64] = signature.try_into().map_err(|_| corrupt("record signature"))?;
    let signed = SignedEnvelope::from_canonical(header.to_vec(), sig).map_err(|_| corrupt("record"))?;
    let message = SignedMessage::new(&signed, payload);
    Ok((signed, message))
}

/// Strict verification of a unit's signature against the keys the directory lists for it, valid

/// Records of a backlog sent per commit.
const BACKFILL_PAGE: i64 = 256;

fn view(r: &SubscriptionRow, received_up_to: Option<i64>) -> Result<SubscriptionView, Refusal> {
    let local = r.state == "requested" || received_up_to.is_some();
    Ok(SubscriptionView {
        topic: r.topic.clone(),
        subscriber: r.subscriber.parse().map_err(|_| corrupt("subscriber address"))?,
        owner: r.owner.parse().map_err(|_| corrupt("owner address"))?,
        state: r.state.clone(),
        from: r.start.clone(),
        first_seq: r.first_seq.map(|f| f as u64),
        cursor: local.then_some(r.cursor.max(0) as u64),
        received_up_to: received_up_to.map(|e| e.max(0) as u64),
        reason: r.reason.clone(),
        decided_by: r.decided_by.clone(),
        request_id: Digest(r.request_id),
        requested_at_ms: r.requested_at_ms as u64,
        decided_at_ms: r.decided_at_ms.map(|d| d as u64),
    })
}

fn data_item(r: DataInboxRow) -> Result<DataItem, Refusal> {
    let (_, record) = signed_message(&r.header, &r.signature, &r.payload)?;
    Ok(DataItem {
        seq: r.seq as u64,
        topic: r.topic,
        subject: r.subject,
        published_at_ms: r.published_at_ms as u64,
        delivered_at_ms: r.delivered_at_ms as u64,
        delivery_id: Digest(r.delivery_id),
        record,
    })
}
