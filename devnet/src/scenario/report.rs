//! What the scenario prints once it reconciled: latency per priority class, the pairs of nodes that
//! carried documents, and the directory changes' times.

use super::reconcile::Times;
use super::{Ledger, PRIORITIES, class};

/// The value at fraction `f` of sorted `ms` (0 when empty).
fn quantile(ms: &[f64], f: f64) -> f64 {
    ms.get(((ms.len() as f64 - 1.0) * f).round() as usize).copied().unwrap_or(0.0)
}

fn row(name: &str, ms: &[f64], note: &str) {
    println!("   {:<22} {:>6} {:>9.0} {:>9.0} {:>9.0}{note}", name, ms.len(), quantile(ms, 0.5), quantile(ms, 0.95), quantile(ms, 1.0));
}

pub(super) fn print(l: &Ledger, times: &Times, changes: &[String], shared: &[String], nodes: usize) {
    println!(
        "\n== Reconciled: {} documents delivered exactly once ({:.1} s after the start), every receipt back ({:.1} s), {} queries answered",
        l.sent.len(),
        times.delivered_after.as_secs_f64(),
        times.receipts_after.as_secs_f64(),
        l.queries.len()
    );
    println!("\n   delivery latency, submission to the recipient's inbox (documents with a 256 KiB 附件 apart):");
    println!("   {:<22} {:>6} {:>9} {:>9} {:>9}", "", "count", "p50 ms", "p95 ms", "max ms");
    let rows = PRIORITIES.iter().map(|p| (class(*p).to_string(), Some(*p), false)).chain(std::iter::once(("with 附件, any priority".to_string(), None, true)));
    for (name, priority, attachment) in rows {
        let mut ms: Vec<f64> = l
            .sent
            .iter()
            .filter(|(_, s)| s.attachment == attachment && priority.is_none_or(|p| s.priority == p))
            .filter_map(|(id, s)| l.delivered.get(id).map(|(_, seen)| seen.saturating_duration_since(s.at).as_secs_f64() * 1000.0))
            .collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        row(&name, &ms, "");
    }
    row("查询 queries", &times.query_ms, "   (asked → answered by the asked unit)");
    let pairs: std::collections::BTreeSet<(&str, &str)> = l.sent.values().map(|s| (s.sender.node_part(), s.recipient.node_part())).collect();
    println!("   ordered pairs of nodes that carried documents: {} of {}", pairs.len(), nodes * (nodes - 1));
    println!("\n   directory changes (time until all {nodes} nodes held the change):");
    for c in changes {
        println!("   {c}");
    }
    println!("\n   base data (数据共享), publication to every subscriber, signature checked:");
    for s in shared {
        println!("   {s}");
    }
}
