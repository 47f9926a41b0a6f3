//! What the directory costs at the network's size, measured in this process on the very segments the
//! devnet's nodes sign at their first start (`tree-seed.toml` and each `<node>.units.toml`).
//!
//! Every node holds the whole directory (all nodes, all units, their keys), so what one snapshot
//! costs here is what it costs in each node: the heap it takes (counted by the allocator, not
//! estimated), the time to build it (a node builds a new snapshot for every segment it accepts), the
//! bytes of the segments a node stores and sends, and the cost of routing one recipient (its home
//! node looked up, then the next hop found by walking up the tree).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use exchange_node_core::directory::Directory;
use exchange_node_core::directory::segments::{tree_from_seed, units_from_seed};
use exchange_node_core::routing;
use exchange_wire::UnitAddress;

use crate::launcher::LocalNetwork;

/// The directory at this size.
pub struct DirectoryCost {
    pub nodes: usize,
    pub units: usize,
    /// The segments' payloads (JSON), as stored and sent.
    pub segment_bytes: usize,
    /// Heap one snapshot holds, as the allocator counts it (glibc's `mallinfo2`).
    pub heap_bytes: Option<usize>,
    /// Median time to build a snapshot from the segments.
    pub build: Duration,
    /// Mean time to route one recipient from a node.
    pub route: Duration,
}

/// Builds and times the directory of `net` from its seed files.
pub fn measure(net: &LocalNetwork) -> anyhow::Result<DirectoryCost> {
    let tree = tree_from_seed(&net.root.join("tree-seed.toml")).map_err(anyhow::Error::msg)?;
    let mut segments = Vec::new();
    for id in net.nodes.keys() {
        segments.push(units_from_seed(&net.root.join(format!("{id}.units.toml")), id).map_err(anyhow::Error::msg)?);
    }
    let segment_bytes = serde_json::to_vec(&tree)?.len() + segments.iter().map(|s| serde_json::to_vec(s).map(|v| v.len())).sum::<Result<usize, _>>()?;

    let heap_before = heap_in_use();
    let dir = Directory::build(Some(&tree), &segments).map_err(anyhow::Error::msg).context("build the directory")?;
    let heap_bytes = heap_before.zip(heap_in_use()).map(|(a, b)| b.saturating_sub(a));

    let mut builds: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let d = Directory::build(Some(&tree), &segments);
            let took = t.elapsed();
            drop(d);
            took
        })
        .collect();
    builds.sort();

    // Every unit routed from every node.
    let units: Vec<UnitAddress> = dir.units().map(|u| u.address.clone()).collect();
    let t = Instant::now();
    let mut routed = 0u32;
    for here in net.nodes.keys() {
        for u in &units {
            routing::plan(&dir, here, std::iter::once(u)).map_err(|e| anyhow::anyhow!("{e}"))?;
            routed += 1;
        }
    }
    let route = t.elapsed() / routed.max(1);
    Ok(DirectoryCost { nodes: dir.nodes().count(), units: units.len(), segment_bytes, heap_bytes, build: builds[builds.len() / 2], route })
}

/// Bytes the allocator has handed out and not had back.
fn heap_in_use() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        Some(unsafe { libc::mallinfo2() }.uordblks)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

impl std::fmt::Display for DirectoryCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let heap = match self.heap_bytes {
            Some(b) => format!("{:.1} MiB of memory in every node", b as f64 / (1024.0 * 1024.0)),
            None => "memory not measured on this platform".into(),
        };
        write!(
            f,
            "directory: {} nodes, {} units; {heap}; {:.0} KiB of signed segments; a snapshot built in {:.1} ms (once per accepted change); \
             routing {:.2} µs per recipient",
            self.nodes,
            self.units,
            self.segment_bytes as f64 / 1024.0,
            self.build.as_secs_f64() * 1000.0,
            self.route.as_secs_f64() * 1e6
        )
    }
}
