//! JSON shapes of backups and of the reconciliation after a restore, shared by the node (admin API,
//! the backup's `manifest.json`) and `exchange-admin`.
//!
//! A backup is a folder: `node.db` (a consistent copy of the node's SQLite database), `attachments/`
//! (the complete attachment files) and `manifest.json`, written last, so a folder without a manifest
//! is an unfinished backup. After a restore the node asks its parent and children which messages
//! they exchanged with it since the backup; [`ReconciliationReport`] is what it learnt.

use serde::{Deserialize, Serialize};

use crate::address::NodeId;
use crate::envelope::MessageId;

/// The version of the backup folder's layout this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;

/// Body of `POST /admin/v1/backup`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// Absolute path of the folder to write, on the node's host: it must not exist yet, or be empty.
    pub out: String,
}

/// `manifest.json` of a backup folder, and the answer to `POST /admin/v1/backup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// [`BACKUP_FORMAT`].
    pub format: u32,
    /// The node the backup is of: a restore refuses a backup of another node.
    pub node: NodeId,
    /// Build of the node that wrote it.
    pub version: String,
    /// When the copy of the database began (the node's clock). Everything committed before this is
    /// in the copy; what was committed later may not be: the reconciliation after a restore starts
    /// here.
    pub taken_at_ms: u64,
    /// When the backup was complete.
    pub finished_at_ms: u64,
    /// Where the node wrote it (as given).
    pub folder: String,
    pub database: DatabaseCopy,
    pub attachments: AttachmentsCopy,
}

/// The database file of a backup and its high-water marks (read from the copy itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseCopy {
    /// File name inside the backup folder.
    pub file: String,
    pub bytes: u64,
    /// SHA-256 of the file (lower-case hex): a restore refuses a file that does not match.
    pub sha256: String,
    /// Last entry of the audit log in the copy, and its hash: the head of the chain at the backup.
    pub audit_last_seq: i64,
    pub audit_head_hash: String,
    /// Messages held, and the last message row.
    pub messages: i64,
    pub messages_last_seq: i64,
    /// Last inbox and outbox positions.
    pub inbox_last_seq: i64,
    pub outbox_last_seq: i64,
}

/// The attachment files of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentsCopy {
    /// Folder name inside the backup folder.
    pub folder: String,
    pub files: u64,
    pub bytes: u64,
    /// Files hard-linked (the backup is on the node's file system; complete attachments never
    /// change, so a link is a copy) and files copied.
    pub linked: u64,
    pub copied: u64,
}

/// Where a reconciliation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReconcileState {
    /// Recorded by the restore; runs at the node's next start.
    Due,
    /// Asking the neighbours (some may not have answered yet: they are asked again until they do).
    Running,
    /// Every neighbour answered.
    Done,
}

/// What one neighbour told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourReconciliation {
    pub node: NodeId,
    /// `parent` or `child`.
    pub role: String,
    /// True once both of its lists were read (and what it still held was queued again).
    pub answered: bool,
    /// Messages it handed to this node in the window, and messages it received from this node.
    pub handed: u64,
    pub received: u64,
    /// The last failure to ask it, while it has not answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Entry counts by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileCounts {
    /// Acknowledged after the backup, lost by the restore, and carried to this node again by the
    /// neighbour that had handed it over (it is queued there again, or already back here).
    pub recovered: u64,
    /// Acknowledged after the backup and already handed on to a neighbour before the loss.
    pub passed_on: u64,
    /// In the restored database already: acknowledged before the backup (the window starts a little
    /// earlier than the backup, to allow for clocks).
    pub held: u64,
    /// Acknowledged after the backup, lost, and no longer held by the neighbour either (its payload
    /// was purged by retention): it cannot be carried again.
    pub unrecoverable: u64,
}

/// The reconciliation after a restore (`GET /admin/v1/reconciliation`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconciliationReport {
    pub node: NodeId,
    pub state: ReconcileState,
    /// The backup restored: its folder and when it was taken.
    pub backup_folder: String,
    pub backup_taken_at_ms: u64,
    /// When `exchange-node restore` installed it, and where the data it replaced was moved.
    pub restored_at_ms: u64,
    pub previous_data: String,
    /// The window asked about: from a little before the backup to the node's first start after the
    /// restore.
    pub since_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    pub neighbours: Vec<NeighbourReconciliation>,
    pub counts: ReconcileCounts,
    /// How many entries the report lists (everything but `held`).
    pub entries: u64,
    /// What no neighbour can know, in plain words.
    pub unknowable: String,
}

/// One message the node had acknowledged after the backup, as a neighbour knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileEntry {
    pub id: MessageId,
    /// The message's kind (`document`, `receipt`, `delivery-report`, ...).
    pub kind: String,
    pub neighbour: NodeId,
    /// `from`: the neighbour had handed it to this node; `to`: this node had handed it to the
    /// neighbour.
    pub direction: String,
    /// `recovered`, `passed-on` or `unrecoverable` (see [`ReconcileCounts`]).
    pub outcome: String,
    /// When the neighbour recorded the handover (its clock).
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A page of the reconciliation report: the summary and entries after `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconciliationPage {
    /// `None` when this node was never restored from a backup.
    pub report: Option<ReconciliationReport>,
    pub entries: Vec<ReconcileEntry>,
    /// Ask again with `after` = this for the next page; equal to `after` at the end.
    pub next_after: u64,
}
