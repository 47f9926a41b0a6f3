//! Base-data sharing (数据共享交换): the catalog of topics, published records, subscriptions and the
//! node-signed envelopes that carry records to subscribers.
//!
//! * The **catalog** lists topics (person.death, legal-person.registered, ...), each with a JSON
//!   Schema, the one unit that owns it (一数一源: only the owner publishes) and a sharing condition.
//!   It is signed by the root node like the node tree and travels as a directory segment
//!   (`segment.type = catalog`).
//! * A **record** (`data-record`) is signed by the owner unit: metadata `data.topic` and
//!   `data.subject` (the citizen ID number or the unified social credit code), the JSON record as
//!   payload, addressed to the publisher itself (the subscribers are not known to the signer).
//! * The owner's home node numbers each record within its topic and sends it on to the subscribers
//!   as a **delivery** (`data-delivery`), signed by that node, carrying the record with the
//!   publisher's signature intact, so a subscriber verifies both.
//! * A **subscription request** (`subscription-request`) is signed by the subscribing unit and sent
//!   to the topic's owner; the owner's home node answers with a node-signed **decision**
//!   (`subscription-decision`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod catalog;

pub use catalog::{Catalog, CatalogSeed, SeedTopic, Sharing, Topic, check_topic_name};

use crate::address::{NodeId, UnitAddress};
use crate::api::SignedMessage;
use crate::envelope::{Envelope, EnvelopeError, Kind, MessageId, Priority};

/// Metadata key of every sharing envelope: the topic.
pub const META_TOPIC: &str = "data.topic";
/// Metadata key of a record: the subject key (citizen ID number, unified social credit code, ...).
pub const META_SUBJECT: &str = "data.subject";
/// Metadata key of a delivery: the record's sequence number within its topic.
pub const META_SEQ: &str = "data.seq";
/// Metadata key of a subscription request: where the subscription starts ([`StartFrom`]).
pub const META_FROM: &str = "data.from";
/// Metadata key of a decision: `granted` or `refused`.
pub const META_DECISION: &str = "data.decision";
/// Metadata key of a decision: the subscriber it answers (the decision is addressed to it).
pub const META_SUBSCRIBER: &str = "data.subscriber";

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// Every record of the topic ever published (backfilled from the owner's topic log).
    #[default]
    Beginning,
    /// From this sequence number on.
    Seq(u64),
    /// From the first record published at or after this time (ms since the epoch).
    Time(u64),
    /// Only records published after the grant.
    Now,
}

impl fmt::Display for StartFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartFrom::Beginning => f.write_str("beginning"),
            StartFrom::Seq(n) => write!(f, "seq:{n}"),
            StartFrom::Time(t) => write!(f, "time:{t}"),
            StartFrom::Now => f.write_str("now"),
        }
    }
}

impl FromStr for StartFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a start: use beginning, now, seq:<n> or time:<ms since the epoch>");
        match s {
            "beginning" => Ok(StartFrom::Beginning),
            "now" => Ok(StartFrom::Now),
            _ => match s.split_once(':') {
                Some(("seq", n)) => n.parse().map(StartFrom::Seq).map_err(|_| bad()),
                Some(("time", t)) => t.parse().map(StartFrom::Time).map_err(|_| bad()),
                _ => Err(bad()),
            },
        }
    }
}

/// A record envelope: `publisher` (the topic's owner) signs it; `payload` is the record's JSON.
pub fn record(publisher: UnitAddress, topic: &str, subject: &str, payload: &[u8]) -> Envelope {
    let mut e = Envelope::new(Kind::DataRecord, publisher.clone(), vec![publisher], vec![], Priority::Routine, payload);
    e.metadata.insert(META_TOPIC.into(), topic.into());
    e.metadata.insert(META_SUBJECT.into(), subject.into());
    e
}

/// A subscription request from `subscriber` to `owner` for `topic`, signed by the subscriber.
/// The payload is the stated purpose (free text, may be empty), read by whoever approves.
pub fn subscription_request(subscriber: UnitAddress, owner: UnitAddress, topic: &str, from: StartFrom, purpose: &str) -> Envelope {
    let mut e = Envelope::new(Kind::SubscriptionRequest, subscriber, vec![owner], vec![], Priority::Express, purpose.as_bytes());
    e.metadata.insert(META_TOPIC.into(), topic.into());
    e.metadata.insert(META_FROM.into(), from.to_string());
    e
}

fn meta<'a>(e: &'a Envelope, key: &str) -> Result<&'a str, EnvelopeError> {
    e.metadata
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| EnvelopeError::Malformed(format!("a {} envelope carries metadata {key}", e.kind)))
}

/// The facts of a record envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFacts {
    pub topic: String,
    pub subject: String,
}

impl RecordFacts {
    pub fn from_envelope(e: &Envelope) -> Result<RecordFacts, EnvelopeError> {
        if e.kind != Kind::DataRecord {
            return Err(EnvelopeError::Malformed(format!("a {} is not a data-record", e.kind)));
        }
        let topic = meta(e, META_TOPIC)?.to_string();
        check_topic_name(&topic).map_err(EnvelopeError::Malformed)?;
        let subject = meta(e, META_SUBJECT)?.to_string();
        if subject.is_empty() || subject.len() > 128 {
            return Err(EnvelopeError::Malformed("data.subject must be 1 to 128 bytes".into()));
        }
        if e.to != [e.sender.clone()] || !e.cc.is_empty() {
            return Err(EnvelopeError::Malformed(
                "a data-record is addressed to its publisher only; its node sends it on to the subscribers".into(),
            ));
        }
        Ok(RecordFacts { topic, subject })
    }
}

/// The facts of a subscription request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    pub topic: String,
    pub from: StartFrom,
    pub owner: UnitAddress,
}

impl RequestFacts {
    pub fn from_envelope(e: &Envelope) -> Result<RequestFacts, EnvelopeError> {
        if e.kind != Kind::SubscriptionRequest {
            return Err(EnvelopeError::Malformed(format!("a {} is not a subscription-request", e.kind)));
        }
        let topic = meta(e, META_TOPIC)?.to_string();
        check_topic_name(&topic).map_err(EnvelopeError::Malformed)?;
        let from = meta(e, META_FROM)?.parse().map_err(EnvelopeError::Malformed)?;
        let [owner] = e.to.as_slice() else {
            return Err(EnvelopeError::Malformed("a subscription-request goes to the topic's owner only".into()));
        };
        if !e.cc.is_empty() {
            return Err(EnvelopeError::Malformed("a subscription-request has no copy recipients".into()));
        }
        Ok(RequestFacts { topic, from, owner: owner.clone() })
    }
}

/// What a delivery carries: one record, its place in the topic, and the publisher's signed envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub topic: String,
    pub seq: u64,
    pub subject: String,
    pub published_at_ms: u64,
    /// For each recipient of this delivery, the first sequence number of its subscription, so its
    /// home node knows where the stream starts and can hold a record whose predecessor is missing.
    pub first_seq: BTreeMap<UnitAddress, u64>,
    /// The record, exactly as the publisher signed it.
    pub record: SignedMessage,
}

impl Delivery {
    /// The delivery as an envelope from `node` (signed by that node) to `recipients`.
    pub fn envelope(&self, node: &NodeId, recipients: Vec<UnitAddress>) -> (Envelope, Vec<u8>) {
        let payload = serde_json::to_vec(self).expect("a delivery serialises");
        let mut e = Envelope::new(Kind::DataDelivery, UnitAddress::of_node(node), recipients, vec![], Priority::Routine, &payload);
        e.metadata.insert(META_TOPIC.into(), self.topic.clone());
        e.metadata.insert(META_SEQ.into(), self.seq.to_string());
        (e, payload)
    }

    /// Reads a delivery and checks it agrees with its envelope. Signatures are the caller's to check.
    pub fn from_envelope(e: &Envelope, payload: &[u8]) -> Result<Delivery, EnvelopeError> {
        if e.kind != Kind::DataDelivery || !e.sender.is_node() {
            return Err(EnvelopeError::Malformed("a data-delivery is signed by a node".into()));
        }
        e.check_payload(payload)?;
        let d: Delivery = serde_json::from_slice(payload).map_err(|x| EnvelopeError::Malformed(format!("data-delivery payload: {x}")))?;
        if meta(e, META_TOPIC)? != d.topic || meta(e, META_SEQ)? != d.seq.to_string() {
            return Err(EnvelopeError::Malformed("data.topic or data.seq does not match the delivery".into()));
        }
        let facts = RecordFacts::from_envelope(&d.record.envelope)?;
        if facts.topic != d.topic || facts.subject != d.subject {
            return Err(EnvelopeError::Malformed("the delivered record is of another topic or subject".into()));
        }
        if let Some(r) = e.recipients().find(|r| !d.first_seq.contains_key(*r)) {
            return Err(EnvelopeError::Malformed(format!("the delivery does not say where {r}'s subscription starts")));
        }
        Ok(d)
    }
}

/// The owner node's answer to a subscription request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub topic: String,
    pub subscriber: UnitAddress,
    pub owner: UnitAddress,
    /// `granted` or `refused`.
    pub decision: String,
    /// For a grant: the first sequence number the subscriber receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who decided: the owner unit, `operator`, or `catalog` (open and not-shared topics).
    pub decided_by: String,
    /// The request answered.
    pub request_id: MessageId,
}

impl Decision {
    /// The decision as an envelope from `node` to the subscriber.
    pub fn envelope(&self, node: &NodeId) -> (Envelope, Vec<u8>) {
        let payload = serde_json::to_vec(self).expect("a decision serialises");
        let mut e = Envelope::new(
            Kind::SubscriptionDecision,
            UnitAddress::of_node(node),
            vec![self.subscriber.clone()],
            vec![],
            Priority::Express,
            &payload,
        );
        e.metadata.insert(META_TOPIC.into(), self.topic.clone());
        e.metadata.insert(META_DECISION.into(), self.decision.clone());
        e.metadata.insert(META_SUBSCRIBER.into(), self.subscriber.to_string());
        (e, payload)
    }

    pub fn from_envelope(e: &Envelope, payload: &[u8]) -> Result<Decision, EnvelopeError> {
        if e.kind != Kind::SubscriptionDecision || !e.sender.is_node() {
            return Err(EnvelopeError::Malformed("a subscription-decision is signed by a node".into()));
        }
        e.check_payload(payload)?;
        let d: Decision = serde_json::from_slice(payload).map_err(|x| EnvelopeError::Malformed(format!("subscription-decision payload: {x}")))?;
        if e.to != [d.subscriber.clone()] || meta(e, META_TOPIC)? != d.topic || meta(e, META_DECISION)? != d.decision {
            return Err(EnvelopeError::Malformed("the decision's envelope and payload disagree".into()));
        }
        if d.owner.node_part() != e.sender.node_part() {
            return Err(EnvelopeError::Malformed(format!("a decision about {}'s topic signed by {}", d.owner, e.sender)));
        }
        Ok(d)
    }
}

// ---- API shapes ----

/// The answer to a published record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishResponse {
    pub id: MessageId,
    pub topic: String,
    /// The record's sequence number within its topic.
    pub seq: u64,
    /// True when this record was published before: nothing new was stored or sent.
    pub duplicate: bool,
    /// How many subscribers it was sent to.
    pub subscribers: u64,
}

/// Several records in one request (`POST /v1/records:batch`, at most 1000).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchPublishRequest {
    pub records: Vec<SignedMessage>,
}

/// One result per record of a batch, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchPublishResponse {
    pub results: Vec<PublishResult>,
}

/// A record of a batch: published (or a duplicate), or refused with the reason.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PublishResult {
    Published(PublishResponse),
    Refused(crate::api::ErrorBody),
}

/// A subscription as its subscriber's home node or its owner's home node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionView {
    pub topic: String,
    pub subscriber: UnitAddress,
    pub owner: UnitAddress,
    /// `requested` (sent, no answer yet), `pending` (awaiting approval), `granted` or `refused`.
    pub state: String,
    /// Where it was asked to start.
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    /// Subscriber side: acknowledged up to this sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u64>,
    /// Subscriber side: the highest sequence number received with none missing before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_up_to: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    pub request_id: MessageId,
    pub requested_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at_ms: Option<u64>,
}

/// A list of subscriptions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionsResponse {
    pub subscriptions: Vec<SubscriptionView>,
}

/// Grant or refuse a pending subscription (owner unit or operator).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecideRequest {
    pub topic: String,
    pub subscriber: UnitAddress,
    pub grant: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One record in a subscriber's stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataItem {
    pub seq: u64,
    pub topic: String,
    pub subject: String,
    pub published_at_ms: u64,
    pub delivered_at_ms: u64,
    /// The node-signed data-delivery that brought it here (to trace its path across the network).
    pub delivery_id: MessageId,
    /// The record as its publisher signed it (verify offline with the publisher's key).
    pub record: SignedMessage,
}

/// A page of a subscriber's stream, in sequence order with no gaps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordsResponse {
    pub unit: UnitAddress,
    pub topic: String,
    pub items: Vec<DataItem>,
    /// Pass as `after` for the next page.
    pub next_after: u64,
    /// Acknowledged up to here.
    pub cursor: u64,
    /// Records held back because an earlier one has not arrived yet.
    pub held_back: u64,
}

/// Acknowledge a subscriber's stream up to `seq`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckRequest {
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_from_round_trips() {
        for s in [StartFrom::Beginning, StartFrom::Now, StartFrom::Seq(7), StartFrom::Time(1_700_000_000_000)] {
            assert_eq!(s.to_string().parse::<StartFrom>().unwrap(), s);
        }
        assert!("seq:x".parse::<StartFrom>().is_err());
        assert!("yesterday".parse::<StartFrom>().is_err());
    }

    #[test]
    fn record_facts_need_topic_subject_and_self_address() {
        let owner: UnitAddress = "gz.yuexiu/civil-affairs".parse().unwrap();
        let e = record(owner.clone(), "person.death", "440104193001010011", b"{}");
        assert_eq!(RecordFacts::from_envelope(&e).unwrap().topic, "person.death");
        let mut other = e.clone();
        other.to = vec!["gz/civil-affairs".parse().unwrap()];
        assert!(RecordFacts::from_envelope(&other).is_err());
        let mut no_subject = e;
        no_subject.metadata.remove(META_SUBJECT);
        assert!(RecordFacts::from_envelope(&no_subject).is_err());
    }

    #[test]
    fn topic_names() {
        assert!(check_topic_name("legal-person.registered").is_ok());
        assert!(check_topic_name("Person.Death").is_err());
        assert!(check_topic_name("a/b").is_err());
        assert!(check_topic_name("").is_err());
    }
}
