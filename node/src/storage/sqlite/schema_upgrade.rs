//! A database written by an earlier version is brought up to the current schema when the node opens
//! it, without losing or renumbering anything (migration 0012: the outbox, the audit log and the
//! per-recipient status keyed by the message's local position).

use std::borrow::Cow;

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use crate::storage::conformance::document;
use crate::storage::jobs::WriteJob;
use crate::storage::{SqliteStore, Store};

/// Creates `path` with the migrations up to `last` only, as a node of that version left it.
async fn at_version(path: &std::path::Path, last: i64) -> SqliteConnection {
    let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path).create_if_missing(true)).await.unwrap();
    let mut migrator = sqlx::migrate!("./migrations/sqlite");
    migrator.migrations = Cow::Owned(migrator.migrations.iter().filter(|m| m.version <= last).cloned().collect());
    migrator.run(&mut conn).await.unwrap();
    conn
}

#[tokio::test]
async fn outbox_audit_and_status_survive_the_move_to_local_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.db");
    let mut old = at_version(&path, 11).await;
    let held = [1u8; 32];
    let never_held = [2u8; 32];
    sqlx::query(
        "INSERT INTO messages (seq, id, header, signature, payload, kind, sender, priority, created_at_ms, received_at_ms, hops) \
         VALUES (41, $1, x'00', x'00', x'0102', 'document', 'gz.yuexiu/liurong-street', 2, 1, 1, '[]')",
    )
    .bind(held.as_slice())
    .execute(&mut old)
    .await
    .unwrap();
    // Outbox positions 1..=7 were used; 7 was acknowledged, so the high-water mark is above what is left.
    for (seq, id) in [(5i64, held), (6, never_held), (7, held)] {
        let hop = if seq == 7 { "gz.tianhe" } else { "gz" };
        sqlx::query("INSERT INTO outbox (seq, message_id, next_hop, recipients, priority, enqueued_at_ms) VALUES ($1, $2, $3, '[]', 2, 1)")
            .bind(seq)
            .bind(id.as_slice())
            .bind(hop)
            .execute(&mut old)
            .await
            .unwrap();
    }
    sqlx::query("DELETE FROM outbox WHERE seq = 7").execute(&mut old).await.unwrap();
    for (at, id) in [(1i64, Some(held)), (2, Some(never_held)), (3, None)] {
        sqlx::query("INSERT INTO audit_log (at_ms, category, message_id, event, hash) VALUES ($1, 'custody', $2, 'taken', zeroblob(32))")
            .bind(at)
            .bind(id.as_ref().map(|i| i.as_slice()))
            .execute(&mut old)
            .await
            .unwrap();
    }
    for id in [held, never_held] {
        sqlx::query("INSERT INTO tracking (message_id, recipient, state_rank, state, node, at_ms) VALUES ($1, 'gz.haizhu/civil-affairs', 3, 'delivered', 'gz.haizhu', 4)")
            .bind(id.as_slice())
            .execute(&mut old)
            .await
            .unwrap();
    }
    old.close().await.unwrap();

    let store = SqliteStore::open_standalone(&path).await.expect("the earlier database opens and is brought up to date");
    let queued = store.outbox_batch("gz", 10, usize::MAX).await.unwrap();
    assert_eq!(queued.iter().map(|o| (o.seq, o.message_id)).collect::<Vec<_>>(), [(5, held)], "kept with its position; the entry without a message is gone");
    assert_eq!(store.events(&held).await.unwrap().iter().map(|e| e.at_ms).collect::<Vec<_>>(), [1]);
    assert_eq!(store.events(&never_held).await.unwrap().iter().map(|e| e.at_ms).collect::<Vec<_>>(), [2]);
    let status = store.tracking(&held).await.unwrap();
    assert_eq!(status.iter().map(|t| (t.recipient.as_str(), t.state.as_str())).collect::<Vec<_>>(), [("gz.haizhu/civil-affairs", "delivered")]);
    assert!(store.tracking(&never_held).await.unwrap().is_empty(), "a status without its message is not carried over");
    // New entries go on above every position ever used, and are found by their new keys.
    store.commit(&[WriteJob::Custody(document(3, 2, Some("gz"), &[], 5))]).await.unwrap();
    let queued = store.outbox_batch("gz", 10, usize::MAX).await.unwrap();
    assert_eq!(queued.len(), 2);
    assert!(queued[1].seq > 7, "position {} reused", queued[1].seq);
    assert_eq!(store.events(&[3; 32]).await.unwrap().len(), 1);
}
