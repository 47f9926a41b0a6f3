//! Private test networks in Linux network namespaces, so partitions between real node processes can
//! be made by taking a link down.
//!
//! A [`Lab`] is a switch namespace holding a bridge, and one namespace per host, joined to the bridge
//! by a veth pair (`eth0` on the host's side) with an address from 198.51.100.0/24 (TEST-NET-2,
//! documentation only). Nothing is routed out: the root namespace gets no address in that range and
//! no interface of the lab (the veth pairs are made inside the lab's namespaces). Names carry a prefix
//! unique to the test process and lab, so parallel runs never collide. Dropping the lab, also when a
//! test panics, deletes every namespace; a new lab first removes labs whose test process is gone
//! (killed before its drop could run).
//!
//! The test process stays in the root namespace. It reaches a node's HTTP APIs (on 127.0.0.1 inside
//! the node's namespace) through [`Lab::forward`]: a listener on the root namespace's loopback whose
//! accepting thread has entered the node's namespace, so every connection it opens to the node is
//! opened from inside. Every request for that node goes through that thread's connections.

use std::fs::File;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use exchange_devnet::launcher::{LocalNetwork, Placement, free_port};

/// The prefix of every namespace a lab creates: `exlab<pid>-<n>-…`.
const PREFIX: &str = "exlab";

/// True when this process may create network namespaces; otherwise prints why the test is skipped.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("SKIPPED {test}: it needs root to create network namespaces (`ip netns`); CI runs it as root");
    false
}

/// One host of a lab.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
}

/// A switch and hosts in network namespaces; see the module docs.
pub struct Lab {
    hosts: Vec<Host>,
    /// Namespaces created so far, removed on drop.
    created: Vec<String>,
    /// Stop flags of the API forwarders.
    forwards: Vec<Arc<AtomicBool>>,
}

/// Runs `ip ARGS…`, naming the command and its error output on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run `ip` (Debian package iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Lab {
    /// Builds a lab with one host per name, at 198.51.100.11, .12, … in the order given.
    pub fn new(hosts: &[&str]) -> Lab {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        remove_abandoned();
        let prefix = format!("{PREFIX}{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        let mut lab = Lab { hosts: Vec::new(), created: Vec::new(), forwards: Vec::new() };
        let switch = format!("{prefix}-sw");
        lab.add_namespace(&switch);
        let run = |args: &[&str]| ip(args).unwrap_or_else(|e| panic!("cannot build the test network: {e}"));
        run(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        run(&["-n", &switch, "link", "set", "br0", "up"]);
        for (i, name) in hosts.iter().enumerate() {
            let ns = format!("{prefix}-h{i}");
            let addr = Ipv4Addr::new(198, 51, 100, 11 + i as u8);
            lab.add_namespace(&ns);
            let port = format!("p{i}");
            run(&["-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            run(&["-n", &switch, "link", "set", &port, "master", "br0", "up"]);
            run(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            run(&["-n", &ns, "link", "set", "eth0", "up"]);
            run(&["-n", &ns, "link", "set", "lo", "up"]);
            lab.hosts.push(Host { name: name.to_string(), ns, ip: addr });
        }
        lab
    }

    fn add_namespace(&mut self, ns: &str) {
        ip(&["netns", "add", ns]).unwrap_or_else(|e| panic!("cannot build the test network: {e}"));
        self.created.push(ns.to_string());
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name} in this lab"))
    }

    /// Partitions `host` from the others: its `eth0` goes down (silently, for the peers: no reset).
    pub fn cut(&self, host: &str) {
        ip(&["-n", &self.host(host).ns, "link", "set", "eth0", "down"]).expect("cut a link");
    }

    /// Brings `host`'s link back.
    pub fn heal(&self, host: &str) {
        ip(&["-n", &self.host(host).ns, "link", "set", "eth0", "up"]).expect("heal a link");
    }

    /// The command prefix that runs a program inside `host`'s namespace (`ip netns exec` execs it,
    /// so the process id is the program's own).
    pub fn exec_prefix(&self, host: &str) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.host(host).ns.clone()]
    }

    /// Forwards a port on the root namespace's loopback to `port` on `host`'s loopback; returns the
    /// `http://127.0.0.1:…` base URL to use from the test process.
    pub fn forward(&mut self, host: &str, port: u16) -> String {
        let ns = self.host(host).ns.clone();
        let local = free_port().expect("a free port for the API forwarder");
        // Bound here, in the root namespace: a socket stays in the namespace it was made in.
        let listener = TcpListener::bind(("127.0.0.1", local)).expect("bind the API forwarder");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let ns_file = File::open(format!("/run/netns/{ns}")).unwrap_or_else(|e| panic!("open namespace {ns}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        self.forwards.push(stop.clone());
        std::thread::Builder::new()
            .name(format!("api-forward-{host}"))
            .spawn(move || {
                // SAFETY: setns on an open namespace file; it moves only this thread.
                let entered = unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(entered, 0, "cannot enter namespace {ns}: {}", std::io::Error::last_os_error());
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((outside, _)) => {
                            let _ = outside.set_nonblocking(false);
                            // Made in the node's namespace; refused while the node is down.
                            if let Ok(inside) = TcpStream::connect(("127.0.0.1", port)) {
                                splice(outside, inside);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(2)),
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
            .expect("spawn the API forwarder");
        format!("http://127.0.0.1:{local}")
    }

    /// Lays out a network of `node_ids`, one per host of this lab (hosts named after the nodes), with
    /// p2p on the hosts' addresses and the APIs forwarded to the test process, and starts it.
    pub fn start_network(&mut self, node_ids: &[&str], extra_config: &str) -> LocalNetwork {
        let mut net = LocalNetwork::create_placed(&crate::node_binary(), None, node_ids, extra_config, |id| Placement {
            p2p_host: Some(self.host(id.as_str()).ip),
            command_prefix: self.exec_prefix(id.as_str()),
        })
        .expect("lay out the network");
        let ids: Vec<String> = net.nodes.keys().map(|k| k.to_string()).collect();
        for id in ids {
            let node = net.nodes.values().find(|n| n.id.as_str() == id).expect("node");
            let (api, admin) = (port_of(&node.api_url), port_of(&node.admin_url));
            let (api, admin) = (self.forward(&id, api), self.forward(&id, admin));
            let node = net.nodes.values_mut().find(|n| n.id.as_str() == id).expect("node");
            node.api_url = api;
            node.admin_url = admin;
        }
        net.start_all().expect("start the nodes in their namespaces");
        net
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {url}"))
}

/// Copies both ways between two connections, each direction on its own thread, passing on closes.
fn splice(a: TcpStream, b: TcpStream) {
    let (Ok(mut a2), Ok(mut b2)) = (a.try_clone(), b.try_clone()) else { return };
    let (mut a, mut b) = (a, b);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut b2, &mut a2);
        let _ = a2.shutdown(Shutdown::Write);
    });
}

/// Deletes namespaces of labs whose test process no longer exists.
fn remove_abandoned() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|rest| rest.split('-').next()).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for stop in &self.forwards {
            stop.store(true, Ordering::Relaxed);
        }
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("warning: {e}");
            }
        }
    }
}
