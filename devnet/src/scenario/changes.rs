//! Directory changes during the scenario: a unit suspended, a unit's key rotated, a unit added;
//! each timed from the request until every node holds the new version of its node's unit segment,
//! and each checked to take effect (the suspended unit is refused, the others send a document).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use exchange_wire::{NodeId, Priority, UnitAddress};

use super::traffic::send_one;
use super::{Actor, Keys, Shared, actor};
use crate::launcher::LocalNetwork;

/// The units the changes apply to (none of them takes part in the traffic).
pub(super) struct Targets {
    pub suspended: UnitAddress,
    pub rotated: UnitAddress,
    /// The node that gets a new street office.
    pub home_of_new: NodeId,
}

/// Suspends a unit, rotates a unit's key and adds a unit, spaced over the first half of the run;
/// times each until all nodes hold it, and checks each took effect. Returns one line per change.
pub(super) fn run(net: &LocalNetwork, targets: &Targets, to: &UnitAddress, ledger: &Shared, keys: &Keys, duration: Duration) -> Vec<String> {
    let Targets { suspended, rotated, home_of_new } = targets;
    let gap = duration / 6;
    let mut lines = Vec::new();
    let mut record = |what: String, outcome: anyhow::Result<String>| match outcome {
        Ok(detail) => lines.push(format!("{what:<52} {detail}")),
        Err(e) => {
            lines.push(format!("{what:<52} FAILED: {e:#}"));
            ledger.lock().expect("ledger").errors.push(format!("{what}: {e:#}"));
        }
    };
    let city_recipient = to.clone();

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
