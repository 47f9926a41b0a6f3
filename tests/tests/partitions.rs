//! Partitions in network namespaces, under load: each node runs in its own namespace on a private
//! bridge, and a link is cut by taking a district's interface down (silently: no reset reaches the
//! other end). A stream of documents flows 越秀 → 广州 → 海珠 throughout, with receipts back.
//!
//! - Each link (越秀–广州, then 广州–海珠) is cut long enough for both ends to give up on the old
//!   connection, then healed: the backlog must start draining within 2 s of the heal (the first
//!   document acknowledged after the cut is in its recipient's inbox within 2 s). A liveness bound,
//!   generous but real, not a benchmark.
//! - Links flap: cuts from a fraction of a second to a few seconds, both links, once both at once.
//!
//! Each test ends with the reconciliation of every acknowledged document. Needs root (skipped with a
//! message otherwise; CI runs as root).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use exchange_tests::load::{Accepted, Load, receivers, reconcile};
use exchange_tests::netns::{Lab, root_or_skip};
use exchange_tests::*;
use exchange_wire::UnitAddress;

/// The tests take turns: the drain bound should measure the nodes, not two networks sharing two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The bound on heal → first queued document delivered.
const DRAIN_START_BOUND: Duration = Duration::from_secs(2);

const NODES: [&str; 3] = ["gz", "gz.yuexiu", "gz.haizhu"];

fn units(net: &exchange_devnet::launcher::LocalNetwork, node: &str) -> Vec<UnitAddress> {
    net.unit_keys.keys().filter(|u| u.node_part() == node).take(4).cloned().collect()
}

/// The documents acknowledged after `t`.
fn after(load: &Load, t: Instant) -> Vec<Accepted> {
    load.accepted().into_iter().filter(|a| a.at > t).collect()
}

#[test]
fn each_link_cut_and_healed_under_load_drains_within_two_seconds() {
    if !root_or_skip("each_link_cut_and_healed_under_load_drains_within_two_seconds") {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new(&NODES);
    let net = lab.start_network(&NODES, "");
    let (senders, recipients) = (units(&net, "gz.yuexiu"), units(&net, "gz.haizhu"));
    let readers = receivers(&net, &recipients);
    let reader = |a: &Accepted| &readers.iter().find(|(u, _)| *u == a.to).expect("a reader per recipient").1;
    let load = Load::start(&net, &senders, &recipients, 100, 5, 512);
    load.wait_more(100, Duration::from_secs(30));

    for (host, link, peer_side) in [("gz.yuexiu", "越秀–广州", "gz.yuexiu"), ("gz.haizhu", "广州–海珠", "gz")] {
        let watcher = net.node(peer_side).client();
        let peer = if peer_side == "gz" { "gz.haizhu" } else { "gz" };
        lab.cut(host);
        let cut_at = Instant::now();
        // Cut until the end that keeps sending has given the connection up, with a backlog behind it.
        wait_for(&format!("{peer_side} noticing the {link} link is down"), Duration::from_secs(30), || {
            (metric(&watcher, "exchange_peer_up", &[("peer", peer)]) == 0.0).then_some(())
        });
        load.wait_more(200, Duration::from_secs(30));
        let queued = after(&load, cut_at);
        assert!(
            queued.iter().all(|a| reader(a).arrived(&a.id).is_none()),
            "a document acknowledged after the {link} link was cut arrived before it was healed: the cut is not a partition"
        );
        lab.heal(host);
        let healed_at = Instant::now();
        let first = &queued[0];
        let arrived = wait_for(&format!("the first document queued behind the {link} cut"), Duration::from_secs(60), || reader(first).arrived(&first.id));
        let first_delay = arrived.saturating_duration_since(healed_at);
        wait_for(&format!("the backlog of the {link} cut read by the recipients' systems"), Duration::from_secs(60), || {
            queued.iter().all(|a| reader(a).arrived(&a.id).is_some()).then_some(())
        });
        let drained = queued.iter().filter_map(|a| reader(a).arrived(&a.id)).max().unwrap().saturating_duration_since(healed_at);
        println!(
            "{link}: cut {:.1} s with {} documents queued; after the heal the first arrived in {} ms, all read by the recipients' systems within {} ms",
            (healed_at - cut_at).as_secs_f64(),
            queued.len(),
            first_delay.as_millis(),
            drained.as_millis()
        );
        assert!(
            first_delay <= DRAIN_START_BOUND,
            "after the {link} link healed, the first queued document took {first_delay:?} to arrive (bound {DRAIN_START_BOUND:?})"
        );
        load.wait_more(50, Duration::from_secs(30));
    }
    let accepted = load.finish();
    reconcile(&net, &accepted, readers, Duration::from_secs(120));
}

#[test]
fn flapping_links_under_load_lose_and_duplicate_nothing() {
    if !root_or_skip("flapping_links_under_load_lose_and_duplicate_nothing") {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new(&NODES);
    let net = lab.start_network(&NODES, "");
    let (senders, recipients) = (units(&net, "gz.yuexiu"), units(&net, "gz.haizhu"));
    let readers = receivers(&net, &recipients);
    let load = Load::start(&net, &senders, &recipients, 100, 5, 512);
    load.wait_more(100, Duration::from_secs(30));

    // (links cut, how long, how long up before the next cut), in milliseconds.
    let flaps: [(&[&str], u64, u64); 8] = [
        (&["gz.yuexiu"], 300, 700),
        (&["gz.haizhu"], 1500, 300),
        (&["gz.yuexiu"], 2500, 1000),
        (&["gz.haizhu"], 700, 200),
        (&["gz.yuexiu", "gz.haizhu"], 3000, 1500),
        (&["gz.haizhu"], 4000, 500),
        (&["gz.yuexiu"], 200, 200),
        (&["gz.yuexiu"], 1200, 800),
    ];
    for (hosts, down_ms, up_ms) in flaps {
        for h in hosts {
            lab.cut(h);
        }
        // The flaps' rhythm is the fault being made, not a wait for a condition.
        std::thread::sleep(Duration::from_millis(down_ms));
        for h in hosts {
            lab.heal(h);
        }
        std::thread::sleep(Duration::from_millis(up_ms));
    }
    load.wait_more(100, Duration::from_secs(60));
    let accepted = load.finish();
    println!("{} flaps over both links, {} documents acknowledged", flaps.len(), accepted.len());
    reconcile(&net, &accepted, readers, Duration::from_secs(120));
}
