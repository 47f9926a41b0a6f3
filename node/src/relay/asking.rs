//! Queries (查询核验): a unit asks an authoritative unit a question and gets an answer signed by
//! that unit, or a timeout at the deadline (`exchange_wire::query`, docs/protocol.md, section 7.7).
//!
//! A query travels like a document: custody at every hop, a delivery report back, its state tracked
//! at the asker's node in the per-recipient table. The asked unit answers from its inbox with an
//! answer it signs; its node takes the answer only up to the deadline (by its clock) and flips the
//! inbox entry to `answered` in the same commit, so a query is answered once. At the asker's node the
//! first of the answer and the deadline decides: a timer fires at each pending deadline and records
//! `timed-out` unless the answer came first; an answer arriving later is kept (inbox, audit log) but
//! does not change the outcome. The asker is never left with silence.

use std::time::Duration;

use exchange_wire::api::{QueryStatus, RecipientState, SignedMessage, SubmitResponse};
use exchange_wire::{Envelope, Kind, MessageId, SignedEnvelope, UnitAddress, query};

pub use super::deadlines::Queries;
use super::access::Caller;
use super::custody::event;
use super::ingress::{Candidate, Ingress, SignFor};
use super::refused::Refused;
use super::refusal::Refusal;
use crate::directory::Directory;
use crate::storage::{JobOutcome, Record, TrackingRow, WriteJob};
use crate::relay::ingress::checks;


fn is_outcome(state: RecipientState) -> bool {
    matches!(state, RecipientState::Answered | RecipientState::TimedOut | RecipientState::Failed)
}

impl Ingress<'_> {
    /// A query from an agency: checked, verified, committed; its deadline is watched from then on.
    pub async fn ask(&self, caller: &Caller, m: SignedMessage) -> Result<SubmitResponse, Refusal> {
        let dir = self.services.dir.current();
        let id = m.envelope.message_id();
        let decoded = self.decode_query(&dir, caller, &m);
        let deadline = decoded.as_ref().ok().map(|(_, d)| *d);
        let result = self.verify_and_take(&dir, None, vec![decoded.map(|(c, _)| c)], vec![None]).await.pop().expect("one result");
        match result {
            Ok(outcome) => {
                if let (JobOutcome::Stored, Some(d)) = (&outcome, deadline) {
                    self.queries.watch(d, id);
                }
                Ok(SubmitResponse { id, duplicate: outcome == JobOutcome::Duplicate, accepted_at_ms: exchange_wire::now_ms() })
            }
            Err(r) => {
                self.services.refused("agency", &[Refused { id: Some(id), kind: Some(Kind::Query), refusal: &r }]).await;
                Err(r)
            }
        }
    }

    /// Checks a query from an agency up to (not including) the signature; its deadline.
    fn decode_query(&self, dir: &Directory, caller: &Caller, m: &SignedMessage) -> Result<(Candidate, u64), Refusal> {
        let env = &m.envelope;
        if env.kind != Kind::Query {
            return Err(Refusal::new("unsupported-kind", 400, format!("this endpoint takes queries, not a {}", env.kind)));
        }
        checks::check_sender(&self.services.here, &self.services.limits, exchange_wire::now_ms(), dir, caller, env)?;
        checks::check_size(&self.services.limits, env.payload_size)?;
        let (deadline, _topic) = query::facts(env).map_err(|e| Refusal::malformed(e.to_string()))?;
        let now = exchange_wire::now_ms();
        if deadline <= now {
            return Err(Refusal::malformed("the query's deadline (query.deadline) has already passed: give a time in the future"));
        }
        let longest = self.services.limits.max_query_secs * 1000;
        if deadline - now > longest {
            return Err(Refusal::malformed(format!(
                "the query's deadline is {} s away; this node takes queries due within {} s (limits.max_query_secs): send a document for questions that can wait",
                (deadline - now) / 1000,
                self.services.limits.max_query_secs
            )));
        }
        let (signed, payload) = m.decode()?;
        let asked = signed.envelope.to[0].clone();
        crate::routing::plan(dir, &self.services.here, std::slice::from_ref(&asked))?;
        if !dir.is_active(&asked) {
            return Err(Refusal::new("recipient-unavailable", 422, format!("unit {asked} is suspended or revoked; it cannot be asked")));
        }
        self.access.check(dir, &signed.envelope.sender, &asked, Kind::Query)?;
        Ok((Candidate { signed, payload, recipients: vec![asked], hops: vec![] }, deadline))
    }

    /// The asked unit's answer to query `query_id` in its inbox, signed by the unit: taken only up
    /// to the query's deadline, and only once.
    pub async fn answer(
        &self,
        caller: &Caller,
        unit: &UnitAddress,
        query_id: &MessageId,
        m: SignedMessage,
    ) -> Result<SubmitResponse, Refusal> {
        let dir = self.services.dir.current();
        let id = m.envelope.message_id();
        let checked = match caller.may_act_for(unit) {
            Ok(()) => self.check_answer(&dir, unit, query_id, &m).await,
            Err(r) => Err(r),
        };
        let settle = Some(SignFor { unit: unit.clone(), message_id: *query_id, state: "answered" });
        let result = self.verify_and_take(&dir, None, vec![checked], vec![settle]).await.pop().expect("one result");
        let result = match result {
            Ok(JobOutcome::Conflict(reason)) => Err(Refusal::new("conflict", 409, reason)),
            Ok(outcome) => Ok(SubmitResponse { id, duplicate: outcome == JobOutcome::Duplicate, accepted_at_ms: exchange_wire::now_ms() }),
            Err(r) => Err(r),
        };
        if let Err(r) = &result {
            self.services.refused("agency", &[Refused { id: Some(id), kind: Some(Kind::Answer), refusal: r }]).await;
        }
        result
    }

    async fn check_answer(&self, dir: &Directory, unit: &UnitAddress, query_id: &MessageId, m: &SignedMessage) -> Result<Candidate, Refusal> {
        if dir.home_of(unit).as_ref() != Some(&self.services.here) {
            return Err(Refusal::new("not-found", 404, format!("unit {unit} is not hosted on node {}", self.services.here)));
        }
        let env = &m.envelope;
        if env.kind != Kind::Answer {
            return Err(Refusal::new("unsupported-kind", 400, format!("this endpoint takes answers, not a {}", env.kind)));
        }
        if &env.sender != unit {
            return Err(Refusal::new("wrong-signer", 403, format!("the answer is from {} but the inbox is {unit}'s", env.sender)));
        }
        let answered = query::answered(env).map_err(|e| Refusal::malformed(e.to_string()))?;
        if &answered != query_id {
            return Err(Refusal::malformed(format!("the answer is for query {answered}, not {query_id}")));
        }
        checks::check_fresh(&self.services.limits, exchange_wire::now_ms(), env.created_at_ms)?;
        checks::check_active(dir, unit)?;
        checks::check_size(&self.services.limits, env.payload_size)?;
        let original = self.inbox_original(unit, query_id, "query").await?;
        if original.kind != Kind::Query {
            return Err(Refusal::new("unsupported-kind", 400, format!("message {query_id} is a {}; only queries are answered", original.kind)));
        }
        if env.to != [original.sender.clone()] {
            return Err(Refusal::malformed(format!("the answer goes to the asker {}", original.sender)));
        }
        let (deadline, _) = query::facts(&original).map_err(|e| Refusal::malformed(e.to_string()))?;
        if exchange_wire::now_ms() > deadline {
            return Err(Refusal::new(
                "deadline-passed",
                409,
                format!(
                    "query {query_id} was due at {} UTC; its asker has been told it timed out, so no answer is taken",
                    exchange_wire::time::format_utc_ms(deadline)
                ),
            ));
        }
        let (signed, payload) = m.decode()?;
        Ok(Candidate { signed, payload, recipients: vec![original.sender], hops: vec![] })
    }

}

/// The queries part's own work: it reads, commits and counts through the shared services it holds,
/// and needs nothing else of the engine.
impl Queries {
    /// The state of a query asked from this node, waiting up to `wait` for its outcome.
    pub async fn query_status(&self, caller: &Caller, id: &MessageId, wait: Duration) -> Result<QueryStatus, Refusal> {
        let mut changes = self.services.inbox_changes.subscribe();
        let until = tokio::time::Instant::now() + wait.min(Duration::from_millis(self.services.api_max_wait_ms));
        loop {
            let status = self.query_status_now(caller, id).await?;
            if is_outcome(status.state) {
                return Ok(status);
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(until) => return Ok(status),
            }
        }
    }

    async fn query_status_now(&self, caller: &Caller, id: &MessageId) -> Result<QueryStatus, Refusal> {
        let services = &self.services;
        let not_here = || Refusal::new("not-found", 404, format!("query {id} was not asked from a unit of node {}", services.here));
        let stored = services.store.message(&id.0).await?.ok_or_else(not_here)?;
        let env = Envelope::from_canonical_bytes(&stored.header).map_err(|_| not_here())?;
        if env.kind != Kind::Query {
            return Err(not_here());
        }
        caller.may_act_for(&env.sender).map_err(|_| not_here())?;
        let t = services.store.tracking(&id.0).await?.into_iter().next().ok_or_else(not_here)?;
        let (deadline_ms, topic) = query::facts(&env).map_err(|_| not_here())?;
        let state = super::reads::parse_state(&t.state);
        let answer = match (state, t.receipt_id) {
            (RecipientState::Answered, Some(answer_id)) => match services.store.message(&answer_id.as_slice().try_into().map_err(|_| not_here())?).await? {
                Some(a) => {
                    let signature: [u8; 64] = a.signature.as_slice().try_into().map_err(|_| not_here())?;
                    let signed = SignedEnvelope::from_canonical(a.header, signature).map_err(|_| not_here())?;
                    Some(SignedMessage::new(&signed, &a.payload))
                }
                None => None,
            },
            _ => None,
        };
        Ok(QueryStatus {
            id: *id,
            asked: env.to[0].clone(),
            topic,
            deadline_ms,
            state,
            node: t.node.parse().unwrap_or_else(|_| services.here.clone()),
            at_ms: t.at_ms.max(0) as u64,
            detail: t.detail,
            answer,
        })
    }

    /// Loads the pending queries' deadlines and records `timed-out` as each passes without answer.
    pub(crate) async fn watch_deadlines(self) {
        match self.services.store.open_queries().await {
            Ok(open) => {
                for (id, header) in open {
                    if let Ok((deadline, _)) = Envelope::from_canonical_bytes(&header).map_err(|_| ()).and_then(|e| query::facts(&e).map_err(|_| ())) {
                        self.watch(deadline, exchange_wire::Digest(id));
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot load the pending queries; their timeouts will not be recorded until a restart"),
        }
        loop {
            let next = self.next();
            let now = exchange_wire::now_ms();
            match next {
                Some((due, id)) if due <= now => {
                    self.pop();
                    while let Err(e) = self.time_out(id, due).await {
                        tracing::error!(error = %e, "cannot record a query timeout; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Some((due, _)) => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(due - now)) => {}
                        _ = self.changed() => {}
                    }
                }
                None => self.changed().await,
            }
        }
    }

    /// Records that query `id` timed out at `due`, unless it has an outcome already.
    async fn time_out(&self, id: [u8; 32], due: u64) -> Result<(), String> {
        let services = &self.services;
        let open: Vec<_> = services.store.tracking(&id).await.map_err(|e| e.to_string())?.into_iter().filter(|t| !is_outcome(super::reads::parse_state(&t.state))).collect();
        if open.is_empty() {
            return Ok(());
        }
        let now = exchange_wire::now_ms();
        let mut r = Record::default();
        for t in open {
            let detail = format!("no answer by the deadline, {} UTC", exchange_wire::time::format_utc_ms(due));
            let unit: Option<UnitAddress> = t.recipient.parse().ok();
            r.events.push(event(id, now, "timed-out", unit.as_ref(), None, Some(detail.clone())));
            r.tracking.push(TrackingRow {
                message_id: id,
                recipient: t.recipient,
                state: RecipientState::TimedOut,
                node: services.here.to_string(),
                at_ms: now as i64,
                detail: Some(detail),
                receipt_id: None,
            });
        }
        services.committer.commit(vec![WriteJob::Record(r)]).await.map_err(|e| e.to_string())?;
        services.metrics.queries.with_label_values(&["timed-out"]).inc();
        services.inbox_changed();
        Ok(())
    }
}
