//! `exchange-node deploy-kit` as an operator uses it: from a topology and a hosts file, one folder
//! per machine with the node's configuration, key and units seed (the root's tree seed too) and the
//! agencies' keys. Tried in place on this machine: nodes are started exactly as the kit wrote them,
//! and documents cross them with the kit's agency keys, in the Guangzhou network and in a tree one
//! level deeper (a street-level node below a district node).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use exchange_tests::*;
use exchange_wire::api::{IssueToken, RecipientState};
use exchange_wire::client::ApiClient;
use exchange_wire::receipt::signed_for;
use exchange_wire::UnitAddress;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn port() -> u16 {
    exchange_devnet::launcher::free_port().unwrap()
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

fn deploy_kit(topology: &Path, hosts: &Path, out: &Path, in_place: bool) -> Output {
    let mut c = Command::new(node_binary());
    c.arg("deploy-kit").arg("--topology").arg(topology).arg("--hosts").arg(hosts).arg("--out").arg(out);
    if in_place {
        c.arg("--in-place");
    }
    c.output().unwrap()
}

/// A kit written in place for every node of a topology, all on loopback, and the nodes started from it.
struct Kit {
    work: tempfile::TempDir,
    dir: PathBuf,
    /// Per node: agency API and admin API ports.
    ports: BTreeMap<String, (u16, u16)>,
    running: Vec<Child>,
}

impl Kit {
    fn write(topology: &Path) -> Kit {
        let work = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(topology).unwrap();
        let nodes: Vec<String> = text.lines().filter_map(|l| l.strip_prefix("id = \"")).map(|l| l.trim_end_matches('"').to_owned()).collect();
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
        let dir = work.path().join("kit");
        let made = deploy_kit(topology, &hosts_file, &dir, true);
        assert!(made.status.success(), "deploy-kit failed: {}", String::from_utf8_lossy(&made.stderr));
        Kit { work, dir, ports, running: Vec::new() }
    }

    fn config(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}/etc/exchange/{id}.toml"))
    }

    /// Starts a node exactly as the kit wrote it.
    fn start(&mut self, id: &str) {
        let log = std::fs::File::create(self.work.path().join(format!("{id}.log"))).unwrap();
        let child = Command::new(node_binary())
            .arg("run")
            .arg("--config")
            .arg(self.config(id))
            .env_remove("EXCHANGE_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.running.push(child);
    }

    fn admin(&self, id: &str) -> ApiClient {
        let token_file = self.dir.join(format!("{id}/var/lib/exchange/{id}/admin.token"));
        let token = wait_for(&format!("{id}'s operator token"), Duration::from_secs(30), || std::fs::read_to_string(&token_file).ok());
        ApiClient::new(&format!("http://127.0.0.1:{}", self.ports[id].1)).with_token(token.trim())
    }

    /// The agency API of `unit`'s node, with a token its operator issued.
    fn agency(&self, unit: &UnitAddress) -> ApiClient {
        let id = unit.node_part();
        let issued = wait_for(&format!("a token for {unit}"), Duration::from_secs(30), || {
            self.admin(id).issue_token(&IssueToken { unit: unit.clone(), label: "deploy-kit test".into() }).ok()
        });
        ApiClient::new(&format!("http://127.0.0.1:{}", self.ports[id].0)).with_token(issued.token)
    }

    /// The unit's key from the kit's agency-keys folder.
    fn unit_key(&self, unit: &UnitAddress) -> ed25519_dalek::SigningKey {
        let name = unit.as_str().rsplit('/').next().unwrap();
        exchange_wire::keys::read(&self.dir.join(format!("{}/agency-keys/{name}.key", unit.node_part()))).unwrap()
    }

    /// `from` sends a document to `to`, which verifies it with the kit's key and signs for it; the
    /// sender's node shows the signed receipt.
    fn carry(&self, from: &UnitAddress, to: &UnitAddress, text: &str) {
        let (sender, recipient) = (self.agency(from), self.agency(to));
        let doc = document(&self.unit_key(from), from.as_str(), &[to.as_str()], &[], text.as_bytes(), "部署");
        // The first submissions may find the recipient not yet known (the directory is spreading).
        wait_for(&format!("{from} submits"), Duration::from_secs(30), || sender.submit(&doc, text.as_bytes()).ok());
        let item = wait_for(&format!("delivered to {to}"), Duration::from_secs(30), || read_inbox(&recipient, to).into_iter().find(|i| i.id == doc.id));
        let (got, payload) = item.message.decode().unwrap();
        got.verify(&self.unit_key(from).verifying_key()).unwrap();
        assert_eq!(payload, text.as_bytes());
        let receipt = signed_for(to.clone(), from.clone(), doc.id, doc.envelope.priority).sign(&self.unit_key(to));
        recipient.sign_for(to, &doc.id, &receipt).unwrap();
        wait_for(&format!("{to}'s receipt back at {from}'s node"), Duration::from_secs(30), || {
            sender.status(&doc.id).ok()?.recipients.iter().all(|r| r.state == RecipientState::SignedFor).then_some(())
        });
    }
}

impl Drop for Kit {
    fn drop(&mut self) {
        for c in &mut self.running {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_deploy_kit_installs_and_carries_a_document() {
    let topology = Path::new(ROOT).join("configs/guangzhou.toml");
    let mut kit = Kit::write(&topology);
    assert_eq!(kit.ports.len(), 13);

    // One folder per node; every key 0600; 209 agency keys; the root alone has the tree seed.
    let files = files_under(&kit.dir);
    let keys: Vec<&PathBuf> = files.iter().filter(|p| p.extension().is_some_and(|e| e == "key")).collect();
    assert_eq!(keys.iter().filter(|p| p.to_string_lossy().contains("/agency-keys/")).count(), 209);
    assert_eq!(keys.len(), 209 + 13);
    for k in &keys {
        assert_eq!(mode(k), 0o600, "{} is readable by others", k.display());
    }
    let seeds: Vec<&PathBuf> = files.iter().filter(|p| p.ends_with("tree-seed.toml")).collect();
    assert_eq!(seeds.len(), 1);
    assert!(seeds[0].starts_with(kit.dir.join("gz")), "the tree seed belongs to the root node");
    assert_eq!(std::fs::read_to_string(seeds[0]).unwrap().matches("[[node]]").count(), 13);
    for id in kit.ports.keys() {
        exchange_node_core::config::NodeConfig::load(&kit.config(id))
            .unwrap_or_else(|e| panic!("{id}: the node refuses its kit configuration: {e:#}"));
    }

    // It never overwrites keys that may have been handed out; a hosts file missing a node is named.
    let again = deploy_kit(&topology, &kit.work.path().join("hosts.toml"), &kit.dir, true);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("never overwrites"), "{again:?}");
    let partial = kit.work.path().join("partial.toml");
    std::fs::write(&partial, "[node.\"gz\"]\naddress = \"10.20.0.1\"\n").unwrap();
    let other = kit.work.path().join("other");
    let refused = deploy_kit(&topology, &partial, &other, false);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("no entry for") && stderr.contains("gz.yuexiu"), "{stderr}");
    assert!(!other.exists(), "nothing written when refused");

    // Three of the nodes, started exactly as the kit wrote them, carry a document and its receipt.
    for id in ["gz", "gz.yuexiu", "gz.haizhu"] {
        kit.start(id);
    }
    kit.carry(&unit("gz.yuexiu/liurong-street"), &unit("gz.haizhu/civil-affairs"), "installed from the kit");
}

/// Routing is not limited to city → district: a street-level node below a district node sends to
/// another district and receives from it, two hops further than the district itself.
#[test]
fn a_street_level_node_below_a_district_carries_documents_both_ways() {
    let work = tempfile::tempdir().unwrap();
    let topology = work.path().join("deeper.toml");
    std::fs::write(
        &topology,
        r#"# City, two districts, and a street-level node below 越秀.
[[node]]
id = "gz"
name = "广州市政务信息交换平台"
tier = "city"

[[node]]
id = "gz.yuexiu"
name = "越秀区交换平台"
tier = "district"
parent = "gz"

[[node]]
id = "gz.yuexiu.liurong"
name = "六榕街道交换节点"
tier = "street"
parent = "gz.yuexiu"

[[node]]
id = "gz.haizhu"
name = "海珠区交换平台"
tier = "district"
parent = "gz"

[[unit]]
address = "gz/civil-affairs"
name = "广州市民政局"
kind = "bureau"

[[unit]]
address = "gz.yuexiu/civil-affairs"
name = "越秀区民政局"
kind = "bureau"

[[unit]]
address = "gz.yuexiu.liurong/office"
name = "六榕街道办事处"
kind = "street-office"

[[unit]]
address = "gz.yuexiu.liurong/huayuan-committee"
name = "六榕街道华园居委会"
kind = "residents-committee"

[[unit]]
address = "gz.haizhu/civil-affairs"
name = "海珠区民政局"
kind = "bureau"
"#,
    )
    .unwrap();
    let mut kit = Kit::write(&topology);
    for id in ["gz", "gz.yuexiu", "gz.yuexiu.liurong", "gz.haizhu"] {
        kit.start(id);
    }
    let (street, other_district) = (unit("gz.yuexiu.liurong/office"), unit("gz.haizhu/civil-affairs"));
    kit.carry(&street, &other_district, "六榕街道 → 海珠区: four hops");
    kit.carry(&other_district, &unit("gz.yuexiu.liurong/huayuan-committee"), "海珠区 → 华园居委会");
    kit.carry(&unit("gz.yuexiu/civil-affairs"), &street, "越秀区 → 六榕街道: one hop down");
}
