//! The deadlines of the queries asked here (查询核验) that have no outcome yet, earliest first: the
//! state `asking` keeps to time queries out.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;

use exchange_wire::MessageId;
use tokio::sync::Notify;

/// The deadlines of the queries asked here that have no outcome yet, earliest first.
#[derive(Default)]
pub struct Deadlines {
    pub(super) pending: Mutex<BinaryHeap<Reverse<(u64, [u8; 32])>>>,
    pub(super) changed: Notify,
}

impl Deadlines {
    pub(super) fn watch(&self, deadline_ms: u64, id: MessageId) {
        self.pending.lock().expect("deadlines lock").push(Reverse((deadline_ms, id.0)));
        self.changed.notify_one();
    }
}
