//! Custody rules as plain functions: given a verified message and the recipients this node is now
//! responsible for, decide every row that must be committed together: the message, outbox entries per
//! next hop, inbox deliveries, status facts and follow-up messages (delivery reports). No I/O here, so
//! the rules are testable without storage or network.


use exchange_wire::api::RecipientState;
use exchange_wire::receipt::{
    Delivered, DeliveryReport, FailureReport, Hop, META_REPORT_TYPE, NodeReport, Receipt, ReceiptType, RecallReport,
    recalled_message,
};
use exchange_wire::{Kind, NodeId, UnitAddress};

pub use super::handover::{Context, Incoming, Summary, event};
use super::refusal::Refusal;
use crate::directory::Directory;
use crate::routing::{self, NextHop};
use crate::storage::{Custody, InboxRow, MessageRow, OutboxRow, RecallRow, TrackingRow};

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

/// Refuses a recipient that is not a unit's inbox: `<node>/_node` is the address a node signs its
/// reports and directory segments with; nothing is ever delivered to it, so a message to it would
/// sit in an inbox nobody can read.
pub fn check_recipients<'a>(recipients: impl IntoIterator<Item = &'a UnitAddress>) -> Result<(), Refusal> {
    match recipients.into_iter().find(|r| r.is_node()) {
        Some(r) => Err(Refusal::new(
            "reserved-recipient",
            422,
            format!(
                "{r} is node {}'s own address (it signs reports with it), not a unit's inbox; address the message to units (GET /v1/directory/units/... shows who is registered)",
                r.node_part()
            ),
        )),
        None => Ok(()),
    }
}

/// The nodes on the tree path between nodes `a` and `b`, both included.
fn path_between<'a>(dir: &'a Directory, a: &'a NodeId, b: &'a NodeId) -> Vec<&'a NodeId> {
    let up_b: Vec<&NodeId> = dir.ancestors(b).collect();
    let mut path = Vec::new();
    for n in dir.ancestors(a) {
        path.push(n);
        if let Some(at) = up_b.iter().position(|x| *x == n) {
            path.extend(up_b[..at].iter().copied());
            return path;
        }
    }
    path
}

/// A node's report may speak only for what that node saw: a delivery or recall report only for units
/// it hosts (their inboxes are there), a failure report only for recipients whose route runs
/// through it (it held their copy). Anything else is a node speaking for another node's units, so
/// the report is refused whole and nothing of it is recorded. Units no longer listed are judged by
/// the node part of their address, which the directory requires to be their home.
fn check_report(dir: &Directory, env: &exchange_wire::Envelope, payload: &[u8]) -> Result<(), Refusal> {
    let hosts = |node: &NodeId, u: &UnitAddress| dir.home_of(u).map_or(u.node_part() == node.as_str(), |h| &h == node);
    let refuse = |node: &NodeId, u: &UnitAddress, what: &str| {
        Err(Refusal::new(
            "report-not-hosted",
            403,
            format!("node {node} sent a {what} report about {u}, {}; a node reports only on its own units' inboxes and the copies it held, so nothing of the report was recorded", if what == "failure" { "whose route does not pass through it" } else { "which it does not host" }),
        ))
    };
    match env.metadata.get(META_REPORT_TYPE).map(String::as_str) {
        Some("failed") => {
            let r = FailureReport::from_envelope(env, payload)?;
            // The report goes to the document's sender; its copy travelled from the sender's node.
            let origin = env.to.first().and_then(|s| dir.home_of(s));
            for u in &r.units {
                let on_route = match (&origin, dir.home_of(u)) {
                    (Some(o), Some(h)) => path_between(dir, o, &h).contains(&&r.node),
                    _ => hosts(&r.node, u),
                };
                if !on_route {
                    return refuse(&r.node, u, "failure");
                }
            }
        }
        Some("recall") => {
            let r = RecallReport::from_envelope(env, payload)?;
            if let Some(o) = r.outcomes.iter().find(|o| !hosts(&r.node, &o.unit)) {
                return refuse(&r.node, &o.unit, "recall");
            }
        }
        _ => {
            let r = DeliveryReport::from_envelope(env, payload)?;
            if let Some(d) = r.delivered.iter().find(|d| !hosts(&r.node, &d.unit)) {
                return refuse(&r.node, &d.unit, "delivery");
            }
        }
    }
    Ok(())
}

/// Decides everything that taking custody of `m` commits.
pub fn take(ctx: &Context, m: Incoming) -> Result<(Custody, Summary), Refusal> {
    let env = &m.signed.envelope;
    let id = m.signed.id.0;
    let here = ctx.here;
    let now = ctx.now_ms;
    check_recipients(&m.recipients)?;
    if env.kind == Kind::DeliveryReport {
        check_report(ctx.dir, env, &m.payload)?;
    }
    let mut hops = m.hops.clone();
    hops.push(Hop { node: here.clone(), at_ms: now });
    let plan = routing::plan(ctx.dir, here, &m.recipients)?;
    let origin = m.from.is_none();

    // The header and payload are moved into the row once the rules below have read them.
    let mut row = MessageRow {
        id,
        header: Vec::new(),
        signature: m.signed.signature,
        payload: Vec::new(),
        kind: env.kind.as_str().to_string(),
        sender: env.sender.to_string(),
        priority: env.priority.rank(),
        created_at_ms: env.created_at_ms as i64,
        received_at_ms: now as i64,
        received_from: m.from.as_ref().map(|f| f.to_string()),
        hops: serde_json::to_string(&hops).expect("hops serialise"),
    };
    let mut c = Custody::default();
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
                if env.priority.is_urgent() {
                    summary.urgent_hops.insert(next.clone());
                }
                summary.next_hops.insert(next);
            }
            NextHop::Local => deliver_here(ctx, &m, &units, &hops, &mut c, &mut summary)?,
        }
    }
    row.header = m.signed.bytes;
    row.payload = m.payload;
    c.message = Some(row);
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
    match env.kind {
        // A query is delivered like a document; its asker's node learns of it from the report.
        Kind::Document | Kind::Query => deliver_document(ctx, m, units, hops, c, summary),
        Kind::Receipt => deliver_receipt(ctx, m, units, c, summary),
        Kind::Answer => deliver_answer(ctx, m, units, c, summary),
        Kind::DirectorySegment => {
            Err(Refusal::new("unsupported-kind", 400, "directory segments travel on the directory protocol, not as messages"))
        }
        Kind::DataRecord => Err(Refusal::new(
            "unsupported-kind",
            400,
            "a data-record travels inside its owner node's data-delivery; publish it at POST /v1/records",
        )),
        Kind::DataDelivery | Kind::SubscriptionRequest | Kind::SubscriptionDecision => super::sharing::delivery::deliver(ctx, m, units, c, summary),
        Kind::Recall => take_recall(ctx, m, units, c, summary),
        Kind::DeliveryReport => match env.metadata.get(META_REPORT_TYPE).map(String::as_str) {
            Some("failed") => record_failure_report(ctx, m, c),
            Some("recall") => record_recall_report(ctx, m, c),
            _ => record_delivery_report(ctx, m, c),
        },
    }
}

/// A document or query for units here: into their inboxes, and the sender's status learns of it
/// (here at once, or by a delivery report sent back in the same commit).
fn deliver_document(
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
        report_delivery(ctx, m, units, hops, c, summary);
    }
    Ok(())
}

/// The delivery report to the sender, taken into custody as a follow-up of the same commit.
fn report_delivery(ctx: &Context, m: &Incoming, units: &[UnitAddress], hops: &[Hop], c: &mut Custody, summary: &mut Summary) {
    let env = &m.signed.envelope;
    let now = ctx.now_ms;
    let report = DeliveryReport {
        message_id: m.signed.id,
        node: ctx.here.clone(),
        delivered: units.iter().map(|u| Delivered { unit: u.clone(), at_ms: now }).collect(),
        hops: hops.to_vec(),
    };
    let (envelope, payload) = report.envelope(env.sender.clone(), env.priority);
    let signed = envelope.sign(&ctx.node_key);
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

/// A 签收 or 退回 receipt for a sender here: into the inbox, and the document's status moves on.
fn deliver_receipt(ctx: &Context, m: &Incoming, units: &[UnitAddress], c: &mut Custody, summary: &mut Summary) -> Result<(), Refusal> {
    let env = &m.signed.envelope;
    let id = m.signed.id.0;
    let now = ctx.now_ms;
    let receipt = Receipt::from_envelope(env)?;
    let signer_home = ctx.dir.home_of(&env.sender).unwrap_or_else(|| ctx.here.clone());
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
    Ok(())
}

/// The asker's node: the answer settles the query unless its deadline was recorded first (the
/// tracking row moves forward only); either way the asker can read it.
fn deliver_answer(ctx: &Context, m: &Incoming, units: &[UnitAddress], c: &mut Custody, summary: &mut Summary) -> Result<(), Refusal> {
    let env = &m.signed.envelope;
    let id = m.signed.id.0;
    let now = ctx.now_ms;
    let query = exchange_wire::query::answered(env).map_err(|e| Refusal::malformed(e.to_string()))?;
    let signer_home = ctx.dir.home_of(&env.sender).unwrap_or_else(|| ctx.here.clone());
    for u in units {
        c.inbox.push(InboxRow { unit: u.to_string(), message_id: id, delivered_at_ms: now as i64 });
        summary.delivered.push(Kind::Answer);
    }
    let mut t = tracking(query.0, &env.sender, RecipientState::Answered, &signer_home, now);
    t.receipt_id = Some(id);
    c.tracking.push(t);
    c.events.push(event(query.0, now, "answer", Some(&env.sender), None, Some(m.signed.id.to_hex())));
    summary.answers += 1;
    Ok(())
}

/// A recall for units here: decided in the commit, in order with any 签收 or 退回 of the same entry.
fn take_recall(ctx: &Context, m: &Incoming, units: &[UnitAddress], c: &mut Custody, summary: &mut Summary) -> Result<(), Refusal> {
    let env = &m.signed.envelope;
    let id = m.signed.id.0;
    let now = ctx.now_ms;
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
    Ok(())
}

/// A failure report for a sender here: the recipients it names failed.
fn record_failure_report(ctx: &Context, m: &Incoming, c: &mut Custody) -> Result<(), Refusal> {
    let now = ctx.now_ms;
    let report = FailureReport::from_envelope(&m.signed.envelope, &m.payload)?;
    let orig = report.message_id.0;
    for u in &report.units {
        let mut t = tracking(orig, u, RecipientState::Failed, &report.node, now);
        t.detail = Some(report.reason.clone());
        c.tracking.push(t);
        c.events.push(event(orig, now, "failure-reported", Some(u), Some(&report.node), Some(report.reason.clone())));
    }
    Ok(())
}

/// A recall report for a sender here: recalled, refused, or settled first, per unit.
fn record_recall_report(ctx: &Context, m: &Incoming, c: &mut Custody) -> Result<(), Refusal> {
    let now = ctx.now_ms;
    let report = RecallReport::from_envelope(&m.signed.envelope, &m.payload)?;
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
    Ok(())
}

/// A delivery report for a sender here: the recipients it names were delivered, and the hops the
/// document took.
fn record_delivery_report(ctx: &Context, m: &Incoming, c: &mut Custody) -> Result<(), Refusal> {
    let now = ctx.now_ms;
    let report = DeliveryReport::from_envelope(&m.signed.envelope, &m.payload)?;
    let orig = report.message_id.0;
    for d in &report.delivered {
        c.tracking.push(tracking(orig, &d.unit, RecipientState::Delivered, &report.node, d.at_ms));
        c.events.push(event(orig, now, "delivery-reported", Some(&d.unit), Some(&report.node), None));
    }
    for h in &report.hops {
        c.events.push(event(orig, h.at_ms, "hop", None, Some(&h.node), None));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{test_key, test_tree};
    use ed25519_dalek::SigningKey;
    use exchange_wire::{Envelope, Priority, SignedEnvelope};

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
        Context { here, dir, node_key: key.clone(), now_ms: 1_000 }
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
    fn a_node_reports_only_on_its_own_units_and_the_routes_it_is_on() {
        let (dir, here, key) = (test_tree(), n("gz.yuexiu"), test_key(3));
        let doc = document();
        let sender = u("gz.yuexiu/liurong-street");
        let take_report = |env: exchange_wire::Envelope, payload: Vec<u8>, signer: u8| {
            take(&at(&dir, &here, &key), incoming(env.sign(&test_key(signer)), &payload, vec![sender.clone()], Some("gz")))
        };
        // 海珠 claims delivery to the city's unit: refused whole.
        let forged = DeliveryReport { message_id: doc.id, node: n("gz.haizhu"), delivered: vec![Delivered { unit: u("gz/civil-affairs"), at_ms: 9 }], hops: vec![] };
        let (env, payload) = forged.envelope(sender.clone(), Priority::Express);
        assert_eq!(take_report(env, payload, 4).err().map(|r| r.code), Some("report-not-hosted"));
        // ... and a recall of it.
        let recall = RecallReport {
            recall_id: doc.id,
            message_id: doc.id,
            node: n("gz.haizhu"),
            outcomes: vec![exchange_wire::receipt::RecallOutcome { unit: u("gz/civil-affairs"), outcome: "recalled".into() }],
        };
        let (env, payload) = recall.envelope(sender.clone(), Priority::Express);
        assert_eq!(take_report(env, payload, 4).err().map(|r| r.code), Some("report-not-hosted"));
        // A failure on a route 海珠 is not on (越秀 → 市) is refused; the city, on the route to 海珠, may report one.
        let failure = |node: &str, unit: &str| FailureReport { message_id: doc.id, node: n(node), units: vec![u(unit)], reason: "x".into() };
        let (env, payload) = failure("gz.haizhu", "gz/civil-affairs").envelope(sender.clone(), Priority::Express);
        assert_eq!(take_report(env, payload, 4).err().map(|r| r.code), Some("report-not-hosted"));
        let (env, payload) = failure("gz", "gz.haizhu/civil-affairs").envelope(sender.clone(), Priority::Express);
        assert!(take_report(env, payload, 2).is_ok());
        // 海珠 on its own unit: taken.
        let own = DeliveryReport { message_id: doc.id, node: n("gz.haizhu"), delivered: vec![Delivered { unit: u("gz.haizhu/civil-affairs"), at_ms: 9 }], hops: vec![] };
        let (env, payload) = own.envelope(sender.clone(), Priority::Express);
        assert!(take_report(env, payload, 4).is_ok());
    }

    #[test]
    fn a_node_address_is_never_a_recipient() {
        let (dir, here, key) = (test_tree(), n("gz"), test_key(2));
        let doc = Envelope::new(Kind::Document, u("gz.yuexiu/liurong-street"), vec![u("gz.haizhu/_node")], vec![], Priority::Routine, b"x").sign(&test_key(7));
        let err = take(&at(&dir, &here, &key), incoming(doc, b"x", vec![u("gz.haizhu/_node")], Some("gz.yuexiu")));
        assert_eq!(err.err().map(|r| r.code), Some("reserved-recipient"));
    }

    #[test]
    fn an_unknown_recipient_is_refused_before_anything_is_decided() {
        let (dir, here, key) = (test_tree(), n("gz"), test_key(2));
        let doc = document();
        let err = take(&at(&dir, &here, &key), incoming(doc, b"notice", vec![u("gz.haizhu/nobody")], Some("gz.yuexiu")));
        assert_eq!(err.err().map(|r| r.code), Some("unknown-unit"));
    }
}
