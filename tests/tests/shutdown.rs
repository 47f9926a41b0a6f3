//! SIGTERM with traffic flowing: `exchange-node run` stops within its bound (10 s), exits 0 and says
//! `stopped cleanly` in its log, for a relaying node (the city) and for the sender's own node (越秀).
//! After each restart the stream goes on; at the end every acknowledged document is in its
//! recipient's inbox exactly once and its signed receipt is back at the sender's node.

use std::process::Command;
use std::time::{Duration, Instant};

use exchange_tests::load::receivers;
use exchange_tests::*;
use exchange_wire::UnitAddress;

/// The bound `exchange-node run` promises (node::SHUTDOWN_BOUND), with a second for the process to exit.
const BOUND: Duration = Duration::from_secs(11);

/// The wait status of a process that has exited but is not reaped yet (the launcher owns the child
/// and reaps it later), read from `/proc/<pid>/stat` (field 52, `exit_code`); `None` while it runs.
fn exit_status(pid: u32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    // fields[0] is field 3 (the state), so field 52 is fields[49].
    (fields.first() == Some(&"Z")).then(|| fields.get(49).and_then(|c| c.parse().ok())).flatten()
}

#[test]
fn sigterm_stops_a_node_cleanly_within_the_bound_and_loses_nothing() {
    let mut net = three_nodes(FAST_RETRY);
    let pick = |node: &str| -> Vec<UnitAddress> { net.unit_keys.keys().filter(|u| u.node_part() == node).take(3).cloned().collect() };
    let (senders, recipients) = (pick("gz.yuexiu"), pick("gz.haizhu"));
    let readers = receivers(&net, &recipients);
    let stream = Stream::start(&net, &senders, &recipients, 100, "停机测试");

    for id in ["gz", "gz.yuexiu"] {
        let flowing = stream.snapshot().accepted.len() + 100;
        wait_for("documents flowing", Duration::from_secs(60), || (stream.snapshot().accepted.len() >= flowing).then_some(()));
        let pid = net.node(id).pid().expect("the node runs");
        let told = Instant::now();
        assert!(Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("run kill").success());
        let status = wait_for(&format!("{id} to exit after SIGTERM"), BOUND + Duration::from_secs(10), || exit_status(pid));
        let took = told.elapsed();
        let log = net.log_tail(id, 30);
        assert!(took <= BOUND, "{id} took {took:?} to stop after SIGTERM (bound {BOUND:?}); its log:\n{log}");
        assert_eq!(status, 0, "{id} exits with status 0 after SIGTERM (wait status {status}); its log:\n{log}");
        assert!(log.contains("stopped cleanly"), "{id} logs that it stopped cleanly; its log:\n{log}");
        eprintln!("{id}: stopped {took:?} after SIGTERM");
        net.stop(id).expect("reap the exited node");
        net.start(id).expect("restart the node");
    }
    let after_restarts = stream.snapshot().accepted.len() + 100;
    wait_for("documents flowing after the restarts", Duration::from_secs(60), || (stream.snapshot().accepted.len() >= after_restarts).then_some(()));
    let sent = stream.finish();
    eprintln!("stream: {} accepted, refused {:?}, unanswered {}", sent.accepted.len(), sent.refused, sent.unanswered);
    reconcile(&net, &sent, Duration::from_secs(120));
    for (u, r) in readers {
        let seen = r.finish();
        assert!(seen.values().all(|n| *n == 1), "{u}: every document reached the agency exactly once");
    }
}
