//! Push delivery: a unit registers a webhook; the node POSTs new inbox items to it, signed with the
//! node key; while the webhook fails, the node retries and the inbox keeps everything; when it comes
//! back, every item arrives (at least once, in order), and nothing acknowledged is pushed again.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::{Signature, Verifier};
use exchange_tests::*;
use exchange_wire::api::{WebhookDelivery, WebhookRequest};

/// One delivery received: the `X-Exchange-Node` and `X-Exchange-Signature` headers and the body.
type Received = (String, String, Vec<u8>);

/// A webhook receiver: records every delivery and answers 200 while `up`, 503 otherwise.
struct Hook {
    url: String,
    up: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<Received>>>,
}

fn hook() -> Hook {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let up = Arc::new(AtomicBool::new(true));
    let got = Arc::new(Mutex::new(Vec::new()));
    let (up2, got2) = (up.clone(), got.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut length, mut node, mut sig) = (0usize, String::new(), String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                let value = line.split_once(':').map(|(_, v)| v.trim().to_string()).unwrap_or_default();
                if lower.starts_with("content-length:") {
                    length = value.parse().unwrap_or(0);
                } else if lower.starts_with("x-exchange-node:") {
                    node = value;
                } else if lower.starts_with("x-exchange-signature:") {
                    sig = value;
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let ok = up2.load(Ordering::SeqCst);
            if ok {
                got2.lock().unwrap().push((node, sig, body));
            }
            let status = if ok { "200 OK" } else { "503 Service Unavailable" };
            let _ = stream.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
        }
    });
    Hook { url, up, got }
}

#[test]
fn webhook_pushes_signed_items_and_catches_up_after_an_outage() {
    let net = three_nodes(FAST_RETRY);
    let sender = unit("gz.yuexiu/liurong-street");
    let to = unit("gz.haizhu/civil-affairs");
    let hook = hook();
    let client = net.client_for(&to);
    client.set_webhook(&to, &WebhookRequest { url: hook.url.clone(), from_start: false }).unwrap();

    let send = |i: usize| {
        let d = document(&net.unit_keys[&sender], sender.as_str(), &[to.as_str()], &[], format!("{i}").as_bytes(), &format!("推送 {i}"));
        net.client_for(&sender).submit(&d, format!("{i}").as_bytes()).unwrap();
        d.id
    };
    let mut sent: Vec<_> = (0..3).map(send).collect();
    let pushed = |hook: &Hook| -> Vec<exchange_wire::MessageId> {
        hook.got.lock().unwrap().iter().flat_map(|(_, _, b)| serde_json::from_slice::<WebhookDelivery>(b).unwrap().items.into_iter().map(|i| i.id)).collect()
    };
    wait_for("three pushes", Duration::from_secs(20), || (pushed(&hook).len() == 3).then_some(()));

    // The webhook goes down: more documents arrive; they wait in the inbox while the node retries.
    hook.up.store(false, Ordering::SeqCst);
    sent.extend((3..8).map(send));
    wait_for("all eight in the inbox", Duration::from_secs(20), || (read_inbox(&client, &to).len() == 8).then_some(()));
    let haizhu = net.node("gz.haizhu").client();
    wait_for("failed pushes counted", Duration::from_secs(20), || {
        (metric(&haizhu, "exchange_webhook_pushes_total", &[("outcome", "failed")]) >= 1.0).then_some(())
    });
    hook.up.store(true, Ordering::SeqCst);
    wait_for("the backlog pushed", Duration::from_secs(30), || (pushed(&hook).len() >= 8).then_some(()));

    // In the inbox's order (delivery order at 海珠: documents in different batches on a link may be
    // delivered in either order), each once (what was acknowledged is not pushed again), every one
    // sent, and signed by 海珠's node key.
    let inbox: Vec<_> = read_inbox(&client, &to).into_iter().map(|i| i.id).collect();
    assert_eq!(pushed(&hook), inbox, "pushed in inbox order, each once");
    let (mut got, mut want) = (inbox.clone(), sent.clone());
    got.sort();
    want.sort();
    assert_eq!(got, want, "every document sent, delivered once");
    let node_key = exchange_wire::keys::read(&net.root.join("gz.haizhu.key")).unwrap().verifying_key();
    for (node, sig, body) in hook.got.lock().unwrap().iter() {
        assert_eq!(node, "gz.haizhu");
        let sig = Signature::from_bytes(&exchange_wire::api::signature_from_hex(sig).unwrap());
        node_key.verify(body, &sig).expect("the push is signed by the node");
    }
    // The node records the position after the webhook's 2xx answer: shortly after the hook saw it.
    let last = read_inbox(&client, &to).last().unwrap().seq;
    wait_for("the pushed position recorded", Duration::from_secs(10), || (client.webhook(&to).unwrap().pushed_seq == last).then_some(()));
    // Another unit cannot set or read this unit's webhook.
    let other = unit("gz.haizhu/chigang-street");
    let err = net.client_for(&other).set_webhook(&to, &WebhookRequest { url: hook.url.clone(), from_start: false }).unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    client.remove_webhook(&to).unwrap();
    assert_eq!(client.webhook(&to).unwrap_err().code(), Some("not-found"));
}
