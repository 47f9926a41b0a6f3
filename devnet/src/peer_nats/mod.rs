//! NATS JetStream as the performance peer of `exchange-node bench --peer nats`, run in the same
//! process right after the nodes, with the same message count, payloads and rate.
//!
//! The topology mirrors the network's: a hub (the city, JetStream domain `HUB`) and two leaf nodes
//! (the districts, domains `A` and `B`) joined by leafnode connections, all on loopback with ports
//! probed free. Three file-backed streams are chained by sourcing across the domains, so a message is
//! stored at every hop as a document is: `DOCS_A` on leaf A captures `doc.>`, `DOCS_HUB` on the hub
//! sources `DOCS_A`, `DOCS_B` on leaf B sources `DOCS_HUB`. A durable pull consumer with explicit
//! acknowledgements reads `DOCS_B` on leaf B. The publisher on leaf A waits for each message's
//! JetStream publish acknowledgement (stored in `DOCS_A`) with a window of outstanding publishes.
//!
//! Durability: nats-server 2.10 and later can `fsync` after every write (`sync_interval: always`),
//! the row comparable with the node's fsync at every hop; 2.9 (Debian bookworm's package) syncs on its
//! own schedule (every two minutes by default), so its row is an upper bound of no durability at all.
//! Each row says which it used.
//!
//! The configurations are templates in `devnet/peers/nats/`; the server binary is `--nats-server`,
//! else `nats-server` on `PATH`, else `/usr/sbin/nats-server` (`tools/fetch-nats-2.10.sh` extracts
//! Debian trixie's 2.10 without installing it). The servers are killed when the run ends, also on error.

pub mod client;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use client::Client;

const HUB_TEMPLATE: &str = include_str!("../../peers/nats/hub.conf");
const LEAF_TEMPLATE: &str = include_str!("../../peers/nats/leaf.conf");

/// How the servers' JetStream store syncs to disk.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncChoice {
    /// `always` where the server supports it (2.10 and later), else the server's default.
    Auto,
    /// `sync_interval: always`: fsync after every write (needs nats-server 2.10 or later).
    Always,
    /// The server's default (2.9 and 2.10: every two minutes).
    Default,
}

/// Options of the NATS peer, in the bench's command line.
#[derive(clap::Args, Debug, Clone)]
pub struct NatsArgs {
    /// The nats-server binary (default: `nats-server` on PATH, else /usr/sbin/nats-server).
    #[arg(long, value_name = "PATH", env = "NATS_SERVER")]
    pub nats_server: Option<PathBuf>,
    /// JetStream sync: `auto` uses `sync_interval: always` on 2.10 and later, the default on 2.9.
    #[arg(long, value_enum, default_value = "auto")]
    pub nats_sync: SyncChoice,
    /// Outstanding JetStream publishes (not yet acknowledged) the publisher allows.
    #[arg(long, default_value_t = 256)]
    pub nats_window: usize,
}

/// A nats-server binary and its version.
#[derive(Debug, Clone)]
pub struct NatsServer {
    pub path: PathBuf,
    pub version: String,
    major_minor: (u32, u32),
}

impl NatsServer {
    /// Finds the binary: `explicit`, else `nats-server` on `PATH`, else `/usr/sbin/nats-server`, and
    /// reads its version.
    pub fn find(explicit: Option<&Path>) -> anyhow::Result<NatsServer> {
        let path = match explicit {
            Some(p) if p.is_file() => p.to_path_buf(),
            Some(p) => bail!("--nats-server {}: no such file. {}", p.display(), HOW_TO_GET),
            None => {
                let on_path = std::env::var_os("PATH")
                    .map(|paths| std::env::split_paths(&paths).map(|d| d.join("nats-server")).find(|p| p.is_file()))
                    .unwrap_or_default();
                match on_path.or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file())) {
                    Some(p) => p,
                    None => bail!("--peer nats needs nats-server, and none was found on PATH or at /usr/sbin/nats-server. {HOW_TO_GET}"),
                }
            }
        };
        let out = Command::new(&path).arg("--version").output().with_context(|| format!("cannot run {} --version", path.display()))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // "nats-server: v2.10.27"
        let version = text.rsplit('v').next().unwrap_or("").to_string();
        let mut nums = version.split('.').map(|s| s.parse::<u32>());
        let major_minor = match (nums.next(), nums.next()) {
            (Some(Ok(a)), Some(Ok(b))) => (a, b),
            _ => bail!("{} --version printed {text:?}, not a nats-server version", path.display()),
        };
        Ok(NatsServer { path, version, major_minor })
    }

    /// Whether this server knows `sync_interval: always`.
    pub fn can_sync_always(&self) -> bool {
        self.major_minor >= (2, 10)
    }

    /// The sync this run uses: `true` for `always`.
    pub fn sync_always(&self, choice: SyncChoice) -> anyhow::Result<bool> {
        match choice {
            SyncChoice::Auto => Ok(self.can_sync_always()),
            SyncChoice::Default => Ok(false),
            SyncChoice::Always if self.can_sync_always() => Ok(true),
            SyncChoice::Always => bail!(
                "--nats-sync always needs nats-server 2.10 or later; {} is {}. {HOW_TO_GET}",
                self.path.display(),
                self.version
            ),
        }
    }
}

const HOW_TO_GET: &str = "Install Debian's package (`apt-get install nats-server`: 2.9, default sync only), or run \
     tools/fetch-nats-2.10.sh DIR (downloads Debian trixie's 2.10 and extracts it without installing) and pass \
     --nats-server DIR/usr/sbin/nats-server (or set NATS_SERVER).";

/// What one run of the peer is asked to do, the same as the node benchmark's run.
pub struct Workload<'a> {
    pub messages: usize,
    pub size: usize,
    pub rate: Option<f64>,
    /// The payload of message `i` (the node benchmark's own payloads).
    pub payload: &'a (dyn Fn(usize) -> Vec<u8> + Sync),
}

/// The measured row.
pub struct PeerResult {
    pub json: Value,
    pub messages_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_us_per_message: f64,
    /// `always` or `default`.
    pub sync: &'static str,
    /// Submit → delivered latency of every message, ms, sorted.
    pub latencies_ms: Vec<f64>,
}

/// The three running servers, killed when dropped.
struct Servers {
    children: Vec<(&'static str, Child)>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Probes `n` distinct free ports on 127.0.0.1 (held open together so they differ).
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>().context("cannot probe a free port")?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

fn fill(template: &str, fields: &[(&str, String)]) -> String {
    fields.iter().fold(template.to_string(), |t, (k, v)| t.replace(&format!("@{k}@"), v))
}

/// Runs the peer: starts the servers with their stores under `dir`, builds the chain, runs the
/// workload, and stops the servers.
pub fn run(server: &NatsServer, args: &NatsArgs, dir: &Path, work: &Workload) -> anyhow::Result<PeerResult> {
    let always = server.sync_always(args.nats_sync)?;
    if args.nats_window == 0 {
        bail!("--nats-window must be at least 1");
    }
    let sync_line = if always { "sync_interval: always" } else { "# sync_interval: the server's default" };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ports = free_ports(4)?;
    let (hub_port, leaf_listen, a_port, b_port) = (ports[0], ports[1], ports[2], ports[3]);
    let specs: [(&'static str, &str, u16, &str); 3] =
        [("hub", HUB_TEMPLATE, hub_port, "HUB"), ("leafA", LEAF_TEMPLATE, a_port, "A"), ("leafB", LEAF_TEMPLATE, b_port, "B")];
    let mut servers = Servers { children: Vec::new() };
    for (name, template, port, domain) in specs {
        let store = dir.join("data").join(name);
        let conf = fill(
            template,
            &[
                ("NAME", name.to_string()),
                ("CLIENT_PORT", port.to_string()),
                ("LEAF_PORT", leaf_listen.to_string()),
                ("STORE_DIR", store.display().to_string()),
                ("DOMAIN", domain.to_string()),
                ("SYNC", sync_line.to_string()),
            ],
        );
        let conf_path = dir.join(format!("{name}.conf"));
        std::fs::write(&conf_path, conf).with_context(|| format!("cannot write {}", conf_path.display()))?;
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(&server.path);
        // If the benchmark itself dies (Ctrl-C, kill), the kernel kills the servers with it; otherwise
        // `Servers` kills them when the run ends, also on error.
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent's state.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .arg("-c")
            .arg(&conf_path)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", server.path.display()))?;
        servers.children.push((name, child));
        wait_listening(&mut servers, port, &log)?;
    }
    let pids: Vec<u32> = servers.children.iter().map(|(_, c)| c.id()).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let result = runtime.block_on(measure(addr(hub_port), addr(a_port), addr(b_port), &pids, work, args.nats_window));
    drop(servers);
    let mut r = result.with_context(|| format!("NATS peer run failed (server logs in {})", dir.display()))?;
    r.sync = if always { "always" } else { "default" };
    if let Value::Object(m) = &mut r.json {
        m.insert("server".into(), json!({ "path": server.path, "version": server.version }));
        m.insert(
            "sync".into(),
            json!(if always { "sync_interval: always (fsync after every write)" } else { "the server's default (fsync every 2 minutes)" }),
        );
        m.insert("window".into(), json!(args.nats_window));
    }
    Ok(r)
}

/// Waits until a just-started server accepts connections on `port` (or has exited).
fn wait_listening(servers: &mut Servers, port: u16, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let (name, child) = servers.children.last_mut().expect("a server was started");
    loop {
        if let Some(status) = child.try_wait()? {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(8).collect();
            bail!("nats-server {name} exited at start ({status}); its log ends:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nats-server {name} did not listen on port {port} within 15 s (log: {})", log.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A JetStream API request that must succeed: retried while the domain is not reachable yet (the
/// leafnode connections come up after the servers listen), and an `"error"` in the answer is fatal.
async fn js_api(client: &Client, subject: &str, body: &Value) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let payload = serde_json::to_vec(body)?;
    loop {
        match client.request(subject, &payload, Duration::from_secs(5)).await {
            Ok(m) => {
                let v: Value = serde_json::from_slice(&m.payload).with_context(|| format!("{subject} answered with something not JSON"))?;
                if let Some(e) = v.get("error") {
                    bail!("{subject} failed: {e}");
                }
                return Ok(v);
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.context(format!("{subject} did not succeed within 30 s"))),
        }
    }
}

/// Builds the chain of streams and the consumer, then runs the timed phase.
async fn measure(hub: SocketAddr, leaf_a: SocketAddr, leaf_b: SocketAddr, pids: &[u32], work: &Workload<'_>, window: usize) -> anyhow::Result<PeerResult> {
    let n = work.messages;
    let hub_c = Client::connect(hub, "hub").await?;
    let a = Arc::new(Client::connect(leaf_a, "pub").await?);
    let b = Arc::new(Client::connect(leaf_b, "sub").await?);
    create_streams(&hub_c, &a, &b).await?;
    warm_up(&a, &b).await?;

    let shared = Arc::new(Timing {
        t0: Instant::now(),
        submit_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
        recv_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
        recv_count: (0..n).map(|_| AtomicU32::new(0)).collect(),
        delivered: AtomicUsize::new(0),
        duplicates: AtomicU64::new(0),
        altered: AtomicU64::new(0),
        acked: AtomicUsize::new(0),
    });
    let ticks = crate::bench::clock_ticks_per_second();
    let cpu_before: Vec<u64> = pids.iter().map(|p| crate::bench::cpu_ticks(&p.to_string())).collect::<anyhow::Result<_>>()?;
    let self_before = crate::bench::cpu_ticks("self")?;
    let deadline = Duration::from_secs(120 + n as u64 / 1000);

    let consumer = consume(b.clone(), shared.clone(), work, deadline);
    let publisher = publish(a.clone(), shared.clone(), work, window, deadline);
    let (consumed, published) = tokio::join!(consumer, publisher);
    let cpu_after: Vec<u64> = pids.iter().map(|p| crate::bench::cpu_ticks(&p.to_string())).collect::<anyhow::Result<_>>()?;
    let client_cpu_s = crate::bench::cpu_ticks("self")?.saturating_sub(self_before) as f64 / ticks;
    published?;
    consumed?;

    let stored = check_stored(&hub_c, &a, &b, &shared, n).await?;
    let cpu_s: Vec<f64> = cpu_before.iter().zip(&cpu_after).map(|(b, a)| a.saturating_sub(*b) as f64 / ticks).collect();
    Ok(result(work, &shared, &stored, &cpu_s, client_cpu_s))
}

/// Leaf A's stream, the hub's sourcing from it, leaf B's sourcing from the hub, and B's durable
/// consumer.
async fn create_streams(hub_c: &Client, a: &Client, b: &Client) -> anyhow::Result<()> {
    // Every domain reachable from where it is used: the hub sources from A, leaf B from the hub.
    js_api(hub_c, "$JS.A.API.INFO", &json!({})).await?;
    js_api(b, "$JS.HUB.API.INFO", &json!({})).await?;
    js_api(a, "$JS.A.API.STREAM.CREATE.DOCS_A", &json!({"name":"DOCS_A","subjects":["doc.>"],"retention":"limits","storage":"file","num_replicas":1,"discard":"old"})).await?;
    js_api(hub_c, "$JS.HUB.API.STREAM.CREATE.DOCS_HUB", &json!({"name":"DOCS_HUB","retention":"limits","storage":"file","num_replicas":1,"discard":"old","sources":[{"name":"DOCS_A","external":{"api":"$JS.A.API"}}]})).await?;
    js_api(b, "$JS.B.API.STREAM.CREATE.DOCS_B", &json!({"name":"DOCS_B","retention":"limits","storage":"file","num_replicas":1,"discard":"old","sources":[{"name":"DOCS_HUB","external":{"api":"$JS.HUB.API"}}]})).await?;
    js_api(b, "$JS.B.API.CONSUMER.DURABLE.CREATE.DOCS_B.READER", &json!({"stream_name":"DOCS_B","config":{"durable_name":"READER","deliver_policy":"all","ack_policy":"explicit","max_ack_pending":1000}})).await?;
    Ok(())
}

/// What each stream holds, checked: every message stored once at every hop, none delivered twice
/// or altered. Returns the counts of DOCS_A, DOCS_HUB and DOCS_B.
async fn check_stored(hub_c: &Client, a: &Client, b: &Client, shared: &Timing, n: usize) -> anyhow::Result<Vec<u64>> {
    let mut stored = Vec::new();
    for (c, subject) in [(a, "$JS.A.API.STREAM.INFO.DOCS_A"), (hub_c, "$JS.HUB.API.STREAM.INFO.DOCS_HUB"), (b, "$JS.B.API.STREAM.INFO.DOCS_B")] {
        let info = js_api(c, subject, &json!({})).await?;
        stored.push(info["state"]["messages"].as_u64().unwrap_or(0));
    }
    let mut errors = Vec::new();
    let duplicates = shared.duplicates.load(Ordering::SeqCst);
    let altered = shared.altered.load(Ordering::SeqCst);
    if duplicates > 0 || altered > 0 {
        errors.push(format!("{duplicates} messages delivered more than once, {altered} with a payload other than the one sent"));
    }
    // n messages and the warm-up message.
    if stored.iter().any(|s| *s != n as u64 + 1) {
        errors.push(format!("the streams DOCS_A, DOCS_HUB, DOCS_B hold {stored:?} messages, not {} each (with the warm-up message)", n + 1));
    }
    if !errors.is_empty() {
        bail!("the NATS peer did not deliver every message exactly once: {}", errors.join("; "));
    }
    Ok(stored)
}

/// The peer's numbers from a checked run: throughput, latency, each server's CPU (`cpu_s`: hub,
/// leaf A, leaf B) and the benchmark process's own.
fn result(work: &Workload<'_>, shared: &Timing, stored: &[u64], cpu_s: &[f64], client_cpu_s: f64) -> PeerResult {
    let n = work.messages;
    let mut latencies: Vec<f64> = (0..n)
        .map(|i| shared.recv_ns[i].load(Ordering::Relaxed).saturating_sub(shared.submit_ns[i].load(Ordering::Relaxed)) as f64 / 1e6)
        .collect();
    latencies.sort_by(|x, y| x.total_cmp(y));
    let last_s = (0..n).map(|i| shared.recv_ns[i].load(Ordering::Relaxed)).max().unwrap_or(0) as f64 / 1e9;
    let rate = n as f64 / last_s.max(1e-9);
    let names = ["hub", "leafA", "leafB"];
    let total_cpu: f64 = cpu_s.iter().sum();
    let cpu_us = total_cpu * 1e6 / n as f64;
    let p = |q| crate::bench::percentile(&latencies, q);
    let json = json!({
        "topology": "leaf A (domain A, stream DOCS_A) → hub (HUB, DOCS_HUB sources DOCS_A) → leaf B (B, DOCS_B sources DOCS_HUB), durable pull consumer READER with explicit acks",
        "messages": n,
        "size": work.size,
        "rate": work.rate,
        "last_delivery_s": last_s,
        "throughput": { "messages_per_s": rate, "payload_mb_per_s": rate * work.size as f64 / 1e6 },
        "latency_ms": {
            "from": if work.rate.is_some() { "scheduled send time" } else { "send time" },
            "samples": latencies.len(),
            "p50": p(50.0), "p90": p(90.0), "p99": p(99.0), "p999": p(99.9),
            "max": latencies.last().copied(),
        },
        "servers": names.iter().zip(cpu_s).map(|(s, c)| json!({"server": s, "cpu_seconds": c, "cpu_us_per_message": c * 1e6 / n as f64})).collect::<Vec<_>>(),
        "cpu": { "all_servers_seconds": total_cpu, "all_servers_us_per_message": cpu_us, "benchmark_process_seconds": client_cpu_s },
        "stored": { "DOCS_A": stored[0], "DOCS_HUB": stored[1], "DOCS_B": stored[2] },
        "publish_acks": shared.acked.load(Ordering::SeqCst),
        "duplicates": shared.duplicates.load(Ordering::SeqCst),
    });
    let (p50_ms, p99_ms) = (p(50.0), p(99.0));
    PeerResult { json, messages_per_s: rate, p50_ms, p99_ms, cpu_us_per_message: cpu_us, sync: "default", latencies_ms: latencies }
}

/// Sends one message through the whole chain and consumes it before the clock starts, as the node
/// benchmark waits for its links: sourcing across domains is set up asynchronously after the streams
/// are created, and the first message otherwise waits for it.
async fn warm_up(a: &Client, b: &Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let ack = a.request("doc.warmup", b"warm-up", Duration::from_secs(10)).await.context("publishing the warm-up message")?;
    if !String::from_utf8_lossy(&ack.payload).contains("\"seq\"") {
        bail!("the warm-up message was not stored: {}", String::from_utf8_lossy(&ack.payload));
    }
    loop {
        let m = b
            .request("$JS.B.API.CONSUMER.MSG.NEXT.DOCS_B.READER", b"{\"batch\":1,\"expires\":500000000}", Duration::from_secs(2))
            .await
            .context("pulling the warm-up message")?;
        if m.status.is_none() && m.subject == "doc.warmup" {
            let reply = m.reply.context("the warm-up message came without an ack subject")?;
            b.publish(&reply, None, b"+ACK")?;
            return b.flush(Duration::from_secs(5)).await;
        }
        if Instant::now() > deadline {
            bail!("the warm-up message did not reach leaf B's stream within 30 s: sourcing across the domains is not working");
        }
    }
}

/// Per-message clocks of the peer's timed phase (nanoseconds after `t0`, plus one; 0 = not yet).
struct Timing {
    t0: Instant,
    submit_ns: Vec<AtomicU64>,
    recv_ns: Vec<AtomicU64>,
    recv_count: Vec<AtomicU32>,
    delivered: AtomicUsize,
    duplicates: AtomicU64,
    altered: AtomicU64,
    acked: AtomicUsize,
}

impl Timing {
    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64 + 1
    }
}

/// Publishes message `i` as `doc.b.<i>` with the workload's payload, paced open-loop at the rate if
/// there is one, and waits for every JetStream publish acknowledgement, with at most `window`
/// outstanding.
async fn publish(a: Arc<Client>, t: Arc<Timing>, work: &Workload<'_>, window: usize, deadline: Duration) -> anyhow::Result<()> {
    let n = work.messages;
    let inbox = a.new_inbox();
    let (_sid, mut acks) = a.subscribe(&format!("{inbox}.*"))?;
    let permits = Arc::new(Semaphore::new(window));
    let ack_task = {
        let (permits, t) = (permits.clone(), t.clone());
        tokio::spawn(async move {
            while let Some(m) = acks.recv().await {
                permits.add_permits(1);
                let v: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
                if v.get("error").is_some() || v.get("seq").is_none() {
                    bail!("a JetStream publish was not acknowledged ({}): {}", m.subject, String::from_utf8_lossy(&m.payload));
                }
                if t.acked.fetch_add(1, Ordering::SeqCst) + 1 == n {
                    return Ok(());
                }
            }
            bail!("the publisher's connection closed before every publish was acknowledged")
        })
    };
    for i in 0..n {
        let at = match work.rate {
            Some(r) => {
                let due = Duration::from_secs_f64(i as f64 / r);
                tokio::time::sleep_until((t.t0 + due).into()).await;
                due.as_nanos() as u64 + 1
            }
            None => 0,
        };
        match tokio::time::timeout(deadline.saturating_sub(t.t0.elapsed()), permits.acquire()).await {
            Ok(Ok(p)) => p.forget(),
            _ => bail!("the publish window did not open before the deadline: {} of {n} acknowledged", t.acked.load(Ordering::SeqCst)),
        }
        t.submit_ns[i].store(if at > 0 { at } else { t.now_ns() }, Ordering::Relaxed);
        a.publish(&format!("doc.b.{i}"), Some(&format!("{inbox}.{i}")), &(work.payload)(i))?;
    }
    match tokio::time::timeout(deadline.saturating_sub(t.t0.elapsed()), ack_task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => bail!("the acknowledgement task failed: {e}"),
        Err(_) => bail!("not every publish was acknowledged before the deadline: {} of {n}", t.acked.load(Ordering::SeqCst)),
    }
}

/// Pulls from the durable consumer on leaf B, two pull requests of 256 messages outstanding (each on
/// its own inbox subscription, so that the subscription tells which pull a message answers), acks
/// each message explicitly, checks its payload, and returns when all `n` arrived (then looks 300 ms
/// longer for anything delivered twice).
async fn consume(b: Arc<Client>, t: Arc<Timing>, work: &Workload<'_>, deadline: Duration) -> anyhow::Result<()> {
    const BATCH: usize = 256;
    const PULLS: usize = 2;
    let n = work.messages;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // Subscription id of each outstanding pull → messages it may still bring.
    let mut remaining = std::collections::HashMap::new();
    let pull = |remaining: &mut std::collections::HashMap<u64, usize>| -> anyhow::Result<()> {
        let inbox = b.new_inbox();
        let sid = b.subscribe_into(&inbox, tx.clone())?;
        remaining.insert(sid, BATCH);
        b.publish(
            "$JS.B.API.CONSUMER.MSG.NEXT.DOCS_B.READER",
            Some(&inbox),
            format!("{{\"batch\":{BATCH},\"expires\":1000000000}}").as_bytes(),
        )
    };
    for _ in 0..PULLS {
        pull(&mut remaining)?;
    }
    let mut drain_until: Option<Instant> = None;
    loop {
        let wait = match drain_until {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => deadline.saturating_sub(t.t0.elapsed()),
        };
        let m = match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(m)) => m,
            Ok(None) => bail!("the consumer's connection closed: {}", b.closed_reason()),
            Err(_) if drain_until.is_some() => return Ok(()),
            Err(_) => bail!("deadline of {} s passed: {} of {n} delivered", deadline.as_secs(), t.delivered.load(Ordering::SeqCst)),
        };
        let finished = match m.status {
            // 408 request expired, 404 no messages, 409 consumer limits: the pull is over.
            Some(408 | 404 | 409) => true,
            Some(100) => false,
            Some(other) => bail!("the consumer answered a pull with status {other}"),
            None => {
                let now = t.now_ns();
                let Some(reply) = &m.reply else { bail!("a pulled message came without an ack subject") };
                let i = m
                    .subject
                    .strip_prefix("doc.b.")
                    .and_then(|s| s.parse::<usize>().ok())
                    .filter(|i| *i < n)
                    .with_context(|| format!("a pulled message has the subject {:?}, not one the publisher used", m.subject))?;
                if t.recv_count[i].fetch_add(1, Ordering::SeqCst) > 0 {
                    t.duplicates.fetch_add(1, Ordering::SeqCst);
                } else {
                    t.recv_ns[i].store(now, Ordering::Relaxed);
                    if m.payload != (work.payload)(i) {
                        t.altered.fetch_add(1, Ordering::SeqCst);
                    }
                    if t.delivered.fetch_add(1, Ordering::SeqCst) + 1 == n {
                        drain_until = Some(Instant::now() + Duration::from_millis(300));
                    }
                }
                b.publish(reply, None, b"+ACK")?;
                let left = remaining.entry(m.sid).or_insert(1);
                *left = left.saturating_sub(1);
                *left == 0
            }
        };
        if finished && remaining.remove(&m.sid).is_some() {
            b.unsubscribe(m.sid)?;
            pull(&mut remaining)?;
        }
    }
}
