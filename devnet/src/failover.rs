//! Killing the active replica of a node run as replicas over one PostgreSQL database, and timing the
//! takeover: from the kill (SIGKILL) to the first message the new active replica forwarded. Used by
//! the failover test and by `exchange-node bench --city-replicas`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::bench::metric_sum;
use crate::launcher::LocalNetwork;

/// One takeover.
#[derive(Debug, Clone)]
pub struct Takeover {
    /// The replica killed, and the one that took over.
    pub killed: String,
    pub new_active: String,
    /// From the kill to the first message forwarded by the new active replica.
    pub failover: Duration,
}

/// The replica (of `labels`) whose metrics say it is active, if one answers so.
pub fn active(net: &LocalNetwork, labels: &[String]) -> Option<String> {
    labels.iter().find(|l| is_active(net, l)).cloned()
}

fn is_active(net: &LocalNetwork, label: &str) -> bool {
    net.node(label).pid().is_some()
        && net.node(label).client().metrics_text().is_ok_and(|t| metric_sum(&t, "exchange_replica_active", &[]) == 1.0)
}

/// Waits up to `timeout` for one replica to be active and returns it.
pub fn wait_active(net: &LocalNetwork, labels: &[String], timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(a) = active(net, labels) {
            return Ok(a);
        }
        if Instant::now() > deadline {
            bail!("no replica of {labels:?} became active within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the active replica with SIGKILL while traffic crosses it, waits until another replica
/// took over and forwarded a first message (within `timeout`), then starts the killed one again,
/// as the standby. Fails if no replica takes over and forwards in time.
pub fn kill_active(net: &mut LocalNetwork, labels: &[String], timeout: Duration) -> anyhow::Result<Takeover> {
    let killed = wait_active(net, labels, timeout)?;
    net.kill(&killed)?;
    let killed_at = Instant::now();
    let others: Vec<String> = labels.iter().filter(|l| **l != killed).cloned().collect();
    let (new_active, failover) = loop {
        let forwarded = others.iter().find(|l| {
            net.node(l).client().metrics_text().is_ok_and(|t| {
                metric_sum(&t, "exchange_replica_active", &[]) == 1.0 && metric_sum(&t, "exchange_messages_forwarded_total", &[]) > 0.0
            })
        });
        if let Some(l) = forwarded {
            break (l.clone(), killed_at.elapsed());
        }
        if killed_at.elapsed() > timeout {
            bail!("after {killed} was killed, no replica of {others:?} took over and forwarded a message within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    net.start(&killed).with_context(|| format!("restart {killed} as the standby"))?;
    Ok(Takeover { killed, new_active, failover })
}

/// Max and mean of the takeovers' failover times, in milliseconds (0 when there were none).
pub fn failover_ms(takeovers: &[Takeover]) -> (u64, u64) {
    let ms: Vec<u64> = takeovers.iter().map(|t| t.failover.as_millis() as u64).collect();
    let max = ms.iter().copied().max().unwrap_or(0);
    let mean = if ms.is_empty() { 0 } else { ms.iter().sum::<u64>() / ms.len() as u64 };
    (max, mean)
}
