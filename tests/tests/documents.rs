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

#[test]
fn urgent_documents_overtake_a_backlog() {
    let mut net = three_nodes(FAST_RETRY);
    let sender = unit("gz.yuexiu/civil-affairs");
    let to = unit("gz.haizhu/civil-affairs");
    // 海珠 is down: a backlog of routine documents builds up at the city, then urgent ones join it.
    net.stop("gz.haizhu").unwrap();
    let client = net.client_for(&sender);
    let send = |priority: exchange_wire::Priority, i: usize| {
        let mut e = exchange_wire::Envelope::new(exchange_wire::Kind::Document, sender.clone(), vec![to.clone()], vec![], priority, format!("{i}").as_bytes());
        e.metadata.insert("title".into(), format!("{priority} {i}"));
        let s = e.sign(&net.unit_keys[&sender]);
        client.submit(&s, format!("{i}").as_bytes()).unwrap();
        s.id
    };
    let routine: Vec<_> = (0..30).map(|i| send(exchange_wire::Priority::Routine, i)).collect();
    let express: Vec<_> = (30..40).map(|i| send(exchange_wire::Priority::Express, i)).collect();
    let urgent: Vec<_> = (40..45).map(|i| send(exchange_wire::Priority::Urgent, i)).collect();
    let city = net.node("gz").client();
    wait_for("the backlog at the city", Duration::from_secs(20), || {
        (metric(&city, "exchange_outbox_depth", &[("peer", "gz.haizhu")]) == 45.0).then_some(())
    });
    net.start("gz.haizhu").unwrap();
    let inbox = wait_for("the backlog delivered", Duration::from_secs(30), || {
        let items = read_inbox(&net.client_for(&to), &to);
        (items.len() == 45).then_some(items)
    });
    // Inbox order is delivery order: 特急 first, then 加急, then 平件, each in sending order.
    let order: Vec<_> = inbox.iter().map(|i| i.id).collect();
    let expected: Vec<_> = urgent.iter().chain(&express).chain(&routine).copied().collect();
    assert_eq!(order, expected);
}

#[test]
fn status_of_a_document_to_more_than_eighty_units() {
    let net = exchange_devnet::launcher::LocalNetwork::create(&node_binary(), None, &["gz", "gz.yuexiu", "gz.haizhu", "gz.tianhe", "gz.baiyun"], FAST_RETRY)
        .and_then(|mut n| n.start_all().map(|_| n))
        .unwrap();
    let sender = unit("gz/general-office");
    let recipients: Vec<exchange_wire::UnitAddress> = net.unit_keys.keys().filter(|u| **u != sender).cloned().collect();
    assert!(recipients.len() >= 80, "{} recipients", recipients.len());
    let to: Vec<&str> = recipients.iter().map(|u| u.as_str()).collect();
    let doc = document(&net.unit_keys[&sender], sender.as_str(), &to, &[], b"notice to all", "关于全市统一部署的通知");
    net.client_for(&sender).submit(&doc, b"notice to all").unwrap();
    // Every recipient signs for it, except every tenth, which returns it.
    for (i, r) in recipients.iter().enumerate() {
        let client = net.client_for(r);
        let item = wait_for(&format!("delivery to {r}"), Duration::from_secs(30), || read_inbox(&client, r).into_iter().find(|x| x.id == doc.id));
        let env = &item.message.envelope;
        if i % 10 == 0 {
            let back = returned(r.clone(), env.sender.clone(), doc.id, env.priority, "不属本单位职责").sign(&net.unit_keys[r]);
            client.return_message(r, &doc.id, &back).unwrap();
        } else {
            sign_for(&client, &net.unit_keys[r], r, &item);
        }
    }
    let status = wait_for("every outcome at the sender's node", Duration::from_secs(30), || {
        let s = net.client_for(&sender).status(&doc.id).ok()?;
        s.recipients.iter().all(|r| matches!(r.state, RecipientState::SignedFor | RecipientState::Returned)).then_some(s)
    });
    assert_eq!(status.recipients.len(), recipients.len());
    let returned_count = status.recipients.iter().filter(|r| r.state == RecipientState::Returned).count();
    assert_eq!(returned_count, recipients.len().div_ceil(10));
    assert!(status.recipients.iter().all(|r| r.receipt.is_some()), "every outcome carries its signed receipt");
}

#[test]
fn overdue_documents_are_listed_by_deadline_until_settled() {
    let net = three_nodes(FAST_RETRY);
    let sender = unit("gz/general-office");
    let to = unit("gz.haizhu/civil-affairs");
    let send = |title: &str, handling: &str, deadline: &str| {
        let mut e = exchange_wire::Envelope::new(exchange_wire::Kind::Document, sender.clone(), vec![to.clone()], vec![], exchange_wire::Priority::Routine, title.as_bytes());
        for (k, v) in [("title", title), ("handling", handling), ("deadline", deadline)] {
            e.metadata.insert(k.into(), v.into());
        }
        let s = e.sign(&net.unit_keys[&sender]);
        net.client_for(&sender).submit(&s, title.as_bytes()).unwrap();
        s
    };
    let later = send("两周前到期", "action", "2005-06-15");
    let earlier = send("一月到期", "action", "2005-01-10");
    send("阅件不计", "information", "2005-01-01");
    send("尚未到期", "action", "2999-12-31");
    let client = net.client_for(&to);
    wait_for("four documents delivered", Duration::from_secs(20), || (read_inbox(&client, &to).len() == 4).then_some(()));
    let overdue: Vec<_> = client.overdue(&to).unwrap().items.into_iter().map(|i| i.id).collect();
    assert_eq!(overdue, vec![earlier.id, later.id], "办件 past their deadline, earliest first");
    let item = read_inbox(&client, &to).into_iter().find(|i| i.id == earlier.id).unwrap();
    sign_for(&client, &net.unit_keys[&to], &to, &item);
    assert_eq!(client.overdue(&to).unwrap().items.into_iter().map(|i| i.id).collect::<Vec<_>>(), vec![later.id], "a settled document is no longer overdue");
}

#[test]
fn recall_withdraws_what_is_not_settled_and_both_sides_agree() {
    use exchange_wire::receipt::recall;
    let net = three_nodes(FAST_RETRY);
    let sender = unit("gz.yuexiu/liurong-street");
    let recipients: Vec<exchange_wire::UnitAddress> =
        net.unit_keys.keys().filter(|u| u.node_part() == "gz.haizhu").take(8).cloned().collect();
    let sender_client = net.client_for(&sender);
    let key = &net.unit_keys[&sender];

    // One document to eight 海珠 units. The first signs for it, then the sender recalls it from all.
    let to: Vec<&str> = recipients.iter().map(|u| u.as_str()).collect();
    let doc = document(key, sender.as_str(), &to, &[], b"draft", "有误的通知");
    sender_client.submit(&doc, b"draft").unwrap();
    let first = &recipients[0];
    let item = wait_for("delivered", Duration::from_secs(20), || read_inbox(&net.client_for(first), first).into_iter().next());
    for r in &recipients[1..] {
        wait_for("delivered", Duration::from_secs(20), || read_inbox(&net.client_for(r), r).into_iter().next());
    }
    sign_for(&net.client_for(first), &net.unit_keys[first], first, &item);
    let withdraw = recall(sender.clone(), recipients.clone(), doc.id, doc.envelope.priority, "发文字号有误，重新印发").sign(key);
    sender_client.recall(&doc.id, &withdraw).unwrap();

    let status = wait_for("every recipient settled or recalled", Duration::from_secs(20), || {
        let s = sender_client.status(&doc.id).ok()?;
        s.recipients.iter().all(|r| matches!(r.state, RecipientState::SignedFor | RecipientState::Recalled)).then_some(s)
    });
    for r in &status.recipients {
        let expected = if &r.unit == first { RecipientState::SignedFor } else { RecipientState::Recalled };
        assert_eq!(r.state, expected, "{}", r.unit);
        // The recipient's side says the same.
        let inbox = read_inbox(&net.client_for(&r.unit), &r.unit);
        assert_eq!(inbox[0].state, expected, "{} sees the same outcome", r.unit);
    }
    // A recalled document can no longer be signed for.
    let late = &recipients[1];
    let receipt = exchange_wire::receipt::signed_for(late.clone(), sender.clone(), doc.id, doc.envelope.priority).sign(&net.unit_keys[late]);
    assert_eq!(net.client_for(late).sign_for(late, &doc.id, &receipt).unwrap_err().code(), Some("conflict"));
    // Only the sender can recall.
    let other = unit("gz.yuexiu/beijing-street");
    let forged = recall(other.clone(), recipients.clone(), doc.id, doc.envelope.priority, "x").sign(&net.unit_keys[&other]);
    assert_eq!(net.client_for(&other).recall(&doc.id, &forged).unwrap_err().code(), Some("not-found"));
}

#[test]
fn a_recall_racing_sign_fors_ends_with_one_outcome_per_recipient() {
    use exchange_wire::receipt::recall;
    let net = three_nodes(FAST_RETRY);
    let sender = unit("gz/general-office");
    let recipients: Vec<exchange_wire::UnitAddress> =
        net.unit_keys.keys().filter(|u| u.node_part() == "gz.haizhu").take(10).cloned().collect();
    let key = net.unit_keys[&sender].clone();
    let to: Vec<&str> = recipients.iter().map(|u| u.as_str()).collect();
    let doc = document(&key, sender.as_str(), &to, &[], b"race", "竞争测试");
    net.client_for(&sender).submit(&doc, b"race").unwrap();
    let items: Vec<_> = recipients
        .iter()
        .map(|r| wait_for("delivered", Duration::from_secs(20), || read_inbox(&net.client_for(r), r).into_iter().next()))
        .collect();
    // Every recipient signs for at the same moment the sender recalls.
    let signers: Vec<_> = recipients
        .iter()
        .zip(items)
        .map(|(r, item)| {
            let (client, k, r) = (net.client_for(r), net.unit_keys[r].clone(), r.clone());
            std::thread::spawn(move || {
                let env = &item.message.envelope;
                let receipt = exchange_wire::receipt::signed_for(r.clone(), env.sender.clone(), item.id, env.priority).sign(&k);
                client.sign_for(&r, &item.id, &receipt).is_ok()
            })
        })
        .collect();
    let withdraw = recall(sender.clone(), recipients.clone(), doc.id, doc.envelope.priority, "撤回").sign(&key);
    net.client_for(&sender).recall(&doc.id, &withdraw).unwrap();
    let signed_ok: Vec<bool> = signers.into_iter().map(|t| t.join().unwrap()).collect();

    let status = wait_for("one outcome per recipient at the sender", Duration::from_secs(20), || {
        let s = net.client_for(&sender).status(&doc.id).ok()?;
        let all = s.recipients.iter().all(|r| matches!(r.state, RecipientState::SignedFor | RecipientState::Recalled));
        // Wait for every recall report too, so a sign-for that lost shows as recalled.
        let reported = net.node("gz").admin().events(&doc.id).ok()?.events.iter().filter(|e| e.event == "recalled" || e.event == "recall-too-late").count();
        (all && reported == recipients.len()).then_some(s)
    });
    for (r, ok) in recipients.iter().zip(signed_ok) {
        let at_sender = status.recipients.iter().find(|x| &x.unit == r).unwrap().state;
        let at_recipient = read_inbox(&net.client_for(r), r)[0].state;
        assert_eq!(at_sender, at_recipient, "{r}: sender and recipient agree");
        assert_eq!(ok, at_sender == RecipientState::SignedFor, "{r}: the sign-for succeeded exactly when it won");
    }
}

#[test]
fn a_resend_reaches_the_recipients_the_document_missed() {
    let net = three_nodes(FAST_RETRY);
    let sender = unit("gz/general-office");
    let (first, forgotten) = (unit("gz.yuexiu/civil-affairs"), unit("gz.haizhu/civil-affairs"));
    let key = &net.unit_keys[&sender];
    let doc = document(key, sender.as_str(), &[first.as_str()], &[], b"the body", "关于防汛的通知");
    let client = net.client_for(&sender);
    client.submit(&doc, b"the body").unwrap();

    // 补发 to the unit that was forgotten: same body, resend.of naming the original.
    let mut again = exchange_wire::Envelope::new(
        exchange_wire::Kind::Document,
        sender.clone(),
        vec![forgotten.clone()],
        vec![],
        doc.envelope.priority,
        b"the body",
    );
    again.metadata = doc.envelope.metadata.clone();
    again.metadata.insert("resend.of".into(), doc.id.to_hex());
    let again = again.sign(key);
    client.resend(&doc.id, &again, b"the body").unwrap();
    assert!(client.resend(&doc.id, &again, b"the body").unwrap().duplicate, "a retried 补发 is recognised");
    assert_eq!(client.submit(&again, b"the body").unwrap_err().code(), Some("malformed"), "a 补发 goes through its own route");
    let item = wait_for("the 补发 delivered", Duration::from_secs(20), || read_inbox(&net.client_for(&forgotten), &forgotten).into_iter().next());
    assert_eq!(item.message.envelope.metadata["resend.of"], doc.id.to_hex());
    sign_for(&net.client_for(&forgotten), &net.unit_keys[&forgotten], &forgotten, &item);

    // The original's status lists both recipients.
    let status = wait_for("the 补发 signed for, in the original's status", Duration::from_secs(20), || {
        let s = client.status(&doc.id).ok()?;
        s.recipients.iter().any(|r| r.unit == forgotten && r.state == RecipientState::SignedFor).then_some(s)
    });
    assert_eq!(status.recipients.len(), 2);
    assert!(status.recipients.iter().find(|r| r.unit == forgotten).unwrap().detail.as_deref().unwrap().contains(&again.id.to_hex()));

    // Not to someone who already has it, not with another body.
    let mut dup = exchange_wire::Envelope::new(exchange_wire::Kind::Document, sender.clone(), vec![first.clone()], vec![], doc.envelope.priority, b"the body");
    dup.metadata.insert("resend.of".into(), doc.id.to_hex());
    assert_eq!(client.resend(&doc.id, &dup.sign(key), b"the body").unwrap_err().code(), Some("malformed"));
    let mut other = exchange_wire::Envelope::new(exchange_wire::Kind::Document, sender.clone(), vec![unit("gz/civil-affairs")], vec![], doc.envelope.priority, b"another body");
    other.metadata.insert("resend.of".into(), doc.id.to_hex());
    assert_eq!(client.resend(&doc.id, &other.sign(key), b"another body").unwrap_err().code(), Some("malformed"));
}

#[test]
fn a_refusal_further_on_is_reported_to_the_sender() {
    // 海珠 takes payloads of at most 1 KiB; the city forwards a larger one and 海珠 refuses it for good.
    let mut net = exchange_devnet::launcher::LocalNetwork::create(&node_binary(), None, &["gz", "gz.yuexiu", "gz.haizhu"], FAST_RETRY).unwrap();
    let cfg_path = net.node("gz.haizhu").config_path.clone();
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(&cfg_path, format!("{cfg}\n[limits]\nmax_payload_bytes = 1024\n")).unwrap();
    net.start_all().unwrap();
    let sender = unit("gz.yuexiu/liurong-street");
    let to = unit("gz.haizhu/civil-affairs");
    let body = "大".repeat(1000).into_bytes();
    let doc = document(&net.unit_keys[&sender], sender.as_str(), &[to.as_str()], &[], &body, "过大的文件");
    net.client_for(&sender).submit(&doc, &body).unwrap();
    // The dead letter sits at the city; the sender's node learns it from the city's signed report.
    let status = wait_for("the failure reported to 越秀", Duration::from_secs(20), || {
        let s = net.client_for(&sender).status(&doc.id).ok()?;
        (s.recipients[0].state == RecipientState::Failed).then_some(s)
    });
    assert_eq!(status.recipients[0].node.as_str(), "gz");
    let detail = status.recipients[0].detail.clone().unwrap();
    assert!(detail.contains("gz.haizhu") && detail.contains("payload-too-large"), "{detail}");
    assert_eq!(net.node("gz").admin().dead_letters().unwrap().dead_letters.len(), 1);
}
