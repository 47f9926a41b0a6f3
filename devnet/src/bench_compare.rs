//! What `exchange-node bench` adds around one run of the nodes: the NATS JetStream peer in the same
//! run (`--peer nats`, see [`crate::peer_nats`]) with both rows and their ratios printed and written
//! into the JSON, the latency plot next to the JSON, and `--sweep`, which repeats the whole run at
//! each offered rate and draws throughput and latency against the offered load.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::bench::BenchArgs;
use crate::bench_plots::{self, LatencySeries, LoadPoint};
use crate::peer_nats::{self, NatsArgs, NatsServer, Workload};

/// The systems `--peer` can run next to the nodes.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// NATS JetStream: leaf → hub → leaf, three file-backed streams chained by sourcing.
    Nats,
}

/// Options for comparing and plotting, part of the bench's command line.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Also run this system in the same run, with the same message count, payloads and rate, and print
    /// both rows and their ratio.
    #[arg(long, value_enum)]
    pub peer: Option<Peer>,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Offered rates (messages/s, comma-separated): repeat the run (nodes, and the peer) once at each,
    /// with --messages each, and draw throughput and latency against the offered load.
    #[arg(long, value_delimiter = ',', value_name = "RATES")]
    pub sweep: Vec<f64>,
}

/// The peer's server, found before the nodes start so that a missing one fails at once.
pub fn find_peer(args: &BenchArgs) -> anyhow::Result<Option<NatsServer>> {
    match args.compare.peer {
        None => Ok(None),
        Some(Peer::Nats) => {
            let server = NatsServer::find(args.compare.nats.nats_server.as_deref())?;
            server.sync_always(args.compare.nats.nats_sync)?;
            Ok(Some(server))
        }
    }
}

/// After the nodes' run (nodes stopped, numbers in `json`): runs the peer if asked, adds its row and the
/// ratios to `json`, prints them, and draws the latency plot next to the JSON.
pub fn after_nodes(args: &BenchArgs, server: Option<&NatsServer>, json: &mut Value, node_latencies: &[f64]) -> anyhow::Result<()> {
    let sign_for = !args.no_sign_for;
    let node_label = if sign_for { "exchange nodes (every document signed for)" } else { "exchange nodes (no receipts)" };
    let mut peer_latencies = None;
    if let Some(server) = server {
        // The store goes into the bench's folder when it has one, else into a temporary folder.
        let temp;
        let dir = match &args.dir {
            Some(d) => d.join("nats"),
            None => {
                temp = tempfile::tempdir()?;
                temp.path().to_path_buf()
            }
        };
        let always = server.sync_always(args.compare.nats.nats_sync)?;
        println!(
            "\n== Peer in the same run: NATS JetStream {} ({}), leaf A → hub → leaf B, {} messages of {} bytes{}",
            server.version,
            if always { "sync_interval: always, fsync after every write" } else { "default sync: fsync every 2 minutes, not durable per message" },
            args.messages,
            args.size,
            match args.rate {
                Some(r) => format!(", open-loop at {r:.0} msg/s"),
                None => ", as fast as it takes them".into(),
            }
        );
        let payload = |i: usize| crate::bench::make_payload(i, args.size);
        let work = Workload { messages: args.messages, size: args.size, rate: args.rate, payload: &payload };
        let peer = peer_nats::run(server, &args.compare.nats, &dir, &work)?;
        let node_rate = json["throughput"]["messages_per_s"].as_f64().unwrap_or(f64::NAN);
        let node_p50 = json["latency_ms"]["p50"].as_f64().unwrap_or(f64::NAN);
        let node_p99 = json["latency_ms"]["p99"].as_f64().unwrap_or(f64::NAN);
        let node_cpu = json["cpu"]["all_nodes_us_per_message"].as_f64().unwrap_or(f64::NAN);
        let peer_label = format!("NATS {} (sync {})", server.version, peer.sync);
        println!("   {:<44} {:>12} {:>9} {:>9} {:>16}", "", "messages/s", "p50 ms", "p99 ms", "server CPU µs/msg");
        println!("   {:<44} {:>12.0} {:>9.1} {:>9.1} {:>16.1}", node_label, node_rate, node_p50, node_p99, node_cpu);
        println!("   {:<44} {:>12.0} {:>9.1} {:>9.1} {:>16.1}", peer_label, peer.messages_per_s, peer.p50_ms, peer.p99_ms, peer.cpu_us_per_message);
        let ratio = json!({
            "throughput": node_rate / peer.messages_per_s,
            "p50": node_p50 / peer.p50_ms,
            "p99": node_p99 / peer.p99_ms,
            "cpu_per_message": node_cpu / peer.cpu_us_per_message,
        });
        println!(
            "   nodes ÷ NATS: throughput {:.2}×, p50 {:.2}×, p99 {:.2}×, CPU per message {:.2}×{}",
            ratio["throughput"].as_f64().unwrap_or(f64::NAN),
            ratio["p50"].as_f64().unwrap_or(f64::NAN),
            ratio["p99"].as_f64().unwrap_or(f64::NAN),
            ratio["cpu_per_message"].as_f64().unwrap_or(f64::NAN),
            if sign_for { " (the nodes also sign, verify and return a receipt for every document; NATS does none of that)" } else { "" }
        );
        if let Value::Object(m) = json {
            m.insert("peer_nats".into(), peer.json.clone());
            m.insert("nodes_versus_peer_nats".into(), ratio);
        }
        peer_latencies = Some((peer_label, peer.latencies_ms));
    }
    let mut series = vec![LatencySeries { label: node_label.into(), sorted_ms: node_latencies }];
    if let Some((label, lat)) = &peer_latencies {
        series.push(LatencySeries { label: label.clone(), sorted_ms: lat });
    }
    let plot = bench_plots::path_next_to(&args.json, "latency");
    let title = format!(
        "Latency distribution, {} messages of {} B{}",
        args.messages,
        args.size,
        args.rate.map(|r| format!(" at {r:.0}/s offered")).unwrap_or_default()
    );
    bench_plots::latency_cdf(&plot, &title, &series)?;
    println!("   latency distribution drawn in {}", plot.display());
    if let Value::Object(m) = json {
        m.insert("plots".into(), json!({ "latency_cdf": plot }));
    }
    Ok(())
}

/// `--sweep`: one full run (nodes, and the peer if asked) per offered rate, each with its own JSON and
/// latency plot (`<json stem>-rate-<r>.json`), then a summary JSON at `--json` and the throughput
/// plot next to it.
pub fn sweep(args: &BenchArgs) -> anyhow::Result<()> {
    let rates = &args.compare.sweep;
    if rates.iter().any(|r| !(*r > 0.0 && r.is_finite())) {
        bail!("--sweep takes positive rates in messages/s, e.g. --sweep 500,1000,2000");
    }
    if args.rate.is_some() {
        bail!("--sweep sets the rate of each run; leave out --rate");
    }
    if let Some(dir) = &args.dir
        && dir.exists()
        && std::fs::read_dir(dir)?.next().is_some()
    {
        bail!("--dir {} is not empty; give a new or empty folder", dir.display());
    }
    let mut node_points = Vec::new();
    let mut peer_points = Vec::new();
    let mut runs = Vec::new();
    let mut peer_label = None;
    for &rate in rates {
        println!("\n######## Sweep: offered {rate:.0} messages/s");
        let mut one = args.clone();
        one.rate = Some(rate);
        one.compare.sweep.clear();
        one.json = sibling(&args.json, &format!("rate-{rate:.0}"), "json");
        one.dir = args.dir.as_ref().map(|d| d.join(format!("rate-{rate:.0}")));
        let result = crate::bench::run_one(&one).with_context(|| format!("the sweep's run at {rate:.0} messages/s failed"))?;
        let point = |v: &Value| LoadPoint {
            offered_per_s: rate,
            achieved_per_s: v["throughput"]["messages_per_s"].as_f64().unwrap_or(f64::NAN),
            p50_ms: v["latency_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            p99_ms: v["latency_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
        };
        node_points.push(point(&result));
        if result.get("peer_nats").is_some() {
            peer_points.push(point(&result["peer_nats"]));
            peer_label = Some(format!(
                "NATS {} (sync {})",
                result["peer_nats"]["server"]["version"].as_str().unwrap_or("?"),
                if result["peer_nats"]["sync"].as_str().unwrap_or("").contains("always") { "always" } else { "default" }
            ));
        }
        runs.push(json!({ "rate": rate, "json": one.json, "nodes": point_json(&node_points[node_points.len() - 1]),
            "peer_nats": peer_points.last().filter(|_| result.get("peer_nats").is_some()).map(point_json) }));
    }
    let node_label = if args.no_sign_for { "exchange nodes (no receipts)" } else { "exchange nodes (signed for)" };
    let mut systems = vec![(node_label.to_string(), node_points)];
    if let Some(label) = peer_label {
        systems.push((label, peer_points));
    }
    let plot = bench_plots::path_next_to(&args.json, "throughput");
    bench_plots::throughput_against_load(
        &plot,
        &format!("Throughput and latency against offered load, {} messages of {} B per point", args.messages, args.size),
        &systems,
    )?;
    println!("\n== Sweep summary");
    println!("   {:>10}  {:<34} {:>12} {:>9} {:>9}", "offered/s", "system", "achieved/s", "p50 ms", "p99 ms");
    for (label, pts) in &systems {
        for p in pts {
            println!("   {:>10.0}  {:<34} {:>12.0} {:>9.1} {:>9.1}", p.offered_per_s, label, p.achieved_per_s, p.p50_ms, p.p99_ms);
        }
    }
    println!("   throughput and latency against offered load drawn in {}", plot.display());
    let summary = json!({
        "sweep": runs,
        "args": { "messages": args.messages, "size": args.size, "rates": rates, "sign_for": !args.no_sign_for, "peer": args.compare.peer.map(|_| "nats") },
        "plots": { "throughput_against_load": plot },
    });
    std::fs::write(&args.json, serde_json::to_vec_pretty(&summary)?).with_context(|| format!("cannot write {}", args.json.display()))?;
    println!("   summary written to {}", args.json.display());
    Ok(())
}

fn point_json(p: &LoadPoint) -> Value {
    json!({ "offered_per_s": p.offered_per_s, "messages_per_s": p.achieved_per_s, "p50_ms": p.p50_ms, "p99_ms": p.p99_ms })
}

/// `dir/bench-result.json` → `dir/bench-result-<suffix>.<ext>`.
fn sibling(json: &Path, suffix: &str, ext: &str) -> PathBuf {
    let stem = json.file_stem().and_then(|s| s.to_str()).unwrap_or("bench-result");
    json.with_file_name(format!("{stem}-{suffix}.{ext}"))
}
