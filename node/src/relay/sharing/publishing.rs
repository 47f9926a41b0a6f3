//! Publishing at the owner's home node: a record is checked (token, ownership 一数一源, schema,
//! signature), numbered within its topic under the numbering lock, and committed with one delivery
//! to every granted subscriber in the same transaction.

use std::collections::BTreeMap;
use exchange_wire::api::SignedMessage;
use exchange_wire::sharing::{
    Delivery, PublishResponse, RecordFacts,
};
use exchange_wire::{Kind, SignedEnvelope, UnitAddress};

use crate::relay::access::Caller;
use crate::relay::custody::{self, Incoming, Summary};
use crate::relay::refused::Refused;
use crate::relay::commit_done::CommitDone;
use crate::relay::services::Services;
use crate::relay::Refusal;
use crate::storage::health::StorageHealth;
use crate::directory::Directory;
use crate::storage::sharing::{SharingJob, TopicLogRow};
use crate::storage::{JobOutcome, WriteJob};
use super::*;
use crate::relay::ingress::checks;

/// Publishing is the sharing part's work with the shared services: `health` says whether storage
/// still takes writes, and `done` is told of each commit (it wakes the forwarders of the deliveries).
impl Sharing {
    /// `POST /v1/records`: the owner unit publishes a signed record.
    pub async fn publish_record(
        &self,
        s: &Services,
        health: &StorageHealth,
        done: &impl CommitDone,
        caller: &Caller,
        m: SignedMessage,
    ) -> Result<PublishResponse, Refusal> {
        self.publish_records(s, health, done, caller, vec![m]).await.pop().expect("one result")
    }

    /// `POST /v1/records:batch`: several records, each checked on its own, the accepted ones numbered
    /// in order and committed together (one transaction instead of one per record). One result per
    /// record, in order.
    pub async fn publish_records(
        &self,
        s: &Services,
        health: &StorageHealth,
        done: &impl CommitDone,
        caller: &Caller,
        messages: Vec<SignedMessage>,
    ) -> Vec<Result<PublishResponse, Refusal>> {
        let dir = s.dir.current();
        let mut results: Vec<Option<Result<PublishResponse, Refusal>>> = Vec::with_capacity(messages.len());
        let mut checked = Vec::new();
        let mut refused = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            match self.check_record(s, &dir, caller, m) {
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
            s.refused("agency", &list).await;
        }
        let positions: Vec<usize> = checked.iter().map(|(i, _)| *i).collect();
        let numbered = self.number_and_commit(s, health, done, &dir, checked.into_iter().map(|(_, c)| c).collect()).await;
        for (i, r) in positions.into_iter().zip(numbered) {
            results[i] = Some(r);
        }
        results.into_iter().map(|r| r.expect("every record has a result")).collect()
    }

    /// Every check of a record that needs no lock: token, kind, size, home node, freshness, status,
    /// topic, ownership, schema, subject and signature. A refusal comes with its masked message
    /// when it quotes record values.
    fn check_record(&self, s: &Services, dir: &Directory, caller: &Caller, m: &SignedMessage) -> Result<CheckedRecord, (Refusal, Option<String>)> {
        let plain = |r: Refusal| (r, None);
        let env = &m.envelope;
        caller.may_act_for(&env.sender).map_err(plain)?;
        if env.kind != Kind::DataRecord {
            return Err(plain(Refusal::new("unsupported-kind", 400, format!("POST /v1/records takes data-record envelopes, not {}", env.kind))));
        }
        checks::check_size(&s.limits, env.payload_size).map_err(plain)?;
        check_home(&s.here, dir, &env.sender).map_err(plain)?;
        checks::check_fresh(&s.limits, exchange_wire::now_ms(), env.created_at_ms).map_err(plain)?;
        checks::check_active(dir, &env.sender).map_err(plain)?;
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
    async fn number_and_commit(
        &self,
        s: &Services,
        health: &StorageHealth,
        done: &impl CommitDone,
        dir: &Directory,
        records: Vec<CheckedRecord>,
    ) -> Vec<Result<PublishResponse, Refusal>> {
        if records.is_empty() {
            return Vec::new();
        }
        if let Err(closed) = health.intake() {
            return records.iter().map(|_| Err(Refusal::storage_full(&closed))).collect();
        }
        let storage = |e: crate::storage::StorageError| -> Refusal { e.into() };
        // The sequence numbers and the subscriber lists must not change between reading them and
        // committing.
        let _numbering = self.numbering().await;
        let shared = s.store.sharing();
        let ctx = s.context(dir);
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
                for sub in &subs {
                    match (sub.subscriber.parse::<UnitAddress>(), sub.first_seq) {
                        // A subscriber that has left the directory is skipped; the others still get it.
                        (Ok(u), Some(f)) if dir.home_of(&u).is_some() => {
                            first_seq.insert(u, f as u64);
                        }
                        _ => tracing::warn!(subscriber = %sub.subscriber, topic = %r.topic, "a granted subscriber is not in the directory; skipped"),
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
                let (envelope, dpayload) = d.envelope(&s.here, recipients.clone());
                let dsigned = envelope.sign(&s.node_key());
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
            match s.committer.commit(jobs).await {
                Ok(outcomes) => {
                    for ((i, answer, summary), outcome) in pending.into_iter().zip(outcomes) {
                        if outcome == JobOutcome::Stored {
                            s.metrics.data_published.with_label_values(&[answer.topic.as_str()]).inc();
                            s.metrics.accepted.with_label_values(&[Kind::DataRecord.as_str(), "agency"]).inc();
                            done.committed(&summary);
                            answers[i] = Some(Ok(answer));
                        } else {
                            // Not reachable under the lock; answered as what the store says it is.
                            answers[i] = Some(Ok(PublishResponse { duplicate: true, subscribers: 0, ..answer }));
                        }
                    }
                }
                Err(e) => {
                    s.metrics.storage_errors.with_label_values(&["commit"]).inc();
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
}

/// A record that passed every check, ready to be numbered.
struct CheckedRecord {
    signed: SignedEnvelope,
    payload: Vec<u8>,
    topic: String,
    subject: String,
}
