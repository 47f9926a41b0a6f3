//! Custody rules as plain functions: given a verified message and the recipients this node is now
//! responsible for, decide every row that must be committed together: the message, outbox entries per
//! next hop, inbox deliveries, status facts and follow-up messages (delivery reports). No I/O here, so
//! the rules are testable without storage or network.

use std::collections::BTreeSet;

use ed25519_dalek::SigningKey;
use exchange_wire::api::RecipientState;
use exchange_wire::receipt::{
    Delivered, DeliveryReport, FailureReport, Hop, META_REPORT_TYPE, NodeReport, Receipt, ReceiptType, RecallReport,
    recalled_message,
};
use exchange_wire::{Kind, NodeId, SignedEnvelope, UnitAddress};

use super::refusal::Refusal;
use crate::directory::Directory;
use crate::routing::{self, NextHop};
use crate::storage::{Custody, EventRow, InboxRow, MessageRow, OutboxRow, RecallRow, TrackingRow};

/// A verified message arriving at this node.
pub struct Incoming {
    pub signed: SignedEnvelope,
    pub payload: Vec<u8>,
    /// The recipients this node becomes responsible for.
    pub recipients: Vec<UnitAddress>,
    /// The neighbour that handed it over, or `None` for an agency (or this node itself).
    pub from: Option<NodeId>,
    /// Custody hops before this node.
    pub hops: Vec<Hop>,
}

/// What the node needs to know about its own work.
pub struct Context<'a> {
    pub here: &'a NodeId,
    pub dir: &'a Directory,
    pub node_key: &'a SigningKey,
    pub now_ms: u64,
}

/// Facts about a custody decision, used after the commit for wake-ups and metrics.
#[derive(Debug, Default)]
pub struct Summary {
    /// Neighbours that got new outbox work, with how many entries.
    pub next_hops: BTreeSet<NodeId>,
    /// Inbox deliveries by kind.
    pub delivered: Vec<Kind>,
    /// Creation-to-delivery latencies of deliveries here, in milliseconds.
    pub latencies_ms: Vec<u64>,
    /// Receipts that reached their original sender here, by type.
    pub receipts_returned: Vec<ReceiptType>,
    /// Recalls to decide here (their reports follow the commit).
    pub recalls: usize,
    /// Answers to queries asked here that arrived (each may still be too late to count).
    pub answers: usize,
    /// Subscription requests that reached their owner here (decided after the commit).
    pub sharing_requests: usize,
    /// Topics of base-data records delivered to subscribers here, one per subscriber.
    pub data_delivered: Vec<String>,
}

impl Summary {
    fn merge(&mut self, other: Summary) {
        self.next_hops.extend(other.next_hops);
        self.delivered.extend(other.delivered);
        self.latencies_ms.extend(other.latencies_ms);
        self.receipts_returned.extend(other.receipts_returned);
        self.recalls += other.recalls;
        self.answers += other.answers;
        self.sharing_requests += other.sharing_requests;
        self.data_delivered.extend(other.data_delivered);
    }
}

/// A custody entry for the audit log.
pub fn event(id: [u8; 32], at_ms: u64, event: &'static str, unit: Option<&UnitAddress>, peer: Option<&NodeId>, detail: Option<String>) -> EventRow {
    EventRow {
        at_ms: at_ms as i64,
        category: "custody",
        message_id: Some(id),
        event,
        unit: unit.map(|u| u.to_string()),
        peer: peer.map(|p| p.to_string()),
        detail,
    }
}

fn tracking(id: [u8; 32], unit: &UnitAddress, state: RecipientState, node: &NodeId, at_ms: u64) -> TrackingRow {
    TrackingRow {
        message_id: id,
        recipient: unit.to_string(),
        state,
        node: node.to_string(),
        at_ms: at_ms as i64,
        detail: None,
        receipt_id: None,
    }
}

/// Decides everything that taking custody of `m` commits.
pub fn take(ctx: &Context, m: Incoming) -> Result<(Custody, Summary), Refusal> {
    let env = &m.signed.envelope;
    let id = m.signed.id.0;
    let here = ctx.here;
    let now = ctx.now_ms;
    let mut hops = m.hops.clone();
    hops.push(Hop { node: here.clone(), at_ms: now });
    let plan = routing::plan(ctx.dir, here, &m.recipients)?;
    let origin = m.from.is_none();

    let mut c = Custody {
        message: Some(MessageRow {
            id,
            header: m.signed.bytes.clone(),
            signature: m.signed.signature,
            payload: m.payload.clone(),
            kind: env.kind.as_str().to_string(),
            sender: env.sender.to_string(),
            priority: env.priority.rank(),
            created_at_ms: env.created_at_ms as i64,
            received_at_ms: now as i64,
            received_from: m.from.as_ref().map(|f| f.to_string()),
            hops: serde_json::to_string(&hops).expect("hops serialise"),
        }),
        ..Default::default()
    };
    let mut summary = Summary::default();
    c.events.push(event(id, now, if origin { "accepted" } else { "received" }, None, m.from.as_ref(), None));
    // 补发: link the re-send to its original in the same commit, for the original's status.
    if let (true, Kind::Document, Some(original)) =
        (origin, env.kind, env.metadata.get(exchange_wire::document::RESEND_OF).and_then(|o| o.parse::<exchange_wire::MessageId>().ok()))
    {
        c.events.push(event(original.0, now, "resent", None, None, Some(m.signed.id.to_hex())));
    }

    for (hop, units) in plan {
        match hop {
            NextHop::Node(next) => {
                if origin && matches!(env.kind, Kind::Document | Kind::Query) {
                    c.tracking.extend(units.iter().map(|u| tracking(id, u, RecipientState::Accepted, here, now)));
                }
                c.outbox.push(OutboxRow {
                    message_id: id,
                    next_hop: next.to_string(),
                    recipients: serde_json::to_string(&units).expect("units serialise"),
                    priority: env.priority.rank(),
                    enqueued_at_ms: now as i64,
                });
                summary.next_hops.insert(next);
            }
            NextHop::Local => deliver_here(ctx, &m, &units, &hops, &mut c, &mut summary)?,
        }
    }
    Ok((c, summary))
}

/// The rules for recipients whose home is this node, by kind.
fn deliver_here(
    ctx: &Context,
    m: &Incoming,
    units: &[UnitAddress],
    hops: &[Hop],
    c: &mut Custody,
    summary: &mut Summary,
) -> Result<(), Refusal> {
    let env = &m.signed.envelope;
    let id = m.signed.id.0;
    let (here, now) = (ctx.here, ctx.now_ms);
    match env.kind {
        // A query is delivered like a document; its asker's node learns of it from the report.
        Kind::Document | Kind::Query => {
            for u in units {
                c.inbox.push(InboxRow { unit: u.to_string(), message_id: id, delivered_at_ms: now as i64 });
                c.events.push(event(id, now, "delivered", Some(u), None, None));
                summary.delivered.push(env.kind);
                summary.latencies_ms.push(now.saturating_sub(env.created_at_ms));
            }
            if m.from.is_none() {
                // Sender and recipients share this node: the status is known right here.
                c.tracking.extend(units.iter().map(|u| tracking(id, u, RecipientState::Delivered, here, now)));
            } else {
                let report = DeliveryReport {
                    message_id: m.signed.id,
                    node: here.clone(),
                    delivered: units.iter().map(|u| Delivered { unit: u.clone(), at_ms: now }).collect(),
                    hops: hops.to_vec(),
                };
                let (envelope, payload) = report.envelope(env.sender.clone(), env.priority);
                let signed = envelope.sign(ctx.node_key);
                let follow = Incoming { signed, payload, recipients: vec![env.sender.clone()], from: None, hops: vec![] };
                match take(ctx, follow) {
                    Ok((f, s)) => {
                        c.follow_ups.push(f);
                        summary.merge(s);
                    }
                    // The sender left the directory meanwhile: deliver anyway, say so in the log.
                    Err(r) => tracing::warn!(message = %m.signed.id, reason = %r.message, "cannot route a delivery report"),
                }
            }
        }
        Kind::Receipt => {
            let receipt = Receipt::from_envelope(env)?;
            let signer_home = ctx.dir.home_of(&env.sender).unwrap_or_else(|| here.clone());
            for u in units {
                c.inbox.push(InboxRow { unit: u.to_string(), message_id: id, delivered_at_ms: now as i64 });
                summary.delivered.push(Kind::Receipt);
            }
            let state = match receipt.receipt_type {
                ReceiptType::SignedFor => RecipientState::SignedFor,
                ReceiptType::Returned => RecipientState::Returned,
            };
            let mut t = tracking(receipt.for_message.0, &env.sender, state, &signer_home, env.created_at_ms);
            t.receipt_id = Some(id);
            t.detail = receipt.reason.clone();
            c.tracking.push(t);
            c.events.push(event(receipt.for_message.0, now, "receipt", Some(&env.sender), None, Some(m.signed.id.to_hex())));
            summary.receipts_returned.push(receipt.receipt_type);
        }
        Kind::Answer => {
            // The asker's node: the answer settles the query unless its deadline was recorded first
            // (the tracking row moves forward only); either way the asker can read it.
            let query = exchange_wire::query::answered(env).map_err(|e| Refusal::malformed(e.to_string()))?;
            let signer_home = ctx.dir.home_of(&env.sender).unwrap_or_else(|| here.clone());
            for u in units {
                c.inbox.push(InboxRow { unit: u.to_string(), message_id: id, delivered_at_ms: now as i64 });
                summary.delivered.push(Kind::Answer);
            }
            let mut t = tracking(query.0, &env.sender, RecipientState::Answered, &signer_home, now);
            t.receipt_id = Some(id);
            c.tracking.push(t);
            c.events.push(event(query.0, now, "answer", Some(&env.sender), None, Some(m.signed.id.to_hex())));
            summary.answers += 1;
        }
        Kind::DirectorySegment => {
            return Err(Refusal::new("unsupported-kind", 400, "directory segments travel on the directory protocol, not as messages"));
        }
        Kind::DataRecord => {
            return Err(Refusal::new(
                "unsupported-kind",
                400,
                "a data-record travels inside its owner node's data-delivery; publish it at POST /v1/records",
            ));
        }
        Kind::DataDelivery | Kind::SubscriptionRequest | Kind::SubscriptionDecision => {
            crate::relay::sharing::deliver_here(ctx, m, units, c, summary)?;
        }
        Kind::Recall => {
            // Decided in the commit, in order with any 签收 or 退回 of the same entry.
            let recalled = recalled_message(env)?;
            for u in units {
                c.recalls.push(RecallRow {
                    recall_id: id,
                    message_id: recalled.0,
                    unit: u.to_string(),
                    original_sender: env.sender.to_string(),
                    priority: env.priority.rank(),
                    at_ms: now as i64,
                });
                c.events.push(event(recalled.0, now, "recall", Some(u), None, Some(m.signed.id.to_hex())));
            }
            summary.recalls += units.len();
        }
        Kind::DeliveryReport if env.metadata.get(META_REPORT_TYPE).map(String::as_str) == Some("failed") => {
            let report = FailureReport::from_envelope(env, &m.payload)?;
            let orig = report.message_id.0;
            for u in &report.units {
                let mut t = tracking(orig, u, RecipientState::Failed, &report.node, now);
                t.detail = Some(report.reason.clone());
                c.tracking.push(t);
                c.events.push(event(orig, now, "failure-reported", Some(u), Some(&report.node), Some(report.reason.clone())));
            }
        }
        Kind::DeliveryReport if env.metadata.get(META_REPORT_TYPE).map(String::as_str) == Some("recall") => {
            let report = RecallReport::from_envelope(env, &m.payload)?;
            let orig = report.message_id.0;
            for o in &report.outcomes {
                if o.outcome == "recalled" {
                    let mut t = tracking(orig, &o.unit, RecipientState::Recalled, &report.node, now);
                    t.detail = Some("recalled before it was settled".into());
                    c.tracking.push(t);
                    c.events.push(event(orig, now, "recalled", Some(&o.unit), Some(&report.node), None));
                } else if o.outcome == "not-sender" {
                    c.events.push(event(orig, now, "recall-refused", Some(&o.unit), Some(&report.node), Some("only the document's sender may recall it".into())));
                } else {
                    // Settled first: the 签收 or 退回 receipt tells the rest.
                    c.events.push(event(orig, now, "recall-too-late", Some(&o.unit), Some(&report.node), Some(o.outcome.clone())));
                }
            }
        }
        Kind::DeliveryReport => {
            let report = DeliveryReport::from_envelope(env, &m.payload)?;
            let orig = report.message_id.0;
            for d in &report.delivered {
                c.tracking.push(tracking(orig, &d.unit, RecipientState::Delivered, &report.node, d.at_ms));
                c.events.push(event(orig, now, "delivery-reported", Some(&d.unit), Some(&report.node), None));
            }
            for h in &report.hops {
                c.events.push(event(orig, h.at_ms, "hop", None, Some(&h.node), None));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{test_key, test_tree};
    use exchange_wire::{Envelope, Priority};

    fn n(s: &str) -> NodeId {
        s.parse().unwrap()
    }
    fn u(s: &str) -> UnitAddress {
        s.parse().unwrap()
    }

    /// 六榕街道 (key 7) to 海珠区民政局 (主送) and 广州市民政局 (抄送).
    fn document() -> SignedEnvelope {
        Envelope::new(
            Kind::Document,
            u("gz.yuexiu/liurong-street"),
            vec![u("gz.haizhu/civil-affairs")],
            vec![u("gz/civil-affairs")],
            Priority::Express,
            b"notice",
        )
        .sign(&test_key(7))
    }

    fn at<'a>(dir: &'a crate::directory::Directory, here: &'a NodeId, key: &'a SigningKey) -> Context<'a> {
        Context { here, dir, node_key: key, now_ms: 1_000 }
    }

    fn incoming(signed: SignedEnvelope, payload: &[u8], recipients: Vec<UnitAddress>, from: Option<&str>) -> Incoming {
        Incoming { signed, payload: payload.to_vec(), recipients, from: from.map(n), hops: vec![] }
    }

    #[test]
    fn at_the_ingress_node_one_copy_goes_up_and_every_recipient_is_tracked() {
        let (dir, here, key) = (test_tree(), n("gz.yuexiu"), test_key(3));
        let doc = document();
        let all = doc.envelope.recipients().cloned().collect();
        let (c, s) = take(&at(&dir, &here, &key), incoming(doc, b"notice", all, None)).unwrap();
        assert_eq!(c.outbox.len(), 1, "one copy for both recipients");
        assert_eq!(c.outbox[0].next_hop, "gz");
        assert!(c.inbox.is_empty() && c.follow_ups.is_empty());
        assert_eq!(c.tracking.len(), 2);
        assert!(c.tracking.iter().all(|t| t.state == RecipientState::Accepted));
        assert_eq!(s.next_hops.into_iter().collect::<Vec<_>>(), vec![n("gz")]);
    }

    #[test]
    fn at_the_city_it_delivers_the_copy_and_passes_one_copy_down() {
        let (dir, here, key) = (test_tree(), n("gz"), test_key(2));
        let doc = document();
        let all = doc.envelope.recipients().cloned().collect();
        let (c, s) = take(&at(&dir, &here, &key), incoming(doc.clone(), b"notice", all, Some("gz.yuexiu"))).unwrap();
        assert_eq!(c.inbox.len(), 1);
        assert_eq!(c.inbox[0].unit, "gz/civil-affairs");
        assert_eq!(c.outbox.len(), 1);
        assert_eq!(c.outbox[0].next_hop, "gz.haizhu");
        assert!(c.tracking.is_empty(), "status is kept at the sender's node only");
        // A delivery report, signed by this node, goes back toward the sender.
        assert_eq!(c.follow_ups.len(), 1);
        let report = c.follow_ups[0].message.as_ref().unwrap();
        let env = Envelope::from_canonical_bytes(&report.header).unwrap();
        assert_eq!(env.kind, Kind::DeliveryReport);
        assert_eq!(env.sender, UnitAddress::of_node(&here));
        assert_eq!(env.to, vec![u("gz.yuexiu/liurong-street")]);
        let signed = SignedEnvelope::from_canonical(report.header.clone(), report.signature).unwrap();
        signed.verify(&key.verifying_key()).unwrap();
        assert_eq!(c.follow_ups[0].outbox[0].next_hop, "gz.yuexiu");
        assert_eq!(s.delivered, vec![Kind::Document]);
        assert!(s.next_hops.contains(&n("gz.haizhu")) && s.next_hops.contains(&n("gz.yuexiu")));
    }

    #[test]
    fn back_at_the_sender_reports_and_receipts_move_the_status_forward() {
        let (dir, here, key) = (test_tree(), n("gz.yuexiu"), test_key(3));
        let doc = document();
        // The delivery report from 海珠.
        let report = DeliveryReport {
            message_id: doc.id,
            node: n("gz.haizhu"),
            delivered: vec![Delivered { unit: u("gz.haizhu/civil-affairs"), at_ms: 900 }],
            hops: vec![Hop { node: n("gz.yuexiu"), at_ms: 100 }, Hop { node: n("gz"), at_ms: 200 }, Hop { node: n("gz.haizhu"), at_ms: 300 }],
        };
        let (env, payload) = report.envelope(u("gz.yuexiu/liurong-street"), Priority::Express);
        let signed = env.sign(&test_key(4));
        let (c, _) = take(&at(&dir, &here, &key), incoming(signed, &payload, vec![u("gz.yuexiu/liurong-street")], Some("gz"))).unwrap();
        assert!(c.inbox.is_empty(), "reports are for the node, not the agency's inbox");
        assert_eq!(c.tracking.len(), 1);
        assert_eq!((c.tracking[0].state, c.tracking[0].node.as_str()), (RecipientState::Delivered, "gz.haizhu"));
        assert_eq!(c.events.iter().filter(|e| e.event == "hop").count(), 3);

        // The recipient's signed receipt.
        let receipt = exchange_wire::receipt::signed_for(u("gz.haizhu/civil-affairs"), u("gz.yuexiu/liurong-street"), doc.id, Priority::Express)
            .sign(&test_key(8));
        let rid = receipt.id;
        let (c, s) = take(&at(&dir, &here, &key), incoming(receipt, b"", vec![u("gz.yuexiu/liurong-street")], Some("gz"))).unwrap();
        assert_eq!(c.inbox.len(), 1, "the sender can read the receipt");
        assert_eq!(c.tracking[0].state, RecipientState::SignedFor);
        assert_eq!(c.tracking[0].message_id, doc.id.0);
        assert_eq!(c.tracking[0].receipt_id, Some(rid.0));
        assert_eq!(s.receipts_returned, vec![ReceiptType::SignedFor]);
    }

    #[test]
    fn an_unknown_recipient_is_refused_before_anything_is_decided() {
        let (dir, here, key) = (test_tree(), n("gz"), test_key(2));
        let doc = document();
        let err = take(&at(&dir, &here, &key), incoming(doc, b"notice", vec![u("gz.haizhu/nobody")], Some("gz.yuexiu")));
        assert_eq!(err.err().map(|r| r.code), Some("unknown-unit"));
    }
}
