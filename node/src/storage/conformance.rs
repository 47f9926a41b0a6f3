//! The storage conformance suite: what every [`Store`] must do, written once against the trait.
//!
//! Each check is a plain `async fn(&dyn Store)` on an empty store; [`conformance_suite!`] turns them
//! into one `#[tokio::test]` each for an implementation, given how to open a fresh one. The SQLite
//! store runs it below; any other implementation (PostgreSQL) is held to the same list by invoking
//! the macro with its own opener. The checks pin the contract the relay engine relies on: custody
//! taken once per id, outbox order by priority, inbox paging, one settlement per entry, recalls
//! decided in order with 签收, retention, topic numbering, the audit chain, and that a failed
//! transaction commits nothing.

use exchange_wire::api::RecipientState;

use super::sharing::{SharingJob, TopicLogRow};
use super::*;

/// Turns every check into a test for one implementation. `$open` is an expression giving a future
/// of `(store, guard)`: a fresh, empty store and whatever must live as long as it (a temporary
/// folder, a database to drop).
#[macro_export]
macro_rules! conformance_suite {
    ($open:expr) => {
        $crate::conformance_suite!(@tests $open;
            custody_is_taken_once_per_id,
            outbox_serves_urgent_first_and_forgets_what_was_acknowledged,
            outbox_batches_are_cut_by_size_but_never_empty,
            dead_letters_leave_the_queue_until_resent,
            inbox_pages_in_delivery_order,
            an_entry_is_settled_once,
            a_recall_is_decided_in_order_with_sign_for,
            only_the_sender_recalls,
            tracking_only_moves_forward,
            retention_drops_settled_payloads_but_remembers_ids,
            topic_numbers_are_unique,
            the_audit_chain_covers_every_event,
            a_message_s_events_are_found_whether_held_or_not,
            nothing_is_queued_for_a_message_not_held,
            a_failed_transaction_commits_nothing,
            a_transaction_in_parts_ends_early_when_asked,
            segments_only_move_to_newer_versions,
            tokens_and_webhooks_are_kept,
            attachments_are_in_use_while_a_message_needs_them,
            documents_citing_an_attachment_are_found_for_their_readers
        );
    };
    (@tests $open:expr; $($check:ident),+) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (store, _guard) = $open.await;
                $crate::storage::conformance::$check(&store).await;
            }
        )+
    };
}

const SENDER: &str = "gz.yuexiu/liurong-street";
pub(crate) const UNIT_A: &str = "gz.haizhu/civil-affairs";
const UNIT_B: &str = "gz.haizhu/public-security";

fn id(n: u8) -> [u8; 32] {
    [n; 32]
}

/// A document `n` with the given priority rank, as custody at a node that forwards it to `hop` and
/// delivers it to `deliver_to` here.
pub(crate) fn document(n: u8, priority: u8, hop: Option<&str>, deliver_to: &[&str], at_ms: i64) -> Custody {
    let message = MessageRow {
        id: id(n),
        header: format!("header of document {n}").into_bytes(),
        signature: [n; 64],
        payload: vec![n; 100],
        kind: "document".into(),
        sender: SENDER.into(),
        priority,
        created_at_ms: at_ms,
        received_at_ms: at_ms,
        received_from: None,
        hops: "[]".into(),
    };
    Custody {
        message: Some(message),
        outbox: hop
            .map(|h| OutboxRow { message_id: id(n), next_hop: h.into(), recipients: format!("[\"{UNIT_A}\"]"), priority, enqueued_at_ms: at_ms })
            .into_iter()
            .collect(),
        inbox: deliver_to.iter().map(|u| InboxRow { unit: (*u).into(), message_id: id(n), delivered_at_ms: at_ms }).collect(),
        tracking: vec![],
        events: vec![event(at_ms, Some(id(n)), "accepted")],
        ..Custody::default()
    }
}

fn event(at_ms: i64, message_id: Option<[u8; 32]>, what: &'static str) -> EventRow {
    EventRow { at_ms, category: "custody", message_id, event: what, unit: None, peer: None, detail: Some(format!("at {at_ms}")) }
}

async fn commit(store: &dyn Store, jobs: Vec<WriteJob>) -> Vec<JobOutcome> {
    store.commit(&jobs).await.expect("the commit succeeds")
}

/// 签收 (or 退回) of document `n` by `unit` with receipt `receipt`.
fn settle(unit: &str, n: u8, state: &'static str, receipt: u8) -> WriteJob {
    let mut r = document(receipt, 0, None, &[], 5);
    if let Some(m) = r.message.as_mut() {
        m.kind = "receipt".into();
    }
    WriteJob::SignFor { unit: unit.into(), message_id: id(n), state, receipt: r }
}

fn recall(n: u8, recall_id: u8, unit: &str, sender: &str) -> WriteJob {
    WriteJob::Custody(Custody {
        recalls: vec![RecallRow { recall_id: id(recall_id), message_id: id(n), unit: unit.into(), original_sender: sender.into(), priority: 0, at_ms: 9 }],
        ..Custody::default()
    })
}

async fn inbox_state(store: &dyn Store, unit: &str, n: u8) -> Option<String> {
    store.inbox_entry(unit, &id(n)).await.unwrap().map(|e| e.state)
}

pub async fn custody_is_taken_once_per_id(store: &dyn Store) {
    let outcomes = commit(store, vec![WriteJob::Custody(document(1, 2, Some("gz"), &[], 1)), WriteJob::Custody(document(1, 2, Some("gz"), &[], 1))]).await;
    assert_eq!(outcomes, [JobOutcome::Stored, JobOutcome::Duplicate], "the same id twice in one transaction");
    let again = commit(store, vec![WriteJob::Custody(document(1, 0, Some("gz.tianhe"), &[UNIT_A], 2))]).await;
    assert_eq!(again, [JobOutcome::Duplicate], "the same id in a later transaction");
    let held = store.message(&id(1)).await.unwrap().expect("held");
    assert_eq!(held.payload, vec![1; 100]);
    assert_eq!(held.signature, vec![1; 64]);
    assert_eq!(store.outbox_batch("gz", 10, usize::MAX).await.unwrap().len(), 1, "a duplicate writes nothing");
    assert!(store.outbox_batch("gz.tianhe", 10, usize::MAX).await.unwrap().is_empty());
    assert!(store.inbox(UNIT_A, 0, 10, usize::MAX).await.unwrap().is_empty());
    assert!(store.message(&id(2)).await.unwrap().is_none());
}

pub async fn outbox_serves_urgent_first_and_forgets_what_was_acknowledged(store: &dyn Store) {
    // Ranks: 0 urgent (特急), 1 express (加急), 2 routine (平件); enqueued routine first.
    let jobs = [(1, 2), (2, 2), (3, 1), (4, 0), (5, 2)].map(|(n, p)| WriteJob::Custody(document(n, p, Some("gz"), &[], i64::from(n))));
    commit(store, jobs.to_vec()).await;
    let batch = store.outbox_batch("gz", 10, usize::MAX).await.unwrap();
    let order: Vec<u8> = batch.iter().map(|b| b.message_id[0]).collect();
    assert_eq!(order, [4, 3, 1, 2, 5], "urgent, express, then routine in arrival order");
    let first_two: Vec<u8> = store.outbox_batch("gz", 2, usize::MAX).await.unwrap().iter().map(|b| b.message_id[0]).collect();
    assert_eq!(first_two, [4, 3]);
    // A window of batches: what is already on the link is skipped, and the count still holds.
    let on_the_link = batch.iter().take(2).map(|b| b.seq).collect();
    let next: Vec<u8> = store.outbox_batch_skipping("gz", 2, usize::MAX, &on_the_link, u8::MAX).await.unwrap().iter().map(|b| b.message_id[0]).collect();
    assert_eq!(next, [1, 2], "the next batch of the window");
    // An urgent entry that arrives while those are in flight still comes first.
    commit(store, vec![WriteJob::Custody(document(6, 0, Some("gz"), &[], 6))]).await;
    let next = store.outbox_batch_skipping("gz", 2, usize::MAX, &on_the_link, u8::MAX).await.unwrap();
    assert_eq!(next.iter().map(|b| b.message_id[0]).collect::<Vec<_>>(), [6, 1], "urgent first, even behind batches in flight");
    // A batch beyond a full window reads only entries more urgent than a rank (the forwarder's
    // urgent batches: more urgent than routine).
    for (more_urgent_than, expected, why) in [
        (1, vec![6], "特急 only"),
        (2, vec![6], "特急 and 加急: the 加急 entry is on the link, the routine ones are not read"),
        (0, vec![], "nothing is more urgent than 特急"),
    ] {
        let read = store.outbox_batch_skipping("gz", 10, usize::MAX, &on_the_link, more_urgent_than).await.unwrap();
        assert_eq!(read.iter().map(|b| b.message_id[0]).collect::<Vec<u8>>(), expected, "{why}");
    }
    commit(store, vec![WriteJob::Record(Record { outbox_done: vec![next[0].seq], ..Record::default() })]).await;
    assert_eq!(batch[0].payload, vec![4; 100]);
    let done = batch.iter().take(2).map(|b| b.seq).collect();
    commit(store, vec![WriteJob::Record(Record { outbox_done: done, ..Record::default() })]).await;
    let left: Vec<u8> = store.outbox_batch("gz", 10, usize::MAX).await.unwrap().iter().map(|b| b.message_id[0]).collect();
    assert_eq!(left, [1, 2, 5]);
    let stats = store.queue_stats().await.unwrap();
    let gz = stats.iter().find(|s| s.hop == "gz").expect("a queue toward gz");
    assert_eq!((gz.depth, gz.dead), (3, 0));
}

pub async fn outbox_batches_are_cut_by_size_but_never_empty(store: &dyn Store) {
    let jobs = (1..=4).map(|n| WriteJob::Custody(document(n, 2, Some("gz"), &[], i64::from(n)))).collect();
    commit(store, jobs).await;
    assert_eq!(store.outbox_batch("gz", 10, 1).await.unwrap().len(), 1, "the first entry goes whatever its size");
    let all = store.outbox_batch("gz", 10, usize::MAX).await.unwrap();
    let one = crate::network::protocol::parcel_size_bound(all[0].header.len(), 64, 100, all[0].recipients.len(), all[0].hops.len());
    assert_eq!(store.outbox_batch("gz", 10, 2 * one + one / 2).await.unwrap().len(), 2, "cut to the byte budget");
}

pub async fn dead_letters_leave_the_queue_until_resent(store: &dyn Store) {
    commit(store, (1..=2).map(|n| WriteJob::Custody(document(n, 2, Some("gz"), &[], 1))).collect()).await;
    let batch = store.outbox_batch("gz", 10, usize::MAX).await.unwrap();
    let dead = batch[0].seq;
    commit(store, vec![WriteJob::Record(Record { outbox_dead: vec![(dead, "no such recipient".into())], ..Record::default() })]).await;
    assert_eq!(store.outbox_batch("gz", 10, usize::MAX).await.unwrap().len(), 1);
    let letters = store.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].seq, letters[0].reason.as_str()), (dead, "no such recipient"));
    let resent = commit(store, vec![WriteJob::Admin { op: AdminOp::ResendDead(Some(vec![dead])), events: vec![] }]).await;
    assert_eq!(resent, [JobOutcome::Affected(1)]);
    assert_eq!(store.outbox_batch("gz", 10, usize::MAX).await.unwrap().len(), 2);
    assert!(store.dead_letters().await.unwrap().is_empty());
}

pub async fn inbox_pages_in_delivery_order(store: &dyn Store) {
    for n in 1..=5 {
        commit(store, vec![WriteJob::Custody(document(n, 2 - (n % 3), None, &[UNIT_A], i64::from(n)))]).await;
    }
    commit(store, vec![WriteJob::Custody(document(9, 2, None, &[UNIT_B], 9))]).await;
    let page = store.inbox(UNIT_A, 0, 2, usize::MAX).await.unwrap();
    assert_eq!(page.iter().map(|r| r.message_id[0]).collect::<Vec<_>>(), [1, 2], "delivery order, whatever the priority");
    let next = store.inbox(UNIT_A, page[1].seq, 10, usize::MAX).await.unwrap();
    assert_eq!(next.iter().map(|r| r.message_id[0]).collect::<Vec<_>>(), [3, 4, 5]);
    assert!(next.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(store.inbox(UNIT_A, 0, 10, 1).await.unwrap().len(), 1, "the first entry goes whatever its size");
    assert_eq!(store.inbox_last_seq(UNIT_A).await.unwrap(), next[2].seq);
    assert_eq!(store.inbox_last_seq("gz/nobody").await.unwrap(), 0);
    assert_eq!(next[0].payload, vec![3; 100]);
    assert_eq!(next[0].state, "delivered");
    commit(store, vec![settle(UNIT_A, 2, "signed-for", 102)]).await;
    let open = store.inbox_unsettled(UNIT_A, 0, 10).await.unwrap();
    assert_eq!(open.iter().map(|r| r.message_id[0]).collect::<Vec<_>>(), [1, 3, 4, 5]);
}

pub async fn an_entry_is_settled_once(store: &dyn Store) {
    commit(store, vec![WriteJob::Custody(document(1, 2, None, &[UNIT_A, UNIT_B], 1))]).await;
    assert_eq!(commit(store, vec![settle(UNIT_A, 1, "signed-for", 101)]).await, [JobOutcome::Stored]);
    assert_eq!(inbox_state(store, UNIT_A, 1).await.as_deref(), Some("signed-for"));
    assert!(store.message(&id(101)).await.unwrap().is_some(), "the receipt is taken into custody with it");
    assert_eq!(commit(store, vec![settle(UNIT_A, 1, "signed-for", 101)]).await, [JobOutcome::Duplicate], "the same receipt again");
    for conflicting in [settle(UNIT_A, 1, "signed-for", 111), settle(UNIT_A, 1, "returned", 112), settle(UNIT_A, 7, "signed-for", 113)] {
        let outcome = commit(store, vec![conflicting]).await;
        assert!(matches!(&outcome[..], [JobOutcome::Conflict(_)]), "{outcome:?}");
    }
    assert!(store.message(&id(111)).await.unwrap().is_none(), "a conflicting receipt is not taken");
    assert_eq!(inbox_state(store, UNIT_A, 1).await.as_deref(), Some("signed-for"));
    // Two settlements of one entry in the same transaction: the first wins.
    let both = commit(store, vec![settle(UNIT_B, 1, "returned", 121), settle(UNIT_B, 1, "signed-for", 122)]).await;
    assert_eq!(both[0], JobOutcome::Stored);
    assert!(matches!(both[1], JobOutcome::Conflict(_)));
    assert_eq!(inbox_state(store, UNIT_B, 1).await.as_deref(), Some("returned"));
    // Settlements of several entries in one transaction are each written.
    commit(store, vec![WriteJob::Custody(document(3, 2, None, &[UNIT_A, UNIT_B], 3))]).await;
    let several = commit(store, vec![settle(UNIT_A, 3, "signed-for", 131), settle(UNIT_B, 3, "returned", 132)]).await;
    assert_eq!(several, [JobOutcome::Stored, JobOutcome::Stored]);
    assert_eq!(inbox_state(store, UNIT_A, 3).await.as_deref(), Some("signed-for"));
    assert_eq!(inbox_state(store, UNIT_B, 3).await.as_deref(), Some("returned"));
}

pub async fn a_recall_is_decided_in_order_with_sign_for(store: &dyn Store) {
    commit(store, vec![WriteJob::Custody(document(1, 2, None, &[UNIT_A, UNIT_B], 1))]).await;
    commit(store, vec![settle(UNIT_A, 1, "signed-for", 101)]).await;
    // The recall reaches both; 签收 came first for A, so A's outcome is signed-for.
    commit(store, vec![recall(1, 50, UNIT_A, SENDER), recall(1, 50, UNIT_B, SENDER)]).await;
    assert_eq!(inbox_state(store, UNIT_A, 1).await.as_deref(), Some("signed-for"));
    assert_eq!(inbox_state(store, UNIT_B, 1).await.as_deref(), Some("recalled"));
    let mut outcomes: Vec<(String, String)> = store.unreported_recalls().await.unwrap().into_iter().map(|o| (o.unit, o.outcome)).collect();
    outcomes.sort();
    assert_eq!(outcomes, [(UNIT_A.to_string(), "signed-for".to_string()), (UNIT_B.to_string(), "recalled".to_string())]);
    // B's 签收 after the recall loses.
    assert!(matches!(&commit(store, vec![settle(UNIT_B, 1, "signed-for", 102)]).await[..], [JobOutcome::Conflict(_)]));
    // A recall that arrives before its document (another path) still wins over a later delivery.
    commit(store, vec![recall(2, 51, UNIT_A, SENDER)]).await;
    commit(store, vec![WriteJob::Custody(document(2, 2, None, &[UNIT_A], 3))]).await;
    assert_eq!(inbox_state(store, UNIT_A, 2).await.as_deref(), Some("recalled"));
    // Reported outcomes are not reported again.
    commit(store, vec![WriteJob::Custody(Custody { recalls_reported: vec![id(50), id(51)], ..Custody::default() })]).await;
    assert!(store.unreported_recalls().await.unwrap().is_empty());
}

pub async fn only_the_sender_recalls(store: &dyn Store) {
    commit(store, vec![WriteJob::Custody(document(1, 2, None, &[UNIT_A], 1))]).await;
    commit(store, vec![recall(1, 50, UNIT_A, "gz.tianhe/impostor")]).await;
    assert_eq!(inbox_state(store, UNIT_A, 1).await.as_deref(), Some("delivered"));
    let outcomes = store.unreported_recalls().await.unwrap();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].outcome, "not-sender");
}

pub async fn tracking_only_moves_forward(store: &dyn Store) {
    let track = |state, at_ms| TrackingRow { message_id: id(1), recipient: UNIT_A.into(), state, node: "gz.haizhu".into(), at_ms, detail: None, receipt_id: None };
    let mut doc = document(1, 2, Some("gz"), &[], 1);
    doc.tracking = vec![track(RecipientState::Accepted, 1)];
    commit(store, vec![WriteJob::Custody(doc)]).await;
    for (state, at) in [(RecipientState::Delivered, 3), (RecipientState::InTransit, 4), (RecipientState::Failed, 5)] {
        commit(store, vec![WriteJob::Record(Record { tracking: vec![track(state, at)], ..Record::default() })]).await;
    }
    let rows = store.tracking(&id(1)).await.unwrap();
    assert_eq!(rows.len(), 1, "one row per recipient");
    assert_eq!((rows[0].state.as_str(), rows[0].at_ms), ("delivered", 3), "never back from delivered");

    // Several facts about one recipient in one group commit apply as they would one by one: the
    // highest rank wins (the first of equals), and a receipt id once known is kept.
    let mut receipt = track(RecipientState::SignedFor, 7);
    receipt.receipt_id = Some(id(70));
    let mut later = track(RecipientState::Returned, 8);
    later.receipt_id = None;
    let facts = vec![track(RecipientState::InTransit, 6), receipt, later, track(RecipientState::Delivered, 9)];
    commit(store, vec![WriteJob::Record(Record { tracking: facts, ..Record::default() })]).await;
    let rows = store.tracking(&id(1)).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].state.as_str(), rows[0].at_ms), ("signed-for", 7), "the first settled fact of the batch");
    assert_eq!(rows[0].receipt_id.as_deref(), Some(id(70).as_slice()));

    // A status fact about a message not held here (a report reaching a node restored from an older
    // backup) is left out; the rest of its transaction commits.
    let stray = TrackingRow { message_id: id(2), ..track(RecipientState::Delivered, 10) };
    let outcomes = commit(store, vec![WriteJob::Record(Record { tracking: vec![stray], ..Record::default() }), WriteJob::Custody(document(3, 2, Some("gz"), &[], 10))]).await;
    assert_eq!(outcomes, [JobOutcome::Stored, JobOutcome::Stored]);
    assert!(store.tracking(&id(2)).await.unwrap().is_empty());
    assert!(store.message(&id(3)).await.unwrap().is_some());
}

pub async fn retention_drops_settled_payloads_but_remembers_ids(store: &dyn Store) {
    commit(store, vec![WriteJob::Custody(document(1, 2, None, &[UNIT_A], 10))]).await; // settled below
    commit(store, vec![WriteJob::Custody(document(2, 2, None, &[UNIT_A], 10))]).await; // not settled
    commit(store, vec![WriteJob::Custody(document(3, 2, Some("gz"), &[], 10))]).await; // still to forward
    commit(store, vec![WriteJob::Custody(document(4, 2, None, &[UNIT_A], 1_000))]).await; // too recent
    commit(store, vec![settle(UNIT_A, 1, "signed-for", 101), settle(UNIT_A, 4, "signed-for", 104)]).await;
    commit(store, vec![WriteJob::Admin { op: AdminOp::Retention { before_ms: 100 }, events: vec![] }]).await;
    assert!(store.inbox_entry(UNIT_A, &id(1)).await.unwrap().is_none(), "the settled entry is gone");
    assert!(store.message(&id(1)).await.unwrap().expect("the id is kept").payload.is_empty(), "its payload is dropped");
    for kept in [2, 3, 4] {
        assert_eq!(store.message(&id(kept)).await.unwrap().unwrap().payload, vec![kept; 100], "document {kept} keeps its payload");
    }
    assert_eq!(commit(store, vec![WriteJob::Custody(document(1, 2, None, &[UNIT_A], 200))]).await, [JobOutcome::Duplicate], "a late re-send is recognised");
}

fn log_row(topic: &str, seq: i64, record: u8) -> TopicLogRow {
    TopicLogRow {
        topic: topic.into(),
        seq,
        record_id: id(record),
        subject: format!("subject {record}"),
        publisher: "gz.yuexiu/civil-affairs".into(),
        published_at_ms: seq * 10,
        header: vec![record; 10],
        signature: vec![record; 64],
        payload: vec![record; 20],
    }
}

fn publish(topic: &str, seq: i64, record: u8) -> WriteJob {
    WriteJob::Sharing(SharingJob::Publish { log: log_row(topic, seq, record), delivery: None, events: vec![] })
}

pub async fn topic_numbers_are_unique(store: &dyn Store) {
    assert_eq!(commit(store, vec![publish("person.death", 1, 1), publish("person.death", 2, 2), publish("person.birth", 1, 3)]).await, [JobOutcome::Stored, JobOutcome::Stored, JobOutcome::Stored]);
    assert_eq!(commit(store, vec![publish("person.death", 3, 1)]).await, [JobOutcome::Duplicate], "a record is numbered once");
    let sharing = store.sharing();
    assert_eq!(sharing.topic_head("person.death").await.unwrap(), 2);
    assert_eq!(sharing.topic_head("company.registered").await.unwrap(), 0);
    assert_eq!(sharing.topic_record(&id(2)).await.unwrap(), Some(("person.death".to_string(), 2)));
    let log = sharing.topic_log("person.death", 1, 2, usize::MAX).await.unwrap();
    assert_eq!(log.iter().map(|r| (r.seq, r.record_id[0])).collect::<Vec<_>>(), [(1, 1), (2, 2)]);
    assert_eq!(sharing.topic_seq_at("person.death", 15).await.unwrap(), Some(2));
    // Two records under one number: the storage refuses the transaction, and nothing of it stays.
    assert!(store.commit(&[publish("person.death", 3, 4), publish("person.death", 3, 5)]).await.is_err());
    assert_eq!(sharing.topic_head("person.death").await.unwrap(), 2);
    assert!(sharing.topic_record(&id(4)).await.unwrap().is_none());
}

pub async fn the_audit_chain_covers_every_event(store: &dyn Store) {
    commit(store, vec![WriteJob::Custody(document(1, 2, None, &[UNIT_A], 1)), WriteJob::Custody(document(2, 2, None, &[UNIT_A], 2))]).await;
    commit(store, vec![WriteJob::Record(Record { events: vec![event(3, None, "refused"), event(4, Some(id(1)), "delivered")], ..Record::default() })]).await;
    commit(store, vec![WriteJob::Custody(document(1, 2, None, &[UNIT_A], 5))]).await; // a duplicate: its event is not written
    let page = store.audit_page(0, 100).await.unwrap();
    assert_eq!(page.iter().map(|e| e.at_ms).collect::<Vec<_>>(), [1, 2, 3, 4], "every event once, in commit order");
    let mut head = [0u8; 32];
    for e in &page {
        let row = EventRow { at_ms: e.at_ms, category: "custody", message_id: e.message_id.as_ref().map(|m| m.as_slice().try_into().unwrap()), event: "x", unit: e.unit.clone(), peer: e.peer.clone(), detail: e.detail.clone() };
        head = row.chain_hash_with(&head, &e.category, &e.event);
        assert_eq!(e.hash, head, "entry {} chains onto the one before", e.seq);
    }
    let check = store.audit_verify().await.unwrap();
    assert_eq!((check.entries, check.head_seq, check.head_hash, check.first_break), (4, page[3].seq, head, None));
    assert_eq!(store.events(&id(1)).await.unwrap().iter().map(|e| e.event.as_str()).collect::<Vec<_>>(), ["accepted", "delivered"]);
    let after = store.audit_page(page[1].seq, 1).await.unwrap();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), [page[2].seq]);
}

/// A message's trace finds every entry about it: written before it arrived (a refusal of the same
/// id), in the commit that took it, after it, and about an id never held at all.
pub async fn a_message_s_events_are_found_whether_held_or_not(store: &dyn Store) {
    let record = |e: EventRow| WriteJob::Record(Record { events: vec![e], ..Record::default() });
    commit(store, vec![record(event(1, Some(id(9)), "refused"))]).await;
    commit(store, vec![WriteJob::Custody(document(9, 2, Some("gz"), &[], 2))]).await;
    commit(store, vec![record(event(3, Some(id(9)), "handed-over")), record(event(4, Some(id(8)), "refused"))]).await;
    let of = |events: Vec<EventRecord>| events.into_iter().map(|e| (e.at_ms, e.event)).collect::<Vec<_>>();
    assert_eq!(of(store.events(&id(9)).await.unwrap()), [(1, "refused".into()), (2, "accepted".into()), (3, "handed-over".into())]);
    assert_eq!(of(store.events(&id(8)).await.unwrap()), [(4, "refused".into())], "an id never held");
    assert!(store.events(&id(7)).await.unwrap().is_empty());
}

/// An outbox entry names a message held here: one that is not could never be sent, and the
/// transaction that would queue it is refused whole.
pub async fn nothing_is_queued_for_a_message_not_held(store: &dyn Store) {
    let orphan = Custody {
        outbox: vec![OutboxRow { message_id: id(5), next_hop: "gz".into(), recipients: format!("[\"{UNIT_A}\"]"), priority: 2, enqueued_at_ms: 1 }],
        ..Custody::default()
    };
    assert!(store.commit(&[WriteJob::Custody(document(4, 2, Some("gz"), &[], 1)), WriteJob::Custody(orphan)]).await.is_err());
    assert!(store.outbox_batch("gz", 10, usize::MAX).await.unwrap().is_empty(), "nothing of the refused transaction");
    // Queued again for a message held (a second hop), it is taken.
    commit(store, vec![WriteJob::Custody(document(5, 2, Some("gz"), &[], 2))]).await;
    let again = Custody { outbox: vec![OutboxRow { next_hop: "gz.tianhe".into(), ..document(5, 2, Some("gz"), &[], 3).outbox[0].clone() }], ..Custody::default() };
    commit(store, vec![WriteJob::Custody(again)]).await;
    assert_eq!(store.outbox_batch("gz.tianhe", 10, usize::MAX).await.unwrap().len(), 1);
}

pub async fn a_failed_transaction_commits_nothing(store: &dyn Store) {
    let token = |id: &str| TokenRow { id: id.into(), hash: [7; 32], unit: UNIT_A.into(), label: "test".into(), issued_at_ms: 1, revoked_at_ms: None };
    commit(store, vec![WriteJob::Admin { op: AdminOp::IssueToken(token("t1")), events: vec![] }]).await;
    let before = store.audit_verify().await.unwrap();
    // A token id issued twice violates uniqueness: the document in the same transaction must not stay.
    let failed = store
        .commit(&[WriteJob::Custody(document(1, 2, Some("gz"), &[UNIT_A], 1)), WriteJob::Admin { op: AdminOp::IssueToken(token("t1")), events: vec![] }])
        .await;
    assert!(failed.is_err(), "uniqueness is enforced");
    assert!(store.message(&id(1)).await.unwrap().is_none());
    assert!(store.outbox_batch("gz", 10, usize::MAX).await.unwrap().is_empty());
    assert!(store.inbox(UNIT_A, 0, 10, usize::MAX).await.unwrap().is_empty());
    let after = store.audit_verify().await.unwrap();
    assert_eq!((after.entries, after.head_hash), (before.entries, before.head_hash), "no audit entry from the failed transaction");
    // And the store goes on: the same document commits now, and its event chains onto the old head.
    assert_eq!(commit(store, vec![WriteJob::Custody(document(1, 2, Some("gz"), &[UNIT_A], 1))]).await, [JobOutcome::Stored]);
    assert_eq!(store.audit_verify().await.unwrap().first_break, None);
}

/// A transaction in parts ends early when asked, and only between parts: what was applied is
/// committed and its outcomes returned, nothing after it is. Parts see each other as transactions
/// in sequence would (a duplicate across parts, a 签收 of a document from an earlier part), and the
/// audit chain stays whole.
pub async fn a_transaction_in_parts_ends_early_when_asked(store: &dyn Store) {
    let doc = |n| WriteJob::Custody(document(n, 2, None, &[UNIT_A], n as i64));
    let jobs = vec![doc(1), doc(2), doc(1), settle(UNIT_A, 1, "signed-for", 101), doc(3)];
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let second_time = || asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 1;
    let outcomes = store.commit_parts(&jobs, &[2, 4], &second_time).await.expect("the commit succeeds");
    assert_eq!(outcomes, [JobOutcome::Stored, JobOutcome::Stored, JobOutcome::Duplicate, JobOutcome::Stored], "two parts of three");
    assert_eq!(asked.into_inner(), 2, "asked after each part but the last");
    assert!(store.message(&id(3)).await.unwrap().is_none(), "the part after the end is not applied");
    assert_eq!(inbox_state(store, UNIT_A, 1).await.as_deref(), Some("signed-for"), "the 签收 met the document of the part before");
    // One part (cuts out of range are passed over): never asked, committed whole.
    let rest = store.commit_parts(&jobs[4..], &[0, 7], &|| panic!("asked to end a transaction of one part")).await.unwrap();
    assert_eq!(rest, [JobOutcome::Stored]);
    let check = store.audit_verify().await.unwrap();
    assert_eq!((check.entries, check.first_break), (4, None), "documents 1, 2, 3 and the receipt, chained");
}

pub async fn segments_only_move_to_newer_versions(store: &dyn Store) {
    let seg = |version: i64| SegmentRow { owner: "tree".into(), version, header: vec![version as u8], signature: vec![0; 64], payload: vec![] };
    let put = |version| WriteJob::Admin { op: AdminOp::PutSegment(seg(version)), events: vec![] };
    assert_eq!(commit(store, vec![put(2)]).await, [JobOutcome::Affected(1)]);
    assert_eq!(commit(store, vec![put(1)]).await, [JobOutcome::Affected(0)], "an older version changes nothing");
    assert_eq!(commit(store, vec![put(2)]).await, [JobOutcome::Affected(0)]);
    assert_eq!(commit(store, vec![put(3)]).await, [JobOutcome::Affected(1)]);
    let held = store.segments().await.unwrap();
    assert_eq!(held.iter().map(|s| (s.owner.as_str(), s.version)).collect::<Vec<_>>(), [("tree", 3)]);
}

pub async fn tokens_and_webhooks_are_kept(store: &dyn Store) {
    let token = TokenRow { id: "t1".into(), hash: [7; 32], unit: UNIT_A.into(), label: "收文系统".into(), issued_at_ms: 1, revoked_at_ms: None };
    commit(store, vec![WriteJob::Admin { op: AdminOp::IssueToken(token), events: vec![] }]).await;
    assert_eq!(commit(store, vec![WriteJob::Admin { op: AdminOp::RevokeToken { id: "t1".into(), at_ms: 5 }, events: vec![] }]).await, [JobOutcome::Affected(1)]);
    assert_eq!(commit(store, vec![WriteJob::Admin { op: AdminOp::RevokeToken { id: "t1".into(), at_ms: 6 }, events: vec![] }]).await, [JobOutcome::Affected(0)], "revoked once");
    let tokens = store.tokens().await.unwrap();
    assert_eq!((tokens[0].hash, tokens[0].revoked_at_ms, tokens[0].label.as_str()), ([7; 32], Some(5), "收文系统"));

    let set = |url: &str, from_seq, restart| WriteJob::Admin { op: AdminOp::SetWebhook { unit: UNIT_A.into(), url: url.into(), from_seq, restart }, events: vec![] };
    commit(store, vec![set("https://a.example/hook", 4, false)]).await;
    commit(store, vec![WriteJob::Admin { op: AdminOp::AdvanceWebhook { unit: UNIT_A.into(), seq: 9 }, events: vec![] }]).await;
    commit(store, vec![WriteJob::Admin { op: AdminOp::AdvanceWebhook { unit: UNIT_A.into(), seq: 7 }, events: vec![] }]).await;
    commit(store, vec![set("https://b.example/hook", 0, false)]).await;
    let hooks = store.webhooks().await.unwrap();
    assert_eq!((hooks[0].url.as_str(), hooks[0].pushed_seq), ("https://b.example/hook", 9), "never back; a new URL keeps the position");
    commit(store, vec![set("https://b.example/hook", 2, true)]).await;
    assert_eq!(store.webhooks().await.unwrap()[0].pushed_seq, 2, "a restart starts again");
    commit(store, vec![WriteJob::Admin { op: AdminOp::RemoveWebhook { unit: UNIT_A.into() }, events: vec![] }]).await;
    assert!(store.webhooks().await.unwrap().is_empty());
}

/// A canonical document header from [`SENDER`] that describes attachment `sha` (`cite`), or only
/// mentions its hex in the subject (a decoy that cites nothing).
fn header_with_attachment(n: u8, sha: [u8; 32], cite: bool) -> Vec<u8> {
    use exchange_wire::document::Attachment;
    use exchange_wire::{Digest, Envelope, Kind, Priority};
    let mut env = Envelope::new(
        Kind::Document,
        SENDER.parse().expect("an address"),
        vec![UNIT_A.parse().expect("an address")],
        vec![],
        Priority::Routine,
        &[n],
    );
    env.created_at_ms = u64::from(n);
    if cite {
        let a = Attachment { name: "scan.pdf".into(), media_type: "application/pdf".into(), size: 3, sha256: Digest(sha) };
        a.describe(1, &mut env.metadata);
    } else {
        env.metadata.insert("subject".into(), Digest(sha).to_hex());
    }
    env.canonical_bytes()
}

/// Document `n` as [`document`] makes it, with a header citing `sha` (or only naming it).
fn citing(n: u8, sha: [u8; 32], cite: bool, hop: Option<&str>, to: &[&str], at_ms: i64) -> Custody {
    let mut c = document(n, 2, hop, to, at_ms);
    if let Some(m) = c.message.as_mut() {
        m.header = header_with_attachment(n, sha, cite);
    }
    c
}

pub async fn attachments_are_in_use_while_a_message_needs_them(store: &dyn Store) {
    let sha = [0xab; 32];
    let hex = exchange_wire::Digest(sha).to_hex();
    assert!(!store.attachment_in_use(&hex, 0).await.unwrap(), "nothing cites it");
    commit(store, vec![WriteJob::Custody(citing(3, sha, false, None, &[UNIT_A], 10))]).await;
    assert!(!store.attachment_in_use(&hex, 0).await.unwrap(), "its hex in another field is no citation");
    commit(store, vec![WriteJob::Custody(citing(1, sha, true, Some("gz"), &[], 10))]).await;
    assert!(store.attachment_in_use(&hex, 100).await.unwrap(), "waiting in an outbox");
    assert!(!store.attachment_in_use(&"cd".repeat(32), 0).await.unwrap(), "another digest");
    assert!(!store.attachment_in_use("not hex", 0).await.unwrap(), "not a digest at all");
    let seq = store.outbox_batch("gz", 1, usize::MAX).await.unwrap()[0].seq;
    commit(store, vec![WriteJob::Record(Record { outbox_done: vec![seq], ..Record::default() })]).await;
    assert!(!store.attachment_in_use(&hex, 100).await.unwrap(), "forwarded and older than the cut-off");
    assert!(store.attachment_in_use(&hex, 5).await.unwrap(), "received after the cut-off");
    commit(store, vec![WriteJob::Custody(citing(2, sha, true, None, &[UNIT_A], 10))]).await;
    assert!(store.attachment_in_use(&hex, 100).await.unwrap(), "in an inbox");
    commit(store, vec![settle(UNIT_A, 2, "signed-for", 40)]).await;
    commit(store, vec![WriteJob::Admin { op: AdminOp::Retention { before_ms: 100 }, events: vec![] }]).await;
    assert!(!store.attachment_in_use(&hex, 100).await.unwrap(), "signed for and purged from the inbox");
}

pub async fn documents_citing_an_attachment_are_found_for_their_readers(store: &dyn Store) {
    let sha = [0x5a; 32];
    let hex = exchange_wire::Digest(sha).to_hex();
    commit(store, vec![
        WriteJob::Custody(citing(1, sha, true, None, &[UNIT_A], 1)),
        WriteJob::Custody(citing(2, sha, true, Some("gz"), &[], 2)),
        WriteJob::Custody(citing(3, sha, false, None, &[UNIT_A], 3)),
        WriteJob::Custody(citing(4, [0x11; 32], true, None, &[UNIT_A], 4)),
    ])
    .await;
    // A receipt whose header cites it is not a document a unit reads attachments from.
    let mut receipt = citing(5, sha, true, None, &[UNIT_A], 5);
    if let Some(m) = receipt.message.as_mut() {
        m.kind = "receipt".into();
    }
    commit(store, vec![WriteJob::Custody(receipt)]).await;
    let found = |unit: &'static str, limit: u32| {
        let hex = hex.clone();
        async move { store.documents_readable_by(&hex, unit, limit).await.unwrap() }
    };
    let h = |n: u8| header_with_attachment(n, sha, true);
    assert_eq!(found(SENDER, 10).await, vec![h(2), h(1)], "its sender reads both citing documents, newest first");
    assert_eq!(found(SENDER, 1).await, vec![h(2)], "at most `limit`");
    assert_eq!(found(UNIT_A, 10).await, vec![h(1)], "a recipient reads what is in its inbox, not the decoy");
    assert!(found(UNIT_B, 10).await.is_empty(), "another unit reads nothing");
    commit(store, vec![recall(1, 9, UNIT_A, SENDER)]).await;
    assert_eq!(inbox_state(store, UNIT_A, 1).await.as_deref(), Some("recalled"));
    assert!(found(UNIT_A, 10).await.is_empty(), "a recalled document is no longer the recipient's");
    assert!(store.documents_readable_by("not hex", SENDER, 10).await.unwrap().is_empty());
}

#[cfg(test)]
mod sqlite {
    use crate::storage::SqliteStore;

    async fn open() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_standalone(&dir.path().join("node.db")).await.unwrap();
        (store, dir)
    }

    crate::conformance_suite!(open());
}

#[cfg(test)]
mod postgres {
    use crate::storage::PgStore;
    use crate::storage::postgres::scratch::ScratchDatabase;

    /// A fresh database per check, dropped at the end whether the check passed or not.
    async fn open() -> (PgStore, ScratchDatabase) {
        let db = ScratchDatabase::create().await;
        let store = PgStore::open_standalone(&db.url).await.expect("the PostgreSQL store opens on a fresh database");
        (store, db)
    }

    crate::conformance_suite!(open());
}
