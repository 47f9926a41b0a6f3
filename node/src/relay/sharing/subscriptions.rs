//! Subscriptions at the owner's home node: requests checked and stored, decided at once by the
//! catalog (open, not-shared) or by the owner unit or an operator (approval), answered with a
//! node-signed decision that carries the start of the backlog.

use std::sync::Arc;

use exchange_wire::api::SignedMessage;
use exchange_wire::sharing::{
    Decision, DecideRequest, RequestFacts, Sharing, StartFrom,
    SubscriptionView,
};
use exchange_wire::{Digest, Kind, UnitAddress};

use crate::relay::access::Caller;
use crate::relay::custody::{self, Incoming};
use crate::relay::refused::Refused;
use crate::relay::{Engine, Refusal};
use crate::directory::Directory;
use crate::storage::sharing::{SharingJob, SharingRow, SubscriptionRow};
use crate::storage::{JobOutcome, WriteJob};
use super::*;

impl Engine {
    pub(super) fn check_home(&self, dir: &Directory, unit: &UnitAddress) -> Result<(), Refusal> {
        check_home(&self.here, dir, unit)
    }

    // ---- Subscriptions ----

    /// `POST /v1/subscriptions`: a unit asks a topic's owner for a subscription (signed request).
    pub async fn request_subscription(self: &Arc<Self>, caller: &Caller, m: SignedMessage) -> Result<SubscriptionView, Refusal> {
        let id = m.envelope.message_id();
        let result = self.check_and_request(caller, &m).await;
        if let Err(r) = &result
            && !r.transient
        {
            self.refused("agency", &[Refused { id: Some(id), kind: Some(Kind::SubscriptionRequest), refusal: r }]).await;
        }
        result
    }

    pub(super) async fn check_and_request(self: &Arc<Self>, caller: &Caller, m: &SignedMessage) -> Result<SubscriptionView, Refusal> {
        let env = &m.envelope;
        caller.may_act_for(&env.sender)?;
        if env.kind != Kind::SubscriptionRequest {
            return Err(Refusal::new("unsupported-kind", 400, format!("POST /v1/subscriptions takes subscription-request envelopes, not {}", env.kind)));
        }
        let dir = self.dir.current();
        self.check_size(env.payload_size)?;
        self.check_home(&dir, &env.sender)?;
        self.check_fresh(env.created_at_ms)?;
        self.check_active(&dir, &env.sender)?;
        let facts = RequestFacts::from_envelope(env)?;
        let catalog = self.sharing.compiled_catalog()?;
        let topic = catalog
            .topic(&facts.topic)
            .ok_or_else(|| Refusal::new("unknown-topic", 422, format!("topic {} is not in the catalog: see GET /v1/catalog", facts.topic)))?;
        if facts.owner != topic.owner {
            return Err(Refusal::malformed(format!("topic {} is owned by {}: address the request to it, not to {}", topic.name, topic.owner, facts.owner)));
        }
        if topic.sharing == Sharing::NotShared {
            return Err(Refusal::new(
                "not-shared",
                403,
                format!("topic {} is not shared (catalog sharing condition not-shared): {} grants no subscriptions to it", topic.name, topic.owner),
            ));
        }
        if env.sender == topic.owner {
            return Err(Refusal::malformed(format!("{} owns topic {}; an owner does not subscribe to its own topic", env.sender, topic.name)));
        }
        let held = self.store.sharing().local_subscriptions(env.sender.as_str()).await?;
        if let Some(s) = held.iter().find(|s| s.topic == topic.name && s.state != "refused") {
            return Err(Refusal::new(
                "conflict",
                409,
                format!("{} already has a subscription to {} ({}); read or replay it instead of asking again", env.sender, topic.name, s.state),
            ));
        }
        let (signed, payload) = m.decode()?;
        verify_unit(&dir, &signed, &[env.created_at_ms, exchange_wire::now_ms()])?;
        let ctx = self.context(&dir);
        let owner = topic.owner.clone();
        let (mut c, summary) = custody::take(&ctx, Incoming { signed: signed.clone(), payload, recipients: vec![owner.clone()], from: None, hops: vec![] })?;
        let now = ctx.now_ms as i64;
        let row = SubscriptionRow {
            topic: topic.name.clone(),
            subscriber: env.sender.to_string(),
            owner: owner.to_string(),
            state: "requested".into(),
            start: facts.from.to_string(),
            first_seq: None,
            cursor: 0,
            request_id: signed.id.0,
            requested_at_ms: now,
            decided_at_ms: None,
            decided_by: None,
            reason: None,
            backfill: None,
        };
        c.sharing.push(SharingRow::LocalRequested(row.clone()));
        let outcome = self.committer.commit(vec![WriteJob::Custody(c)]).await.map_err(|e| {
            self.metrics.storage_errors.with_label_values(&["commit"]).inc();
            tracing::error!(error = %e, "cannot store a subscription request");
            Refusal { code: "storage", message: "the node could not store the request; try again later".into(), status: 503, transient: true }
        })?;
        if outcome.first() == Some(&JobOutcome::Stored) {
            self.metrics.accepted.with_label_values(&[Kind::SubscriptionRequest.as_str(), "agency"]).inc();
            self.after_commit(&summary);
        }
        view(&row, None)
    }

    /// Decides every pending request that the catalog decides by itself (open: granted;
    /// not-shared, unknown topic or another owner: refused). Runs after a request arrives, when a
    /// catalog comes into force, and at start.
    pub(crate) async fn process_subscription_requests(self: &Arc<Self>) {
        let Some(catalog) = self.sharing.catalog() else { return };
        let _numbering = self.sharing.numbering().await;
        let rows = match self.store.sharing().owner_subscriptions(None).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read subscription requests");
                return;
            }
        };
        for row in rows.into_iter().filter(|r| r.state == "pending") {
            let verdict = match catalog.topic(&row.topic) {
                None => Some((false, Some(format!("topic {} is not in the catalog", row.topic)))),
                Some(t) if t.owner.as_str() != row.owner => Some((false, Some(format!("topic {} is owned by {}", t.name, t.owner)))),
                Some(t) => match t.sharing {
                    Sharing::Open => Some((true, None)),
                    Sharing::NotShared => Some((false, Some(format!("topic {} is not shared (catalog sharing condition not-shared)", t.name)))),
                    Sharing::Approval => None,
                },
            };
            if let Some((grant, reason)) = verdict
                && let Err(r) = self.decide_locked(&row, grant, reason, "catalog").await
            {
                tracing::warn!(topic = %row.topic, subscriber = %row.subscriber, reason = %r.message, "cannot decide a subscription request");
            }
        }
    }

    /// `POST /v1/units/{owner}/subscribers:decide`: the owner unit grants or refuses a request.
    pub async fn decide_subscription(self: &Arc<Self>, caller: &Caller, owner: &UnitAddress, req: DecideRequest) -> Result<SubscriptionView, Refusal> {
        caller.may_act_for(owner)?;
        self.check_home(&self.dir.current(), owner)?;
        self.decide_pending(Some(owner), req, owner.as_str()).await
    }

    /// Admin API `POST /admin/v1/subscriptions:decide`: an operator of the owner's node decides.
    pub async fn admin_decide_subscription(self: &Arc<Self>, req: DecideRequest) -> Result<SubscriptionView, Refusal> {
        let detail = format!("{} for {}: {}", req.topic, req.subscriber, if req.grant { "granted" } else { "refused" });
        let view = self.decide_pending(None, req, "operator").await?;
        self.admin_record("subscription-decide", detail).await?;
        Ok(view)
    }

    pub(super) async fn decide_pending(self: &Arc<Self>, owner: Option<&UnitAddress>, req: DecideRequest, decided_by: &str) -> Result<SubscriptionView, Refusal> {
        let _numbering = self.sharing.numbering().await;
        let rows = self.store.sharing().owner_subscriptions(owner.map(|o| o.as_str())).await?;
        let row = rows.into_iter().find(|r| r.topic == req.topic && r.subscriber == req.subscriber.as_str()).ok_or_else(|| {
            Refusal::new("not-found", 404, format!("no subscription request of {} to {} is held at node {}", req.subscriber, req.topic, self.here))
        })?;
        if row.state != "pending" {
            return Err(Refusal::new("conflict", 409, format!("the subscription of {} to {} is {} already", req.subscriber, req.topic, row.state)));
        }
        self.decide_locked(&row, req.grant, req.reason, decided_by).await
    }

    /// Grants or refuses a pending subscription; a grant sends the backlog from the requested start
    /// in the same commit. The caller holds `sharing_lock`.
    pub(super) async fn decide_locked(self: &Arc<Self>, row: &SubscriptionRow, grant: bool, reason: Option<String>, decided_by: &str) -> Result<SubscriptionView, Refusal> {
        let subscriber: UnitAddress = row.subscriber.parse().map_err(|_| corrupt("subscriber address"))?;
        let owner: UnitAddress = row.owner.parse().map_err(|_| corrupt("owner address"))?;
        let dir = self.dir.current();
        let ctx = self.context(&dir);
        let shared = self.store.sharing();
        let mut messages = Vec::new();
        let mut summaries = Vec::new();
        let mut backfill = None;
        let first_seq = if grant {
            let head = shared.topic_head(&row.topic).await?;
            let first = match row.start.parse::<StartFrom>().unwrap_or_default() {
                StartFrom::Beginning => 1,
                StartFrom::Seq(n) => (n as i64).max(1),
                StartFrom::Time(t) => shared.topic_seq_at(&row.topic, t as i64).await?.unwrap_or(head + 1),
                StartFrom::Now => head + 1,
            };
            // The first page of the backlog goes with the grant; the rest follows a page per commit
            // (`send_backlogs`), so a long history never holds the numbering lock for long.
            if first <= head {
                let last = head.min(first + BACKFILL_PAGE - 1);
                let (m, ss, last) = backfill::backlog_page(&self.services, &ctx, &row.topic, &subscriber, first, first, last).await?;
                messages.extend(m);
                summaries.extend(ss);
                backfill = (last < head).then_some((last + 1, head));
            }
            Some(first)
        } else {
            None
        };
        let state = if grant { "granted" } else { "refused" };
        let decision = Decision {
            topic: row.topic.clone(),
            subscriber: subscriber.clone(),
            owner: owner.clone(),
            decision: state.into(),
            first_seq: first_seq.map(|f| f as u64),
            reason: reason.clone(),
            decided_by: decided_by.into(),
            request_id: Digest(row.request_id),
        };
        let (envelope, payload) = decision.envelope(&self.here);
        let signed = envelope.sign(&self.node_key());
        let (c, s) = custody::take(&ctx, Incoming { signed, payload, recipients: vec![subscriber.clone()], from: None, hops: vec![] })?;
        messages.push(c);
        summaries.push(s);
        let now = exchange_wire::now_ms() as i64;
        let backlog = messages.len() - 1;
        let events = vec![sharing_event(
            Some(row.request_id),
            if grant { "subscription-granted" } else { "subscription-refused" },
            Some(row.subscriber.clone()),
            format!("{} by {decided_by}{}", row.topic, first_seq.map(|f| format!(", from #{f}, {backlog} records backfilled")).unwrap_or_default()),
        )];
        let job = SharingJob::Decide {
            topic: row.topic.clone(),
            subscriber: row.subscriber.clone(),
            state: state.into(),
            first_seq,
            decided_by: decided_by.into(),
            reason: reason.clone(),
            at_ms: now,
            backfill,
            messages,
            events,
        };
        let outcome = self.committer.commit(vec![WriteJob::Sharing(job)]).await.map_err(|e| {
            self.metrics.storage_errors.with_label_values(&["commit"]).inc();
            tracing::error!(error = %e, "cannot store a subscription decision");
            Refusal { code: "storage", message: "the node could not store the decision; try again later".into(), status: 503, transient: true }
        })?;
        match outcome.into_iter().next() {
            Some(JobOutcome::Stored) => {
                self.metrics.subscription_decisions.with_label_values(&[state]).inc();
                for s in &summaries {
                    self.after_commit(s);
                }
                if backfill.is_some() {
                    let engine = self.clone();
                    self.tasks.spawn(async move { backfill::send_backlogs(&engine.services, &engine.sharing, &engine.forwarders).await });
                }
                let mut decided = row.clone();
                decided.state = state.into();
                decided.first_seq = first_seq;
                decided.decided_at_ms = Some(now);
                decided.decided_by = Some(decided_by.into());
                decided.reason = reason;
                view(&decided, None)
            }
            Some(JobOutcome::Conflict(reason)) => Err(Refusal::new("conflict", 409, reason)),
            _ => Err(Refusal::new("storage", 500, "unexpected outcome of a decision")),
        }
    }
}
