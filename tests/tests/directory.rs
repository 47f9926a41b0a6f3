//! The signed directory across real node processes: a district node that is not in the tree is
//! refused; the city operator adds it once and every node learns it within seconds; a district
//! operator registers a new street office on its own node and the others route to it; a node that
//! presents a tree signed by the wrong key is refused, counted and audited.

use std::time::{Duration, Instant};

use exchange_devnet::launcher::LocalNetwork;
use exchange_tests::*;
use exchange_wire::api::{IssueToken, NewUnit};
use exchange_wire::PublicKey;

fn admin(at: &AdminAt, args: &[&str]) -> std::process::Output {
    at.command().args(args).output().expect("run exchange-admin")
}

/// Removes the `[[node]]` block of `id` from the launcher's tree seed (the node is then unknown).
fn leave_out_of_tree(net: &LocalNetwork, id: &str) {
    let path = net.root.join("tree-seed.toml");
    let seed = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = seed.split("[[node]]").filter(|b| !b.contains(&format!("id = \"{id}\""))).collect();
    std::fs::write(&path, kept.join("[[node]]")).unwrap();
}

#[test]
fn a_new_district_and_a_new_street_office_reach_every_node() {
    let mut net = LocalNetwork::create(&node_binary(), None, &["gz", "gz.yuexiu", "gz.haizhu", "gz.tianhe"], FAST_RETRY).unwrap();
    leave_out_of_tree(&net, "gz.tianhe");
    for id in ["gz", "gz.yuexiu", "gz.haizhu", "gz.tianhe"] {
        net.start(id).unwrap();
    }
    let city = net.node("gz").client();
    // 天河 is not in the tree: the city refuses its connection and tells it nothing.
    wait_for("the city refusing 天河", Duration::from_secs(20), || {
        (metric(&city, "exchange_connections_refused_total", &[("direction", "inbound")]) >= 1.0).then_some(())
    });
    assert!(net.node("gz.tianhe").admin().directory().unwrap().segments.is_empty(), "an unlisted node learns nothing");
    assert!(net.node("gz.tianhe").admin().readiness().unwrap().checks.iter().any(|c| c.name == "directory" && !c.ok));

    // The city operator adds 天河 once, with the CLI.
    let tianhe_key = exchange_wire::keys::read(&net.root.join("gz.tianhe.key")).unwrap();
    let public = PublicKey(tianhe_key.verifying_key()).to_hex();
    let address = format!("/ip4/127.0.0.1/tcp/{}", net.node("gz.tianhe").p2p_port);
    let started = Instant::now();
    let out = admin(
        &AdminAt::of(net.node("gz")),
        &["nodes", "add", "--id", "gz.tianhe", "--parent", "gz", "--tier", "district", "--name", "天河区交换平台", "--public-key", &public, "--address", &address],
    );
    assert!(out.status.success(), "nodes add: {}", String::from_utf8_lossy(&out.stderr));
    // Every node, 天河 included, ends with the same directory: the tree and four unit segments.
    net.converge(Duration::from_secs(20)).expect("the directory reaches every node");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "the change took {took:?}");
    let versions: Vec<u64> = net.nodes.values().map(|n| n.admin().directory().unwrap().version).collect();
    assert!(versions.windows(2).all(|w| w[0] == w[1]), "{versions:?}");
    assert!(net.node("gz.yuexiu").admin().nodes().unwrap().nodes.iter().any(|n| n.id.as_str() == "gz.tianhe"));

    // A document from 越秀 to a 天河 unit goes through.
    let sender = unit("gz.yuexiu/liurong-street");
    let tianhe_unit = net.unit_keys.keys().find(|u| u.node_part() == "gz.tianhe").unwrap().clone();
    let doc = document(&net.unit_keys[&sender], sender.as_str(), &[tianhe_unit.as_str()], &[], b"to tianhe", "致天河");
    net.client_for(&sender).submit(&doc, b"to tianhe").unwrap();
    wait_for("delivery in 天河", Duration::from_secs(20), || read_inbox(&net.client_for(&tianhe_unit), &tianhe_unit).into_iter().find(|i| i.id == doc.id));

    // The 海珠 operator registers a new street office on 海珠 alone; every node routes to it.
    let office_key = exchange_wire::keys::generate();
    let office = unit("gz.haizhu/pilot-office");
    let haizhu_admin = net.node("gz.haizhu").admin();
    let before = net.node("gz.yuexiu").admin().directory().unwrap().version;
    haizhu_admin
        .add_unit(&NewUnit {
            address: office.clone(),
            name: "海珠区试点办公室".into(),
            kind: "street-office".into(),
            uscc: None,
            public_key: PublicKey(office_key.verifying_key()),
        })
        .unwrap();
    let started = Instant::now();
    wait_for("越秀 knowing the new street office", Duration::from_secs(10), || {
        net.node("gz.yuexiu").admin().units(None).ok()?.units.iter().any(|u| u.address == office).then_some(())
    });
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(net.node("gz.yuexiu").admin().directory().unwrap().version, before + 1);
    let token = haizhu_admin.issue_token(&IssueToken { unit: office.clone(), label: "test".into() }).unwrap().token;
    let doc = document(&net.unit_keys[&sender], sender.as_str(), &[office.as_str()], &[], b"welcome", "欢迎");
    net.client_for(&sender).submit(&doc, b"welcome").unwrap();
    let office_client = net.node("gz.haizhu").client().with_token(token);
    wait_for("delivery to the new office", Duration::from_secs(20), || read_inbox(&office_client, &office).into_iter().find(|i| i.id == doc.id));
    // Only 海珠 may sign 海珠's units: the city operator cannot register one there.
    let err = net.node("gz").admin().add_unit(&NewUnit {
        address: unit("gz.haizhu/forged-office"),
        name: String::new(),
        kind: String::new(),
        uscc: None,
        public_key: PublicKey(office_key.verifying_key()),
    });
    assert_eq!(err.unwrap_err().code(), Some("wrong-node"));
    for n in net.nodes.values() {
        assert!(n.admin().directory_verify().unwrap().ok, "{} verifies its directory", n.id);
    }
}

#[test]
fn a_tree_signed_by_the_wrong_key_is_refused_counted_and_audited() {
    let mut net = three_nodes(FAST_RETRY);
    let city = net.node("gz").client();
    let before = net.node("gz").admin().directory().unwrap();

    // 海珠 restarts believing itself the root: it signs its own tree (its key, not the root's) and
    // presents it to the city.
    net.stop("gz.haizhu").unwrap();
    let haizhu_key = exchange_wire::keys::read(&net.root.join("gz.haizhu.key")).unwrap();
    let forged_root = PublicKey(haizhu_key.verifying_key()).to_hex();
    let seed = std::fs::read_to_string(net.root.join("tree-seed.toml")).unwrap();
    // In the forged tree 海珠 is the root and the city hangs below it.
    let forged: String = seed
        .split("[[node]]")
        .map(|b| {
            if b.contains("id = \"gz.haizhu\"") {
                b.replace("parent = \"gz\"\n", "")
            } else if b.contains("id = \"gz\"\n") {
                b.replace("tier = \"city\"\n", "tier = \"city\"\nparent = \"gz.haizhu\"\n")
            } else {
                b.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("[[node]]");
    std::fs::write(net.root.join("forged-tree.toml"), forged).unwrap();
    let cfg_path = net.node("gz.haizhu").config_path.clone();
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let root_line = cfg.lines().find(|l| l.starts_with("root_key")).unwrap().to_string();
    let forged_cfg = cfg
        .replace(&root_line, &format!("root_key = \"{forged_root}\""))
        .replace("[directory]\n", "[directory]\ntree_seed = \"forged-tree.toml\"\n");
    std::fs::write(&cfg_path, forged_cfg).unwrap();
    net.start("gz.haizhu").unwrap();

    wait_for("the city refusing the forged tree", Duration::from_secs(20), || {
        (metric(&city, "exchange_directory_rejections_total", &[("reason", "segment-signature")]) >= 1.0).then_some(())
    });
    let after = net.node("gz").admin().directory().unwrap();
    assert_eq!(after.version, before.version, "the city's directory is unchanged");
    assert!(net.node("gz").admin().directory_verify().unwrap().ok);
    assert!(net.node("gz.yuexiu").admin().directory_verify().unwrap().ok, "越秀 never saw the forged tree");
    assert_eq!(net.node("gz.yuexiu").admin().directory().unwrap().version, before.version);
    let audit = net.node("gz").admin().audit_page(0, 10_000).unwrap();
    assert!(
        audit.entries.iter().any(|e| e.category == "refusal" && e.event == "segment-signature" && e.peer.as_deref() == Some("gz.haizhu")),
        "the refusal is in the city's audit log"
    );
}
