//! Subscriptions at the owner's home node: requests checked and stored, decided at once by the
//! catalog (open, not-shared) or by the owner unit or an operator (approval), answered with a
//! node-signed decision that carries the start of the backlog.

use exchange_wire::api::SignedMessage;
use exchange_wire::sharing::{
    Decision, DecideRequest, RequestFacts, Sharing as Condition, StartFrom,
    SubscriptionView,
};
use exchange_wire::{Digest, Kind, UnitAddress};

use crate::relay::access::Caller;
use crate::relay::custody::{self, Context, Incoming, Summary};
use crate::storage::Custody;
use crate::relay::refused::Refused;
use crate::relay::commit_done::CommitDone;
use crate::relay::services::Services;
use crate::relay::Refusal;
use crate::storage::sharing::{SharingJob, SharingRow, SubscriptionRow};
use crate::storage::{JobOutcome, WriteJob};
use super::*;
use crate::relay::ingress::checks;

/// Subscriptions are the sharing part's work with the shared services; `done` is told of each
/// commit (it wakes the forwarders of the decisions and backlogs, and starts sending what is left
/// of a long backlog).
impl Sharing {
    /// `POST /v1/subscriptions`: a unit asks a topic's owner for a subscription (signed request).
    pub async fn request_subscription(&self, s: &Services, done: &impl CommitDone, caller: &Caller, m: SignedMessage) -> Result<SubscriptionView, Refusal> {
        let id = m.envelope.message_id();
        let result = self.check_and_request(s, done, caller, &m).await;
        if let Err(r) = &result
            && !r.transient
        {
            s.refused("agency", &[Refused { id: Some(id), kind: Some(Kind::SubscriptionRequest), refusal: r }]).await;
        }
        result
    }

    async fn check_and_request(&self, s: &Services, done: &impl CommitDone, caller: &Caller, m: &SignedMessage) -> Result<SubscriptionView, Refusal> {
        let env = &m.envelope;
        caller.may_act_for(&env.sender)?;
        if env.kind != Kind::SubscriptionRequest {
            return Err(Refusal::new("unsupported-kind", 400, format!("POST /v1/subscriptions takes subscription-request envelopes, not {}", env.kind)));
        }
        let dir = s.dir.current();
        checks::check_size(&s.limits, env.payload_size)?;
        check_home(&s.here, &dir, &env.sender)?;
        checks::check_fresh(&s.limits, exchange_wire::now_ms(), env.created_at_ms)?;
        checks::check_active(&dir, &env.sender)?;
        let facts = RequestFacts::from_envelope(env)?;
        let catalog = self.compiled_catalog()?;
        let topic = catalog
            .topic(&facts.topic)
            .ok_or_else(|| Refusal::new("unknown-topic", 422, format!("topic {} is not in the catalog: see GET /v1/catalog", facts.topic)))?;
        if facts.owner != topic.owner {
            return Err(Refusal::malformed(format!("topic {} is owned by {}: address the request to it, not to {}", topic.name, topic.owner, facts.owner)));
        }
        if topic.sharing == Condition::NotShared {
            return Err(Refusal::new(
                "not-shared",
                403,
                format!("topic {} is not shared (catalog sharing condition not-shared): {} grants no subscriptions to it", topic.name, topic.owner),
            ));
        }
        if env.sender == topic.owner {
            return Err(Refusal::malformed(format!("{} owns topic {}; an owner does not subscribe to its own topic", env.sender, topic.name)));
        }
        let held = s.store.sharing().local_subscriptions(env.sender.as_str()).await?;
        if let Some(s) = held.iter().find(|s| s.topic == topic.name && s.state != "refused") {
            return Err(Refusal::new(
                "conflict",
                409,
                format!("{} already has a subscription to {} ({}); read or replay it instead of asking again", env.sender, topic.name, s.state),
            ));
        }
        let (signed, payload) = m.decode()?;
        verify_unit(&dir, &signed, &[env.created_at_ms, exchange_wire::now_ms()])?;
        let ctx = s.context(&dir);
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
        let outcome = s.committer.commit(vec![WriteJob::Custody(c)]).await.map_err(|e| {
            s.metrics.storage_errors.with_label_values(&["commit"]).inc();
            tracing::error!(error = %e, "cannot store a subscription request");
            Refusal { code: "storage", message: "the node could not store the request; try again later".into(), status: 503, transient: true }
        })?;
        if outcome.first() == Some(&JobOutcome::Stored) {
            s.metrics.accepted.with_label_values(&[Kind::SubscriptionRequest.as_str(), "agency"]).inc();
            done.committed(&summary);
        }
        view(&row, None)
    }

    /// Decides every pending request that the catalog decides by itself (open: granted;
    /// not-shared, unknown topic or another owner: refused). Runs after a request arrives, when a
    /// catalog comes into force, and at start.
    pub(crate) async fn process_subscription_requests(&self, s: &Services, done: &impl CommitDone) {
        let Some(catalog) = self.catalog() else { return };
        let _numbering = self.numbering().await;
        let rows = match s.store.sharing().owner_subscriptions(None).await {
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
                    Condition::Open => Some((true, None)),
                    Condition::NotShared => Some((false, Some(format!("topic {} is not shared (catalog sharing condition not-shared)", t.name)))),
                    Condition::Approval => None,
                },
            };
            if let Some((grant, reason)) = verdict
                && let Err(r) = self.decide_locked(s, done, &row, grant, reason, "catalog").await
            {
                tracing::warn!(topic = %row.topic, subscriber = %row.subscriber, reason = %r.message, "cannot decide a subscription request");
            }
        }
    }

    /// `POST /v1/units/{owner}/subscribers:decide`: the owner unit grants or refuses a request.
    pub async fn decide_subscription(
        &self,
        s: &Services,
        done: &impl CommitDone,
        caller: &Caller,
        owner: &UnitAddress,
        req: DecideRequest,
    ) -> Result<SubscriptionView, Refusal> {
        caller.may_act_for(owner)?;
        check_home(&s.here, &s.dir.current(), owner)?;
        self.decide_pending(s, done, Some(owner), req, owner.as_str()).await
    }

    /// Admin API `POST /admin/v1/subscriptions:decide`: an operator of the owner's node decides.
    pub async fn admin_decide_subscription(&self, s: &Services, done: &impl CommitDone, req: DecideRequest) -> Result<SubscriptionView, Refusal> {
        let detail = format!("{} for {}: {}", req.topic, req.subscriber, if req.grant { "granted" } else { "refused" });
        let view = self.decide_pending(s, done, None, req, "operator").await?;
        s.admin_record("subscription-decide", detail).await?;
        Ok(view)
    }

    async fn decide_pending(
        &self,
        s: &Services,
        done: &impl CommitDone,
        owner: Option<&UnitAddress>,
        req: DecideRequest,
        decided_by: &str,
    ) -> Result<SubscriptionView, Refusal> {
        let _numbering = self.numbering().await;
        let rows = s.store.sharing().owner_subscriptions(owner.map(|o| o.as_str())).await?;
        let row = rows.into_iter().find(|r| r.topic == req.topic && r.subscriber == req.subscriber.as_str()).ok_or_else(|| {
            Refusal::new("not-found", 404, format!("no subscription request of {} to {} is held at node {}", req.subscriber, req.topic, s.here))
        })?;
        if row.state != "pending" {
            return Err(Refusal::new("conflict", 409, format!("the subscription of {} to {} is {} already", req.subscriber, req.topic, row.state)));
        }
        self.decide_locked(s, done, &row, req.grant, req.reason, decided_by).await
    }

    /// Grants or refuses a pending subscription; a grant sends the backlog from the requested start
    /// in the same commit. The caller holds `sharing_lock`.
    async fn decide_locked(
        &self,
        s: &Services,
        done: &impl CommitDone,
        row: &SubscriptionRow,
        grant: bool,
        reason: Option<String>,
        decided_by: &str,
    ) -> Result<SubscriptionView, Refusal> {
        let subscriber: UnitAddress = row.subscriber.parse().map_err(|_| corrupt("subscriber address"))?;
        let owner: UnitAddress = row.owner.parse().map_err(|_| corrupt("owner address"))?;
        let dir = s.dir.current();
        let ctx = s.context(&dir);
        let (first_seq, mut messages, mut summaries, backfill) = if grant {
            let g = grant_start(s, &ctx, row, &subscriber).await?;
            (Some(g.first), g.messages, g.summaries, g.backfill)
        } else {
            (None, Vec::new(), Vec::new(), None)
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
        let (c, summary) = take_decision(s, &ctx, &decision)?;
        messages.push(c);
        summaries.push(summary);
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
        commit_decision(s, done, job, state, &summaries, backfill.is_some()).await?;
        let mut decided = row.clone();
        decided.state = state.into();
        decided.first_seq = first_seq;
        decided.decided_at_ms = Some(now);
        decided.decided_by = Some(decided_by.into());
        decided.reason = reason;
        view(&decided, None)
    }
}

/// The decision, signed by this node and taken into custody for the subscriber.
fn take_decision(s: &Services, ctx: &Context<'_>, decision: &Decision) -> Result<(Custody, Summary), Refusal> {
    let (envelope, payload) = decision.envelope(&s.here);
    let signed = envelope.sign(&s.node_key());
    custody::take(ctx, Incoming { signed, payload, recipients: vec![decision.subscriber.clone()], from: None, hops: vec![] })
}

/// Commits a decision; once it is stored, counts it and hands its deliveries (and the backlog
/// left, if any) on.
async fn commit_decision(
    s: &Services,
    done: &impl CommitDone,
    job: SharingJob,
    state: &str,
    summaries: &[Summary],
    backlog_left: bool,
) -> Result<(), Refusal> {
    let outcome = s.committer.commit(vec![WriteJob::Sharing(job)]).await.map_err(|e| {
        s.metrics.storage_errors.with_label_values(&["commit"]).inc();
        tracing::error!(error = %e, "cannot store a subscription decision");
        Refusal { code: "storage", message: "the node could not store the decision; try again later".into(), status: 503, transient: true }
    })?;
    match outcome.into_iter().next() {
        Some(JobOutcome::Stored) => {
            s.metrics.subscription_decisions.with_label_values(&[state]).inc();
            for summary in summaries {
                done.committed(summary);
            }
            if backlog_left {
                done.backlog_left();
            }
            Ok(())
        }
        Some(JobOutcome::Conflict(reason)) => Err(Refusal::new("conflict", 409, reason)),
        _ => Err(Refusal::new("storage", 500, "unexpected outcome of a decision")),
    }
}

/// Where a granted subscription starts, and the first page of its backlog.
struct GrantStart {
    first: i64,
    /// The first page's deliveries, taken into custody with the grant.
    messages: Vec<Custody>,
    summaries: Vec<Summary>,
    /// The rest of the backlog, if any: the next record and the last one.
    backfill: Option<(i64, i64)>,
}

/// Where `row`'s grant starts (its `start`, against the topic's numbers), with the first page of the
/// backlog, which goes with the grant; the rest follows a page per commit (`send_backlogs`), so a
/// long history never holds the numbering lock for long.
async fn grant_start(s: &Services, ctx: &Context<'_>, row: &SubscriptionRow, subscriber: &UnitAddress) -> Result<GrantStart, Refusal> {
    let shared = s.store.sharing();
    let head = shared.topic_head(&row.topic).await?;
    let first = match row.start.parse::<StartFrom>().unwrap_or_default() {
        StartFrom::Beginning => 1,
        StartFrom::Seq(n) => (n as i64).max(1),
        StartFrom::Time(t) => shared.topic_seq_at(&row.topic, t as i64).await?.unwrap_or(head + 1),
        StartFrom::Now => head + 1,
    };
    if first > head {
        return Ok(GrantStart { first, messages: Vec::new(), summaries: Vec::new(), backfill: None });
    }
    let last = head.min(first + BACKFILL_PAGE - 1);
    let (messages, summaries, last) = backfill::backlog_page(s, ctx, &row.topic, subscriber, first, first, last).await?;
    Ok(GrantStart { first, messages, summaries, backfill: (last < head).then_some((last + 1, head)) })
}
