//! Node configuration: a TOML file plus `EXCHANGE__…` environment overrides (via the `config` crate).
//!
//! Every node runs the same binary; this file is what makes one the city node and another a district
//! node. Paths that are relative are taken relative to the configuration file's folder, so a folder of
//! configs can be moved as a whole. See the configuration reference in the README.

use std::path::{Path, PathBuf};

use exchange_wire::{NodeId, PublicKey};
use serde::{Deserialize, Serialize};

mod http;
mod limits;
mod logs;
mod network;
mod policy;

pub use http::{AdminConfig, ApiConfig, HttpLimits};
pub use limits::{Limits, RelayConfig};
pub use logs::{AuditConfig, LogConfig};
pub use network::{DirectoryConfig, P2pConfig};
pub use policy::{PolicyConfig, PolicyRule, PushConfig};

/// The whole node configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id in the directory, e.g. `gz` or `gz.yuexiu`.
    pub node_id: NodeId,
    /// The node's ed25519 key file (mode 0600): signs delivery reports and is its libp2p identity.
    pub key_file: PathBuf,
    /// Folder for the node's database (created if missing).
    pub data_dir: PathBuf,
    /// The root node's public key: the trust anchor every directory segment is checked against.
    pub root_key: PublicKey,
    /// The parent's libp2p address, ending in `/p2p/<peer-id>` (absent on the root node); several,
    /// separated by commas, when the parent runs as replicas (active and standby, one peer id). The
    /// rest of the network is learnt from the directory.
    #[serde(default)]
    pub parent_address: Option<String>,
    #[serde(default)]
    pub directory: DirectoryConfig,
    #[serde(default)]
    pub p2p: P2pConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub relay: RelayConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub attachments: AttachmentsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub push: PushConfig,
}

/// Storage safety margins (see docs/decisions.md, "Storage failure model").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Space kept back on the data directory's filesystem for what the node already holds
    /// (acknowledgements, receipts, reports). New documents are refused with 503 while less than
    /// this is free; a ballast file of this size is kept in `data_dir` and released when the disk
    /// fills anyway, so what the node holds keeps moving.
    pub reserve_bytes: u64,
    /// Time budget of the database check (`PRAGMA quick_check`) when the node starts; what it had no
    /// time for is checked in the background right after start.
    pub open_check_secs: u64,
    /// `postgres://user@host:port/database`: keep custody in that PostgreSQL database instead of the
    /// embedded SQLite file `data_dir/node.db` (the default when unset).
    pub url: Option<String>,
    /// Where attachment files are kept (default `data_dir/attachments`). On PostgreSQL only: replicas
    /// of a node point it at one folder on storage they share, so the standby has every attachment
    /// the active one acknowledged (docs/operations.md, 'Attachments').
    pub attachments_dir: Option<PathBuf>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { reserve_bytes: 64 * 1024 * 1024, open_check_secs: 30, url: None, attachments_dir: None }
    }
}

/// Agencies' attachment uploads: per-unit quotas and the lifetime of an unfinished upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttachmentsConfig {
    /// Most unfinished uploads one unit may have open at once; another is refused with 429.
    pub max_open_uploads_per_unit: usize,
    /// Most bytes (declared sizes) of one unit's unfinished uploads together; more is refused with 507.
    pub max_upload_bytes_per_unit: u64,
    /// An unfinished upload not written for this long is removed (and its quota freed).
    pub upload_ttl_secs: u64,
}

impl Default for AttachmentsConfig {
    fn default() -> Self {
        let d = crate::storage::uploads::UploadLimits::default();
        AttachmentsConfig { max_open_uploads_per_unit: d.max_open_per_unit, max_upload_bytes_per_unit: d.max_bytes_per_unit, upload_ttl_secs: d.ttl.as_secs() }
    }
}

impl AttachmentsConfig {
    /// The limits the attachment store applies.
    pub fn upload_limits(&self) -> crate::storage::uploads::UploadLimits {
        crate::storage::uploads::UploadLimits {
            max_open_per_unit: self.max_open_uploads_per_unit,
            max_bytes_per_unit: self.max_upload_bytes_per_unit,
            ttl: std::time::Duration::from_secs(self.upload_ttl_secs.max(1)),
        }
    }
}

impl NodeConfig {
    /// Loads `path`, applies `EXCHANGE__SECTION__KEY` environment overrides, and resolves relative
    /// paths against the file's folder.
    pub fn load(path: &Path) -> anyhow::Result<NodeConfig> {
        use anyhow::Context as _;
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(config::Environment::with_prefix("EXCHANGE").separator("__").try_parsing(true))
            .build()
            .with_context(|| format!("cannot read configuration {}", path.display()))?;
        let mut cfg: NodeConfig = raw
            .try_deserialize()
            .with_context(|| format!("configuration {} is invalid", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let seeds = [
            cfg.directory.tree_seed.as_mut(),
            cfg.directory.units_seed.as_mut(),
            cfg.directory.catalog_seed.as_mut(),
            cfg.admin.token_file.as_mut(),
            cfg.storage.attachments_dir.as_mut(),
        ];
        let tls = [cfg.api.tls_cert.as_mut(), cfg.api.tls_key.as_mut(), cfg.admin.tls_cert.as_mut(), cfg.admin.tls_key.as_mut()];
        for p in [Some(&mut cfg.key_file), Some(&mut cfg.data_dir)].into_iter().chain(seeds).chain(tls).flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for (what, action) in
            std::iter::once(("policy.default", &cfg.policy.default)).chain(cfg.policy.rules.iter().map(|r| (r.name.as_str(), &r.action)))
        {
            if action != "allow" && action != "deny" {
                anyhow::bail!("{what}: action must be \"allow\" or \"deny\", not {action:?}");
            }
        }
        let window = crate::network::behaviour::MAX_WINDOW_BATCHES;
        if !(1..=window).contains(&cfg.relay.window_batches) {
            anyhow::bail!("relay.window_batches must be between 1 and {window} ({window} is the default), not {}", cfg.relay.window_batches);
        }
        if cfg.audit.checkpoint_secs == 0 {
            anyhow::bail!("audit.checkpoint_secs must be above 0 (60 is the default)");
        }
        if cfg.p2p.link_timeout_ms == 0 {
            anyhow::bail!("p2p.link_timeout_ms must be above 0 (2000 is the default)");
        }
        if cfg.storage.attachments_dir.is_some() && cfg.storage.url.is_none() {
            anyhow::bail!(
                "storage.attachments_dir is for replicas over PostgreSQL (storage.url); on SQLite, remove it: attachments stay in data_dir/attachments, where the online backup copies them"
            );
        }
        for (section, http) in [("api", cfg.api.http_limits()), ("admin", cfg.admin.http_limits())] {
            if http.header_timeout_secs == 0 || http.max_connections == 0 || http.max_connections_per_client == 0 || http.max_concurrent_requests == 0 {
                anyhow::bail!("{section}: header_timeout_secs, max_connections, max_connections_per_client and max_concurrent_requests must be above 0");
            }
        }
        if cfg.api.request_timeout_secs.saturating_mul(1000) <= cfg.api.max_wait_ms {
            anyhow::bail!(
                "api.request_timeout_secs ({}) must be longer than api.max_wait_ms ({} ms), or inbox long-polls are cut short",
                cfg.api.request_timeout_secs,
                cfg.api.max_wait_ms
            );
        }
        if cfg.log.format != "human" && cfg.log.format != "json" {
            anyhow::bail!("log.format must be \"human\" or \"json\", not {:?}", cfg.log.format);
        }
        Ok(cfg)
    }

    /// The operator token file of the admin API.
    pub fn admin_token_file(&self) -> PathBuf {
        self.admin.token_file.clone().unwrap_or_else(|| self.data_dir.join("admin.token"))
    }

    /// The largest custody batch this node reads from a neighbour, in encoded bytes: twice the larger
    /// of a full batch and the largest payload, plus 1 MiB. A neighbour with the same settings cuts
    /// its batches at `relay.batch_max_bytes` and sends a single message of up to
    /// `limits.max_payload_bytes` (plus its header) alone, both well below; a larger batch is drained,
    /// answered `too_large` and split by its sender.
    pub fn max_request_bytes(&self) -> u64 {
        (self.relay.batch_max_bytes as u64).max(self.limits.max_payload_bytes) * 2 + 1024 * 1024
    }

    /// The SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("node.db")
    }

    /// Where attachment files are kept: `storage.attachments_dir`, else `data_dir/attachments`.
    pub fn attachments_dir(&self) -> PathBuf {
        self.storage.attachments_dir.clone().unwrap_or_else(|| self.data_dir.join("attachments"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
    }

    /// The example configurations in `configs/` are what operators copy: they must load as shipped.
    #[test]
    fn example_configs_load() {
        for name in ["city.toml", "district-yuexiu.toml", "district-haizhu.toml"] {
            let cfg = NodeConfig::load(&configs().join(name)).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert!(cfg.key_file.is_absolute() || cfg.key_file.starts_with(configs()), "{name}: paths resolve against the file");
        }
        let city = NodeConfig::load(&configs().join("city.toml")).unwrap();
        assert_eq!(city.node_id.as_str(), "gz");
        assert_eq!(city.relay.batch_max_messages, RelayConfig::default().batch_max_messages);
        // The seeds are what the nodes sign on first start: they must hold together.
        let tree = crate::directory::segments::tree_from_seed(city.directory.tree_seed.as_ref().unwrap()).unwrap();
        let root = tree.nodes.iter().find(|n| n.parent.is_none()).unwrap();
        assert_eq!(root.public_key, city.root_key, "city.toml pins the key of the tree's root");
        let catalog = crate::sharing::catalog_from_file(city.directory.catalog_seed.as_ref().unwrap()).unwrap();
        assert!(catalog.topic("person.death").is_some(), "city.toml signs the example catalog");
        for name in ["district-yuexiu.toml", "district-haizhu.toml"] {
            let cfg = NodeConfig::load(&configs().join(name)).unwrap();
            assert_eq!(cfg.root_key, city.root_key, "{name}: same trust anchor");
            let me = tree.nodes.iter().find(|n| n.id == cfg.node_id).unwrap_or_else(|| panic!("{name}: node in the tree seed"));
            assert_eq!(me.parent.as_ref(), Some(&city.node_id));
            let parent_peer = crate::directory::peer_id_of(&root.public_key).to_string();
            assert!(cfg.parent_address.as_ref().unwrap().ends_with(&format!("/p2p/{parent_peer}")), "{name}: parent_address names gz's peer id");
            let units = crate::directory::segments::units_from_seed(cfg.directory.units_seed.as_ref().unwrap(), &cfg.node_id).unwrap();
            assert!(!units.units.is_empty());
        }
    }

    const KEY: &str = "3ada911031d8e6e77892d1d56134bd88883e74603eda778a55260d4a99671aa5";

    #[test]
    fn environment_overrides_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(&path, format!("node_id = \"gz\"\nkey_file = \"k\"\ndata_dir = \"d\"\nroot_key = \"{KEY}\"\n[relay]\nretry_max_ms = 5\n")).unwrap();
        // SAFETY: no other test reads or writes this variable.
        unsafe { std::env::set_var("EXCHANGE__API__MAX_WAIT_MS", "1234") };
        let cfg = NodeConfig::load(&path).unwrap();
        unsafe { std::env::remove_var("EXCHANGE__API__MAX_WAIT_MS") };
        assert_eq!(cfg.api.max_wait_ms, 1234, "EXCHANGE__API__MAX_WAIT_MS overrides the file");
        assert_eq!(cfg.relay.retry_max_ms, 5);
        assert_eq!(cfg.relay.retry_initial_ms, RelayConfig::default().retry_initial_ms, "a partial section keeps the other defaults");
        assert_eq!(cfg.data_dir, dir.path().join("d"));
        std::fs::write(&path, format!("node_id = \"gz\"\nkey_file = \"k\"\ndata_dir = \"d\"\nroot_key = \"{KEY}\"\n[relay]\nretry_maximum = 5\n")).unwrap();
        let err = format!("{:#}", NodeConfig::load(&path).unwrap_err());
        assert!(err.contains("retry_maximum"), "a misspelt key is named: {err}");
        std::fs::write(&path, format!("node_id = \"gz\"\nkey_file = \"k\"\ndata_dir = \"d\"\nroot_key = \"{KEY}\"\n[p2p]\nlink_timeout_ms = 0\n")).unwrap();
        let err = format!("{:#}", NodeConfig::load(&path).unwrap_err());
        assert!(err.contains("p2p.link_timeout_ms"), "a zero link timeout (TCP's default, minutes) is refused: {err}");
    }
}
