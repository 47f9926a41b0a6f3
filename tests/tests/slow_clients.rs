//! Issue 12, point 1: a node cannot be taken offline by connections that never finish a request.
//! 1,500 idle or half-sent connections (headers never finished) from a few addresses are opened
//! against a real node's agency and admin listeners. The node closes those over its per-client cap
//! at once and the rest within the header-read timeout, its open descriptors stay bounded, and
//! meanwhile another client's `/livez`, inbox read and the admin API answer within 1 s.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use exchange_devnet::launcher::LocalNetwork;
use exchange_tests::*;

const ATTACKERS: u8 = 10;
const PER_CLIENT: usize = 32;
const ADMIN_PER_CLIENT: usize = 4;

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Opens a connection from `127.0.0.{source}` (every 127/8 address is loopback on Linux), and
/// sends the start of a request whose headers never end, or nothing at all.
fn open(rt: &tokio::runtime::Runtime, source: u8, to: SocketAddr, half_sent: bool) -> Option<TcpStream> {
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, source)), 0)).ok()?;
        socket.connect(to).await.ok()?.into_std().ok()
    })?;
    stream.set_nonblocking(false).ok()?;
    if half_sent {
        let _ = (&stream).write_all(b"GET /livez HTTP/1.1\r\nHost: node\r\nX-Slow: ");
    }
    Some(stream)
}

/// True once the node has closed the connection (end of file or reset; a would-block read means
/// it is still open).
fn closed_by_node(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Each of `check`'s calls must answer within a second.
fn answers_quickly<T>(what: &str, check: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let v = check();
    assert!(started.elapsed() < Duration::from_secs(1), "{what} took {:?} under the slow-connection attack", started.elapsed());
    v
}

#[test]
fn slow_and_idle_connections_cannot_take_a_node_down() {
    let mut net = LocalNetwork::create(&node_binary(), None, &["gz"], "").expect("lay out the network");
    let gz = net.node("gz");
    let config = std::fs::read_to_string(&gz.config_path).unwrap();
    let config = config
        .replacen("[api]\n", &format!("[api]\nheader_timeout_secs = 2\nmax_connections = 400\nmax_connections_per_client = {PER_CLIENT}\n"), 1)
        .replacen("[admin]\n", &format!("[admin]\nheader_timeout_secs = 2\nmax_connections_per_client = {ADMIN_PER_CLIENT}\n"), 1);
    std::fs::write(&gz.config_path, config).unwrap();
    net.start_all().expect("start the node");
    let gz = net.node("gz");
    let pid = gz.pid().expect("node running");
    let unit = net.unit_tokens.keys().find(|u| u.node_part() == "gz").expect("a unit on gz").clone();
    let agency_client = net.client_for(&unit);
    let public = gz.client();
    let admin = gz.admin();
    read_inbox(&agency_client, &unit);
    let before = stored_counts(&gz.database_path());
    let baseline = descriptors(pid);
    let agency_addr: SocketAddr = gz.api_url.trim_start_matches("http://").parse().unwrap();
    let admin_addr: SocketAddr = gz.admin_url.trim_start_matches("http://").parse().unwrap();

    // 1,200 connections at the agency API and 300 at the admin API, from ten addresses other than
    // the legitimate client's (127.0.0.1); half send an unfinished request head, half nothing.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut held: Vec<TcpStream> = Vec::new();
    for i in 0..1500usize {
        let source = 2 + (i % ATTACKERS as usize) as u8;
        let to = if i < 1200 { agency_addr } else { admin_addr };
        held.extend(open(&rt, source, to, i % 2 == 0));
    }
    assert_eq!(held.len(), 1500, "every attacking connection was opened");
    // The last one was opened now: from here every one is closed within the header-read timeout
    // (2 s) plus slack, however long opening 1,500 took on this machine.
    let all_opened = Instant::now();

    // While they are held: the node answers another client within 1 s, on both listeners.
    for _ in 0..3 {
        answers_quickly("/livez", || public.health().expect("/livez answers"));
        answers_quickly("an inbox read", || agency_client.inbox(&unit, 0, 10, Duration::ZERO).expect("inbox read"));
        answers_quickly("the admin API", || admin.health().expect("admin /livez answers"));
        let open_now = descriptors(pid);
        let bound = baseline + ATTACKERS as usize * (PER_CLIENT + ADMIN_PER_CLIENT) + 20;
        assert!(open_now <= bound, "the node holds {open_now} descriptors (baseline {baseline}, bound {bound})");
    }
    let admitted = ATTACKERS as f64 * (PER_CLIENT + ADMIN_PER_CLIENT) as f64;

    // Every attacking connection is closed by the node within the header-read timeout (2 s) plus slack.
    wait_for("the node closes every attacking connection", Duration::from_secs(15), || {
        held.retain_mut(|s| !closed_by_node(s));
        held.is_empty().then_some(())
    });
    assert!(all_opened.elapsed() < Duration::from_secs(10), "closed within the timeouts: {:?} after the last was opened", all_opened.elapsed());
    let timed_out = metric(&public, "exchange_http_connections_closed_total", &[("reason", "header-timeout")]);
    assert!(timed_out >= admitted, "the admitted connections were closed by the header-read timeout: {timed_out}");
    // Every attacking connection was closed for one of the two reasons: at once, over its client's
    // cap, or by the header-read timeout once admitted. (How many of each depends on how fast the
    // 1,500 connects go: a place an early connection freed by timing out admits a later one.)
    let over_cap = metric(&public, "exchange_http_connections_closed_total", &[("reason", "max-connections-per-client")]);
    assert!(over_cap > 0.0, "the per-client caps closed connections at once");
    assert!(over_cap + timed_out >= 1500.0, "every attacking connection was closed for a reason: {over_cap} over the caps, {timed_out} timed out");
    wait_for("descriptors back near the baseline", Duration::from_secs(10), || (descriptors(pid) <= baseline + 10).then_some(()));
    let still_open = metric(&public, "exchange_http_connections_open", &[("listener", "agency")]);
    assert!(still_open <= 3.0, "only the legitimate clients' connections are open: {still_open}");

    let after = stored_counts(&gz.database_path());
    assert_eq!(before, after, "nothing changed in storage");
    answers_quickly("/livez after the attack", || public.health().expect("/livez answers"));
}

/// The libp2p listener too: 600 TCP connections that never finish the handshake, from one address,
/// are held to `p2p.max_pending_connections` (the rest closed at once, the held ones when the
/// handshake times out), and meanwhile documents still cross the network.
#[test]
fn unfinished_p2p_handshakes_are_capped() {
    let net = three_nodes("");
    let gz = net.node("gz");
    let pid = gz.pid().expect("node running");
    let baseline = descriptors(pid);
    let to = SocketAddr::from(([127, 0, 0, 1], gz.p2p_port));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let held: Vec<TcpStream> = (0..600).filter_map(|i| open(&rt, 2 + (i % 3) as u8, to, false)).collect();
    assert_eq!(held.len(), 600, "every connection was opened");
    let open_now = descriptors(pid);
    assert!(open_now <= baseline + 32 + 20, "the node holds {open_now} descriptors (baseline {baseline}, at most 32 pending handshakes)");

    let sender = unit("gz.yuexiu/liurong-street");
    let recipient = unit("gz.haizhu/civil-affairs");
    let doc = document(&net.unit_keys[&sender], &sender.to_string(), &[&recipient.to_string()], &[], b"still moving", "p2p flood");
    net.client_for(&sender).submit(&doc, b"still moving").expect("submit");
    wait_for("the document crosses the city node during the flood", Duration::from_secs(30), || {
        (!read_inbox(&net.client_for(&recipient), &recipient).is_empty()).then_some(())
    });
    drop(held);
}
