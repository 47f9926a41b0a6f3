//! `exchange-node devnet --scenario SECS`: a city's mixed traffic over the 13-node Guangzhou network,
//! for a bounded time, then a reconciliation that decides the exit code.
//!
//! * One sender unit per node (a street office, or a city department) submits documents paced to
//!   `--rate` in all, each to a recipient on another node, going round the other twelve at least once
//!   (however short the run), so every ordered pair of nodes (district ↔ district, district ↔ city)
//!   carries documents; priorities cycle
//!   特急, 加急, 平件; every fifth document carries an attachment (附件) uploaded before it.
//! * One recipient unit per node (a bureau, or a city department) long-polls its inbox, checks each
//!   document's signature with the sender's key and signs for (签收) every page in one request.
//! * Queries (查询核验) between districts: each district's public-security bureau asks the next
//!   district's recipient (civil affairs) whether a person is alive; the recipient answers from its
//!   inbox with a signed answer, and every query must end `answered`.
//! * Meanwhile the directory changes: a street office is suspended, a unit's key is rotated, a new
//!   street office is added; each change is timed until all 13 nodes hold it. The rotated unit and
//!   the new unit then send a document each (the new key, and the new unit, must verify at every hop);
//!   the suspended unit's submission must be refused.
//! * After the traffic: every document must be delivered exactly once to each recipient, and every
//!   receipt must be back at the sender's node (`signed-for`). The report gives delivery latency per
//!   priority class, and each node's memory, CPU time and open descriptors at start and end.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ed25519_dalek::SigningKey;
use exchange_wire::api::{RecipientState, SignForResult};
use exchange_wire::document::Attachment;
use exchange_wire::receipt::signed_for;
use exchange_wire::{Envelope, Kind, MessageId, NodeId, Priority, UnitAddress};

use crate::launcher::LocalNetwork;
use crate::process_stats::ProcessStats;

/// A document the scenario sent.
#[derive(Debug, Clone)]
struct Sent {
    sender: UnitAddress,
    recipient: UnitAddress,
    priority: Priority,
    attachment: bool,
    at: Instant,
}

/// What the senders and recipients share.
#[derive(Default)]
struct Ledger {
    sent: HashMap<MessageId, Sent>,
    /// Deliveries seen per message, and when the first was seen (a delivery may be seen before its
    /// sender recorded the submission's answer).
    delivered: HashMap<MessageId, (u32, Instant)>,
    /// Inbox items that are no document of this scenario (must stay empty).
    strangers: Vec<String>,
    /// Submissions or receipts the nodes refused, or transport errors that did not recover.
    errors: Vec<String>,
    /// Queries (查询核验) asked: asker and when; answered: when the asked unit's answer was accepted.
    queries: HashMap<MessageId, (UnitAddress, Instant)>,
    answered: HashMap<MessageId, Instant>,
    /// Clients of units added during the run (the launcher holds no token for them).
    added: HashMap<UnitAddress, exchange_wire::client::ApiClient>,
}

/// Who acts: keys and tokens of the units the scenario uses.
struct Actor {
    unit: UnitAddress,
    key: SigningKey,
    client: exchange_wire::client::ApiClient,
}

fn actor(net: &LocalNetwork, unit: &UnitAddress) -> anyhow::Result<Actor> {
    let key = net.unit_keys.get(unit).with_context(|| format!("no key for {unit}"))?.clone();
    Ok(Actor { unit: unit.clone(), key, client: net.client_for(unit) })
}

/// The first unit of `node` of one of `kinds` (in that order of preference), skipping `except`.
fn pick(net: &LocalNetwork, node: &NodeId, kinds: &[&str], except: &[&UnitAddress]) -> anyhow::Result<UnitAddress> {
    kinds
        .iter()
        .find_map(|k| {
            net.topology
                .units
                .iter()
                .find(|u| u.address.node_part() == node.as_str() && u.kind == *k && !except.contains(&&u.address))
                .map(|u| u.address.clone())
        })
        .with_context(|| format!("node {node} has no unit of kind {kinds:?}"))
}

const PRIORITIES: [Priority; 3] = [Priority::Urgent, Priority::Express, Priority::Routine];

fn class(p: Priority) -> &'static str {
    match p {
        Priority::Urgent => "特急 urgent",
        Priority::Express => "加急 express",
        Priority::Routine => "平件 routine",
    }
}

/// Runs the scenario on a started, converged network.
pub fn run(net: &LocalNetwork, duration: Duration, rate: f64) -> anyhow::Result<()> {
    let nodes: Vec<NodeId> = net.nodes.keys().cloned().collect();
    let mut senders = Vec::new();
    let mut recipients = Vec::new();
    for n in &nodes {
        senders.push(actor(net, &pick(net, n, &["street-office", "department"], &[])?)?);
        let s = senders.last().expect("pushed").unit.clone();
        recipients.push(actor(net, &pick(net, n, &["bureau", "department"], &[&s])?)?);
    }
    // The units whose directory entries change: none of them takes part in the traffic.
    let busy: Vec<&UnitAddress> = senders.iter().chain(&recipients).map(|a| &a.unit).collect();
    let suspended = pick(net, &"gz.liwan".parse()?, &["street-office"], &busy)?;
    let rotated = pick(net, &"gz.tianhe".parse()?, &["street-office"], &busy)?;
    let home_of_new: NodeId = "gz.baiyun".parse()?;

    println!("\n== Scenario: {} s of mixed traffic at {rate}/s, 13 senders, 13 recipients", duration.as_secs());
    println!("   senders:    {}", senders.iter().map(|a| a.unit.as_str()).collect::<Vec<_>>().join(", "));
    println!("   recipients: {}", recipients.iter().map(|a| a.unit.as_str()).collect::<Vec<_>>().join(", "));
    let before = ProcessStats::of_network(net);

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop_sending = Arc::new(AtomicBool::new(false));
    let stop_reading = Arc::new(AtomicBool::new(false));
    let attachments = Arc::new(AtomicU64::new(0));
    let recipient_units: Vec<UnitAddress> = recipients.iter().map(|a| a.unit.clone()).collect();
    let sender_keys: HashMap<UnitAddress, SigningKey> = net.unit_keys.clone().into_iter().collect();
    let sender_keys = Arc::new(Mutex::new(sender_keys));
    let started = Instant::now();

    let readers: Vec<_> = recipients
        .into_iter()
        .map(|r| {
            let (ledger, stop, keys) = (ledger.clone(), stop_reading.clone(), sender_keys.clone());
            std::thread::spawn(move || read_inbox(r, ledger, stop, keys))
        })
        .collect();
    let per_sender = rate / senders.len() as f64;
    let writers: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let (ledger, stop, atts) = (ledger.clone(), stop_sending.clone(), attachments.clone());
            let targets: Vec<UnitAddress> = (1..recipient_units.len()).map(|k| recipient_units[(i + k) % recipient_units.len()].clone()).collect();
            let folder = net.root.join("scenario");
            std::thread::spawn(move || send_documents(s, targets, per_sender, ledger, stop, atts, folder))
        })
        .collect();

    // Queries between districts: each district's public-security bureau asks the next district's
    // recipient (civil affairs), one query per second in all.
    let districts: Vec<&NodeId> = nodes.iter().filter(|n| n.as_str() != "gz").collect();
    let mut askers = Vec::new();
    for (i, d) in districts.iter().enumerate() {
        let asker: UnitAddress = format!("{d}/public-security").parse()?;
        let asked = recipient_units.iter().find(|u| u.node_part() == districts[(i + 1) % districts.len()].as_str()).cloned();
        if net.unit_keys.contains_key(&asker) && let Some(asked) = asked {
            askers.push((actor(net, &asker)?, asked));
        }
    }
    let asking = {
        let (ledger, stop) = (ledger.clone(), stop_sending.clone());
        std::thread::spawn(move || ask_queries(askers, ledger, stop))
    };

    // Directory changes while the traffic runs.
    let changes = directory_changes(net, &suspended, &rotated, &home_of_new, &recipient_units, &ledger, &sender_keys, duration);
    let elapsed = started.elapsed();
    if elapsed < duration {
        std::thread::sleep(duration - elapsed);
    }
    stop_sending.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().map_err(|_| anyhow::anyhow!("a sender thread panicked"))?;
    }
    asking.join().map_err(|_| anyhow::anyhow!("the asking thread panicked"))?;
    let traffic_secs = started.elapsed().as_secs_f64();
    let total = ledger.lock().expect("ledger").sent.len();
    println!("   traffic stopped after {traffic_secs:.1} s: {total} documents submitted ({} with attachments)", attachments.load(Ordering::SeqCst));

    // Reconciliation: every document in its recipient's inbox exactly once…
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (missing, doubled) = {
            let l = ledger.lock().expect("ledger");
            let missing = l.sent.keys().filter(|id| !l.delivered.contains_key(id)).count();
            let doubled = l.delivered.values().filter(|(n, _)| *n > 1).count();
            (missing, doubled)
        };
        if doubled > 0 {
            stop_reading.store(true, Ordering::SeqCst);
            bail!("{doubled} documents were delivered more than once");
        }
        if missing == 0 {
            break;
        }
        if Instant::now() > deadline {
            stop_reading.store(true, Ordering::SeqCst);
            bail!("{missing} of {total} documents did not reach their recipient within 120 s after the traffic stopped");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let delivered_after = started.elapsed().as_secs_f64();
    // …and every receipt back at the sender's node.
    let pending: Vec<(MessageId, UnitAddress)> = ledger.lock().expect("ledger").sent.iter().map(|(id, s)| (*id, s.sender.clone())).collect();
    let added = ledger.lock().expect("ledger").added.clone();
    let clients: HashMap<UnitAddress, exchange_wire::client::ApiClient> =
        pending.iter().map(|(_, s)| (s.clone(), added.get(s).cloned().unwrap_or_else(|| net.client_for(s)))).collect();
    let mut waiting: Vec<(MessageId, UnitAddress)> = pending;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for (id, sender) in waiting {
            let done = clients[&sender]
                .status(&id)
                .is_ok_and(|s| !s.recipients.is_empty() && s.recipients.iter().all(|r| r.state == RecipientState::SignedFor));
            if !done {
                still.push((id, sender));
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            if Instant::now() > deadline {
                stop_reading.store(true, Ordering::SeqCst);
                bail!("{} of {total} receipts did not come back within 120 s (first: {})", waiting.len(), waiting[0].0);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let receipts_after = started.elapsed().as_secs_f64();
    // …and every query answered, the answer back at the asker's node.
    let queries: Vec<(MessageId, UnitAddress, Instant)> =
        ledger.lock().expect("ledger").queries.iter().map(|(id, (asker, at))| (*id, asker.clone(), *at)).collect();
    let mut query_ms = Vec::new();
    for (id, asker, at) in &queries {
        let status = net.client_for(asker).query_status(id, Duration::from_secs(30));
        match status {
            Ok(q) if q.state == RecipientState::Answered => {
                if let Some(answered) = ledger.lock().expect("ledger").answered.get(id) {
                    query_ms.push(answered.saturating_duration_since(*at).as_secs_f64() * 1000.0);
                }
            }
            Ok(q) => {
                stop_reading.store(true, Ordering::SeqCst);
                bail!("query {id} of {asker} ended {} instead of answered", q.state.as_str());
            }
            Err(e) => {
                stop_reading.store(true, Ordering::SeqCst);
                bail!("the status of query {id} of {asker}: {e}");
            }
        }
    }
    query_ms.sort_by(|a, b| a.total_cmp(b));
    stop_reading.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().map_err(|_| anyhow::anyhow!("a recipient thread panicked"))?;
    }
    let after = ProcessStats::of_network(net);

    let l = ledger.lock().expect("ledger");
    println!(
        "\n== Reconciled: {total} documents delivered exactly once ({delivered_after:.1} s after the start), every receipt back ({receipts_after:.1} s), {} queries answered",
        queries.len()
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
        let q = |f: f64| ms.get(((ms.len() as f64 - 1.0) * f).round() as usize).copied().unwrap_or(0.0);
        println!("   {:<22} {:>6} {:>9.0} {:>9.0} {:>9.0}", name, ms.len(), q(0.5), q(0.95), q(1.0));
    }
    let q = |f: f64| query_ms.get(((query_ms.len() as f64 - 1.0) * f).round() as usize).copied().unwrap_or(0.0);
    println!(
        "   {:<22} {:>6} {:>9.0} {:>9.0} {:>9.0}   (asked → answered by the asked unit)",
        "查询 queries",
        query_ms.len(),
        q(0.5),
        q(0.95),
        q(1.0)
    );
    let pairs: std::collections::BTreeSet<(String, String)> =
        l.sent.values().map(|s| (s.sender.node_part().to_string(), s.recipient.node_part().to_string())).collect();
    println!("   ordered pairs of nodes that carried documents: {} of {}", pairs.len(), nodes.len() * (nodes.len() - 1));
    println!("\n   directory changes (time until all {} nodes held the change):", nodes.len());
    for c in &changes {
        println!("   {c}");
    }
    println!("\n   node processes at the start and at the end of the scenario:");
    print!("{}", ProcessStats::table(&before, &after, started.elapsed()));
    let unknown = l.delivered.keys().filter(|id| !l.sent.contains_key(id)).count();
    if unknown > 0 {
        bail!("{unknown} inbox items are no document this scenario sent");
    }
    if !l.strangers.is_empty() {
        bail!("{} unexpected inbox items, first: {}", l.strangers.len(), l.strangers[0]);
    }
    if !l.errors.is_empty() {
        bail!("{} refusals or errors, first: {}", l.errors.len(), l.errors[0]);
    }
    Ok(())
}

/// A sender: documents round the other nodes' recipients, paced to `rate` per second.
fn send_documents(
    s: Actor,
    targets: Vec<UnitAddress>,
    rate: f64,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    attachments: Arc<AtomicU64>,
    folder: PathBuf,
) {
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.01));
    let begin = Instant::now();
    let mut n = 0usize;
    // Once round the other nodes at least, however short the run: every ordered pair carries documents.
    while n < targets.len() || !stop.load(Ordering::SeqCst) {
        let due = begin + interval * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait.min(Duration::from_millis(200)));
            continue;
        }
        let recipient = targets[n % targets.len()].clone();
        let priority = PRIORITIES[(n / targets.len() + n) % 3];
        let with_attachment = n % 5 == 4;
        match send_one(&s, &recipient, priority, n, with_attachment.then_some(&folder)) {
            Ok(sent) => {
                if with_attachment {
                    attachments.fetch_add(1, Ordering::SeqCst);
                }
                ledger.lock().expect("ledger").sent.insert(sent.0, sent.1);
            }
            Err(e) => ledger.lock().expect("ledger").errors.push(format!("{} -> {recipient}: {e:#}", s.unit)),
        }
        n += 1;
    }
}

/// Signs and submits one document (with an attachment written under `attachment_in`, if given),
/// retrying transport errors with the same signed bytes (the node recognises a repeat).
fn send_one(
    s: &Actor,
    recipient: &UnitAddress,
    priority: Priority,
    n: usize,
    attachment_in: Option<&PathBuf>,
) -> anyhow::Result<(MessageId, Sent)> {
    let payload = format!("{} 第{n}号 致 {recipient}：关于做好城市运行保障工作的通知（演练）。\n", s.unit).repeat(8).into_bytes();
    let mut envelope = Envelope::new(Kind::Document, s.unit.clone(), vec![recipient.clone()], vec![], priority, &payload);
    envelope.metadata.insert("title".into(), format!("城市运行保障演练通知 {n}"));
    envelope.metadata.insert("doc-number".into(), format!("穗演〔2026〕{n}号"));
    let attachment = match attachment_in {
        Some(folder) => {
            std::fs::create_dir_all(folder)?;
            let path = folder.join(format!("{}-{n}.pdf", s.unit.as_str().replace('/', "_")));
            let body: Vec<u8> = (0..256 * 1024 + n).map(|i| (i as u8) ^ (n as u8).wrapping_mul(17)).collect();
            std::fs::write(&path, body)?;
            let a = Attachment::of_file(&path, "application/pdf")?;
            a.describe(1, &mut envelope.metadata);
            Some((path, a))
        }
        None => None,
    };
    let signed = envelope.sign(&s.key);
    let at = Instant::now();
    retry(|| {
        if let Some((path, a)) = &attachment {
            s.client.upload_attachment(path, a)?;
        }
        s.client.submit(&signed, &payload)
    })?;
    if let Some((path, _)) = attachment {
        let _ = std::fs::remove_file(path);
    }
    let attachment = attachment_in.is_some();
    Ok((signed.id, Sent { sender: s.unit.clone(), recipient: recipient.clone(), priority, attachment, at }))
}

/// Calls `f` until it succeeds, a node refuses (an error), or 30 s of transport errors passed.
fn retry<T>(mut f: impl FnMut() -> Result<T, exchange_wire::client::ClientError>) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(exchange_wire::client::ClientError::Transport { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A recipient: long-polls its inbox, checks every document's signature and signs for each page.
fn read_inbox(r: Actor, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>, keys: Arc<Mutex<HashMap<UnitAddress, SigningKey>>>) {
    let mut after = 0;
    while !stop.load(Ordering::SeqCst) {
        let page = match r.client.inbox(&r.unit, after, 100, Duration::from_millis(500)) {
            Ok(p) => p,
            Err(exchange_wire::client::ClientError::Transport { .. }) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => {
                ledger.lock().expect("ledger").errors.push(format!("inbox of {}: {e}", r.unit));
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        after = page.next_after;
        let seen = Instant::now();
        let mut receipts = Vec::new();
        for item in page.items {
            let mut is_query = false;
            let problem = (|| -> anyhow::Result<()> {
                let (got, _) = item.message.decode().context("does not decode")?;
                let key = keys.lock().expect("keys").get(&got.envelope.sender).map(|k| k.verifying_key());
                let key = key.with_context(|| format!("from unknown sender {}", got.envelope.sender))?;
                got.verify(&key).context("sender's signature does not verify")?;
                if got.envelope.kind == Kind::Query {
                    // 查询核验: the asked unit's system answers from its inbox, signed with its key.
                    is_query = true;
                    let body = br#"{"alive":true}"#;
                    let answer = exchange_wire::query::answer(r.unit.clone(), got.envelope.sender.clone(), item.id, body).sign(&r.key);
                    retry(|| r.client.answer(&r.unit, &item.id, &answer, body))?;
                    ledger.lock().expect("ledger").answered.insert(item.id, Instant::now());
                    return Ok(());
                }
                receipts.push(signed_for(r.unit.clone(), got.envelope.sender.clone(), item.id, got.envelope.priority).sign(&r.key));
                Ok(())
            })();
            if is_query && problem.is_ok() {
                continue;
            }
            let mut l = ledger.lock().expect("ledger");
            match (problem, l.sent.get(&item.id).map(|s| s.recipient == r.unit)) {
                (Err(e), _) => l.errors.push(format!("{} in the inbox of {}: {e:#}", item.id, r.unit)),
                (Ok(()), Some(false)) => l.strangers.push(format!("{} in the inbox of {}", item.id, r.unit)),
                // Ours (or, if not yet recorded, checked against the ledger when reconciling).
                (Ok(()), _) => l.delivered.entry(item.id).or_insert((0, seen)).0 += 1,
            }
        }
        if receipts.is_empty() {
            continue;
        }
        match retry(|| r.client.sign_for_batch(&r.unit, &receipts)) {
            Ok(answer) => {
                for result in answer.results {
                    if let SignForResult::Refused(e) = result {
                        ledger.lock().expect("ledger").errors.push(format!("sign-for at {} refused: {} {}", r.unit, e.error, e.message));
                    }
                }
            }
            Err(e) => ledger.lock().expect("ledger").errors.push(format!("sign-for at {}: {e:#}", r.unit)),
        }
    }
}

/// Asks one query per second, round the (asker, asked) pairs, until `stop`.
fn ask_queries(askers: Vec<(Actor, UnitAddress)>, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) {
    let mut n = 0usize;
    while !askers.is_empty() && !stop.load(Ordering::SeqCst) {
        let (asker, asked) = &askers[n % askers.len()];
        let body = format!(r#"{{"id_number":"4401{:014}"}}"#, n);
        let deadline = exchange_wire::now_ms() + 60_000;
        let query = exchange_wire::query::question(asker.unit.clone(), asked.clone(), "person.alive", deadline, body.as_bytes()).sign(&asker.key);
        let at = Instant::now();
        match retry(|| asker.client.ask(&query, body.as_bytes())) {
            Ok(_) => {
                ledger.lock().expect("ledger").queries.insert(query.id, (asker.unit.clone(), at));
            }
            Err(e) => ledger.lock().expect("ledger").errors.push(format!("{} asks {asked}: {e:#}", asker.unit)),
        }
        n += 1;
        let next = at + Duration::from_secs(1);
        while !stop.load(Ordering::SeqCst) && Instant::now() < next {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Suspends a unit, rotates a unit's key and adds a unit, spaced over the first half of the run;
/// times each until all nodes hold it, and checks each took effect. Returns one line per change.
#[allow(clippy::too_many_arguments)]
fn directory_changes(
    net: &LocalNetwork,
    suspended: &UnitAddress,
    rotated: &UnitAddress,
    home_of_new: &NodeId,
    recipients: &[UnitAddress],
    ledger: &Arc<Mutex<Ledger>>,
    keys: &Arc<Mutex<HashMap<UnitAddress, SigningKey>>>,
    duration: Duration,
) -> Vec<String> {
    let gap = duration / 6;
    let mut lines = Vec::new();
    let mut record = |what: String, outcome: anyhow::Result<String>| match outcome {
        Ok(detail) => lines.push(format!("{what:<52} {detail}")),
        Err(e) => {
            lines.push(format!("{what:<52} FAILED: {e:#}"));
            ledger.lock().expect("ledger").errors.push(format!("{what}: {e:#}"));
        }
    };
    let city_recipient = recipients.iter().find(|u| u.node_part() == "gz").cloned().unwrap_or_else(|| recipients[0].clone());

    std::thread::sleep(gap);
    record(format!("suspend {suspended}"), (|| {
        let node = net.node(suspended.node_part());
        let took = timed_change(net, &node.id, || node.admin().suspend_unit(suspended).map(|_| ()))?;
        // Its next submission is refused: the suspension is in force.
        let s = actor(net, suspended)?;
        match send_one(&s, &city_recipient, Priority::Routine, 0, None) {
            Ok((id, _)) => bail!("a document of the suspended unit was accepted ({id})"),
            Err(e) if e.downcast_ref::<exchange_wire::client::ClientError>().and_then(|c| c.code()) == Some("unit-suspended") => {}
            Err(e) => bail!("refused, but not as suspended: {e:#}"),
        }
        Ok(format!("{:>6.0} ms; its next submission refused", took.as_secs_f64() * 1000.0))
    })());

    std::thread::sleep(gap);
    record(format!("rotate the key of {rotated}"), (|| {
        let node = net.node(rotated.node_part());
        let new_key = exchange_wire::keys::generate();
        let rotate = exchange_wire::api::RotateKey { public_key: exchange_wire::PublicKey(new_key.verifying_key()), overlap_secs: 0, revoke_old: false };
        let took = timed_change(net, &node.id, || node.admin().rotate_unit_key(rotated, &rotate).map(|_| ()))?;
        keys.lock().expect("keys").insert(rotated.clone(), new_key.clone());
        let s = Actor { unit: rotated.clone(), key: new_key, client: net.client_for(rotated) };
        let (id, sent) = send_one(&s, &city_recipient, Priority::Express, 0, None)?;
        ledger.lock().expect("ledger").sent.insert(id, sent);
        Ok(format!("{:>6.0} ms; a document signed with the new key sent", took.as_secs_f64() * 1000.0))
    })());

    std::thread::sleep(gap);
    let added: UnitAddress = match format!("{home_of_new}/devnet-new-street").parse() {
        Ok(a) => a,
        Err(e) => {
            record("add a unit".into(), Err(anyhow::anyhow!("{e}")));
            return lines;
        }
    };
    record(format!("add {added}"), (|| {
        let node = net.node(home_of_new.as_str());
        let key = exchange_wire::keys::generate();
        let new = exchange_wire::api::NewUnit {
            address: added.clone(),
            name: "新设街道办事处（演练）".into(),
            kind: "street-office".into(),
            uscc: None,
            public_key: exchange_wire::PublicKey(key.verifying_key()),
        };
        let took = timed_change(net, &node.id, || node.admin().add_unit(&new).map(|_| ()))?;
        let token = node.admin().issue_token(&exchange_wire::api::IssueToken { unit: added.clone(), label: "devnet".into() })?.token;
        keys.lock().expect("keys").insert(added.clone(), key.clone());
        let s = Actor { unit: added.clone(), key, client: node.client().with_token(token) };
        let (id, sent) = send_one(&s, &city_recipient, Priority::Urgent, 0, None)?;
        let mut l = ledger.lock().expect("ledger");
        l.sent.insert(id, sent);
        l.added.insert(added.clone(), s.client.clone());
        Ok(format!("{:>6.0} ms; its first document sent", took.as_secs_f64() * 1000.0))
    })());
    lines
}

/// Makes a change on `owner`'s unit segment and waits until every node holds that segment's new
/// version; returns the time from the request to the last node.
fn timed_change(
    net: &LocalNetwork,
    owner: &NodeId,
    change: impl FnOnce() -> Result<(), exchange_wire::client::ClientError>,
) -> anyhow::Result<Duration> {
    let version_at = |n: &crate::launcher::LocalNode| -> Option<u64> {
        n.admin().directory().ok()?.segments.into_iter().find(|s| s.owner == owner.as_str()).map(|s| s.version)
    };
    let home = net.node(owner.as_str());
    let before = version_at(home).context("the home node's directory")?;
    let t0 = Instant::now();
    change()?;
    let target = version_at(home).context("the home node's directory")?;
    if target <= before {
        bail!("the change did not make a new version of {owner}'s segment ({before})");
    }
    let mut behind: BTreeMap<&NodeId, ()> = net.nodes.keys().map(|k| (k, ())).collect();
    let deadline = t0 + Duration::from_secs(30);
    while !behind.is_empty() {
        behind.retain(|id, _| version_at(&net.nodes[*id]).is_none_or(|v| v < target));
        if behind.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("{} nodes still lack version {target} of {owner}'s segment after 30 s", behind.len());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(t0.elapsed())
}
