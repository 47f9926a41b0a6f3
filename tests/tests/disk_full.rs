//! A full disk on each node in turn, under a steady stream 越秀 → 广州 → 海珠 with every document
//! signed for: the full node refuses new documents for now (agencies get 503 `storage-full` naming
//! the free space; neighbours are told to retry), keeps recording the acknowledgements and receipts
//! of what it holds, reports not ready, and takes work again on its own within seconds of space
//! coming back, without a restart. Then every node is killed (-9) and restarted, and the stream is
//! reconciled: every acknowledged document delivered exactly once, its receipt back at the sender.
//!
//! Each node's data directory is a 64 MiB tmpfs (root only; the test says so and passes trivially
//! elsewhere, CI runs it as root).

use std::time::{Duration, Instant};

use exchange_devnet::launcher::LocalNetwork;
use exchange_tests::load::receivers;
use exchange_tests::*;
use exchange_wire::UnitAddress;

const NODES: [&str; 3] = ["gz", "gz.yuexiu", "gz.haizhu"];

#[test]
fn a_full_disk_on_each_node_refuses_new_work_for_now_and_loses_nothing() {
    if !is_root() {
        eprintln!("skipped: mounting the small filesystems needs root (CI runs this test as root)");
        return;
    }
    let config = format!("{FAST_RETRY}\n[storage]\nreserve_bytes = 4194304\n");
    let mut net = LocalNetwork::create(&node_binary(), None, &NODES, &config).expect("lay out the network");
    let disks: Vec<(&str, SmallFs)> = NODES.iter().map(|id| (*id, SmallFs::mount(&net.node(id).data_dir, 64 << 20))).collect();
    net.start_all().expect("start the nodes");

    let pick = |node: &str| -> Vec<UnitAddress> { net.unit_keys.keys().filter(|u| u.node_part() == node).take(3).cloned().collect() };
    let (senders, recipients) = (pick("gz.yuexiu"), pick("gz.haizhu"));
    let readers = receivers(&net, &recipients);
    let stream = Stream::start(&net, &senders, &recipients, 100, "磁盘满测试");

    for (id, disk) in [&disks[1], &disks[0], &disks[2]] {
        let node = net.node(id);
        let (api, admin) = (node.client(), node.admin());
        let accepted_before = stream.snapshot().accepted.len();
        disk.fill();
        wait_for(&format!("{id} refusing new work"), Duration::from_secs(15), || {
            (metric(&api, "exchange_storage_intake_open", &[]) == 0.0).then_some(())
        });
        assert_eq!(http_status(&format!("{}/readyz", node.admin_url)), Some(503), "{id} reports not ready while full");
        let ready = admin.readiness().expect("readiness answers while full");
        let storage = ready.checks.iter().find(|c| c.name == "storage").expect("a storage check");
        assert!(storage.detail.contains("free") && storage.detail.contains("reserve"), "{id}: {}", storage.detail);
        if *id == "gz.yuexiu" {
            // The sender's own node: agencies are told why, and nothing is acknowledged.
            wait_for("a submission refused as storage-full", Duration::from_secs(10), || {
                stream.snapshot().refused.get("storage-full").copied().filter(|n| *n > 0)
            });
            let example = &stream.snapshot().refusal_examples["storage-full"];
            assert!(example.contains("503") && example.contains("free") && example.contains(&node.data_dir.display().to_string()), "{example}");
        }
        std::thread::sleep(Duration::from_secs(2)); // let the stream run into the full node for a while
        let freed = Instant::now();
        disk.free();
        wait_ready(&net, id, Duration::from_secs(10));
        eprintln!("{id}: ready again {:?} after space came back", freed.elapsed());
        assert_eq!(metric(&api, "exchange_storage_intake_open", &[]), 1.0);
        wait_for(&format!("new documents accepted after {id} recovered"), Duration::from_secs(20), || {
            (stream.snapshot().accepted.len() > accepted_before + 50).then_some(())
        });
    }
    let sent = stream.finish();
    eprintln!("stream: {} accepted, refused {:?}, unanswered {}", sent.accepted.len(), sent.refused, sent.unanswered);
    assert_eq!(sent.refused.keys().filter(|c| *c != "storage-full").count(), 0, "only storage-full refusals: {:?}", sent.refusal_examples);
    reconcile(&net, &sent, Duration::from_secs(120));

    // What was acknowledged is durable: kill every node at once, restart, reconcile again.
    for id in NODES {
        net.kill(id).expect("kill -9");
    }
    for id in NODES {
        net.start(id).expect("restart");
    }
    reconcile(&net, &sent, Duration::from_secs(60));
    for (_, r) in readers {
        let seen = r.finish();
        assert!(seen.values().all(|n| *n == 1), "every document reached its agency exactly once");
    }
}
