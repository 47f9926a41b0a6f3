//! `[p2p]` and `[directory]`: how the node reaches other nodes, and the seeds of a new network's
//! directory.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
