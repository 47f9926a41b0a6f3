//! `exchange-node deploy-kit`: from the topology file and the hosts the nodes will run on, every
//! node's installation files, one folder per machine, laid out as they go under `/`:
//!
//! ```text
//! KIT/gz.yuexiu/etc/exchange/gz.yuexiu.toml         the node's configuration
//! KIT/gz.yuexiu/etc/exchange/keys/gz.yuexiu.key     its node key (0600)
//! KIT/gz.yuexiu/etc/exchange/gz.yuexiu.units.toml   the units it signs at its first start
//! KIT/gz/etc/exchange/tree-seed.toml                (root only) the node tree it signs as version 1
//! KIT/gz.yuexiu/agency-keys/<unit>.key              each hosted unit's key (0600), for its agency
//! ```
//!
//! Every node key is generated here, once: the tree seed lists their public keys and each district's
//! configuration names its parent's peer id, so the kit is one consistent set. The agency keys are
//! a convenience for a first installation; an agency may instead make its own and have the operator
//! rotate the unit onto it (`exchange-admin units rotate-key`). The kit never overwrites: it refuses
//! an output folder that exists, so keys already handed out are never silently replaced.
//!
//! With `--in-place`, each node's paths point into its own folder of the kit instead of `/`, so the
//! kit can be started on one machine before it is shipped (tests/tests/deploy_kit.rs does).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use exchange_node_core::directory::peer_id_of;
use exchange_wire::{NodeId, PublicKey};
use serde::Deserialize;

use crate::launcher::{Topology, TopologyNode};

/// `exchange-node deploy-kit` arguments.
#[derive(clap::Args, Debug)]
pub struct DeployKitArgs {
    /// The topology: nodes of the tree and the units they host.
    #[arg(long, default_value = "configs/guangzhou.toml")]
    pub topology: PathBuf,
    /// Where each node runs: `[node."<id>"] address = "<IPv4>"`, and optionally `p2p_port`,
    /// `api_listen`, `admin_listen` (see deploy/README.md).
    #[arg(long)]
    pub hosts: PathBuf,
    /// The folder to write (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Paths in the configurations point into the kit itself (a trial on one machine) instead of `/`.
    #[arg(long)]
    pub in_place: bool,
}

/// One node's host, from the hosts file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// The IPv4 address its neighbours dial (libp2p is built without DNS).
    pub address: Ipv4Addr,
    #[serde(default = "default_p2p_port")]
    pub p2p_port: u16,
    /// The agency API; off loopback it needs TLS files (written as paths under /etc/exchange/tls).
    #[serde(default = "default_api_listen")]
    pub api_listen: String,
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
}

fn default_p2p_port() -> u16 {
    7400
}
fn default_api_listen() -> String {
    "0.0.0.0:8080".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:9080".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsFile {
    node: BTreeMap<NodeId, Host>,
}

/// What the kit holds, for the summary (and tests).
pub struct Kit {
    /// Per node: its folder in the kit and its configuration file (as written).
    pub nodes: BTreeMap<NodeId, (PathBuf, PathBuf)>,
}

/// Writes the kit and prints where each node goes and how its neighbours reach it.
pub fn run(args: DeployKitArgs) -> anyhow::Result<()> {
    let topology_text = std::fs::read_to_string(&args.topology).with_context(|| format!("cannot read {}", args.topology.display()))?;
    let topology: Topology = toml::from_str(&topology_text).with_context(|| format!("{} is not a topology file", args.topology.display()))?;
    let hosts_text = std::fs::read_to_string(&args.hosts).with_context(|| format!("cannot read {}", args.hosts.display()))?;
    let hosts: HostsFile = toml::from_str(&hosts_text).with_context(|| format!("{} is not a hosts file (see deploy/README.md)", args.hosts.display()))?;
    let kit = write(&topology, &hosts.node, &args.out, args.in_place)?;
    println!("deploy kit for {} nodes in {}", kit.nodes.len(), args.out.display());
    for (id, (folder, config)) in &kit.nodes {
        let host = &hosts.node[id];
        println!("  {id:<14} {}:{:<5}  {}  config {}", host.address, host.p2p_port, folder.display(), config.display());
    }
    println!("install each folder's etc/ on its machine (deploy/README.md); hand each agency-keys/ file to its agency");
    Ok(())
}

/// Writes every node's files under `out` (which must not exist).
pub fn write(topology: &Topology, hosts: &BTreeMap<NodeId, Host>, out: &Path, in_place: bool) -> anyhow::Result<Kit> {
    let root_id = check(topology, hosts, out)?;
    let layout = Layout {
        keys: topology.nodes.iter().map(|n| (n.id.clone(), exchange_wire::keys::generate())).collect(),
        hosts,
        absolute_out: std::path::absolute(out)?,
        in_place,
    };
    let tree_seed = layout.tree_seed(topology);
    let mut kit = Kit { nodes: BTreeMap::new() };
    for n in &topology.nodes {
        let id = &n.id;
        let folder = out.join(id.as_str());
        let etc = folder.join("etc/exchange");
        std::fs::create_dir_all(etc.join("keys"))?;
        std::fs::create_dir_all(folder.join("agency-keys"))?;
        let etc_at = layout.install_root(id).join("etc/exchange");
        exchange_wire::keys::write_new(&etc.join(format!("keys/{id}.key")), &layout.keys[id], &format!("node {id}"))?;
        write_units(topology, id, &folder, &etc)?;
        let tree_line = if id == root_id {
            std::fs::write(etc.join("tree-seed.toml"), &tree_seed)?;
            format!("tree_seed = \"{}\"\n", etc_at.join("tree-seed.toml").display())
        } else {
            String::new()
        };
        let config_path = etc.join(format!("{id}.toml"));
        std::fs::write(&config_path, layout.config(n, root_id, &tree_line))?;
        kit.nodes.insert(id.clone(), (folder, config_path));
    }
    Ok(kit)
}

/// Refuses an existing `out` and a hosts file that does not match the topology's nodes; returns
/// the topology's root.
fn check<'t>(topology: &'t Topology, hosts: &BTreeMap<NodeId, Host>, out: &Path) -> anyhow::Result<&'t NodeId> {
    if out.exists() {
        bail!("{} exists: the kit never overwrites keys that may have been handed out; choose a new folder", out.display());
    }
    let missing: Vec<String> = topology.nodes.iter().filter(|n| !hosts.contains_key(&n.id)).map(|n| n.id.to_string()).collect();
    if !missing.is_empty() {
        bail!("the hosts file has no entry for {}: give each node `[node.\"<id>\"] address = \"<IPv4>\"`", missing.join(", "));
    }
    if let Some(extra) = hosts.keys().find(|h| !topology.nodes.iter().any(|n| &n.id == *h)) {
        bail!("the hosts file names {extra}, which the topology does not have");
    }
    let roots: Vec<&NodeId> = topology.nodes.iter().filter(|n| n.parent.is_none()).map(|n| &n.id).collect();
    let [root_id] = roots.as_slice() else { bail!("the topology must have exactly one root node (it has {roots:?})") };
    Ok(*root_id)
}

/// Every node's key, and where each node is reached and installed.
struct Layout<'h> {
    keys: BTreeMap<NodeId, ed25519_dalek::SigningKey>,
    hosts: &'h BTreeMap<NodeId, Host>,
    absolute_out: PathBuf,
    in_place: bool,
}

impl Layout<'_> {
    fn public(&self, id: &NodeId) -> PublicKey {
        PublicKey(self.keys[id].verifying_key())
    }

    /// The libp2p address its neighbours dial.
    fn p2p(&self, id: &NodeId) -> String {
        format!("/ip4/{}/tcp/{}", self.hosts[id].address, self.hosts[id].p2p_port)
    }

    /// Where a node's files live once installed: `/`, or its own folder of the kit.
    fn install_root(&self, id: &NodeId) -> PathBuf {
        if self.in_place { self.absolute_out.join(id.as_str()) } else { PathBuf::from("/") }
    }

    /// The node tree the root signs as version 1 on its first start.
    fn tree_seed(&self, topology: &Topology) -> String {
        let mut tree_seed = String::from("# The node tree the root signs as version 1 on its first start (exchange-node deploy-kit).\n\n");
        for n in &topology.nodes {
            tree_seed.push_str(&format!(
                "[[node]]\nid = \"{}\"\nname = \"{}\"\ntier = \"{}\"\n{}public_key = \"{}\"\naddresses = [\"{}\"]\n\n",
                n.id,
                n.name,
                n.tier,
                n.parent.as_ref().map(|p| format!("parent = \"{p}\"\n")).unwrap_or_default(),
                self.public(&n.id),
                self.p2p(&n.id),
            ));
        }
        tree_seed
    }

    /// Node `n`'s configuration, with paths as installed (`tree_line` names the tree seed at the root).
    fn config(&self, n: &TopologyNode, root_id: &NodeId, tree_line: &str) -> String {
        let id = &n.id;
        let installed = self.install_root(id);
        let etc_at = installed.join("etc/exchange");
        let parent_line = match &n.parent {
            Some(parent) => format!("parent_address = \"{}/p2p/{}\"\n", self.p2p(parent), peer_id_of(&self.public(parent))),
            None => String::new(),
        };
        let host = &self.hosts[id];
        let loopback_api = host.api_listen.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback());
        let tls = if loopback_api {
            String::new()
        } else {
            format!(
                "# Off loopback the agency API speaks HTTPS: install the certificate chain and key here.\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
                etc_at.join(format!("tls/{id}-api.crt")).display(),
                etc_at.join(format!("tls/{id}-api.key")).display()
            )
        };
        format!(
            "# Node {id} ({}), written by exchange-node deploy-kit. configs/city.toml lists every key.\n\
             node_id = \"{id}\"\nkey_file = \"{}\"\ndata_dir = \"{}\"\nroot_key = \"{}\"\n{parent_line}\n\
             [directory]\n{tree_line}units_seed = \"{}\"\n\n\
             [p2p]\nlisten = \"/ip4/0.0.0.0/tcp/{}\"\n\n\
             [api]\nlisten = \"{}\"\n{tls}\n\
             [admin]\nlisten = \"{}\"\n",
            n.name,
            etc_at.join(format!("keys/{id}.key")).display(),
            installed.join(format!("var/lib/exchange/{id}")).display(),
            self.public(root_id),
            etc_at.join(format!("{id}.units.toml")).display(),
            host.p2p_port,
            host.api_listen,
            host.admin_listen,
        )
    }
}

/// Node `id`'s units seed (in `etc`), each unit with a new key written for its agency (in
/// `folder/agency-keys`).
fn write_units(topology: &Topology, id: &NodeId, folder: &Path, etc: &Path) -> anyhow::Result<()> {
    let mut units_seed = format!("# The units node {id} signs on its first start (exchange-node deploy-kit).\n\n");
    for u in topology.units.iter().filter(|u| u.address.node_part() == id.as_str()) {
        let key = exchange_wire::keys::generate();
        let unit_id = u.address.as_str().rsplit('/').next().expect("a unit address has a unit id");
        exchange_wire::keys::write_new(&folder.join(format!("agency-keys/{unit_id}.key")), &key, &format!("unit {}", u.address))?;
        units_seed.push_str(&u.seed_entry(&key));
    }
    std::fs::write(etc.join(format!("{id}.units.toml")), units_seed)?;
    Ok(())
}
