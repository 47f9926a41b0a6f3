//! The official document life cycle so far: one recipient signs for (签收), another returns (退回)
//! with a reason; the sender's node shows both, each with the recipient's signed receipt; a document
//! is settled once (no return after a sign-for); recipients look up the sender's keys to verify
//! offline.

use std::time::Duration;

use exchange_tests::*;
use exchange_wire::api::RecipientState;
use exchange_wire::receipt::{Receipt, ReceiptType, returned, signed_for};
use exchange_wire::SignedEnvelope;

#[test]
fn sign_for_or_return_each_recipient_once() {
    let net = three_nodes(FAST_RETRY);
    let sender = unit("gz.yuexiu/liurong-street");
    let (bureau, city) = (unit("gz.haizhu/civil-affairs"), unit("gz/civil-affairs"));
    let mut doc = exchange_wire::Envelope::new(
        exchange_wire::Kind::Document,
        sender.clone(),
        vec![bureau.clone()],
        vec![city.clone()],
        exchange_wire::Priority::Express,
        b"body",
    );
    for (k, v) in [("title", "关于报送人口统计数据的通知"), ("doc-number", "越六榕〔2005〕21号"), ("handling", "action"), ("deadline", "2005-06-30")] {
        doc.metadata.insert(k.into(), v.into());
    }
    let doc = doc.sign(&net.unit_keys[&sender]);
    net.client_for(&sender).submit(&doc, b"body").unwrap();

    // The bureau signs for it; the city department returns it with a reason.
    let item = wait_for("at the bureau", Duration::from_secs(20), || read_inbox(&net.client_for(&bureau), &bureau).into_iter().next());
    // The recipient looks up the sender's public key in the directory and verifies offline.
    let record = net.client_for(&bureau).directory_unit(&sender).unwrap();
    let (got, _) = item.message.decode().unwrap();
    assert!(record.keys.iter().any(|k| got.verify(&k.public_key.0).is_ok()), "verifies with a directory key");
    let receipt = signed_for(bureau.clone(), sender.clone(), doc.id, doc.envelope.priority).sign(&net.unit_keys[&bureau]);
    net.client_for(&bureau).sign_for(&bureau, &doc.id, &receipt).unwrap();

    wait_for("at the city", Duration::from_secs(20), || read_inbox(&net.client_for(&city), &city).into_iter().next());
    let reason = "本单位不是该事项的主管部门，请改送市统计局";
    let back = returned(city.clone(), sender.clone(), doc.id, doc.envelope.priority, reason).sign(&net.unit_keys[&city]);
    net.client_for(&city).return_message(&city, &doc.id, &back).unwrap();
    // Settled once: no sign-for after a return, no return after a sign-for.
    let again = signed_for(city.clone(), sender.clone(), doc.id, doc.envelope.priority).sign(&net.unit_keys[&city]);
    assert_eq!(net.client_for(&city).sign_for(&city, &doc.id, &again).unwrap_err().code(), Some("conflict"));
    let late = returned(bureau.clone(), sender.clone(), doc.id, doc.envelope.priority, "too late").sign(&net.unit_keys[&bureau]);
    assert_eq!(net.client_for(&bureau).return_message(&bureau, &doc.id, &late).unwrap_err().code(), Some("conflict"));
    // A return without a reason is refused.
    let mut bare = returned(city.clone(), sender.clone(), doc.id, doc.envelope.priority, "x");
    bare.metadata.remove("receipt.reason");
    let err = net.client_for(&city).return_message(&city, &doc.id, &bare.sign(&net.unit_keys[&city])).unwrap_err();
    assert_eq!(err.code(), Some("malformed"), "{err}");

    let status = wait_for("both outcomes at the sender's node", Duration::from_secs(20), || {
        let s = net.client_for(&sender).status(&doc.id).ok()?;
        let state = |u: &exchange_wire::UnitAddress| s.recipients.iter().find(|r| &r.unit == u).map(|r| r.state);
        (state(&bureau) == Some(RecipientState::SignedFor) && state(&city) == Some(RecipientState::Returned)).then_some(s)
    });
    let city_status = status.recipients.iter().find(|r| r.unit == city).unwrap();
    assert_eq!(city_status.detail.as_deref(), Some(reason));
    let view = city_status.receipt.as_ref().unwrap();
    let sig = exchange_wire::api::signature_from_hex(&view.signature).unwrap();
    let receipt = SignedEnvelope::from_parts(view.envelope.clone(), sig);
    receipt.verify(&net.unit_keys[&city].verifying_key()).expect("the return is signed by the city department");
    assert_eq!(Receipt::from_envelope(&receipt.envelope).unwrap().receipt_type, ReceiptType::Returned);
    let yuexiu = net.node("gz.yuexiu").client();
    assert_eq!(metric(&yuexiu, "exchange_receipts_total", &[("type", "returned"), ("direction", "returned")]), 1.0);
}
