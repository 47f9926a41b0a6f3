//! The queries part's state: the deadlines of the queries asked here (查询核验) that have no outcome
//! yet, earliest first, which `asking` keeps to time queries out. Its work (status, the deadline
//! watcher, recording a timeout) is in `asking.rs` as methods of [`Queries`]; the door that takes a
//! query or an answer in stays the engine's (it is the ingress pipeline's), and tells this part
//! of a query taken through [`Queries::watch`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};

use exchange_wire::MessageId;
use tokio::sync::Notify;

use super::services::Services;

/// The queries part: the shared services it works with and the deadlines it watches. Cheap to
/// clone (the deadline watcher task owns a clone).
#[derive(Clone)]
pub struct Queries {
    pub(super) services: Arc<Services>,
    deadlines: Arc<Deadlines>,
}

/// The deadlines of the queries asked here that have no outcome yet, earliest first.
#[derive(Default)]
struct Deadlines {
    pending: Mutex<BinaryHeap<Reverse<(u64, [u8; 32])>>>,
    changed: Notify,
}

impl Queries {
    pub fn new(services: Arc<Services>) -> Queries {
        Queries { services, deadlines: Arc::default() }
    }

    /// Watches query `id` until `deadline_ms`.
    pub(super) fn watch(&self, deadline_ms: u64, id: MessageId) {
        self.deadlines.pending.lock().expect("deadlines lock").push(Reverse((deadline_ms, id.0)));
        self.deadlines.changed.notify_one();
    }

    /// The earliest deadline watched, and its query.
    pub(super) fn next(&self) -> Option<(u64, [u8; 32])> {
        self.deadlines.pending.lock().expect("deadlines lock").peek().map(|r| r.0)
    }

    /// Stops watching the earliest deadline (it passed and is being recorded).
    pub(super) fn pop(&self) {
        self.deadlines.pending.lock().expect("deadlines lock").pop();
    }

    /// Resolves when a deadline is added.
    pub(super) async fn changed(&self) {
        self.deadlines.changed.notified().await
    }
}
