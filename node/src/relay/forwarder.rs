//! One forwarder per neighbour: takes the oldest, most urgent outbox entries for that neighbour, hands
//! them over as one batch, and removes them only when the neighbour has answered after its commit.
//! While the neighbour is down it retries with capped exponential backoff and full jitter, and starts
//! again at once when the link comes back.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use exchange_wire::api::RecipientState;
use exchange_wire::receipt::{Hop, NodeReport};
use exchange_wire::{Kind, NodeId, UnitAddress};

pub use super::backoff::Backoff;
pub use super::signals::Signals;
use super::attachment_state::Attachments;
use super::batching::{BatchLimit, Handover, Next};
use super::commit_done::{CommitDone, FollowUps};
use super::custody::{self, Context, Summary, event};
use super::services::Services;
use super::signals::{Links, peer_for};
use super::window::Window;
use crate::metrics::Metrics;
use crate::network::PeerId;
use crate::network::protocol::{Parcel, ParcelResult, TransferRequest, parcel_size_bound};
use crate::storage::{Custody, OutboxItem, Record, TrackingRow, WriteJob};

/// The forwarding part: one forwarder per neighbour, started on first use, each carrying the outbox
/// of its neighbour over the link. It holds what the forwarders use and nothing more: the shared
/// services, the links (each forwarder's signals, the peer a neighbour is reached by), the
/// attachments part (a document goes only once the neighbour holds its attachments) and the
/// follow-ups a commit leaves for other parts. It is also the custody pipeline's
/// [`CommitDone`] (`after_commit.rs`): after a commit it wakes the forwarders of the next hops.
pub struct Forwarders {
    pub(super) services: Arc<Services>,
    links: Arc<Links>,
    attachments: Arc<Attachments>,
    /// What commits leave for other parts (subscription requests to decide, recalls to report):
    /// the engine takes the receiving end at start-up and runs them.
    pub(super) follow_ups: FollowUps,
}

impl Forwarders {
    pub fn new(services: Arc<Services>, links: Arc<Links>, attachments: Arc<Attachments>) -> Forwarders {
        Forwarders { services, links, attachments, follow_ups: FollowUps::default() }
    }

    /// The forwarder signals for `hop`, starting its task on first use.
    pub fn forwarder(self: &Arc<Self>, hop: &NodeId) -> Arc<Signals> {
        self.links.forwarder(hop, |signals| {
            self.services.tasks.spawn(run(self.clone(), hop.clone(), signals.clone()));
            signals.work.notify_one();
        })
    }

    /// The peer to reach `hop` by (see [`peer_for`]).
    fn peer_for(&self, hop: &NodeId) -> Option<PeerId> {
        peer_for(&self.services.dir.current(), &self.links, hop)
    }
}


/// Runs the forwarder for `hop` until the process ends.
///
/// Up to `relay.window_batches` batches are on the link at once (a [`Window`]): the next batch is read
/// and sent while the neighbour verifies and commits the ones before it, and each answer is recorded
/// by the batch's own task, beside the sending. An entry stays in the window from the moment it is
/// read until its acknowledgement is committed (or its handover failed), so no read of the outbox
/// hands it out twice. Custody is unchanged: an entry leaves the outbox only in the commit that
/// records the neighbour's answer, which the neighbour sent after its own commit.
pub async fn run(forwarders: Arc<Forwarders>, hop: NodeId, signals: Arc<Signals>) {
    let cfg = &forwarders.services.relay_cfg;
    let mut backoff = Backoff::new(Duration::from_millis(cfg.retry_initial_ms), Duration::from_millis(cfg.retry_max_ms));
    let mut limit = BatchLimit::new(cfg.batch_max_messages, cfg.batch_max_bytes);
    let mut window = Window::new(cfg.window_batches, cfg.batch_max_bytes);
    // Whether the last read filled a batch: there is a backlog to pipeline.
    let mut backlog = false;
    loop {
        while let Some(end) = window.finished() {
            after_flight(&forwarders.services.metrics, &hop, &signals, end, &mut limit, &mut backoff).await;
        }
        // The next batch waits for an answer when the window is full, and also, like Nagle's rule,
        // when batches are on the link and the last read did not fill one: a part-filled batch goes
        // at once only onto an empty link. Under load batches stay full (each group commit
        // carries many documents: fewer pages written per document), and at light load nothing waits.
        // Either way, urgent entries (特急, 加急) may open a batch beyond the window, in a window of
        // their own (`Window::may_overtake`): they must not wait behind routine batches already sent.
        // And no routine batch goes while urgent ones are on the link: sent together, the two would
        // race at the next hop, and the routine one could be committed first there.
        let mut urgent_only = false;
        if window.is_full() || (!window.is_empty() && !backlog) || window.urgent_on_the_link() {
            tokio::select! {
                end = window.next_finished() => {
                    if let Some(end) = end {
                        after_flight(&forwarders.services.metrics, &hop, &signals, end, &mut limit, &mut backoff).await;
                    }
                    continue;
                }
                _ = signals.urgent.notified(), if window.may_overtake() => urgent_only = true,
            }
        }
        let Some(peer) = forwarders.peer_for(&hop) else {
            tracing::warn!(%hop, "next hop is not in the directory; its outbox waits");
            if let Some(end) = window.wait_for_work(&signals, Duration::from_secs(5)).await {
                after_flight(&forwarders.services.metrics, &hop, &signals, end, &mut limit, &mut backoff).await;
            }
            continue;
        };
        let (max_messages, max_bytes) = limit.current();
        // A batch takes what is left of the bytes of its window (urgent batches have their own).
        let max_bytes = max_bytes.min(if urgent_only { window.urgent_bytes_left() } else { window.bytes_left() }).max(1);
        let on_the_link = window.entries();
        // The batch beyond the window reads only the urgent entries, which alone may go in it.
        let more_urgent_than = if urgent_only { exchange_wire::Priority::Routine.rank() } else { u8::MAX };
        let items = match forwarders.services.store.outbox_batch_skipping(hop.as_str(), max_messages, max_bytes, &on_the_link, more_urgent_than).await {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(%hop, error = %e, "cannot read the outbox");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let (items, left_behind) = urgent_apart(items, urgent_only);
        // Documents whose attachments the neighbour does not hold yet wait; their transfer runs
        // beside this loop.
        let had_items = !items.is_empty();
        let items: Vec<OutboxItem> = items.into_iter().filter(|i| forwarders.attachments.attachments_at(&hop, &signals, &i.header)).collect();
        if items.is_empty() {
            backlog &= urgent_only;
            // The periodic look is a safety net; wake-ups normally come from the committer.
            if !urgent_only
                && let Some(end) = window.wait_for_work(&signals, Duration::from_secs(if had_items { 1 } else { 5 })).await
            {
                after_flight(&forwarders.services.metrics, &hop, &signals, end, &mut limit, &mut backoff).await;
            }
            continue;
        }
        let (request, sent, bytes) = to_request(&forwarders.services.dir.current(), items);
        let filled = left_behind || sent.len() >= max_messages || bytes.saturating_mul(2) >= max_bytes;
        if !urgent_only {
            backlog = filled;
        } else if filled {
            // More urgent entries may wait: look again, beyond the window if it is still full.
            signals.urgent.notify_one();
        }
        let seqs: Vec<i64> = sent.iter().map(|s| s.seq).collect();
        let rank = sent.iter().map(|s| s.priority).min().unwrap_or(u8::MAX);
        window.open(seqs, rank, bytes, hand_over(forwarders.clone(), hop.clone(), peer, request, sent, bytes));
    }
}

/// Which of the entries read (most urgent first) go in the next batch, and whether some were left
/// for a later one. Entries more urgent than routine (特急, 加急) go in a batch of their own: routine
/// entries sharing it would have the next hop verify and commit them all before the urgent ones are
/// held there (its priority lanes take a request with any urgent entry whole). A batch beyond a full
/// window (`beyond`) takes only urgent entries.
fn urgent_apart(items: Vec<OutboxItem>, beyond: bool) -> (Vec<OutboxItem>, bool) {
    let urgent_first = items.first().is_some_and(|i| exchange_wire::Priority::is_urgent_rank(i.priority));
    if !beyond && !urgent_first {
        return (items, false);
    }
    let read = items.len();
    let items: Vec<OutboxItem> = items.into_iter().take_while(|i| exchange_wire::Priority::is_urgent_rank(i.priority)).collect();
    let left_behind = items.len() < read;
    (items, left_behind)
}

/// What the loop learns from one batch's handover (its answer, if any, is already recorded).
struct FlightEnd {
    how: Handover,
    messages: usize,
    bytes: usize,
    /// The neighbour asked to retry some of it (it is catching up with the directory).
    retry: bool,
    /// Why the handover failed, when it did.
    failure: Option<String>,
}

/// The handover of one batch: sends it, waits for the neighbour's answer (given after its commit)
/// and records the answer. Runs in the window beside the next batches.
async fn hand_over(forwarders: Arc<Forwarders>, hop: NodeId, peer: PeerId, request: TransferRequest, sent: Vec<Sent>, bytes: usize) -> FlightEnd {
    let outcome = forwarders.services.net.transfer(peer, request).await;
    let how = match &outcome {
        Ok(resp) => match resp.too_large {
            Some(limit) => Handover::TooLarge { limit },
            None if resp.results.len() == sent.len() => Handover::Answered,
            None => Handover::BrokenOff,
        },
        Err(e) if e.broke_off() => Handover::BrokenOff,
        Err(_) => Handover::Unreachable,
    };
    let mut end = FlightEnd { how, messages: sent.len(), bytes, retry: false, failure: None };
    match (how, outcome) {
        (Handover::Answered, Ok(resp)) => end.retry = answered(&forwarders, &hop, &sent, &resp.results).await,
        (Handover::TooLarge { limit }, _) if how.gives_up(sent.len()) => {
            let reason = format!(
                "{hop} reads at most {limit} bytes in one handover and this message alone takes about {bytes}: it can never pass this link"
            );
            answered(&forwarders, &hop, &sent, &[ParcelResult::Refused { code: "too-large".into(), reason }]).await;
        }
        (Handover::TooLarge { .. }, _) => {}
        (_, outcome) => {
            end.failure = Some(match outcome {
                Ok(resp) => format!("answer has {} results for {} parcels", resp.results.len(), sent.len()),
                Err(e) => e.to_string(),
            })
        }
    }
    end
}

/// Takes note of a finished handover: the batch size for the link, the backoff, and the wait before
/// the next batch when the handover failed or the neighbour asked to retry.
async fn after_flight(metrics: &Metrics, hop: &NodeId, signals: &Signals, end: FlightEnd, limit: &mut BatchLimit, backoff: &mut Backoff) {
    let next = limit.after(end.messages, end.bytes, end.how);
    if matches!(end.how, Handover::TooLarge { .. } | Handover::BrokenOff) && end.messages > 1 {
        metrics.batch_splits.with_label_values(&[hop.as_str()]).inc();
    }
    if let (Handover::TooLarge { limit }, Next::Split) = (end.how, next) {
        tracing::info!(%hop, limit, messages = end.messages, bytes = end.bytes, "the neighbour refused a batch as too large; splitting it");
    }
    if let Some(reason) = end.failure {
        metrics.send_failures.with_label_values(&[hop.as_str()]).inc();
        let delay = backoff.next_delay();
        if backoff.attempts() == 1 || backoff.attempts().is_multiple_of(20) {
            tracing::warn!(%hop, attempts = backoff.attempts(), %reason, retry_in_ms = delay.as_millis() as u64, "handover failed; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = signals.link_up.notified() => {
                backoff.reset();
                limit.link_up();
            }
        }
    } else if end.retry {
        // The neighbour is catching up with the directory (pushed on link-up): usually within
        // moments, but back off in case it stays behind.
        tokio::time::sleep(backoff.next_delay()).await;
    } else if end.how == Handover::Answered {
        backoff.reset();
    }
}

/// Records a neighbour's answer to a batch: entries handed over leave the outbox, refused ones become
/// dead letters (reported to their senders), those it asked to retry stay. Returns whether it asked
/// to retry any.
async fn answered(forwarders: &Arc<Forwarders>, hop: &NodeId, sent: &[Sent], results: &[ParcelResult]) -> bool {
    let retry = results.iter().any(|r| matches!(r, ParcelResult::Retry { .. }));
    // Loop until the acknowledgement is recorded: resending before that would only make duplicates
    // (harmless, but wasted work).
    let services = &forwarders.services;
    let record = acknowledged(&services.here, hop, sent, results);
    // Documents refused for good further on are reported to their senders, in the same commit as
    // the dead letters: never a silent drop.
    let (reports, summaries) = failure_reports(&services.context(&services.dir.current()), hop, sent, results);
    let mut jobs = vec![WriteJob::Record(record.clone())];
    jobs.extend(reports.into_iter().map(WriteJob::Custody));
    let mut backoff = Backoff::new(Duration::from_millis(services.relay_cfg.retry_initial_ms), Duration::from_millis(services.relay_cfg.retry_max_ms));
    loop {
        match services.committer.commit(jobs.clone()).await {
            Ok(_) => {
                for s in &summaries {
                    forwarders.committed(s);
                }
                break;
            }
            Err(e) => {
                tracing::error!(%hop, error = %e, "cannot record an acknowledgement; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
    after_acknowledged(&services.metrics, hop, sent, &record);
    for (s, r) in sent.iter().zip(results) {
        if matches!(r, ParcelResult::Retry { .. }) {
            // Perhaps the neighbour lost an attachment we thought it held: offer again.
            forwarders.attachments.forget_attachments_at(hop, &s.header);
        }
    }
    retry
}

/// What was sent in a batch, to match against the answer.
pub struct Sent {
    pub seq: i64,
    /// Priority rank (0 特急, 1 加急, 2 平件).
    pub priority: u8,
    pub message_id: [u8; 32],
    pub kind: String,
    pub enqueued_at_ms: i64,
    pub recipients: Vec<UnitAddress>,
    /// Kind, when this node is where the message entered the network (its status is tracked here).
    pub origin_kind: Option<Kind>,
    /// The canonical header, to report a refusal back to the sender.
    pub header: Vec<u8>,
}

/// The request for `items`, what was sent, and the encoded size of its parcels (an upper bound; see
/// [`parcel_size_bound`]).
fn to_request(dir: &crate::directory::Directory, items: Vec<OutboxItem>) -> (TransferRequest, Vec<Sent>, usize) {
    let mut parcels = Vec::with_capacity(items.len());
    let mut sent = Vec::with_capacity(items.len());
    let mut bytes = 0;
    for i in items {
        bytes += parcel_size_bound(i.header.len(), i.signature.len(), i.payload.len(), i.recipients.len(), i.hops.len());
        let recipients: Vec<UnitAddress> = serde_json::from_str(&i.recipients).unwrap_or_default();
        let hops: Vec<Hop> = serde_json::from_str(&i.hops).unwrap_or_default();
        let origin_kind = if hops.len() == 1 { i.kind.parse().ok() } else { None };
        sent.push(Sent {
            seq: i.seq,
            priority: i.priority,
            message_id: i.message_id,
            kind: i.kind,
            enqueued_at_ms: i.enqueued_at_ms,
            recipients: recipients.clone(),
            origin_kind,
            header: i.header.clone(),
        });
        let sender_segment_version = i.sender.parse().map(|s| dir.key_segment_version(&s)).unwrap_or(0);
        parcels.push(Parcel { header: i.header, signature: i.signature, payload: i.payload, recipients, hops, sender_segment_version });
    }
    (TransferRequest { parcels }, sent, bytes)
}

/// The facts an answer establishes: entries handed over (removed), refused (dead letters), and for
/// documents that entered here, the recipients' new state.
pub fn acknowledged(here: &NodeId, hop: &NodeId, sent: &[Sent], results: &[ParcelResult]) -> Record {
    let now = exchange_wire::now_ms();
    let mut r = Record { urgent: sent.iter().any(|s| exchange_wire::Priority::is_urgent_rank(s.priority)), ..Record::default() };
    for (s, res) in sent.iter().zip(results) {
        let (state, detail) = match res {
            ParcelResult::Stored | ParcelResult::Duplicate => {
                r.outbox_done.push(s.seq);
                r.events.push(event(s.message_id, now, "forwarded", None, Some(hop), None));
                (RecipientState::InTransit, None)
            }
            ParcelResult::Retry { reason } => {
                tracing::debug!(%hop, message = %hex::encode(s.message_id), %reason, "next hop asked to retry");
                continue;
            }
            ParcelResult::Refused { code, reason } => {
                tracing::error!(%hop, message = %hex::encode(s.message_id), %code, %reason, "next hop refused a message for good; kept as a dead letter");
                let why = format!("{hop} refused it ({code}): {reason}");
                r.outbox_dead.push((s.seq, why.clone()));
                r.events.push(event(s.message_id, now, "failed", None, Some(hop), Some(why.clone())));
                (RecipientState::Failed, Some(why))
            }
        };
        if matches!(s.origin_kind, Some(Kind::Document | Kind::Query)) {
            for u in &s.recipients {
                r.tracking.push(TrackingRow {
                    message_id: s.message_id,
                    recipient: u.to_string(),
                    state,
                    node: if state == RecipientState::InTransit { hop.to_string() } else { here.to_string() },
                    at_ms: now as i64,
                    detail: detail.clone(),
                    receipt_id: None,
                });
            }
        }
    }
    r
}

/// Signed failure reports for the documents `hop` refused for good that did not enter the network
/// here (where they did, the sender's status is updated directly), with what their commit sets off.
/// A rule: what to report and where is decided from the answer alone.
fn failure_reports(ctx: &Context, hop: &NodeId, sent: &[Sent], results: &[ParcelResult]) -> (Vec<Custody>, Vec<Summary>) {
    let mut out = (Vec::new(), Vec::new());
    for (s, r) in sent.iter().zip(results) {
        let ParcelResult::Refused { code, reason } = r else { continue };
        let Ok(env) = exchange_wire::Envelope::from_canonical_bytes(&s.header) else { continue };
        if s.origin_kind.is_some() || env.kind != Kind::Document {
            continue;
        }
        let report = exchange_wire::receipt::FailureReport {
            message_id: exchange_wire::Digest(s.message_id),
            node: ctx.here.clone(),
            units: s.recipients.clone(),
            reason: format!("{hop} refused it ({code}): {reason}"),
        };
        let (envelope, payload) = report.envelope(env.sender.clone(), env.priority);
        let signed = envelope.sign(&ctx.node_key);
        match custody::take(ctx, custody::Incoming { signed, payload, recipients: vec![env.sender.clone()], from: None, hops: vec![] }) {
            Ok((c, summary)) => {
                out.0.push(c);
                out.1.push(summary);
            }
            Err(e) => tracing::warn!(reason = %e.message, "cannot route a failure report"),
        }
    }
    out
}

/// Counts what a neighbour's answer, now recorded, handed over and refused.
fn after_acknowledged(metrics: &Metrics, hop: &NodeId, sent: &[Sent], record: &Record) {
    let now = exchange_wire::now_ms() as i64;
    let done: std::collections::HashSet<i64> = record.outbox_done.iter().copied().collect();
    for s in sent.iter().filter(|s| done.contains(&s.seq)) {
        metrics.forwarded.with_label_values(&[hop.as_str(), &s.kind]).inc();
        metrics.hop_latency.with_label_values(&[hop.as_str()]).observe((now - s.enqueued_at_ms).max(0) as f64 / 1000.0);
    }
    if !record.outbox_dead.is_empty() {
        metrics.dead_letters_total.with_label_values(&[hop.as_str()]).inc_by(record.outbox_dead.len() as u64);
    }
}

/// Keeps the outbox gauges true to storage (once a second).
pub(super) async fn refresh_queue_gauges(services: Arc<Services>) {
    let m = &services.metrics;
    let mut known: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let stats = match services.store.queue_stats().await {
            Ok(s) => s,
            Err(e) => {
                m.storage_errors.with_label_values(&["read"]).inc();
                tracing::error!(error = %e, "cannot read outbox statistics");
                continue;
            }
        };
        let now = exchange_wire::now_ms() as i64;
        let mut seen = HashSet::new();
        for q in &stats {
            let hop = q.hop.as_str();
            m.outbox_depth.with_label_values(&[hop]).set(q.depth);
            m.outbox_bytes.with_label_values(&[hop]).set(q.bytes);
            let age = q.oldest_enqueued_ms.map(|t| (now - t).max(0) as f64 / 1000.0).unwrap_or(0.0);
            m.outbox_oldest_age.with_label_values(&[hop]).set(age);
            m.dead_letters.with_label_values(&[hop]).set(q.dead);
            seen.insert(q.hop.clone());
        }
        for gone in known.difference(&seen) {
            for g in [&m.outbox_depth, &m.outbox_bytes, &m.dead_letters] {
                g.with_label_values(&[gone.as_str()]).set(0);
            }
            m.outbox_oldest_age.with_label_values(&[gone.as_str()]).set(0.0);
        }
        known = seen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(ranks: &[u8]) -> Vec<OutboxItem> {
        ranks
            .iter()
            .enumerate()
            .map(|(seq, &priority)| OutboxItem {
                seq: seq as i64,
                message_id: [seq as u8; 32],
                priority,
                kind: "document".into(),
                sender: String::new(),
                enqueued_at_ms: 0,
                recipients: String::new(),
                header: vec![],
                signature: vec![],
                payload: vec![],
                hops: String::new(),
            })
            .collect()
    }

    fn ranks(items: &[OutboxItem]) -> Vec<u8> {
        items.iter().map(|i| i.priority).collect()
    }

    /// Urgent entries never share a batch with routine ones; routine entries alone go whole; beyond
    /// a full window only urgent entries go.
    #[test]
    fn urgent_entries_go_in_a_batch_of_their_own() {
        let (batch, left) = urgent_apart(entries(&[0, 1, 2, 2]), false);
        assert_eq!((ranks(&batch), left), (vec![0, 1], true), "特急 and 加急 apart from the routine entries read with them");
        let (batch, left) = urgent_apart(entries(&[2, 2, 2]), false);
        assert_eq!((ranks(&batch), left), (vec![2, 2, 2], false), "routine entries alone go whole");
        let (batch, left) = urgent_apart(entries(&[0, 1, 2]), true);
        assert_eq!((ranks(&batch), left), (vec![0, 1], true), "beyond a full window, 特急 and 加急");
        let (batch, left) = urgent_apart(entries(&[2, 2]), true);
        assert_eq!((ranks(&batch), left), (vec![], true), "but no routine entry");
        let (batch, left) = urgent_apart(entries(&[]), false);
        assert_eq!((ranks(&batch), left), (vec![], false));
    }

    /// The answer for a batch of urgent entries is recorded ahead of routine commits, so the link's
    /// few urgent batches are free again at once; a routine batch's answer waits its turn.
    #[test]
    fn the_answer_for_urgent_entries_is_recorded_as_urgent() {
        let sent = |rank: u8| Sent {
            seq: 1,
            priority: rank,
            message_id: [1; 32],
            kind: "document".into(),
            enqueued_at_ms: 0,
            recipients: vec![],
            origin_kind: None,
            header: vec![],
        };
        let (here, hop): (NodeId, NodeId) = ("gz".parse().unwrap(), "gz.haizhu".parse().unwrap());
        for (rank, urgent) in [(0, true), (1, true), (2, false)] {
            let record = acknowledged(&here, &hop, &[sent(rank)], &[ParcelResult::Stored]);
            assert_eq!(record.outbox_done, [1]);
            assert_eq!(WriteJob::Record(record).is_urgent(), urgent, "rank {rank}");
        }
    }
}
