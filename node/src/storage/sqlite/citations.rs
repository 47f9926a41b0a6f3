//! Which attachments each stored message cites (`cited_attachments`), so that "is this attachment
//! still needed" is answered from an index, never by reading every header.

use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::{ROWS_PER_STATEMENT, SqliteStore, to_id};
use crate::storage::citations;
use crate::storage::error::StorageError;

/// Records which attachments messages cite (`(sha256, message id)` pairs); a pair held already is
/// kept as it is.
pub(super) async fn insert_citations(tx: &mut Transaction<'_, Sqlite>, cited: &[([u8; 32], [u8; 32])]) -> Result<(), sqlx::Error> {
    for chunk in cited.chunks(ROWS_PER_STATEMENT / 2) {
        let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO cited_attachments (sha256, message_id) ");
        q.push_values(chunk, |mut b, (sha, id)| {
            b.push_bind(sha.as_slice()).push_bind(id.as_slice());
        });
        q.push(" ON CONFLICT (sha256, message_id) DO NOTHING");
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

impl SqliteStore {
    /// Records the citations of messages stored before `cited_attachments` existed (migration
    /// 0011), a page per transaction so a large database does not hold one huge transaction;
    /// resumes where an interrupted run stopped. Runs at open, before the node writes anything else.
    pub(super) async fn backfill_citations(&self) -> Result<(), StorageError> {
        let writer = &self.writer;
        const PAGE: i64 = 500;
        loop {
            let mut tx = writer.begin().await?;
            let done: i64 = sqlx::query_scalar("SELECT value FROM node_state WHERE key = 'citations_backfill'").fetch_one(&mut *tx).await?;
            if done < 0 {
                return Ok(());
            }
            let page = sqlx::query("SELECT seq, id, header FROM messages WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(done)
                .bind(PAGE)
                .fetch_all(&mut *tx)
                .await?;
            let mut cited = Vec::new();
            let mut last = -1;
            for r in &page {
                last = r.get(0);
                let id = to_id(r.get(1))?;
                let header: Vec<u8> = r.get(2);
                cited.extend(citations::cited(&header).into_iter().map(|sha| (sha, id)));
            }
            insert_citations(&mut tx, &cited).await?;
            sqlx::query("UPDATE node_state SET value = $1 WHERE key = 'citations_backfill'").bind(last).execute(&mut *tx).await?;
            tx.commit().await?;
            if page.is_empty() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod citation_backfill {
    use super::*;
    use crate::storage::*;

    /// A database written before `cited_attachments` existed: its messages are recorded when the node
    /// opens it, so attachments they cite are still found (not dropped as unused).
    #[tokio::test]
    async fn messages_stored_before_the_table_are_recorded_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        let sha = [0x42; 32];
        let hex = exchange_wire::Digest(sha).to_hex();
        {
            let store = SqliteStore::open_standalone(&path).await.unwrap();
            let mut doc = crate::storage::conformance::document(1, 2, None, &[crate::storage::conformance::UNIT_A], 10);
            let mut env = exchange_wire::Envelope::new(
                exchange_wire::Kind::Document,
                "gz.yuexiu/liurong-street".parse().unwrap(),
                vec![crate::storage::conformance::UNIT_A.parse().unwrap()],
                vec![],
                exchange_wire::Priority::Routine,
                b"x",
            );
            let a = exchange_wire::document::Attachment { name: "a.pdf".into(), media_type: "application/pdf".into(), size: 1, sha256: exchange_wire::Digest(sha) };
            a.describe(1, &mut env.metadata);
            doc.message.as_mut().unwrap().header = env.canonical_bytes();
            store.commit(&[WriteJob::Custody(doc)]).await.unwrap();
            assert!(store.attachment_in_use(&hex, 100).await.unwrap());
            // As the database was before migration 0011: no citations, the back-fill not begun.
            sqlx::query("DELETE FROM cited_attachments").execute(&store.writer).await.unwrap();
            sqlx::query("UPDATE node_state SET value = 0 WHERE key = 'citations_backfill'").execute(&store.writer).await.unwrap();
            assert!(!store.attachment_in_use(&hex, 100).await.unwrap(), "nothing recorded");
        }
        let store = SqliteStore::open_standalone(&path).await.unwrap();
        assert!(store.attachment_in_use(&hex, 100).await.unwrap(), "recorded at open");
        assert_eq!(store.documents_readable_by(&hex, crate::storage::conformance::UNIT_A, 10).await.unwrap().len(), 1);
        let done: i64 = sqlx::query_scalar("SELECT value FROM node_state WHERE key = 'citations_backfill'").fetch_one(&store.writer).await.unwrap();
        assert_eq!(done, -1, "done, and not repeated at the next open");
    }
}
