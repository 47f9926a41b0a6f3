//! Resident memory, CPU time and open descriptors of the node processes, from `/proc` (Linux), so
//! that a run can show whether a node grows: a table of each node at the start and at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use exchange_wire::NodeId;

use crate::launcher::LocalNetwork;

/// One process at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// VmRSS, bytes.
    pub resident_bytes: u64,
    /// User plus system CPU time since the process started.
    pub cpu: Duration,
    /// Entries of `/proc/<pid>/fd`.
    pub open_descriptors: u64,
}

/// Every running node of a network at one moment.
pub struct ProcessStats(pub BTreeMap<NodeId, Sample>);

impl Sample {
    /// Reads `/proc/<pid>`; `None` if the process is gone or `/proc` cannot be read.
    pub fn of(pid: u32) -> Option<Sample> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
        // Fields 14 and 15 (utime, stime) of /proc/<pid>/stat, counted after the command name's ")".
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let open_descriptors = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
        Some(Sample { resident_bytes: kib * 1024, cpu: Duration::from_millis(ticks * 1000 / per_sec), open_descriptors })
    }
}

impl ProcessStats {
    pub fn of_network(net: &LocalNetwork) -> ProcessStats {
        ProcessStats(net.nodes.values().filter_map(|n| Some((n.id.clone(), Sample::of(n.pid()?)?))).collect())
    }

    /// Per node: memory and descriptors at start and end, CPU time used in between and its share of
    /// one core over `wall`.
    pub fn table(before: &ProcessStats, after: &ProcessStats, wall: Duration) -> String {
        let mut out = format!(
            "   {:<12} {:>9} {:>9} {:>7} {:>7} {:>9} {:>6}\n",
            "node", "RSS MiB", "→ MiB", "fds", "→ fds", "CPU s", "CPU %"
        );
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        for (id, a) in &after.0 {
            let b = before.0.get(id).copied().unwrap_or_default();
            let used = a.cpu.saturating_sub(b.cpu).as_secs_f64();
            out.push_str(&format!(
                "   {:<12} {:>9.1} {:>9.1} {:>7} {:>7} {:>9.2} {:>6.1}\n",
                id.as_str(),
                mib(b.resident_bytes),
                mib(a.resident_bytes),
                b.open_descriptors,
                a.open_descriptors,
                used,
                100.0 * used / wall.as_secs_f64().max(0.001)
            ));
        }
        out
    }
}
