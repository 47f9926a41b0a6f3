//! The reconciliation after a restore, at the restored node: it asks its parent and each child
//! (`/gov-exchange/reconcile/1`) which messages they exchanged with it between a little before the
//! backup and its first start after the restore, and
//!
//! * of the messages a neighbour had handed to it (the neighbour's `forwarded` custody events), those
//!   the restored database does not hold were acknowledged after the backup and lost: the neighbour
//!   queues them again and they are carried again (`recovered`; ids are content-derived, so any node
//!   downstream that already holds one answers duplicate), unless the neighbour purged them too
//!   (`unrecoverable`);
//! * of the messages a neighbour had received from it, those the restored database does not hold
//!   were acknowledged after the backup and already handed on (`passed-on`).
//!
//! "Held by the restored database" means taken into custody before the restore: a message that came
//! back since has a later `received_at_ms`. So the answer does not depend on timing. Each neighbour is
//! asked until it answers, round after round, so one that is down does not hold up the others. The
//! report is written to `data_dir/reconciliation/` (see `backup::report`), counted in
//! `exchange_reconciliation_messages_total` and audited.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use exchange_wire::backup::{NeighbourReconciliation, ReconcileCounts, ReconcileEntry, ReconcileState, ReconciliationReport};
use exchange_wire::{Digest, NodeId};
use crate::network::PeerId;

use super::Engine;
use super::signals::peer_for;
use super::services::Services;
use super::signals::Links;
use crate::backup::report::{self, Due, EntryWriter};
use crate::network::reconcile::{Direction, Exchanged, PAGE, ReconcileRequest, ReconcileResponse, ResendOutcome};

/// What one neighbour's answers added up to.
#[derive(Default)]
struct Tally {
    handed: u64,
    received: u64,
    counts: ReconcileCounts,
    entries: u64,
}

/// The window and the line between "in the backup" and "came back since".
#[derive(Clone, Copy)]
struct Window {
    since_ms: u64,
    until_ms: u64,
    restored_at_ms: u64,
}

/// The reconciliation part: the services and exactly what it reads beyond them (the links, to find
/// each neighbour's peer; the data_dir, where the report is written; the start time, the end of the
/// window). It runs once, in the background, after a restore.
struct Reconciliation {
    services: Arc<Services>,
    links: Arc<Links>,
    data_dir: PathBuf,
    started_at_ms: u64,
}

/// What stays the engine's: handing the part what it needs.
impl Engine {
    /// At start: runs in the background the reconciliation a restore left due, if any.
    pub fn start_reconciliation_if_due(self: &Arc<Self>) -> anyhow::Result<()> {
        let data_dir = &self.recovery.data_dir;
        let Some(mut due) = report::due(data_dir).context("cannot read the reconciliation due after a restore")? else { return Ok(()) };
        if due.node != self.services.here {
            bail!("{} records a restore of node {}, not {}: remove it if this data_dir is really node {}'s", data_dir.display(), due.node, self.services.here, self.services.here);
        }
        if due.first_start_ms.is_none() {
            due.first_start_ms = Some(self.started_at_ms);
            report::write_due(data_dir, &due)?;
        }
        tracing::warn!(backup = %due.backup_folder, "this node was restored from a backup: reconciling with its parent and children");
        let part = Reconciliation {
            services: self.services.clone(),
            links: self.links.clone(),
            data_dir: data_dir.clone(),
            started_at_ms: self.started_at_ms,
        };
        self.services.tasks.spawn(part.reconcile(due));
        Ok(())
    }
}

impl Reconciliation {
    async fn reconcile(self, due: Due) {
        let window = Window {
            since_ms: due.backup_taken_at_ms.saturating_sub(self.services.limits.clock_skew_secs.saturating_mul(1000)),
            until_ms: due.first_start_ms.unwrap_or(self.started_at_ms),
            restored_at_ms: due.restored_at_ms,
        };
        let detail = format!(
            "from backup {} taken at {} UTC; the data it replaced is in {}; reconciling with the parent and children",
            due.backup_folder,
            exchange_wire::time::format_utc_ms(due.backup_taken_at_ms),
            due.previous_data
        );
        if let Err(r) = self.services.admin_record("restored", detail).await {
            tracing::error!(reason = %r.message, "cannot audit the restore");
        }
        let mut report = self.new_report(&due, window);
        if let Err(e) = report::clear_entries(&self.data_dir) {
            tracing::error!(error = %e, "cannot clear the entries of an earlier reconciliation");
        }
        let mut delay = Duration::from_secs(1);
        loop {
            self.add_new_neighbours(&mut report);
            for i in 0..report.neighbours.len() {
                if report.neighbours[i].answered {
                    continue;
                }
                let node = report.neighbours[i].node.clone();
                let Some(peer) = peer_for(&self.services.dir.current(), &self.links, &node) else {
                    report.neighbours[i].error = Some("no longer in the node tree: not asked".into());
                    continue;
                };
                match self.reconcile_with(&node, peer, window).await {
                    Ok(t) => {
                        let n = &mut report.neighbours[i];
                        (n.answered, n.handed, n.received, n.error) = (true, t.handed, t.received, None);
                        add_counts(&mut report.counts, &t.counts);
                        report.entries += t.entries;
                        self.count_reconciled(&t.counts);
                    }
                    Err(e) => {
                        tracing::warn!(neighbour = %node, error = %format!("{e:#}"), "reconciliation: cannot ask a neighbour yet; asking again");
                        report.neighbours[i].error = Some(format!("{e:#}"));
                    }
                }
            }
            self.save_report(&report);
            let dir = self.services.dir.current();
            if report.neighbours.iter().all(|n| n.answered || dir.node(&n.node).is_none()) {
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
        self.finish_reconciliation(report).await;
    }

    fn new_report(&self, due: &Due, window: Window) -> ReconciliationReport {
        ReconciliationReport {
            node: self.services.here.clone(),
            state: ReconcileState::Running,
            backup_folder: due.backup_folder.clone(),
            backup_taken_at_ms: due.backup_taken_at_ms,
            restored_at_ms: due.restored_at_ms,
            previous_data: due.previous_data.clone(),
            since_ms: window.since_ms,
            until_ms: Some(window.until_ms),
            started_at_ms: Some(exchange_wire::now_ms()),
            finished_at_ms: None,
            neighbours: Vec::new(),
            counts: ReconcileCounts::default(),
            entries: 0,
            unknowable: unknowable(&self.services.here, due.backup_taken_at_ms),
        }
    }

    /// Adds the parent and children the directory lists and the report does not yet (all of them at
    /// first; later, a child added after the backup, once the directory from the parent arrives).
    fn add_new_neighbours(&self, report: &mut ReconciliationReport) {
        let dir = self.services.dir.current();
        let parent = dir.node(&self.services.here).and_then(|n| n.parent.clone());
        for n in dir.neighbours(&self.services.here) {
            if !report.neighbours.iter().any(|r| r.node == n.id) {
                report.neighbours.push(NeighbourReconciliation {
                    node: n.id.clone(),
                    role: if Some(&n.id) == parent.as_ref() { "parent" } else { "child" }.into(),
                    answered: false,
                    handed: 0,
                    received: 0,
                    error: None,
                });
            }
        }
    }

    fn save_report(&self, report: &ReconciliationReport) {
        if let Err(e) = report::write_report(&self.data_dir, report) {
            tracing::error!(error = %e, "cannot write the reconciliation report");
        }
    }

    fn count_reconciled(&self, c: &ReconcileCounts) {
        for (outcome, n) in [("recovered", c.recovered), ("passed-on", c.passed_on), ("held", c.held), ("unrecoverable", c.unrecoverable)] {
            self.services.metrics.reconciliation.with_label_values(&[outcome]).inc_by(n);
        }
    }

    async fn finish_reconciliation(&self, mut report: ReconciliationReport) {
        report.state = ReconcileState::Done;
        report.finished_at_ms = Some(exchange_wire::now_ms());
        self.save_report(&report);
        let c = &report.counts;
        let detail = format!(
            "{} recovered, {} passed on, {} held, {} unrecoverable, from {} neighbours",
            c.recovered,
            c.passed_on,
            c.held,
            c.unrecoverable,
            report.neighbours.len()
        );
        tracing::warn!(%detail, "reconciliation after the restore done; see exchange-admin reconcile");
        if let Err(r) = self.services.admin_record("reconciled", detail).await {
            tracing::error!(reason = %r.message, "cannot audit the reconciliation");
        }
        if let Err(e) = report::clear_due(&self.data_dir) {
            tracing::error!(error = %e, "cannot clear the reconciliation due; it runs again at the next start");
        }
    }

    /// Both lists of one neighbour, and the re-queueing of what it handed over and this node lost.
    async fn reconcile_with(&self, node: &NodeId, peer: PeerId, w: Window) -> anyhow::Result<Tally> {
        let mut tally = Tally::default();
        let data_dir = self.data_dir.clone();
        let mut writer = EntryWriter::create(&data_dir, node)?;
        for direction in [Direction::FromAsker, Direction::ToAsker] {
            let mut after = 0;
            loop {
                let request = ReconcileRequest::List { direction, since_ms: w.since_ms, until_ms: w.until_ms, after, limit: PAGE };
                let (items, next) = match self.ask_neighbour(peer, request).await? {
                    ReconcileResponse::Listed { items, next } => (items, next),
                    other => bail!("{node} answered a list request with {other:?}"),
                };
                let entries = self.classify(node, peer, direction, items, w, &mut tally).await?;
                tally.entries += entries.len() as u64;
                writer.append(&entries)?;
                match next {
                    Some(n) if n > after => after = n,
                    _ => break,
                }
            }
        }
        writer.sync()?;
        Ok(tally)
    }

    async fn ask_neighbour(&self, peer: PeerId, request: ReconcileRequest) -> anyhow::Result<ReconcileResponse> {
        match self.services.net.reconcile(peer, request).await? {
            ReconcileResponse::Refused { reason } => bail!("refused: {reason}"),
            other => Ok(other),
        }
    }

    /// Sorts one page: counted as held (in the restored database), or listed; messages a neighbour
    /// handed over and this node no longer holds are asked for again.
    async fn classify(
        &self,
        node: &NodeId,
        peer: PeerId,
        direction: Direction,
        items: Vec<Exchanged>,
        w: Window,
        tally: &mut Tally,
    ) -> anyhow::Result<Vec<ReconcileEntry>> {
        let items: Vec<([u8; 32], Exchanged)> = items.into_iter().filter_map(|e| Some((<[u8; 32]>::try_from(e.id.as_slice()).ok()?, e))).collect();
        let ids: Vec<[u8; 32]> = items.iter().map(|(id, _)| *id).collect();
        let held: HashMap<[u8; 32], i64> =
            self.services.store.recovery().held(&ids).await.context("cannot read the database")?.into_iter().map(|h| (h.id, h.received_at_ms)).collect();
        let entry = |id: &[u8; 32], e: &Exchanged, outcome: &str, detail: Option<String>| ReconcileEntry {
            id: Digest(*id),
            kind: e.kind.clone(),
            neighbour: node.clone(),
            direction: if direction == Direction::ToAsker { "from" } else { "to" }.into(),
            outcome: outcome.into(),
            at_ms: e.at_ms,
            detail,
        };
        let mut out = Vec::new();
        let mut lost = Vec::new();
        for (id, e) in &items {
            match direction {
                Direction::FromAsker => tally.received += 1,
                Direction::ToAsker => tally.handed += 1,
            }
            match held.get(id) {
                Some(&at) if at < w.restored_at_ms as i64 => tally.counts.held += 1,
                Some(_) if direction == Direction::ToAsker => {
                    // Carried here again already (an earlier run of this reconciliation).
                    tally.counts.recovered += 1;
                    out.push(entry(id, e, "recovered", Some("held here again".into())));
                }
                _ if direction == Direction::FromAsker => {
                    tally.counts.passed_on += 1;
                    out.push(entry(id, e, "passed-on", None));
                }
                _ => lost.push((id, e)),
            }
        }
        if lost.is_empty() {
            return Ok(out);
        }
        let request = ReconcileRequest::Resend { ids: lost.iter().map(|(id, _)| serde_bytes::ByteBuf::from(id.to_vec())).collect() };
        let outcomes = match self.ask_neighbour(peer, request).await? {
            ReconcileResponse::Resent { outcomes } if outcomes.len() == lost.len() => outcomes,
            other => bail!("{node} answered a re-send request with {other:?}"),
        };
        for ((id, e), outcome) in lost.into_iter().zip(outcomes) {
            match outcome {
                ResendOutcome::Requeued | ResendOutcome::Queued => {
                    tally.counts.recovered += 1;
                    out.push(entry(id, e, "recovered", Some(format!("queued again at {node}"))));
                }
                ResendOutcome::Gone { reason } => {
                    tally.counts.unrecoverable += 1;
                    out.push(entry(id, e, "unrecoverable", Some(format!("{node}: {reason}"))));
                }
            }
        }
        Ok(out)
    }
}

fn add_counts(total: &mut ReconcileCounts, c: &ReconcileCounts) {
    total.recovered += c.recovered;
    total.passed_on += c.passed_on;
    total.held += c.held;
    total.unrecoverable += c.unrecoverable;
}

/// What the neighbours cannot know, in plain words.
fn unknowable(here: &NodeId, backup_ms: u64) -> String {
    format!(
        "Documents that units of {here} submitted to it after the backup ({} UTC) and that it had not yet handed to a neighbour \
         were lost with the data the backup replaced, and no other node knows of them. Their senders' systems must submit them \
         again: the same signed bytes while the envelope is within the replay window (limits.clock_skew_secs), otherwise signed \
         anew; this node answers `duplicate` for what it holds. Documents listed here as passed-on or recovered are in the \
         network: do not send them again. Tokens issued, units changed and receipts signed at {here} after the backup are lost too.",
        exchange_wire::time::format_utc_ms(backup_ms)
    )
}
