//! The backlog of a granted subscription, sent a page per commit from the topic log, so a long
//! backlog never holds the numbering lock for long.

use exchange_wire::sharing::Delivery;
use exchange_wire::UnitAddress;

use crate::relay::commit_done::CommitDone;
use crate::relay::custody::{self, Context, Incoming, Summary};
use crate::relay::services::Services;
use crate::relay::Refusal;
use crate::storage::sharing::SharingJob;
use crate::storage::{Custody, WriteJob};
use super::*;

/// Deliveries of records `from..=to` of `topic` to `subscriber` alone, whose subscription starts at
/// `first`, as many as fit `limits.page_max_bytes` (at least one), and the last record they cover
/// (`to` when all of them fit).
pub(super) async fn backlog_page(
    services: &Services,
    ctx: &Context<'_>,
    topic: &str,
    subscriber: &UnitAddress,
    first: i64,
    from: i64,
    to: i64,
) -> Result<(Vec<Custody>, Vec<Summary>, i64), Refusal> {
    let mut messages = Vec::new();
    let mut summaries = Vec::new();
    let log = services.store.sharing().topic_log(topic, from, to, services.limits.page_max_bytes as usize).await?;
    let covered = if log.len() as i64 == to - from + 1 { to } else { log.last().map_or(to, |l| l.seq) };
    for l in log {
        let (_, record) = signed_message(&l.header, &l.signature, &l.payload)?;
        let d = Delivery {
            topic: l.topic.clone(),
            seq: l.seq as u64,
            subject: l.subject.clone(),
            published_at_ms: l.published_at_ms as u64,
            first_seq: [(subscriber.clone(), first as u64)].into(),
            record,
        };
        let (envelope, payload) = d.envelope(&services.here, vec![subscriber.clone()]);
        let signed = envelope.sign(&services.node_key());
        let (c, s) = custody::take(ctx, Incoming { signed, payload, recipients: vec![subscriber.clone()], from: None, hops: vec![] })?;
        messages.push(c);
        summaries.push(s);
    }
    Ok((messages, summaries, covered))
}

/// Sends what is left of granted backlogs, a page per commit, taking the numbering lock for each
/// page only (publishing goes on in between), and tells `done` of each page committed. Runs after a
/// grant with a long backlog and at start.
pub(crate) async fn send_backlogs(services: &Services, sharing: &Sharing, done: &impl CommitDone) {
    let _one_sender = sharing.backfill_turn().await;
    loop {
        let _numbering = sharing.numbering().await;
        let rows = match services.store.sharing().owner_subscriptions(None).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read subscriptions to backfill");
                return;
            }
        };
        let Some((row, (next, end))) = rows.iter().find_map(|r| Some((r, r.backfill?))) else { return };
        let (Ok(subscriber), Some(first)) = (row.subscriber.parse::<UnitAddress>(), row.first_seq) else { return };
        let dir = services.dir.current();
        let ctx = services.context(&dir);
        let last = end.min(next + BACKFILL_PAGE - 1);
        let (messages, summaries, last) = match backlog_page(services, &ctx, &row.topic, &subscriber, first, next, last).await {
            Ok(p) => p,
            Err(r) => {
                tracing::warn!(topic = %row.topic, subscriber = %row.subscriber, reason = %r.message, "cannot send a backlog page; retried at the next start");
                return;
            }
        };
        let left = (last < end).then_some((last + 1, end));
        let job = SharingJob::Backfill { topic: row.topic.clone(), subscriber: row.subscriber.clone(), left, messages };
        match services.committer.commit(vec![WriteJob::Sharing(job)]).await {
            Ok(_) => {
                for s in &summaries {
                    done.committed(s);
                }
            }
            Err(e) => {
                services.metrics.storage_errors.with_label_values(&["commit"]).inc();
                tracing::error!(error = %e, "cannot store a backlog page; retried at the next start");
                return;
            }
        }
    }
}
