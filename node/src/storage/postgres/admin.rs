//! Operators' changes in the PostgreSQL store (dead letters, webhooks, tokens, directory segments)
//! and retention, each applied inside the group commit's transaction.

use sqlx::{Postgres, QueryBuilder, Row, Transaction};

use crate::retention;
use crate::storage::jobs::AdminOp;

/// `AND seq = ANY(...)` for a selection, or nothing for all.
fn push_selection(q: &mut QueryBuilder<Postgres>, seqs: &Option<Vec<i64>>) {
    if let Some(seqs) = seqs {
        q.push(" AND seq = ANY(");
        q.push_bind(seqs.clone());
        q.push(")");
    }
}

pub(super) async fn apply_admin(tx: &mut Transaction<'_, Postgres>, op: &AdminOp) -> Result<u64, sqlx::Error> {
    Ok(match op {
        AdminOp::PutSegment(seg) => sqlx::query(
            "INSERT INTO directory_segments (owner, version, header, signature, payload, stored_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (owner) DO UPDATE SET version = excluded.version, header = excluded.header, signature = excluded.signature, \
             payload = excluded.payload, stored_at_ms = excluded.stored_at_ms WHERE excluded.version > directory_segments.version",
        )
        .bind(seg.owner.as_str())
        .bind(seg.version)
        .bind(seg.header.as_slice())
        .bind(seg.signature.as_slice())
        .bind(seg.payload.as_slice())
        .bind(exchange_wire::now_ms() as i64)
        .execute(&mut **tx)
        .await?
        .rows_affected(),
        AdminOp::IssueToken(t) => {
            sqlx::query("INSERT INTO unit_tokens (id, hash, unit, label, issued_at_ms, revoked_at_ms) VALUES ($1, $2, $3, $4, $5, NULL)")
                .bind(t.id.as_str())
                .bind(t.hash.as_slice())
                .bind(t.unit.as_str())
                .bind(t.label.as_str())
                .bind(t.issued_at_ms)
                .execute(&mut **tx)
                .await?
                .rows_affected()
        }
        AdminOp::RevokeToken { id, at_ms } => sqlx::query("UPDATE unit_tokens SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL")
            .bind(*at_ms)
            .bind(id.as_str())
            .execute(&mut **tx)
            .await?
            .rows_affected(),
        AdminOp::SetWebhook { unit, url, from_seq, restart } => sqlx::query(
            "INSERT INTO webhooks (unit, url, registered_at_ms, pushed_seq) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (unit) DO UPDATE SET url = excluded.url, registered_at_ms = excluded.registered_at_ms, \
             pushed_seq = CASE WHEN $5 THEN excluded.pushed_seq ELSE webhooks.pushed_seq END",
        )
        .bind(unit.as_str())
        .bind(url.as_str())
        .bind(exchange_wire::now_ms() as i64)
        .bind(*from_seq)
        .bind(*restart)
        .execute(&mut **tx)
        .await?
        .rows_affected(),
        AdminOp::RemoveWebhook { unit } => {
            sqlx::query("DELETE FROM webhooks WHERE unit = $1").bind(unit.as_str()).execute(&mut **tx).await?.rows_affected()
        }
        AdminOp::AdvanceWebhook { unit, seq } => sqlx::query("UPDATE webhooks SET pushed_seq = $1 WHERE unit = $2 AND pushed_seq < $1")
            .bind(*seq)
            .bind(unit.as_str())
            .execute(&mut **tx)
            .await?
            .rows_affected(),
        AdminOp::ResendDead(seqs) => {
            let mut q = QueryBuilder::<Postgres>::new("UPDATE outbox SET dead_reason = NULL, attempts = 0 WHERE dead_reason IS NOT NULL");
            push_selection(&mut q, seqs);
            q.build().execute(&mut **tx).await?.rows_affected()
        }
        AdminOp::PurgeDead(seqs) => {
            let mut q = QueryBuilder::<Postgres>::new("DELETE FROM outbox WHERE dead_reason IS NOT NULL");
            push_selection(&mut q, seqs);
            q.build().execute(&mut **tx).await?.rows_affected()
        }
        AdminOp::Retention { before_ms } => apply_retention(tx, *before_ms).await?,
    })
}

/// A purge as the [`retention`] rules decide it (see the SQLite store).
async fn apply_retention(tx: &mut Transaction<'_, Postgres>, before_ms: i64) -> Result<u64, sqlx::Error> {
    let entries = sqlx::query("SELECT seq, state, delivered_at_ms FROM inbox WHERE delivered_at_ms < $1").bind(before_ms).fetch_all(&mut **tx).await?;
    let retired: Vec<i64> = entries
        .iter()
        .filter(|r| retention::retires_entry(retention::InboxEntry { state: r.get(1), delivered_at_ms: r.get(2) }, before_ms))
        .map(|r| r.get(0))
        .collect();
    if !retired.is_empty() {
        sqlx::query("DELETE FROM inbox WHERE seq = ANY($1)").bind(&retired).execute(&mut **tx).await?;
    }
    let held = sqlx::query(
        "SELECT m.seq, m.received_at_ms, EXISTS (SELECT 1 FROM outbox o WHERE o.message_seq = m.seq), \
         EXISTS (SELECT 1 FROM inbox i WHERE i.message_id = m.id) \
         FROM messages m WHERE m.received_at_ms < $1 AND octet_length(m.payload) > 0",
    )
    .bind(before_ms)
    .fetch_all(&mut **tx)
    .await?;
    let dropped: Vec<i64> = held
        .iter()
        .filter(|r| retention::drops_payload(retention::HeldMessage { received_at_ms: r.get(1), in_outbox: r.get(2), in_inbox: r.get(3) }, before_ms))
        .map(|r| r.get(0))
        .collect();
    if !dropped.is_empty() {
        sqlx::query("UPDATE messages SET payload = ''::bytea WHERE seq = ANY($1)").bind(&dropped).execute(&mut **tx).await?;
    }
    Ok((retired.len() + dropped.len()) as u64)
}
