//! The benchmark's city on PostgreSQL, as one node or as replicas of which the active one is killed
//! every few seconds (`exchange-node bench --database-url … --city-replicas 2 --kill-active-every
//! 10`): the database, the replicas, and the kills with their failover times.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use exchange_node_core::storage::postgres::scratch::ScratchDatabase;
use serde_json::json;

use crate::bench::BenchArgs;
use crate::failover::{self, Takeover};
use crate::launcher::LocalNetwork;

/// The city node.
const CITY: &str = "gz";
/// How long a takeover may take before the run counts it as failed.
const TAKEOVER_BOUND: Duration = Duration::from_secs(30);

/// Before the first start: with `--database-url`, creates the city's database on that server and
/// points the city at it, and adds `--city-replicas - 1` replicas. Returns the database (dropped
/// after the network) and the labels of every city replica (empty for a single city node).
pub fn prepare(net: &mut LocalNetwork, args: &BenchArgs) -> anyhow::Result<(Option<ScratchDatabase>, Vec<String>)> {
    let Some(server) = &args.database_url else { return Ok((None, Vec::new())) };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let database = runtime.block_on(ScratchDatabase::create_on(server, "exchange_bench")).map_err(anyhow::Error::msg)?;
    net.set_storage(CITY, &format!("url = \"{}\"", database.url))?;
    println!("   the city node keeps custody in PostgreSQL (a fresh database on {}, dropped afterwards)", exchange_node_core::storage::postgres::url::redacted(server));
    let mut replicas = Vec::new();
    if args.city_replicas > 1 {
        replicas.push(CITY.to_string());
        for _ in 1..args.city_replicas {
            replicas.push(net.add_replica(CITY)?);
        }
        println!("   the city node runs as {} replicas over it: {}", replicas.len(), replicas.join(", "));
    }
    Ok((Some(database), replicas))
}

/// Starts the standbys once the network runs (the first replica is the active one).
pub fn start_standbys(net: &mut LocalNetwork, replicas: &[String]) -> anyhow::Result<()> {
    for r in replicas.iter().skip(1) {
        net.start(r).with_context(|| format!("start the city replica {r}"))?;
    }
    if !replicas.is_empty() {
        failover::wait_active(net, replicas, TAKEOVER_BOUND)?;
    }
    Ok(())
}

/// Kills the active city replica every `every` during the timed phase.
pub struct Killer<'a> {
    every: Option<Duration>,
    replicas: &'a [String],
    last: Instant,
    takeovers: Vec<Takeover>,
    errors: Vec<String>,
}

impl<'a> Killer<'a> {
    pub fn new(every_secs: Option<u64>, replicas: &'a [String]) -> Killer<'a> {
        Killer { every: every_secs.map(Duration::from_secs), replicas, last: Instant::now(), takeovers: Vec::new(), errors: Vec::new() }
    }

    /// Kills the active replica if one is due, and waits for the takeover.
    pub fn tick(&mut self, net: &mut LocalNetwork) -> anyhow::Result<()> {
        let Some(every) = self.every else { return Ok(()) };
        if self.last.elapsed() < every {
            return Ok(());
        }
        let t = failover::kill_active(net, self.replicas, TAKEOVER_BOUND);
        self.last = Instant::now();
        let t = t?;
        println!("   killed {} (SIGKILL); {} took over and forwarded after {} ms", t.killed, t.new_active, t.failover.as_millis());
        self.takeovers.push(t);
        Ok(())
    }

    /// The kills for the JSON: the details, `failover_ms` (max and mean), and problems.
    pub fn finish(self) -> (serde_json::Value, serde_json::Value, Vec<String>) {
        let mut errors = self.errors;
        if self.every.is_some() && self.takeovers.is_empty() {
            errors.push("--kill-active-every: the run ended before the first kill; give more --messages or a shorter interval".into());
        }
        let (max, mean) = failover::failover_ms(&self.takeovers);
        let details = json!({
            "kills": self.takeovers.len(),
            "every_s": self.every.map(|d| d.as_secs()),
            "takeovers": self.takeovers.iter().map(|t| json!({
                "killed": t.killed, "new_active": t.new_active, "failover_ms": t.failover.as_millis() as u64,
            })).collect::<Vec<_>>(),
        });
        let ms = if self.takeovers.is_empty() { serde_json::Value::Null } else { json!({ "max": max, "mean": mean }) };
        if !self.takeovers.is_empty() {
            println!("   failover after {} kills: max {max} ms, mean {mean} ms (kill to first message forwarded by the new active replica)", self.takeovers.len());
        }
        (details, ms, errors)
    }
}
