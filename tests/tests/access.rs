//! Identities and access control across real node processes: unit tokens (one unit cannot read
//! another's inbox or send in its name; a revoked token is refused), the access policy, the replay
//! window, suspension, and key revocation: refused at once for new envelopes, while what was accepted
//! before the revocation still delivers.

use std::time::Duration;

use exchange_tests::*;
use exchange_wire::api::{RecipientState, RotateKey};
use exchange_wire::{Envelope, Kind, Priority, PublicKey};

#[test]
fn tokens_bind_requests_to_their_unit() {
    let net = three_nodes(FAST_RETRY);
    let (a, b) = (unit("gz.haizhu/civil-affairs"), unit("gz.haizhu/chigang-street"));
    let as_a = net.client_for(&a);
    // A's token cannot read B's inbox, nor sign for B, nor submit in B's name.
    let err = as_a.inbox(&b, 0, 10, Duration::ZERO).unwrap_err();
    assert_eq!(err.code(), Some("forbidden"), "{err}");
    let doc = document(&net.unit_keys[&b], b.as_str(), &["gz/civil-affairs"], &[], b"x", "t");
    assert_eq!(as_a.submit(&doc, b"x").unwrap_err().code(), Some("forbidden"));
    // Without a token, or with a revoked one: refused, and the message says what to do.
    let anonymous = net.node("gz.haizhu").client();
    let err = anonymous.inbox(&a, 0, 10, Duration::ZERO).unwrap_err();
    assert_eq!(err.code(), Some("unauthenticated"));
    assert!(err.to_string().contains("Authorization: Bearer"), "{err}");
    let admin = net.node("gz.haizhu").admin();
    let id = admin.tokens(Some(&a)).unwrap().tokens[0].id.clone();
    admin.revoke_token(&id).unwrap();
    let err = as_a.inbox(&a, 0, 10, Duration::ZERO).unwrap_err();
    assert_eq!(err.code(), Some("unauthenticated"));
    assert!(err.to_string().contains("revoked"), "{err}");
    // Tokens are stored as hashes only.
    let db = std::fs::read(net.node("gz.haizhu").database_path()).unwrap();
    let token = &net.unit_tokens[&a];
    assert!(!db.windows(token.len()).any(|w| w == token.as_bytes()), "the token itself is not in the database");
}

#[test]
fn the_access_policy_refuses_at_ingress_naming_the_rule() {
    let policy = "[policy]\ndefault = \"allow\"\n\n[[policy.rules]]\nname = \"street offices write within their district\"\n\
                  from_kind = \"street-office\"\nto = \"gz/*\"\nkinds = [\"document\"]\naction = \"deny\"\n";
    let net = three_nodes(&format!("{FAST_RETRY}\n{policy}"));
    let street = unit("gz.yuexiu/liurong-street");
    let client = net.client_for(&street);
    let to_city = document(&net.unit_keys[&street], street.as_str(), &["gz/civil-affairs"], &[], b"x", "t");
    let err = client.submit(&to_city, b"x").unwrap_err();
    assert_eq!(err.code(), Some("policy-denied"));
    assert!(err.to_string().contains("street offices write within their district"), "{err}");
    // Another destination is allowed; a bureau may still write to the city.
    let local = document(&net.unit_keys[&street], street.as_str(), &["gz.yuexiu/civil-affairs"], &[], b"y", "t");
    client.submit(&local, b"y").unwrap();
    let bureau = unit("gz.yuexiu/civil-affairs");
    let up = document(&net.unit_keys[&bureau], bureau.as_str(), &["gz/civil-affairs"], &[], b"z", "t");
    net.client_for(&bureau).submit(&up, b"z").unwrap();
    assert_eq!(metric(&net.node("gz.yuexiu").client(), "exchange_messages_rejected_total", &[("reason", "policy-denied")]), 1.0);
}

#[test]
fn replay_window_suspension_and_key_revocation() {
    let mut net = three_nodes(FAST_RETRY);
    let sender = unit("gz.yuexiu/liurong-street");
    let recipient = unit("gz.haizhu/civil-affairs");
    let client = net.client_for(&sender);
    let old_key = net.unit_keys[&sender].clone();

    // An envelope signed ten minutes ago is refused at ingress (the window is five minutes).
    let mut e = Envelope::new(Kind::Document, sender.clone(), vec![recipient.clone()], vec![], Priority::Routine, b"old");
    e.created_at_ms -= 600_000;
    let err = client.submit(&e.sign(&old_key), b"old").unwrap_err();
    assert_eq!(err.code(), Some("stale-envelope"), "{err}");

    // Accepted before the revocation: a document queued at 越秀 while the city is down.
    net.stop("gz").unwrap();
    let before = document(&old_key, sender.as_str(), &[recipient.as_str()], &[], b"before", "吊销前");
    client.submit(&before, b"before").unwrap();

    // The key is stolen: the operator rotates to a new key and revokes the old one at once.
    let new_key = exchange_wire::keys::generate();
    let yuexiu_admin = net.node("gz.yuexiu").admin();
    yuexiu_admin
        .rotate_unit_key(&sender, &RotateKey { public_key: PublicKey(new_key.verifying_key()), overlap_secs: 0, revoke_old: true })
        .unwrap();
    // The document accepted before the revocation, re-sent, is recognised as held, not refused.
    assert!(client.submit(&before, b"before").unwrap().duplicate);
    let after = document(&old_key, sender.as_str(), &[recipient.as_str()], &[], b"after", "吊销后");
    let err = client.submit(&after, b"after").unwrap_err();
    assert_eq!(err.code(), Some("key-not-valid"), "{err}");
    let fresh = document(&new_key, sender.as_str(), &[recipient.as_str()], &[], b"fresh", "新密钥");
    client.submit(&fresh, b"fresh").unwrap();

    // The city comes back, learns the revocation, and still carries what was accepted before it.
    net.start("gz").unwrap();
    let inbox_client = net.client_for(&recipient);
    let got = wait_for("both documents delivered", Duration::from_secs(30), || {
        let ids: Vec<_> = read_inbox(&inbox_client, &recipient).into_iter().map(|i| i.id).collect();
        (ids.contains(&before.id) && ids.contains(&fresh.id)).then_some(ids)
    });
    assert!(!got.contains(&after.id));
    let unit_record = yuexiu_admin.unit(&sender).unwrap();
    assert!(unit_record.keys.iter().any(|k| k.revoked_at_ms.is_some()), "the old key is marked revoked");
    wait_for("the revocation known at 海珠", Duration::from_secs(10), || {
        let r = net.node("gz.haizhu").admin().unit(&sender).ok()?;
        r.keys.iter().any(|k| k.revoked_at_ms.is_some()).then_some(())
    });

    // Suspension: the unit can neither send nor be written to until it is activated again.
    yuexiu_admin.suspend_unit(&sender).unwrap();
    let doc = document(&new_key, sender.as_str(), &[recipient.as_str()], &[], b"s", "t");
    assert_eq!(client.submit(&doc, b"s").unwrap_err().code(), Some("unit-suspended"));
    let other = unit("gz.yuexiu/civil-affairs");
    let to_suspended = document(&net.unit_keys[&other], other.as_str(), &[sender.as_str()], &[], b"t", "t");
    assert_eq!(net.client_for(&other).submit(&to_suspended, b"t").unwrap_err().code(), Some("recipient-unavailable"));
    yuexiu_admin.activate_unit(&sender).unwrap();
    let doc = document(&new_key, sender.as_str(), &[recipient.as_str()], &[], b"again", "t");
    client.submit(&doc, b"again").unwrap();
    let status = wait_for("delivered after reactivation", Duration::from_secs(20), || {
        let s = client.status(&doc.id).ok()?;
        (s.recipients[0].state == RecipientState::Delivered).then_some(s)
    });
    assert_eq!(status.recipients[0].unit, recipient);
}

#[test]
fn a_message_resent_after_its_window_is_still_recognised_not_refused() {
    let net = three_nodes(&format!("{FAST_RETRY}\n[limits]\nclock_skew_secs = 1\n"));
    let sender = unit("gz.yuexiu/liurong-street");
    let client = net.client_for(&sender);
    let mut e = Envelope::new(Kind::Document, sender.clone(), vec![unit("gz.haizhu/civil-affairs")], vec![], Priority::Routine, b"once");
    e.created_at_ms -= 800;
    let signed = e.sign(&net.unit_keys[&sender]);
    assert!(!client.submit(&signed, b"once").unwrap().duplicate);
    // Once the window has passed, the same message is answered as held, so the sender does not sign
    // it again (which would make a second message); a new one that old is refused.
    wait_for("the replay window to pass", Duration::from_secs(5), || {
        (exchange_wire::now_ms() > signed.envelope.created_at_ms + 1500).then_some(())
    });
    assert!(client.submit(&signed, b"once").unwrap().duplicate);
    // The held message re-sent with another payload keeps the refusal it always gets: the payload
    // does not match (signing it again, as `stale-envelope` would advise, is not the fix).
    let err = client.submit(&signed, b"twice").unwrap_err();
    assert_eq!(err.code(), Some("payload-mismatch"), "{err}");
    assert!(!err.to_string().contains("sign"), "no advice to sign again: {err}");
    let mut stale = Envelope::new(Kind::Document, sender.clone(), vec![unit("gz.haizhu/civil-affairs")], vec![], Priority::Routine, b"new");
    stale.created_at_ms -= 5_000;
    assert_eq!(client.submit(&stale.sign(&net.unit_keys[&sender]), b"new").unwrap_err().code(), Some("stale-envelope"));
}
