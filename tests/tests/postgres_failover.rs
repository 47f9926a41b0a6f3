//! The city node as two replicas over one PostgreSQL database (a fresh one, dropped at the end):
//! a stream of documents from 越秀 to 海珠 crosses the city, every receipt comes back, and the
//! active city replica is killed with SIGKILL several times under that load. The standby takes the
//! lease and the districts reach it by themselves (the tree and their `parent_address` list both
//! replicas' addresses, one peer id). Reconciliation as in the single-city test: 0 lost, 0
//! duplicated, every receipt back; each takeover, from the kill to the first message the new
//! active replica forwarded, stays within [`FAILOVER_BOUND`].

use std::time::Duration;

use exchange_devnet::failover::{self, Takeover};
use exchange_node_core::storage::postgres::scratch::ScratchDatabase;
use exchange_tests::city_outage::CityOutage;
use exchange_tests::*;

const MESSAGES: usize = 1000;
/// The active replica is killed after these batches of 50 (a takeover each).
const KILL_AFTER: [usize; 3] = [3, 8, 13];
/// A standby notices the lease within 0.5 s, opens the store and listens; the districts redial
/// every 0.25 s.
const FAILOVER_BOUND: Duration = Duration::from_secs(5);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

#[test]
fn killing_the_active_city_replica_under_load_fails_over_and_loses_nothing() {
    let began = std::time::Instant::now();
    let db = runtime().block_on(ScratchDatabase::create());
    let mut net = exchange_devnet::launcher::LocalNetwork::create(&node_binary(), None, &["gz", "gz.yuexiu", "gz.haizhu"], FAST_RETRY)
        .expect("lay out the network");
    net.set_storage("gz", &format!("url = \"{}\"", db.url)).unwrap();
    let second = net.add_replica("gz").expect("add a second city replica");
    let replicas = vec!["gz".to_string(), second.clone()];
    net.start_all().expect("start the nodes");
    eprintln!("{:?}: network up", began.elapsed());
    // The second replica starts while the first holds the lease: a standby that monitoring sees.
    net.start(&second).expect("start the standby");
    let standby = net.node(&second).client();
    assert_eq!(metric(&standby, "exchange_replica_active", &[]), 0.0, "the second replica waits as the standby");
    assert_eq!(metric(&net.node("gz").client(), "exchange_replica_active", &[]), 1.0, "the first replica is active");
    let ready = ureq::get(&format!("{}/readyz", net.node(&second).api_url)).call();
    assert!(matches!(ready, Err(ureq::Error::StatusCode(503))), "a standby is not ready: {ready:?}");

    let mut takeovers: Vec<Takeover> = Vec::new();
    CityOutage { messages: MESSAGES, units_per_node: 4, cc_every: 0, kill_after_batch: 0, restart_after_batch: 0 }.run_with(&mut net, |net, n| {
        if KILL_AFTER.contains(&n) {
            let t = failover::kill_active(net, &replicas, Duration::from_secs(30)).expect("a takeover");
            eprintln!("{:?}: killed {}, {} took over and forwarded after {} ms", began.elapsed(), t.killed, t.new_active, t.failover.as_millis());
            takeovers.push(t);
        }
    });

    eprintln!("{:?}: reconciled", began.elapsed());
    assert_eq!(takeovers.len(), KILL_AFTER.len());
    for t in &takeovers {
        assert_ne!(t.killed, t.new_active);
        assert!(t.failover < FAILOVER_BOUND, "failover after killing {} took {:?} (bound {FAILOVER_BOUND:?})", t.killed, t.failover);
    }
    let (max, mean) = failover::failover_ms(&takeovers);
    eprintln!("failover: max {max} ms, mean {mean} ms over {} kills", takeovers.len());
    // Exactly one replica active at the end, and the lease changes counted where they happened.
    let active: Vec<&String> = replicas.iter().filter(|l| metric(&net.node(l).client(), "exchange_replica_active", &[]) == 1.0).collect();
    assert_eq!(active.len(), 1, "exactly one replica is active: {active:?}");
    assert_eq!(metric(&net.node(active[0]).client(), "exchange_lease_changes_total", &[("change", "acquired")]), 1.0);
    drop(net);
}

/// The replicas keep attachment files in one folder they share (`storage.attachments_dir`): a
/// document with a 3 MiB attachment that the active city replica took into custody, while 海珠 was
/// down, is forwarded with its attachment by the standby after the active one is killed, and the
/// recipient downloads exactly the bytes that were sent.
#[test]
fn the_standby_forwards_an_attachment_the_killed_replica_acknowledged() {
    use exchange_wire::document::Attachment;
    use exchange_wire::{Envelope, Kind, Priority};

    let db = runtime().block_on(ScratchDatabase::create());
    let mut net = exchange_devnet::launcher::LocalNetwork::create(&node_binary(), None, &["gz", "gz.yuexiu", "gz.haizhu"], FAST_RETRY)
        .expect("lay out the network");
    let shared = net.root.join("gz-shared-attachments");
    net.set_storage("gz", &format!("url = \"{}\"\nattachments_dir = \"{}\"", db.url, shared.display())).unwrap();
    let second = net.add_replica("gz").expect("add a second city replica");
    let replicas = vec!["gz".to_string(), second.clone()];
    net.start_all().expect("start the nodes");
    net.start(&second).expect("start the standby");
    let active = failover::wait_active(&net, &replicas, Duration::from_secs(10)).unwrap();

    // 海珠 is down: the document waits at the city, its attachment in the shared folder.
    net.stop("gz.haizhu").unwrap();
    let (sender, recipient) = (unit("gz.yuexiu/liurong-street"), unit("gz.haizhu/civil-affairs"));
    let scan = net.root.join("scan.pdf");
    let bytes: Vec<u8> = (0..3 * 1024 * 1024 + 4321u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&scan, &bytes).unwrap();
    let a = Attachment::of_file(&scan, "application/pdf").unwrap();
    let yuexiu = net.client_for(&sender);
    yuexiu.upload_attachment(&scan, &a).expect("upload the attachment at 越秀");
    let mut e = Envelope::new(Kind::Document, sender.clone(), vec![recipient.clone()], vec![], Priority::Routine, b"body");
    a.describe(1, &mut e.metadata);
    let signed = e.sign(&net.unit_keys[&sender]);
    yuexiu.submit(&signed, b"body").expect("submit the document");
    let city = net.node(&active).client();
    wait_for("the document held at the city for 海珠", Duration::from_secs(30), || {
        (metric(&city, "exchange_outbox_depth", &[("peer", "gz.haizhu")]) >= 1.0).then_some(())
    });
    assert!(shared.join(a.sha256.to_hex()).exists(), "the city keeps the attachment in the shared folder");

    net.kill(&active).unwrap();
    net.start("gz.haizhu").unwrap();
    let haizhu = net.client_for(&recipient);
    wait_for("the document in 海珠's inbox, forwarded by the standby", Duration::from_secs(60), || {
        read_inbox(&haizhu, &recipient).into_iter().find(|i| i.id == signed.id)
    });
    let new_active = failover::wait_active(&net, &replicas, Duration::from_secs(10)).unwrap();
    assert_ne!(new_active, active, "the standby took over");
    let saved = net.root.join("saved.pdf");
    haizhu.download_attachment(&signed.id, 1, &a, &saved).expect("download the attachment at 海珠");
    assert_eq!(std::fs::read(&saved).unwrap(), bytes, "the recipient has exactly the bytes sent");
    drop(net);
}
