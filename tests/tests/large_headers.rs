//! No batch can block a link. 越秀 queues 200 documents with 200 KiB headers (a long 摘要 in their
//! metadata) for 海珠 while the city is down: 40 MiB of headers and almost no payload, which used to
//! make one batch larger than any node reads, sent again forever. Behind them: a 4 MiB document that
//! 海珠 (configured with smaller limits: it reads batches up to 3 MiB) can never take, and an urgent
//! (特急) document. When the city returns, 越秀's batches are cut by their encoded size (no split
//! needed between nodes with the same limits); the city's batches to 海珠 are answered `too_large`
//! and halved until they pass; the 4 MiB document is refused for good (a dead letter at the city,
//! reported to its sender) instead of blocking the link; the urgent document arrives among the first.
//! Everything else is delivered exactly once, its receipt back at the sender.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use exchange_devnet::launcher::LocalNetwork;
use exchange_tests::*;
use exchange_wire::api::RecipientState;
use exchange_wire::{Envelope, Kind, MessageId, Priority, SignedEnvelope, UnitAddress};

const LARGE_HEADERS: usize = 200;
const ABSTRACT_BYTES: usize = 200 * 1024;

/// 海珠 reads batches up to 2 × 1 MiB + 1 MiB: smaller than the city's 8 MiB batches.
const SMALL_LIMITS: &str = "batch_max_bytes = 1048576\n\n[limits]\nmax_payload_bytes = 1048576\n";

fn append_config(net: &LocalNetwork, node: &str, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(&net.node(node).config_path).expect("open the node's configuration");
    f.write_all(text.as_bytes()).expect("append to the node's configuration");
}

fn signed(key: &SigningKey, from: &UnitAddress, to: &UnitAddress, priority: Priority, payload: &[u8], meta: &[(&str, String)]) -> SignedEnvelope {
    let mut e = Envelope::new(Kind::Document, from.clone(), vec![to.clone()], vec![], priority, payload);
    for (k, v) in meta {
        e.metadata.insert((*k).into(), v.clone());
    }
    e.sign(key)
}

#[test]
fn large_headers_drain_split_to_what_the_neighbour_reads_and_an_urgent_document_passes() {
    let mut net = LocalNetwork::create(&node_binary(), None, &["gz", "gz.yuexiu", "gz.haizhu"], "").expect("lay out the network");
    for node in ["gz", "gz.yuexiu"] {
        append_config(&net, node, FAST_RETRY);
    }
    append_config(&net, "gz.haizhu", &format!("{FAST_RETRY}{SMALL_LIMITS}"));
    net.start_all().expect("start the nodes");
    let keys = Arc::new(net.unit_keys.clone());
    let sender = unit("gz.yuexiu/civil-affairs");
    let recipients: Vec<UnitAddress> = net.unit_keys.keys().filter(|u| u.node_part() == "gz.haizhu").take(4).cloned().collect();
    let yuexiu = net.node("gz.yuexiu").client();
    let client = net.client_for(&sender);

    net.stop("gz").expect("stop the city");
    let mut sent: HashMap<UnitAddress, Vec<MessageId>> = HashMap::new();
    let summary = "关于做好防汛工作的通知摘要。".repeat(ABSTRACT_BYTES / "关于做好防汛工作的通知摘要。".len());
    for i in 0..LARGE_HEADERS {
        let to = &recipients[i % recipients.len()];
        let payload = format!("第{i}号通知").into_bytes();
        let meta = [("title", format!("通知 {i}")), ("abstract", summary.clone())];
        let doc = signed(&keys[&sender], &sender, to, Priority::Routine, &payload, &meta);
        assert!(doc.envelope.canonical_bytes().len() > ABSTRACT_BYTES, "a large header");
        assert!(!client.submit(&doc, &payload).expect("submit a document with a large header").duplicate);
        sent.entry(to.clone()).or_default().push(doc.id);
    }
    // A document 海珠 can never read (4 MiB, over what it reads in one batch), then an urgent one.
    let too_large_payload = vec![7u8; 4 * 1024 * 1024];
    let too_large = signed(&keys[&sender], &sender, &recipients[0], Priority::Routine, &too_large_payload, &[("title", "扫描件".into())]);
    assert!(!client.submit(&too_large, &too_large_payload).expect("submit a 4 MiB document").duplicate);
    let urgent_payload = "特急：今晚八时前报送汛情".as_bytes();
    let urgent = signed(&keys[&sender], &sender, &recipients[1], Priority::Urgent, urgent_payload, &[("title", "特急通知".into())]);
    assert!(!client.submit(&urgent, urgent_payload).expect("submit the urgent document").duplicate);
    sent.entry(recipients[1].clone()).or_default().push(urgent.id);
    let expected = LARGE_HEADERS + 1;
    wait_for("the queue at 越秀", Duration::from_secs(30), || {
        (metric(&yuexiu, "exchange_outbox_depth", &[("peer", "gz")]) as usize == expected + 1).then_some(())
    });

    net.start("gz").expect("restart the city");
    let receivers: Vec<(UnitAddress, Receiver)> = recipients
        .iter()
        .map(|u| (u.clone(), Receiver::spawn(net.client_for(u), u.clone(), keys[u].clone(), keys.clone())))
        .collect();
    wait_for("every receipt back at 越秀", Duration::from_secs(300), || {
        (metric(&yuexiu, "exchange_receipts_total", &[("direction", "returned")]) as usize >= expected).then_some(())
    });
    let failed = wait_for("the 4 MiB document reported failed to its sender", Duration::from_secs(60), || {
        let status = client.status(&too_large.id).ok()?;
        status.recipients.into_iter().find(|r| r.state == RecipientState::Failed)
    });
    let why = failed.detail.unwrap_or_default();
    assert!(why.contains("too-large") && why.contains("gz.haizhu"), "the failure names the neighbour and why: {why}");

    // Reconcile: everything else exactly once, signed for, receipts back.
    for (u, r) in receivers {
        let seen = r.finish();
        let ids = &sent[&u];
        assert_eq!(seen.len(), ids.len(), "{u} got exactly what was sent to it");
        assert!(ids.iter().all(|id| seen.get(id) == Some(&1)), "{u}: every document exactly once");
    }
    for id in sent.values().flatten() {
        let status = client.status(id).expect("status at the sender's node");
        assert!(status.recipients.iter().all(|r| r.state == RecipientState::SignedFor && r.receipt.is_some()), "{} signed for", short(id));
    }
    assert_eq!(stored_counts(&net.node("gz.haizhu").database_path()).inbox as usize, expected, "no duplicate inbox rows");

    // The urgent document was not held up behind the queue: it reached 海珠 among the first.
    let mut positions: Vec<(i64, MessageId)> = Vec::new();
    for u in &recipients {
        positions.extend(read_inbox(&net.client_for(u), u).into_iter().map(|i| (i.seq, i.id)));
    }
    positions.sort();
    let rank = positions.iter().position(|(_, id)| *id == urgent.id).expect("the urgent document is in an inbox");
    assert!(rank < LARGE_HEADERS / 4, "the urgent document arrived {rank}th of {}", positions.len());

    // How: 越秀 never sent the city more than it reads; the city split its batches for 海珠.
    let city = net.node("gz").client();
    assert_eq!(metric(&yuexiu, "exchange_batch_splits_total", &[("peer", "gz")]), 0.0, "batches cut by their encoded size");
    assert!(metric(&city, "exchange_batch_splits_total", &[("peer", "gz.haizhu")]) >= 1.0, "the city split its batches for 海珠");
    assert_eq!(metric(&city, "exchange_dead_letters", &[("peer", "gz.haizhu")]), 1.0, "only the 4 MiB document, as a dead letter");
    wait_for("nothing else left at the city", Duration::from_secs(30), || {
        (stored_counts(&net.node("gz").database_path()).outbox == 1).then_some(())
    });
}
