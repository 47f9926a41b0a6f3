//! Base-data sharing (数据共享交换) across three real node processes (city, 越秀, 海珠): the example
//! catalog signed by the root and spread along the tree; deaths, marriages and household moves
//! published once by their owner and delivered to every subscriber in order; approval and refusal of
//! subscriptions; backfill from the beginning, a sequence number, a time or now; ordering under
//! concurrent publishers; a subscriber's node offline for a while; schema and ownership refusals.
//!
//! Every scenario ends by reconciling: each subscriber holds every record it is entitled to, once,
//! in sequence order, each verifying against its publisher's key, and nothing else.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use exchange_devnet::launcher::LocalNetwork;
use exchange_tests::*;
use exchange_wire::sharing::{self, DataItem, DecideRequest, StartFrom, SubscriptionView};
use exchange_wire::{MessageId, SignedEnvelope, UnitAddress};

const DEATH: &str = "person.death";
const MARRIAGE: &str = "person.marriage";
const DIVORCE: &str = "person.divorce";
const MOVE_OUT: &str = "person.move-out";

/// Three nodes with the example catalog (`configs/catalog.toml`) published at the root and held by
/// every node.
fn network() -> LocalNetwork {
    let net = three_nodes(FAST_RETRY);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/catalog.toml");
    let catalog = exchange_node_core::sharing::catalog_from_file(&path).expect("the example catalog loads");
    net.node("gz").admin().publish_catalog(&catalog).expect("the root signs the catalog");
    for n in net.nodes.values() {
        wait_for(&format!("the catalog at {}", n.id), Duration::from_secs(20), || {
            n.admin().admin_catalog().ok().filter(|c| c.version == catalog.version).map(|_| ())
        });
    }
    net
}

/// A 18-character citizen ID number for test subject `n`.
fn citizen(n: u32) -> String {
    format!("44010419{:02}0101{:04}", 50 + n % 40, n)
}

/// Signs and publishes a record as `owner`; returns the signed record.
fn publish(net: &LocalNetwork, owner: &UnitAddress, topic: &str, subject: &str, record: serde_json::Value) -> (SignedEnvelope, u64) {
    let payload = serde_json::to_vec(&record).unwrap();
    let signed = sharing::record(owner.clone(), topic, subject, &payload).sign(&net.unit_keys[owner]);
    let r = net.client_for(owner).publish(&signed, &payload).unwrap_or_else(|e| panic!("publish {topic}: {e}"));
    assert!(!r.duplicate);
    assert_eq!(r.id, signed.id);
    (signed, r.seq)
}

fn death(n: u32) -> (String, serde_json::Value) {
    let id = citizen(n);
    (id.clone(), serde_json::json!({"id_number": id, "name": format!("居民{n}"), "death_date": "2026-11-20", "place": "广州市越秀区"}))
}

fn move_out(n: u32, step: u32) -> (String, serde_json::Value) {
    let id = citizen(n);
    (id.clone(), serde_json::json!({"id_number": id, "moved_on": "2026-11-21", "from_address": format!("越秀区第{step}处"), "to_address": format!("海珠区第{step}处")}))
}

/// Sends a signed subscription request from `unit` for `topic` starting at `from`.
fn subscribe(net: &LocalNetwork, unit: &UnitAddress, topic: &str, from: StartFrom) -> SubscriptionView {
    let owner = net.client_for(unit).catalog().expect("catalog").topic(topic).expect("topic in catalog").owner.clone();
    let req = sharing::subscription_request(unit.clone(), owner, topic, from, "业务协同").sign(&net.unit_keys[unit]);
    net.client_for(unit).subscribe(&req, "业务协同".as_bytes()).unwrap_or_else(|e| panic!("{unit} subscribes to {topic}: {e}"))
}

/// Waits until `unit`'s home node shows its subscription to `topic` in `state`.
fn wait_state(net: &LocalNetwork, unit: &UnitAddress, topic: &str, state: &str) -> SubscriptionView {
    let client = net.client_for(unit);
    wait_for(&format!("{unit}'s subscription to {topic} {state}"), Duration::from_secs(30), || {
        client.subscriptions(unit).ok()?.subscriptions.into_iter().find(|s| s.topic == topic && s.state == state)
    })
}

/// Reads a subscriber's whole stream from the start (a replay), page by page.
fn read_all(net: &LocalNetwork, unit: &UnitAddress, topic: &str) -> Vec<DataItem> {
    let client = net.client_for(unit);
    let mut all: Vec<DataItem> = Vec::new();
    let mut after = 0;
    loop {
        let page = client.records(unit, topic, Some(after), 7, Duration::ZERO).expect("read records");
        if page.items.is_empty() {
            return all;
        }
        after = page.next_after;
        all.extend(page.items);
    }
}

/// Waits until `unit` holds `n` records of `topic` with none missing.
fn wait_records(net: &LocalNetwork, unit: &UnitAddress, topic: &str, n: usize) -> Vec<DataItem> {
    wait_for(&format!("{n} {topic} records at {unit}"), Duration::from_secs(60), || {
        let all = read_all(net, unit, topic);
        (all.len() >= n).then_some(all)
    })
}

/// The reconciliation: `unit` holds exactly `expected` (record ids, in sequence order starting at
/// `first`), once each, each verifying against the publisher's key.
fn reconcile(net: &LocalNetwork, unit: &UnitAddress, topic: &str, first: u64, expected: &[MessageId]) {
    let got = wait_records(net, unit, topic, expected.len());
    let ids: Vec<MessageId> = got.iter().map(|i| i.record.envelope.message_id()).collect();
    assert_eq!(ids, expected, "{unit}: every {topic} record it is entitled to, once, in order, nothing else");
    for (i, item) in got.iter().enumerate() {
        assert_eq!(item.seq, first + i as u64, "{unit}: sequence without gaps");
        assert_eq!(item.topic, topic);
        let (signed, _) = item.record.decode().expect("record decodes");
        signed.verify(&net.unit_keys[&signed.envelope.sender].verifying_key()).expect("the publisher's signature verifies at the subscriber");
    }
    let sub = net.client_for(unit).subscriptions(unit).unwrap().subscriptions.into_iter().find(|s| s.topic == topic).unwrap();
    assert_eq!(sub.received_up_to, Some(first + expected.len() as u64 - 1), "{unit}: progress shown with its subscription");
}

/// A count of rows in a node's SQLite file.
fn count(net: &LocalNetwork, node: &str, from: &str) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use sqlx::ConnectOptions;
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(net.node(node).database_path()).read_only(true);
        let mut conn = opts.connect().await.expect("open the node database");
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {from}"))).fetch_one(&mut conn).await.expect("count")
    })
}

#[test]
fn a_death_reaches_every_subscriber_once_in_order_across_tiers() {
    let net = network();
    let owner = unit("gz.yuexiu/civil-affairs");
    let social = unit("gz/labour-social-security");
    let police_hz = unit("gz.haizhu/public-security");
    let police_yx = unit("gz.yuexiu/public-security");
    let bystander = unit("gz.haizhu/civil-affairs");

    // One death registered before anyone subscribed: the subscribers catch up from the beginning.
    let (subject, body) = death(1);
    let (first, seq) = publish(&net, &owner, DEATH, &subject, body);
    assert_eq!(seq, 1);

    for u in [&social, &police_hz, &police_yx] {
        let v = subscribe(&net, u, DEATH, StartFrom::Beginning);
        assert_eq!(v.state, "requested");
        let granted = wait_state(&net, u, DEATH, "granted");
        assert_eq!(granted.first_seq, Some(1), "open topic: granted at once, from the beginning");
        assert_eq!(granted.decided_by.as_deref(), Some("catalog"));
    }
    let mut ids = vec![first.id];
    for n in 2..=4 {
        let (subject, body) = death(n);
        let (signed, seq) = publish(&net, &owner, DEATH, &subject, body);
        assert_eq!(seq, n as u64);
        ids.push(signed.id);
    }
    for u in [&social, &police_hz, &police_yx] {
        reconcile(&net, u, DEATH, 1, &ids);
    }
    // Nothing for a unit that did not subscribe.
    let err = net.client_for(&bystander).records(&bystander, DEATH, None, 10, Duration::ZERO).unwrap_err();
    assert_eq!(err.code(), Some("not-found"));
    assert_eq!(count(&net, "gz.haizhu", "data_inbox WHERE unit = 'gz.haizhu/civil-affairs'"), 0);

    // Once per link: a live record went up to the city once, and down to 海珠 once.
    let live = read_all(&net, &social, DEATH).into_iter().find(|i| i.seq == 3).unwrap();
    let city_events = net.node("gz").admin().events(&live.delivery_id).unwrap().events;
    assert_eq!(city_events.iter().filter(|e| e.event == "received").count(), 1);
    assert_eq!(city_events.iter().filter(|e| e.event == "forwarded").count(), 1, "one copy toward 海珠: {city_events:?}");
    let same = read_all(&net, &police_hz, DEATH).into_iter().find(|i| i.seq == 3).unwrap();
    assert_eq!(same.delivery_id, live.delivery_id, "one delivery for every subscriber");
    // An operator follows the delivery across the network like any message.
    let trace = net.node("gz.yuexiu").admin().trace(&live.delivery_id).unwrap();
    for n in ["gz.yuexiu", "gz", "gz.haizhu"] {
        assert!(trace.nodes.iter().any(|t| t.as_str() == n), "the trace reaches {n}: {:?}", trace.nodes);
    }
    assert!(trace.events.iter().any(|e| e.event == "delivered"), "{:?}", trace.events);

    // Cursor: acknowledge up to 2; reading from the cursor gives 3 and 4; a replay gives all again.
    let c = net.client_for(&social);
    let v = c.ack(&social, DEATH, 2).expect("ack");
    assert_eq!(v.cursor, Some(2));
    let page = c.records(&social, DEATH, None, 100, Duration::ZERO).unwrap();
    assert_eq!(page.items.iter().map(|i| i.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(page.cursor, 2);
    let err = c.ack(&social, DEATH, 9).unwrap_err();
    assert_eq!(err.code(), Some("conflict"), "cannot acknowledge what has not arrived");
    assert_eq!(read_all(&net, &social, DEATH).len(), 4, "replay from the start");

    // A long-poll wakes on the next record.
    let waiter = {
        let (c, u) = (c.clone(), social.clone());
        std::thread::spawn(move || c.records(&u, DEATH, Some(4), 10, Duration::from_secs(30)).unwrap())
    };
    let (subject, body) = death(5);
    let (fifth, _) = publish(&net, &owner, DEATH, &subject, body);
    let page = waiter.join().unwrap();
    assert_eq!(page.items.first().map(|i| i.record.envelope.message_id()), Some(fifth.id));
    ids.push(fifth.id);

    // Publishing the same signed record again is recognised; nothing travels twice.
    let payload = serde_json::to_vec(&death(5).1).unwrap();
    let again = net.client_for(&owner).publish(&fifth, &payload).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, 5);
    for u in [&social, &police_hz, &police_yx] {
        reconcile(&net, u, DEATH, 1, &ids);
    }
    assert_eq!(metric(&net.node("gz.yuexiu").client(), "exchange_data_published_total", &[("topic", DEATH)]), 5.0);
}

#[test]
fn a_marriage_waits_for_approval_and_a_refused_unit_gets_nothing() {
    let net = network();
    let owner = unit("gz.yuexiu/civil-affairs");
    let register = unit("gz.yuexiu/public-security");
    let other = unit("gz.haizhu/civil-affairs");
    let city = unit("gz/civil-affairs");

    for u in [&register, &other] {
        subscribe(&net, u, MARRIAGE, StartFrom::Beginning);
        wait_state(&net, u, MARRIAGE, "requested");
    }
    // Both wait at the owner's node for a decision.
    let owner_client = net.client_for(&owner);
    let pending = wait_for("two pending requests at 越秀", Duration::from_secs(30), || {
        let s = owner_client.subscribers(&owner).ok()?.subscriptions;
        (s.iter().filter(|s| s.state == "pending").count() == 2).then_some(s)
    });
    assert!(pending.iter().all(|s| s.topic == MARRIAGE));

    // A not-shared topic is refused at once, with the reason.
    let owner_of_divorce = owner.clone();
    let req = sharing::subscription_request(city.clone(), owner_of_divorce, DIVORCE, StartFrom::Beginning, "").sign(&net.unit_keys[&city]);
    let err = net.client_for(&city).subscribe(&req, b"").unwrap_err();
    assert_eq!(err.code(), Some("not-shared"), "{err}");

    // A marriage registered while the requests wait.
    let (a, b) = (citizen(11), citizen(12));
    let m1 = serde_json::json!({"id_number": a, "spouse_id_number": b, "registered_on": "2026-11-22", "certificate_no": "J440104-2026-001"});
    let (first, _) = publish(&net, &owner, MARRIAGE, &a, m1);

    // The owner grants the household register; an operator of the owner's node refuses the other.
    let granted = owner_client
        .decide(&owner, &DecideRequest { topic: MARRIAGE.into(), subscriber: register.clone(), grant: true, reason: None })
        .expect("the owner grants");
    assert_eq!(granted.state, "granted");
    // Someone else's token cannot decide for the owner.
    let err = net
        .client_for(&register)
        .decide(&owner, &DecideRequest { topic: MARRIAGE.into(), subscriber: other.clone(), grant: true, reason: None })
        .unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    let refused = net
        .node("gz.yuexiu")
        .admin()
        .admin_decide(&DecideRequest { topic: MARRIAGE.into(), subscriber: other.clone(), grant: false, reason: Some("无婚姻登记业务需要".into()) })
        .expect("an operator refuses");
    assert_eq!(refused.state, "refused");
    let err = owner_client
        .decide(&owner, &DecideRequest { topic: MARRIAGE.into(), subscriber: other.clone(), grant: true, reason: None })
        .unwrap_err();
    assert_eq!(err.code(), Some("conflict"), "decided once");

    let (c, d) = (citizen(13), citizen(14));
    let m2 = serde_json::json!({"id_number": c, "spouse_id_number": d, "registered_on": "2026-11-23", "certificate_no": "J440104-2026-002"});
    let (second, _) = publish(&net, &owner, MARRIAGE, &c, m2);

    wait_state(&net, &register, MARRIAGE, "granted");
    reconcile(&net, &register, MARRIAGE, 1, &[first.id, second.id]);
    let v = wait_state(&net, &other, MARRIAGE, "refused");
    assert_eq!(v.reason.as_deref(), Some("无婚姻登记业务需要"));
    let err = net.client_for(&other).records(&other, MARRIAGE, None, 10, Duration::ZERO).unwrap_err();
    assert_eq!(err.code(), Some("subscription-refused"));
    assert_eq!(count(&net, "gz.haizhu", "data_inbox"), 0, "nothing it is not entitled to");
    // The decision reached the refused unit's inbox, signed by the owner's node.
    let inbox = read_inbox(&net.client_for(&other), &other);
    assert!(inbox.iter().any(|i| i.message.envelope.kind == exchange_wire::Kind::SubscriptionDecision));

    // Refused, it may ask again; granted this time, it catches up from the beginning.
    let again = subscribe(&net, &other, MARRIAGE, StartFrom::Beginning);
    assert_eq!(again.state, "requested");
    wait_for("the new request pending at 越秀", Duration::from_secs(30), || {
        let s = owner_client.subscribers(&owner).ok()?.subscriptions;
        s.iter().any(|s| s.subscriber == other && s.state == "pending").then_some(())
    });
    owner_client.decide(&owner, &DecideRequest { topic: MARRIAGE.into(), subscriber: other.clone(), grant: true, reason: None }).unwrap();
    wait_state(&net, &other, MARRIAGE, "granted");
    reconcile(&net, &other, MARRIAGE, 1, &[first.id, second.id]);
}

#[test]
fn a_move_out_reaches_subscribers_from_their_chosen_start() {
    let net = network();
    let owner = unit("gz.yuexiu/public-security");
    let mut ids = Vec::new();
    for n in 1..=3 {
        let (subject, body) = move_out(n, 1);
        ids.push(publish(&net, &owner, MOVE_OUT, &subject, body).0.id);
    }
    let time_mark = exchange_wire::now_ms();
    std::thread::sleep(Duration::from_millis(5));
    for n in 4..=5 {
        let (subject, body) = move_out(n, 1);
        ids.push(publish(&net, &owner, MOVE_OUT, &subject, body).0.id);
    }
    let from_beginning = unit("gz/labour-social-security");
    let from_seq = unit("gz.haizhu/public-security");
    let from_time = unit("gz/statistics");
    let from_now = unit("gz.haizhu/labour-social-security");
    for (u, from, first) in [
        (&from_beginning, StartFrom::Beginning, 1),
        (&from_seq, StartFrom::Seq(3), 3),
        (&from_time, StartFrom::Time(time_mark), 4),
        (&from_now, StartFrom::Now, 6),
    ] {
        subscribe(&net, u, MOVE_OUT, from);
        assert_eq!(wait_state(&net, u, MOVE_OUT, "granted").first_seq, Some(first), "{u} from {from}");
    }
    for n in 6..=7 {
        let (subject, body) = move_out(n, 1);
        ids.push(publish(&net, &owner, MOVE_OUT, &subject, body).0.id);
    }
    reconcile(&net, &from_beginning, MOVE_OUT, 1, &ids);
    reconcile(&net, &from_seq, MOVE_OUT, 3, &ids[2..]);
    reconcile(&net, &from_time, MOVE_OUT, 4, &ids[3..]);
    reconcile(&net, &from_now, MOVE_OUT, 6, &ids[5..]);
}

#[test]
fn order_per_subject_holds_under_concurrent_publishers() {
    const THREADS: u32 = 4;
    const SUBJECTS: u32 = 3;
    const STEPS: u32 = 6;
    let net = network();
    let owner = unit("gz.yuexiu/public-security");
    let subscribers = [unit("gz/labour-social-security"), unit("gz.haizhu/public-security"), unit("gz.yuexiu/civil-affairs")];
    for u in &subscribers {
        subscribe(&net, u, MOVE_OUT, StartFrom::Beginning);
        wait_state(&net, u, MOVE_OUT, "granted");
    }
    // Several systems of the owner publish at once, each its own subjects, one step at a time.
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (net, owner) = (&net, &owner);
            s.spawn(move || {
                for step in 0..STEPS {
                    for k in 0..SUBJECTS {
                        let (subject, body) = move_out(100 + t * SUBJECTS + k, step);
                        publish(net, owner, MOVE_OUT, &subject, body);
                    }
                }
            });
        }
    });
    let total = (THREADS * SUBJECTS * STEPS) as usize;
    let reference: Vec<MessageId> = wait_records(&net, &subscribers[0], MOVE_OUT, total).iter().map(|i| i.record.envelope.message_id()).collect();
    for u in &subscribers {
        reconcile(&net, u, MOVE_OUT, 1, &reference);
        // Per subject, the steps arrive in the order they were published.
        let mut steps: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for item in read_all(&net, u, MOVE_OUT) {
            let (_, payload) = item.record.decode().unwrap();
            let body: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            steps.entry(item.subject.clone()).or_default().push(body["from_address"].as_str().unwrap().to_string());
        }
        assert_eq!(steps.len(), (THREADS * SUBJECTS) as usize);
        for (subject, seen) in steps {
            let want: Vec<String> = (0..STEPS).map(|s| format!("越秀区第{s}处")).collect();
            assert_eq!(seen, want, "{u}: {subject} in publication order");
        }
    }
}

#[test]
fn an_offline_subscriber_catches_up_without_gaps_or_repeats() {
    let mut net = network();
    let owner = unit("gz.yuexiu/civil-affairs");
    let away = unit("gz.haizhu/public-security");
    let present = unit("gz/labour-social-security");
    for u in [&away, &present] {
        subscribe(&net, u, DEATH, StartFrom::Beginning);
        wait_state(&net, u, DEATH, "granted");
    }
    let mut ids = Vec::new();
    for n in 1..=5 {
        let (subject, body) = death(n);
        ids.push(publish(&net, &owner, DEATH, &subject, body).0.id);
    }
    wait_records(&net, &away, DEATH, 5);
    net.client_for(&away).ack(&away, DEATH, 5).unwrap();
    net.stop("gz.haizhu").expect("stop 海珠");
    for n in 6..=20 {
        let (subject, body) = death(n);
        ids.push(publish(&net, &owner, DEATH, &subject, body).0.id);
    }
    // The unit that stayed online has everything meanwhile.
    reconcile(&net, &present, DEATH, 1, &ids);
    net.start("gz.haizhu").expect("restart 海珠");
    net.converge(Duration::from_secs(30)).expect("directory again");
    reconcile(&net, &away, DEATH, 1, &ids);
    // Its cursor survived the restart: reading on from it gives exactly what it missed.
    let page = net.client_for(&away).records(&away, DEATH, None, 100, Duration::ZERO).unwrap();
    assert_eq!(page.cursor, 5);
    assert_eq!(page.items.iter().map(|i| i.seq).collect::<Vec<_>>(), (6..=20).collect::<Vec<u64>>());
    assert_eq!(count(&net, "gz.haizhu", "data_inbox"), 20, "no repeats stored");
}

#[test]
fn bad_records_are_refused_with_the_reason_and_change_nothing() {
    let net = network();
    let owner = unit("gz.yuexiu/civil-affairs");
    let intruder = unit("gz.haizhu/civil-affairs");
    let yuexiu = net.node("gz.yuexiu").client();
    let log_before = count(&net, "gz.yuexiu", "topic_log");
    let counts_before = stored_counts(&net.node("gz.yuexiu").database_path());

    // A record that breaks its schema: the path of the failing field and the rule it broke.
    let id = citizen(1);
    let bad = serde_json::json!({"id_number": id, "name": "张三", "death_date": "2026-13-01"});
    let payload = serde_json::to_vec(&bad).unwrap();
    let signed = sharing::record(owner.clone(), DEATH, &id, &payload).sign(&net.unit_keys[&owner]);
    let err = net.client_for(&owner).publish(&signed, &payload).unwrap_err();
    assert_eq!(err.code(), Some("schema-violation"));
    assert!(err.to_string().contains("/death_date: \"2026-13-01\" is not a \"date\""), "{err}");
    assert_eq!(metric(&yuexiu, "exchange_messages_rejected_total", &[("reason", "schema-violation"), ("kind", "data-record")]), 1.0);

    // A missing field.
    let bad = serde_json::json!({"id_number": id, "name": "张三"});
    let payload = serde_json::to_vec(&bad).unwrap();
    let signed = sharing::record(owner.clone(), DEATH, &id, &payload).sign(&net.unit_keys[&owner]);
    let err = net.client_for(&owner).publish(&signed, &payload).unwrap_err();
    assert!(err.to_string().contains("death_date"), "{err}");

    // A subject key that is not the record's.
    let (_, body) = death(2);
    let payload = serde_json::to_vec(&body).unwrap();
    let signed = sharing::record(owner.clone(), DEATH, &citizen(3), &payload).sign(&net.unit_keys[&owner]);
    assert_eq!(net.client_for(&owner).publish(&signed, &payload).unwrap_err().code(), Some("subject-mismatch"));

    // A unit that does not own the topic (一数一源), at its own node.
    let (subject, body) = death(4);
    let payload = serde_json::to_vec(&body).unwrap();
    let signed = sharing::record(intruder.clone(), DEATH, &subject, &payload).sign(&net.unit_keys[&intruder]);
    let err = net.client_for(&intruder).publish(&signed, &payload).unwrap_err();
    assert_eq!(err.code(), Some("not-owner"));
    assert!(err.to_string().contains("gz.yuexiu/civil-affairs"), "names the owner: {err}");

    // A forged signature, and an unknown topic.
    let signed = sharing::record(owner.clone(), DEATH, &subject, &payload).sign(&net.unit_keys[&intruder]);
    assert_eq!(net.client_for(&owner).publish(&signed, &payload).unwrap_err().code(), Some("bad-signature"));
    let signed = sharing::record(owner.clone(), "person.nothing", &subject, &payload).sign(&net.unit_keys[&owner]);
    assert_eq!(net.client_for(&owner).publish(&signed, &payload).unwrap_err().code(), Some("unknown-topic"));

    // Nothing stored; each refusal audited, without the record's values.
    assert_eq!(count(&net, "gz.yuexiu", "topic_log"), log_before);
    let counts_after = stored_counts(&net.node("gz.yuexiu").database_path());
    assert_eq!((counts_after.messages, counts_after.outbox), (counts_before.messages, counts_before.outbox));
    let audit = net.node("gz.yuexiu").admin().audit_page(0, 1000).unwrap();
    let refusals: Vec<_> = audit.entries.iter().filter(|e| e.category == "refusal").collect();
    for code in ["schema-violation", "subject-mismatch", "bad-signature", "unknown-topic"] {
        assert!(refusals.iter().any(|e| e.event == code), "{code} audited: {refusals:?}");
    }
    assert!(refusals.iter().all(|e| !e.detail.as_deref().unwrap_or("").contains("2026-13-01")), "record values stay out of the audit log");
    let haizhu_audit = net.node("gz.haizhu").admin().audit_page(0, 1000).unwrap();
    assert!(haizhu_audit.entries.iter().any(|e| e.category == "refusal" && e.event == "not-owner"), "refused and audited at the intruder's own node");
}

/// Runs `exchange-admin` against a node's agency API as a unit (its token in `EXCHANGE_TOKEN`).
fn cli(node_url: &str, token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(admin_binary())
        .arg("--node")
        .arg(node_url)
        .args(args)
        .env("EXCHANGE_TOKEN", token)
        .output()
        .expect("run exchange-admin")
}

/// Runs `exchange-admin` against a node's admin API.
fn cli_admin(node: &exchange_devnet::launcher::LocalNode, args: &[&str]) -> std::process::Output {
    AdminAt::of(node).command().args(args).output().expect("run exchange-admin")
}

fn ok(o: std::process::Output) -> String {
    assert!(o.status.success(), "exchange-admin failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn the_cli_publishes_subscribes_decides_reads_and_acknowledges() {
    let net = three_nodes(FAST_RETRY);
    let (city, yuexiu) = (net.node("gz"), net.node("gz.yuexiu"));
    let catalog_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/catalog.toml");
    ok(cli_admin(city, &["catalog", "publish", catalog_file.to_str().unwrap()]));
    // Only the root signs the catalog.
    assert_eq!(cli_admin(yuexiu, &["catalog", "publish", catalog_file.to_str().unwrap()]).status.code(), Some(1));

    let owner = unit("gz.yuexiu/civil-affairs");
    let subscriber = unit("gz/labour-social-security");
    let (owner_token, sub_token) = (net.unit_tokens[&owner].clone(), net.unit_tokens[&subscriber].clone());
    let (owner_key, sub_key) = (net.unit_key_file(&owner).unwrap(), net.unit_key_file(&subscriber).unwrap());
    let table = wait_for("the catalog at the city", Duration::from_secs(20), || {
        let o = cli(&city.api_url, &sub_token, &["catalog", "show", "--unit", subscriber.as_str()]);
        o.status.success().then(|| String::from_utf8(o.stdout).unwrap())
    });
    assert!(table.contains("person.death") && table.contains("gz.yuexiu/civil-affairs") && table.contains("approval"), "{table}");

    // Subscribe to an approval topic; the owner sees the request and grants it.
    ok(cli(&city.api_url, &sub_token, &[
        "data", "subscribe", "--key", sub_key.to_str().unwrap(), "--unit", subscriber.as_str(), "--topic", MARRIAGE, "--purpose", "社保待遇核定",
    ]));
    wait_for("the request at the owner's node", Duration::from_secs(30), || {
        let out = ok(cli(&yuexiu.api_url, &owner_token, &["--json", "data", "subscribers", "--unit", owner.as_str()]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["subscriptions"].as_array().unwrap().iter().any(|s| s["state"] == "pending").then_some(())
    });
    // Refusing needs a reason.
    let no_reason = cli(&yuexiu.api_url, &owner_token, &["data", "refuse", "--owner", owner.as_str(), "--topic", MARRIAGE, "--subscriber", subscriber.as_str()]);
    assert_eq!(no_reason.status.code(), Some(1));
    ok(cli(&yuexiu.api_url, &owner_token, &["data", "grant", "--owner", owner.as_str(), "--topic", MARRIAGE, "--subscriber", subscriber.as_str()]));

    // Publish a record from a JSON file; the record id is printed on stdout.
    let (a, b) = (citizen(21), citizen(22));
    let file = net.root.join("marriage.json");
    std::fs::write(&file, serde_json::json!({"id_number": a, "spouse_id_number": b, "registered_on": "2026-11-24", "certificate_no": "J440104-2026-021"}).to_string()).unwrap();
    let id = ok(cli(&yuexiu.api_url, &owner_token, &[
        "data", "publish", "--key", owner_key.to_str().unwrap(), "--from", owner.as_str(), "--topic", MARRIAGE, "--subject", &a, file.to_str().unwrap(),
    ]));
    assert_eq!(id.trim().len(), 64, "record id on stdout: {id}");
    // A bad record is refused with the field and the rule, exit code 1.
    std::fs::write(&file, serde_json::json!({"id_number": a, "spouse_id_number": b, "registered_on": "2026-02-30", "certificate_no": "x"}).to_string()).unwrap();
    let bad = cli(&yuexiu.api_url, &owner_token, &[
        "data", "publish", "--key", owner_key.to_str().unwrap(), "--from", owner.as_str(), "--topic", MARRIAGE, "--subject", &a, file.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/registered_on"), "{}", String::from_utf8_lossy(&bad.stderr));

    // Read it at the subscriber's node, acknowledge it, and find nothing more from the cursor.
    let page = wait_for("the record at the subscriber", Duration::from_secs(30), || {
        let out = ok(cli(&city.api_url, &sub_token, &["--json", "data", "records", "--unit", subscriber.as_str(), "--topic", MARRIAGE, "--wait", "2"]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (!v["items"].as_array().unwrap().is_empty()).then_some(v)
    });
    assert_eq!(page["items"][0]["seq"], 1);
    assert_eq!(page["items"][0]["subject"], a.as_str());
    ok(cli(&city.api_url, &sub_token, &["data", "ack", "--unit", subscriber.as_str(), "--topic", MARRIAGE, "--seq", "1"]));
    let table = ok(cli(&city.api_url, &sub_token, &["data", "subscriptions", "--unit", subscriber.as_str()]));
    assert!(table.contains(MARRIAGE) && table.contains("granted"), "{table}");
    let out = ok(cli(&city.api_url, &sub_token, &["--json", "data", "records", "--unit", subscriber.as_str(), "--topic", MARRIAGE]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["items"].as_array().unwrap().is_empty(), "nothing after the cursor: {v}");
    assert_eq!(v["cursor"], 1);
}

#[test]
fn a_long_history_is_backfilled_in_pages_while_publishing_goes_on() {
    const HISTORY: u32 = 600;
    let mut net = network();
    let owner = unit("gz.yuexiu/civil-affairs");
    let late = unit("gz.haizhu/public-security");
    let client = net.client_for(&owner);
    // A history longer than two backfill pages, published in parallel by four systems of the owner.
    let mut ids: Vec<(u64, MessageId)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u32)
            .map(|t| {
                let (net, owner, client) = (&net, &owner, &client);
                s.spawn(move || {
                    (0..HISTORY / 4)
                        .map(|i| {
                            let (subject, body) = death(1000 + t * HISTORY + i);
                            let payload = serde_json::to_vec(&body).unwrap();
                            let signed = sharing::record(owner.clone(), DEATH, &subject, &payload).sign(&net.unit_keys[owner]);
                            (client.publish(&signed, &payload).unwrap().seq, signed.id)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    subscribe(&net, &late, DEATH, StartFrom::Beginning);
    // The owner's node is killed as soon as it has granted, most likely with the backlog half sent:
    // after a restart it carries on where it stopped.
    let owner_admin = net.node("gz.yuexiu").admin();
    wait_for("the grant at the owner's node", Duration::from_secs(30), || {
        owner_admin.admin_subscriptions().ok()?.subscriptions.into_iter().find(|s| s.subscriber == late && s.state == "granted")
    });
    net.kill("gz.yuexiu").expect("kill 越秀");
    let left = count(&net, "gz.yuexiu", "sharing_subscriptions WHERE backfill_next IS NOT NULL");
    eprintln!("backlog still to send when the owner's node was killed: {left} subscription(s)");
    net.start("gz.yuexiu").expect("restart 越秀");
    net.converge(Duration::from_secs(30)).expect("directory again");
    // Records published while the backlog is on its way come after it, in order.
    for n in 0..5 {
        let (subject, body) = death(9000 + n);
        let (signed, seq) = publish(&net, &owner, DEATH, &subject, body);
        ids.push((seq, signed.id));
    }
    ids.sort();
    let expected: Vec<MessageId> = ids.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (1..=expected.len() as u64).collect::<Vec<_>>(), "numbered without gaps");
    reconcile(&net, &late, DEATH, 1, &expected);
    assert_eq!(count(&net, "gz.yuexiu", "sharing_subscriptions WHERE backfill_next IS NOT NULL"), 0, "the backlog is done");
}

#[test]
fn a_batch_of_records_is_numbered_in_order_each_checked_on_its_own() {
    let net = network();
    let owner = unit("gz.yuexiu/civil-affairs");
    let subscriber = unit("gz/labour-social-security");
    subscribe(&net, &subscriber, DEATH, StartFrom::Now);
    wait_state(&net, &subscriber, DEATH, "granted");
    let sign = |n: u32, body: serde_json::Value| {
        let payload = serde_json::to_vec(&body).unwrap();
        let signed = sharing::record(owner.clone(), DEATH, &citizen(n), &payload).sign(&net.unit_keys[&owner]);
        (signed, payload)
    };
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    for n in 0..300 {
        let (signed, payload) = sign(n, death(n).1);
        expected.push(signed.id);
        batch.push(exchange_wire::api::SignedMessage::new(&signed, &payload));
    }
    // The same record twice, and a record that breaks the schema, in the middle of the batch.
    batch.insert(150, batch[10].clone());
    let (bad, bad_payload) = sign(999, serde_json::json!({"id_number": citizen(999), "name": "王五", "death_date": "2026-02-30"}));
    batch.insert(200, exchange_wire::api::SignedMessage::new(&bad, &bad_payload));
    let first = batch[0].clone();
    let results = net.client_for(&owner).publish_batch(batch).expect("batch").results;
    assert_eq!(results.len(), 302);
    let mut seqs = Vec::new();
    for (i, r) in results.iter().enumerate() {
        match (i, r) {
            (150, sharing::PublishResult::Published(p)) => assert!(p.duplicate && p.seq == 11, "the repeat is a duplicate of #11: {p:?}"),
            (200, sharing::PublishResult::Refused(e)) => assert!(e.error == "schema-violation" && e.message.contains("/death_date"), "{e:?}"),
            (_, sharing::PublishResult::Published(p)) => {
                assert!(!p.duplicate);
                assert_eq!(p.subscribers, 1);
                seqs.push(p.seq);
            }
            (i, other) => panic!("record {i}: {other:?}"),
        }
    }
    assert_eq!(seqs, (1..=300).collect::<Vec<u64>>(), "numbered in the order of the batch, without gaps");
    // The same signed record in a later batch is recognised too.
    let again = net.client_for(&owner).publish_batch(vec![first]).unwrap();
    assert!(matches!(&again.results[0], sharing::PublishResult::Published(p) if p.duplicate && p.seq == 1));
    reconcile(&net, &subscriber, DEATH, 1, &expected);
}
