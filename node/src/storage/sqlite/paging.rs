//! Reads that return message bodies in bulk, bounded by bytes *before* any body is loaded: first the
//! keys of the candidate rows with the sizes of their parts (`length()` of a blob reads only the
//! row's header, never its overflow pages), cut by a byte budget (the first row always goes, so one
//! large message still moves), then the bodies of the chosen rows only. Both steps read one snapshot.
//! A backlog of gigabytes for a neighbour that is down, or an inbox of 8 MiB documents, costs a node
//! one budget of memory per read, whatever the row counts asked for.

use std::collections::BTreeSet;

use sqlx::sqlite::SqlitePool;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{INBOX_SELECT, inbox_record, to_id};
use crate::network::protocol::PARCEL_OVERHEAD_BYTES;
use crate::storage::store::InboxHeader;
use crate::storage::store::InboxRecord;
use crate::storage::store::OutboxItem;
use crate::storage::error::StorageError;

/// How many of the first rows fit `budget` bytes, given their sizes in order: at least one (when
/// there is one), so a single row larger than the budget still moves, then as many as fit whole.
pub(crate) fn fitting(sizes: impl IntoIterator<Item = usize>, budget: usize) -> usize {
    let mut total = 0usize;
    let mut n = 0;
    for size in sizes {
        total = total.saturating_add(size);
        if n > 0 && total > budget {
            break;
        }
        n += 1;
    }
    n
}

fn size(r: &sqlx::sqlite::SqliteRow, column: usize) -> usize {
    usize::try_from(r.get::<i64, _>(column)).unwrap_or(0)
}

/// Live outbox entries for `hop`, urgent first, at most `max_messages` and `max_bytes` of encoded
/// parcels (the bound of `network::protocol::parcel_size_bound`, computed here in SQL).
/// Entries in `skip` (batches already on the link) are left out before the cut.
pub(super) async fn outbox_batch(
    pool: &SqlitePool,
    hop: &str,
    max_messages: usize,
    max_bytes: usize,
    skip: &BTreeSet<i64>,
    more_urgent_than: u8,
) -> Result<Vec<OutboxItem>, StorageError> {
    let mut tx = pool.begin().await?;
    let candidates = sqlx::query(
        "SELECT o.seq, o.recipients, o.enqueued_at_ms, o.priority, \
                length(m.header) + length(m.signature) + length(m.payload) + octet_length(o.recipients) + octet_length(m.hops) + $3 \
         FROM outbox o JOIN messages m ON m.seq = o.message_seq \
         WHERE o.next_hop = $1 AND o.dead_reason IS NULL AND o.priority < $5 AND o.seq NOT IN (SELECT value FROM json_each($4)) \
         ORDER BY o.priority, o.seq LIMIT $2",
    )
    .bind(hop)
    .bind(max_messages as i64)
    .bind(PARCEL_OVERHEAD_BYTES as i64)
    // The filter on the outbox runs before the join, so a skipped entry costs an index step only.
    .bind(serde_json::to_string(skip).expect("positions serialise"))
    .bind(i64::from(more_urgent_than))
    .fetch_all(&mut *tx)
    .await?;
    let chosen = &candidates[..fitting(candidates.iter().map(|r| size(r, 4)), max_bytes)];
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = QueryBuilder::<Sqlite>::new(
        "SELECT o.seq, o.message_id, m.header, m.signature, m.payload, m.hops, m.kind, m.sender \
         FROM outbox o JOIN messages m ON m.seq = o.message_seq WHERE o.seq IN (",
    );
    let mut list = q.separated(", ");
    for r in chosen {
        list.push_bind(r.get::<i64, _>(0));
    }
    q.push(")");
    let mut bodies: std::collections::HashMap<i64, sqlx::sqlite::SqliteRow> =
        q.build().fetch_all(&mut *tx).await?.into_iter().map(|r| (r.get::<i64, _>(0), r)).collect();
    tx.commit().await?;
    let mut out = Vec::with_capacity(chosen.len());
    for c in chosen {
        let seq: i64 = c.get(0);
        let Some(b) = bodies.remove(&seq) else { continue };
        out.push(OutboxItem {
            seq,
            message_id: to_id(b.get(1))?,
            priority: u8::try_from(c.get::<i64, _>(3)).unwrap_or(u8::MAX),
            recipients: c.get(1),
            header: b.get(2),
            signature: b.get(3),
            payload: b.get(4),
            hops: b.get(5),
            kind: b.get(6),
            enqueued_at_ms: c.get(2),
            sender: b.get(7),
        });
    }
    Ok(out)
}

/// A unit's inbox after `after`: at most `limit` entries and `max_bytes` of stored messages
/// (header, signature and payload), the first entry whatever its size.
pub(super) async fn inbox(pool: &SqlitePool, unit: &str, after: i64, limit: u32, max_bytes: usize) -> Result<Vec<InboxRecord>, StorageError> {
    let mut tx = pool.begin().await?;
    let sizes = sqlx::query(
        "SELECT i.seq, length(m.header) + length(m.signature) + length(m.payload) \
         FROM inbox i JOIN messages m ON m.id = i.message_id WHERE i.unit = $1 AND i.seq > $2 ORDER BY i.seq LIMIT $3",
    )
    .bind(unit)
    .bind(after)
    .bind(limit as i64)
    .fetch_all(&mut *tx)
    .await?;
    let n = fitting(sizes.iter().map(|r| size(r, 1)), max_bytes);
    let Some(last) = n.checked_sub(1).map(|i| sizes[i].get::<i64, _>(0)) else { return Ok(Vec::new()) };
    // Inbox positions only grow, so the chosen entries are exactly those up to the last one.
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{INBOX_SELECT} WHERE i.unit = $1 AND i.seq > $2 AND i.seq <= $3 ORDER BY i.seq")))
        .bind(unit)
        .bind(after)
        .bind(last)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    rows.into_iter().map(inbox_record).collect()
}

/// A page of a unit's inbox entries still waiting to be settled, after `after`, headers only.
pub(super) async fn inbox_unsettled(pool: &SqlitePool, unit: &str, after: i64, limit: u32) -> Result<Vec<InboxHeader>, StorageError> {
    let rows = sqlx::query(
        "SELECT i.seq, i.message_id, m.header FROM inbox i JOIN messages m ON m.id = i.message_id \
         WHERE i.unit = $1 AND i.state = 'delivered' AND i.seq > $2 ORDER BY i.seq LIMIT $3",
    )
    .bind(unit)
    .bind(after)
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(|r| Ok(InboxHeader { seq: r.get(0), message_id: to_id(r.get(1))?, header: r.get(2) })).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn the_first_row_always_goes_then_whole_rows_within_the_budget() {
        assert_eq!(fitting([], 10), 0);
        assert_eq!(fitting([100], 10), 1, "one row over the budget still moves");
        assert_eq!(fitting([4, 4, 4], 10), 2);
        assert_eq!(fitting([4, 6, 1], 10), 2, "exactly the budget fits");
        assert_eq!(fitting([8 * MIB, 8 * MIB, 10], 16 * MIB), 2);
        assert_eq!(fitting([usize::MAX, 1], 10), 1, "no overflow");
    }

    fn custody(n: u8, payload: usize, priority: u8) -> crate::storage::jobs::Custody {
        use crate::storage::jobs::Custody;
        use crate::storage::model::InboxRow;
        use crate::storage::model::MessageRow;
        use crate::storage::model::OutboxRow;
        Custody {
            message: Some(MessageRow {
                id: [n; 32],
                header: vec![n; 200],
                signature: [0; 64],
                payload: vec![n; payload],
                kind: "document".into(),
                sender: "gz.yuexiu/civil-affairs".into(),
                priority,
                created_at_ms: 1,
                received_at_ms: 1,
                received_from: None,
                hops: r#"[{"node":"gz.yuexiu","at_ms":1760000000000}]"#.into(),
            }),
            outbox: vec![OutboxRow {
                message_id: [n; 32],
                next_hop: "gz".into(),
                recipients: r#"["gz.haizhu/civil-affairs"]"#.into(),
                priority,
                enqueued_at_ms: n as i64,
            }],
            inbox: vec![InboxRow { unit: "gz.yuexiu/civil-affairs".into(), message_id: [n; 32], delivered_at_ms: 1 }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn batches_and_pages_are_cut_by_bytes_before_payloads_are_loaded() {
        use crate::network::protocol::parcel_size_bound;
        use crate::storage::store::Store;
        use crate::storage::jobs::WriteJob;
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::SqliteStore::open_standalone(&dir.path().join("node.db")).await.unwrap();
        // Five routine 3 MiB messages, then an urgent small one behind them.
        let mut jobs: Vec<WriteJob> = (1..=5).map(|n| WriteJob::Custody(custody(n, 3 * MIB, 2))).collect();
        jobs.push(WriteJob::Custody(custody(6, 10, 0)));
        store.commit(&jobs).await.unwrap();

        let bound = |i: &OutboxItem| parcel_size_bound(i.header.len(), i.signature.len(), i.payload.len(), i.recipients.len(), i.hops.len());
        let batch = store.outbox_batch("gz", 512, 8 * MIB).await.unwrap();
        let seqs: Vec<u8> = batch.iter().map(|i| i.message_id[0]).collect();
        assert_eq!(seqs, vec![6, 1, 2], "urgent first, then what fits 8 MiB whole");
        assert!(batch.iter().map(bound).sum::<usize>() <= 8 * MIB);
        let one = store.outbox_batch("gz", 512, 1).await.unwrap();
        assert_eq!(one.len(), 1, "the first entry goes whatever its size");
        assert_eq!(store.outbox_batch("gz", 2, usize::MAX).await.unwrap().len(), 2, "and the count still bounds");
        // SQL and Rust agree on the size: a budget of exactly the first three parcels takes three.
        let exact: usize = batch.iter().map(bound).sum();
        assert_eq!(store.outbox_batch("gz", 512, exact).await.unwrap().len(), 3);
        assert_eq!(store.outbox_batch("gz", 512, exact - 1).await.unwrap().len(), 2);
        let full = batch.iter().find(|i| i.message_id[0] == 1).unwrap();
        assert_eq!((full.payload.len(), full.kind.as_str(), full.hops.len()), (3 * MIB, "document", 44), "bodies are loaded whole");

        let page = store.inbox("gz.yuexiu/civil-affairs", 0, 1000, 7 * MIB).await.unwrap();
        assert_eq!(page.iter().map(|r| r.message_id[0]).collect::<Vec<_>>(), vec![1, 2]);
        let next = store.inbox("gz.yuexiu/civil-affairs", page[1].seq, 1000, 7 * MIB).await.unwrap();
        assert_eq!(next.iter().map(|r| r.message_id[0]).collect::<Vec<_>>(), vec![3, 4], "paging on from the last seq");
        let tiny = store.inbox("gz.yuexiu/civil-affairs", next[1].seq, 1000, 1).await.unwrap();
        assert_eq!(tiny.len(), 1);
        let rest = store.inbox("gz.yuexiu/civil-affairs", tiny[0].seq, 1000, 7 * MIB).await.unwrap();
        assert_eq!(rest.iter().map(|r| r.message_id[0]).collect::<Vec<_>>(), vec![6]);
        let headers = store.inbox_unsettled("gz.yuexiu/civil-affairs", 0, 4).await.unwrap();
        assert_eq!(headers.len(), 4);
        assert_eq!(store.inbox_unsettled("gz.yuexiu/civil-affairs", headers[3].seq, 4).await.unwrap().len(), 2);
    }
}
