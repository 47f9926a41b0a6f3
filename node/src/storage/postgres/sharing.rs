//! PostgreSQL side of base-data sharing: the same rows and reads as the SQLite store's
//! (`storage/sqlite/sharing.rs`), with PostgreSQL's `GREATEST` for SQLite's scalar `MAX`.

use futures::future::BoxFuture;
use sqlx::{Postgres, Row, Transaction};

use super::PgStore;
use crate::storage::sharing::{DataInboxRow, SharingJob, SharingRow, SharingStore, SubscriptionRow, TopicLogRow};
use crate::storage::jobs::JobOutcome;
use crate::storage::error::StorageError;

/// Applies sharing rows that came with new custody jobs, after the custody rows.
pub(super) async fn apply_rows(tx: &mut Transaction<'_, Postgres>, rows: &[&SharingRow]) -> Result<(), sqlx::Error> {
    for r in rows {
        match r {
            SharingRow::Requested(s) => insert_request(tx, s).await?,
            SharingRow::LocalRequested(s) => insert_local_request(tx, s).await?,
            SharingRow::Decided { unit, topic, request_id, state, first_seq, reason, decided_by, at_ms } => {
                // The cursor starts just before the first record, so nothing before it is awaited.
                sqlx::query(
                    "UPDATE data_subscriptions SET state = $3, first_seq = COALESCE(first_seq, $4), \
                     cursor = GREATEST(cursor, COALESCE($4, 1) - 1), reason = $5, decided_by = $6, decided_at_ms = $7 \
                     WHERE unit = $1 AND topic = $2 AND request_id = $8",
                )
                .bind(unit)
                .bind(topic)
                .bind(state)
                .bind(first_seq)
                .bind(reason)
                .bind(decided_by)
                .bind(at_ms)
                .bind(request_id.as_slice())
                .execute(&mut **tx)
                .await?;
            }
            SharingRow::Delivered(d) => insert_delivery(tx, d).await?,
        }
    }
    Ok(())
}

/// Owner side: a subscription request, pending.
async fn insert_request(tx: &mut Transaction<'_, Postgres>, s: &SubscriptionRow) -> Result<(), sqlx::Error> {
    // A second request while one is pending or granted changes nothing; one after a
    // refusal asks again.
    sqlx::query(
        "INSERT INTO sharing_subscriptions (topic, subscriber, owner, state, start, request_id, requested_at_ms) \
         VALUES ($1, $2, $3, 'pending', $4, $5, $6) \
         ON CONFLICT (topic, subscriber) DO UPDATE SET state = 'pending', start = excluded.start, owner = excluded.owner, \
         request_id = excluded.request_id, requested_at_ms = excluded.requested_at_ms, first_seq = NULL, \
         decided_at_ms = NULL, decided_by = NULL, reason = NULL \
         WHERE sharing_subscriptions.state = 'refused'",
    )
    .bind(&s.topic)
    .bind(&s.subscriber)
    .bind(&s.owner)
    .bind(&s.start)
    .bind(s.request_id.as_slice())
    .bind(s.requested_at_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Subscriber side: the unit's own request.
async fn insert_local_request(tx: &mut Transaction<'_, Postgres>, s: &SubscriptionRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO data_subscriptions (unit, topic, owner, state, start, cursor, request_id, requested_at_ms) \
         VALUES ($1, $2, $3, 'requested', $4, 0, $5, $6) \
         ON CONFLICT (unit, topic) DO UPDATE SET state = 'requested', start = excluded.start, owner = excluded.owner, \
         request_id = excluded.request_id, requested_at_ms = excluded.requested_at_ms, first_seq = NULL, cursor = 0, \
         decided_at_ms = NULL, decided_by = NULL, reason = NULL \
         WHERE data_subscriptions.state = 'refused'",
    )
    .bind(&s.subscriber)
    .bind(&s.topic)
    .bind(&s.owner)
    .bind(&s.start)
    .bind(s.request_id.as_slice())
    .bind(s.requested_at_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Subscriber side: a record into the unit's data inbox.
async fn insert_delivery(tx: &mut Transaction<'_, Postgres>, d: &DataInboxRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO data_inbox (unit, topic, seq, delivery_id, record_id, subject, published_at_ms, delivered_at_ms, header, signature, payload) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (unit, topic, seq) DO NOTHING",
    )
    .bind(&d.unit)
    .bind(&d.topic)
    .bind(d.seq)
    .bind(d.delivery_id.as_slice())
    .bind(d.record_id.as_slice())
    .bind(&d.subject)
    .bind(d.published_at_ms)
    .bind(d.delivered_at_ms)
    .bind(d.header.as_slice())
    .bind(d.signature.as_slice())
    .bind(d.payload.as_slice())
    .execute(&mut **tx)
    .await?;
    // A delivery proves the grant, whichever of the two arrived first.
    sqlx::query(
        "UPDATE data_subscriptions SET first_seq = COALESCE(first_seq, $3), cursor = GREATEST(cursor, $3 - 1), \
         state = CASE WHEN state IN ('requested', 'pending') THEN 'granted' ELSE state END \
         WHERE unit = $1 AND topic = $2 AND first_seq IS NULL",
    )
    .bind(&d.unit)
    .bind(&d.topic)
    .bind(d.first_seq)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Applies a sharing job; the custody messages it carries are added by the caller when it stored.
pub(super) async fn apply_job(tx: &mut Transaction<'_, Postgres>, job: &SharingJob) -> Result<JobOutcome, sqlx::Error> {
    match job {
        SharingJob::Publish { log, .. } => {
            let held: Option<i64> = sqlx::query_scalar("SELECT seq FROM topic_log WHERE record_id = $1")
                .bind(log.record_id.as_slice())
                .fetch_optional(&mut **tx)
                .await?;
            if held.is_some() {
                return Ok(JobOutcome::Duplicate);
            }
            sqlx::query(
                "INSERT INTO topic_log (topic, seq, record_id, subject, publisher, published_at_ms, header, signature, payload) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&log.topic)
            .bind(log.seq)
            .bind(log.record_id.as_slice())
            .bind(&log.subject)
            .bind(&log.publisher)
            .bind(log.published_at_ms)
            .bind(log.header.as_slice())
            .bind(log.signature.as_slice())
            .bind(log.payload.as_slice())
            .execute(&mut **tx)
            .await?;
            Ok(JobOutcome::Stored)
        }
        SharingJob::Decide { topic, subscriber, state, first_seq, decided_by, reason, at_ms, backfill, .. } => {
            let done = sqlx::query(
                "UPDATE sharing_subscriptions SET state = $3, first_seq = $4, decided_by = $5, reason = $6, decided_at_ms = $7, \
                 backfill_next = $8, backfill_end = $9 WHERE topic = $1 AND subscriber = $2 AND state = 'pending'",
            )
            .bind(topic)
            .bind(subscriber)
            .bind(state)
            .bind(first_seq)
            .bind(decided_by)
            .bind(reason)
            .bind(at_ms)
            .bind(backfill.map(|b| b.0))
            .bind(backfill.map(|b| b.1))
            .execute(&mut **tx)
            .await?;
            Ok(if done.rows_affected() == 1 {
                JobOutcome::Stored
            } else {
                JobOutcome::Conflict(format!("the subscription of {subscriber} to {topic} is not pending; it was decided already"))
            })
        }
        SharingJob::Backfill { topic, subscriber, left, .. } => {
            let done = sqlx::query(
                "UPDATE sharing_subscriptions SET backfill_next = $3, backfill_end = $4 \
                 WHERE topic = $1 AND subscriber = $2 AND state = 'granted' AND backfill_next IS NOT NULL",
            )
            .bind(topic)
            .bind(subscriber)
            .bind(left.map(|b| b.0))
            .bind(left.map(|b| b.1))
            .execute(&mut **tx)
            .await?;
            Ok(if done.rows_affected() == 1 {
                JobOutcome::Stored
            } else {
                JobOutcome::Conflict(format!("no backfill of {topic} for {subscriber} is under way"))
            })
        }
        SharingJob::Ack { unit, topic, seq, .. } => {
            let done = sqlx::query("UPDATE data_subscriptions SET cursor = GREATEST(cursor, $3) WHERE unit = $1 AND topic = $2")
                .bind(unit)
                .bind(topic)
                .bind(seq)
                .execute(&mut **tx)
                .await?;
            Ok(JobOutcome::Affected(done.rows_affected()))
        }
    }
}

fn id32(v: Vec<u8>) -> Result<[u8; 32], StorageError> {
    <[u8; 32]>::try_from(v.as_slice()).map_err(|_| StorageError::Corrupt("an id is not 32 bytes".into()))
}

fn subscription(r: sqlx::postgres::PgRow) -> Result<SubscriptionRow, StorageError> {
    Ok(SubscriptionRow {
        topic: r.get("topic"),
        subscriber: r.get("subscriber"),
        owner: r.get("owner"),
        state: r.get("state"),
        start: r.get("start"),
        first_seq: r.get("first_seq"),
        cursor: r.get("cursor"),
        request_id: id32(r.get("request_id"))?,
        requested_at_ms: r.get("requested_at_ms"),
        decided_at_ms: r.get("decided_at_ms"),
        decided_by: r.get("decided_by"),
        reason: r.get("reason"),
        backfill: match (r.get::<Option<i64>, _>("backfill_next"), r.get::<Option<i64>, _>("backfill_end")) {
            (Some(n), Some(e)) => Some((n, e)),
            _ => None,
        },
    })
}

const OWNER_SELECT: &str = "SELECT topic, subscriber, owner, state, start, first_seq, 0::BIGINT AS cursor, request_id, requested_at_ms, \
     decided_at_ms, decided_by, reason, backfill_next, backfill_end FROM sharing_subscriptions ";

impl SharingStore for PgStore {
    fn topic_head<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<i64, StorageError>> {
        self.watched(async move {
            Ok(sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM topic_log WHERE topic = $1").bind(topic).fetch_one(&self.pool).await?)
        })
    }

    fn topic_record<'a>(&'a self, record_id: &'a [u8; 32]) -> BoxFuture<'a, Result<Option<(String, i64)>, StorageError>> {
        self.watched(async move {
            let row = sqlx::query("SELECT topic, seq FROM topic_log WHERE record_id = $1").bind(record_id.as_slice()).fetch_optional(&self.pool).await?;
            Ok(row.map(|r| (r.get(0), r.get(1))))
        })
    }

    fn topic_log<'a>(&'a self, topic: &'a str, from: i64, to: i64, max_bytes: usize) -> BoxFuture<'a, Result<Vec<TopicLogRow>, StorageError>> {
        self.watched(async move {
            // The log only grows: the records chosen by size are exactly those up to the last one.
            let sizes = sqlx::query(
                "SELECT seq, (octet_length(header) + octet_length(signature) + octet_length(payload))::BIGINT FROM topic_log \
                 WHERE topic = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq",
            )
            .bind(topic)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?;
            let n = crate::storage::sqlite::paging::fitting(sizes.iter().map(|r| r.get::<i64, _>(1).max(0) as usize), max_bytes);
            let Some(to) = n.checked_sub(1).map(|i| sizes[i].get::<i64, _>(0)) else { return Ok(Vec::new()) };
            let rows = sqlx::query(
                "SELECT topic, seq, record_id, subject, publisher, published_at_ms, header, signature, payload FROM topic_log \
                 WHERE topic = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq",
            )
            .bind(topic)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter()
                .map(|r| {
                    Ok(TopicLogRow {
                        topic: r.get(0),
                        seq: r.get(1),
                        record_id: id32(r.get(2))?,
                        subject: r.get(3),
                        publisher: r.get(4),
                        published_at_ms: r.get(5),
                        header: r.get(6),
                        signature: r.get(7),
                        payload: r.get(8),
                    })
                })
                .collect()
        })
    }

    fn topic_seq_at<'a>(&'a self, topic: &'a str, at_ms: i64) -> BoxFuture<'a, Result<Option<i64>, StorageError>> {
        self.watched(async move {
            Ok(sqlx::query_scalar("SELECT MIN(seq) FROM topic_log WHERE topic = $1 AND published_at_ms >= $2")
                .bind(topic)
                .bind(at_ms)
                .fetch_one(&self.pool)
                .await?)
        })
    }

    fn owner_subscriptions<'a>(&'a self, owner: Option<&'a str>) -> BoxFuture<'a, Result<Vec<SubscriptionRow>, StorageError>> {
        self.watched(async move {
            let rows = match owner {
                Some(o) => {
                    sqlx::query(sqlx::AssertSqlSafe(format!("{OWNER_SELECT} WHERE owner = $1 ORDER BY topic, subscriber")))
                        .bind(o)
                        .fetch_all(&self.pool)
                        .await?
                }
                None => sqlx::query(sqlx::AssertSqlSafe(format!("{OWNER_SELECT} ORDER BY topic, subscriber"))).fetch_all(&self.pool).await?,
            };
            rows.into_iter().map(subscription).collect()
        })
    }

    fn granted_subscriptions<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<Vec<SubscriptionRow>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{OWNER_SELECT} WHERE topic = $1 AND state = 'granted' ORDER BY subscriber")))
                .bind(topic)
                .fetch_all(&self.pool)
                .await?;
            rows.into_iter().map(subscription).collect()
        })
    }

    fn local_subscriptions<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<Vec<SubscriptionRow>, StorageError>> {
        self.watched(async move {
            let rows = sqlx::query(
                "SELECT topic, unit AS subscriber, owner, state, start, first_seq, cursor, request_id, requested_at_ms, decided_at_ms, \
                 decided_by, reason, NULL::BIGINT AS backfill_next, NULL::BIGINT AS backfill_end FROM data_subscriptions WHERE unit = $1 ORDER BY topic",
            )
            .bind(unit)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(subscription).collect()
        })
    }

    fn data_records<'a>(&'a self, unit: &'a str, topic: &'a str, after: i64, limit: u32, max_bytes: usize)
        -> BoxFuture<'a, Result<Vec<DataInboxRow>, StorageError>> {
        self.watched(async move {
            let mut tx = self.pool.begin().await?;
            let sizes = sqlx::query(
                "SELECT seq, (octet_length(header) + octet_length(signature) + octet_length(payload))::BIGINT FROM data_inbox \
                 WHERE unit = $1 AND topic = $2 AND seq > $3 ORDER BY seq LIMIT $4",
            )
            .bind(unit)
            .bind(topic)
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&mut *tx)
            .await?;
            let n = crate::storage::sqlite::paging::fitting(sizes.iter().map(|r| r.get::<i64, _>(1).max(0) as usize), max_bytes);
            let Some(last) = n.checked_sub(1).map(|i| sizes[i].get::<i64, _>(0)) else { return Ok(Vec::new()) };
            let rows = sqlx::query(
                "SELECT d.unit, d.topic, d.seq, COALESCE(s.first_seq, d.seq), d.delivery_id, d.record_id, d.subject, d.published_at_ms, \
                 d.delivered_at_ms, d.header, d.signature, d.payload FROM data_inbox d \
                 LEFT JOIN data_subscriptions s ON s.unit = d.unit AND s.topic = d.topic \
                 WHERE d.unit = $1 AND d.topic = $2 AND d.seq > $3 AND d.seq <= $4 ORDER BY d.seq",
            )
            .bind(unit)
            .bind(topic)
            .bind(after)
            .bind(last)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            rows.into_iter()
                .map(|r| {
                    Ok(DataInboxRow {
                        unit: r.get(0),
                        topic: r.get(1),
                        seq: r.get(2),
                        first_seq: r.get(3),
                        delivery_id: id32(r.get(4))?,
                        record_id: id32(r.get(5))?,
                        subject: r.get(6),
                        published_at_ms: r.get(7),
                        delivered_at_ms: r.get(8),
                        header: r.get(9),
                        signature: r.get(10),
                        payload: r.get(11),
                    })
                })
                .collect()
        })
    }

    fn data_contiguous_end<'a>(&'a self, unit: &'a str, topic: &'a str, first: i64) -> BoxFuture<'a, Result<i64, StorageError>> {
        self.watched(async move {
            let has_first: Option<i64> = sqlx::query_scalar("SELECT seq FROM data_inbox WHERE unit = $1 AND topic = $2 AND seq = $3")
                .bind(unit)
                .bind(topic)
                .bind(first)
                .fetch_optional(&self.pool)
                .await?;
            if has_first.is_none() {
                return Ok(first - 1);
            }
            // The first record from `first` on whose successor is missing ends the run.
            let end: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(d.seq) FROM data_inbox d WHERE d.unit = $1 AND d.topic = $2 AND d.seq >= $3 \
                 AND NOT EXISTS (SELECT 1 FROM data_inbox e WHERE e.unit = d.unit AND e.topic = d.topic AND e.seq = d.seq + 1)",
            )
            .bind(unit)
            .bind(topic)
            .bind(first)
            .fetch_one(&self.pool)
            .await?;
            Ok(end.unwrap_or(first - 1))
        })
    }

    fn data_count_after<'a>(&'a self, unit: &'a str, topic: &'a str, seq: i64) -> BoxFuture<'a, Result<i64, StorageError>> {
        self.watched(async move {
            Ok(sqlx::query_scalar("SELECT COUNT(*) FROM data_inbox WHERE unit = $1 AND topic = $2 AND seq > $3")
                .bind(unit)
                .bind(topic)
                .bind(seq)
                .fetch_one(&self.pool)
                .await?)
        })
    }
}


