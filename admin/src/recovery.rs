//! Operator commands for backups: `backup --out DIR` (an online backup of the running node, written
//! by the node into a folder on its host) and `reconcile` (the report of the reconciliation a node
//! runs with its neighbours after `exchange-node restore`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Args;
use exchange_wire::backup::{BackupManifest, BackupRequest, ReconcileEntry, ReconcileState, ReconciliationPage, ReconciliationReport};

use crate::Outcome;
use crate::endpoint::{Ctx, Endpoint};
use crate::output::{Table, emit, emit_json, fields, format_bytes, format_ms, short_id};

/// Entries asked for per request.
const PAGE: u32 = 1000;

#[derive(Args)]
pub struct BackupArgs {
    /// The folder to write, on the node's host: new, or empty. A relative path is taken from the
    /// current folder (the node needs an absolute one). On the node's file system the attachment
    /// files are hard-linked (they never change); elsewhere they are copied.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct ReconcileArgs {
    /// Wait up to this many seconds for the reconciliation to finish (every neighbour answered);
    /// exit code 3 if it has not.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub wait: u64,
    /// Most entries to show in the table (all with --json).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
}

fn manifest_text(m: &BackupManifest) -> String {
    fields(&[
        ("folder", m.folder.clone()),
        ("node", m.node.to_string()),
        ("taken at", format!("{} UTC", format_ms(m.taken_at_ms))),
        ("took", format!("{} ms", m.finished_at_ms.saturating_sub(m.taken_at_ms))),
        ("database", format!("{} ({}), {} messages", m.database.file, format_bytes(m.database.bytes), m.database.messages)),
        ("sha-256", m.database.sha256.clone()),
        ("audit head", format!("seq {} hash {}", m.database.audit_last_seq, m.database.audit_head_hash)),
        (
            "attachments",
            format!("{} files, {} ({} linked, {} copied)", m.attachments.files, format_bytes(m.attachments.bytes), m.attachments.linked, m.attachments.copied),
        ),
    ])
}

/// `backup --out DIR`.
pub fn backup(ctx: &Ctx, a: &BackupArgs) -> Result<()> {
    let out = if a.out.is_absolute() {
        a.out.clone()
    } else {
        std::env::current_dir().context("cannot read the current folder")?.join(&a.out)
    };
    let request = BackupRequest { out: out.display().to_string() };
    // A large node takes a while: no time limit on this call.
    let m: BackupManifest = ctx.admin()?.call(|c| c.clone().with_timeout(None).post("/admin/v1/backup", &request))?;
    if ctx.json {
        return emit_json(&m);
    }
    emit(&manifest_text(&m))?;
    eprintln!("restore it on the stopped node with: exchange-node restore --config <its config> --from {}", m.folder);
    Ok(())
}

fn page(admin: &Endpoint, after: u64) -> Result<ReconciliationPage> {
    admin.call(|c| c.get("/admin/v1/reconciliation", &[("after", after.to_string()), ("limit", PAGE.to_string())]))
}

fn report_text(r: &ReconciliationReport) -> String {
    let c = &r.counts;
    let mut text = fields(&[
        ("node", r.node.to_string()),
        ("state", format!("{:?}", r.state).to_lowercase()),
        ("backup", format!("{} (taken {} UTC)", r.backup_folder, format_ms(r.backup_taken_at_ms))),
        ("restored", format!("{} UTC; previous data in {}", format_ms(r.restored_at_ms), r.previous_data)),
        ("window", format!("{} UTC to {}", format_ms(r.since_ms), r.until_ms.map(|u| format!("{} UTC", format_ms(u))).unwrap_or("first start".into()))),
        ("recovered", c.recovered.to_string()),
        ("passed on", c.passed_on.to_string()),
        ("held", c.held.to_string()),
        ("unrecoverable", c.unrecoverable.to_string()),
    ]);
    if !r.neighbours.is_empty() {
        let mut t = Table::new(&["NEIGHBOUR", "ROLE", "ANSWERED", "HANDED", "RECEIVED", "LAST ERROR"]);
        for n in &r.neighbours {
            t.push(vec![
                n.node.to_string(),
                n.role.clone(),
                if n.answered { "yes" } else { "no" }.into(),
                n.handed.to_string(),
                n.received.to_string(),
                n.error.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        text.push('\n');
        text.push_str(&t.render());
    }
    text
}

fn entries_table(entries: &[ReconcileEntry]) -> String {
    let mut t = Table::new(&["MESSAGE", "KIND", "NEIGHBOUR", "DIRECTION", "OUTCOME", "AT", "DETAIL"]);
    for e in entries {
        let hex = e.id.to_hex();
        t.push(vec![
            short_id(&hex).to_string(),
            e.kind.clone(),
            e.neighbour.to_string(),
            e.direction.clone(),
            e.outcome.clone(),
            format_ms(e.at_ms),
            e.detail.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    t.render()
}

/// `reconcile`: the report, waiting for it with `--wait`.
pub fn reconcile(ctx: &Ctx, a: &ReconcileArgs) -> Result<Outcome> {
    let admin = ctx.admin()?;
    let deadline = Instant::now() + Duration::from_secs(a.wait);
    let mut first = loop {
        let p = page(&admin, 0)?;
        let done = p.report.as_ref().is_none_or(|r| r.state == ReconcileState::Done);
        if done || Instant::now() >= deadline {
            break p;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let Some(report) = first.report.clone() else {
        if ctx.json {
            emit_json(&first)?;
        } else {
            eprintln!("this node has not been restored from a backup: there is nothing to reconcile");
        }
        return Ok(Outcome::Done);
    };
    let wanted = if ctx.json { usize::MAX } else { a.limit };
    // Further pages while the last one was full.
    let mut last_full = first.entries.len() >= PAGE as usize;
    while last_full && first.entries.len() < wanted {
        let more = page(&admin, first.next_after)?;
        last_full = more.entries.len() >= PAGE as usize;
        first.next_after = more.next_after;
        first.entries.extend(more.entries);
    }
    first.entries.truncate(wanted);
    if ctx.json {
        emit_json(&first)?;
    } else {
        emit(&report_text(&report))?;
        if !first.entries.is_empty() {
            emit(&format!("\n{}", entries_table(&first.entries)))?;
        }
        if report.entries > first.entries.len() as u64 {
            eprintln!("{} of {} entries shown: --limit N for more, --json for all", first.entries.len(), report.entries);
        }
        eprintln!("{}", report.unknowable);
    }
    if report.state == ReconcileState::Done {
        Ok(Outcome::Done)
    } else {
        eprintln!("the reconciliation is still running (some neighbours have not answered yet): ask again later");
        Ok(Outcome::TimedOut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exchange_wire::backup::{NeighbourReconciliation, ReconcileCounts};

    #[test]
    fn the_report_names_the_backup_the_counts_and_each_neighbour() {
        let report = ReconciliationReport {
            node: "gz".parse().unwrap(),
            state: ReconcileState::Running,
            backup_folder: "/backup/gz/1".into(),
            backup_taken_at_ms: 1_751_328_000_000,
            restored_at_ms: 1_751_329_000_000,
            previous_data: "/var/lib/exchange/gz/before-restore-20250701T001640Z".into(),
            since_ms: 1_751_327_700_000,
            until_ms: None,
            started_at_ms: None,
            finished_at_ms: None,
            neighbours: vec![NeighbourReconciliation {
                node: "gz.haizhu".parse().unwrap(),
                role: "child".into(),
                answered: false,
                handed: 0,
                received: 0,
                error: Some("no answer from peer".into()),
            }],
            counts: ReconcileCounts { recovered: 7, passed_on: 5, held: 100, unrecoverable: 1 },
            entries: 13,
            unknowable: String::new(),
        };
        let text = report_text(&report);
        for needle in ["running", "/backup/gz/1", "2025-07-01 00:00:00.000 UTC", "before-restore-", "first start", "gz.haizhu", "no answer from peer"] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert!(text.lines().any(|l| l.starts_with("unrecoverable") && l.trim_end().ends_with('1')), "{text}");
        let entry = ReconcileEntry {
            id: "ab".repeat(32).parse().unwrap(),
            kind: "document".into(),
            neighbour: "gz.yuexiu".parse().unwrap(),
            direction: "from".into(),
            outcome: "recovered".into(),
            at_ms: 1_751_328_000_500,
            detail: Some("queued again at gz.yuexiu".into()),
        };
        let table = entries_table(&[entry]);
        assert!(table.contains("abababababab") && table.contains("recovered") && table.contains("queued again"), "{table}");
    }
}
