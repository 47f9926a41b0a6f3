//! A local network of real node processes on loopback, for the demo, the benchmark and the tests.
//!
//! It takes nodes and units from the Guangzhou topology (`configs/guangzhou.toml`), generates a node
//! key per node and a unit key per unit, writes the root's tree seed, each node's units seed and
//! configuration, probes free ports, starts, stops or kills `exchange-node run` processes, waits for
//! the signed directory to reach every node and issues unit API tokens. Dropping it kills every
//! process it started.
//!
//! `layout.rs` lays a network out (keys, ports, seeds, configurations); this file runs it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ed25519_dalek::SigningKey;
use exchange_wire::client::ApiClient;
use exchange_wire::{NodeId, UnitAddress};
use serde::Deserialize;

mod layout;

/// The real topology of Guangzhou's exchange network, shipped with the project.
pub const GUANGZHOU: &str = include_str!("../../../configs/guangzhou.toml");

/// A topology file: nodes of the tree and the units they host.
#[derive(Debug, Clone, Deserialize)]
pub struct Topology {
    #[serde(rename = "node")]
    pub nodes: Vec<TopologyNode>,
    #[serde(rename = "unit")]
    pub units: Vec<TopologyUnit>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TopologyNode {
    pub id: NodeId,
    pub name: String,
    pub tier: String,
    pub parent: Option<NodeId>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TopologyUnit {
    pub address: UnitAddress,
    pub name: String,
    pub kind: String,
}

impl TopologyUnit {
    /// This unit's `[[unit]]` entry in a node's units seed (`<node>.units.toml`), with `key` its
    /// public key; the launcher and the deployment kit write the same file.
    pub fn seed_entry(&self, key: &SigningKey) -> String {
        format!(
            "[[unit]]\naddress = \"{}\"\nname = \"{}\"\nkind = \"{}\"\npublic_key = \"{}\"\n\n",
            self.address,
            self.name,
            self.kind,
            exchange_wire::PublicKey(key.verifying_key())
        )
    }
}

impl Topology {
    pub fn guangzhou() -> Topology {
        toml::from_str(GUANGZHOU).expect("configs/guangzhou.toml parses")
    }
}

/// One node process of the local network.
pub struct LocalNode {
    pub id: NodeId,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub api_url: String,
    pub admin_url: String,
    pub p2p_port: u16,
    /// Program and arguments the node's command line is appended to (for example
    /// `ip netns exec NS`), empty for a plain process. The program must exec the node, so that
    /// [`LocalNode::pid`] is the node's own.
    pub command_prefix: Vec<String>,
    /// The CA (PEM) to trust when `api_url` is `https://` (a node with `api.tls_cert`).
    pub ca_file: Option<PathBuf>,
    child: Option<Child>,
}

impl LocalNode {
    /// The agency API client.
    pub fn client(&self) -> ApiClient {
        match &self.ca_file {
            Some(ca) => ApiClient::with_ca_file(&self.api_url, ca).expect("read the test CA file"),
            None => ApiClient::new(&self.api_url),
        }
    }

    /// The admin API client, with the operator token the node wrote at its first start (none before).
    pub fn admin(&self) -> ApiClient {
        let client = ApiClient::new(&self.admin_url);
        match std::fs::read_to_string(self.admin_token_file()) {
            Ok(token) => client.with_token(token.trim()),
            Err(_) => client,
        }
    }

    /// The operator token file of the admin API (the default, `<data_dir>/admin.token`).
    pub fn admin_token_file(&self) -> PathBuf {
        self.data_dir.join("admin.token")
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Peak resident memory of the running process (VmHWM), in bytes.
    pub fn peak_resident_bytes(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("the node is not running")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmHWM in /proc/<pid>/status")?;
        Ok(kib * 1024)
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("node.db")
    }
}

/// Where a node of a [`LocalNetwork`] runs, when not as a plain process on loopback: tests of
/// partitions run each node in its own network namespace.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// The address the node listens on for other nodes (and is listed at in the node tree);
    /// loopback when `None`. Its agency and admin APIs stay on its own 127.0.0.1.
    pub p2p_host: Option<std::net::Ipv4Addr>,
    /// See [`LocalNode::command_prefix`].
    pub command_prefix: Vec<String>,
}

/// A set of node processes sharing one directory.
pub struct LocalNetwork {
    pub root: PathBuf,
    pub nodes: BTreeMap<NodeId, LocalNode>,
    pub unit_keys: BTreeMap<UnitAddress, SigningKey>,
    /// API tokens issued by [`LocalNetwork::converge`].
    pub unit_tokens: BTreeMap<UnitAddress, String>,
    /// Further replicas of nodes ([`LocalNetwork::add_replica`]), by label (`gz~2`).
    pub replicas: BTreeMap<String, LocalNode>,
    pub topology: Topology,
    /// What must live as long as the network and go after its nodes stopped (a test's scratch
    /// PostgreSQL databases).
    pub keep_alive: Vec<Box<dyn std::any::Any + Send + Sync>>,
    binary: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// Probes a free TCP port on 127.0.0.1 for a node to listen on.
///
/// Ports come from below the kernel's ephemeral range (outgoing connections and `bind(0)` take theirs
/// from that range, so they cannot grab a port between this probe and the node's bind), and each is
/// handed out once per process, so networks started side by side by parallel tests never collide.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Start at a different place in every process, so concurrent test binaries rarely meet.
    let _ = NEXT.compare_exchange(0, 1 + (std::process::id() * 7919) % SPAN, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free TCP port between {FIRST} and {}", FIRST + SPAN)
}

/// Writes a new file readable by its owner only (0600), synced: tokens are secrets like keys.
fn write_private(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(body)?;
    f.sync_all()?;
    Ok(())
}

fn write_key(path: &Path, key: &SigningKey, label: &str) -> anyhow::Result<()> {
    exchange_wire::keys::write_new(path, key, label)?;
    Ok(())
}

impl LocalNetwork {
    /// Lays out a network of `node_ids` (and their units) under `root`, or under a new temporary
    /// folder that is removed on drop. `extra_config` is appended to every node's configuration
    /// (for example a `[relay]` section).
    ///
    /// Every node gets its own key, the root's public key and its parent's address, nothing more:
    /// the root signs the node tree from `tree-seed.toml` on its first start, each node signs its
    /// units from `<node>.units.toml`, and the directory spreads along the tree.
    pub fn create(binary: &Path, root: Option<&Path>, node_ids: &[&str], extra_config: &str) -> anyhow::Result<LocalNetwork> {
        Self::create_placed(binary, root, node_ids, extra_config, |_| Placement::default())
    }

    /// [`LocalNetwork::create`], with each node placed as `placement` says.
    pub fn create_placed(
        binary: &Path,
        root: Option<&Path>,
        node_ids: &[&str],
        extra_config: &str,
        placement: impl Fn(&NodeId) -> Placement,
    ) -> anyhow::Result<LocalNetwork> {
        Self::create_from(binary, root, Topology::guangzhou(), node_ids, extra_config, placement)
    }

    /// The agency API client of `unit`'s home node, authenticated with the unit's token.
    pub fn client_for(&self, unit: &UnitAddress) -> ApiClient {
        let client = self.node(unit.node_part()).client();
        match self.unit_tokens.get(unit) {
            Some(t) => client.with_token(t.clone()),
            None => client,
        }
    }

    /// Waits until every running node holds the same directory, with the tree and a unit segment
    /// for every node in it, then issues an API token for every unit of every running node.
    pub fn converge(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let running: Vec<&LocalNode> = self.nodes.values().filter(|n| n.child.is_some()).collect();
        loop {
            let views: Vec<Option<exchange_wire::api::DirectoryView>> = running.iter().map(|n| n.admin().directory().ok()).collect();
            let complete = views.iter().all(|v| {
                v.as_ref().is_some_and(|v| {
                    let tree = v.segments.iter().find(|s| s.owner == "tree");
                    // The data-sharing catalog is a segment too, but not one per node.
                    let catalog = |v: &exchange_wire::api::DirectoryView| v.segments.iter().find(|s| s.owner == "catalog").map(|s| s.version);
                    let per_node = v.segments.iter().filter(|s| s.owner != "catalog").count() as u64;
                    tree.is_some_and(|t| per_node == t.entries + 1)
                        && Some(v.version) == views[0].as_ref().map(|f| f.version)
                        && Some(catalog(v)) == views[0].as_ref().map(catalog)
                })
            });
            if complete {
                break;
            }
            if Instant::now() > deadline {
                let versions: Vec<String> = running
                    .iter()
                    .zip(&views)
                    .map(|(n, v)| format!("{} at {}", n.id, v.as_ref().map(|v| v.version.to_string()).unwrap_or("?".into())))
                    .collect();
                bail!("the directory did not reach every node within {timeout:?}: {}", versions.join(", "));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for n in running {
            let admin = n.admin();
            for unit in self.unit_keys.keys().filter(|u| u.node_part() == n.id.as_str()) {
                if self.unit_tokens.contains_key(unit) {
                    continue;
                }
                let issued = admin
                    .issue_token(&exchange_wire::api::IssueToken { unit: unit.clone(), label: "launcher".into() })
                    .with_context(|| format!("cannot issue a token for {unit}"))?;
                self.unit_tokens.insert(unit.clone(), issued.token);
            }
        }
        Ok(())
    }

    /// Writes a unit's key to a 0600 key file under the network's folder (for CLI use) and returns its path.
    pub fn unit_key_file(&self, unit: &UnitAddress) -> anyhow::Result<PathBuf> {
        let key = self.unit_keys.get(unit).with_context(|| format!("no key for {unit}"))?;
        let path = self.root.join(format!("{}.unit.key", unit.as_str().replace('/', "_")));
        if !path.exists() {
            write_key(&path, key, unit.as_str())?;
        }
        Ok(path)
    }

    /// Writes what an agency system of every unit needs to act for it afterwards, and an index of the
    /// network, so that a kept folder (`demo --dir`, `devnet --dir`) can be used without this process:
    ///
    /// * `units/<unit>.key` and `units/<unit>.token` (`/` in the address becomes `_`), mode 0600: the
    ///   unit's signing key and the API token its node issued (after [`LocalNetwork::converge`]);
    /// * `network.toml`: per node its agency API, admin API, metrics address, operator token file and
    ///   configuration; per unit its node, agency API and the two files above (paths relative to the
    ///   folder).
    ///
    /// Returns the index's path. Files of an earlier run in the same folder are replaced.
    pub fn write_credentials(&self) -> anyhow::Result<PathBuf> {
        let dir = self.root.join("units");
        std::fs::create_dir_all(&dir)?;
        let mut index = String::from(
            "# The local network's nodes and units (written by exchange-node). Paths are relative to this folder;\n\
             # key and token files are mode 0600. Use a unit's token with exchange-admin --token or EXCHANGE_TOKEN.\n\n",
        );
        for n in self.nodes.values() {
            let rel = |p: &Path| p.strip_prefix(&self.root).unwrap_or(p).display().to_string();
            index.push_str(&format!(
                "[[node]]\nid = \"{}\"\napi = \"{}\"\nadmin = \"{}\"\nmetrics = \"{}/metrics\"\np2p_port = {}\nadmin_token_file = \"{}\"\nconfig = \"{}\"\nlog = \"{}\"\n\n",
                n.id,
                n.api_url,
                n.admin_url,
                n.api_url,
                n.p2p_port,
                rel(&n.admin_token_file()),
                rel(&n.config_path),
                rel(&n.log_path),
            ));
        }
        for (unit, key) in &self.unit_keys {
            let Some(node) = self.nodes.values().find(|n| n.id.as_str() == unit.node_part()) else { continue };
            let stem = unit.as_str().replace('/', "_");
            let key_file = dir.join(format!("{stem}.key"));
            let _ = std::fs::remove_file(&key_file);
            write_key(&key_file, key, unit.as_str())?;
            let token_line = match self.unit_tokens.get(unit) {
                Some(token) => {
                    let token_file = dir.join(format!("{stem}.token"));
                    write_private(&token_file, format!("{token}\n").as_bytes())?;
                    format!("token_file = \"units/{stem}.token\"\n")
                }
                None => String::new(),
            };
            index.push_str(&format!(
                "[[unit]]\naddress = \"{unit}\"\nnode = \"{}\"\napi = \"{}\"\nkey_file = \"units/{stem}.key\"\n{token_line}\n",
                node.id, node.api_url
            ));
        }
        let path = self.root.join("network.toml");
        std::fs::write(&path, index)?;
        Ok(path)
    }

    /// One line per node: id, agency API, admin API, metrics address, p2p port, process id.
    pub fn address_table(&self) -> String {
        let mut out = format!("{:<12} {:<23} {:<23} {:<31} {:<9} {}\n", "node", "api", "admin", "metrics", "p2p port", "pid");
        for n in self.nodes.values() {
            out.push_str(&format!(
                "{:<12} {:<23} {:<23} {:<31} {:<9} {}\n",
                n.id.as_str(),
                n.api_url,
                n.admin_url,
                format!("{}/metrics", n.api_url),
                n.p2p_port,
                n.pid().map(|p| p.to_string()).unwrap_or_else(|| "-".into())
            ));
        }
        out
    }

    /// A node (its first replica), or a further replica by its label (`gz~2`).
    pub fn node(&self, id: &str) -> &LocalNode {
        self.replicas
            .get(id)
            .or_else(|| self.nodes.values().find(|n| n.id.as_str() == id))
            .unwrap_or_else(|| panic!("node {id} is not in this network"))
    }

    fn node_mut(&mut self, id: &str) -> anyhow::Result<&mut LocalNode> {
        if let Some(r) = self.replicas.get_mut(id) {
            return Ok(r);
        }
        self.nodes.values_mut().find(|n| n.id.as_str() == id).with_context(|| format!("node {id} is not in this network"))
    }

    /// Adds `settings` (TOML `key = value` lines, e.g. a PostgreSQL `url`) to the `[storage]` section
    /// of node `id`'s configuration, creating the section if there is none; before the node starts
    /// (and before [`LocalNetwork::add_replica`], which copies the configuration).
    pub fn set_storage(&self, id: &str, settings: &str) -> anyhow::Result<()> {
        const SECTION: &str = "\n[storage]\n";
        let path = &self.node(id).config_path;
        let text = std::fs::read_to_string(path)?;
        let settings = format!("{}\n", settings.trim_end());
        let text = match text.find(SECTION) {
            Some(i) => format!("{}{settings}{}", &text[..i + SECTION.len()], &text[i + SECTION.len()..]),
            None => format!("{text}{SECTION}{settings}"),
        };
        std::fs::write(path, text)?;
        Ok(())
    }

    /// Adds a replica of node `id` (before the network's first start) and returns its label
    /// (`<id>~2`, `<id>~3` …) for [`LocalNetwork::start`], [`LocalNetwork::kill`] and
    /// [`LocalNetwork::node`]. The replica shares the node's key file (so its peer id) and
    /// configuration, with its own data folder and ports; the node tree lists its p2p address
    /// beside the node's, and the node's children list it in their `parent_address`. The replicas
    /// must share a PostgreSQL database (`[storage] url`, before this call), whose lease makes one
    /// of them active (see `exchange_node_core::replica`).
    pub fn add_replica(&mut self, id: &str) -> anyhow::Result<String> {
        let first = self.nodes.values().find(|n| n.id.as_str() == id).with_context(|| format!("node {id} is not in this network"))?;
        let label = format!("{id}~{}", 2 + self.replicas.keys().filter(|k| k.starts_with(&format!("{id}~"))).count());
        let (p2p, api, admin) = (free_port()?, free_port()?, free_port()?);
        let port_of = |url: &str| url.rsplit(':').next().unwrap_or_default().to_string();
        let config = std::fs::read_to_string(&first.config_path)?;
        let (old_api, old_admin) = (port_of(&first.api_url), port_of(&first.admin_url));
        let config = config
            .replace(&format!("data_dir = \"{id}\""), &format!("data_dir = \"{label}\""))
            .replace(&format!("/tcp/{}\"", first.p2p_port), &format!("/tcp/{p2p}\""))
            .replace(&format!("127.0.0.1:{old_api}\""), &format!("127.0.0.1:{api}\""))
            .replace(&format!("127.0.0.1:{old_admin}\""), &format!("127.0.0.1:{admin}\""));
        let config_path = self.root.join(format!("{label}.toml"));
        std::fs::write(&config_path, config)?;
        // The tree lists the replica's address beside the node's …
        let seed_path = self.root.join("tree-seed.toml");
        let seed = std::fs::read_to_string(&seed_path)?;
        let (old_addr, new_addr) = (format!("/tcp/{}\"", first.p2p_port), format!("/tcp/{}\", \"/ip4/127.0.0.1/tcp/{p2p}\"", first.p2p_port));
        anyhow::ensure!(seed.contains(&old_addr), "tree-seed.toml does not list node {id} at port {}", first.p2p_port);
        std::fs::write(&seed_path, seed.replace(&old_addr, &new_addr))?;
        // … and the children dial both.
        let peer = format!("/tcp/{}/p2p/", first.p2p_port);
        for child in self.nodes.values() {
            let text = std::fs::read_to_string(&child.config_path)?;
            let Some(line) = text.lines().find(|l| l.starts_with("parent_address = ") && l.contains(&peer)) else { continue };
            let address = line.trim_start_matches("parent_address = ").trim_matches('"');
            let replica_address = address.replace(&peer, &format!("/tcp/{p2p}/p2p/"));
            let new_line = format!("parent_address = \"{address},{replica_address}\"");
            std::fs::write(&child.config_path, text.replace(line, &new_line))?;
        }
        let replica = LocalNode {
            id: first.id.clone(),
            config_path,
            data_dir: self.root.join(&label),
            log_path: self.root.join(format!("{label}.log")),
            api_url: format!("http://127.0.0.1:{api}"),
            admin_url: format!("http://127.0.0.1:{admin}"),
            p2p_port: p2p,
            command_prefix: first.command_prefix.clone(),
            ca_file: first.ca_file.clone(),
            child: None,
        };
        self.replicas.insert(label.clone(), replica);
        Ok(label)
    }

    /// Starts a node process (its output goes to its log file) and waits until it answers `/healthz`.
    pub fn start(&mut self, id: &str) -> anyhow::Result<()> {
        let binary = self.binary.clone();
        let node = self.node_mut(id)?;
        if node.child.is_some() {
            bail!("node {id} is already running");
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log_path)?;
        let mut command = match node.command_prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        let child = command
            .arg("run")
            .arg("--config")
            .arg(&node.config_path)
            .env_remove("EXCHANGE_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        node.child = Some(child);
        self.wait_healthy(id, Duration::from_secs(30))
    }

    /// Starts every node, waits for the directory to reach all of them, and issues unit tokens.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        let ids: Vec<String> = self.nodes.keys().map(|k| k.to_string()).collect();
        for id in ids {
            self.start(&id)?;
        }
        self.converge(Duration::from_secs(60))
    }

    fn wait_healthy(&mut self, id: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let node = self.node_mut(id)?;
        let client = node.client();
        loop {
            if let Some(child) = node.child.as_mut()
                && let Some(status) = child.try_wait()? {
                    node.child = None;
                    let log = std::fs::read_to_string(&node.log_path).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    bail!(
                        "node {id} exited during start-up ({status}); see {}:\n{}",
                        node.log_path.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            if client.health().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("node {id} did not answer /healthz within {timeout:?}; see {}", node.log_path.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops a node cleanly (SIGTERM), killing it if it does not stop within 10 s.
    pub fn stop(&mut self, id: &str) -> anyhow::Result<()> {
        let node = self.node_mut(id)?;
        if let Some(mut child) = node.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    child.kill()?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
        Ok(())
    }

    /// Kills a node at once (SIGKILL): a crash, with no chance to flush anything.
    pub fn kill(&mut self, id: &str) -> anyhow::Result<()> {
        let node = self.node_mut(id)?;
        if let Some(mut child) = node.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Fails naming the first node whose process exited by itself (a crash, a refused start).
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for node in self.nodes.values_mut() {
            if let Some(child) = node.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                node.child = None;
                bail!("node {} exited ({status}); see {}", node.id, node.log_path.display());
            }
        }
        Ok(())
    }

    /// Stops every node (and every replica).
    pub fn stop_all(&mut self) {
        let ids: Vec<String> = self.replicas.keys().cloned().chain(self.nodes.keys().map(|k| k.to_string())).collect();
        for id in ids.iter().rev() {
            let _ = self.stop(id);
        }
    }

    /// The last `lines` lines of a node's log, for error reports.
    pub fn log_tail(&self, id: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.node(id).log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Keeps the network's folder after drop (for inspection).
    pub fn keep_files(&mut self) -> PathBuf {
        if let Some(t) = self._tmp.take() {
            let _ = t.keep();
        }
        self.root.clone()
    }
}

impl Drop for LocalNetwork {
    fn drop(&mut self) {
        for node in self.nodes.values_mut().chain(self.replicas.values_mut()) {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
