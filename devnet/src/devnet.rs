//! `exchange-node devnet`: the whole Guangzhou network of `configs/guangzhou.toml` on one machine.
//!
//! The city node and the twelve district nodes run as real `exchange-node run` processes on
//! loopback, each with its own SQLite file, and host all 209 units of the topology. Into the folder
//! (`--dir`) go the nodes' configurations, keys, databases and logs, every unit's key and API token
//! (`units/`, mode 0600), `network.toml` (every node's addresses, every unit's files) and a Prometheus
//! scrape configuration for the 13 nodes with the shipped alert rules beside it. The network then
//! runs until Ctrl-C or SIGTERM, when the nodes are stopped. With `--scenario SECS` it instead drives
//! mixed traffic for that long (see [`crate::scenario`]) and exits 0 only if everything reconciles.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::launcher::{LocalNetwork, Topology};

/// Options of `exchange-node devnet`.
#[derive(clap::Args, Debug)]
pub struct DevnetArgs {
    /// Folder for configurations, keys, databases, logs, units' keys and tokens, `network.toml` and
    /// `prometheus/` (kept afterwards). Default: a temporary folder, removed when the devnet stops.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the temporary folder when the devnet stops.
    #[arg(long)]
    pub keep: bool,
    /// Drive mixed traffic for this many seconds, reconcile, print the report and exit (0 only if
    /// every document arrived exactly once and every receipt came back), instead of running until
    /// stopped.
    #[arg(long, value_name = "SECS")]
    pub scenario: Option<u64>,
    /// Add units up to the network's real size: 86 city units in all and about 5,000 across the
    /// districts (residents' committees, 居委会, below the street offices), every one with a key and
    /// a token.
    #[arg(long)]
    pub full_size: bool,
    /// Documents per second the scenario submits, over all senders.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
}

/// Runs the devnet.
pub fn run(args: DevnetArgs) -> anyhow::Result<()> {
    let binary = std::env::current_exe().context("cannot find the exchange-node binary")?;
    let mut topology = Topology::guangzhou();
    if args.full_size {
        grow_to_full_size(&mut topology)?;
    }
    let ids: Vec<String> = topology.nodes.iter().map(|n| n.id.to_string()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    // Quick retries: on one machine a refused first connection is a start-up race, not an outage.
    // A smaller disk-full ballast than a production node's 64 MiB: 13 of those on one disk would
    // take 832 MiB of a developer's machine for nothing.
    let extra = "[relay]\nretry_initial_ms = 50\nretry_max_ms = 1000\n\n[storage]\nreserve_bytes = 8388608\n";
    let (units, nodes) = (topology.units.len(), topology.nodes.len());
    let mut net = LocalNetwork::create_from(&binary, args.dir.as_deref(), topology, &ids, extra, |_| Default::default())?;
    println!("== Guangzhou devnet: {nodes} nodes, {units} units, real node processes on loopback");
    println!("   folder: {}", net.root.display());
    let started = Instant::now();
    let result = start(&mut net, started).and_then(|()| match args.scenario {
        Some(secs) => crate::scenario::run(&net, Duration::from_secs(secs), args.rate),
        None => wait_for_stop(&mut net),
    });
    if result.is_err() {
        for id in net.nodes.keys() {
            eprintln!("--- last log lines of node {id} ---\n{}", net.log_tail(id.as_str(), 3));
        }
    }
    println!("== stopping the nodes");
    net.stop_all();
    if args.keep || args.dir.is_some() {
        println!("   files kept in {}", net.keep_files().display());
    }
    result
}

/// The seed's real size: 86 units on the city node, and about 5,000 across the twelve district
/// nodes (residents' committees added below the street offices of each district).
const CITY_UNITS: usize = 86;
const DISTRICT_UNITS: usize = 5_000;

fn grow_to_full_size(topology: &mut Topology) -> anyhow::Result<()> {
    use crate::launcher::TopologyUnit;
    let city = topology.nodes.iter().find(|n| n.parent.is_none()).context("the topology has no root")?.id.clone();
    let districts: Vec<(exchange_wire::NodeId, String)> =
        topology.nodes.iter().filter(|n| n.parent.is_some()).map(|n| (n.id.clone(), n.name.trim_end_matches("交换平台").to_string())).collect();
    let on = |t: &Topology, node: &exchange_wire::NodeId| t.units.iter().filter(|u| u.address.node_part() == node.as_str()).count();
    for i in on(topology, &city)..CITY_UNITS {
        let address = format!("{city}/city-unit-{:02}", i + 1).parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        topology.units.push(TopologyUnit { address, name: format!("市直单位{:02}", i + 1), kind: "department".into() });
    }
    let per_district = DISTRICT_UNITS.div_ceil(districts.len().max(1));
    for (id, name) in &districts {
        for i in on(topology, id)..per_district {
            let address = format!("{id}/juweihui-{:03}", i + 1).parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            topology.units.push(TopologyUnit { address, name: format!("{name}第{:03}居委会", i + 1), kind: "residents-committee".into() });
        }
    }
    Ok(())
}

/// Starts every node, waits for the directory to reach all of them, writes the units' files and the
/// Prometheus configuration, and prints where everything is.
fn start(net: &mut LocalNetwork, started: Instant) -> anyhow::Result<()> {
    net.start_all()?;
    println!("   all {} nodes up, one directory on every node, after {:.1} s\n", net.nodes.len(), started.elapsed().as_secs_f64());
    println!("   {}\n", crate::directory_cost::measure(net)?);
    for line in net.address_table().lines() {
        println!("   {line}");
    }
    let index = net.write_credentials()?;
    let prometheus = write_prometheus(net)?;
    println!("\n   units' keys and API tokens (0600): {}", net.root.join("units").display());
    println!("   index of nodes and units:          {}", index.display());
    println!("   Prometheus:                        prometheus --config.file={}", prometheus.display());
    println!("   operator token of a node:          <folder>/<node>/admin.token (exchange-admin --admin <admin> --admin-token-file ...)");
    Ok(())
}

/// Writes `prometheus/prometheus.yml` (one target per node, labelled `node` and `tier` as in
/// deploy/prometheus/prometheus.yml) and the shipped `alerts.yml` beside it; returns the former.
pub fn write_prometheus(net: &LocalNetwork) -> anyhow::Result<PathBuf> {
    let dir = net.root.join("prometheus");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("alerts.yml"), include_str!("../../deploy/prometheus/alerts.yml"))?;
    let mut yml = String::from(
        "# The devnet's 13 nodes (written by exchange-node devnet), labelled as deploy/prometheus/prometheus.yml\n\
         # labels the real network's, so the shipped alert rules and dashboard queries work on them.\n\
         # Run: prometheus --config.file=<this file> --storage.tsdb.path=<a folder>\n\n\
         global:\n  scrape_interval: 5s\n  scrape_timeout: 4s\n  evaluation_interval: 5s\n  external_labels:\n    network: guangzhou-devnet\n\n\
         rule_files:\n  - alerts.yml\n\n\
         scrape_configs:\n  - job_name: exchange-node\n    metrics_path: /metrics\n    scheme: http\n    honor_labels: true\n    static_configs:\n",
    );
    for n in net.nodes.values() {
        let tier = net.topology.nodes.iter().find(|t| t.id == n.id).map(|t| t.tier.as_str()).unwrap_or("district");
        let target = n.api_url.trim_start_matches("http://");
        yml.push_str(&format!("      - targets: [\"{target}\"]\n        labels: {{ tier: {tier}, node: {} }}\n", n.id));
    }
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, yml)?;
    Ok(path)
}

/// Blocks until SIGINT or SIGTERM, or until a node exits by itself (an error).
fn wait_for_stop(net: &mut LocalNetwork) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    println!("\n   running; Ctrl-C (or SIGTERM) stops the network");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = interrupt.recv() => return Ok(()),
                _ = terminate.recv() => return Ok(()),
                _ = tick.tick() => {
                    if let Err(e) = net.check_running() {
                        // Ctrl-C in a terminal reaches the nodes too (one process group): a node that
                        // stopped on it is no failure if the devnet's own signal follows at once.
                        tokio::select! {
                            _ = interrupt.recv() => return Ok(()),
                            _ = terminate.recv() => return Ok(()),
                            _ = tokio::time::sleep(Duration::from_millis(500)) => return Err(e),
                        }
                    }
                }
            }
        }
    })
}

