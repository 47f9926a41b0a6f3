//! `exchange-node bench`: throughput, latency and CPU per message district → city → district, with
//! every node a real `exchange-node run` process on loopback.
//!
//! The run, in order:
//!
//! 1. **Peer on the same machine, same run**: the protocol's own floor per message is measured in this
//!    process: ed25519 verification (one at a time and in batches of 64, as `verify_batch` does it),
//!    ed25519 signing, and SHA-256 of the payload and of a header. The floor is the number of those
//!    operations the protocol requires of the nodes for one message (counted from `relay::custody`,
//!    see [`FloorCounts`]) times their cost.
//! 2. A city node `gz` and district nodes `gz.yuexiu` and `gz.haizhu` are started from the Guangzhou
//!    topology; the benchmark waits until both links are up.
//! 3. N documents of S bytes (deterministic pseudo-random text) are signed in advance by the 越秀
//!    units (round-robin), each addressed to one 海珠 unit (round-robin). Signing is the agencies'
//!    work and is reported on its own.
//! 4. Timed phase: K sender threads submit batches of B through `POST /v1/messages:batch` (optionally
//!    paced open-loop at `--rate` messages per second); one receiver thread per 海珠 unit long-polls
//!    that unit's inbox and signs for each page it reads in one request (`inbox:sign-for`), each 签收
//!    receipt signed with the recipient's own key. The
//!    phase ends when every message was delivered exactly once and (with receipts) the 越秀 node
//!    counts N receipts returned.
//! 5. CPU time of each node process (from `/proc/<pid>/stat`) over the timed phase, group-commit sizes
//!    from each node's `/metrics`, latency percentiles from the benchmark's own clocks.
//! 6. With `--peer nats`, NATS JetStream runs the same messages in the same topology right after the
//!    nodes ([`crate::bench_compare`], [`crate::peer_nats`]); the latency distribution is drawn next to
//!    the JSON, and `--sweep` repeats everything per offered rate.
//!
//! `--attachment-mib` ([`crate::bench_attachment`]) and `--urgent-behind` ([`crate::bench_urgent`]:
//! 特急 documents behind a routine backlog) are modes of their own.
//!
//! It prints a summary and writes everything as JSON. It exits non-zero if anything did not arrive
//! exactly once within the deadline, or a node refused anything.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ed25519_dalek::SigningKey;
use exchange_wire::api::{BatchItemResult, SignForResult, SignedMessage};
use exchange_wire::client::{ApiClient, ClientError};
use exchange_wire::envelope::verify_batch;
use exchange_wire::receipt::signed_for;
use exchange_wire::{Envelope, Kind, MessageId, Priority, SignedEnvelope, UnitAddress, digest_payload};
use serde_json::json;

use crate::launcher::LocalNetwork;

/// Options of the benchmark.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Number of documents to send.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// Payload size of each document, in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Concurrent submitting threads.
    #[arg(long, default_value_t = 4)]
    pub senders: usize,
    /// Messages per `POST /v1/messages:batch` request (at most 1000).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Open-loop rate limit in messages per second (e.g. half the measured maximum, to measure latency
    /// under load). Latency is then counted from each batch's scheduled time, so a sender falling
    /// behind shows up as latency rather than being hidden.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Where to write the result as JSON.
    #[arg(long, default_value = "bench-result.json")]
    pub json: PathBuf,
    /// Folder for configs, keys, databases and logs, kept afterwards (default: a temporary folder,
    /// removed afterwards). Must be new or empty.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Recipients sign for (签收) every message and the receipts travel back (the default).
    #[arg(long = "sign-for", overrides_with = "no_sign_for")]
    pub sign_for_flag: bool,
    /// Skip receipts: only measure delivery.
    #[arg(long = "no-sign-for", overrides_with = "sign_for_flag")]
    pub no_sign_for: bool,
    /// Extra TOML appended to every node's configuration (e.g. "[relay]\ncommit_max_requests = 512").
    #[arg(long, default_value = "")]
    pub node_config: String,
    /// Give up after this many seconds of timed phase (default: 120 + messages/1000).
    #[arg(long)]
    pub deadline_secs: Option<u64>,
    /// Instead of many small documents: relay one document with an attachment of this many MiB and
    /// report the throughput of each hop against a peer (SHA-256 plus durable chunked writes) and
    /// every node's peak resident memory.
    #[arg(long, value_name = "MIB")]
    pub attachment_mib: Option<u64>,
    /// The city node keeps custody in PostgreSQL: a fresh database created on this server (whose
    /// user may CREATE DATABASE) for the run and dropped afterwards. The districts stay on SQLite.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Run the city node as this many replicas over that database (one active, the others
    /// standbys; needs --database-url).
    #[arg(long, default_value_t = 1)]
    pub city_replicas: usize,
    /// Kill -9 the active city replica every this many seconds of the timed phase; the standby
    /// takes over, the killed one is started again as the standby. The JSON gets `failover_ms`.
    #[arg(long, value_name = "SECS")]
    pub kill_active_every: Option<u64>,
    /// The peer in the same run (`--peer nats`), `--sweep` and the plots: see [`crate::bench_compare`].
    #[command(flatten)]
    pub compare: crate::bench_compare::CompareArgs,
    /// Urgent documents behind a routine backlog (`--urgent-behind N`): see [`crate::bench_urgent`].
    #[command(flatten)]
    pub urgent: crate::bench_urgent::UrgentArgs,
}

impl BenchArgs {
    pub(crate) fn sign_for(&self) -> bool {
        !self.no_sign_for
    }
}

pub(crate) const NODES: [&str; 3] = ["gz", "gz.yuexiu", "gz.haizhu"];
pub(crate) const INGRESS: &str = "gz.yuexiu";
pub(crate) const EGRESS: &str = "gz.haizhu";

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(backlog) = args.urgent.urgent_behind {
        return crate::bench_urgent::run(&args, backlog);
    }
    if let Some(mib) = args.attachment_mib {
        return crate::bench_attachment::run(&args, mib);
    }
    if !args.compare.sweep.is_empty() {
        return crate::bench_compare::sweep(&args);
    }
    run_one(&args).map(|_| ())
}

/// One run of the nodes (and of the peer, with `--peer`): prints it, writes the JSON and the latency
/// plot, and returns the JSON.
pub(crate) fn run_one(args: &BenchArgs) -> anyhow::Result<serde_json::Value> {
    if args.messages == 0 {
        bail!("--messages must be at least 1");
    }
    if args.batch == 0 || args.batch > 1000 {
        bail!("--batch must be between 1 and 1000 (the node accepts at most 1000 messages per batch)");
    }
    if args.senders == 0 {
        bail!("--senders must be at least 1");
    }
    if let Some(r) = args.rate
        && !(r > 0.0 && r.is_finite())
    {
        bail!("--rate must be a positive number of messages per second");
    }
    if let Some(dir) = &args.dir
        && dir.exists()
        && std::fs::read_dir(dir)?.next().is_some()
    {
        bail!("--dir {} is not empty; give a new or empty folder", dir.display());
    }
    if args.city_replicas == 0 || (args.city_replicas > 1 && args.database_url.is_none()) {
        bail!("--city-replicas must be at least 1, and more than 1 needs --database-url (the replicas share the database)");
    }
    if args.kill_active_every.is_some_and(|s| s == 0) || (args.kill_active_every.is_some() && args.city_replicas < 2) {
        bail!("--kill-active-every needs a number of seconds above 0 and --city-replicas 2 or more");
    }
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!("== Exchange network benchmark ({profile} build)");
    println!(
        "   {} documents of {} bytes, 越秀 → 广州 → 海珠, {} senders, batches of {}, {}{}",
        args.messages,
        args.size,
        args.senders,
        args.batch,
        match args.rate {
            Some(r) => format!("open-loop at {r:.0} msg/s"),
            None => "as fast as the nodes take them".into(),
        },
        if args.sign_for() { ", every one signed for" } else { ", no receipts" }
    );

    let nats = crate::bench_compare::find_peer(args)?;

    // 1. The peer: the protocol's own floor, measured here before any node runs.
    let floor = Floor::measure(args.size);
    let counts = FloorCounts::new(args.sign_for());
    println!("\n== Peer: the protocol's own work per message, measured in this process");
    println!(
        "   ed25519 verify {:.1} µs, in batches of 64 {:.1} µs each; sign {:.1} µs; SHA-256 of {} B {:.2} µs, of a header {:.2} µs",
        floor.verify_us, floor.verify_batch64_us, floor.sign_us, args.size, floor.digest_payload_us, floor.digest_header_us
    );
    println!(
        "   required per message by all nodes: {} verifications, {} node signature, {} payload digests, {} header/report digests",
        counts.verifications, counts.signatures, counts.payload_digests, counts.small_digests
    );
    println!(
        "   floor: {:.1} µs per message with the cheaper verification ({:.1} µs verifying one by one)",
        floor.floor_us(&counts, true),
        floor.floor_us(&counts, false)
    );

    // 2. The network.
    let binary = std::env::current_exe().context("cannot find the exchange-node binary")?;
    let mut net = LocalNetwork::create(&binary, args.dir.as_deref(), &NODES, &args.node_config)?;
    // The city's database (with --database-url) is dropped once its nodes are stopped.
    let (database, replicas) = crate::bench_failover::prepare(&mut net, args)?;
    let outcome = match net.start_all().and_then(|()| crate::bench_failover::start_standbys(&mut net, &replicas)) {
        Ok(()) => run_on(&mut net, args, &floor, &counts, &replicas),
        Err(e) => Err(e),
    };
    let mut outcome = match outcome {
        Ok(r) => r,
        Err(e) => {
            for id in NODES {
                eprintln!("--- last log lines of node {id} ---\n{}", net.log_tail(id, 15));
            }
            net.stop_all();
            if args.dir.is_some() {
                net.keep_files();
            }
            return Err(e);
        }
    };
    if !outcome.errors.is_empty() {
        for id in NODES {
            eprintln!("--- last log lines of node {id} ---\n{}", net.log_tail(id, 15));
        }
    }
    net.stop_all();
    if args.dir.is_some() {
        let root = net.keep_files();
        println!("   files kept in {}", root.display());
    }
    // The peer and the plot; if they fail, the nodes' numbers are still written.
    let compared = if outcome.errors.is_empty() { crate::bench_compare::after_nodes(args, nats.as_ref(), &mut outcome.json, &outcome.latencies) } else { Ok(()) };
    std::fs::write(&args.json, serde_json::to_vec_pretty(&outcome.json)?)
        .with_context(|| format!("cannot write {}", args.json.display()))?;
    println!("   result written to {}", args.json.display());
    compared?;
    if !outcome.errors.is_empty() {
        eprintln!("== Benchmark FAILED:");
        for e in &outcome.errors {
            eprintln!("   {e}");
        }
        bail!("{} problem(s); the numbers above are not valid", outcome.errors.len());
    }
    println!("== Benchmark finished: every document delivered exactly once{}", if args.sign_for() { ", every receipt returned" } else { "" });
    drop(net);
    drop(database);
    Ok(outcome.json)
}

/// The result of a run that got as far as measuring.
struct Outcome {
    json: serde_json::Value,
    errors: Vec<String>,
    /// Submit → delivered latency of every delivered message, ms, sorted (for the plot).
    latencies: Vec<f64>,
}

// ---------------------------------------------------------------------------------------------------
// The peer: the protocol's own floor.

/// How many protocol operations all nodes together must perform for one document, counted from the
/// custody rules (`relay::custody` and `relay::Engine`):
///
/// * the document is verified by the ingress node (agency submission), by the city node and by the
///   destination node (each peer hand-over is verified): 3 verifications, 3 payload digests, 3 header
///   digests (the content-derived id);
/// * the destination node signs a delivery report with its node key (1 signature, 1 digest of the
///   report payload, 1 header digest); the city and ingress nodes verify it as it travels back: 2
///   verifications, 2 report payload digests, 2 header digests;
/// * with receipts: the recipient's receipt is verified at the destination node (sign-for), the city
///   and the ingress node: 3 verifications, 3 header digests (the receipt payload is empty).
#[derive(Debug, Clone, Copy)]
struct FloorCounts {
    verifications: u32,
    signatures: u32,
    payload_digests: u32,
    small_digests: u32,
}

impl FloorCounts {
    fn new(sign_for: bool) -> FloorCounts {
        let (doc_v, doc_h) = (3, 3);
        let (rep_v, rep_s, rep_d) = (2, 1, 3 + 3);
        let (rec_v, rec_h) = if sign_for { (3, 3) } else { (0, 0) };
        FloorCounts { verifications: doc_v + rep_v + rec_v, signatures: rep_s, payload_digests: 3, small_digests: doc_h + rep_d + rec_h }
    }
}

/// Costs of the protocol's operations on this machine, in µs.
#[derive(Debug, Clone, Copy)]
struct Floor {
    verify_us: f64,
    verify_batch64_us: f64,
    sign_us: f64,
    digest_payload_us: f64,
    digest_header_us: f64,
}

/// Runs `f` repeatedly for at least `min` (after a short warm-up) and returns µs per call.
fn time_per_call(min: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < min {
        f();
        n += 1;
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

impl Floor {
    fn measure(size: usize) -> Floor {
        let keys: Vec<SigningKey> = (0..64).map(|_| exchange_wire::keys::generate()).collect();
        let from: UnitAddress = "gz.yuexiu/liurong-street".parse().expect("valid address");
        let to: UnitAddress = "gz.haizhu/civil-affairs".parse().expect("valid address");
        let payload = make_payload(0, size);
        let envelopes: Vec<SignedEnvelope> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let mut e = Envelope::new(Kind::Document, from.clone(), vec![to.clone()], vec![], Priority::Routine, &payload);
                e.metadata.insert("title".into(), format!("benchmark document {i}"));
                e.sign(k)
            })
            .collect();
        let vk: Vec<_> = keys.iter().map(|k| k.verifying_key()).collect();
        let min = Duration::from_millis(300);
        let verify_us = time_per_call(min, || {
            envelopes[0].verify(&vk[0]).expect("verifies");
        });
        let pairs: Vec<(&SignedEnvelope, &ed25519_dalek::VerifyingKey)> = envelopes.iter().zip(&vk).collect();
        let verify_batch64_us = time_per_call(min, || {
            assert!(verify_batch(&pairs).iter().all(|r| r.is_ok()));
        }) / 64.0;
        let unsigned = envelopes[0].envelope.clone();
        let sign_us = time_per_call(min, || {
            std::hint::black_box(unsigned.clone().sign(&keys[0]));
        });
        let digest_payload_us = time_per_call(min, || {
            std::hint::black_box(digest_payload(std::hint::black_box(&payload)));
        });
        let header = envelopes[0].bytes.clone();
        let digest_header_us = time_per_call(min, || {
            std::hint::black_box(digest_payload(std::hint::black_box(&header)));
        });
        Floor { verify_us, verify_batch64_us, sign_us, digest_payload_us, digest_header_us }
    }

    /// The floor per message in µs: with the cheaper of batched and one-by-one verification (in debug
    /// builds batching can be the slower), or with one-by-one verification only.
    fn floor_us(&self, c: &FloorCounts, batched: bool) -> f64 {
        let v = if batched { self.verify_batch64_us.min(self.verify_us) } else { self.verify_us };
        c.verifications as f64 * v
            + c.signatures as f64 * self.sign_us
            + c.payload_digests as f64 * self.digest_payload_us
            + c.small_digests as f64 * self.digest_header_us
    }
}

// ---------------------------------------------------------------------------------------------------
// Payloads and pre-signing.

/// `size` bytes of deterministic pseudo-random text for message `i` (letters, digits, spaces, newlines).
pub(crate) fn make_payload(i: usize, size: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789      ,.\n";
    let mut state = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        for b in z.to_le_bytes() {
            if out.len() < size {
                out.push(ALPHABET[b as usize % ALPHABET.len()]);
            }
        }
    }
    out
}

/// Who sends and who receives what.
struct Plan {
    senders: Vec<UnitAddress>,
    /// Each unit's API token, by position in `senders` / `recipients`.
    sender_tokens: Vec<String>,
    recipients: Vec<UnitAddress>,
    recipient_tokens: Vec<String>,
    recipient_keys: Vec<SigningKey>,
    /// Pre-signed envelopes, index = message number; payloads are regenerated from the index.
    signed: Vec<SignedEnvelope>,
    index: HashMap<MessageId, u32>,
}

impl Plan {
    fn recipient_of(&self, i: usize) -> usize {
        i % self.recipients.len()
    }
}

pub(crate) fn units_of(net: &LocalNetwork, node: &str) -> Vec<UnitAddress> {
    net.unit_keys.keys().filter(|u| u.node_part() == node).cloned().collect()
}

// ---------------------------------------------------------------------------------------------------
// Process CPU time and metrics.

pub(crate) fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks (fields 14 and 15 of `/proc/<pid>/stat`).
pub(crate) fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may contain spaces: count from after it.
    let rest = &stat[stat.rfind(')').context("unexpected /proc stat format")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts with field 3 (state), so field 14 is index 11 and field 15 is index 12.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// Bytes process `pid` has caused to be written to the storage layer (`write_bytes` of
/// `/proc/<pid>/io`: the database, its WAL and checkpoints, attachment files), or 0 where the kernel
/// does not count them. What bounds the nodes is the storage work per document, so the bench shows it.
pub(crate) fn storage_write_bytes(pid: &str) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Sum of the samples of metric `name` whose label text contains every string in `labels`.
pub(crate) fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match head.find('{') {
                Some(p) => (&head[..p], &head[p..]),
                None => (head, ""),
            };
            (metric == name && labels.iter().all(|s| label_text.contains(s))).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Waits until every node sees its links up.
pub(crate) fn wait_links(net: &LocalNetwork) -> anyhow::Result<()> {
    let want = [("gz", "gz.yuexiu"), ("gz", "gz.haizhu"), ("gz.yuexiu", "gz"), ("gz.haizhu", "gz")];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut all = true;
        for (node, peer) in want {
            let text = net.node(node).client().metrics_text().unwrap_or_default();
            let label = format!("peer=\"{peer}\"");
            if metric_sum(&text, "exchange_peer_up", &[&label]) < 1.0 {
                all = false;
            }
        }
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the links between the nodes did not come up within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------------
// The timed phase.

/// State shared by the benchmark's threads. Times are nanoseconds after `t0`, plus one (0 = not yet).
struct Shared {
    run: Run,
    submit_ns: Vec<AtomicU64>,
    recv_ns: Vec<AtomicU64>,
    recv_count: Vec<AtomicU32>,
    delivered: AtomicUsize,
    duplicates: AtomicU64,
    unexpected: AtomicU64,
    receipts_posted: AtomicUsize,
    submit_retries: AtomicU64,
    poll_retries: AtomicU64,
    sign_for_retries: AtomicU64,
    senders_done_ns: AtomicU64,
}

/// The clock and the stop flag every mode's threads share: the first failure stops the run and is
/// kept (up to 20) for the report. Times are nanoseconds after `t0`, plus one (0 = not yet).
pub(crate) struct Run {
    pub t0: Instant,
    pub stop: AtomicBool,
    pub errors: Mutex<Vec<String>>,
}

impl Run {
    pub fn new() -> Run {
        Run { t0: Instant::now(), stop: AtomicBool::new(false), errors: Mutex::new(Vec::new()) }
    }
    pub fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64 + 1
    }
    pub fn fail(&self, e: String) {
        let mut errors = self.errors.lock().expect("errors lock");
        if errors.len() < 20 {
            errors.push(e);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

impl std::ops::Deref for Shared {
    type Target = Run;
    fn deref(&self) -> &Run {
        &self.run
    }
}

/// Retries `f` on transport errors and transient refusals (status 503), up to `attempts` times.
fn with_retries<T>(shared: &Shared, counter: &AtomicU64, attempts: u32, mut f: impl FnMut(u32) -> Result<T, ClientError>) -> Result<T, ClientError> {
    let mut attempt = 0;
    loop {
        match f(attempt) {
            Ok(v) => return Ok(v),
            Err(e) => {
                let transient = matches!(&e, ClientError::Transport { .. } | ClientError::Refused { status: 503, .. });
                attempt += 1;
                if !transient || attempt >= attempts || shared.stopped() {
                    return Err(e);
                }
                counter.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn sender_thread(shared: Arc<Shared>, plan: Arc<Plan>, client: ApiClient, next_batch: Arc<AtomicUsize>, args: BenchArgs) {
    let n = plan.signed.len();
    loop {
        if shared.stopped() {
            return;
        }
        let b = next_batch.fetch_add(1, Ordering::SeqCst);
        let start = b * args.batch;
        if start >= n {
            return;
        }
        let end = (start + args.batch).min(n);
        let scheduled = args.rate.map(|r| Duration::from_secs_f64(start as f64 / r));
        if let Some(due) = scheduled {
            let wait = due.saturating_sub(shared.t0.elapsed());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        let build = || -> Vec<SignedMessage> { (start..end).map(|i| SignedMessage::new(&plan.signed[i], &make_payload(i, args.size))).collect() };
        let client = client.clone().with_token(plan.sender_tokens[b % plan.sender_tokens.len()].clone());
        let messages = build();
        // Open loop: count from the scheduled time, so falling behind shows as latency.
        let at = match scheduled {
            Some(due) => due.as_nanos() as u64 + 1,
            None => shared.now_ns(),
        };
        for i in start..end {
            shared.submit_ns[i].store(at, Ordering::Relaxed);
        }
        let mut first = Some(messages);
        let mut tries = 0u32;
        let result = with_retries(&shared, &shared.submit_retries, 20, |_| {
            tries += 1;
            client.submit_batch(first.take().unwrap_or_else(build))
        });
        match result {
            Ok(resp) if resp.results.len() == end - start => {
                for (i, r) in (start..end).zip(resp.results) {
                    match r {
                        // A retried batch may have been stored the first time: then duplicate is right.
                        BatchItemResult::Accepted(a) if a.duplicate && tries == 1 => {
                            shared.fail(format!("message {i}: {INGRESS} called a fresh message a duplicate"))
                        }
                        BatchItemResult::Accepted(a) if a.id == plan.signed[i].id => {}
                        BatchItemResult::Accepted(a) => {
                            shared.fail(format!("message {i}: the node answered with id {} instead of {}", a.id, plan.signed[i].id))
                        }
                        BatchItemResult::Refused(e) => {
                            shared.fail(format!("message {i} refused by {INGRESS}: {} ({})", e.message, e.error))
                        }
                    }
                }
            }
            Ok(resp) => shared.fail(format!("a batch of {} got {} results", end - start, resp.results.len())),
            Err(e) => shared.fail(format!("submitting a batch to {INGRESS} failed: {e}")),
        }
        shared.senders_done_ns.fetch_max(shared.now_ns(), Ordering::SeqCst);
    }
}

fn receiver_thread(shared: Arc<Shared>, plan: Arc<Plan>, client: ApiClient, r: usize, sign_for: bool) {
    let unit = &plan.recipients[r];
    let mut after = 0i64;
    let mut last_round = false;
    loop {
        if shared.stopped() {
            // One last look, without waiting, for anything delivered twice late.
            if last_round {
                return;
            }
            last_round = true;
        }
        let wait = if last_round { Duration::ZERO } else { Duration::from_millis(500) };
        let page = match with_retries(&shared, &shared.poll_retries, 20, |_| client.inbox(unit, after, 1000, wait)) {
            Ok(p) => p,
            Err(e) => {
                shared.fail(format!("reading the inbox of {unit} failed: {e}"));
                return;
            }
        };
        let now = shared.now_ns();
        after = page.next_after;
        let mut to_sign = Vec::with_capacity(page.items.len());
        for item in page.items {
            let Some(&i) = plan.index.get(&item.id) else {
                shared.unexpected.fetch_add(1, Ordering::Relaxed);
                shared.fail(format!("an unexpected message {} arrived in the inbox of {unit}", item.id));
                continue;
            };
            let i = i as usize;
            if shared.recv_count[i].fetch_add(1, Ordering::SeqCst) > 0 {
                shared.duplicates.fetch_add(1, Ordering::Relaxed);
                shared.fail(format!("message {i} ({}) was delivered more than once (seen again in {unit})", item.id));
                continue;
            }
            shared.recv_ns[i].store(now, Ordering::Relaxed);
            if plan.recipient_of(i) != r {
                shared.fail(format!("message {i} arrived in the inbox of {unit}, not of {}", plan.recipients[plan.recipient_of(i)]));
            }
            // What a recipient's system checks: the payload is the one the sender signed over.
            match item.message.decode() {
                Ok((got, payload)) if got.id == item.id && payload.len() == plan.signed[i].envelope.payload_size as usize => {}
                Ok(_) => shared.fail(format!("message {i} arrived with a different envelope or payload")),
                Err(e) => shared.fail(format!("message {i} arrived altered: {e}")),
            }
            shared.delivered.fetch_add(1, Ordering::SeqCst);
            to_sign.push(i);
        }
        if sign_for && !to_sign.is_empty() && !shared.stopped() {
            sign_page(&shared, &plan, &client, r, &to_sign);
        }
    }
}

/// Signs for one page of an inbox in one request, as a recipient's system does after reading it: each
/// receipt signed with the recipient's own key.
fn sign_page(shared: &Shared, plan: &Plan, client: &ApiClient, r: usize, indices: &[usize]) {
    let recipient = &plan.recipients[r];
    let receipts: Vec<_> = indices
        .iter()
        .map(|&i| {
            let signed = &plan.signed[i];
            signed_for(recipient.clone(), signed.envelope.sender.clone(), signed.id, signed.envelope.priority).sign(&plan.recipient_keys[r])
        })
        .collect();
    match with_retries(shared, &shared.sign_for_retries, 20, |_| client.sign_for_batch(recipient, &receipts)) {
        Ok(resp) if resp.results.len() == indices.len() => {
            for (res, &i) in resp.results.iter().zip(indices) {
                match res {
                    SignForResult::SignedFor(ok) if ok.message_id == plan.signed[i].id => {
                        shared.receipts_posted.fetch_add(1, Ordering::SeqCst);
                    }
                    SignForResult::SignedFor(_) => shared.fail(format!("signing for message {i} answered about another message")),
                    SignForResult::Refused(e) => shared.fail(format!("signing for message {i} refused: {}: {}", e.error, e.message)),
                }
            }
        }
        Ok(resp) => shared.fail(format!("{} results for {} receipts", resp.results.len(), indices.len())),
        Err(e) => shared.fail(format!("signing for {} messages at {EGRESS} failed: {e}", indices.len())),
    }
}

/// Documents not delivered (duplicates are counted apart, not here).
fn plan_lost(n: usize, delivered: usize) -> usize {
    n.saturating_sub(delivered)
}

/// Percentile (nearest rank) of sorted values.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn run_on(net: &mut LocalNetwork, args: &BenchArgs, floor: &Floor, counts: &FloorCounts, replicas: &[String]) -> anyhow::Result<Outcome> {
    let n = args.messages;
    let sign_for = args.sign_for();
    wait_links(net)?;
    let pids: Vec<(String, String)> = NODES
        .iter()
        .map(|id| Ok((id.to_string(), net.node(id).pid().with_context(|| format!("node {id} is not running"))?.to_string())))
        .collect::<anyhow::Result<_>>()?;
    println!("\n== Nodes (real processes on loopback)");
    for (id, pid) in &pids {
        println!("   {:<10} pid {:<8} api {}", id, pid, net.node(id).api_url);
    }

    // 3. Pre-sign.
    let senders = units_of(net, INGRESS);
    let recipients = units_of(net, EGRESS);
    if senders.is_empty() || recipients.is_empty() {
        bail!("the topology has no units at {INGRESS} or {EGRESS}");
    }
    let recipients: Vec<UnitAddress> = recipients.into_iter().take(n).collect();
    let recipient_keys = recipients.iter().map(|u| net.unit_keys[u].clone()).collect();
    let sign_started = Instant::now();
    let mut signed = Vec::with_capacity(n);
    for i in 0..n {
        // Each batch comes from one sender unit (an agency system batches its own documents), the
        // batches round-robin over the 越秀 units; recipients round-robin over the 海珠 units.
        let (s, r) = (&senders[(i / args.batch) % senders.len()], &recipients[i % recipients.len()]);
        let payload = make_payload(i, args.size);
        let mut e = Envelope::new(Kind::Document, s.clone(), vec![r.clone()], vec![], Priority::Routine, &payload);
        e.metadata.insert("title".into(), format!("benchmark document {i}"));
        e.metadata.insert("doc-number".into(), format!("bench〔{}〕{i}号", e.created_at_ms));
        signed.push(e.sign(&net.unit_keys[s]));
    }
    let signing_s = sign_started.elapsed().as_secs_f64();
    let index: HashMap<MessageId, u32> = signed.iter().enumerate().map(|(i, s)| (s.id, i as u32)).collect();
    if index.len() != n {
        bail!("two pre-signed messages have the same id; the benchmark's messages must differ");
    }
    println!(
        "\n== Agencies pre-signed {n} documents in {:.2} s ({:.1} µs each, payload generation and digest included; not timed below)",
        signing_s,
        signing_s * 1e6 / n as f64
    );
    let token = |u: &UnitAddress| net.unit_tokens.get(u).cloned().with_context(|| format!("no API token for {u}"));
    let sender_tokens = senders.iter().map(token).collect::<anyhow::Result<_>>()?;
    let recipient_tokens = recipients.iter().map(token).collect::<anyhow::Result<_>>()?;
    let plan = Arc::new(Plan { senders, sender_tokens, recipients, recipient_tokens, recipient_keys, signed, index });

    // 4. Timed phase.
    let ticks = clock_ticks_per_second();
    let metrics_before: Vec<String> = NODES.iter().map(|id| net.node(id).client().metrics_text()).collect::<Result<_, _>>()?;
    let returned_before = metric_sum(&metrics_before[1], "exchange_receipts_total", &["direction=\"returned\""]);
    let cpu_before: Vec<u64> = pids.iter().map(|(_, p)| cpu_ticks(p)).collect::<anyhow::Result<_>>()?;
    let written_before: Vec<u64> = pids.iter().map(|(_, p)| storage_write_bytes(p)).collect();
    let self_before = cpu_ticks("self")?;
    let shared = Arc::new(Shared {
        run: Run::new(),
        submit_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
        recv_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
        recv_count: (0..n).map(|_| AtomicU32::new(0)).collect(),
        delivered: AtomicUsize::new(0),
        duplicates: AtomicU64::new(0),
        unexpected: AtomicU64::new(0),
        receipts_posted: AtomicUsize::new(0),
        submit_retries: AtomicU64::new(0),
        poll_retries: AtomicU64::new(0),
        sign_for_retries: AtomicU64::new(0),
        senders_done_ns: AtomicU64::new(0),
    });
    let ingress = net.node(INGRESS).client();
    let egress = net.node(EGRESS).client();
    let mut receivers = Vec::new();
    for r in 0..plan.recipients.len() {
        let (s, p, c) = (shared.clone(), plan.clone(), ApiClient::new(egress.base_url()).with_token(plan.recipient_tokens[r].clone()));
        receivers.push(std::thread::spawn(move || receiver_thread(s, p, c, r, sign_for)));
    }
    let next_batch = Arc::new(AtomicUsize::new(0));
    let mut sender_threads = Vec::new();
    for _ in 0..args.senders {
        let (s, p, c, nb, a) = (shared.clone(), plan.clone(), ingress.clone(), next_batch.clone(), args.clone());
        sender_threads.push(std::thread::spawn(move || sender_thread(s, p, c, nb, a)));
    }

    let deadline = Duration::from_secs(args.deadline_secs.unwrap_or(120 + n as u64 / 1000));
    let poll = Duration::from_millis(20);
    let mut returned = 0.0;
    let mut done_ns: Option<u64> = None;
    let mut timed_out = false;
    let mut killer = crate::bench_failover::Killer::new(args.kill_active_every, replicas);
    while !shared.stopped() {
        std::thread::sleep(poll);
        if let Err(e) = killer.tick(net) {
            shared.errors.lock().expect("errors lock").push(format!("failover: {e:#}"));
        }
        let delivered = shared.delivered.load(Ordering::SeqCst);
        if sign_for {
            if delivered > 0 {
                let text = ingress.metrics_text().unwrap_or_default();
                returned = metric_sum(&text, "exchange_receipts_total", &["direction=\"returned\""]) - returned_before;
            }
            if delivered >= n && returned >= n as f64 {
                done_ns = Some(shared.now_ns());
                break;
            }
        } else if delivered >= n {
            done_ns = Some(shared.now_ns());
            break;
        }
        if shared.t0.elapsed() > deadline {
            timed_out = true;
            break;
        }
    }
    // The end of the timed phase: read CPU and metrics now, before the threads wind down.
    // A killed city replica has no CPU to read: its share counts as 0 then.
    let cpu_after: Vec<u64> =
        pids.iter().map(|(_, p)| if replicas.is_empty() { cpu_ticks(p) } else { Ok(cpu_ticks(p).unwrap_or(0)) }).collect::<anyhow::Result<_>>()?;
    let self_after = cpu_ticks("self")?;
    let written_after: Vec<u64> = pids.iter().map(|(_, p)| storage_write_bytes(p)).collect();
    let end_ns = shared.now_ns();
    let metrics_after: Vec<String> = NODES.iter().map(|id| net.node(id).client().metrics_text().unwrap_or_default()).collect();
    for t in sender_threads {
        let _ = t.join();
    }
    // Let anything delivered twice show up before the receivers take their last look.
    std::thread::sleep(Duration::from_millis(300));
    shared.stop.store(true, Ordering::SeqCst);
    for t in receivers {
        let _ = t.join();
    }
    let returned_final = if sign_for {
        metric_sum(&ingress.metrics_text().unwrap_or_default(), "exchange_receipts_total", &["direction=\"returned\""]) - returned_before
    } else {
        0.0
    };

    // 5. Numbers.
    let mut errors: Vec<String> = shared.errors.lock().expect("errors lock").clone();
    let delivered = shared.delivered.load(Ordering::SeqCst);
    if timed_out {
        errors.push(format!(
            "deadline of {} s passed: {delivered} of {n} delivered{}",
            deadline.as_secs(),
            if sign_for { format!(", {returned} of {n} receipts returned") } else { String::new() }
        ));
    }
    if delivered != n && !timed_out {
        errors.push(format!("{delivered} of {n} delivered"));
    }
    if sign_for && returned_final != n as f64 {
        errors.push(format!("{returned_final} receipts returned to {INGRESS} for {n} documents (expected exactly {n})"));
    }
    let duplicates = shared.duplicates.load(Ordering::SeqCst);
    let unexpected = shared.unexpected.load(Ordering::SeqCst);
    for (id, text) in NODES.iter().zip(&metrics_after) {
        let rejected = metric_sum(text, "exchange_messages_rejected_total", &[]);
        if rejected > 0.0 {
            errors.push(format!("node {id} refused {rejected} inputs (exchange_messages_rejected_total); see its log"));
        }
    }

    let mut latencies: Vec<f64> = (0..n)
        .filter_map(|i| {
            let (s, r) = (shared.submit_ns[i].load(Ordering::Relaxed), shared.recv_ns[i].load(Ordering::Relaxed));
            (s > 0 && r > 0).then(|| r.saturating_sub(s) as f64 / 1e6)
        })
        .collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let mean_latency = if latencies.is_empty() { f64::NAN } else { latencies.iter().sum::<f64>() / latencies.len() as f64 };
    let last_delivery_s = (0..n).map(|i| shared.recv_ns[i].load(Ordering::Relaxed)).max().unwrap_or(0) as f64 / 1e9;
    let submitted_s = shared.senders_done_ns.load(Ordering::SeqCst) as f64 / 1e9;
    let done_s = done_ns.unwrap_or(end_ns) as f64 / 1e9;
    let elapsed_s = if sign_for { done_s } else { last_delivery_s.max(1e-9) };
    let rate = n as f64 / elapsed_s;
    let delivery_rate = delivered as f64 / last_delivery_s.max(1e-9);
    let mb_s = rate * args.size as f64 / 1e6;

    let mut node_json = Vec::new();
    let mut total_cpu_s = 0.0;
    let mut node_rows = Vec::new();
    for (k, (id, pid)) in pids.iter().enumerate() {
        let cpu_s = cpu_after[k].saturating_sub(cpu_before[k]) as f64 / ticks;
        total_cpu_s += cpu_s;
        let d = |name: &str, labels: &[&str]| metric_sum(&metrics_after[k], name, labels) - metric_sum(&metrics_before[k], name, labels);
        let (jobs_sum, jobs_count) = (d("exchange_storage_commit_jobs_sum", &[]), d("exchange_storage_commit_jobs_count", &[]));
        let commit_s = d("exchange_storage_commit_seconds_sum", &[]);
        let mean_jobs = if jobs_count > 0.0 { jobs_sum / jobs_count } else { 0.0 };
        let mean_commit_ms = if jobs_count > 0.0 { commit_s * 1e3 / jobs_count } else { 0.0 };
        let send_failures = d("exchange_send_failures_total", &[]);
        let forwarded = d("exchange_messages_forwarded_total", &[]);
        let written = written_after[k].saturating_sub(written_before[k]) as f64;
        node_rows.push((id.clone(), cpu_s, mean_jobs, jobs_count, mean_commit_ms, send_failures, written / n as f64 / 1024.0));
        node_json.push(json!({
            "node": id,
            "pid": pid,
            "cpu_seconds": cpu_s,
            "cpu_us_per_message": cpu_s * 1e6 / n as f64,
            "cpu_cores_busy": cpu_s / elapsed_s,
            "commits": jobs_count,
            "mean_commit_jobs": mean_jobs,
            "mean_commit_ms": mean_commit_ms,
            "commit_seconds_total": commit_s,
            "messages_forwarded": forwarded,
            "send_failures": send_failures,
            "storage_written_bytes": written,
        }));
    }
    let total_us = total_cpu_s * 1e6 / n as f64;
    let floor_batched = floor.floor_us(counts, true);
    let floor_single = floor.floor_us(counts, false);
    let ratio = total_us / floor_batched;
    let bench_cpu_s = self_after.saturating_sub(self_before) as f64 / ticks;

    println!("\n== Timed phase");
    if !errors.is_empty() {
        println!("   INCOMPLETE RUN ({} problem(s), listed at the end): the numbers below are not a valid result", errors.len());
    }
    println!(
        "   submitted (accepted by {INGRESS}): {:.3} s;  last delivery {:.3} s;  {}",
        submitted_s,
        last_delivery_s,
        if sign_for { format!("all receipts back {done_s:.3} s (polled every {} ms)", poll.as_millis()) } else { "no receipts".into() }
    );
    println!(
        "   throughput: {:.0} messages/s, {:.2} MB/s of payload{}",
        rate,
        mb_s,
        if sign_for { format!(" (delivery alone: {delivery_rate:.0} messages/s)") } else { String::new() }
    );
    println!(
        "   submit → delivery latency, ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  mean {:.1}  ({} samples{})",
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN),
        mean_latency,
        latencies.len(),
        if args.rate.is_some() { ", from scheduled send times" } else { "" }
    );
    println!("\n   node        CPU s   µs/msg  cores busy  commits  mean jobs/commit  mean commit ms  send failures  written KiB/msg");
    for (id, cpu_s, mean_jobs, commits, commit_ms, fails, written_kib) in &node_rows {
        println!(
            "   {:<10} {:>6.2} {:>8.1} {:>11.2} {:>8} {:>17.1} {:>15.2} {:>14} {:>16.1}",
            id,
            cpu_s,
            cpu_s * 1e6 / n as f64,
            cpu_s / elapsed_s,
            commits,
            mean_jobs,
            commit_ms,
            fails,
            written_kib
        );
    }
    println!("   {:<10} {:>6.2} {:>8.1} {:>11.2}", "all nodes", total_cpu_s, total_us, total_cpu_s / elapsed_s);
    println!(
        "   (the benchmark process itself, the agencies' side: {:.2} CPU s, {:.1} µs/msg)",
        bench_cpu_s,
        bench_cpu_s * 1e6 / n as f64
    );
    println!(
        "\n== Against the peer: {:.1} µs/msg measured over all nodes vs a floor of {:.1} µs/msg: {:.1}× (target ≤ 2.5×; {:.1}× against the one-by-one floor of {:.1} µs)",
        total_us,
        floor_batched,
        ratio,
        total_us / floor_single,
        floor_single
    );
    if shared.submit_retries.load(Ordering::Relaxed) + shared.poll_retries.load(Ordering::Relaxed) + shared.sign_for_retries.load(Ordering::Relaxed) > 0 {
        println!(
            "   retries: submit {}, inbox {}, sign-for {}",
            shared.submit_retries.load(Ordering::Relaxed),
            shared.poll_retries.load(Ordering::Relaxed),
            shared.sign_for_retries.load(Ordering::Relaxed)
        );
    }

    let (failover_json, failover_ms, failover_errors) = killer.finish();
    errors.extend(failover_errors);
    let json = json!({
        "ok": errors.is_empty(),
        "lost": plan_lost(n, delivered),
        "duplicated": duplicates,
        "storage": { "city": if args.database_url.is_some() { "postgresql" } else { "sqlite" }, "districts": "sqlite", "city_replicas": args.city_replicas },
        "failover_ms": failover_ms,
        "failover": failover_json,
        "errors": errors,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "clock_ticks_per_second": ticks },
        "args": {
            "messages": n, "size": args.size, "senders": args.senders, "batch": args.batch, "rate": args.rate,
            "sign_for": sign_for, "node_config": args.node_config,
        },
        "topology": {
            "path": NODES, "sender_units": plan.senders.len(), "recipient_units": plan.recipients.len(),
        },
        "agency_signing": { "seconds": signing_s, "us_per_message": signing_s * 1e6 / n as f64 },
        "timed": {
            "submitted_s": submitted_s,
            "last_delivery_s": last_delivery_s,
            "receipts_returned_s": if sign_for { Some(done_s) } else { None },
            "elapsed_s": elapsed_s,
            "delivered": delivered,
            "duplicates": duplicates,
            "unexpected": unexpected,
            "receipts_posted": shared.receipts_posted.load(Ordering::SeqCst),
            "receipts_returned": returned_final,
            "retries": {
                "submit": shared.submit_retries.load(Ordering::Relaxed),
                "inbox": shared.poll_retries.load(Ordering::Relaxed),
                "sign_for": shared.sign_for_retries.load(Ordering::Relaxed),
            },
        },
        "throughput": { "messages_per_s": rate, "payload_mb_per_s": mb_s, "delivery_messages_per_s": delivery_rate },
        "latency_ms": {
            "from": if args.rate.is_some() { "scheduled send time" } else { "send time" },
            "samples": latencies.len(),
            "p50": percentile(&latencies, 50.0),
            "p90": percentile(&latencies, 90.0),
            "p99": percentile(&latencies, 99.0),
            "p999": percentile(&latencies, 99.9),
            "max": latencies.last().copied(),
            "mean": mean_latency,
        },
        "nodes": node_json,
        "cpu": {
            "all_nodes_seconds": total_cpu_s,
            "all_nodes_us_per_message": total_us,
            "benchmark_process_seconds": bench_cpu_s,
        },
        "peer": {
            "verify_us": floor.verify_us,
            "verify_batch64_us_per_signature": floor.verify_batch64_us,
            "sign_us": floor.sign_us,
            "sha256_payload_us": floor.digest_payload_us,
            "sha256_header_us": floor.digest_header_us,
            "per_message": {
                "verifications": counts.verifications,
                "node_signatures": counts.signatures,
                "payload_digests": counts.payload_digests,
                "header_and_report_digests": counts.small_digests,
            },
            "floor_us_per_message": floor_batched,
            "floor_unbatched_us_per_message": floor_single,
            "ratio": ratio,
            "ratio_unbatched": total_us / floor_single,
            "target_ratio": 2.5,
        },
    });
    Ok(Outcome { json, errors, latencies })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_deterministic_text_of_the_right_size() {
        let a = make_payload(7, 1000);
        assert_eq!(a.len(), 1000);
        assert_eq!(a, make_payload(7, 1000));
        assert_ne!(a, make_payload(8, 1000));
        assert!(a.iter().all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\n'));
    }

    #[test]
    fn metric_sums_filter_by_name_and_labels() {
        let text = "# HELP x\nexchange_receipts_total{direction=\"returned\",node=\"a\",type=\"signed-for\"} 5\n\
                    exchange_receipts_total{direction=\"issued\",node=\"a\",type=\"signed-for\"} 7\n\
                    exchange_storage_commit_jobs_sum{node=\"a\"} 12.5\nexchange_storage_commit_jobs_count{node=\"a\"} 3\n";
        assert_eq!(metric_sum(text, "exchange_receipts_total", &["direction=\"returned\""]), 5.0);
        assert_eq!(metric_sum(text, "exchange_receipts_total", &[]), 12.0);
        assert_eq!(metric_sum(text, "exchange_storage_commit_jobs_sum", &[]), 12.5);
        assert_eq!(metric_sum(text, "exchange_storage_commit_jobs", &[]), 0.0);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
    }

    #[test]
    fn floor_counts_follow_the_custody_rules() {
        let with = FloorCounts::new(true);
        assert_eq!((with.verifications, with.signatures, with.payload_digests), (8, 1, 3));
        let without = FloorCounts::new(false);
        assert_eq!((without.verifications, without.signatures), (5, 1));
    }

    #[test]
    fn cpu_ticks_reads_this_process() {
        assert!(cpu_ticks("self").is_ok());
    }
}
