//! Where a node keeps the audit checkpoints it holds (its children's, and its own at the root), one
//! file per node replaced atomically, and how often it signs its own: the state `checkpoints` works on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use exchange_wire::NodeId;

use crate::network::checkpoint::SignedCheckpoint;

/// Where a node keeps the checkpoints it holds, and how often it signs its own.
pub struct CheckpointFiles {
    pub(super) dir: PathBuf,
    /// How often this node signs and hands its own checkpoint.
    pub every: Duration,
}

impl CheckpointFiles {
    pub fn new(data_dir: &Path, every: Duration) -> CheckpointFiles {
        CheckpointFiles { dir: data_dir.join("audit-checkpoints"), every: every.max(Duration::from_secs(1)) }
    }

    pub(super) fn path(&self, node: &NodeId) -> PathBuf {
        self.dir.join(format!("{node}.json"))
    }

    /// The checkpoint held for `node`, if any.
    pub fn load(&self, node: &NodeId) -> Result<Option<SignedCheckpoint>, String> {
        let path = self.path(node);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("the checkpoint file {} is not readable: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read the checkpoint file {}: {e}", path.display())),
        }
    }

    /// Replaces the checkpoint held for the node `cp` names: written beside, synced, renamed.
    pub(super) fn save(&self, node: &NodeId, cp: &SignedCheckpoint) -> Result<(), String> {
        use std::io::Write as _;
        let path = self.path(node);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let tmp = path.with_extension("json.new");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(cp).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| format!("cannot write the checkpoint file {}: {e}", path.display()))
    }

    /// Keeps `cp` for `node` if `key` signed it and it does not go back; otherwise says why not.
    pub(super) fn keep(&self, node: &NodeId, key: &VerifyingKey, cp: &SignedCheckpoint) -> Result<(), String> {
        if cp.node != node.as_str() {
            return Err(format!("the checkpoint names node {:?}, but node {node} handed it", cp.node.chars().take(64).collect::<String>()));
        }
        if !cp.verify(key) {
            return Err(format!("the checkpoint is not signed with node {node}'s key in the node tree"));
        }
        match self.load(node)? {
            Some(held) if held.seq > cp.seq => Err(format!(
                "it goes back: entry {} was checkpointed {}, this one names entry {}: the log lost its tail, or this is a replay",
                held.seq,
                age(held.at_ms),
                cp.seq
            )),
            Some(held) if held.seq == cp.seq && held.hash != cp.hash => Err(format!(
                "entry {} was checkpointed {} with another hash: the log was rewritten",
                held.seq,
                age(held.at_ms)
            )),
            Some(held) if held.seq == cp.seq => Ok(()),
            _ => self.save(node, cp),
        }
    }
}

/// "N s ago" for a time in ms since the epoch.
pub(super) fn age(at_ms: u64) -> String {
    let secs = exchange_wire::now_ms().saturating_sub(at_ms) / 1000;
    format!("{secs} s ago (at {at_ms} ms since the epoch)")
}
