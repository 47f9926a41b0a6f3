//! Laying out a network: a key and ports for each chosen node, the root's tree seed, each node's
//! units seed and configuration.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use ed25519_dalek::SigningKey;
use exchange_wire::{NodeId, PublicKey, UnitAddress};

use super::{LocalNetwork, LocalNode, Placement, Topology, free_port, write_key};

impl LocalNetwork {
    /// [`LocalNetwork::create_placed`] from another topology than the shipped one (for example the
    /// Guangzhou topology with units added up to the network's real size).
    pub fn create_from(
        binary: &Path,
        root: Option<&Path>,
        topology: Topology,
        node_ids: &[&str],
        extra_config: &str,
        placement: impl Fn(&NodeId) -> Placement,
    ) -> anyhow::Result<LocalNetwork> {
        let (root, tmp) = match root {
            Some(r) => {
                std::fs::create_dir_all(r)?;
                (r.to_path_buf(), None)
            }
            None => {
                let t = tempfile::Builder::new().prefix("exchange-net-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let (planned, root_id) = plan_nodes(&topology, node_ids, placement)?;
        std::fs::write(root.join("tree-seed.toml"), tree_seed(&topology, &planned))?;
        let root_key = PublicKey(planned[&root_id].key.verifying_key());
        let mut unit_keys = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        for (id, p) in &planned {
            write_key(&root.join(format!("{id}.key")), &p.key, &format!("node {id}"))?;
            std::fs::write(root.join(format!("{id}.units.toml")), units_seed(&topology, id, &mut unit_keys))?;
            let config_path = root.join(format!("{id}.toml"));
            std::fs::write(&config_path, node_config(id, p, &planned, *id == root_id, &root_key, extra_config))?;
            let (p2p, api, admin) = p.ports;
            nodes.insert(
                id.clone(),
                LocalNode {
                    id: id.clone(),
                    config_path,
                    data_dir: root.join(id.as_str()),
                    log_path: root.join(format!("{id}.log")),
                    api_url: format!("http://127.0.0.1:{api}"),
                    admin_url: format!("http://127.0.0.1:{admin}"),
                    p2p_port: p2p,
                    command_prefix: p.place.command_prefix.clone(),
                    ca_file: None,
                    child: None,
                },
            );
        }
        Ok(LocalNetwork {
            root,
            nodes,
            unit_keys,
            unit_tokens: BTreeMap::new(),
            replicas: BTreeMap::new(),
            topology,
            binary: binary.to_path_buf(),
            keep_alive: Vec::new(),
            _tmp: tmp,
        })
    }
}

/// A node of a network being laid out.
struct Planned {
    key: SigningKey,
    /// Its parent among the chosen nodes.
    parent: Option<NodeId>,
    /// p2p, agency API, admin API.
    ports: (u16, u16, u16),
    place: Placement,
}

impl Planned {
    /// The address other nodes dial.
    fn p2p_host(&self) -> std::net::Ipv4Addr {
        self.place.p2p_host.unwrap_or(std::net::Ipv4Addr::LOCALHOST)
    }
}

/// A key and ports for each chosen node; the chosen nodes must form one tree. Returns them with the
/// root's id.
fn plan_nodes(topology: &Topology, node_ids: &[&str], placement: impl Fn(&NodeId) -> Placement) -> anyhow::Result<(BTreeMap<NodeId, Planned>, NodeId)> {
    let wanted: Vec<NodeId> = node_ids.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    let mut planned = BTreeMap::new();
    for id in &wanted {
        let t = topology.nodes.iter().find(|n| &n.id == id).with_context(|| format!("node {id} is not in the topology"))?;
        // Keep the tree connected within the chosen nodes.
        let parent = t.parent.clone().filter(|p| wanted.contains(p));
        planned.insert(id.clone(), Planned { key: exchange_wire::keys::generate(), parent, ports: (free_port()?, free_port()?, free_port()?), place: placement(id) });
    }
    let roots: Vec<&NodeId> = planned.iter().filter(|(_, p)| p.parent.is_none()).map(|(id, _)| id).collect();
    let [root_id] = roots.as_slice() else { bail!("the chosen nodes must form one tree (roots: {roots:?})") };
    let root_id = (*root_id).clone();
    Ok((planned, root_id))
}

/// `tree-seed.toml`: the node tree the root signs on its first start.
fn tree_seed(topology: &Topology, planned: &BTreeMap<NodeId, Planned>) -> String {
    let mut tree_seed = String::from("# The node tree the root signs on its first start (written by the launcher).\n\n");
    for (id, p) in planned {
        let t = topology.nodes.iter().find(|n| &n.id == id).expect("checked");
        tree_seed.push_str(&format!(
            "[[node]]\nid = \"{id}\"\nname = \"{}\"\ntier = \"{}\"\n{}public_key = \"{}\"\naddresses = [\"/ip4/{}/tcp/{}\"]\n\n",
            t.name,
            t.tier,
            p.parent.as_ref().map(|p| format!("parent = \"{p}\"\n")).unwrap_or_default(),
            PublicKey(p.key.verifying_key()),
            p.p2p_host(),
            p.ports.0,
        ));
    }
    tree_seed
}

/// `<node>.units.toml`: the units node `id` signs on its first start, each with a new key (kept in
/// `unit_keys`).
fn units_seed(topology: &Topology, id: &NodeId, unit_keys: &mut BTreeMap<UnitAddress, SigningKey>) -> String {
    let mut units_seed = format!("# The units node {id} signs on its first start (written by the launcher).\n\n");
    for u in topology.units.iter().filter(|u| u.address.node_part() == id.as_str()) {
        let key = exchange_wire::keys::generate();
        units_seed.push_str(&u.seed_entry(&key));
        unit_keys.insert(u.address.clone(), key);
    }
    units_seed
}

/// `<node>.toml`: node `id`'s configuration, with its parent's address and `extra_config` appended.
fn node_config(id: &NodeId, p: &Planned, planned: &BTreeMap<NodeId, Planned>, is_root: bool, root_key: &PublicKey, extra_config: &str) -> String {
    let (p2p, api, admin) = p.ports;
    let parent_address = match &p.parent {
        Some(parent) => {
            let pp = &planned[parent];
            format!(
                "parent_address = \"/ip4/{}/tcp/{}/p2p/{}\"\n",
                pp.p2p_host(),
                pp.ports.0,
                exchange_node_core::directory::peer_id_of(&PublicKey(pp.key.verifying_key()))
            )
        }
        None => String::new(),
    };
    let listen_host = p.p2p_host();
    let tree_line = if is_root { "tree_seed = \"tree-seed.toml\"\n" } else { "" };
    format!(
        "node_id = \"{id}\"\nkey_file = \"{id}.key\"\ndata_dir = \"{id}\"\nroot_key = \"{root_key}\"\n{parent_address}\n\
         [directory]\n{tree_line}units_seed = \"{id}.units.toml\"\n\n\
         [p2p]\nlisten = \"/ip4/{listen_host}/tcp/{p2p}\"\nidle_timeout_secs = 3600\nrequest_timeout_secs = 30\n\n\
         [api]\nlisten = \"127.0.0.1:{api}\"\nmax_wait_ms = 60000\nwebhooks_to_loopback = true\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n{extra_config}\n"
    )
}

