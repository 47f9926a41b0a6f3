//! Base-data sharing (数据共享交换) commands: the catalog (show; publish on the root), publishing a
//! record as its topic's owner, asking for a subscription, deciding requests as the owner or an
//! operator, and reading and acknowledging a subscriber's stream.
//!
//! Records and subscription requests are signed here with the unit's key; the node only receives
//! signed envelopes.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use exchange_wire::sharing::{self, Catalog, CatalogSeed, DecideRequest, StartFrom, SubscriptionView};
use exchange_wire::{UnitAddress, keys};

use crate::agency::MAX_WAIT_SECS;
use crate::endpoint::{ActingFor, Ctx};
use crate::output::{Table, emit, emit_json, format_ms, short_id, truncate};

/// `catalog ...`
#[derive(Subcommand)]
pub enum CatalogCommand {
    /// The catalog the node holds: topics, owners, sharing conditions (agency API; any unit token).
    Show(CatalogShowArgs),
    /// Sign and publish a catalog file (configs/catalog.toml format) on the root node (admin API).
    Publish(CatalogPublishArgs),
}

#[derive(Args)]
pub struct CatalogShowArgs {
    /// The unit whose token is given (any unit may read the catalog).
    #[arg(long, value_name = "UNIT")]
    pub unit: UnitAddress,
    /// Also print each topic's JSON Schema.
    #[arg(long)]
    pub schemas: bool,
}

#[derive(Args)]
pub struct CatalogPublishArgs {
    /// The catalog file: `version`, then `[[topic]]` entries (see configs/catalog.toml). Raise its
    /// version above the one the network holds.
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
}

/// `data ...`
#[derive(Subcommand)]
pub enum DataCommand {
    /// Publish a record (a JSON file) as the owner of its topic (一数一源).
    Publish(PublishArgs),
    /// Ask a topic's owner for a subscription.
    Subscribe(SubscribeArgs),
    /// A unit's subscriptions with their state, cursor and progress.
    Subscriptions(UnitArgs),
    /// Subscriptions to the topics a unit owns (with --operator: all held at the node, admin API).
    Subscribers(SubscribersArgs),
    /// Grant a pending subscription request, as the topic's owner or (--operator) an operator.
    Grant(DecideArgs),
    /// Refuse a pending subscription request, with a reason.
    Refuse(DecideArgs),
    /// Read a subscriber's records in sequence order (from its cursor, or --after to replay).
    Records(RecordsArgs),
    /// Acknowledge a subscriber's records up to a sequence number (moves its durable cursor).
    Ack(AckArgs),
}

#[derive(Args)]
pub struct PublishArgs {
    /// The owner unit's key file.
    #[arg(long, value_name = "FILE")]
    pub key: std::path::PathBuf,
    /// The publishing unit: the topic's owner.
    #[arg(long, value_name = "UNIT")]
    pub from: UnitAddress,
    /// The topic, such as person.death.
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    /// The subject key: citizen ID number, unified social credit code, ...
    #[arg(long, value_name = "KEY")]
    pub subject: String,
    /// The record, a JSON file matching the topic's schema.
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
}

#[derive(Args)]
pub struct SubscribeArgs {
    /// The subscribing unit's key file.
    #[arg(long, value_name = "FILE")]
    pub key: std::path::PathBuf,
    /// The subscribing unit.
    #[arg(long, value_name = "UNIT")]
    pub unit: UnitAddress,
    /// The topic.
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    /// Where to start: beginning, now, seq:N or time:MS (milliseconds since the epoch).
    #[arg(long, value_name = "START", default_value = "beginning", value_parser = |s: &str| s.parse::<StartFrom>())]
    pub from: StartFrom,
    /// Why the unit needs the data (read by whoever approves).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub purpose: String,
}

#[derive(Args)]
pub struct UnitArgs {
    /// The unit.
    #[arg(long, value_name = "UNIT")]
    pub unit: UnitAddress,
}

#[derive(Args)]
pub struct SubscribersArgs {
    /// The owner unit (agency API, with its token).
    #[arg(long, value_name = "UNIT", required_unless_present = "operator")]
    pub unit: Option<UnitAddress>,
    /// Every subscription held at the node, through the admin API.
    #[arg(long)]
    pub operator: bool,
}

#[derive(Args)]
pub struct DecideArgs {
    /// The owner unit deciding (agency API, with its token).
    #[arg(long, value_name = "UNIT", required_unless_present = "operator")]
    pub owner: Option<UnitAddress>,
    /// Decide as an operator of the owner's node, through the admin API.
    #[arg(long)]
    pub operator: bool,
    /// The topic.
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    /// The unit that asked.
    #[arg(long, value_name = "UNIT")]
    pub subscriber: UnitAddress,
    /// The reason, sent to the subscriber (required to refuse).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Args)]
pub struct RecordsArgs {
    /// The subscribing unit.
    #[arg(long, value_name = "UNIT")]
    pub unit: UnitAddress,
    /// The topic.
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    /// Start after this sequence number (replay); default: after the cursor.
    #[arg(long, value_name = "SEQ")]
    pub after: Option<u64>,
    /// At most this many records.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Wait up to this many seconds for a record when none is there.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub wait: u64,
}

#[derive(Args)]
pub struct AckArgs {
    /// The subscribing unit.
    #[arg(long, value_name = "UNIT")]
    pub unit: UnitAddress,
    /// The topic.
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    /// Every record up to and including this sequence number has been processed.
    #[arg(long, value_name = "SEQ")]
    pub seq: u64,
}

/// Reads a catalog file as the root node does (schemas as JSON text or `schema_file`).
pub fn read_catalog(path: &Path) -> Result<Catalog> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let seed: CatalogSeed = toml::from_str(&text).with_context(|| format!("{} is not a catalog file", path.display()))?;
    seed.into_catalog(path.parent().unwrap_or(Path::new("."))).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub fn catalog(ctx: &Ctx, c: &CatalogCommand) -> Result<()> {
    match c {
        CatalogCommand::Show(a) => {
            let node = ctx.agency(ActingFor::Unit(&a.unit))?;
            let catalog: Catalog = node.call(|c| c.catalog())?;
            if ctx.json {
                return emit_json(&catalog);
            }
            let mut t = Table::new(&["TOPIC", "TITLE", "OWNER", "SHARING", "SUBJECT"]);
            for topic in &catalog.topics {
                t.push(vec![
                    topic.name.clone(),
                    topic.title.clone(),
                    topic.owner.to_string(),
                    topic.sharing.as_str().into(),
                    topic.subject_field.clone().unwrap_or_default(),
                ]);
            }
            eprintln!("catalog version {}", catalog.version);
            let mut text = t.render();
            if a.schemas {
                for topic in &catalog.topics {
                    text.push_str(&format!("\n{} schema:\n{}\n", topic.name, serde_json::to_string_pretty(&topic.schema)?));
                }
            }
            emit(&text)
        }
        CatalogCommand::Publish(a) => {
            let catalog = read_catalog(&a.file)?;
            let answer = ctx.admin()?.call(|c| c.publish_catalog(&catalog))?;
            if ctx.json {
                return emit_json(&answer);
            }
            emit(&format!("{}\n", answer.message))
        }
    }
}

fn subscriptions_table(list: &[SubscriptionView]) -> Table {
    let mut t = Table::new(&["TOPIC", "SUBSCRIBER", "OWNER", "STATE", "FROM", "FIRST", "CURSOR", "RECEIVED", "DECIDED BY", "REASON"]);
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    for s in list {
        t.push(vec![
            s.topic.clone(),
            s.subscriber.to_string(),
            s.owner.to_string(),
            s.state.clone(),
            s.from.clone(),
            opt(s.first_seq),
            opt(s.cursor),
            opt(s.received_up_to),
            s.decided_by.clone().unwrap_or_default(),
            truncate(s.reason.as_deref().unwrap_or(""), 40),
        ]);
    }
    t
}

fn show_subscription(ctx: &Ctx, v: &SubscriptionView) -> Result<()> {
    if ctx.json {
        return emit_json(v);
    }
    emit(&subscriptions_table(std::slice::from_ref(v)).render())
}

pub fn data(ctx: &Ctx, c: &DataCommand) -> Result<()> {
    match c {
        DataCommand::Publish(a) => publish(ctx, a),
        DataCommand::Subscribe(a) => subscribe(ctx, a),
        DataCommand::Subscriptions(a) => {
            let node = ctx.agency(ActingFor::Unit(&a.unit))?;
            let list = node.call(|c| c.subscriptions(&a.unit))?;
            if ctx.json {
                return emit_json(&list);
            }
            emit(&subscriptions_table(&list.subscriptions).render())
        }
        DataCommand::Subscribers(a) => {
            let list = match (&a.unit, a.operator) {
                (_, true) => ctx.admin()?.call(|c| c.admin_subscriptions())?,
                (Some(u), false) => ctx.agency(ActingFor::Unit(u))?.call(|c| c.subscribers(u))?,
                (None, false) => bail!("give --unit OWNER, or --operator"),
            };
            if ctx.json {
                return emit_json(&list);
            }
            emit(&subscriptions_table(&list.subscriptions).render())
        }
        DataCommand::Grant(a) => decide(ctx, a, true),
        DataCommand::Refuse(a) => decide(ctx, a, false),
        DataCommand::Records(a) => records(ctx, a),
        DataCommand::Ack(a) => {
            let node = ctx.agency(ActingFor::Unit(&a.unit))?;
            let view = node.call(|c| c.ack(&a.unit, &a.topic, a.seq))?;
            show_subscription(ctx, &view)
        }
    }
}

/// `data publish`: signs a record of a topic with the publishing unit's key and publishes it.
fn publish(ctx: &Ctx, a: &PublishArgs) -> Result<()> {
    let key = keys::read(&a.key)?;
    let payload = std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    if serde_json::from_slice::<serde_json::Value>(&payload).is_err() {
        bail!("{} is not JSON: a record is a JSON object matching its topic's schema", a.file.display());
    }
    let signed = sharing::record(a.from.clone(), &a.topic, &a.subject, &payload).sign(&key);
    let node = ctx.agency(ActingFor::Unit(&a.from))?;
    let answer = node.call(|c| c.publish(&signed, &payload))?;
    if ctx.json {
        return emit_json(&answer);
    }
    if answer.duplicate {
        eprintln!("already published as {} #{}: nothing new was sent", answer.topic, answer.seq);
    } else {
        eprintln!("published as {} #{} to {} subscribers", answer.topic, answer.seq, answer.subscribers);
    }
    emit(&format!("{}\n", answer.id))
}

/// `data subscribe`: asks the topic's owner for a subscription, signed with the subscriber's key.
fn subscribe(ctx: &Ctx, a: &SubscribeArgs) -> Result<()> {
    let key = keys::read(&a.key)?;
    let node = ctx.agency(ActingFor::Unit(&a.unit))?;
    let catalog: Catalog = node.call(|c| c.catalog())?;
    let Some(topic) = catalog.topic(&a.topic) else {
        bail!("topic {} is not in the node's catalog (version {}): see `exchange-admin catalog show`", a.topic, catalog.version);
    };
    let request = sharing::subscription_request(a.unit.clone(), topic.owner.clone(), &a.topic, a.from, &a.purpose).sign(&key);
    let view = node.call(|c| c.subscribe(&request, a.purpose.as_bytes()))?;
    if !ctx.json {
        eprintln!(
            "request sent to {} (sharing {}); follow it with `exchange-admin data subscriptions --unit {}`",
            topic.owner,
            topic.sharing.as_str(),
            a.unit
        );
    }
    show_subscription(ctx, &view)
}

/// `data records`: a page of the records a subscription received.
fn records(ctx: &Ctx, a: &RecordsArgs) -> Result<()> {
    let node = ctx.agency(ActingFor::Unit(&a.unit))?;
    let wait = Duration::from_secs(a.wait.min(MAX_WAIT_SECS));
    let page = node.call(|c| c.records(&a.unit, &a.topic, a.after, a.limit, wait))?;
    if ctx.json {
        return emit_json(&page);
    }
    let mut t = Table::new(&["SEQ", "SUBJECT", "PUBLISHED", "PUBLISHER", "RECORD"]);
    for i in &page.items {
        let id = i.record.envelope.message_id().to_hex();
        t.push(vec![i.seq.to_string(), i.subject.clone(), format_ms(i.published_at_ms), i.record.envelope.sender.to_string(), short_id(&id).into()]);
    }
    if page.held_back > 0 {
        eprintln!("{} later records are held back until an earlier one arrives", page.held_back);
    }
    eprintln!("cursor {}; next page: --after {}", page.cursor, page.next_after);
    emit(&t.render())
}

fn decide(ctx: &Ctx, a: &DecideArgs, grant: bool) -> Result<()> {
    if !grant && a.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        bail!("give --reason: the subscriber is told why it was refused");
    }
    let req = DecideRequest { topic: a.topic.clone(), subscriber: a.subscriber.clone(), grant, reason: a.reason.clone() };
    let view = match (&a.owner, a.operator) {
        (_, true) => ctx.admin()?.call(|c| c.admin_decide(&req))?,
        (Some(owner), false) => ctx.agency(ActingFor::Unit(owner))?.call(|c| c.decide(owner, &req))?,
        (None, false) => bail!("give --owner UNIT, or --operator"),
    };
    show_subscription(ctx, &view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        data: DataCommand,
    }

    fn parse(args: &[&str]) -> Result<DataCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("data").chain(args.iter().copied())).map(|c| c.data)
    }

    #[test]
    fn subscribe_takes_every_kind_of_start_and_refuses_others() {
        let base = ["subscribe", "--key", "k", "--unit", "gz/statistics", "--topic", "person.death"];
        let with = |from: &str| parse(&[&base[..], &["--from", from]].concat());
        for (text, want) in [("beginning", StartFrom::Beginning), ("now", StartFrom::Now), ("seq:5", StartFrom::Seq(5)), ("time:1700000000000", StartFrom::Time(1_700_000_000_000))] {
            let Ok(DataCommand::Subscribe(a)) = with(text) else { panic!("{text} parses") };
            assert_eq!(a.from, want);
        }
        assert!(with("yesterday").is_err());
        let Ok(DataCommand::Subscribe(a)) = parse(&base) else { panic!("default start") };
        assert_eq!(a.from, StartFrom::Beginning, "from the beginning by default");
    }

    #[test]
    fn deciding_needs_an_owner_or_the_operator_flag() {
        assert!(parse(&["grant", "--topic", "person.marriage", "--subscriber", "gz/statistics"]).is_err());
        assert!(parse(&["grant", "--operator", "--topic", "person.marriage", "--subscriber", "gz/statistics"]).is_ok());
        assert!(parse(&["refuse", "--owner", "gz.yuexiu/civil-affairs", "--topic", "person.marriage", "--subscriber", "gz/statistics", "--reason", "无需要"]).is_ok());
    }

    #[test]
    fn the_example_catalog_reads_as_the_root_reads_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/catalog.toml");
        let catalog = read_catalog(&path).unwrap();
        assert_eq!(catalog.topics.len(), 9);
        assert_eq!(catalog.topic("person.divorce").unwrap().sharing, exchange_wire::sharing::Sharing::NotShared);
    }
}
