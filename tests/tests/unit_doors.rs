//! Doors around units, against real node processes: a revoked unit's tokens and webhook stop at
//! once; a suspended unit may read but change nothing and is not pushed to; `<node>/_node` is no
//! recipient; webhooks may not aim at private, link-local or CGNAT ranges unless configured; and a
//! node's reports and custody batches are taken only where the tree says that node may speak.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use exchange_node_core::network::protocol::ParcelResult;
use exchange_tests::rogue_peer::{RoguePeer, parcel};
use exchange_tests::*;
use exchange_wire::api::{RecipientState, WebhookRequest};
use exchange_wire::client::{ApiClient, ClientError};
use exchange_wire::receipt::{Delivered, DeliveryReport, NodeReport, RecallOutcome, RecallReport};
use exchange_wire::{Priority, UnitAddress};
use sha2::Digest as _;

/// A webhook receiver counting the deliveries it took (200 while `up`, 503 otherwise).
struct Hook {
    url: String,
    up: Arc<AtomicBool>,
    taken: Arc<AtomicUsize>,
}

fn hook() -> Hook {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (up, taken) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicUsize::new(0)));
    let (up2, taken2) = (up.clone(), taken.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let _ = reader.read_exact(&mut vec![0; length]);
            let ok = up2.load(Ordering::SeqCst);
            if ok {
                taken2.fetch_add(1, Ordering::SeqCst);
            }
            let status = if ok { "200 OK" } else { "503 Service Unavailable" };
            let _ = stream.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
        }
    });
    Hook { url, up, taken }
}

/// Asserts a refusal: status, code, and a word of the message that tells the user what to do.
fn refused(err: ClientError, status: u16, code: &str, says: &str) {
    match &err {
        ClientError::Refused { status: s, body } => {
            assert_eq!((*s, body.error.as_str()), (status, code), "{err}");
            assert!(body.message.contains(says), "the message should say {says:?}: {err}");
        }
        other => panic!("expected a refusal {status} {code}, got {other}"),
    }
}

/// Uploads a small attachment as `client`'s unit.
fn upload(client: &ApiClient, dir: &std::path::Path) -> Result<(), ClientError> {
    let bytes = b"an attachment".to_vec();
    let file = dir.join("a.txt");
    std::fs::write(&file, &bytes).unwrap();
    let a = exchange_wire::document::Attachment {
        name: "a.txt".into(),
        media_type: "text/plain".into(),
        size: bytes.len() as u64,
        sha256: exchange_wire::Digest(sha2::Sha256::digest(&bytes).into()),
    };
    client.upload_attachment(&file, &a).map(|_| ())
}

/// Holds for `window` that `hook` takes nothing more than `count`: pushes that must not happen.
/// (The pusher retries every second at most under FAST_RETRY, so three seconds see several tries.)
fn takes_no_more(hook: &Hook, count: usize, window: Duration) {
    let until = Instant::now() + window;
    while Instant::now() < until {
        assert_eq!(hook.taken.load(Ordering::SeqCst), count, "a push reached the webhook");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends one document from 越秀 六榕街道 to `to` and waits until it is in `to`'s inbox.
fn deliver(net: &exchange_devnet::launcher::LocalNetwork, to: &UnitAddress, n: usize) {
    let sender = unit("gz.yuexiu/liurong-street");
    let body = format!("doc {n}");
    let d = document(&net.unit_keys[&sender], sender.as_str(), &[to.as_str()], &[], body.as_bytes(), &format!("文 {n}"));
    net.client_for(&sender).submit(&d, body.as_bytes()).unwrap();
    let reader = net.client_for(to);
    wait_for("the document delivered", Duration::from_secs(30), || read_inbox(&reader, to).iter().any(|i| i.id == d.id).then_some(()));
}

#[test]
fn a_revoked_unit_loses_its_tokens_and_webhook_at_once() {
    let net = three_nodes(FAST_RETRY);
    let node = net.node("gz.haizhu");
    let victim = unit("gz.haizhu/civil-affairs");
    let as_victim = net.client_for(&victim);
    let hook = hook();
    as_victim.set_webhook(&victim, &WebhookRequest { url: hook.url.clone(), from_start: false }).unwrap();
    deliver(&net, &victim, 1);
    wait_for("the first document pushed", Duration::from_secs(30), || (hook.taken.load(Ordering::SeqCst) == 1).then_some(()));
    // The webhook goes down; a second document waits in the inbox for it.
    hook.up.store(false, Ordering::SeqCst);
    deliver(&net, &victim, 2);

    node.admin().revoke_unit(&victim).unwrap();
    let before = stored_counts(&node.database_path());
    hook.up.store(true, Ordering::SeqCst);

    // Everything with the old token is refused right after the revoke returned.
    refused(as_victim.inbox(&victim, 0, 10, Duration::ZERO).unwrap_err(), 401, "unit-revoked", "revoked");
    let again = WebhookRequest { url: hook.url.clone(), from_start: true };
    refused(as_victim.set_webhook(&victim, &again).unwrap_err(), 401, "unit-revoked", "revoked");
    refused(as_victim.webhook(&victim).unwrap_err(), 401, "unit-revoked", "revoked");
    let tmp = tempfile::tempdir().unwrap();
    refused(upload(&as_victim, tmp.path()).unwrap_err(), 401, "unit-revoked", "revoked");
    let d = document(&net.unit_keys[&victim], victim.as_str(), &["gz/civil-affairs"], &[], b"x", "t");
    refused(as_victim.submit(&d, b"x").unwrap_err(), 401, "unit-revoked", "revoked");
    // Its webhook stops: the waiting document is never pushed.
    takes_no_more(&hook, 1, Duration::from_secs(3));

    // The stored state says the same: every token revoked, no webhook; no custody row changed.
    let tokens = node.admin().tokens(Some(&victim)).unwrap().tokens;
    assert!(!tokens.is_empty() && tokens.iter().all(|t| t.revoked_at_ms.is_some()), "{tokens:?}");
    let after = stored_counts(&node.database_path());
    // (The outbox is not compared: delivery reports of earlier documents may still be leaving it.)
    assert_eq!((after.messages, after.inbox), (before.messages, before.inbox));
    assert!(metric(&node.client(), "exchange_messages_rejected_total", &[("reason", "unit-revoked")]) >= 5.0);
    // A new token cannot be issued for it either.
    let issue = exchange_wire::api::IssueToken { unit: victim.clone(), label: "again".into() };
    refused(node.admin().issue_token(&issue).unwrap_err(), 409, "conflict", "register a new unit");
}

#[test]
fn a_suspended_unit_may_read_but_not_send_upload_or_register_and_is_not_pushed() {
    let net = three_nodes(FAST_RETRY);
    let node = net.node("gz.haizhu");
    let paused = unit("gz.haizhu/civil-affairs");
    let client = net.client_for(&paused);
    let hook = hook();
    hook.up.store(false, Ordering::SeqCst);
    client.set_webhook(&paused, &WebhookRequest { url: hook.url.clone(), from_start: false }).unwrap();
    deliver(&net, &paused, 1);

    node.admin().suspend_unit(&paused).unwrap();
    let before = stored_counts(&node.database_path());
    hook.up.store(true, Ordering::SeqCst);
    // Reads still work: its inbox, its webhook registration.
    assert_eq!(read_inbox(&client, &paused).len(), 1);
    client.webhook(&paused).unwrap();
    // Changes are refused, with what to do.
    refused(client.set_webhook(&paused, &WebhookRequest { url: hook.url.clone(), from_start: true }).unwrap_err(), 403, "unit-suspended", "activated");
    let tmp = tempfile::tempdir().unwrap();
    refused(upload(&client, tmp.path()).unwrap_err(), 403, "unit-suspended", "activated");
    let d = document(&net.unit_keys[&paused], paused.as_str(), &["gz/civil-affairs"], &[], b"x", "t");
    refused(client.submit(&d, b"x").unwrap_err(), 403, "unit-suspended", "activated");
    // No push while suspended; nothing stored changed.
    takes_no_more(&hook, 0, Duration::from_secs(3));
    let after = stored_counts(&node.database_path());
    // (The outbox is not compared: delivery reports of earlier documents may still be leaving it.)
    assert_eq!((after.messages, after.inbox), (before.messages, before.inbox));
    assert_eq!(client.webhook(&paused).unwrap().pushed_seq, 0, "the webhook position did not move");

    // Activated again: the webhook catches up where it stopped.
    node.admin().activate_unit(&paused).unwrap();
    wait_for("the held document pushed after activation", Duration::from_secs(30), || (hook.taken.load(Ordering::SeqCst) == 1).then_some(()));
}

#[test]
fn a_node_address_is_refused_as_a_recipient() {
    let net = three_nodes(FAST_RETRY);
    let sender = unit("gz.yuexiu/liurong-street");
    let client = net.client_for(&sender);
    let yuexiu = net.node("gz.yuexiu");
    let before = stored_counts(&yuexiu.database_path());
    for to in ["gz.haizhu/_node", "gz.yuexiu/_node", "gz/_node"] {
        let d = document(&net.unit_keys[&sender], sender.as_str(), &[to], &[], b"x", "t");
        refused(client.submit(&d, b"x").unwrap_err(), 422, "reserved-recipient", "address the message to units");
    }
    // Also among ordinary recipients: the whole document is refused.
    let d = document(&net.unit_keys[&sender], sender.as_str(), &["gz/civil-affairs"], &["gz.haizhu/_node"], b"y", "t");
    refused(client.submit(&d, b"y").unwrap_err(), 422, "reserved-recipient", "not a unit's inbox");
    let after = stored_counts(&yuexiu.database_path());
    assert_eq!((after.messages, after.inbox, after.outbox, after.tracking), (before.messages, before.inbox, before.outbox, before.tracking));
    assert_eq!(metric(&yuexiu.client(), "exchange_messages_rejected_total", &[("reason", "reserved-recipient")]), 4.0);
}

#[test]
fn webhooks_to_private_link_local_and_cgnat_ranges_are_refused_unless_listed() {
    let net = three_nodes(&format!("{FAST_RETRY}\n[push]\nallowed_networks = [\"10.1.0.0/16\"]\n"));
    let u = unit("gz.haizhu/civil-affairs");
    let client = net.client_for(&u);
    for url in [
        "http://10.0.0.5/hook",
        "http://192.168.1.20:8080/hook",
        "http://172.20.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/hook",
        "http://[fd00::1]/hook",
        "http://[fe80::1]/hook",
        "http://[::ffff:192.168.0.1]/hook",
    ] {
        let err = client.set_webhook(&u, &WebhookRequest { url: url.into(), from_start: false }).unwrap_err();
        refused(err, 403, "webhook-target-refused", "push.allowed_networks");
    }
    refused(client.webhook(&u).unwrap_err(), 404, "not-found", "register one");
    assert_eq!(metric(&net.node("gz.haizhu").client(), "exchange_messages_rejected_total", &[("reason", "webhook-target-refused")]), 8.0);
    // The network the operator listed is allowed.
    client.set_webhook(&u, &WebhookRequest { url: "http://10.1.2.3:8080/hook".into(), from_start: false }).unwrap();
    assert_eq!(client.webhook(&u).unwrap().url, "http://10.1.2.3:8080/hook");
}

#[test]
fn forged_reports_and_batches_from_non_neighbours_are_refused() {
    let mut net = three_nodes(FAST_RETRY);
    let sender = unit("gz.yuexiu/liurong-street");
    let (city_unit, haizhu_unit) = (unit("gz/civil-affairs"), unit("gz.haizhu/civil-affairs"));
    // A real document to the city and to 海珠, delivered to both.
    let d = document(&net.unit_keys[&sender], sender.as_str(), &[city_unit.as_str(), haizhu_unit.as_str()], &[], b"z", "通知");
    let as_sender = net.client_for(&sender);
    as_sender.submit(&d, b"z").unwrap();
    let delivered = |s: &exchange_wire::api::StatusResponse| s.recipients.iter().all(|r| r.state == RecipientState::Delivered);
    wait_for("delivered to both", Duration::from_secs(30), || as_sender.status(&d.id).ok().filter(delivered));

    // 海珠 is compromised: its key is used from here (its process stopped).
    net.stop("gz.haizhu").unwrap();
    let haizhu_key = net.root.join("gz.haizhu.key");
    let rogue = RoguePeer::start(&haizhu_key);
    let haizhu_signer = exchange_wire::keys::read(&haizhu_key).unwrap();
    let city = net.node("gz");
    let city_before = stored_counts(&city.database_path());

    // To its parent (a neighbour): a recall report and a delivery report for the city's own unit.
    let recall = RecallReport {
        recall_id: d.id,
        message_id: d.id,
        node: "gz.haizhu".parse().unwrap(),
        outcomes: vec![RecallOutcome { unit: city_unit.clone(), outcome: "recalled".into() }],
    };
    let (env, payload) = recall.envelope(sender.clone(), Priority::Routine);
    let forged_recall = parcel(&env.sign(&haizhu_signer), &payload, vec![sender.clone()]);
    let delivery = DeliveryReport { message_id: d.id, node: "gz.haizhu".parse().unwrap(), delivered: vec![Delivered { unit: city_unit.clone(), at_ms: 1 }], hops: vec![] };
    let (env, payload) = delivery.envelope(sender.clone(), Priority::Routine);
    let forged_delivery = parcel(&env.sign(&haizhu_signer), &payload, vec![sender.clone()]);
    let city_peer = rogue.connect(&net.root.join("gz.key"), city.p2p_port);
    let answer = rogue.hand_over(city_peer, vec![forged_recall, forged_delivery]);
    for r in &answer.results {
        assert!(matches!(r, ParcelResult::Refused { code, reason } if code == "report-not-hosted" && reason.contains("does not host")), "{r:?}");
    }
    let city_after = stored_counts(&city.database_path());
    assert_eq!((city_after.messages, city_after.outbox, city_after.inbox), (city_before.messages, city_before.outbox, city_before.inbox));
    assert_eq!(metric(&city.client(), "exchange_messages_rejected_total", &[("reason", "report-not-hosted")]), 2.0);

    // To 越秀, a sibling district (in the directory, not a neighbour): even a report about its own
    // unit is refused whole.
    let yuexiu = net.node("gz.yuexiu");
    let yuexiu_before = stored_counts(&yuexiu.database_path());
    let own = DeliveryReport { message_id: d.id, node: "gz.haizhu".parse().unwrap(), delivered: vec![Delivered { unit: haizhu_unit.clone(), at_ms: 1 }], hops: vec![] };
    let (env, payload) = own.envelope(sender.clone(), Priority::Routine);
    let yuexiu_peer = rogue.connect(&net.root.join("gz.yuexiu.key"), yuexiu.p2p_port);
    let answer = rogue.hand_over(yuexiu_peer, vec![parcel(&env.sign(&haizhu_signer), &payload, vec![sender.clone()])]);
    assert!(
        matches!(&answer.results[..], [ParcelResult::Refused { code, reason }] if code == "not-neighbour" && reason.contains("not a neighbour")),
        "{:?}",
        answer.results
    );
    let yuexiu_after = stored_counts(&yuexiu.database_path());
    assert_eq!(
        (yuexiu_after.messages, yuexiu_after.outbox, yuexiu_after.inbox, yuexiu_after.tracking, yuexiu_after.events),
        (yuexiu_before.messages, yuexiu_before.outbox, yuexiu_before.inbox, yuexiu_before.tracking, yuexiu_before.events)
    );
    assert_eq!(metric(&yuexiu.client(), "exchange_messages_rejected_total", &[("reason", "not-neighbour")]), 1.0);
    // The sender's status is as it was: delivered to both, nothing recalled.
    let status = as_sender.status(&d.id).unwrap();
    assert!(delivered(&status), "{:?}", status.recipients);
}
