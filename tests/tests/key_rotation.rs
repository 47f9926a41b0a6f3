//! Keys that change, across real node processes: a node's key rotated while documents flow (every
//! document arrives once, every receipt comes back, the old key is refused after the overlap); a
//! compromised node key revoked by the root (every node refuses its identity, and the city refuses a
//! unit segment and a delivery report signed with it, each counted and audited);
//! the root key handed over (every node pins the new key, keeps it across a restart, and refuses a
//! tree signed with the old one).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use exchange_devnet::launcher::LocalNetwork;
use exchange_node_core::directory::segments;
use exchange_node_core::network::protocol::SegmentParcel;
use exchange_tests::rogue_peer::RoguePeer;
use exchange_tests::*;
use exchange_wire::directory::Segment;
use exchange_wire::{NodeId, PublicKey, UnitAddress};

fn admin(at: &AdminAt, args: &[&str]) -> std::process::Output {
    at.command().args(args).output().expect("run exchange-admin")
}

fn key_file(net: &LocalNetwork, id: &str) -> PathBuf {
    net.root.join(format!("{id}.key"))
}

/// Stages a fresh key for `id` the way its operator does (`exchange-node keygen --out
/// <key_file>.next`) and returns its public key, as the command printed it.
fn stage_key(net: &LocalNetwork, id: &str) -> PublicKey {
    let next = net.root.join(format!("{id}.key.next"));
    let out = std::process::Command::new(node_binary()).args(["keygen", "--out"]).arg(&next).output().expect("run exchange-node keygen");
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("public_key")).expect("keygen prints the public key");
    line.split('"').nth(1).unwrap().parse().expect("a public key")
}

fn public_of(path: &Path) -> PublicKey {
    PublicKey(exchange_wire::keys::read(path).expect("read a key file").verifying_key())
}

fn peer_of(key: &PublicKey) -> libp2p::PeerId {
    exchange_node_core::directory::peer_id_of(key)
}

fn units_of(net: &LocalNetwork, node: &str) -> Vec<UnitAddress> {
    net.unit_keys.keys().filter(|u| u.node_part() == node).take(2).cloned().collect()
}

/// Waits until node `id` signs with `key` (its health names the key's libp2p identity).
fn wait_taken(net: &LocalNetwork, id: &str, key: &PublicKey) {
    let peer = peer_of(key).to_string();
    wait_for(&format!("{id} taking its new key"), Duration::from_secs(20), || {
        (net.node(id).client().health().ok()?.peer_id == peer).then_some(())
    });
}

fn audit_has(net: &LocalNetwork, id: &str, event: &str, peer: &str) -> bool {
    let audit = net.node(id).admin().audit_page(0, 100_000).unwrap();
    audit.entries.iter().any(|e| e.category == "refusal" && e.event == event && e.peer.as_deref() == Some(peer))
}

#[test]
fn a_node_key_rotates_while_documents_flow_and_the_old_key_is_refused_after_the_overlap() {
    let net = three_nodes(FAST_RETRY);
    let old_key_file = net.root.join("gz.yuexiu.key.old");
    std::fs::copy(key_file(&net, "gz.yuexiu"), &old_key_file).unwrap();
    let (yuexiu, haizhu) = (units_of(&net, "gz.yuexiu"), units_of(&net, "gz.haizhu"));
    let readers = exchange_tests::load::receivers(&net, &[yuexiu[1].clone(), haizhu[1].clone()]);
    // Both ways through the city: a unit of 越秀 sends, another receives (越秀's delivery reports are
    // signed with its node key, old or new).
    let to_haizhu = Stream::start(&net, &yuexiu[..1], &haizhu[1..], 40, "轮换前后");
    let to_yuexiu = Stream::start(&net, &haizhu[..1], &yuexiu[1..], 40, "轮换前后");
    wait_for("documents flowing", Duration::from_secs(30), || (to_yuexiu.snapshot().accepted.len() >= 40).then_some(()));

    let units_version = |at: &str| {
        net.node(at).admin().directory().unwrap().segments.iter().find(|s| s.owner == "gz.yuexiu").map(|s| s.version).unwrap()
    };
    let before = units_version("gz.haizhu");
    let new = stage_key(&net, "gz.yuexiu");
    let overlap_secs = 6;
    let rotated_at = Instant::now();
    let out = admin(
        &AdminAt::of(net.node("gz")),
        &["nodes", "rotate-key", "gz.yuexiu", "--public-key", &new.to_hex(), "--overlap-secs", &overlap_secs.to_string()],
    );
    assert!(out.status.success(), "nodes rotate-key: {}", String::from_utf8_lossy(&out.stderr));
    wait_taken(&net, "gz.yuexiu", &new);
    assert_eq!(public_of(&key_file(&net, "gz.yuexiu")), new, "the key file holds the new key");
    assert!(!net.root.join("gz.yuexiu.key.next").exists(), "the staged key was moved into place");
    // 越秀 signed its units again with the new key; 海珠 holds them.
    wait_for("越秀's units signed with the new key reaching 海珠", Duration::from_secs(10), || (units_version("gz.haizhu") > before).then_some(()));

    // Documents keep flowing after the change, through links with the new identity.
    let count = to_yuexiu.snapshot().accepted.len();
    wait_for("documents after the rotation", Duration::from_secs(30), || (to_yuexiu.snapshot().accepted.len() >= count + 40).then_some(()));
    let (sent_a, sent_b) = (to_haizhu.finish(), to_yuexiu.finish());
    assert!(sent_a.refused.is_empty() && sent_b.refused.is_empty(), "nothing refused: {:?} {:?}", sent_a.refusal_examples, sent_b.refusal_examples);
    reconcile(&net, &sent_a, Duration::from_secs(60));
    reconcile(&net, &sent_b, Duration::from_secs(60));
    drop(readers);
    for n in net.nodes.values() {
        assert!(n.admin().directory_verify().unwrap().ok, "{} verifies its directory", n.id);
        let listed = n.admin().nodes().unwrap().nodes.into_iter().find(|r| r.id.as_str() == "gz.yuexiu").unwrap();
        assert_eq!(listed.public_key, new, "{} lists the new key", n.id);
    }

    // After the overlap, the old identity is refused: a peer presenting it gets no link at the city.
    let rest = Duration::from_secs(overlap_secs + 2).saturating_sub(rotated_at.elapsed());
    std::thread::sleep(rest); // the overlap is a span of wall-clock time; nothing to wait on but the clock
    let refused_before = metric(&net.node("gz").client(), "exchange_connections_refused_total", &[("direction", "inbound")]);
    let rogue = RoguePeer::start(&old_key_file);
    let city = peer_of(&public_of(&key_file(&net, "gz")));
    assert!(!rogue.try_connect(city, net.node("gz").p2p_port, Duration::from_secs(3)), "the city refuses the old key's identity");
    wait_for("the refusal counted and audited at the city", Duration::from_secs(10), || {
        (metric(&net.node("gz").client(), "exchange_connections_refused_total", &[("direction", "inbound")]) > refused_before
            && audit_has(&net, "gz", "key-expired", "gz.yuexiu"))
        .then_some(())
    });
}

#[test]
fn a_revoked_node_key_is_refused_by_every_node() {
    let mut net = three_nodes(FAST_RETRY);
    let stolen = net.root.join("gz.haizhu.key.stolen");
    std::fs::copy(key_file(&net, "gz.haizhu"), &stolen).unwrap();
    let before = net.node("gz").admin().directory().unwrap();
    let new = stage_key(&net, "gz.haizhu");
    let out = admin(&AdminAt::of(net.node("gz")), &["nodes", "rotate-key", "gz.haizhu", "--public-key", &new.to_hex(), "--revoke-old"]);
    assert!(out.status.success(), "nodes rotate-key --revoke-old: {}", String::from_utf8_lossy(&out.stderr));
    // 海珠's old identity is refused at once, so the tree cannot reach it: its operator has it take
    // the staged key, and the new identity brings it the tree.
    let out = admin(&AdminAt::of(net.node("gz.haizhu")), &["directory", "take-key"]);
    assert!(out.status.success(), "directory take-key: {}", String::from_utf8_lossy(&out.stderr));
    wait_taken(&net, "gz.haizhu", &new);
    wait_for("海珠 holding the tree that lists its new key", Duration::from_secs(20), || {
        let nodes = net.node("gz.haizhu").admin().nodes().ok()?.nodes;
        (nodes.iter().find(|n| n.id.as_str() == "gz.haizhu")?.public_key == new).then_some(())
    });
    wait_for("越秀 knowing the revocation", Duration::from_secs(10), || {
        (net.node("gz.yuexiu").admin().directory().unwrap().version > before.version).then_some(())
    });

    // The stolen key's identity gets no link, neither at the city (海珠's neighbour) nor at 越秀.
    let rogue = RoguePeer::start(&stolen);
    for id in ["gz", "gz.yuexiu"] {
        let peer = peer_of(&public_of(&key_file(&net, id)));
        assert!(!rogue.try_connect(peer, net.node(id).p2p_port, Duration::from_secs(3)), "{id} refuses the revoked key");
        wait_for(&format!("{id} auditing the refusal"), Duration::from_secs(10), || audit_has(&net, id, "key-revoked", "gz.haizhu").then_some(()));
        assert!(metric(&net.node(id).client(), "exchange_messages_rejected_total", &[("reason", "key-revoked"), ("kind", "unknown")]) >= 1.0);
        assert!(metric(&net.node(id).client(), "exchange_connections_refused_total", &[("direction", "inbound")]) >= 1.0);
    }

    // 海珠 works on with its new key: a document from 越秀 reaches it and the receipt comes back.
    let (from, to) = (units_of(&net, "gz.yuexiu")[0].clone(), units_of(&net, "gz.haizhu")[0].clone());
    let doc = document(&net.unit_keys[&from], from.as_str(), &[to.as_str()], &[], b"after the revocation", "吊销之后");
    net.client_for(&from).submit(&doc, b"after the revocation").unwrap();
    let item = wait_for("delivery in 海珠", Duration::from_secs(20), || read_inbox(&net.client_for(&to), &to).into_iter().find(|i| i.id == doc.id));
    sign_for(&net.client_for(&to), &net.unit_keys[&to], &to, &item);
    wait_for("the receipt back at 越秀", Duration::from_secs(20), || {
        let s = net.client_for(&from).status(&doc.id).ok()?;
        s.recipients.iter().all(|r| r.receipt.is_some()).then_some(())
    });

    // A unit segment of 海珠 signed with the stolen key (a forged street office), pushed to the city
    // over a link it accepts (海珠's new identity), is refused whatever time it claims.
    let stolen_key = exchange_wire::keys::read(&stolen).unwrap();
    let haizhu: NodeId = "gz.haizhu".parse().unwrap();
    let mut units = exchange_wire::directory::UnitSegment { node: haizhu.clone(), version: 1_000, units: vec![] };
    units.units.push(exchange_wire::directory::UnitRecord {
        address: "gz.haizhu/forged-office".parse().unwrap(),
        name: "伪造".into(),
        kind: String::new(),
        uscc: None,
        status: exchange_wire::directory::UnitStatus::Active,
        keys: vec![],
    });
    let forged = segments::sign(Segment::Units(units), &haizhu, &stolen_key);
    // The city keeps at most two connections per peer, and the running 海珠 may hold both: stop it, so
    // that the link the city accepts from 海珠's new identity is the test's own.
    net.stop("gz.haizhu").unwrap();
    let pusher = RoguePeer::start(&key_file(&net, "gz.haizhu"));
    let city = peer_of(&public_of(&key_file(&net, "gz")));
    assert!(pusher.try_connect(city, net.node("gz").p2p_port, Duration::from_secs(20)), "海珠's new key is accepted");
    let answer = pusher.push_directory(
        city,
        vec![SegmentParcel { header: forged.signed.bytes.clone(), signature: forged.signed.signature.to_vec(), payload: forged.payload.clone() }],
    );
    assert!(answer[0].starts_with("refused: key-revoked"), "{answer:?}");
    assert!(metric(&net.node("gz").client(), "exchange_directory_rejections_total", &[("reason", "key-revoked")]) >= 1.0);
    assert!(!net.node("gz").admin().units(Some(&haizhu)).unwrap().units.iter().any(|u| u.address.as_str() == "gz.haizhu/forged-office"));

    // A delivery report for that document signed with the stolen key, handed over on 海珠's admitted
    // link, is refused as key-revoked (backdated, too), counted and audited.
    let mut report_env = exchange_wire::receipt::DeliveryReport {
        message_id: doc.id,
        node: haizhu.clone(),
        delivered: vec![exchange_wire::receipt::Delivered { unit: to.clone(), at_ms: 1 }],
        hops: vec![],
    }
    .envelope(from.clone(), exchange_wire::Priority::Routine);
    report_env.0.created_at_ms = 1;
    let forged = exchange_tests::rogue_peer::parcel(&report_env.0.sign(&stolen_key), &report_env.1, vec![from.clone()]);
    let answer = pusher.hand_over(city, vec![forged]);
    assert!(
        matches!(&answer.results[..], [exchange_node_core::network::protocol::ParcelResult::Refused { code, .. }] if code == "key-revoked"),
        "{:?}",
        answer.results
    );
    assert_eq!(metric(&net.node("gz").client(), "exchange_messages_rejected_total", &[("reason", "key-revoked"), ("kind", "delivery-report")]), 1.0);
    let audit = net.node("gz").admin().audit_page(0, 100_000).unwrap();
    assert!(audit.entries.iter().any(|e| e.category == "refusal" && e.event == "key-revoked" && e.message_id.is_some()), "the refused report is audited");
}

#[test]
fn the_root_key_is_handed_over_and_every_node_pins_the_new_one() {
    let mut net = three_nodes(FAST_RETRY);
    let old_root_file = net.root.join("gz.key.old");
    std::fs::copy(key_file(&net, "gz"), &old_root_file).unwrap();
    let old_root = public_of(&old_root_file);
    let new_root = stage_key(&net, "gz");
    let out = admin(&AdminAt::of(net.node("gz")), &["directory", "hand-over-root", "--public-key", &new_root.to_hex(), "--overlap-secs", "30"]);
    assert!(out.status.success(), "directory hand-over-root: {}", String::from_utf8_lossy(&out.stderr));
    for id in ["gz", "gz.yuexiu", "gz.haizhu"] {
        wait_for(&format!("{id} pinning the new root key"), Duration::from_secs(20), || {
            (net.node(id).admin().directory().ok()?.root_key == new_root.to_hex()).then_some(())
        });
    }
    wait_taken(&net, "gz", &new_root);

    // A restart keeps the new pin, though the configuration still names the old key.
    net.stop("gz.yuexiu").unwrap();
    net.start("gz.yuexiu").unwrap();
    assert_eq!(net.node("gz.yuexiu").admin().directory().unwrap().root_key, new_root.to_hex());
    assert!(net.node("gz.yuexiu").admin().directory_verify().unwrap().ok, "the chain from the configured key verifies");

    // A tree signed by the old root key is refused now, even pushed by the old root identity itself
    // (still in its overlap, so the link is taken and the segment judged).
    let tree = net.node("gz").admin().nodes().unwrap().nodes;
    let forged = segments::sign(
        Segment::Tree(exchange_wire::directory::NodeTree { version: 10_000, nodes: tree }),
        &"gz".parse().unwrap(),
        &exchange_wire::keys::read(&old_root_file).unwrap(),
    );
    let rogue = RoguePeer::start(&old_root_file);
    let yuexiu = peer_of(&public_of(&key_file(&net, "gz.yuexiu")));
    assert!(rogue.try_connect(yuexiu, net.node("gz.yuexiu").p2p_port, Duration::from_secs(10)), "the old root identity is in its overlap");
    let answer = rogue.push_directory(
        yuexiu,
        vec![SegmentParcel { header: forged.signed.bytes.clone(), signature: forged.signed.signature.to_vec(), payload: forged.payload.clone() }],
    );
    assert!(answer[0].starts_with("refused: segment-signature"), "{answer:?}");
    assert!(audit_has(&net, "gz.yuexiu", "segment-signature", "gz"));

    // A change the new root signs reaches every node, and documents flow.
    let office_key = exchange_wire::keys::generate();
    let public = PublicKey(office_key.verifying_key()).to_hex();
    let out = admin(
        &AdminAt::of(net.node("gz")),
        &["nodes", "add", "--id", "gz.tianhe", "--parent", "gz", "--tier", "district", "--name", "天河区交换平台", "--public-key", &public],
    );
    assert!(out.status.success(), "nodes add after the handover: {}", String::from_utf8_lossy(&out.stderr));
    for id in ["gz.yuexiu", "gz.haizhu"] {
        wait_for(&format!("{id} taking the tree the new root signed"), Duration::from_secs(20), || {
            net.node(id).admin().nodes().ok()?.nodes.iter().any(|n| n.id.as_str() == "gz.tianhe").then_some(())
        });
    }
    let (from, to) = (units_of(&net, "gz.yuexiu")[0].clone(), units_of(&net, "gz.haizhu")[0].clone());
    let doc = document(&net.unit_keys[&from], from.as_str(), &[to.as_str()], &[], b"after the handover", "移交之后");
    net.client_for(&from).submit(&doc, b"after the handover").unwrap();
    wait_for("delivery in 海珠", Duration::from_secs(20), || read_inbox(&net.client_for(&to), &to).into_iter().find(|i| i.id == doc.id));
    assert_ne!(old_root, new_root);
}
