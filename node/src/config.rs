//! Node configuration: a TOML file plus `EXCHANGE__…` environment overrides (via the `config` crate).
//!
//! Every node runs the same binary; this file is what makes one the city node and another a district
//! node. Paths that are relative are taken relative to the configuration file's folder, so a folder of
//! configs can be moved as a whole. See the configuration reference in the README.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use exchange_wire::{NodeId, PublicKey};
use serde::{Deserialize, Serialize};

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

/// Where webhooks may point (see `relay::webhook_target`). Public addresses always; loopback with
/// `api.webhooks_to_loopback`; private, link-local and carrier-grade NAT ranges only as configured
/// here, so a webhook cannot be aimed at the node's own LAN services or a cloud metadata address.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Allow the private ranges: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7 and
    /// 100.64.0.0/10 (carrier-grade NAT). Link-local addresses still need `allowed_networks`.
    pub allow_private: bool,
    /// Networks webhooks may reach whatever their range, e.g. `["10.1.0.0/16"]` for the agencies'
    /// segment of the government LAN.
    pub allowed_networks: Vec<String>,
}

/// Seeds for a new network's directory: signed by this node on its first start only, when it holds
/// no segment of its own yet. Afterwards the directory changes through `exchange-admin`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryConfig {
    /// Root node only: the node tree (`[[node]]` entries) to sign as version 1.
    pub tree_seed: Option<PathBuf>,
    /// The units this node hosts (`[[unit]]` entries) to sign as version 1 of its unit segment.
    pub units_seed: Option<PathBuf>,
    /// Root node only: the data-sharing catalog (`configs/catalog.toml`) to sign when the node
    /// holds no catalog yet, or holds an older version than the file's.
    #[serde(default)]
    pub catalog_seed: Option<PathBuf>,
}

/// Who may send which kinds of message to whom. Rules are tried in order; the first that matches
/// decides; when none matches, `default` does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// `allow` or `deny`.
    pub default: String,
    pub rules: Vec<PolicyRule>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig { default: "allow".into(), rules: Vec::new() }
    }
}

/// One access rule. Patterns match unit addresses, with `*` standing for any run of characters
/// (`gz.*/*-street`, `gz/general-office`); unset fields match everything.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// Named in refusals, so a sender knows which rule stopped it.
    pub name: String,
    #[serde(default)]
    pub from: Option<String>,
    /// The sender's unit kind in the directory (`department`, `bureau`, `street-office`, ...).
    #[serde(default)]
    pub from_kind: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub to_kind: Option<String>,
    /// Message kinds the rule covers (`document`); empty: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// `allow` or `deny`.
    pub action: String,
}

/// libp2p settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct P2pConfig {
    /// Multiaddress to listen on for other nodes.
    pub listen: String,
    /// How long a link may sit idle before it closes; parent/child links are meant to stay up.
    pub idle_timeout_secs: u64,
    /// How long to wait for a peer to acknowledge a batch before retrying it.
    pub request_timeout_secs: u64,
    /// How long bytes sent to a neighbour may stay unacknowledged by its host (TCP) before the link is
    /// given up and re-dialled; also the limit for a dial and its handshake. After a partition heals,
    /// the backlog moves again within about this long.
    pub link_timeout_ms: u64,
    /// Connections still in their handshake at most, each way (anyone can start one).
    pub max_pending_connections: u32,
    /// Established connections at most, all peers together.
    pub max_established_connections: u32,
    /// Established connections at most with one peer (a simultaneous dial makes two).
    pub max_connections_per_peer: u32,
    /// Largest directory push accepted from a neighbour, in bytes.
    pub max_directory_bytes: u64,
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            listen: "/ip4/0.0.0.0/tcp/7400".into(),
            idle_timeout_secs: 3600,
            request_timeout_secs: 60,
            max_pending_connections: 32,
            max_established_connections: 256,
            max_connections_per_peer: 2,
            max_directory_bytes: 16 * 1024 * 1024,
            link_timeout_ms: 2000,
        }
    }
}

/// The audit log's signed checkpoints (see `relay::checkpoints`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// How often the node signs its audit chain head and hands it to its parent (the root keeps
    /// its own); entries newer than the last checkpoint are not yet protected against rewriting.
    pub checkpoint_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { checkpoint_secs: 60 }
    }
}

/// The agency HTTP API (also serves `/metrics` and `/healthz`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Upper bound on a long-poll wait.
    pub max_wait_ms: u64,
    /// Every agency request must carry a unit token (`Authorization: Bearer …`). Turn off only on a
    /// closed test bench.
    pub require_auth: bool,
    /// Let webhooks point at loopback addresses (`localhost`, 127.0.0.0/8, ::1). Off by default: a
    /// webhook must never reach the node's own admin API or other local services.
    pub webhooks_to_loopback: bool,
    /// Requests refused for want of a valid unit token are audited as one entry per source and
    /// reason per this many seconds, not one synced entry each.
    pub refusal_audit_secs: u64,
    /// Connection and request bounds of this listener (see [`HttpLimits`] for each key).
    pub header_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub max_concurrent_requests: usize,
    /// TLS certificate chain and private key (PEM files; relative paths against the config file's
    /// folder). Both or neither; without them the listener speaks plain HTTP.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback (bearer tokens in clear text). Off by
    /// default: set it only when a TLS proxy in front of the node encrypts the traffic.
    pub allow_plain_http: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        let h = HttpLimits::default();
        ApiConfig {
            listen: "127.0.0.1:8080".parse().unwrap(),
            max_wait_ms: 60_000,
            require_auth: true,
            webhooks_to_loopback: false,
            refusal_audit_secs: 60,
            header_timeout_secs: h.header_timeout_secs,
            request_timeout_secs: h.request_timeout_secs,
            max_connections: h.max_connections,
            max_connections_per_client: h.max_connections_per_client,
            max_concurrent_requests: h.max_concurrent_requests,
            tls_cert: None,
            tls_key: None,
            allow_plain_http: false,
        }
    }
}

/// The admin API used by `exchange-admin` (loopback by default).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The operator token every admin call must carry (`Authorization: Bearer …`). Created with mode
    /// 0600 at first start; default `<data_dir>/admin.token`. See docs/security.md.
    pub token_file: Option<PathBuf>,
    /// Host names accepted in the `Host` header besides IP addresses and `localhost` (a name
    /// anyone's DNS can point here is how a web page would reach this API: DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Refused admin requests are audited as one entry per source and reason per this many seconds,
    /// not one synced entry each.
    pub refusal_audit_secs: u64,
    /// Connection and request bounds of this listener (see [`HttpLimits`]); the admin API serves
    /// operators, so its caps are smaller than the agency API's.
    pub header_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub max_concurrent_requests: usize,
    /// TLS certificate chain and private key (PEM files; relative paths against the config file's
    /// folder). Both or neither; without them the listener speaks plain HTTP.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback (bearer tokens in clear text). Off by
    /// default: set it only when a TLS proxy in front of the node encrypts the traffic.
    pub allow_plain_http: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        let h = HttpLimits::default();
        AdminConfig {
            listen: "127.0.0.1:9080".parse().unwrap(),
            header_timeout_secs: h.header_timeout_secs,
            request_timeout_secs: 300,
            max_connections: 64,
            max_connections_per_client: 32,
            max_concurrent_requests: 32,
            tls_cert: None,
            tls_key: None,
            allow_plain_http: false,
            token_file: None,
            allowed_hosts: Vec::new(),
            refusal_audit_secs: 60,
        }
    }
}

impl ApiConfig {
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            header_timeout_secs: self.header_timeout_secs,
            request_timeout_secs: self.request_timeout_secs,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            max_concurrent_requests: self.max_concurrent_requests,
        }
    }
}

impl AdminConfig {
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            header_timeout_secs: self.header_timeout_secs,
            request_timeout_secs: self.request_timeout_secs,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            max_concurrent_requests: self.max_concurrent_requests,
        }
    }
}

/// Bounds of an HTTP listener, so that idle, slow or numerous clients cannot use up the node's file
/// descriptors or tasks (`[api]` and `[admin]` take the same keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's headers must arrive in full within this time of the connection opening or of the
    /// previous answer; otherwise the connection is closed. This is also the keep-alive idle timeout.
    pub header_timeout_secs: u64,
    /// Longest a request may take, body included, before it is answered 408 (must exceed
    /// `api.max_wait_ms`, the longest inbox long-poll).
    pub request_timeout_secs: u64,
    /// Open connections at most; further connections are closed as soon as they are accepted. Keep
    /// well below the process's descriptor limit (`ulimit -n`).
    pub max_connections: usize,
    /// Open connections at most from one client IP address.
    pub max_connections_per_client: usize,
    /// Requests in progress at most; further requests are answered 503 with `Retry-After`.
    pub max_concurrent_requests: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout_secs: 10,
            request_timeout_secs: 120,
            max_connections: 512,
            max_connections_per_client: 64,
            max_concurrent_requests: 256,
        }
    }
}

/// Input limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest payload accepted from an agency or a peer, in bytes.
    pub max_payload_bytes: u64,
    /// Largest attachment accepted, in bytes. Attachments travel in chunks beside the document and
    /// never sit in memory whole, so this bounds disk use, not memory.
    pub max_attachment_bytes: u64,
    /// Longest a query may wait for its answer (its deadline at most this far ahead), in seconds.
    /// Questions that can wait longer are documents.
    pub max_query_secs: u64,
    /// How far an envelope's `created_at_ms` may be from the ingress node's clock, in seconds. Older
    /// envelopes are refused at ingress: a stolen key cannot backdate a message to before its
    /// revocation.
    pub clock_skew_secs: u64,
    /// Most bytes of stored messages (headers, signatures, payloads) one page holds: a page of an
    /// inbox or of a subscription's records, a webhook push, a page of a backlog sent to a new
    /// subscriber. The first item always goes, so one large message still moves; a page may hold
    /// fewer items than asked for. Bounds the node's memory per read, whatever the row counts.
    pub page_max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 8 * 1024 * 1024,
            max_attachment_bytes: 4 * 1024 * 1024 * 1024,
            max_query_secs: 3600,
            clock_skew_secs: 300,
            page_max_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Store-and-forward tuning.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Most messages in one batch to a peer.
    pub batch_max_messages: usize,
    /// Most bytes of one batch to a peer as encoded on the wire (headers, signatures, payloads,
    /// recipients, hops and framing), except that a single message goes whatever its size. A peer
    /// with the same settings reads up to `2 × max(batch_max_bytes, limits.max_payload_bytes) + 1 MiB`;
    /// one with smaller settings answers `too_large` and the batch is split.
    pub batch_max_bytes: usize,
    /// First retry delay after a failed send; doubles up to `retry_max_ms`, with full jitter.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Most write requests folded into one storage transaction (group commit).
    pub commit_max_requests: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_max_messages: 512,
            batch_max_bytes: 8 * 1024 * 1024,
            retry_initial_ms: 200,
            retry_max_ms: 10_000,
            commit_max_requests: 256,
        }
    }
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

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: String,
    /// A tracing filter such as `info` or `exchange_node_core=debug,info`; `RUST_LOG` wins if set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: "human".into(), level: "info".into() }
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
