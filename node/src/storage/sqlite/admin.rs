//! Operators' changes in the SQLite store (dead letters, webhooks, tokens, directory segments) and
//! retention, each applied inside the group commit's transaction.

use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::ROWS_PER_STATEMENT;
use crate::retention;
use crate::storage::jobs::AdminOp;

/// `WHERE seq IN (...)` for a selection, or nothing for all.
fn push_selection(q: &mut QueryBuilder<Sqlite>, seqs: &Option<Vec<i64>>) {
    if let Some(seqs) = seqs {
        q.push(" AND seq IN (");
        let mut sep = q.separated(", ");
        for s in seqs {
            sep.push_bind(*s);
        }
        sep.push_unseparated(")");
    }
}

pub(super) async fn apply_admin(tx: &mut Transaction<'_, Sqlite>, op: &AdminOp) -> Result<u64, sqlx::Error> {
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
        AdminOp::IssueToken(t) => sqlx::query(
            "INSERT INTO unit_tokens (id, hash, unit, label, issued_at_ms, revoked_at_ms) VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(t.id.as_str())
        .bind(t.hash.as_slice())
        .bind(t.unit.as_str())
        .bind(t.label.as_str())
        .bind(t.issued_at_ms)
        .execute(&mut **tx)
        .await?
        .rows_affected(),
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
            let mut q = QueryBuilder::<Sqlite>::new("UPDATE outbox SET dead_reason = NULL, attempts = 0 WHERE dead_reason IS NOT NULL");
            push_selection(&mut q, seqs);
            q.build().execute(&mut **tx).await?.rows_affected()
        }
        AdminOp::PurgeDead(seqs) => {
            let mut q = QueryBuilder::<Sqlite>::new("DELETE FROM outbox WHERE dead_reason IS NOT NULL");
            push_selection(&mut q, seqs);
            q.build().execute(&mut **tx).await?.rows_affected()
        }
        AdminOp::Retention { before_ms } => apply_retention(tx, *before_ms).await?,
    })
}

/// A purge as the [`retention`] rules decide it: settled inbox entries first, then the payloads
/// nothing needs any more. The id rows stay, so a late re-send is still recognised as a duplicate.
async fn apply_retention(tx: &mut Transaction<'_, Sqlite>, before_ms: i64) -> Result<u64, sqlx::Error> {
    let entries = sqlx::query("SELECT seq, state, delivered_at_ms FROM inbox WHERE delivered_at_ms < $1").bind(before_ms).fetch_all(&mut **tx).await?;
    let retired: Vec<i64> = entries
        .iter()
        .filter(|r| retention::retires_entry(retention::InboxEntry { state: r.get(1), delivered_at_ms: r.get(2) }, before_ms))
        .map(|r| r.get(0))
        .collect();
    for_keys_in_chunks(tx, "DELETE FROM inbox WHERE seq IN (", &retired).await?;
    let held = sqlx::query(
        // Uncorrelated `IN` subqueries: each list is built once, not scanned per message.
        "SELECT seq, received_at_ms, seq IN (SELECT message_seq FROM outbox), id IN (SELECT message_id FROM inbox) \
         FROM messages WHERE received_at_ms < $1 AND length(payload) > 0",
    )
    .bind(before_ms)
    .fetch_all(&mut **tx)
    .await?;
    let dropped: Vec<i64> = held
        .iter()
        .filter(|r| retention::drops_payload(retention::HeldMessage { received_at_ms: r.get(1), in_outbox: r.get(2), in_inbox: r.get(3) }, before_ms))
        .map(|r| r.get(0))
        .collect();
    for_keys_in_chunks(tx, "UPDATE messages SET payload = x'' WHERE seq IN (", &dropped).await?;
    Ok((retired.len() + dropped.len()) as u64)
}

/// Runs `statement` (ending in `IN (`) for `keys`, a statement per [`ROWS_PER_STATEMENT`] keys.
pub(super) async fn for_keys_in_chunks(tx: &mut Transaction<'_, Sqlite>, statement: &str, keys: &[i64]) -> Result<(), sqlx::Error> {
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(statement);
        let mut sep = q.separated(", ");
        for k in chunk {
            sep.push_bind(*k);
        }
        q.push(")");
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}
