//! The lease that makes one replica of a node the active one when several run over one PostgreSQL
//! database (an active city node and its standby).
//!
//! The lease is a session-level advisory lock ([`LEASE_LOCK`]) held by one dedicated connection. A
//! replica that does not get it waits (a standby: it opens nothing else, so it neither listens nor
//! writes) and tries again every [`RETRY`]; PostgreSQL releases the lock the moment the holder's
//! session ends, so the standby takes over within a retry when the active process dies.
//!
//! A process that is paused (or cut off) keeps its session open, so the lease session is given an
//! `idle_session_timeout` of [`IDLE_TIMEOUT`] and pinged every [`PING`]: a pause longer than the
//! timeout ends the session on the server side, and the lock with it.
//!
//! **Fencing.** Holding the lease once is not enough: a replica that was paused may wake after the
//! standby took over. Every write transaction therefore checks, after taking the write lock, that
//! the lease is still held by *this* replica's lease session (its backend pid in `pg_locks`); if not,
//! the transaction writes nothing and fails, and the store marks itself not ready. A transaction that
//! passed the check holds the write lock until it commits, so the new active replica's first write
//! comes after it: the writes of the two replicas never interleave.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Postgres, Transaction};

use crate::storage::error::StorageError;
use crate::storage::health::StorageHealth;

/// The advisory lock of the lease ("GOVY" in ASCII; the write lock is "GOVX").
pub const LEASE_LOCK: i64 = 0x474F_5659;
/// How often a standby asks for the lease.
pub const RETRY: Duration = Duration::from_millis(500);
/// How often the active replica pings its lease session.
pub const PING: Duration = Duration::from_secs(1);
/// A lease session idle this long (a paused process) is ended by the server, releasing the lease.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The lease, held: the backend pid of the session holding it.
pub struct Lease {
    pub(crate) pid: i32,
    /// Cancelled when the lease session is lost (the replica is fenced from then on).
    pub lost: tokio_util::sync::CancellationToken,
}

impl Lease {
    /// Waits until this replica holds the lease, then keeps its session alive in the background.
    /// When the session is lost, `health` is marked damaged: the replica stops taking work (its
    /// writes are fenced anyway) and should be restarted, as a standby.
    pub async fn acquire(url: &str, health: Arc<StorageHealth>) -> Result<Lease, StorageError> {
        Lease::acquire_or_wait(url, health, || {}).await
    }

    /// [`Lease::acquire`], calling `waiting` once when another replica holds the lease (the node
    /// then serves its health checks and metrics as a standby while it waits).
    pub async fn acquire_or_wait(url: &str, health: Arc<StorageHealth>, waiting: impl FnOnce()) -> Result<Lease, StorageError> {
        let mut waiting = Some(waiting);
        let mut conn = PgConnection::connect(url).await?;
        let timeout = format!("SET idle_session_timeout = {}", IDLE_TIMEOUT.as_millis());
        sqlx::query(sqlx::AssertSqlSafe(timeout)).execute(&mut conn).await?;
        let mut waited = false;
        loop {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LEASE_LOCK).fetch_one(&mut conn).await?;
            if got {
                break;
            }
            if !waited {
                tracing::info!("standby: another replica holds the lease on this database; waiting to take over");
                waited = true;
                if let Some(w) = waiting.take() {
                    w();
                }
            }
            // Keep our own session from idling out while we wait.
            tokio::time::sleep(RETRY).await;
        }
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut conn).await?;
        tracing::info!(pid, "active: this replica holds the lease");
        let lost = tokio_util::sync::CancellationToken::new();
        let lost_tx = lost.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PING);
            loop {
                tick.tick().await;
                if let Err(e) = sqlx::query("SELECT 1").execute(&mut conn).await {
                    tracing::error!(error = %e, "lost the lease session: another replica may be active; refusing work, restart this one as a standby");
                    health.mark_damaged("this replica lost its lease on the database (another replica may be active); restart it");
                    lost_tx.cancel();
                    return;
                }
            }
        });
        Ok(Lease { pid, lost })
    }

    /// Fails with [`StorageError::Fenced`] unless this replica's lease session still holds the lease.
    pub async fn check(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), StorageError> {
        let held: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = $1 \
             AND ((classid::bigint << 32) | objid::bigint) = $2 AND objsubid = 1)",
        )
        .bind(self.pid)
        .bind(LEASE_LOCK)
        .fetch_one(&mut **tx)
        .await?;
        if held { Ok(()) } else { Err(StorageError::Fenced) }
    }
}
