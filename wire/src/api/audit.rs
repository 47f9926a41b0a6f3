//! The node's hash-chained audit log (admin API): its pages and its verification against the
//! signed checkpoint.

use serde::{Deserialize, Serialize};

use crate::envelope::MessageId;

/// One entry of the node's hash-chained audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at_ms: u64,
    /// `custody`, `refusal` or `admin`.
    pub category: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// SHA-256 over the previous entry's hash and this entry's fields (see docs/operations.md).
    pub hash: String,
}

/// `GET /admin/v1/audit?after=&limit=`: a page of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_after: i64,
}

/// Where the audit chain breaks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditBreak {
    /// The first entry whose hash does not follow from its content and its predecessor.
    pub seq: i64,
    pub reason: String,
}

/// `GET /admin/v1/audit:verify`: the result of re-computing the whole chain, and of comparing it
/// with the latest signed checkpoint its holder (the parent; at the root, the node itself) keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditVerification {
    /// The chain is intact and, if a checkpoint was checked, matches it.
    pub ok: bool,
    /// Entries checked.
    pub entries: u64,
    /// The last entry: record it elsewhere to detect a truncated tail later.
    pub head_seq: i64,
    pub head_hash: String,
    pub first_break: Option<AuditBreak>,
    /// The comparison with the signed checkpoint (absent from nodes without checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointCheck>,
}

/// How the local audit log compares with the latest checkpoint of it that its holder keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointCheck {
    /// The node holding the checkpoint (the parent, or this node at the root; empty if unknown).
    pub holder: String,
    /// False when no checkpoint could be compared (none held yet, or the parent did not answer).
    pub checked: bool,
    /// False when the entry the checkpoint names is missing or has another hash.
    pub ok: bool,
    /// The entry the checkpoint names, and when the node signed it (ms since the epoch).
    pub seq: Option<i64>,
    pub at_ms: Option<u64>,
    /// What was found, and what to do when it differs.
    pub detail: String,
}
