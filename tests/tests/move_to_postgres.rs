//! Moving a running network's city node from SQLite to PostgreSQL with `exchange-node
//! move-to-postgres`, as an operator would: documents delivered and signed for before the move,
//! documents held in the city's outbox for a district that is down, a city unit's inbox with a
//! cursor. After the move the city runs on PostgreSQL; reconciliation: every document in its
//! recipient's inbox exactly once, every receipt back, the city unit's inbox positions unchanged,
//! the audit chain intact. The command refuses a second move, a non-empty target, and the node
//! refuses to start on the old SQLite file.

use std::process::Command;
use std::time::Duration;

use exchange_node_core::storage::postgres::scratch::ScratchDatabase;
use exchange_tests::*;
use exchange_wire::MessageId;
use exchange_wire::api::RecipientState;

const BEFORE: usize = 30;
const HELD: usize = 30;

fn move_city(config: &std::path::Path, url: &str) -> (bool, String) {
    let out = Command::new(node_binary()).args(["move-to-postgres", "--config"]).arg(config).args(["--to", url]).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_city_node_moves_from_sqlite_to_postgres_with_everything_it_holds() {
    let db = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(ScratchDatabase::create());
    let mut net = three_nodes(FAST_RETRY);
    let keys = net.unit_keys.clone();
    let of = |node: &str| keys.keys().find(|u| u.node_part() == node).unwrap().clone();
    let (sender, recipient, city_unit) = (of("gz.yuexiu"), of("gz.haizhu"), of("gz"));
    let send = |net: &exchange_devnet::launcher::LocalNetwork, i: usize| -> MessageId {
        let payload = format!("第{i}号：关于迁移交换节点存储的通知").into_bytes();
        let doc = document(&keys[&sender], sender.as_str(), &[recipient.as_str()], &[city_unit.as_str()], &payload, &format!("通知 {i}"));
        net.client_for(&sender).submit(&doc, &payload).expect("submit");
        doc.id
    };

    // Before the move: delivered, and signed for by the district unit.
    let mut sent: Vec<MessageId> = (0..BEFORE).map(|i| send(&net, i)).collect();
    let haizhu = net.client_for(&recipient);
    let items = wait_for("the first documents at 海珠", Duration::from_secs(60), || {
        let inbox = read_inbox(&haizhu, &recipient);
        (inbox.len() == BEFORE).then_some(inbox)
    });
    for item in &items {
        sign_for(&haizhu, &keys[&recipient], &recipient, item);
    }
    let city = net.client_for(&city_unit);
    let city_inbox_before = wait_for("the copies in the city unit's inbox", Duration::from_secs(60), || {
        let inbox = read_inbox(&city, &city_unit);
        (inbox.len() == BEFORE).then_some(inbox)
    });

    // 海珠 goes down; the next documents wait in the city's outbox.
    net.stop("gz.haizhu").expect("stop 海珠");
    sent.extend((BEFORE..BEFORE + HELD).map(|i| send(&net, i)));
    let city_db = net.node("gz").database_path();
    wait_for("the held documents in the city's outbox", Duration::from_secs(60), || {
        (stored_counts(&city_db).outbox >= HELD as i64).then_some(())
    });
    net.stop("gz").expect("stop the city node");
    let before = stored_counts(&city_db);

    // The move.
    let config = net.node("gz").config_path.clone();
    let (ok, out) = move_city(&config, &db.url);
    assert!(ok, "move-to-postgres succeeds: {out}");
    assert!(out.contains("verified") && out.contains("messages"), "it reports each table: {out}");
    assert_eq!(stored_counts(&city_db), before, "the SQLite file is left as it was");

    // Refusals: a second move, a target that holds data, the node on the old file.
    let (ok, out) = move_city(&config, &db.url);
    assert!(!ok && out.contains("was moved to PostgreSQL"), "a second move is refused: {out}");
    let marker = city_db.with_file_name(exchange_node_core::storage::move_to_postgres::MOVED_MARKER);
    let note = std::fs::read(&marker).expect("the marker");
    std::fs::remove_file(&marker).unwrap();
    let (ok, out) = move_city(&config, &db.url);
    assert!(!ok && out.contains("already holds a node's data"), "a non-empty target is refused: {out}");
    std::fs::write(&marker, note).unwrap();
    let old = Command::new(node_binary()).args(["run", "--config"]).arg(&config).output().unwrap();
    assert!(
        !old.status.success() && String::from_utf8_lossy(&old.stderr).contains("was moved to PostgreSQL"),
        "the node refuses to start on the old file: {}",
        String::from_utf8_lossy(&old.stderr)
    );

    // The city on PostgreSQL; 海珠 comes back.
    net.set_storage("gz", &format!("url = \"{}\"", db.url)).unwrap();
    net.start("gz").expect("start the city on PostgreSQL");
    net.start("gz.haizhu").expect("restart 海珠");

    let city = net.client_for(&city_unit);
    let after_move = read_inbox(&city, &city_unit);
    let positions = |items: &[exchange_wire::api::InboxItem]| items.iter().map(|i| (i.seq, i.id)).collect::<Vec<_>>();
    assert_eq!(positions(&after_move[..BEFORE]), positions(&city_inbox_before), "the city unit's inbox kept its positions");

    let haizhu = net.client_for(&recipient);
    let items = wait_for("every document at 海珠", Duration::from_secs(90), || {
        let inbox = read_inbox(&haizhu, &recipient);
        (inbox.len() >= BEFORE + HELD).then_some(inbox)
    });
    for item in items.iter().filter(|i| i.state != RecipientState::SignedFor) {
        sign_for(&haizhu, &keys[&recipient], &recipient, item);
    }
    let yuexiu = net.node("gz.yuexiu").client();
    wait_for("every receipt back at 越秀", Duration::from_secs(90), || {
        (metric(&yuexiu, "exchange_receipts_total", &[("direction", "returned")]) as usize >= sent.len()).then_some(())
    });

    // Reconcile.
    let inbox = read_inbox(&haizhu, &recipient);
    let mut ids: Vec<MessageId> = inbox.iter().map(|i| i.id).collect();
    ids.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(ids, expected, "every document in 海珠's inbox exactly once (0 lost, 0 duplicated)");
    assert_eq!(read_inbox(&city, &city_unit).len(), sent.len(), "every copy in the city unit's inbox exactly once");
    assert_eq!(
        metric(&yuexiu, "exchange_receipts_total", &[("direction", "returned")]) as usize,
        sent.len(),
        "each receipt recorded once back at 越秀"
    );
    for id in &sent {
        let status = net.client_for(&sender).status(id).unwrap();
        let to_haizhu = status.recipients.iter().find(|r| r.unit == recipient).unwrap();
        assert_eq!(to_haizhu.state, RecipientState::SignedFor, "document {} signed for", short(id));
    }
    let verified = AdminAt::of(net.node("gz")).command().args(["audit", "verify"]).output().unwrap();
    assert!(verified.status.success(), "the city's audit chain verifies on PostgreSQL: {}", String::from_utf8_lossy(&verified.stdout));
    drop(net);
}
