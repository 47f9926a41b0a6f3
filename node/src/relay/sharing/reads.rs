//! What units and operators read: subscriptions and subscribers, a subscriber's ordered stream of
//! records (only the run without gaps) and its acknowledgements. This work needs no other part and
//! none of the sharing part's locks: the part's methods take the shared services (`&Services`).

use std::time::Duration;

use exchange_wire::sharing::{
    RecordsResponse,
    SubscriptionView, SubscriptionsResponse,
};
use exchange_wire::UnitAddress;

use crate::relay::access::Caller;
use crate::relay::refusal::Refusal;
use crate::relay::services::Services;
use crate::storage::sharing::{SharingJob, SubscriptionRow};
use crate::storage::WriteJob;
use super::*;

impl Sharing {
    /// `GET /v1/units/{owner}/subscribers`, or every subscription held here for the admin API.
    pub async fn subscribers(&self, services: &Services, caller: Option<&Caller>, owner: Option<&UnitAddress>) -> Result<SubscriptionsResponse, Refusal> {
        if let (Some(c), Some(o)) = (caller, owner) {
            c.may_act_for(o)?;
        }
        let rows = services.store.sharing().owner_subscriptions(owner.map(|o| o.as_str())).await?;
        Ok(SubscriptionsResponse { subscriptions: rows.iter().map(|r| view(r, None)).collect::<Result<_, _>>()? })
    }

    /// `GET /v1/units/{unit}/subscriptions`: the unit's subscriptions, with cursor and progress.
    pub async fn subscriptions(&self, services: &Services, caller: &Caller, unit: &UnitAddress) -> Result<SubscriptionsResponse, Refusal> {
        caller.may_act_for(unit)?;
        check_home(&services.here, &services.dir.current(), unit)?;
        let shared = services.store.sharing();
        let mut out = Vec::new();
        for r in shared.local_subscriptions(unit.as_str()).await? {
            let received = match r.first_seq {
                Some(f) => Some(shared.data_contiguous_end(unit.as_str(), &r.topic, f).await?),
                None => None,
            };
            out.push(view(&r, received)?);
        }
        Ok(SubscriptionsResponse { subscriptions: out })
    }

    pub(super) async fn local_subscription(&self, services: &Services, unit: &UnitAddress, topic: &str) -> Result<SubscriptionRow, Refusal> {
        services.store.sharing().local_subscriptions(unit.as_str()).await?.into_iter().find(|s| s.topic == topic).ok_or_else(|| {
            Refusal::new("not-found", 404, format!("{unit} has no subscription to {topic}; request one with POST /v1/subscriptions"))
        })
    }

    // ---- Subscribers' streams ----

    /// `GET /v1/units/{unit}/subscriptions/{topic}/records`: records after `after` (default: the
    /// cursor) in sequence order, stopping before the first one still missing. Waits up to `wait`
    /// for at least one.
    // The request's own parameters, plus the services: grouping them would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub async fn records(
        &self,
        services: &Services,
        caller: &Caller,
        unit: &UnitAddress,
        topic: &str,
        after: Option<u64>,
        limit: u32,
        wait: Duration,
    ) -> Result<RecordsResponse, Refusal> {
        caller.may_act_for(unit)?;
        check_home(&services.here, &services.dir.current(), unit)?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = services.inbox_changes.subscribe();
        let shared = services.store.sharing();
        loop {
            changes.borrow_and_update();
            let sub = self.local_subscription(services, unit, topic).await?;
            if sub.state == "refused" {
                return Err(Refusal::new(
                    "subscription-refused",
                    403,
                    format!("the subscription of {unit} to {topic} was refused: {}", sub.reason.as_deref().unwrap_or("no reason given")),
                ));
            }
            let mut items = Vec::new();
            let mut last = after.map(|a| a as i64).unwrap_or(sub.cursor);
            let mut held_back = 0;
            if let Some(first) = sub.first_seq {
                // Only the run without gaps from the subscription's first record is handed out, also
                // to a reader asking from further on: nothing past a missing record, ever.
                let end = shared.data_contiguous_end(unit.as_str(), topic, first).await?;
                last = last.max(first - 1);
                let page_bytes = services.limits.page_max_bytes as usize;
                for r in shared.data_records(unit.as_str(), topic, last, limit.clamp(1, 1000), page_bytes).await? {
                    if r.seq != last + 1 || r.seq > end {
                        break;
                    }
                    last = r.seq;
                    items.push(data_item(r)?);
                }
                held_back = shared.data_count_after(unit.as_str(), topic, end.max(first - 1)).await?;
            }
            if !items.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(RecordsResponse {
                    unit: unit.clone(),
                    topic: topic.to_string(),
                    items,
                    next_after: last.max(0) as u64,
                    cursor: sub.cursor.max(0) as u64,
                    held_back: if held_back > 0 { held_back as u64 } else { 0 },
                });
            }
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                continue;
            }
        }
    }

    /// `POST /v1/units/{unit}/subscriptions/{topic}/ack`: the subscriber has processed every record
    /// up to `seq`; its cursor moves there (never back, never past what arrived without gaps).
    pub async fn ack(&self, services: &Services, caller: &Caller, unit: &UnitAddress, topic: &str, seq: u64) -> Result<SubscriptionView, Refusal> {
        caller.may_act_for(unit)?;
        check_home(&services.here, &services.dir.current(), unit)?;
        let sub = self.local_subscription(services, unit, topic).await?;
        let shared = services.store.sharing();
        let end = match sub.first_seq {
            Some(f) => shared.data_contiguous_end(unit.as_str(), topic, f).await?,
            None => 0,
        };
        if seq as i64 > end {
            return Err(Refusal::new(
                "conflict",
                409,
                format!("{unit} has received {topic} up to #{end} with none missing; it cannot acknowledge #{seq}"),
            ));
        }
        let events = vec![sharing_event(None, "acknowledged", Some(unit.to_string()), format!("{topic} up to #{seq}"))];
        services.committer
            .commit(vec![WriteJob::Sharing(SharingJob::Ack { unit: unit.to_string(), topic: topic.to_string(), seq: seq as i64, events })])
            .await
            .map_err(|e| {
                services.metrics.storage_errors.with_label_values(&["commit"]).inc();
                tracing::error!(error = %e, "cannot store a cursor");
                Refusal { code: "storage", message: "the node could not store the cursor; try again later".into(), status: 503, transient: true }
            })?;
        let mut after = sub;
        after.cursor = after.cursor.max(seq as i64);
        view(&after, Some(end))
    }
}
