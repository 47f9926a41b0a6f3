//! PostgreSQL implementation of [`Store`], chosen with `storage.url = "postgres://…"`: for sites that
//! run their important systems on PostgreSQL (replication, base backups, failover they already
//! operate). The tables are those of the SQLite store (`migrations/postgres`); the rules are the same
//! Rust functions (`settlement`, `retention`), called inside the transaction.
//!
//! **Ordering.** Every write transaction takes one transaction-scoped advisory lock
//! ([`WRITE_LOCK`]) before it reads or writes anything, and holds it until it commits or rolls back.
//! Within one node the group committer is the only writer already; the lock makes the same true for
//! every process writing this database (a second replica, a tool), so:
//! - duplicates are decided against everything committed before (the id check, then
//!   `INSERT … ON CONFLICT DO NOTHING` as the enforcement);
//! - sequence positions (inbox, outbox, messages) are taken and become visible in the same order:
//!   a transaction that took a lower position has committed before the next one takes any, so a
//!   reader paging "after position N" never misses a row that commits later below N. Gaps left by
//!   rolled-back transactions are harmless to such cursors;
//! - the audit chain is numbered here, head + 1, read inside the lock: no gaps, no fork.
//!
//! **Acknowledgement.** [`Store::commit`] returns `Ok` only after PostgreSQL confirmed the `COMMIT`;
//! any error (including a connection lost during `COMMIT`, whose outcome is unknown) is returned
//! as an error and nothing is acknowledged: the sender retries, and the retry is recognised by id.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::error::StorageError;

mod admin;
mod commit;
pub mod lease;
mod reads;
mod recovery;
pub mod scratch;
mod sharing;
pub mod url;

use super::health::StorageHealth;

/// Rows per multi-row statement (PostgreSQL allows 65,535 bound values per statement).
const ROWS_PER_STATEMENT: usize = 400;

/// The advisory lock every write transaction holds (an arbitrary constant: "GOVX" in ASCII).
pub const WRITE_LOCK: i64 = 0x474F_5658;

/// The PostgreSQL store: one pool, shared by the committer and the reads.
pub struct PgStore {
    pool: PgPool,
    health: Arc<StorageHealth>,
    /// The lease of an active replica (see `lease`); `None` for tools and tests that write without one.
    lease: Option<lease::Lease>,
}

impl PgStore {
    /// Connects to `url` and runs the PostgreSQL migrations.
    /// Without a lease: for tools and tests (a running node uses [`PgStore::open_active`]).
    pub async fn open(url: &str, health: Arc<StorageHealth>) -> Result<PgStore, StorageError> {
        let pool = PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(30)).connect(url).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool, health, lease: None })
    }

    /// Waits until this replica holds the database's lease (returning at once when no other replica
    /// does), then opens the store; every write is fenced by the lease from then on (see `lease`).
    pub async fn open_active(url: &str, health: Arc<StorageHealth>) -> Result<PgStore, StorageError> {
        let lease = lease::Lease::acquire(url, health.clone()).await?;
        PgStore::open_leased(url, health, lease).await
    }

    /// Opens the store for the replica holding `lease` (see [`crate::replica`]).
    pub async fn open_leased(url: &str, health: Arc<StorageHealth>, lease: lease::Lease) -> Result<PgStore, StorageError> {
        let mut store = PgStore::open(url, health).await?;
        store.lease = Some(lease);
        Ok(store)
    }

    /// Opens a database outside a running node (tools, tests): metrics registered nowhere.
    pub async fn open_standalone(url: &str) -> Result<PgStore, StorageError> {
        let health = Arc::new(StorageHealth::new(&std::env::temp_dir(), 0, super::health::HealthMetrics::unregistered()));
        PgStore::open(url, health).await
    }

    /// The connection pool (tests and tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs a storage operation, reporting its failure to the health state.
    fn watched<'a, T: Send + 'a>(
        &'a self,
        op: impl std::future::Future<Output = Result<T, StorageError>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, StorageError>> {
        Box::pin(async move {
            let result = op.await;
            if let Err(e) = &result {
                self.health.failed(e);
            }
            result
        })
    }
}

fn to_id(v: Vec<u8>) -> Result<[u8; 32], StorageError> {
    <[u8; 32]>::try_from(v.as_slice()).map_err(|_| StorageError::Corrupt("a message id is not 32 bytes".into()))
}

#[cfg(test)]
mod tests {
    use super::scratch::ScratchDatabase;
    use super::*;
    use crate::storage::*;
    use crate::storage::conformance::{UNIT_A, document};

    /// Two stores on one database (two replicas, or a replica and a tool) writing at the same time:
    /// the write lock keeps the audit chain one unbroken, gapless chain, and inbox positions in the
    /// order the entries became visible, so a reader paging after any position misses nothing.
    #[tokio::test]
    async fn concurrent_writers_keep_one_chain_and_ordered_positions() {
        let db = ScratchDatabase::create().await;
        let a = PgStore::open_standalone(&db.url).await.unwrap();
        let b = PgStore::open_standalone(&db.url).await.unwrap();
        async fn write(store: &PgStore, base: u8) {
            for n in 0..40u8 {
                let mut doc = document(base + n, 2, None, &[UNIT_A], 1);
                let id = {
                    let m = doc.message.as_mut().unwrap();
                    m.id[1] = base;
                    m.id
                };
                for i in &mut doc.inbox {
                    i.message_id = id;
                }
                store.commit(&[WriteJob::Custody(doc)]).await.unwrap();
            }
        }
        // A reader follows the inbox while both write: what it has seen is never overtaken below.
        let reader = async {
            let mut after = 0;
            let mut seen = 0;
            for _ in 0..400 {
                let page = a.inbox(UNIT_A, after, 1000, usize::MAX).await.unwrap();
                if let Some(last) = page.last() {
                    after = last.seq;
                }
                seen += page.len();
                if seen == 80 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            seen
        };
        let ((), (), _) = tokio::join!(write(&a, 0), write(&b, 100), reader);
        let all = a.inbox(UNIT_A, 0, 1000, usize::MAX).await.unwrap();
        assert_eq!(all.len(), 80, "every entry of both writers");
        let check = b.audit_verify().await.unwrap();
        assert_eq!(check.entries, 80);
        assert_eq!(check.first_break, None, "one chain, no gaps, no fork");
        let mut after = 0;
        let mut paged = 0;
        loop {
            let page = a.inbox(UNIT_A, after, 7, usize::MAX).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            paged += page.len();
        }
        assert_eq!(paged, 80);
    }

    /// A failed transaction is not acknowledged, and its sequence values leave gaps that neither
    /// paging nor the audit chain notice.
    #[tokio::test]
    async fn a_rolled_back_transaction_leaves_harmless_gaps() {
        let db = ScratchDatabase::create().await;
        let store = PgStore::open_standalone(&db.url).await.unwrap();
        store.commit(&[WriteJob::Custody(document(1, 2, None, &[UNIT_A], 1))]).await.unwrap();
        // A topic record numbered twice fails the whole transaction, after the inbox row took its seq.
        let log = |record: u8| crate::storage::sharing::TopicLogRow {
            topic: "person.death".into(),
            seq: 1,
            record_id: [record; 32],
            subject: "s".into(),
            publisher: "gz.yuexiu/civil-affairs".into(),
            published_at_ms: 1,
            header: vec![],
            signature: vec![],
            payload: vec![],
        };
        let publish = |record: u8| WriteJob::Sharing(crate::storage::sharing::SharingJob::Publish { log: log(record), delivery: None, events: vec![] });
        store.commit(&[publish(50)]).await.unwrap();
        let failed = store.commit(&[WriteJob::Custody(document(2, 2, None, &[UNIT_A], 1)), publish(51)]).await;
        assert!(failed.is_err(), "the duplicate topic position fails the transaction");
        assert!(store.message(&[2; 32]).await.unwrap().is_none(), "nothing of it was committed");
        // A transaction that took an inbox position and rolled back (as one failing later would).
        let mut tx = store.pool().begin().await.unwrap();
        sqlx::query("INSERT INTO inbox (unit, message_id, delivered_at_ms, state) VALUES ($1, $2, 1, 'delivered')")
            .bind(UNIT_A)
            .bind([9u8; 32].as_slice())
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        store.commit(&[WriteJob::Custody(document(3, 2, None, &[UNIT_A], 1))]).await.unwrap();
        let page = store.inbox(UNIT_A, 0, 10, usize::MAX).await.unwrap();
        let ids: Vec<u8> = page.iter().map(|r| r.message_id[0]).collect();
        assert_eq!(ids, vec![1, 3]);
        assert!(page[1].seq > page[0].seq + 1, "the rolled-back position is a gap");
        assert_eq!(store.inbox(UNIT_A, page[0].seq, 10, usize::MAX).await.unwrap().len(), 1);
        let check = store.audit_verify().await.unwrap();
        assert_eq!((check.entries, check.first_break), (2, None), "the audit chain has no gap");
    }
}

#[cfg(test)]
mod lease_tests {
    use super::scratch::ScratchDatabase;
    use super::*;
    use crate::storage::*;
    use crate::storage::conformance::{UNIT_A, document};
    use sqlx::Connection;

    /// Two replicas over one database: the second waits while the first holds the lease, takes over
    /// when the first's lease session ends (a death, or a pause the server timed out), and the first,
    /// still running, can no longer write: its commit fails and nothing of it is stored.
    #[tokio::test]
    async fn one_active_replica_and_the_old_one_is_fenced() {
        let db = ScratchDatabase::create().await;
        let first = PgStore::open_active(&db.url, Arc::new(StorageHealth::new(&std::env::temp_dir(), 0, super::super::health::HealthMetrics::unregistered())))
            .await
            .unwrap();
        first.commit(&[WriteJob::Custody(document(1, 2, None, &[UNIT_A], 1))]).await.unwrap();
        let standby_health = Arc::new(StorageHealth::new(&std::env::temp_dir(), 0, super::super::health::HealthMetrics::unregistered()));
        let url = db.url.clone();
        let mut standby = tokio::spawn(async move { PgStore::open_active(&url, standby_health).await });
        assert!(
            tokio::time::timeout(lease::RETRY * 4, &mut standby).await.is_err(),
            "the standby waits while the first replica holds the lease"
        );
        // The first replica's lease session ends (as when the server times out a paused process).
        let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let pid = first.lease.as_ref().unwrap().pid;
        let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(&mut admin).await.unwrap();
        assert!(ended);
        let second = tokio::time::timeout(Duration::from_secs(10), standby).await.expect("the standby takes over within seconds").unwrap().unwrap();
        let fenced = first.commit(&[WriteJob::Custody(document(2, 2, None, &[UNIT_A], 1))]).await;
        assert!(matches!(fenced, Err(StorageError::Fenced)), "the old replica is fenced: {fenced:?}");
        assert!(first.health.damaged().is_some(), "and stops taking work");
        second.commit(&[WriteJob::Custody(document(3, 2, None, &[UNIT_A], 1))]).await.unwrap();
        let held: Vec<u8> = second.inbox(UNIT_A, 0, 10, usize::MAX).await.unwrap().iter().map(|r| r.message_id[0]).collect();
        assert_eq!(held, vec![1, 3], "nothing the fenced replica tried was written");
        assert_eq!(second.audit_verify().await.unwrap().first_break, None);
    }
}
