//! (d) Bad input at the agency API: a forged signature, an altered payload, an unknown unit, no or
//! someone else's token, malformed JSON and oversized payloads. Each gets a clear error naming
//! what was wrong, is counted in `exchange_messages_rejected_total` and written to the audit table,
//! and changes no custody state: the node's SQLite file is compared before and after.

use exchange_tests::*;
use exchange_wire::api::{RecipientState, SignedMessage, b64_encode};
use exchange_wire::client::ApiClient;

/// Submits a body, then checks status, error code, a phrase of the message, the metric, the audit
/// entry and that no custody table changed.
fn expect_refused(net: &exchange_devnet::launcher::LocalNetwork, body: &[u8], status: u16, code: &str, phrase: &str) {
    let token = net.unit_tokens[&unit("gz.yuexiu/liurong-street")].clone();
    expect_refused_as(net, Some(&token), body, status, code, phrase);
}

/// [`expect_refused`] with the given token (or none).
fn expect_refused_as(net: &exchange_devnet::launcher::LocalNetwork, token: Option<&str>, body: &[u8], status: u16, code: &str, phrase: &str) {
    let node = net.node("gz.yuexiu");
    let client: ApiClient = node.client();
    let metric_before = metric(&client, "exchange_messages_rejected_total", &[("reason", code)]);
    let before = stored_counts(&node.database_path());
    let (got_status, got) = post_raw(&format!("{}/v1/messages", node.api_url), body, token);
    assert_eq!(got_status, status, "HTTP status for {code}: {got}");
    assert_eq!(got["error"], code, "error code: {got}");
    let message = got["message"].as_str().unwrap_or_default();
    assert!(message.contains(phrase), "the message {message:?} should mention {phrase:?}");
    let after = stored_counts(&node.database_path());
    assert_eq!(metric(&client, "exchange_messages_rejected_total", &[("reason", code)]), metric_before + 1.0, "metric for {code}");
    assert_eq!(
        (after.messages, after.outbox, after.inbox, after.tracking, after.events),
        (before.messages, before.outbox, before.inbox, before.tracking, before.events),
        "no custody state changed for {code}"
    );
    // Refusals before authentication are audited in aggregate, later (tests/tests/agency_refusals.rs).
    let audited = if code == "unauthenticated" { 0 } else { 1 };
    assert_eq!(after.audit, before.audit + audited, "audit entries for {code}");
}

fn json(m: &SignedMessage) -> Vec<u8> {
    serde_json::to_vec(m).unwrap()
}

#[test]
fn bad_input_is_refused_clearly_counted_and_changes_nothing() {
    let net = three_nodes("[limits]\nmax_payload_bytes = 65536\n");
    let sender = "gz.yuexiu/liurong-street";
    let key = &net.unit_keys[&unit(sender)];
    let other_key = &net.unit_keys[&unit("gz.yuexiu/beijing-street")];

    // A good document first, so the node has state that must stay as it is.
    let good = document(key, sender, &["gz.haizhu/civil-affairs"], &[], b"ok", "good");
    let yuexiu = net.client_for(&unit(sender));
    yuexiu.submit(&good, b"ok").unwrap();
    // Wait until it has settled (delivered, and the delivery report back), so nothing else changes
    // the node's state while the bad input arrives.
    wait_for("the good document delivered and reported", std::time::Duration::from_secs(20), || {
        let delivered = yuexiu.status(&good.id).ok()?.recipients.iter().all(|r| r.state == RecipientState::Delivered);
        (delivered && stored_counts(&net.node("gz.yuexiu").database_path()).outbox == 0).then_some(())
    });

    // Forged: signed with another unit's key, claiming to be liurong-street.
    let forged = document(other_key, sender, &["gz.haizhu/civil-affairs"], &[], b"forged", "forged");
    expect_refused(&net, &json(&submission(&forged, b"forged")), 403, "bad-signature", "forged");

    // Altered payload: the signature is fine but the payload is not the one signed.
    let doc = document(key, sender, &["gz.haizhu/civil-affairs"], &[], b"original", "t");
    let mut altered = submission(&doc, b"original");
    altered.payload = b64_encode(b"altered!");
    expect_refused(&net, &json(&altered), 400, "payload-mismatch", "payload");

    // Classified: 机密 documents never travel on this network.
    let mut secret = exchange_wire::Envelope::new(
        exchange_wire::Kind::Document,
        unit(sender),
        vec![unit("gz.haizhu/civil-affairs")],
        vec![],
        exchange_wire::Priority::Urgent,
        b"secret",
    );
    secret.metadata.insert("classification".into(), "机密".into());
    let secret = secret.sign(key);
    expect_refused(&net, &json(&submission(&secret, b"secret")), 403, "classified", "classified documents");

    // Unknown recipient.
    let lost = document(key, sender, &["gz.haizhu/no-such-office"], &[], b"x", "t");
    expect_refused(&net, &json(&submission(&lost, b"x")), 422, "unknown-unit", "gz.haizhu/no-such-office");

    // No token, a token this node never issued, and liurong-street's token used for beijing-street.
    let haizhu_unit = "gz.haizhu/civil-affairs";
    let fine = json(&submission(&doc, b"original"));
    expect_refused_as(&net, None, &fine, 401, "unauthenticated", "token");
    expect_refused_as(&net, Some("govx_not-a-token"), &fine, 401, "unauthenticated", "not one this node issued");
    let beijing = document(other_key, "gz.yuexiu/beijing-street", &["gz/civil-affairs"], &[], b"x", "t");
    expect_refused(&net, &json(&submission(&beijing, b"x")), 403, "forbidden", "cannot act for gz.yuexiu/beijing-street");

    // Malformed JSON, and JSON of the wrong shape.
    expect_refused(&net, b"{\"envelope\": {", 400, "malformed", "JSON");
    expect_refused(&net, b"{\"hello\": 1}", 400, "malformed", "envelope");

    // Oversized: a payload over limits.max_payload_bytes, and a body over the HTTP body limit.
    let big = vec![b'x'; 100 * 1024];
    let oversized = document(key, sender, &["gz.haizhu/civil-affairs"], &[], &big, "big");
    expect_refused(&net, &json(&submission(&oversized, &big)), 413, "payload-too-large", "65536");
    let huge = vec![b' '; 20 * 1024 * 1024];
    expect_refused(&net, &huge, 413, "payload-too-large", "larger than this node accepts");

    // Signing for something that is not in the inbox.
    let haizhu = net.client_for(&unit(haizhu_unit));
    let receipt = exchange_wire::receipt::signed_for(unit(haizhu_unit), unit(sender), forged.id, forged.envelope.priority)
        .sign(&net.unit_keys[&unit(haizhu_unit)]);
    let err = haizhu.sign_for(&unit(haizhu_unit), &forged.id, &receipt).unwrap_err();
    assert_eq!(err.code(), Some("not-found"), "{err}");
}
