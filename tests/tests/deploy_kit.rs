//! `exchange-node deploy-kit` as an operator uses it: from configs/guangzhou.toml and a hosts file,
//! one folder per machine with the node's configuration, key and units seed (the root's tree seed
//! too) and the agencies' keys. Tried in place on this machine: three of the kit's nodes are started
//! exactly as written, and a document crosses them with the kit's agency keys.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use exchange_tests::*;
use exchange_wire::api::IssueToken;
use exchange_wire::client::ApiClient;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn port() -> u16 {
    exchange_devnet::launcher::free_port().unwrap()
}

/// Node processes started from the kit, killed when the test ends however it ends.
struct Running(Vec<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}

#[test]
fn a_deploy_kit_installs_and_carries_a_document() {
    let work = tempfile::tempdir().unwrap();
    let topology = Path::new(ROOT).join("configs/guangzhou.toml");
    let text = std::fs::read_to_string(&topology).unwrap();
    let nodes: Vec<String> = text.lines().filter_map(|l| l.strip_prefix("id = \"")).map(|l| l.trim_end_matches('"').to_owned()).collect();
    assert_eq!(nodes.len(), 13);
    let mut ports = BTreeMap::new();
    let mut hosts = String::from("# Every node on this machine, for a trial of the kit.\n");
    for id in &nodes {
        let (p2p, api, admin) = (port(), port(), port());
        hosts.push_str(&format!(
            "[node.\"{id}\"]\naddress = \"127.0.0.1\"\np2p_port = {p2p}\napi_listen = \"127.0.0.1:{api}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n"
        ));
        ports.insert(id.clone(), (api, admin));
    }
    let hosts_file = work.path().join("hosts.toml");
    std::fs::write(&hosts_file, hosts).unwrap();
    let kit = work.path().join("kit");
    let make = |hosts: &Path| {
        Command::new(node_binary())
            .args(["deploy-kit", "--in-place", "--topology"])
            .arg(&topology)
            .arg("--hosts")
            .arg(hosts)
            .arg("--out")
            .arg(&kit)
            .output()
            .unwrap()
    };
    let made = make(&hosts_file);
    assert!(made.status.success(), "deploy-kit failed: {}", String::from_utf8_lossy(&made.stderr));

    // One folder per node; every key 0600; 209 agency keys; the root alone has the tree seed.
    let files = files_under(&kit);
    let keys: Vec<&PathBuf> = files.iter().filter(|p| p.extension().is_some_and(|e| e == "key")).collect();
    assert_eq!(keys.iter().filter(|p| p.to_string_lossy().contains("/agency-keys/")).count(), 209);
    assert_eq!(keys.len(), 209 + 13);
    for k in &keys {
        assert_eq!(mode(k), 0o600, "{} is readable by others", k.display());
    }
    let seeds: Vec<&PathBuf> = files.iter().filter(|p| p.ends_with("tree-seed.toml")).collect();
    assert_eq!(seeds.len(), 1);
    assert!(seeds[0].starts_with(kit.join("gz")), "the tree seed belongs to the root node");
    assert_eq!(std::fs::read_to_string(seeds[0]).unwrap().matches("[[node]]").count(), 13);
    for id in &nodes {
        let config = kit.join(format!("{id}/etc/exchange/{id}.toml"));
        exchange_node_core::config::NodeConfig::load(&config).unwrap_or_else(|e| panic!("{id}: the node refuses its kit configuration: {e:#}"));
    }

    // It never overwrites keys that may have been handed out; a hosts file missing a node is named.
    let again = make(&hosts_file);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("never overwrites"), "{again:?}");
    let partial = work.path().join("partial.toml");
    std::fs::write(&partial, "[node.\"gz\"]\naddress = \"10.20.0.1\"\n").unwrap();
    let _ = std::fs::remove_dir_all(work.path().join("other"));
    let refused = Command::new(node_binary())
        .args(["deploy-kit", "--topology"])
        .arg(&topology)
        .arg("--hosts")
        .arg(&partial)
        .arg("--out")
        .arg(work.path().join("other"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("no entry for") && stderr.contains("gz.yuexiu"), "{stderr}");
    assert!(!work.path().join("other").exists(), "nothing written when refused");

    // Three of the nodes started exactly as the kit wrote them.
    let mut running = Running(Vec::new());
    for id in ["gz", "gz.yuexiu", "gz.haizhu"] {
        let log = std::fs::File::create(work.path().join(format!("{id}.log"))).unwrap();
        let child = Command::new(node_binary())
            .arg("run")
            .arg("--config")
            .arg(kit.join(format!("{id}/etc/exchange/{id}.toml")))
            .env_remove("EXCHANGE_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        running.0.push(child);
    }
    let admin = |id: &str| {
        let token_file = kit.join(format!("{id}/var/lib/exchange/{id}/admin.token"));
        let token = wait_for(&format!("{id}'s operator token"), Duration::from_secs(30), || std::fs::read_to_string(&token_file).ok());
        ApiClient::new(&format!("http://127.0.0.1:{}", ports[id].1)).with_token(token.trim())
    };
    let agency = |unit: &exchange_wire::UnitAddress| {
        let id = unit.node_part();
        let issued = wait_for(&format!("a token for {unit}"), Duration::from_secs(30), || {
            admin(id).issue_token(&IssueToken { unit: unit.clone(), label: "deploy-kit test".into() }).ok()
        });
        ApiClient::new(&format!("http://127.0.0.1:{}", ports[id].0)).with_token(issued.token)
    };
    let unit_key = |unit: &exchange_wire::UnitAddress| {
        let name = unit.as_str().rsplit('/').next().unwrap();
        exchange_wire::keys::read(&kit.join(format!("{}/agency-keys/{name}.key", unit.node_part()))).unwrap()
    };
    let (sender, recipient) = (unit("gz.yuexiu/liurong-street"), unit("gz.haizhu/civil-affairs"));
    let (from, to) = (agency(&sender), agency(&recipient));
    let doc = document(&unit_key(&sender), sender.as_str(), &[recipient.as_str()], &[], b"installed from the kit", "部署");
    // The first submissions may find 海珠's units not yet known at 越秀 (the directory is spreading).
    wait_for("越秀 takes the document", Duration::from_secs(30), || from.submit(&doc, b"installed from the kit").ok());
    let item = wait_for("delivered at 海珠", Duration::from_secs(30), || read_inbox(&to, &recipient).into_iter().find(|i| i.id == doc.id));
    let (got, payload) = item.message.decode().unwrap();
    got.verify(&unit_key(&sender).verifying_key()).unwrap();
    assert_eq!(payload, b"installed from the kit");
}
