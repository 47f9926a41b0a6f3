//! `[log]` and `[audit]`: the node's log, and the signed checkpoints of its audit log.

use serde::{Deserialize, Serialize};

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
