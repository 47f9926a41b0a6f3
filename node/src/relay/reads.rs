//! What agencies and operators read: a message's per-recipient status at the sender's node, inboxes
//! (with long-poll), and this node's custody events for a message.

use exchange_wire::api::{CustodyEvent, InboxItem, ReceiptView, RecipientState, RecipientStatus, SignedMessage, StatusResponse};
use exchange_wire::receipt::Hop;
use exchange_wire::{Digest, Envelope, MessageId, NodeId, SignedEnvelope, UnitAddress, document};

use super::access::Caller;
use super::services::Services;
use super::refusal::Refusal;
use crate::storage::{EventRecord, InboxRecord};

fn unreadable() -> Refusal {
    Refusal::new("storage", 500, "a stored message is unreadable")
}

impl Services {
    /// Per-recipient status of a message sent from a unit of this node.
    pub async fn status(&self, caller: &Caller, id: &MessageId) -> Result<StatusResponse, Refusal> {
        let not_here = || {
            Refusal::new("not-found", 404, format!("message {id} was not sent from a unit of node {}; ask the sender's node", self.here))
        };
        let tracking = self.store.tracking(&id.0).await?;
        if tracking.is_empty() {
            return Err(not_here());
        }
        let stored = self.store.message(&id.0).await?.ok_or_else(not_here)?;
        let env = Envelope::from_canonical_bytes(&stored.header).map_err(|_| unreadable())?;
        // Another unit learns nothing, not even that the message exists.
        caller.may_act_for(&env.sender).map_err(|_| not_here())?;
        let mut recipients = Vec::with_capacity(tracking.len());
        for t in tracking {
            let detail = t.detail.clone();
            recipients.push(self.recipient_status(t, detail).await?);
        }
        // 补发: the recipients of re-sends of this document, each with the re-send's id in detail.
        let events = self.store.events(&id.0).await?;
        for e in events.iter().filter(|e| e.event == "resent") {
            let Some(resend) = e.detail.as_deref().and_then(|d| d.parse::<MessageId>().ok()) else { continue };
            for t in self.store.tracking(&resend.0).await? {
                let detail = format!("补发 as message {resend}{}", t.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default());
                recipients.push(self.recipient_status(t, Some(detail)).await?);
            }
        }
        // Hops: ours first, then those delivering nodes reported back, earliest sighting of each node.
        let mut hops: Vec<Hop> = serde_json::from_str(&stored.hops).unwrap_or_default();
        for e in events {
            if e.event == "hop"
                && let Some(node) = e.peer.and_then(|p| p.parse().ok())
                    && !hops.iter().any(|h| h.node == node) {
                        hops.push(Hop { node, at_ms: e.at_ms as u64 });
                    }
        }
        hops.sort_by_key(|h| h.at_ms);
        Ok(StatusResponse { id: *id, kind: env.kind, sender: env.sender, created_at_ms: env.created_at_ms, recipients, hops })
    }

    /// One recipient's line of a status, with its signed receipt when there is one.
    async fn recipient_status(&self, t: crate::storage::TrackingRecord, detail: Option<String>) -> Result<RecipientStatus, Refusal> {
        let receipt = match &t.receipt_id {
            Some(rid) => self.receipt_view(rid).await?,
            None => None,
        };
        Ok(RecipientStatus {
            unit: t.recipient.parse().map_err(|_| unreadable())?,
            state: parse_state(&t.state),
            node: t.node.parse().unwrap_or_else(|_| self.here.clone()),
            at_ms: t.at_ms as u64,
            detail,
            receipt,
        })
    }

    async fn receipt_view(&self, rid: &[u8]) -> Result<Option<ReceiptView>, Refusal> {
        let Ok(rid) = <[u8; 32]>::try_from(rid) else { return Ok(None) };
        let Some(m) = self.store.message(&rid).await? else { return Ok(None) };
        let Ok(sig) = <[u8; 64]>::try_from(m.signature.as_slice()) else { return Ok(None) };
        let Ok(signed) = SignedEnvelope::from_canonical(m.header, sig) else { return Ok(None) };
        Ok(Some(ReceiptView { id: Digest(rid), envelope: signed.envelope, signature: hex::encode(sig) }))
    }

    /// A unit's inbox after `after`, waiting up to `wait` for news when it is empty (long-poll).
    pub async fn inbox(
        &self,
        caller: &Caller,
        unit: &UnitAddress,
        after: i64,
        limit: u32,
        wait: std::time::Duration,
    ) -> Result<Vec<InboxItem>, Refusal> {
        caller.may_act_for(unit)?;
        if self.dir.current().home_of(unit).as_ref() != Some(&self.here) {
            return Err(Refusal::new("not-found", 404, format!("unit {unit} is not hosted on node {}", self.here)));
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.inbox_changes.subscribe();
        loop {
            changes.borrow_and_update();
            let items = inbox_page(self, unit, after, limit).await?;
            if !items.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(items);
            }
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    /// A unit's 办件 whose 办理时限 (deadline) has passed and that it has neither signed for nor
    /// returned, earliest deadline first: their ids. Deadlines are dates in China Standard Time.
    /// Only headers are read, a page at a time; the answer loads the items one by one as it is
    /// written ([`Services::overdue_item`]), so a long list of large documents never sits in memory.
    pub async fn overdue(&self, caller: &Caller, unit: &UnitAddress) -> Result<Vec<MessageId>, Refusal> {
        caller.may_act_for(unit)?;
        if self.dir.current().home_of(unit).as_ref() != Some(&self.here) {
            return Err(Refusal::new("not-found", 404, format!("unit {unit} is not hosted on node {}", self.here)));
        }
        let today = exchange_wire::time::china_date(exchange_wire::now_ms());
        let mut overdue: Vec<(String, i64, MessageId)> = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.inbox_unsettled(unit.as_str(), after, 500).await?;
            let Some(last) = page.last().map(|h| h.seq) else { break };
            after = last;
            for h in page {
                let env = Envelope::from_canonical_bytes(&h.header).map_err(|_| unreadable())?;
                let action = env.kind == exchange_wire::Kind::Document && env.metadata.get(document::HANDLING).map(String::as_str) == Some("action");
                if let (true, Some(deadline)) = (action, env.metadata.get(document::DEADLINE))
                    && deadline.as_str() < today.as_str() {
                        overdue.push((deadline.clone(), h.seq, Digest(h.message_id)));
                    }
            }
        }
        overdue.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Ok(overdue.into_iter().map(|(_, _, id)| id).collect())
    }

    /// One item of a unit's overdue list, loaded when the answer gets to it; `None` when it was
    /// settled in the meantime.
    pub async fn overdue_item(&self, unit: &UnitAddress, id: &MessageId) -> Result<Option<InboxItem>, Refusal> {
        match self.store.inbox_entry(unit.as_str(), &id.0).await? {
            Some(r) if r.state == "delivered" => inbox_item(r).map(Some),
            _ => Ok(None),
        }
    }

    /// Custody events this node recorded for a message.
    pub async fn events(&self, id: &MessageId) -> Result<Vec<CustodyEvent>, Refusal> {
        events(self, id).await
    }
}

/// Custody events this node recorded for a message: the reads (`events`) and the operators' trace
/// (`operations`) both list them, and need only the store.
pub(crate) async fn events(services: &Services, id: &MessageId) -> Result<Vec<CustodyEvent>, Refusal> {
    Ok(services.store.events(&id.0).await?.into_iter().map(|e| custody_event(&services.here, e)).collect())
}

fn custody_event(here: &NodeId, e: EventRecord) -> CustodyEvent {
    CustodyEvent {
        node: here.clone(),
        at_ms: e.at_ms as u64,
        event: e.event,
        unit: e.unit.and_then(|u| u.parse().ok()),
        peer: e.peer.and_then(|p| p.parse().ok()),
        detail: e.detail,
    }
}

/// One page of `unit`'s inbox after `after`, as it is now: the long-poll above and the webhook
/// pusher (`push.rs`) read through it, so both page alike.
pub(super) async fn inbox_page(services: &Services, unit: &UnitAddress, after: i64, limit: u32) -> Result<Vec<InboxItem>, Refusal> {
    let records = services.store.inbox(unit.as_str(), after, limit.clamp(1, 1000), services.limits.page_max_bytes as usize).await?;
    records.into_iter().map(inbox_item).collect()
}

fn inbox_item(r: InboxRecord) -> Result<InboxItem, Refusal> {
    let sig: [u8; 64] = r.signature.as_slice().try_into().map_err(|_| unreadable())?;
    let signed = SignedEnvelope::from_canonical(r.header, sig).map_err(|_| unreadable())?;
    Ok(InboxItem {
        seq: r.seq,
        id: Digest(r.message_id),
        delivered_at_ms: r.delivered_at_ms as u64,
        state: parse_state(&r.state),
        message: SignedMessage::new(&signed, &r.payload),
    })
}

pub(crate) fn parse_state(s: &str) -> RecipientState {
    match s {
        "accepted" => RecipientState::Accepted,
        "in-transit" => RecipientState::InTransit,
        "delivered" => RecipientState::Delivered,
        "signed-for" => RecipientState::SignedFor,
        "returned" => RecipientState::Returned,
        "recalled" => RecipientState::Recalled,
        "answered" => RecipientState::Answered,
        "timed-out" => RecipientState::TimedOut,
        _ => RecipientState::Failed,
    }
}
