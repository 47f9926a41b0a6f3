//! (c) A district node is stopped for a while: what is sent to it meanwhile waits at the city, is
//! retried with backoff, and drains completely when the node comes back, each message exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use exchange_tests::*;
use exchange_wire::{MessageId, UnitAddress};

const MESSAGES: usize = 200;

#[test]
fn queued_messages_drain_when_a_district_returns() {
    let mut net = three_nodes(FAST_RETRY);
    let keys = Arc::new(net.unit_keys.clone());
    let sender = unit("gz.yuexiu/civil-affairs");
    let recipients: Vec<UnitAddress> = net.unit_keys.keys().filter(|u| u.node_part() == "gz.haizhu").take(4).cloned().collect();

    net.stop("gz.haizhu").expect("stop 海珠");
    let yuexiu = net.node("gz.yuexiu").client();
    let city = net.node("gz").client();
    let mut sent: HashMap<UnitAddress, Vec<MessageId>> = HashMap::new();
    for i in 0..MESSAGES {
        let to = &recipients[i % recipients.len()];
        let payload = format!("海珠停机期间的第{i}份文件").into_bytes();
        let doc = document(&keys[&sender], sender.as_str(), &[to.as_str()], &[], &payload, "停机测试");
        assert!(!net.client_for(&sender).submit(&doc, &payload).expect("submit while 海珠 is down").duplicate);
        sent.entry(to.clone()).or_default().push(doc.id);
    }

    // Everything waits at the city, which keeps retrying.
    wait_for("all messages queued at the city for 海珠", Duration::from_secs(30), || {
        (metric(&city, "exchange_outbox_depth", &[("peer", "gz.haizhu")]) as usize == MESSAGES).then_some(())
    });
    wait_for("the city retrying", Duration::from_secs(30), || {
        (metric(&city, "exchange_send_failures_total", &[("peer", "gz.haizhu")]) >= 3.0).then_some(())
    });
    assert_eq!(metric(&city, "exchange_peer_up", &[("peer", "gz.haizhu")]), 0.0);

    net.start("gz.haizhu").expect("restart 海珠");
    let receivers: Vec<(UnitAddress, Receiver)> = recipients
        .iter()
        .map(|u| (u.clone(), Receiver::spawn(net.client_for(u), u.clone(), keys[u].clone(), keys.clone())))
        .collect();

    wait_for("every receipt back at 越秀", Duration::from_secs(60), || {
        (metric(&yuexiu, "exchange_receipts_total", &[("direction", "returned")]) as usize == MESSAGES).then_some(())
    });
    wait_for("the city's queue for 海珠 drained (gauge refreshed)", Duration::from_secs(10), || {
        (metric(&city, "exchange_outbox_depth", &[("peer", "gz.haizhu")]) == 0.0).then_some(())
    });
    assert_eq!(metric(&city, "exchange_peer_up", &[("peer", "gz.haizhu")]), 1.0);
    for (u, r) in receivers {
        let seen = r.finish();
        let ids = &sent[&u];
        assert_eq!(seen.len(), ids.len(), "{u} got exactly what was sent to it");
        assert!(ids.iter().all(|id| seen.get(id) == Some(&1)), "{u}: every message exactly once");
    }
    let haizhu = stored_counts(&net.node("gz.haizhu").database_path());
    assert_eq!(haizhu.inbox as usize, MESSAGES, "no duplicate inbox rows");
}
