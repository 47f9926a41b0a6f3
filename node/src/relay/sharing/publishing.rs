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
        // The sequence numbers and the subscriber lists must not change between reading them and
        // committing.
        let _numbering = self.numbering().await;
        let shared = s.store.sharing();
        let ctx = s.context(dir);
        let now = exchange_wire::now_ms();
        let mut topics: BTreeMap<String, TopicState> = BTreeMap::new();
        let mut seen = std::collections::HashMap::new();
        let mut answers: Vec<Option<Result<PublishResponse, Refusal>>> = Vec::with_capacity(records.len());
        let mut numbered = Vec::new();
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
                    answers.push(Some(Err(e.into())));
                    continue;
                }
            }
            if !topics.contains_key(&r.topic) {
                match TopicState::read(shared, dir, &r.topic).await {
                    Ok(t) => topics.insert(r.topic.clone(), t),
                    Err(refusal) => {
                        answers.push(Some(Err(refusal)));
                        continue;
                    }
                };
            }
            let topic = topics.get_mut(&r.topic).expect("read above");
            match numbered_record(s, &ctx, topic, r, now) {
                Ok(n) => {
                    seen.insert(id, (n.answer.seq, n.answer.topic.clone()));
                    numbered.push((i, n));
                    answers.push(None);
                }
                Err(refusal) => answers.push(Some(Err(refusal))),
            }
        }
        for (i, answer) in commit_numbered(s, done, numbered).await {
            answers[i] = Some(answer);
        }
        answers.into_iter().map(|a| a.expect("every record has an answer")).collect()
    }
}

/// A topic as numbering sees it under the lock: its last number and its granted subscribers (with
/// the first number each takes).
struct TopicState {
    head: i64,
    subscribers: BTreeMap<UnitAddress, u64>,
}

impl TopicState {
    async fn read(shared: &dyn crate::storage::sharing::SharingStore, dir: &Directory, topic: &str) -> Result<TopicState, Refusal> {
        let head = shared.topic_head(topic).await?;
        let mut subscribers = BTreeMap::new();
        for sub in shared.granted_subscriptions(topic).await? {
            match (sub.subscriber.parse::<UnitAddress>(), sub.first_seq) {
                // A subscriber that has left the directory is skipped; the others still get it.
                (Ok(u), Some(f)) if dir.home_of(&u).is_some() => {
                    subscribers.insert(u, f as u64);
                }
                _ => tracing::warn!(subscriber = %sub.subscriber, topic, "a granted subscriber is not in the directory; skipped"),
            }
        }
        Ok(TopicState { head, subscribers })
    }
}

/// A record given its number, with what committing it writes and what the commit sets off.
struct Numbered {
    job: WriteJob,
    answer: PublishResponse,
    summary: Summary,
}

/// Gives `r` the next number of `topic` and builds its log row, its signed delivery to every
/// subscriber (taken into custody here) and its audit entry. The number is taken only if this
/// succeeds.
fn numbered_record(s: &Services, ctx: &custody::Context, topic: &mut TopicState, r: CheckedRecord, now: u64) -> Result<Numbered, Refusal> {
    let id = r.signed.id;
    let recipients: Vec<UnitAddress> = topic.subscribers.keys().cloned().collect();
    let seq = topic.head + 1;
    let (delivery, summary) = if recipients.is_empty() {
        (None, Summary::default())
    } else {
        let d = Delivery {
            topic: r.topic.clone(),
            seq: seq as u64,
            subject: r.subject.clone(),
            published_at_ms: now,
            first_seq: topic.subscribers.clone(),
            record: SignedMessage::new(&r.signed, &r.payload),
        };
        let (envelope, payload) = d.envelope(&s.here, recipients.clone());
        let signed = envelope.sign(&s.node_key());
        let (c, summary) = custody::take(ctx, Incoming { signed, payload, recipients: recipients.clone(), from: None, hops: vec![] })?;
        (Some(Box::new(c)), summary)
    };
    topic.head = seq;
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
    Ok(Numbered {
        job: WriteJob::Sharing(SharingJob::Publish { log, delivery, events }),
        answer: PublishResponse { id, topic: r.topic, seq: seq as u64, duplicate: false, subscribers: recipients.len() as u64 },
        summary,
    })
}

/// Commits the numbered records (each at its position `i` among the answers) in one transaction and
/// answers each: published, or, when the commit failed, nothing published.
async fn commit_numbered(s: &Services, done: &impl CommitDone, numbered: Vec<(usize, Numbered)>) -> Vec<(usize, Result<PublishResponse, Refusal>)> {
    if numbered.is_empty() {
        return Vec::new();
    }
    let (jobs, pending): (Vec<WriteJob>, Vec<(usize, PublishResponse, Summary)>) =
        numbered.into_iter().map(|(i, n)| (n.job, (i, n.answer, n.summary))).unzip();
    match s.committer.commit(jobs).await {
        Ok(outcomes) => pending
            .into_iter()
            .zip(outcomes)
            .map(|((i, answer, summary), outcome)| {
                if outcome == JobOutcome::Stored {
                    s.metrics.data_published.with_label_values(&[answer.topic.as_str()]).inc();
                    s.metrics.accepted.with_label_values(&[Kind::DataRecord.as_str(), "agency"]).inc();
                    done.committed(&summary);
                    (i, Ok(answer))
                } else {
                    // Not reachable under the lock; answered as what the store says it is.
                    (i, Ok(PublishResponse { duplicate: true, subscribers: 0, ..answer }))
                }
            })
            .collect(),
        Err(e) => {
            s.metrics.storage_errors.with_label_values(&["commit"]).inc();
            tracing::error!(error = %e, "cannot store published records");
            let refusal = || Refusal {
                code: "storage",
                message: "the node could not store the record; nothing was published, try again later".into(),
                status: 503,
                transient: true,
            };
            pending.into_iter().map(|(i, _, _)| (i, Err(refusal()))).collect()
        }
    }
}

/// A record that passed every check, ready to be numbered.
struct CheckedRecord {
    signed: SignedEnvelope,
    payload: Vec<u8>,
    topic: String,
    subject: String,
}
