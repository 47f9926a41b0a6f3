//! The checks that decide the scenario's exit code: every document delivered exactly once, every
//! receipt back at the sender's node, every query answered, no refusal or error on the way.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use exchange_wire::api::RecipientState;
use exchange_wire::client::ApiClient;
use exchange_wire::{MessageId, UnitAddress};

use super::{Ledger, Shared};
use crate::launcher::LocalNetwork;

/// How long after the traffic stopped each check may take.
const PATIENCE: Duration = Duration::from_secs(120);

/// When each part of the reconciliation was complete, and the queries' round trips.
pub(super) struct Times {
    pub delivered_after: Duration,
    pub receipts_after: Duration,
    /// Asked → answered by the asked unit, per answered query, in milliseconds (sorted).
    pub query_ms: Vec<f64>,
}

/// Waits for every delivery, receipt and answer; fails naming what is missing.
pub(super) fn everything(net: &LocalNetwork, ledger: &Shared, started: Instant) -> anyhow::Result<Times> {
    deliveries(ledger)?;
    let delivered_after = started.elapsed();
    receipts(net, ledger)?;
    let receipts_after = started.elapsed();
    let query_ms = answers(net, ledger)?;
    Ok(Times { delivered_after, receipts_after, query_ms })
}

/// Every document in its recipient's inbox, none twice.
fn deliveries(ledger: &Shared) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (missing, doubled, total) = {
            let l = ledger.lock().expect("ledger");
            let missing = l.sent.keys().filter(|id| !l.delivered.contains_key(id)).count();
            (missing, l.delivered.values().filter(|(n, _)| *n > 1).count(), l.sent.len())
        };
        if doubled > 0 {
            bail!("{doubled} documents were delivered more than once");
        }
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{missing} of {total} documents did not reach their recipient within {PATIENCE:?} after the traffic stopped");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every document `signed-for` by its recipients in the status at the sender's node.
fn receipts(net: &LocalNetwork, ledger: &Shared) -> anyhow::Result<()> {
    let (mut waiting, clients) = {
        let l = ledger.lock().expect("ledger");
        let waiting: Vec<(MessageId, UnitAddress)> = l.sent.iter().map(|(id, s)| (*id, s.sender.clone())).collect();
        // Units added during the run have no token in the launcher: the scenario keeps their clients.
        let clients: HashMap<UnitAddress, ApiClient> =
            waiting.iter().map(|(_, s)| (s.clone(), l.added.get(s).cloned().unwrap_or_else(|| net.client_for(s)))).collect();
        (waiting, clients)
    };
    let total = waiting.len();
    let deadline = Instant::now() + PATIENCE;
    loop {
        waiting.retain(|(id, sender)| {
            !clients[sender]
                .status(id)
                .is_ok_and(|s| !s.recipients.is_empty() && s.recipients.iter().all(|r| r.state == RecipientState::SignedFor))
        });
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} of {total} receipts did not come back within {PATIENCE:?} (first: {})", waiting.len(), waiting[0].0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every query `answered` at the asker's node; returns the round trips.
fn answers(net: &LocalNetwork, ledger: &Shared) -> anyhow::Result<Vec<f64>> {
    let queries: Vec<(MessageId, UnitAddress, Instant)> =
        ledger.lock().expect("ledger").queries.iter().map(|(id, (asker, at))| (*id, asker.clone(), *at)).collect();
    let mut ms = Vec::new();
    for (id, asker, at) in &queries {
        let q = net.client_for(asker).query_status(id, Duration::from_secs(30))?;
        if q.state != RecipientState::Answered {
            bail!("query {id} of {asker} ended {} instead of answered", q.state.as_str());
        }
        if let Some(answered) = ledger.lock().expect("ledger").answered.get(id) {
            ms.push(answered.saturating_duration_since(*at).as_secs_f64() * 1000.0);
        }
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    Ok(ms)
}

/// Nothing refused, nothing unexpected in an inbox.
pub(super) fn no_errors(l: &Ledger) -> anyhow::Result<()> {
    let unknown = l.delivered.keys().filter(|id| !l.sent.contains_key(id)).count();
    if unknown > 0 {
        bail!("{unknown} inbox items are no document this scenario sent");
    }
    if let Some(first) = l.strangers.first() {
        bail!("{} unexpected inbox items, first: {first}", l.strangers.len());
    }
    if let Some(first) = l.errors.first() {
        bail!("{} refusals or errors, first: {first}", l.errors.len());
    }
    Ok(())
}
