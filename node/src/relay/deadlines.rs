//! The queries part's state: the deadlines of the queries asked here (查询核验) that have no outcome
//! yet, earliest first, which `asking` keeps to time queries out.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;

use exchange_wire::MessageId;
use tokio::sync::Notify;

/// The deadlines of the queries asked here that have no outcome yet, earliest first.
#[derive(Default)]
pub struct Deadlines {
    pending: Mutex<BinaryHeap<Reverse<(u64, [u8; 32])>>>,
    changed: Notify,
}

impl Deadlines {
    /// Watches query `id` until `deadline_ms`.
    pub(super) fn watch(&self, deadline_ms: u64, id: MessageId) {
        self.pending.lock().expect("deadlines lock").push(Reverse((deadline_ms, id.0)));
        self.changed.notify_one();
    }

    /// The earliest deadline watched, and its query.
    pub(super) fn next(&self) -> Option<(u64, [u8; 32])> {
        self.pending.lock().expect("deadlines lock").peek().map(|r| r.0)
    }

    /// Stops watching the earliest deadline (it passed and is being recorded).
    pub(super) fn pop(&self) {
        self.pending.lock().expect("deadlines lock").pop();
    }

    /// Resolves when a deadline is added.
    pub(super) async fn changed(&self) {
        self.changed.notified().await
    }
}
