//! (a) Cross-tier delivery with receipts, across three real node processes: a street office in 越秀
//! sends to two units in 海珠 and one city department; the document crosses each link once, fans out
//! at 海珠, lands in every inbox with the sender's signature intact, and every 签收 receipt comes back
//! signed. A re-sent document is recognised and not delivered again.

use std::time::Duration;

use exchange_tests::*;
use exchange_wire::api::RecipientState;
use exchange_wire::receipt::Receipt;
use exchange_wire::SignedEnvelope;

#[test]
fn document_crosses_tiers_and_receipts_come_back() {
    let net = three_nodes(FAST_RETRY);
    let sender = unit("gz.yuexiu/liurong-street");
    let recipients = [unit("gz.haizhu/civil-affairs"), unit("gz.haizhu/chigang-street"), unit("gz/civil-affairs")];
    let payload = "关于开展2005年度人口抽样调查的通知（正文）".repeat(20).into_bytes();
    let doc = document(
        &net.unit_keys[&sender],
        sender.as_str(),
        &["gz.haizhu/civil-affairs", "gz.haizhu/chigang-street"],
        &["gz/civil-affairs"],
        &payload,
        "关于开展2005年度人口抽样调查的通知",
    );
    let yuexiu = net.client_for(&sender);
    let accepted = yuexiu.submit(&doc, &payload).expect("submit");
    assert_eq!(accepted.id, doc.id);
    assert!(!accepted.duplicate);

    for r in &recipients {
        let client = net.client_for(r);
        let item = wait_for(&format!("{} in the inbox of {r}", short(&doc.id)), Duration::from_secs(30), || {
            read_inbox(&client, r).into_iter().find(|i| i.id == doc.id)
        });
        let (signed, got) = verify_item(&item, &net.unit_keys[&sender]);
        assert_eq!(got, payload, "payload arrives unchanged");
        assert_eq!(signed.envelope.metadata["title"], "关于开展2005年度人口抽样调查的通知");
        sign_for(&client, &net.unit_keys[r], r, &item);
    }

    let status = wait_for("all three receipts at the sender's node", Duration::from_secs(30), || {
        let s = yuexiu.status(&doc.id).expect("status");
        s.recipients.iter().all(|r| r.state == RecipientState::SignedFor).then_some(s)
    });
    assert_eq!(status.recipients.len(), 3);
    for r in &status.recipients {
        let view = r.receipt.as_ref().expect("receipt attached");
        let sig = exchange_wire::api::signature_from_hex(&view.signature).unwrap();
        let receipt = SignedEnvelope::from_parts(view.envelope.clone(), sig);
        receipt.verify(&net.unit_keys[&r.unit].verifying_key()).expect("receipt signed by the recipient");
        assert_eq!(Receipt::from_envelope(&receipt.envelope).unwrap().for_message, doc.id);
        assert_eq!(r.node.as_str(), r.unit.node_part(), "signed for at the recipient's home node");
    }
    let path: Vec<&str> = status.hops.iter().map(|h| h.node.as_str()).collect();
    assert_eq!(path, ["gz.yuexiu", "gz", "gz.haizhu"]);

    // Once per link: the city received one copy and passed one copy down to 海珠 for both of its units.
    let city_events = net.node("gz").admin().events(&doc.id).unwrap().events;
    assert_eq!(city_events.iter().filter(|e| e.event == "received").count(), 1);
    let down: Vec<_> = city_events.iter().filter(|e| e.event == "forwarded").collect();
    assert_eq!(down.len(), 1, "one copy toward 海珠: {city_events:?}");
    assert_eq!(down[0].peer.as_ref().unwrap().as_str(), "gz.haizhu");
    let haizhu_events = net.node("gz.haizhu").admin().events(&doc.id).unwrap().events;
    assert_eq!(haizhu_events.iter().filter(|e| e.event == "received").count(), 1);
    assert_eq!(haizhu_events.iter().filter(|e| e.event == "delivered").count(), 2, "fans out at 海珠");

    // Re-sending the same signed document is recognised at ingress: nothing is stored or queued, so
    // no second copy can travel.
    let yuexiu_db = net.node("gz.yuexiu").database_path();
    let before = stored_counts(&yuexiu_db);
    let again = yuexiu.submit(&doc, &payload).expect("resubmit");
    assert!(again.duplicate, "the same id is recognised");
    let after = stored_counts(&yuexiu_db);
    assert_eq!((after.messages, after.outbox, after.tracking), (before.messages, before.outbox, before.tracking));
    assert_eq!(after.outbox, 0, "nothing left to forward");
    for r in &recipients {
        let client = net.client_for(r);
        let copies = read_inbox(&client, r).into_iter().filter(|i| i.id == doc.id).count();
        assert_eq!(copies, 1, "{r} has the document exactly once");
    }
}

#[test]
fn local_delivery_within_one_district() {
    let net = three_nodes(FAST_RETRY);
    let sender = unit("gz.haizhu/civil-affairs");
    let to = unit("gz.haizhu/chigang-street");
    let doc = document(&net.unit_keys[&sender], sender.as_str(), &[to.as_str()], &[], b"local notice", "本区通知");
    let (from_client, to_client) = (net.client_for(&sender), net.client_for(&to));
    from_client.submit(&doc, b"local notice").unwrap();
    let item = wait_for("local delivery", Duration::from_secs(10), || read_inbox(&to_client, &to).into_iter().next());
    verify_item(&item, &net.unit_keys[&sender]);
    sign_for(&to_client, &net.unit_keys[&to], &to, &item);
    wait_for("receipt", Duration::from_secs(10), || {
        let s = from_client.status(&doc.id).unwrap();
        (s.recipients[0].state == RecipientState::SignedFor).then_some(())
    });
    // Nothing went up to the city.
    assert!(net.node("gz").admin().events(&doc.id).unwrap().events.is_empty());
}
