//! Base-data sharing (数据共享交换) in the engine: the catalog in force, publishing records at the
//! owner's home node, subscription requests and decisions, and subscribers' ordered streams.
//!
//! * **Publish**: the owner unit signs a `data-record`; its home node checks signature, ownership
//!   (一数一源) and the topic's schema, numbers it within its topic, appends it to the topic log and,
//!   in the same commit, wraps it in one node-signed `data-delivery` addressed to every granted
//!   subscriber. That delivery is an ordinary message from then on: routed once per link, fanned out
//!   at the last shared node, deduplicated by its content-derived id.
//! * **Order**: the owner's home node is the one place that numbers a topic, and it numbers records
//!   one at a time under a lock, so every subscriber sees the same sequence. The subscriber's home
//!   node stores what arrives by sequence number and hands out only the run without gaps: a record
//!   whose predecessor has not arrived is held back, never skipped, never repeated.
//! * **Subscriptions** are requested by a unit (signed `subscription-request` to the owner),
//!   decided at the owner's home node (at once for `open` and `not-shared` topics, by the owner unit
//!   or an operator for `approval`), and answered with a node-signed `subscription-decision`. A
//!   grant carries the backlog from the requested start in the same commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use exchange_wire::api::{AdminActionResponse, SignedMessage};
use exchange_wire::sharing::{
    Catalog, DataItem, Decision, DecideRequest, Delivery, PublishResponse, RecordFacts, RecordsResponse, RequestFacts, Sharing, StartFrom,
    SubscriptionView, SubscriptionsResponse,
};
use exchange_wire::{Digest, Kind, SignedEnvelope, UnitAddress};

use super::access::Caller;
use super::custody::{self, Context, Incoming, Summary};
use super::{Engine, Refusal, Refused};
use crate::directory::Directory;
use crate::directory::segments::SegmentSet;
use crate::sharing::CompiledCatalog;
use crate::storage::sharing::{DataInboxRow, SharingJob, SharingRow, SubscriptionRow, TopicLogRow};
use crate::storage::{Custody, EventRow, JobOutcome, WriteJob};

fn sharing_event(id: Option<[u8; 32]>, event: &'static str, unit: Option<String>, detail: String) -> EventRow {
    EventRow { at_ms: exchange_wire::now_ms() as i64, category: "sharing", message_id: id, event, unit, peer: None, detail: Some(detail) }
}

fn corrupt(what: &str) -> Refusal {
    tracing::error!(what, "stored sharing data is unreadable");
    Refusal::new("storage", 500, format!("stored {what} is unreadable"))
}

/// A stored record (canonical header, signature, payload) as the publisher signed it.
fn signed_message(header: &[u8], signature: &[u8], payload: &[u8]) -> Result<(SignedEnvelope, SignedMessage), Refusal> {
    let sig: [u8; 64] = signature.try_into().map_err(|_| corrupt("record signature"))?;
    let signed = SignedEnvelope::from_canonical(header.to_vec(), sig).map_err(|_| corrupt("record"))?;
    let message = SignedMessage::new(&signed, payload);
    Ok((signed, message))
}

/// Strict verification of a unit's signature against the keys the directory lists for it, valid
/// at every time in `at_ms`.
fn verify_unit(dir: &Directory, signed: &SignedEnvelope, at_ms: &[u64]) -> Result<(), Refusal> {
    let sender = &signed.envelope.sender;
    let keys = dir.signing_keys(sender, at_ms);
    if keys.iter().any(|k| signed.verify(&k.0).is_ok()) {
        return Ok(());
    }
    if dir.home_of(sender).is_none() {
        return Err(Refusal::new("unknown-sender", 403, format!("sender {sender} is not in the directory, so its signature cannot be checked")));
    }
    if dir.signing_keys(sender, &[]).iter().any(|k| signed.verify(&k.0).is_ok()) {
        return Err(Refusal::new(
            "key-not-valid",
            403,
            format!("the envelope is signed with a key of {sender} that was revoked or has expired; sign with the unit's current key"),
        ));
    }
    Err(Refusal::new("bad-signature", 403, format!("the signature does not verify against {sender}'s key: the envelope was forged or altered")))
}

/// The custody rules for sharing envelopes reaching the home node of their recipients (called by
/// `custody::deliver_here`). Plain checks and rows, no I/O.
pub(crate) fn deliver_here(ctx: &Context, m: &Incoming, units: &[UnitAddress], c: &mut Custody, summary: &mut Summary) -> Result<(), Refusal> {
    let env = &m.signed.envelope;
    let id = m.signed.id.0;
    let now = ctx.now_ms;
    match env.kind {
        Kind::DataDelivery => {
            let d = Delivery::from_envelope(env, &m.payload)?;
            let (record, payload) = d.record.decode()?;
            let publisher = &record.envelope.sender;
            // A node vouches only for records of its own units: the delivery must come from the
            // publisher's home node, and the record must carry the publisher's own signature.
            if ctx.dir.home_of(publisher).as_ref().map(|h| h.as_str()) != Some(env.sender.node_part()) {
                return Err(Refusal::new(
                    "forged-delivery",
                    403,
                    format!("a record of {publisher} delivered by {}, which is not its home node", env.sender),
                ));
            }
            verify_unit(ctx.dir, &record, &[record.envelope.created_at_ms]).map_err(|r| {
                Refusal::new("bad-signature", 403, format!("the record inside data-delivery {} does not verify: {}", m.signed.id, r.message))
            })?;
            for u in units {
                c.sharing.push(SharingRow::Delivered(DataInboxRow {
                    unit: u.to_string(),
                    topic: d.topic.clone(),
                    seq: d.seq as i64,
                    first_seq: d.first_seq[u] as i64,
                    delivery_id: id,
                    record_id: record.id.0,
                    subject: d.subject.clone(),
                    published_at_ms: d.published_at_ms as i64,
                    delivered_at_ms: now as i64,
                    header: record.bytes.clone(),
                    signature: record.signature.to_vec(),
                    payload: payload.clone(),
                }));
                c.events.push(custody::event(id, now, "delivered", Some(u), None, Some(format!("{} #{}", d.topic, d.seq))));
                summary.delivered.push(Kind::DataDelivery);
                summary.data_delivered.push(d.topic.clone());
                summary.latencies_ms.push(now.saturating_sub(record.envelope.created_at_ms));
            }
        }
        Kind::SubscriptionRequest => {
            let facts = RequestFacts::from_envelope(env)?;
            for u in units {
                c.sharing.push(SharingRow::Requested(SubscriptionRow {
                    topic: facts.topic.clone(),
                    subscriber: env.sender.to_string(),
                    owner: u.to_string(),
                    state: "pending".into(),
                    start: facts.from.to_string(),
                    first_seq: None,
                    cursor: 0,
                    request_id: id,
                    requested_at_ms: now as i64,
                    decided_at_ms: None,
                    decided_by: None,
                    reason: None,
                    backfill: None,
                }));
                c.events.push(custody::event(id, now, "subscription-requested", Some(u), None, Some(format!("{} by {}", facts.topic, env.sender))));
            }
            summary.sharing_requests += 1;
        }
        Kind::SubscriptionDecision => {
            let d = Decision::from_envelope(env, &m.payload)?;
            for u in units {
                c.sharing.push(SharingRow::Decided {
                    unit: u.to_string(),
                    topic: d.topic.clone(),
                    request_id: d.request_id.0,
                    state: d.decision.clone(),
                    first_seq: d.first_seq.map(|s| s as i64),
                    reason: d.reason.clone(),
                    decided_by: d.decided_by.clone(),
                    at_ms: now as i64,
                });
                // The decision lands in the unit's inbox too, so an agency long-polling its inbox
                // learns of it.
                c.inbox.push(crate::storage::InboxRow { unit: u.to_string(), message_id: id, delivered_at_ms: now as i64 });
                c.events.push(custody::event(id, now, "delivered", Some(u), None, Some(format!("{} {}", d.topic, d.decision))));
                summary.delivered.push(Kind::SubscriptionDecision);
            }
        }
        other => return Err(Refusal::new("unsupported-kind", 400, format!("{other} is not a data-sharing envelope"))),
    }
    Ok(())
}

impl Engine {
    // ---- Catalog ----

    /// Puts the catalog of `set` in force if it is newer than the one in force (called whenever the
    /// directory changes).
    pub(crate) fn apply_catalog(self: &Arc<Self>, set: &SegmentSet) {
        let Some(catalog) = set.catalog() else { return };
        if self.catalog.current().is_some_and(|c| c.catalog.version >= catalog.version) {
            return;
        }
        match CompiledCatalog::compile(catalog) {
            Ok(compiled) => {
                for t in &catalog.topics {
                    self.metrics.data_published.with_label_values(&[t.name.as_str()]).inc_by(0);
                    self.metrics.data_delivered.with_label_values(&[t.name.as_str()]).inc_by(0);
                }
                self.metrics.catalog_version.set(catalog.version as i64);
                self.catalog.replace(Arc::new(compiled));
                tracing::info!(version = catalog.version, topics = catalog.topics.len(), "data-sharing catalog in force");
                // Requests that waited for the catalog can be decided now.
                let engine = self.clone();
                tokio::spawn(async move { engine.process_subscription_requests().await });
            }
            Err(e) => tracing::error!(error = %e, "the catalog held does not compile; keeping the previous one"),
        }
    }

    /// Root only: signs the catalog seed file if no catalog, or an older one, is held.
    pub(crate) async fn publish_catalog_seed(self: &Arc<Self>) -> anyhow::Result<()> {
        let Some(path) = &self.directory_cfg.catalog_seed else { return Ok(()) };
        if !self.is_root() {
            anyhow::bail!("directory.catalog_seed is for the root node only: this node's key is not the pinned root_key");
        }
        let catalog = crate::sharing::catalog_from_file(path).map_err(anyhow::Error::msg)?;
        if self.segments.lock().await.catalog().is_some_and(|c| c.version >= catalog.version) {
            return Ok(());
        }
        if let Some(Err(e)) = self.publish(exchange_wire::directory::Segment::Catalog(catalog)).await.first() {
            anyhow::bail!("cannot sign the catalog seed {}: {}", path.display(), e.reason);
        }
        Ok(())
    }

    /// The catalog in force, if any.
    pub fn catalog_view(&self) -> Result<Catalog, Refusal> {
        self.catalog
            .current()
            .map(|c| c.catalog.clone())
            .ok_or_else(|| Refusal::new("not-found", 404, "this node holds no data-sharing catalog yet; the root publishes it (exchange-admin catalog publish)"))
    }

    /// `exchange-admin catalog publish`: the root signs a new version of the catalog.
    pub async fn admin_publish_catalog(self: &Arc<Self>, catalog: Catalog) -> Result<AdminActionResponse, Refusal> {
        if !self.is_root() {
            return Err(Refusal::new("conflict", 409, "only the root node signs the catalog: run this against the root node's admin API"));
        }
        CompiledCatalog::compile(&catalog).map_err(|e| Refusal::malformed(format!("the catalog is refused: {e}")))?;
        if let Some(held) = self.segments.lock().await.catalog()
            && held.version >= catalog.version
        {
            return Err(Refusal::new(
                "conflict",
                409,
                format!("the catalog held is at version {}; publish version {} or higher", held.version, held.version + 1),
            ));
        }
        let (version, topics) = (catalog.version, catalog.topics.len());
        match self.publish(exchange_wire::directory::Segment::Catalog(catalog)).await.pop() {
            Some(Ok(_)) => {
                self.admin_record("catalog-publish", format!("catalog version {version} with {topics} topics")).await?;
                Ok(AdminActionResponse { affected: topics as u64, message: format!("catalog version {version} signed and passed on to the network") })
            }
            Some(Err(e)) => Err(Refusal::new(if e.code == "storage" { "storage" } else { "conflict" }, 409, e.reason)),
            None => Err(Refusal::new("storage", 503, "nothing was signed")),
        }
    }

    fn compiled_catalog(&self) -> Result<Arc<CompiledCatalog>, Refusal> {
        self.catalog.current().ok_or_else(|| {
            Refusal::new("unknown-topic", 422, "this node holds no data-sharing catalog yet; try again once the root has published it")
        })
    }

    // ---- Publishing (owner's home node) ----

    /// `POST /v1/records`: the owner unit publishes a signed record.
    pub async fn publish_record(self: &Arc<Self>, caller: &Caller, m: SignedMessage) -> Result<PublishResponse, Refusal> {
        self.publish_records(caller, vec![m]).await.pop().expect("one result")
    }

    /// `POST /v1/records:batch`: several records, each checked on its own, the accepted ones numbered
    /// in order and committed together (one transaction instead of one per record). One result per
    /// record, in order.
    pub async fn publish_records(self: &Arc<Self>, caller: &Caller, messages: Vec<SignedMessage>) -> Vec<Result<PublishResponse, Refusal>> {
        let dir = self.dir.current();
        let mut results: Vec<Option<Result<PublishResponse, Refusal>>> = Vec::with_capacity(messages.len());
        let mut checked = Vec::new();
        let mut refused = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            match self.check_record(&dir, caller, m) {
                Ok(c) => {
                    checked.push((i, c));
                    results.push(None);
                }
                Err((r, masked)) => {
                    if !r.transient {
                        // Logs and the audit log get the message without record values (personal data).
                        refused.push((m.envelope.message_id(), Refusal { message: masked.unwrap_or_else(|| r.message.clone()), ..r.clone() }));
                    }
                    results.push(Some(Err(r)));
                }
            }
        }
        if !refused.is_empty() {
            let list: Vec<Refused> = refused.iter().map(|(id, r)| Refused { id: Some(*id), kind: Some(Kind::DataRecord), refusal: r }).collect();
            self.refused("agency", &list).await;
        }
        let positions: Vec<usize> = checked.iter().map(|(i, _)| *i).collect();
        let numbered = self.number_and_commit(&dir, checked.into_iter().map(|(_, c)| c).collect()).await;
        for (i, r) in positions.into_iter().zip(numbered) {
            results[i] = Some(r);
        }
        results.into_iter().map(|r| r.expect("every record has a result")).collect()
    }

    /// Every check of a record that needs no lock: token, kind, size, home node, freshness, status,
    /// topic, ownership, schema, subject and signature. A refusal comes with its masked message
    /// when it quotes record values.
    fn check_record(&self, dir: &Directory, caller: &Caller, m: &SignedMessage) -> Result<CheckedRecord, (Refusal, Option<String>)> {
        let plain = |r: Refusal| (r, None);
        let env = &m.envelope;
        caller.may_act_for(&env.sender).map_err(plain)?;
        if env.kind != Kind::DataRecord {
            return Err(plain(Refusal::new("unsupported-kind", 400, format!("POST /v1/records takes data-record envelopes, not {}", env.kind))));
        }
        self.check_size(env.payload_size).map_err(plain)?;
        self.check_home(dir, &env.sender).map_err(plain)?;
        self.check_fresh(env.created_at_ms).map_err(plain)?;
        self.check_active(dir, &env.sender).map_err(plain)?;
        let facts = RecordFacts::from_envelope(env).map_err(|e| plain(e.into()))?;
        let catalog = self.compiled_catalog().map_err(plain)?;
        let topic = catalog.topic(&facts.topic).ok_or_else(|| {
            plain(Refusal::new(
                "unknown-topic",
                422,
                format!("topic {} is not in the catalog (version {}): see GET /v1/catalog", facts.topic, catalog.catalog.version),
            ))
        })?;
        if topic.owner != env.sender {
            return Err(plain(Refusal::new(
                "not-owner",
                403,
                format!("topic {} is owned by {} (一数一源): only the owner publishes it, not {}", topic.name, topic.owner, env.sender),
            )));
        }
        let (signed, payload) = m.decode().map_err(|e| plain(e.into()))?;
        let record: serde_json::Value = serde_json::from_slice(&payload).map_err(|e| {
            plain(Refusal::new("schema-violation", 422, format!("the record is not JSON (line {}, column {}): a record is a JSON object matching the {} schema", e.line(), e.column(), topic.name)))
        })?;
        catalog.validate(&topic.name, &record).map_err(|v| (Refusal::new("schema-violation", 422, v.message), Some(v.masked)))?;
        if let Some(field) = &topic.subject_field
            && record.get(field).and_then(|v| v.as_str()) != Some(facts.subject.as_str())
        {
            return Err(plain(Refusal::new(
                "subject-mismatch",
                422,
                format!("the record's {field} differs from the signed data.subject: they name the same subject, so make them equal"),
            )));
        }
        verify_unit(dir, &signed, &[env.created_at_ms, exchange_wire::now_ms()]).map_err(plain)?;
        Ok(CheckedRecord { signed, payload, topic: topic.name.clone(), subject: facts.subject })
    }

    /// Numbers checked records within their topics, in the order given, and commits them with their
    /// deliveries in one transaction. Records already published (or twice in the list) are answered
    /// as duplicates and take no number.
    async fn number_and_commit(self: &Arc<Self>, dir: &Directory, records: Vec<CheckedRecord>) -> Vec<Result<PublishResponse, Refusal>> {
        if records.is_empty() {
            return Vec::new();
        }
        if let Err(closed) = self.health.intake() {
            return records.iter().map(|_| Err(Refusal::storage_full(&closed))).collect();
        }
        let storage = |e: crate::storage::StorageError| -> Refusal { e.into() };
        // The sequence numbers and the subscriber lists must not change between reading them and
        // committing.
        let _numbering = self.sharing_lock.lock().await;
        let shared = self.store.sharing();
        let ctx = self.context(dir);
        let now = exchange_wire::now_ms();
        let mut heads: BTreeMap<String, i64> = BTreeMap::new();
        let mut subscribers: BTreeMap<String, BTreeMap<UnitAddress, u64>> = BTreeMap::new();
        let mut seen = std::collections::HashMap::new();
        let mut answers: Vec<Option<Result<PublishResponse, Refusal>>> = Vec::with_capacity(records.len());
        let mut jobs = Vec::new();
        let mut pending = Vec::new();
        for (i, r) in records.into_iter().enumerate() {
            let id = r.signed.id;
            if let Some(&(seq, ref topic)) = seen.get(&id) {
                answers.push(Some(Ok(PublishResponse { id, topic: String::clone(topic), seq, duplicate: true, subscribers: 0 })));
                continue;
            }
            match shared.topic_record(&id.0).await {
                Ok(Some((topic, seq))) => {
                    answers.push(Some(Ok(PublishResponse { id, topic, seq: seq as u64, duplicate: true, subscribers: 0 })));
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    answers.push(Some(Err(storage(e))));
                    continue;
                }
            }
            if !heads.contains_key(&r.topic) {
                let head = match shared.topic_head(&r.topic).await {
                    Ok(h) => h,
                    Err(e) => {
                        answers.push(Some(Err(storage(e))));
                        continue;
                    }
                };
                let subs = match shared.granted_subscriptions(&r.topic).await {
                    Ok(s) => s,
                    Err(e) => {
                        answers.push(Some(Err(storage(e))));
                        continue;
                    }
                };
                let mut first_seq = BTreeMap::new();
                for s in &subs {
                    match (s.subscriber.parse::<UnitAddress>(), s.first_seq) {
                        // A subscriber that has left the directory is skipped; the others still get it.
                        (Ok(u), Some(f)) if dir.home_of(&u).is_some() => {
                            first_seq.insert(u, f as u64);
                        }
                        _ => tracing::warn!(subscriber = %s.subscriber, topic = %r.topic, "a granted subscriber is not in the directory; skipped"),
                    }
                }
                heads.insert(r.topic.clone(), head);
                subscribers.insert(r.topic.clone(), first_seq);
            }
            let first_seq = subscribers[&r.topic].clone();
            let recipients: Vec<UnitAddress> = first_seq.keys().cloned().collect();
            let seq = heads[&r.topic] + 1;
            let (delivery, summary) = if recipients.is_empty() {
                (None, Summary::default())
            } else {
                let d = Delivery {
                    topic: r.topic.clone(),
                    seq: seq as u64,
                    subject: r.subject.clone(),
                    published_at_ms: now,
                    first_seq,
                    record: SignedMessage::new(&r.signed, &r.payload),
                };
                let (envelope, dpayload) = d.envelope(&self.here, recipients.clone());
                let dsigned = envelope.sign(&self.node_key);
                match custody::take(&ctx, Incoming { signed: dsigned, payload: dpayload, recipients: recipients.clone(), from: None, hops: vec![] }) {
                    Ok((c, s)) => (Some(Box::new(c)), s),
                    Err(refusal) => {
                        answers.push(Some(Err(refusal)));
                        continue;
                    }
                }
            };
            heads.insert(r.topic.clone(), seq);
            seen.insert(id, (seq as u64, r.topic.clone()));
            let events = vec![sharing_event(
                Some(id.0),
                "published",
                Some(r.signed.envelope.sender.to_string()),
                format!("{} #{seq} to {} subscribers", r.topic, recipients.len()),
            )];
            let log = TopicLogRow {
                topic: r.topic.clone(),
                seq,
                record_id: id.0,
                subject: r.subject.clone(),
                publisher: r.signed.envelope.sender.to_string(),
                published_at_ms: now as i64,
                header: r.signed.bytes.clone(),
                signature: r.signed.signature.to_vec(),
                payload: r.payload,
            };
            jobs.push(WriteJob::Sharing(SharingJob::Publish { log, delivery, events }));
            pending.push((i, PublishResponse { id, topic: r.topic, seq: seq as u64, duplicate: false, subscribers: recipients.len() as u64 }, summary));
            answers.push(None);
        }
        if !jobs.is_empty() {
            match self.committer.commit(jobs).await {
                Ok(outcomes) => {
                    for ((i, answer, summary), outcome) in pending.into_iter().zip(outcomes) {
                        if outcome == JobOutcome::Stored {
                            self.metrics.data_published.with_label_values(&[answer.topic.as_str()]).inc();
                            self.metrics.accepted.with_label_values(&[Kind::DataRecord.as_str(), "agency"]).inc();
                            self.after_commit(&summary);
                            answers[i] = Some(Ok(answer));
                        } else {
                            // Not reachable under the lock; answered as what the store says it is.
                            answers[i] = Some(Ok(PublishResponse { duplicate: true, subscribers: 0, ..answer }));
                        }
                    }
                }
                Err(e) => {
                    self.metrics.storage_errors.with_label_values(&["commit"]).inc();
                    tracing::error!(error = %e, "cannot store published records");
                    for (i, _, _) in pending {
                        answers[i] = Some(Err(Refusal {
                            code: "storage",
                            message: "the node could not store the record; nothing was published, try again later".into(),
                            status: 503,
                            transient: true,
                        }));
                    }
                }
            }
        }
        answers.into_iter().map(|a| a.expect("every record has an answer")).collect()
    }

    fn check_home(&self, dir: &Directory, unit: &UnitAddress) -> Result<(), Refusal> {
        match dir.home_of(unit) {
            Some(home) if home == self.here => Ok(()),
            None => Err(Refusal::new("unknown-sender", 403, format!("unit {unit} is not in the directory"))),
            Some(home) => Err(Refusal::new("wrong-node", 403, format!("unit {unit} belongs to node {home}; use that node"))),
        }
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

    async fn check_and_request(self: &Arc<Self>, caller: &Caller, m: &SignedMessage) -> Result<SubscriptionView, Refusal> {
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
        let catalog = self.compiled_catalog()?;
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
        let Some(catalog) = self.catalog.current() else { return };
        let _numbering = self.sharing_lock.lock().await;
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

    async fn decide_pending(self: &Arc<Self>, owner: Option<&UnitAddress>, req: DecideRequest, decided_by: &str) -> Result<SubscriptionView, Refusal> {
        let _numbering = self.sharing_lock.lock().await;
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
    async fn decide_locked(self: &Arc<Self>, row: &SubscriptionRow, grant: bool, reason: Option<String>, decided_by: &str) -> Result<SubscriptionView, Refusal> {
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
                let (m, ss, last) = self.backlog_page(&ctx, &row.topic, &subscriber, first, first, last).await?;
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
        let signed = envelope.sign(&self.node_key);
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
                    tokio::spawn(async move { engine.send_backlogs().await });
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

    /// Deliveries of records `from..=to` of `topic` to `subscriber` alone, whose subscription
    /// starts at `first`, as many as fit `limits.page_max_bytes` (at least one), and the last
    /// record they cover (`to` when all of them fit).
    async fn backlog_page(
        &self,
        ctx: &Context<'_>,
        topic: &str,
        subscriber: &UnitAddress,
        first: i64,
        from: i64,
        to: i64,
    ) -> Result<(Vec<Custody>, Vec<Summary>, i64), Refusal> {
        let mut messages = Vec::new();
        let mut summaries = Vec::new();
        let log = self.store.sharing().topic_log(topic, from, to, self.limits.page_max_bytes as usize).await?;
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
            let (envelope, payload) = d.envelope(&self.here, vec![subscriber.clone()]);
            let signed = envelope.sign(&self.node_key);
            let (c, s) = custody::take(ctx, Incoming { signed, payload, recipients: vec![subscriber.clone()], from: None, hops: vec![] })?;
            messages.push(c);
            summaries.push(s);
        }
        Ok((messages, summaries, covered))
    }

    /// Sends what is left of granted backlogs, a page per commit, taking the numbering lock for each
    /// page only (publishing goes on in between). Runs after a grant with a long backlog and at start.
    pub(crate) async fn send_backlogs(self: &Arc<Self>) {
        let _one_sender = self.backfill_running.lock().await;
        loop {
            let _numbering = self.sharing_lock.lock().await;
            let rows = match self.store.sharing().owner_subscriptions(None).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read subscriptions to backfill");
                    return;
                }
            };
            let Some((row, (next, end))) = rows.iter().find_map(|r| Some((r, r.backfill?))) else { return };
            let (Ok(subscriber), Some(first)) = (row.subscriber.parse::<UnitAddress>(), row.first_seq) else { return };
            let dir = self.dir.current();
            let ctx = self.context(&dir);
            let last = end.min(next + BACKFILL_PAGE - 1);
            let (messages, summaries, last) = match self.backlog_page(&ctx, &row.topic, &subscriber, first, next, last).await {
                Ok(p) => p,
                Err(r) => {
                    tracing::warn!(topic = %row.topic, subscriber = %row.subscriber, reason = %r.message, "cannot send a backlog page; retried at the next start");
                    return;
                }
            };
            let left = (last < end).then_some((last + 1, end));
            let job = SharingJob::Backfill { topic: row.topic.clone(), subscriber: row.subscriber.clone(), left, messages };
            match self.committer.commit(vec![WriteJob::Sharing(job)]).await {
                Ok(_) => {
                    for s in &summaries {
                        self.after_commit(s);
                    }
                }
                Err(e) => {
                    self.metrics.storage_errors.with_label_values(&["commit"]).inc();
                    tracing::error!(error = %e, "cannot store a backlog page; retried at the next start");
                    return;
                }
            }
        }
    }

    /// `GET /v1/units/{owner}/subscribers`, or every subscription held here for the admin API.
    pub async fn subscribers(&self, caller: Option<&Caller>, owner: Option<&UnitAddress>) -> Result<SubscriptionsResponse, Refusal> {
        if let (Some(c), Some(o)) = (caller, owner) {
            c.may_act_for(o)?;
        }
        let rows = self.store.sharing().owner_subscriptions(owner.map(|o| o.as_str())).await?;
        Ok(SubscriptionsResponse { subscriptions: rows.iter().map(|r| view(r, None)).collect::<Result<_, _>>()? })
    }

    /// `GET /v1/units/{unit}/subscriptions`: the unit's subscriptions, with cursor and progress.
    pub async fn subscriptions(&self, caller: &Caller, unit: &UnitAddress) -> Result<SubscriptionsResponse, Refusal> {
        caller.may_act_for(unit)?;
        self.check_home(&self.dir.current(), unit)?;
        let shared = self.store.sharing();
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

    async fn local_subscription(&self, unit: &UnitAddress, topic: &str) -> Result<SubscriptionRow, Refusal> {
        self.store.sharing().local_subscriptions(unit.as_str()).await?.into_iter().find(|s| s.topic == topic).ok_or_else(|| {
            Refusal::new("not-found", 404, format!("{unit} has no subscription to {topic}; request one with POST /v1/subscriptions"))
        })
    }

    // ---- Subscribers' streams ----

    /// `GET /v1/units/{unit}/subscriptions/{topic}/records`: records after `after` (default: the
    /// cursor) in sequence order, stopping before the first one still missing. Waits up to `wait`
    /// for at least one.
    pub async fn records(
        &self,
        caller: &Caller,
        unit: &UnitAddress,
        topic: &str,
        after: Option<u64>,
        limit: u32,
        wait: Duration,
    ) -> Result<RecordsResponse, Refusal> {
        caller.may_act_for(unit)?;
        self.check_home(&self.dir.current(), unit)?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.inbox_changes.subscribe();
        let shared = self.store.sharing();
        loop {
            changes.borrow_and_update();
            let sub = self.local_subscription(unit, topic).await?;
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
                let page_bytes = self.limits.page_max_bytes as usize;
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
    pub async fn ack(&self, caller: &Caller, unit: &UnitAddress, topic: &str, seq: u64) -> Result<SubscriptionView, Refusal> {
        caller.may_act_for(unit)?;
        self.check_home(&self.dir.current(), unit)?;
        let sub = self.local_subscription(unit, topic).await?;
        let shared = self.store.sharing();
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
        self.committer
            .commit(vec![WriteJob::Sharing(SharingJob::Ack { unit: unit.to_string(), topic: topic.to_string(), seq: seq as i64, events })])
            .await
            .map_err(|e| {
                self.metrics.storage_errors.with_label_values(&["commit"]).inc();
                tracing::error!(error = %e, "cannot store a cursor");
                Refusal { code: "storage", message: "the node could not store the cursor; try again later".into(), status: 503, transient: true }
            })?;
        let mut after = sub;
        after.cursor = after.cursor.max(seq as i64);
        view(&after, Some(end))
    }
}

/// A record that passed every check, ready to be numbered.
struct CheckedRecord {
    signed: SignedEnvelope,
    payload: Vec<u8>,
    topic: String,
    subject: String,
}

/// Records of a backlog sent per commit.
const BACKFILL_PAGE: i64 = 256;

fn view(r: &SubscriptionRow, received_up_to: Option<i64>) -> Result<SubscriptionView, Refusal> {
    let local = r.state == "requested" || received_up_to.is_some();
    Ok(SubscriptionView {
        topic: r.topic.clone(),
        subscriber: r.subscriber.parse().map_err(|_| corrupt("subscriber address"))?,
        owner: r.owner.parse().map_err(|_| corrupt("owner address"))?,
        state: r.state.clone(),
        from: r.start.clone(),
        first_seq: r.first_seq.map(|f| f as u64),
        cursor: local.then_some(r.cursor.max(0) as u64),
        received_up_to: received_up_to.map(|e| e.max(0) as u64),
        reason: r.reason.clone(),
        decided_by: r.decided_by.clone(),
        request_id: Digest(r.request_id),
        requested_at_ms: r.requested_at_ms as u64,
        decided_at_ms: r.decided_at_ms.map(|d| d as u64),
    })
}

fn data_item(r: DataInboxRow) -> Result<DataItem, Refusal> {
    let (_, record) = signed_message(&r.header, &r.signature, &r.payload)?;
    Ok(DataItem {
        seq: r.seq as u64,
        topic: r.topic,
        subject: r.subject,
        published_at_ms: r.published_at_ms as u64,
        delivered_at_ms: r.delivered_at_ms as u64,
        delivery_id: Digest(r.delivery_id),
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{test_key, test_tree};
    use exchange_wire::NodeId;

    fn u(s: &str) -> UnitAddress {
        s.parse().unwrap()
    }

    /// A record of 六榕街道 (key 7, hosted on 越秀) signed with `signer`, delivered by node `by` (key
    /// `node_seed`) to 海珠区民政局.
    fn delivery(signer: u8, by: &str, node_seed: u8) -> Incoming {
        let payload = br#"{"id_number":"440104195001010001"}"#;
        let record = sharing_record(payload).sign(&test_key(signer));
        let to = u("gz.haizhu/civil-affairs");
        let d = Delivery {
            topic: "person.death".into(),
            seq: 3,
            subject: "440104195001010001".into(),
            published_at_ms: 900,
            first_seq: [(to.clone(), 1)].into(),
            record: SignedMessage::new(&record, payload),
        };
        let node: NodeId = by.parse().unwrap();
        let (envelope, dpayload) = d.envelope(&node, vec![to.clone()]);
        Incoming { signed: envelope.sign(&test_key(node_seed)), payload: dpayload, recipients: vec![to], from: Some("gz".parse().unwrap()), hops: vec![] }
    }

    fn sharing_record(payload: &[u8]) -> exchange_wire::Envelope {
        exchange_wire::sharing::record(u("gz.yuexiu/liurong-street"), "person.death", "440104195001010001", payload)
    }

    fn take_at_haizhu(m: Incoming) -> Result<(Custody, Summary), Refusal> {
        let (dir, here, key) = (test_tree(), "gz.haizhu".parse().unwrap(), test_key(4));
        let ctx = Context { here: &here, dir: &dir, node_key: &key, now_ms: 1_000 };
        custody::take(&ctx, m)
    }

    #[test]
    fn a_delivery_from_the_publishers_node_with_its_signature_is_stored_by_sequence_number() {
        let (c, s) = take_at_haizhu(delivery(7, "gz.yuexiu", 3)).unwrap();
        let [SharingRow::Delivered(row)] = c.sharing.as_slice() else { panic!("one delivered row: {:?}", c.sharing) };
        assert_eq!((row.unit.as_str(), row.topic.as_str(), row.seq, row.first_seq), ("gz.haizhu/civil-affairs", "person.death", 3, 1));
        assert_eq!(s.data_delivered, vec!["person.death".to_string()]);
        assert!(c.inbox.is_empty(), "records go to the subscriber's stream, not its inbox");
    }

    #[test]
    fn a_record_relayed_by_another_node_or_not_signed_by_its_publisher_is_refused() {
        // Signed by the city's node, which is not 六榕街道's home.
        assert_eq!(take_at_haizhu(delivery(7, "gz", 2)).err().map(|r| r.code), Some("forged-delivery"));
        // The right node, but the record is not signed by 六榕街道's key.
        assert_eq!(take_at_haizhu(delivery(9, "gz.yuexiu", 3)).err().map(|r| r.code), Some("bad-signature"));
    }
}
