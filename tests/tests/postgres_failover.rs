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
    let city_config = net.node("gz").config_path.clone();
    let mut config = std::fs::read_to_string(&city_config).unwrap();
    config.push_str(&format!("\n[storage]\nurl = \"{}\"\n", db.url));
    std::fs::write(&city_config, config).unwrap();
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
