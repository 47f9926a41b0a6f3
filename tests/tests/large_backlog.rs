//! Memory stays bounded with large messages. 越秀 sends 2 GiB of 8 MiB documents (256 of them) to
//! 海珠 through the city while 海珠 is stopped: the whole backlog waits at the city, which is then
//! restarted while it holds it (the outbox read at start-up and at every retry used to load up to 512
//! payloads at once). The peak resident memory (VmHWM) of every node process stays under 256 MiB
//! throughout. Then 海珠 comes back and everything drains: every document is delivered exactly once
//! and its signed receipt is back at the sender.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use exchange_devnet::launcher::LocalNetwork;
use exchange_tests::*;
use exchange_wire::api::RecipientState;
use exchange_wire::{MessageId, SignedEnvelope, UnitAddress};

const DOCUMENTS: usize = 256;
const PAYLOAD_BYTES: usize = 8 * 1024 * 1024;
const PEAK_LIMIT: u64 = 256 * 1024 * 1024;

/// Peak resident memory of each node process seen so far, checked against the limit as it is read.
#[derive(Default)]
struct Peaks(BTreeMap<String, u64>);

impl Peaks {
    fn check(&mut self, net: &LocalNetwork, node: &str, when: &str) {
        let peak = net.node(node).peak_resident_bytes().expect("read VmHWM");
        println!("  {node} {when}: peak resident {} MiB", peak >> 20);
        let seen = self.0.entry(format!("{node} ({when})")).or_default();
        *seen = (*seen).max(peak);
        assert!(peak < PEAK_LIMIT, "{node} {when}: peak resident memory {} MiB, over {} MiB", peak >> 20, PEAK_LIMIT >> 20);
    }
}

/// The JSON submission of a document, written directly: base64 needs no escaping, and serde_json's
/// string writer takes seconds for a 10.7 MiB string in an unoptimised build.
fn submission_body(doc: &SignedEnvelope, payload: &[u8]) -> Vec<u8> {
    let envelope = serde_json::to_string(&doc.envelope).expect("envelope serialises");
    let payload = exchange_wire::api::b64_encode(payload);
    format!("{{\"envelope\":{envelope},\"signature\":\"{}\",\"payload\":\"{payload}\"}}", doc.signature_hex()).into_bytes()
}

#[test]
fn two_gib_backlog_for_a_stopped_district_keeps_every_node_under_256_mib_and_drains() {
    let started = Instant::now();
    let mut net = three_nodes(FAST_RETRY);
    let keys = Arc::new(net.unit_keys.clone());
    let sender = unit("gz.yuexiu/civil-affairs");
    let recipients: Vec<UnitAddress> = net.unit_keys.keys().filter(|u| u.node_part() == "gz.haizhu").take(4).cloned().collect();
    let yuexiu = net.node("gz.yuexiu").client();
    let mut peaks = Peaks::default();
    net.stop("gz.haizhu").expect("stop 海珠");

    // 256 documents of 8 MiB each, one after the other, each to one 海珠 unit.
    let submitting = Instant::now();
    let mut sent: HashMap<UnitAddress, Vec<MessageId>> = HashMap::new();
    let url = format!("{}/v1/messages", net.node("gz.yuexiu").api_url);
    let token = net.unit_tokens[&sender].clone();
    for i in 0..DOCUMENTS {
        let to = &recipients[i % recipients.len()];
        let mut payload = vec![(i % 251) as u8; PAYLOAD_BYTES];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let doc = document(&keys[&sender], sender.as_str(), &[to.as_str()], &[], &payload, &format!("扫描件 {i}"));
        let (status, answer) = post_raw(&url, &submission_body(&doc, &payload), Some(&token));
        assert_eq!(status, 202, "document {i} accepted: {answer}");
        sent.entry(to.clone()).or_default().push(doc.id);
    }
    println!("submitted {DOCUMENTS} × 8 MiB in {:.0?}", submitting.elapsed());

    let city = net.node("gz").client();
    wait_for("the whole backlog held at the city for 海珠", Duration::from_secs(300), || {
        let at_city = metric(&city, "exchange_outbox_depth", &[("peer", "gz.haizhu")]) as usize;
        let at_yuexiu = metric(&yuexiu, "exchange_outbox_depth", &[("peer", "gz")]) as usize;
        (at_city == DOCUMENTS && at_yuexiu == 0).then_some(())
    });
    println!("backlog of {} MiB at the city after {:.0?}", (DOCUMENTS * PAYLOAD_BYTES) >> 20, started.elapsed());
    peaks.check(&net, "gz.yuexiu", "after sending 2 GiB");
    peaks.check(&net, "gz", "taking in 2 GiB");

    // The city restarts holding the backlog, and retries 海珠 (reading its outbox each time).
    net.stop("gz").expect("stop the city");
    net.start("gz").expect("restart the city with the backlog");
    let city = net.node("gz").client();
    wait_for("the restarted city retrying 海珠", Duration::from_secs(60), || {
        (metric(&city, "exchange_send_failures_total", &[("peer", "gz.haizhu")]) >= 5.0).then_some(())
    });
    assert_eq!(metric(&city, "exchange_outbox_depth", &[("peer", "gz.haizhu")]) as usize, DOCUMENTS, "the backlog survived the restart");
    peaks.check(&net, "gz", "restarted with the backlog");

    // 海珠 comes back; its units read and sign for everything.
    let draining = Instant::now();
    net.start("gz.haizhu").expect("restart 海珠");
    let receivers: Vec<(UnitAddress, Receiver)> = recipients
        .iter()
        .map(|u| (u.clone(), Receiver::spawn(net.client_for(u), u.clone(), keys[u].clone(), keys.clone())))
        .collect();
    wait_for("every receipt back at 越秀", Duration::from_secs(900), || {
        (metric(&yuexiu, "exchange_receipts_total", &[("direction", "returned")]) as usize >= DOCUMENTS).then_some(())
    });
    println!("drained and signed for in {:.0?}", draining.elapsed());
    for node in ["gz.yuexiu", "gz", "gz.haizhu"] {
        peaks.check(&net, node, "at the end");
    }

    // Reconcile what was sent against what arrived.
    for (u, r) in receivers {
        let seen = r.finish();
        let ids = &sent[&u];
        assert_eq!(seen.len(), ids.len(), "{u} got exactly what was sent to it");
        assert!(ids.iter().all(|id| seen.get(id) == Some(&1)), "{u}: every document exactly once");
    }
    assert_eq!(metric(&yuexiu, "exchange_receipts_total", &[("direction", "returned")]) as usize, DOCUMENTS, "each receipt once");
    let client = net.client_for(&sender);
    for id in sent.values().flatten() {
        let status = client.status(id).expect("status at the sender's node");
        assert!(
            status.recipients.iter().all(|r| r.state == RecipientState::SignedFor && r.receipt.is_some()),
            "{}: signed for, with the receipt at the sender",
            short(id)
        );
    }
    let haizhu = stored_counts(&net.node("gz.haizhu").database_path());
    assert_eq!(haizhu.inbox as usize, DOCUMENTS, "no duplicate inbox rows");
    wait_for("nothing left at the city", Duration::from_secs(30), || {
        (stored_counts(&net.node("gz").database_path()).outbox == 0).then_some(())
    });
    println!("peaks: {:?}", peaks.0.iter().map(|(k, v)| format!("{k}: {} MiB", v >> 20)).collect::<Vec<_>>());
    println!("total {:.0?}", started.elapsed());
}
