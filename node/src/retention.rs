//! The retention rules as plain functions: what a purge of settled messages (`exchange-admin purge`)
//! may drop. The storage loads the candidates, asks these, and deletes what they allow, in one
//! transaction.
//!
//! The message's id row always stays, so a late re-send of a purged message is still recognised as
//! a duplicate and never delivered twice.

use crate::settlement;

/// An inbox entry as retention sees it.
#[derive(Debug, Clone, Copy)]
pub struct InboxEntry<'a> {
    pub state: &'a str,
    pub delivered_at_ms: i64,
}

/// Whether an inbox entry may go: settled (signed for or returned) and delivered before `before_ms`.
/// Entries still waiting, and recalled ones (their recall outcome is the sender's record), stay.
pub fn retires_entry(e: InboxEntry, before_ms: i64) -> bool {
    e.delivered_at_ms < before_ms && matches!(e.state, settlement::SIGNED_FOR | settlement::RETURNED)
}

/// A held message as retention sees it.
#[derive(Debug, Clone, Copy)]
pub struct HeldMessage {
    pub received_at_ms: i64,
    /// Still queued toward a neighbour (dead letters included).
    pub in_outbox: bool,
    /// Still in some unit's inbox (after the entries retired in the same purge are gone).
    pub in_inbox: bool,
}

/// Whether a message's payload may be dropped: received before `before_ms` and no longer needed by
/// an outbox or an inbox.
pub fn drops_payload(m: HeldMessage, before_ms: i64) -> bool {
    m.received_at_ms < before_ms && !m.in_outbox && !m.in_inbox
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_settled_old_entries_retire() {
        let entry = |state, delivered_at_ms| InboxEntry { state, delivered_at_ms };
        assert!(retires_entry(entry("signed-for", 5), 10));
        assert!(retires_entry(entry("returned", 5), 10));
        assert!(!retires_entry(entry("signed-for", 10), 10), "not before the cut-off");
        assert!(!retires_entry(entry("delivered", 5), 10), "still waiting to be settled");
        assert!(!retires_entry(entry("recalled", 5), 10));
    }

    #[test]
    fn a_payload_stays_while_anything_needs_it() {
        let held = |in_outbox, in_inbox| HeldMessage { received_at_ms: 5, in_outbox, in_inbox };
        assert!(drops_payload(held(false, false), 10));
        assert!(!drops_payload(held(true, false), 10), "still to forward");
        assert!(!drops_payload(held(false, true), 10), "still in an inbox");
        assert!(!drops_payload(held(false, false), 5), "not before the cut-off");
    }
}
