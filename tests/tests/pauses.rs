//! A paused node, and a node killed while it commits, under a steady stream 越秀 → 广州 → 海珠 with
//! receipts back.
//!
//! - SIGSTOP of the city, then of 海珠, each until a backlog has built up behind it, then SIGCONT:
//!   the backlog drains and nothing is lost or duplicated.
//! - kill -9 of the city in the middle of writing a transaction, three times: the city is stopped at
//!   random moments while it commits large groups, and killed only when its write-ahead log shows a
//!   transaction being written (frames after the last commit frame, which recovery drops); then it is
//!   restarted. Whatever the killed transaction held was not acknowledged, so its senders hand it
//!   over again.
//!
//! Each test ends with the reconciliation of every acknowledged document.

use std::time::{Duration, Instant};

use exchange_devnet::launcher::LocalNetwork;
use exchange_tests::load::{Accepted, Load, receivers, reconcile};
use exchange_tests::*;
use exchange_wire::UnitAddress;

fn units(net: &LocalNetwork, node: &str) -> Vec<UnitAddress> {
    net.unit_keys.keys().filter(|u| u.node_part() == node).take(4).cloned().collect()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child process id this test started.
    let r = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(r, 0, "cannot signal process {pid}: {}", std::io::Error::last_os_error());
}

/// True when every thread of `pid` is stopped (state `T` in /proc).
fn stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with(['T', 't'])))
            .unwrap_or(false)
    })
}

/// Stops `pid` and waits until all its threads are stopped.
fn pause(pid: u32) {
    signal(pid, libc::SIGSTOP);
    wait_for(&format!("process {pid} stopped"), Duration::from_secs(5), || stopped(pid).then_some(()));
}

#[test]
fn paused_city_then_paused_district_lose_and_duplicate_nothing() {
    let net = three_nodes("");
    let (senders, recipients) = (units(&net, "gz.yuexiu"), units(&net, "gz.haizhu"));
    let readers = receivers(&net, &recipients);
    let reader = |a: &Accepted| &readers.iter().find(|(u, _)| *u == a.to).expect("a reader per recipient").1;
    let load = Load::start(&net, &senders, &recipients, 100, 5, 512);
    load.wait_more(100, Duration::from_secs(30));

    for node in ["gz", "gz.haizhu"] {
        let pid = net.node(node).pid().expect("running");
        pause(pid);
        let paused_at = Instant::now();
        load.wait_more(300, Duration::from_secs(30));
        let queued: Vec<Accepted> = load.accepted().into_iter().filter(|a| a.at > paused_at).collect();
        assert!(stopped(pid), "{node} is still stopped");
        assert!(
            queued.iter().all(|a| reader(a).arrived(&a.id).is_none()),
            "a document acknowledged after {node} was paused arrived while it was stopped"
        );
        signal(pid, libc::SIGCONT);
        let resumed_at = Instant::now();
        let first = &queued[0];
        let arrived = wait_for(&format!("the first document queued behind paused {node}"), Duration::from_secs(60), || reader(first).arrived(&first.id));
        wait_for(&format!("the backlog behind paused {node} read"), Duration::from_secs(60), || {
            queued.iter().all(|a| reader(a).arrived(&a.id).is_some()).then_some(())
        });
        println!(
            "{node} paused {:.1} s with {} documents queued behind it; the first arrived {} ms after SIGCONT",
            (resumed_at - paused_at).as_secs_f64(),
            queued.len(),
            arrived.saturating_duration_since(resumed_at).as_millis()
        );
    }
    let accepted = load.finish();
    reconcile(&net, &accepted, readers, Duration::from_secs(120));
}

/// Stops the city at short random intervals until its WAL shows a transaction being written, then
/// kills it there (SIGKILL of the stopped process: it runs no further instruction). Returns the
/// number of uncommitted frames the kill cut off and how many stops it took.
fn kill_mid_commit(net: &mut LocalNetwork, node: &str, within: Duration) -> (usize, usize) {
    let pid = net.node(node).pid().expect("running");
    let wal = net.node(node).database_path().with_extension("db-wal");
    let deadline = Instant::now() + within;
    for attempt in 1.. {
        pause(pid);
        let state = wal::state(&wal).expect("read the WAL");
        if state.uncommitted > 0 {
            net.kill(node).expect("kill -9 the stopped node");
            return (state.uncommitted, attempt);
        }
        signal(pid, libc::SIGCONT);
        assert!(Instant::now() < deadline, "{node} was not caught writing a transaction in {attempt} tries over {within:?}");
        // Probe at irregular moments, not in step with the committer.
        std::thread::sleep(Duration::from_micros(500 + getrandom::u64().expect("random") % 4000));
    }
    unreachable!()
}

#[test]
fn city_killed_while_committing_large_groups_loses_nothing() {
    const KILLS: usize = 3;
    let mut net = three_nodes("");
    let (senders, recipients) = (units(&net, "gz.yuexiu"), units(&net, "gz.haizhu"));
    let readers = receivers(&net, &recipients);
    // Batches of 100 documents of 4 KiB: the city commits groups of hundreds of documents at a time.
    let load = Load::start(&net, &senders, &recipients, 400, 100, 4096);
    let yuexiu = net.node("gz.yuexiu").client();
    for kill in 1..=KILLS {
        load.wait_more(600, Duration::from_secs(60));
        let (frames, tries) = kill_mid_commit(&mut net, "gz", Duration::from_secs(30));
        println!("kill {kill}: the city was killed with {frames} frames of an uncommitted transaction in its WAL (stopped {tries} times to catch it)");
        load.wait_more(200, Duration::from_secs(60));
        net.start("gz").expect("restart the city");
    }
    load.wait_more(400, Duration::from_secs(60));
    let accepted = load.finish();
    assert!(
        metric(&yuexiu, "exchange_send_failures_total", &[("peer", "gz")]) > 0.0,
        "越秀 must have felt the city's deaths (otherwise the kills tested nothing)"
    );
    reconcile(&net, &accepted, readers, Duration::from_secs(180));
}
