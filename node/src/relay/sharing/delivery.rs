//! The custody rules for data-sharing envelopes reaching the home node of their recipients:
//! deliveries of records (checked against the publisher's home node and signature), subscription
//! requests and decisions. Plain checks and rows, no I/O; `custody` calls them, and they know
//! nothing of the engine.

use exchange_wire::sharing::{Decision, Delivery, RequestFacts};
use exchange_wire::{Kind, SignedEnvelope, UnitAddress};

use crate::directory::Directory;
use crate::relay::handover::{self, Context, Incoming, Summary};
use crate::relay::refusal::Refusal;
use crate::storage::Custody;
use crate::storage::sharing::{DataInboxRow, SharingRow, SubscriptionRow};

/// Strict verification of a unit's signature against the keys the directory lists for it, valid
/// at every time in `at_ms`.
pub(crate) fn verify_unit(dir: &Directory, signed: &SignedEnvelope, at_ms: &[u64]) -> Result<(), Refusal> {
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
pub(crate) fn deliver(ctx: &Context, m: &Incoming, units: &[UnitAddress], c: &mut Custody, summary: &mut Summary) -> Result<(), Refusal> {
    match m.signed.envelope.kind {
        Kind::DataDelivery => deliver_record(ctx, m, units, c, summary),
        Kind::SubscriptionRequest => take_request(ctx, m, units, c, summary),
        Kind::SubscriptionDecision => deliver_decision(ctx, m, units, c, summary),
        other => Err(Refusal::new("unsupported-kind", 400, format!("{other} is not a data-sharing envelope"))),
    }
}

/// A data-delivery: the record it carries, once checked, into each unit's data inbox.
fn deliver_record(ctx: &Context, m: &Incoming, units: &[UnitAddress], c: &mut Custody, summary: &mut Summary) -> Result<(), Refusal> {
    let env = &m.signed.envelope;
    let id = m.signed.id.0;
    let now = ctx.now_ms;
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
        c.events.push(handover::event(id, now, "delivered", Some(u), None, Some(format!("{} #{}", d.topic, d.seq))));
        summary.delivered.push(Kind::DataDelivery);
        summary.data_delivered.push(d.topic.clone());
        summary.latencies_ms.push(now.saturating_sub(record.envelope.created_at_ms));
    }
    Ok(())
}

/// A subscription request for an owner unit here: pending, until the owner decides.
fn take_request(ctx: &Context, m: &Incoming, units: &[UnitAddress], c: &mut Custody, summary: &mut Summary) -> Result<(), Refusal> {
    let env = &m.signed.envelope;
    let id = m.signed.id.0;
    let now = ctx.now_ms;
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
        c.events.push(handover::event(id, now, "subscription-requested", Some(u), None, Some(format!("{} by {}", facts.topic, env.sender))));
    }
    summary.sharing_requests += 1;
    Ok(())
}

/// An owner's decision for a subscriber unit here: recorded, and into its inbox.
fn deliver_decision(ctx: &Context, m: &Incoming, units: &[UnitAddress], c: &mut Custody, summary: &mut Summary) -> Result<(), Refusal> {
    let id = m.signed.id.0;
    let now = ctx.now_ms;
    let d = Decision::from_envelope(&m.signed.envelope, &m.payload)?;
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
        c.events.push(handover::event(id, now, "delivered", Some(u), None, Some(format!("{} {}", d.topic, d.decision))));
        summary.delivered.push(Kind::SubscriptionDecision);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{test_key, test_tree};
    use crate::relay::custody;
    use exchange_wire::api::SignedMessage;
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
        let ctx = Context { here: &here, dir: &dir, node_key: key.clone(), now_ms: 1_000 };
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
