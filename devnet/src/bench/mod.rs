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
//!
//! This file holds the arguments and the run's steps in order; `floor.rs` is step 1, `load.rs` the
//! agencies' side of steps 3 and 4 (pre-signed documents, sender and receiver threads), `report.rs`
//! step 5.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use exchange_wire::UnitAddress;
use exchange_wire::client::ApiClient;

use crate::bench_failover::Killer;
use crate::launcher::LocalNetwork;
use crate::peer_nats::NatsServer;

mod floor;
mod storage_floor;
mod load;
mod report;

use floor::{Floor, FloorCounts};
use storage_floor::StorageFloor;
use load::{Load, Plan, Shared};

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
    check(args)?;
    print_heading(args);
    let nats = crate::bench_compare::find_peer(args)?;

    // 1. The peer: the protocol's own floor, measured here before any node runs.
    let floor = Floor::measure(args.size);
    let counts = FloorCounts::new(args.sign_for());
    floor.print(&counts, args.size);
    let storage = StorageFloor::measure(&std::env::temp_dir(), args.size)?;
    storage.print(counts.envelope_hops);

    // 2. The network.
    let binary = std::env::current_exe().context("cannot find the exchange-node binary")?;
    let mut net = LocalNetwork::create(&binary, args.dir.as_deref(), &NODES, &args.node_config)?;
    // The city's database (with --database-url) is dropped once its nodes are stopped.
    let (database, replicas) = crate::bench_failover::prepare(&mut net, args)?;
    let outcome = match net.start_all().and_then(|()| crate::bench_failover::start_standbys(&mut net, &replicas)) {
        Ok(()) => run_on(&mut net, args, (&floor, &storage), &counts, &replicas),
        Err(e) => Err(e),
    };
    let outcome = stop_nodes(&mut net, args, outcome)?;
    let json = write_result(args, nats.as_ref(), outcome)?;
    drop(net);
    drop(database);
    Ok(json)
}

/// Refuses arguments the run cannot honour, before anything starts.
fn check(args: &BenchArgs) -> anyhow::Result<()> {
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
    Ok(())
}

fn print_heading(args: &BenchArgs) {
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
}

/// Stops the nodes (printing each one's last log lines if the run failed or found problems) and,
/// with `--dir`, keeps their files.
fn stop_nodes(net: &mut LocalNetwork, args: &BenchArgs, outcome: anyhow::Result<Outcome>) -> anyhow::Result<Outcome> {
    if !matches!(&outcome, Ok(o) if o.errors.is_empty()) {
        for id in NODES {
            eprintln!("--- last log lines of node {id} ---\n{}", net.log_tail(id, 15));
        }
    }
    net.stop_all();
    if args.dir.is_some() {
        let root = net.keep_files();
        if outcome.is_ok() {
            println!("   files kept in {}", root.display());
        }
    }
    outcome
}

/// The peer and the plot (after a run without problems), then the JSON; fails if the run found
/// problems.
fn write_result(args: &BenchArgs, nats: Option<&NatsServer>, mut outcome: Outcome) -> anyhow::Result<serde_json::Value> {
    // The peer and the plot; if they fail, the nodes' numbers are still written.
    let compared = if outcome.errors.is_empty() { crate::bench_compare::after_nodes(args, nats, &mut outcome.json, &outcome.latencies) } else { Ok(()) };
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
    Ok(outcome.json)
}

/// The result of a run that got as far as measuring.
struct Outcome {
    json: serde_json::Value,
    errors: Vec<String>,
    /// Submit → delivered latency of every delivered message, ms, sorted (for the plot).
    latencies: Vec<f64>,
}

/// How often the timed phase looks whether it is done.
const POLL: Duration = Duration::from_millis(20);

/// Steps 3 to 5 on running nodes.
fn run_on(net: &mut LocalNetwork, args: &BenchArgs, floors: (&Floor, &StorageFloor), counts: &FloorCounts, replicas: &[String]) -> anyhow::Result<Outcome> {
    wait_links(net)?;
    let pids = node_pids(net)?;
    // 3. Pre-sign.
    let plan = Arc::new(Plan::sign(net, args)?);
    // 4. Timed phase.
    let timed = timed_phase(net, args, &plan, &pids, replicas)?;
    // 5. Numbers.
    Ok(report::report(args, floors, counts, &plan, &pids, timed))
}

/// Each node's process id, printed as the table of nodes.
fn node_pids(net: &LocalNetwork) -> anyhow::Result<Vec<(String, String)>> {
    let pids: Vec<(String, String)> = NODES
        .iter()
        .map(|id| Ok((id.to_string(), net.node(id).pid().with_context(|| format!("node {id} is not running"))?.to_string())))
        .collect::<anyhow::Result<_>>()?;
    println!("\n== Nodes (real processes on loopback)");
    for (id, pid) in &pids {
        println!("   {:<10} pid {:<8} api {}", id, pid, net.node(id).api_url);
    }
    Ok(pids)
}

/// What the timed phase measured, for the report.
struct Timed<'a> {
    shared: Arc<Shared>,
    before: Snapshot,
    after: Snapshot,
    ticks: f64,
    /// When every document was delivered (and, with receipts, every receipt was back); `None` if
    /// the phase ended otherwise.
    done_ns: Option<u64>,
    /// When the phase ended, however it ended.
    end_ns: u64,
    timed_out: bool,
    deadline: Duration,
    /// Receipts counted back at the ingress node when the phase ended, and once the threads stopped.
    returned: f64,
    returned_final: f64,
    killer: Killer<'a>,
}

/// Each node's CPU ticks, storage bytes written and metrics, and the benchmark's own CPU ticks.
struct Snapshot {
    metrics: Vec<String>,
    cpu: Vec<u64>,
    written: Vec<u64>,
    self_cpu: u64,
}

impl Snapshot {
    fn before(net: &LocalNetwork, pids: &[(String, String)]) -> anyhow::Result<Snapshot> {
        let metrics = NODES.iter().map(|id| net.node(id).client().metrics_text()).collect::<Result<_, _>>()?;
        let cpu = pids.iter().map(|(_, p)| cpu_ticks(p)).collect::<anyhow::Result<_>>()?;
        let written = pids.iter().map(|(_, p)| storage_write_bytes(p)).collect();
        let self_cpu = cpu_ticks("self")?;
        Ok(Snapshot { metrics, cpu, written, self_cpu })
    }

    /// The end of the timed phase, read before the threads wind down (CPU first, then the metrics),
    /// with the time it was taken. A killed city replica has no CPU to read: its share counts as 0.
    fn after(net: &LocalNetwork, pids: &[(String, String)], replicas: &[String], run: &Run) -> anyhow::Result<(Snapshot, u64)> {
        let cpu = pids
            .iter()
            .map(|(_, p)| if replicas.is_empty() { cpu_ticks(p) } else { Ok(cpu_ticks(p).unwrap_or(0)) })
            .collect::<anyhow::Result<_>>()?;
        let self_cpu = cpu_ticks("self")?;
        let written = pids.iter().map(|(_, p)| storage_write_bytes(p)).collect();
        let end_ns = run.now_ns();
        let metrics = NODES.iter().map(|id| net.node(id).client().metrics_text().unwrap_or_default()).collect();
        Ok((Snapshot { metrics, cpu, written, self_cpu }, end_ns))
    }
}

/// Receipts that came back to the sender's node, from its metrics.
fn receipts_returned(metrics: &str) -> f64 {
    metric_sum(metrics, "exchange_receipts_total", &["direction=\"returned\""])
}

/// Step 4: the agencies' threads submit, read and sign for while the nodes are measured, until
/// everything is through, a failure stops the run, or the deadline passes.
fn timed_phase<'a>(
    net: &mut LocalNetwork,
    args: &BenchArgs,
    plan: &Arc<Plan>,
    pids: &[(String, String)],
    replicas: &'a [String],
) -> anyhow::Result<Timed<'a>> {
    let ticks = clock_ticks_per_second();
    let before = Snapshot::before(net, pids)?;
    let returned_before = receipts_returned(&before.metrics[1]);
    let shared = Arc::new(Shared::new(args.messages));
    let ingress = net.node(INGRESS).client();
    let load = Load::start(&shared, plan, &ingress, &net.node(EGRESS).client(), args);

    let deadline = Duration::from_secs(args.deadline_secs.unwrap_or(120 + args.messages as u64 / 1000));
    let mut killer = Killer::new(args.kill_active_every, replicas);
    let (done_ns, timed_out, returned) = wait_for_end(net, args, &shared, &ingress, returned_before, deadline, &mut killer);
    let (after, end_ns) = Snapshot::after(net, pids, replicas, &shared)?;
    load.wind_down(&shared);
    let returned_final =
        if args.sign_for() { receipts_returned(&ingress.metrics_text().unwrap_or_default()) - returned_before } else { 0.0 };
    Ok(Timed { shared, before, after, ticks, done_ns, end_ns, timed_out, deadline, returned, returned_final, killer })
}

/// Polls until every document is delivered (and, with receipts, counted back at the ingress node),
/// a thread's failure stops the run, or the deadline passes; kills the active city replica when due.
/// Returns when it was done (if it was), whether the deadline passed, and the receipts counted back.
fn wait_for_end(
    net: &mut LocalNetwork,
    args: &BenchArgs,
    shared: &Shared,
    ingress: &ApiClient,
    returned_before: f64,
    deadline: Duration,
    killer: &mut Killer<'_>,
) -> (Option<u64>, bool, f64) {
    let n = args.messages;
    let mut returned = 0.0;
    while !shared.stopped() {
        std::thread::sleep(POLL);
        if let Err(e) = killer.tick(net) {
            shared.errors.lock().expect("errors lock").push(format!("failover: {e:#}"));
        }
        let delivered = shared.delivered.load(Ordering::SeqCst);
        if args.sign_for() {
            if delivered > 0 {
                returned = receipts_returned(&ingress.metrics_text().unwrap_or_default()) - returned_before;
            }
            if delivered >= n && returned >= n as f64 {
                return (Some(shared.now_ns()), false, returned);
            }
        } else if delivered >= n {
            return (Some(shared.now_ns()), false, returned);
        }
        if shared.t0.elapsed() > deadline {
            return (None, true, returned);
        }
    }
    (None, false, returned)
}

// ---------------------------------------------------------------------------------------------------
// Payloads and units.

/// Routine document `i` of a benchmark from `from` to `to`, unsigned; its title makes it differ from
/// every other one with the same payload.
pub(crate) fn benchmark_document(i: usize, from: &UnitAddress, to: &UnitAddress, payload: &[u8]) -> exchange_wire::Envelope {
    let mut e = exchange_wire::Envelope::new(exchange_wire::Kind::Document, from.clone(), vec![to.clone()], vec![], exchange_wire::Priority::Routine, payload);
    e.metadata.insert("title".into(), format!("benchmark document {i}"));
    e
}

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
// The clock of every mode.

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

/// Percentile (nearest rank) of sorted values.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
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
    fn cpu_ticks_reads_this_process() {
        assert!(cpu_ticks("self").is_ok());
    }
}
