//! The city node on PostgreSQL (a fresh database, dropped at the end): a stream of documents from
//! 越秀 to 海珠 crosses it and every receipt comes back, while the city node is killed with SIGKILL
//! mid-stream and restarted on the same database. Reconciliation: every accepted document is in its
//! recipient's inbox exactly once, every signed receipt is back at the sender's node, and nothing is
//! left in the city's outbox. The district nodes stay on SQLite, so one network runs both stores.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use exchange_node_core::storage::postgres::scratch::ScratchDatabase;
use exchange_tests::*;
use exchange_wire::api::{BatchItemResult, RecipientState};
use exchange_wire::{MessageId, UnitAddress};

const MESSAGES: usize = 600;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

/// Rows left in the city's outbox, and messages it holds.
fn city_counts(url: &str) -> (i64, i64) {
    runtime().block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(url).await.expect("connect to the city's database");
        let outbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(&mut c).await.unwrap();
        let messages: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages").fetch_one(&mut c).await.unwrap();
        (outbox, messages)
    })
}

#[test]
fn city_on_postgres_killed_mid_stream_loses_nothing_and_delivers_nothing_twice() {
    let db = runtime().block_on(ScratchDatabase::create());
    let mut net = exchange_devnet::launcher::LocalNetwork::create(&node_binary(), None, &["gz", "gz.yuexiu", "gz.haizhu"], FAST_RETRY)
        .expect("lay out the network");
    // Only the city node keeps custody in PostgreSQL.
    let city_config = net.node("gz").config_path.clone();
    let mut config = std::fs::read_to_string(&city_config).unwrap();
    config.push_str(&format!("\n[storage]\nurl = \"{}\"\n", db.url));
    std::fs::write(&city_config, config).unwrap();
    net.start_all().expect("start the nodes");

    let units = |node: &str| -> Vec<UnitAddress> { net.unit_keys.keys().filter(|u| u.node_part() == node).take(4).cloned().collect() };
    let (senders, haizhu) = (units("gz.yuexiu"), units("gz.haizhu"));
    let keys = Arc::new(net.unit_keys.clone());

    let mut expected: BTreeMap<UnitAddress, Vec<MessageId>> = BTreeMap::new();
    let mut sender_of: HashMap<MessageId, UnitAddress> = HashMap::new();
    let mut stream = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let from = &senders[(i / 50) % senders.len()];
        let to = haizhu[i % haizhu.len()].clone();
        let payload = format!("第{i}号文件：关于做好防汛工作的通知").into_bytes();
        let doc = document(&keys[from], from.as_str(), &[to.as_str()], &[], &payload, &format!("通知 {i}"));
        expected.entry(to).or_default().push(doc.id);
        sender_of.insert(doc.id, from.clone());
        stream.push(submission(&doc, &payload));
    }
    let receipts_expected = expected.values().map(Vec::len).sum::<usize>();
    let receivers: Vec<(UnitAddress, Receiver)> = expected
        .keys()
        .map(|u| (u.clone(), Receiver::spawn(net.client_for(u), u.clone(), keys[u].clone(), keys.clone())))
        .collect();

    let yuexiu = net.node("gz.yuexiu").client();
    let mut accepted = 0;
    for (n, batch) in stream.chunks(50).enumerate() {
        let from = &senders[n % senders.len()];
        let answer = net.client_for(from).submit_batch(batch.to_vec()).expect("submit a batch");
        for r in answer.results {
            match r {
                BatchItemResult::Accepted(_) => accepted += 1,
                BatchItemResult::Refused(e) => panic!("refused: {e:?}"),
            }
        }
        if n == 4 {
            net.kill("gz").expect("kill -9 the city node");
        }
        if n == 8 {
            net.start("gz").expect("restart the city node on the same database");
        }
    }
    assert_eq!(accepted, MESSAGES, "the district node accepted the whole stream");
    assert!(
        metric(&yuexiu, "exchange_send_failures_total", &[("peer", "gz")]) > 0.0,
        "越秀 must have felt the outage (otherwise the kill came too late to test anything)"
    );

    wait_for("every receipt back at 越秀", Duration::from_secs(180), || {
        let returned = metric(&yuexiu, "exchange_receipts_total", &[("direction", "returned")]);
        (returned as usize >= receipts_expected).then_some(())
    });
    let seen: HashMap<UnitAddress, HashMap<MessageId, usize>> = receivers.into_iter().map(|(u, r)| (u, r.finish())).collect();

    let (mut lost, mut duplicated) = (0, 0);
    for (u, ids) in &expected {
        let inbox = read_inbox(&net.client_for(u), u);
        let mut copies: HashMap<MessageId, usize> = HashMap::new();
        for item in &inbox {
            *copies.entry(item.id).or_default() += 1;
        }
        assert_eq!(copies.len(), ids.len(), "{u}: inbox holds exactly the messages sent to it");
        for id in ids {
            match copies.get(id) {
                None => lost += 1,
                Some(1) => {}
                Some(_) => duplicated += 1,
            }
            assert_eq!(seen[u].get(id), Some(&1), "{u}: the agency saw {} exactly once", short(id));
        }
        assert!(inbox.iter().all(|i| i.state == RecipientState::SignedFor));
    }
    assert_eq!((lost, duplicated), (0, 0), "reconciliation: 0 lost, 0 duplicated");
    let returned = metric(&yuexiu, "exchange_receipts_total", &[("direction", "returned")]) as usize;
    assert_eq!(returned, receipts_expected, "each receipt recorded once at the sender's node");
    for ids in expected.values() {
        for id in ids.iter().step_by(7) {
            let status = net.client_for(&sender_of[id]).status(id).unwrap();
            assert!(status.recipients.iter().all(|r| r.state == RecipientState::SignedFor && r.receipt.is_some()));
        }
    }
    let (outbox, messages) = city_counts(&db.url);
    assert_eq!(outbox, 0, "nothing stuck at the city");
    assert!(messages >= 2 * MESSAGES as i64, "the city held every document and its receipt in PostgreSQL ({messages} messages)");
    drop(net);
}
