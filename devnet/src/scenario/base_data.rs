//! The base-data scenarios of the seed (数据共享交换), while the documents flow: the root signs the
//! example catalog; a death registered by 越秀区民政局 reaches the city's social-security bureau and
//! 海珠's public-security bureau; a marriage (a topic shared on approval, granted by its owner)
//! reaches 天河's household register (public security); a move-out registered by 越秀's public
//! security reaches the old district's household register (海珠). Each record is checked at every
//! subscriber against the owner's signature and timed from publication to the subscriber.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use exchange_wire::UnitAddress;
use exchange_wire::sharing::{self, DecideRequest, StartFrom};

use super::{Keys, Shared};
use crate::launcher::LocalNetwork;

/// One flow: a topic, its owner, the subscribers and the record the owner publishes.
struct Flow {
    topic: &'static str,
    owner: &'static str,
    subscribers: &'static [&'static str],
    subject: &'static str,
    record: &'static str,
}

const FLOWS: [Flow; 3] = [
    Flow {
        topic: "person.death",
        owner: "gz.yuexiu/civil-affairs",
        subscribers: &["gz/labour-social-security", "gz.haizhu/public-security"],
        subject: "440104193001010011",
        record: r#"{"id_number":"440104193001010011","name":"李四","death_date":"2026-11-20","place":"广州市越秀区"}"#,
    },
    Flow {
        topic: "person.marriage",
        owner: "gz.yuexiu/civil-affairs",
        subscribers: &["gz.tianhe/public-security"],
        subject: "440106199001010022",
        record: r#"{"id_number":"440106199001010022","spouse_id_number":"440104199202020033","registered_on":"2026-11-21","certificate_no":"J440104-2026-000123"}"#,
    },
    Flow {
        topic: "person.move-out",
        owner: "gz.yuexiu/public-security",
        subscribers: &["gz.haizhu/public-security"],
        subject: "440105198003030044",
        record: r#"{"id_number":"440105198003030044","moved_on":"2026-11-22","from_address":"广州市海珠区江南中街道","to_address":"广州市越秀区六榕街道"}"#,
    },
];

fn unit(s: &str) -> anyhow::Result<UnitAddress> {
    s.parse().map_err(|e| anyhow::anyhow!("{s}: {e}"))
}

/// Waits until `check` holds, up to `secs` seconds, or fails with `what`.
fn wait(what: &str, secs: u64, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        if Instant::now() > deadline {
            bail!("{what} within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Runs the three flows; returns one line each. A failure is recorded in the ledger (and fails the
/// scenario) and named in its line.
pub(super) fn run(net: &LocalNetwork, ledger: &Shared, keys: &Keys) -> Vec<String> {
    let mut lines = Vec::new();
    let catalog = (|| -> anyhow::Result<Duration> {
        let catalog = exchange_node_core::sharing::catalog_from_toml(include_str!("../../../configs/catalog.toml"), std::path::Path::new("."))
            .map_err(anyhow::Error::msg)?;
        let t0 = Instant::now();
        net.node("gz").admin().publish_catalog(&catalog)?;
        wait("the catalog did not reach every node", 30, || {
            net.nodes.values().all(|n| n.admin().admin_catalog().is_ok_and(|c| c.version == catalog.version))
        })?;
        Ok(t0.elapsed())
    })();
    match catalog {
        Ok(took) => lines.push(format!("{:<52} {:>6.0} ms", "catalog signed by the root, on all nodes", took.as_secs_f64() * 1000.0)),
        Err(e) => {
            lines.push(format!("catalog: FAILED: {e:#}"));
            ledger.lock().expect("ledger").errors.push(format!("catalog: {e:#}"));
            return lines;
        }
    }
    for flow in &FLOWS {
        let what = format!("{} {} → {}", flow.topic, flow.owner, flow.subscribers.join(", "));
        match one_flow(net, keys, flow) {
            Ok(took) => lines.push(format!("{what:<52} {:>6.0} ms to the last subscriber", took.as_secs_f64() * 1000.0)),
            Err(e) => {
                lines.push(format!("{what}: FAILED: {e:#}"));
                ledger.lock().expect("ledger").errors.push(format!("{what}: {e:#}"));
            }
        }
    }
    lines
}

/// Subscribes, has the owner grant requests waiting for approval, publishes the record, and reads
/// it at every subscriber; returns the time from publication to the last subscriber.
fn one_flow(net: &LocalNetwork, keys: &Keys, flow: &Flow) -> anyhow::Result<Duration> {
    let owner = unit(flow.owner)?;
    let owner_key = keys.lock().expect("keys").get(&owner).cloned().context("the owner's key")?;
    let subscribers: Vec<UnitAddress> = flow.subscribers.iter().map(|s| unit(s)).collect::<Result<_, _>>()?;
    for s in &subscribers {
        let key = keys.lock().expect("keys").get(s).cloned().with_context(|| format!("no key for {s}"))?;
        let purpose = "依法履职所需（演练）";
        let request = sharing::subscription_request(s.clone(), owner.clone(), flow.topic, StartFrom::Beginning, purpose).sign(&key);
        net.client_for(s).subscribe(&request, purpose.as_bytes())?;
    }
    let owner_sees = |s: &UnitAddress| {
        net.client_for(&owner)
            .subscribers(&owner)
            .ok()
            .and_then(|l| l.subscriptions.into_iter().find(|v| v.topic == flow.topic && &v.subscriber == s).map(|v| v.state))
            .unwrap_or_default()
    };
    let granted = |s: &UnitAddress| {
        net.client_for(s)
            .subscriptions(s)
            .is_ok_and(|l| l.subscriptions.iter().any(|v| v.topic == flow.topic && v.state == "granted"))
    };
    for s in &subscribers {
        wait(&format!("{s}'s request did not reach {owner}"), 30, || granted(s) || owner_sees(s) == "pending")?;
        if !granted(s) && owner_sees(s) == "pending" {
            // Shared on approval: the owner's system grants it.
            let decide = DecideRequest { topic: flow.topic.into(), subscriber: s.clone(), grant: true, reason: None };
            match net.client_for(&owner).decide(&owner, &decide) {
                // An open topic's request is pending for a moment before the owner's node grants
                // it by itself: "granted already" is what was wanted.
                Err(e) if e.code() == Some("conflict") => {}
                other => {
                    other?;
                }
            }
        }
        wait(&format!("{s}'s subscription was not granted"), 30, || granted(s))?;
    }
    let payload = flow.record.as_bytes();
    let signed = sharing::record(owner.clone(), flow.topic, flow.subject, payload).sign(&owner_key);
    let t0 = Instant::now();
    net.client_for(&owner).publish(&signed, payload)?;
    for s in &subscribers {
        let page = net.client_for(s).records(s, flow.topic, None, 10, Duration::from_secs(30))?;
        let item = page.items.iter().find(|i| i.subject == flow.subject).with_context(|| format!("{s} received no {} record within 30 s", flow.topic))?;
        let (got, body) = item.record.decode()?;
        got.verify(&owner_key.verifying_key()).with_context(|| format!("the record at {s} does not verify with {owner}'s key"))?;
        if body != payload {
            bail!("the record at {s} differs from what {owner} published");
        }
        net.client_for(s).ack(s, flow.topic, item.seq)?;
    }
    Ok(t0.elapsed())
}
