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
//! * Base data (数据共享): the root signs the catalog; a death, a marriage (granted on approval) and a
//!   move-out reach their subscribers in other districts and the city ([`base_data`]).
//! * Meanwhile the directory changes: a street office is suspended, a unit's key is rotated, a new
//!   street office is added; each change is timed until all 13 nodes hold it. The rotated unit and
//!   the new unit then send a document each (the new key, and the new unit, must verify at every hop);
//!   the suspended unit's submission must be refused.
//! * After the traffic: every document must be delivered exactly once to each recipient, every
//!   receipt must be back at the sender's node (`signed-for`) and every query answered. The report
//!   gives delivery latency per priority class, the directory changes' times, and each node's memory,
//!   CPU time and open descriptors at start and end.
//!
//! Parts: [`traffic`] (the threads that act for units), [`changes`] (directory changes),
//! [`reconcile`] (the checks that decide the exit code), [`report`] (what is printed).

mod base_data;
mod changes;
mod reconcile;
mod report;
mod traffic;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ed25519_dalek::SigningKey;
use exchange_wire::{MessageId, NodeId, Priority, UnitAddress};

use crate::launcher::LocalNetwork;
use crate::process_stats::ProcessStats;

/// The ledger, shared by every thread of the scenario.
type Shared = Arc<Mutex<Ledger>>;
/// Every unit's current signing key (a rotation replaces one, an addition adds one): recipients
/// check senders' signatures with these.
type Keys = Arc<Mutex<HashMap<UnitAddress, SigningKey>>>;

/// A document the scenario sent.
#[derive(Debug, Clone)]
pub(super) struct Sent {
    pub(super) sender: UnitAddress,
    pub(super) recipient: UnitAddress,
    pub(super) priority: Priority,
    pub(super) attachment: bool,
    pub(super) at: Instant,
}

/// What the senders and recipients share.
#[derive(Default)]
pub(super) struct Ledger {
    pub(super) sent: HashMap<MessageId, Sent>,
    /// Deliveries seen per message, and when the first was seen (a delivery may be seen before its
    /// sender recorded the submission's answer).
    pub(super) delivered: HashMap<MessageId, (u32, Instant)>,
    /// Inbox items that are no document of this scenario (must stay empty).
    pub(super) strangers: Vec<String>,
    /// Submissions or receipts the nodes refused, or transport errors that did not recover.
    pub(super) errors: Vec<String>,
    /// Queries (查询核验) asked: asker and when; answered: when the asked unit's answer was accepted.
    pub(super) queries: HashMap<MessageId, (UnitAddress, Instant)>,
    pub(super) answered: HashMap<MessageId, Instant>,
    /// Clients of units added during the run (the launcher holds no token for them).
    pub(super) added: HashMap<UnitAddress, exchange_wire::client::ApiClient>,
}

/// Who acts: keys and tokens of the units the scenario uses.
pub(super) struct Actor {
    pub(super) unit: UnitAddress,
    pub(super) key: SigningKey,
    pub(super) client: exchange_wire::client::ApiClient,
}

pub(super) fn actor(net: &LocalNetwork, unit: &UnitAddress) -> anyhow::Result<Actor> {
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

pub(super) const PRIORITIES: [Priority; 3] = [Priority::Urgent, Priority::Express, Priority::Routine];

pub(super) fn class(p: Priority) -> &'static str {
    match p {
        Priority::Urgent => "特急 urgent",
        Priority::Express => "加急 express",
        Priority::Routine => "平件 routine",
    }
}

/// Who does what in the scenario.
struct Cast {
    senders: Vec<Actor>,
    recipients: Vec<Actor>,
    /// Each district's public-security bureau and the unit it asks (the next district's recipient).
    askers: Vec<(Actor, UnitAddress)>,
    changes: changes::Targets,
    /// The city's recipient: documents of the rotated and the added unit go there.
    city_recipient: UnitAddress,
}

impl Cast {
    fn choose(net: &LocalNetwork) -> anyhow::Result<Cast> {
        let nodes: Vec<&NodeId> = net.nodes.keys().collect();
        let (mut senders, mut recipients) = (Vec::new(), Vec::new());
        for n in &nodes {
            let s = pick(net, n, &["street-office", "department"], &[])?;
            recipients.push(actor(net, &pick(net, n, &["bureau", "department"], &[&s])?)?);
            senders.push(actor(net, &s)?);
        }
        let districts: Vec<&&NodeId> = nodes.iter().filter(|n| n.as_str() != "gz").collect();
        let mut askers = Vec::new();
        for (i, d) in districts.iter().enumerate() {
            let asker: UnitAddress = format!("{d}/public-security").parse()?;
            let next = districts[(i + 1) % districts.len()];
            let asked = recipients.iter().find(|r| r.unit.node_part() == next.as_str()).map(|r| r.unit.clone());
            if net.unit_keys.contains_key(&asker)
                && let Some(asked) = asked
            {
                askers.push((actor(net, &asker)?, asked));
            }
        }
        let busy: Vec<&UnitAddress> = senders.iter().chain(&recipients).map(|a| &a.unit).chain(askers.iter().map(|(a, _)| &a.unit)).collect();
        let changes = changes::Targets {
            suspended: pick(net, &"gz.liwan".parse()?, &["street-office"], &busy)?,
            rotated: pick(net, &"gz.tianhe".parse()?, &["street-office"], &busy)?,
            home_of_new: "gz.baiyun".parse()?,
        };
        let city_recipient = recipients.iter().find(|r| r.unit.node_part() == "gz").context("no recipient on the city node")?.unit.clone();
        Ok(Cast { senders, recipients, askers, changes, city_recipient })
    }
}

/// Runs the scenario on a started, converged network: traffic for `duration` at `rate` documents
/// per second, directory changes meanwhile, then the reconciliation. Fails unless it reconciles.
pub fn run(net: &LocalNetwork, duration: Duration, rate: f64) -> anyhow::Result<()> {
    let cast = Cast::choose(net)?;
    println!("\n== Scenario: {} s of mixed traffic at {rate}/s, {} senders, {} recipients", duration.as_secs(), cast.senders.len(), cast.recipients.len());
    println!("   senders:    {}", cast.senders.iter().map(|a| a.unit.as_str()).collect::<Vec<_>>().join(", "));
    println!("   recipients: {}", cast.recipients.iter().map(|a| a.unit.as_str()).collect::<Vec<_>>().join(", "));
    let before = ProcessStats::of_network(net);
    let ledger: Shared = Arc::new(Mutex::new(Ledger::default()));
    let keys: Keys = Arc::new(Mutex::new(net.unit_keys.clone().into_iter().collect()));
    let started = Instant::now();

    let mut traffic = traffic::Traffic::start(cast.senders, cast.recipients, cast.askers, rate, net.root.join("scenario"), &ledger, &keys);
    let changes = changes::run(net, &cast.changes, &cast.city_recipient, &ledger, &keys, duration);
    let shared = base_data::run(net, &ledger, &keys);
    if let Some(rest) = duration.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    let attachments = traffic.stop_sending()?;
    let total = ledger.lock().expect("ledger").sent.len();
    println!("   traffic stopped after {:.1} s: {total} documents submitted ({attachments} with attachments)", started.elapsed().as_secs_f64());

    let reconciled = reconcile::everything(net, &ledger, started);
    traffic.stop_reading()?;
    let times = reconciled?;
    let after = ProcessStats::of_network(net);
    let l = ledger.lock().expect("ledger");
    report::print(&l, &times, &changes, &shared, net.nodes.len());
    println!("\n   node processes at the start and at the end of the scenario:");
    print!("{}", ProcessStats::table(&before, &after, started.elapsed()));
    reconcile::no_errors(&l)
}
