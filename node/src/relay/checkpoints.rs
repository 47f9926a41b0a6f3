//! Signed audit checkpoints: the head of this node's audit chain, signed with the node key, handed to
//! the parent every `audit.checkpoint_secs` (the root keeps its own), and checked back.
//!
//! The chain alone proves little against whoever holds the database file: an edited entry with its
//! successors' hashes recomputed, or a deleted tail with the id counter reset, is again a valid
//! chain. A checkpoint held on another machine is not in that file: the entry it names must still
//! be there with the hash it names. Each round the node first asks the holder for the latest
//! checkpoint and compares its own log with it; on a difference it stops signing (so the evidence
//! held by the parent is never replaced by a checkpoint of the altered log) and says so in its log
//! and `exchange_audit_checkpoints_total{outcome="mismatch"}`. The parent keeps a checkpoint only if
//! its child signed it and it does not go back (a lower entry number, or the same one with another
//! hash). `exchange-admin audit verify` reports the same comparison.
//!
//! The parent keeps one file per child under `<data_dir>/audit-checkpoints/`, replaced atomically.

use std::sync::Arc;
use std::time::Duration;

use exchange_wire::NodeId;
use exchange_wire::api::CheckpointCheck;
use crate::network::PeerId;
use crate::network::Reply;
use tokio_util::sync::CancellationToken;

pub use super::checkpoint_files::CheckpointFiles;
use super::checkpoint_files::age;
use super::Engine;
use super::services::Services;
use crate::network::checkpoint::{CheckpointRequest, CheckpointResponse, SignedCheckpoint};
use crate::storage::StorageError;


/// Why a checkpoint round handed nothing.
enum Round {
    /// The log differs from the held checkpoint: signing stops (logged as an error).
    Mismatch(String),
    /// The parent could not be asked or refused, or storage failed: tried again next round.
    NotHanded(String),
}


/// What to do when the log and its checkpoint differ.
const WHAT_TO_DO: &str = "Treat this node's database as tampered with: keep the file for investigation, compare the log \
                          with the latest backup and with the custody events the neighbours hold (exchange-admin trace)";

/// What stays the engine's: finding the parent's link (the links are not this part's), the
/// schedule, and routing a child's request. The part is given exactly the parent it needs.
impl Engine {
    /// The parent's id and peer id, or `None` at the root (or while the tree is not known).
    fn checkpoint_parent(&self) -> Option<(NodeId, PeerId)> {
        let dir = self.services.dir.current();
        let parent = dir.node(&self.services.here)?.parent.clone()?;
        let peer = self.peer_for(&parent)?;
        Some((parent, peer))
    }

    /// `audit verify`'s comparison with the latest checkpoint the holder has.
    pub(crate) async fn checkpoint_check(&self) -> Result<CheckpointCheck, StorageError> {
        self.checkpoints.check(&self.services, self.checkpoint_parent()).await
    }

    /// Signs and hands a checkpoint every `audit.checkpoint_secs` until `stop`, then once more.
    pub async fn run_audit_checkpoints(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(self.checkpoints.every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut scan = None;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.cancelled() => break,
            }
            match self.checkpoints.round(&self.services, self.checkpoint_parent(), &mut scan).await {
                Err(Round::Mismatch(e)) => tracing::error!(error = %e, "audit log differs from its checkpoint"),
                Err(Round::NotHanded(e)) => tracing::warn!(error = %e, "audit checkpoint not handed"),
                Ok(()) => {}
            }
        }
        let last = self.checkpoints.round(&self.services, self.checkpoint_parent(), &mut scan);
        if let Ok(Err(Round::Mismatch(e) | Round::NotHanded(e))) = tokio::time::timeout(Duration::from_secs(3), last).await {
            tracing::warn!(error = %e, "no audit checkpoint at shutdown");
        }
    }

    /// Answers a child that hands or asks for its checkpoint.
    pub(crate) async fn answer_checkpoint(self: Arc<Self>, peer: PeerId, request: CheckpointRequest, channel: Reply<CheckpointResponse>) {
        let response = self.checkpoints.answer(&self.services, peer, request);
        if let CheckpointResponse::Refused { reason } = &response {
            tracing::warn!(%peer, %reason, "audit checkpoint refused");
        }
        self.services.net.respond_checkpoint(channel, response).await;
    }
}

/// The checkpoint part's work: it reads the log, signs and asks the parent through the shared
/// services, and keeps files in its own state. `parent` is the parent's id and the peer id to
/// reach it by (`None` at the root), resolved by the engine from the links.
impl CheckpointFiles {
    /// Who holds this node's checkpoint (the parent, or this node at the root) and the latest it holds.
    async fn held(&self, s: &Services, parent: Option<(NodeId, PeerId)>) -> Result<(String, Option<SignedCheckpoint>), String> {
        let Some((parent, peer)) = parent else {
            return Ok((s.here.to_string(), self.load(&s.here)?));
        };
        let asked = tokio::time::timeout(Duration::from_secs(10), s.net.checkpoint(peer, CheckpointRequest::Latest)).await;
        match asked {
            Ok(Ok(CheckpointResponse::Latest(cp))) => Ok((parent.to_string(), cp)),
            Ok(Ok(CheckpointResponse::Refused { reason })) => Err(format!("the parent {parent} refused to answer: {reason}")),
            Ok(Ok(CheckpointResponse::Stored)) => Err(format!("the parent {parent} answered out of turn")),
            Ok(Err(e)) => Err(format!("cannot ask the parent {parent}: {e}")),
            Err(_) => Err(format!("the parent {parent} did not answer within 10 s")),
        }
    }

    /// Compares the local log with `cp`: `None` when the entry it names is there with its hash,
    /// otherwise what differs and what to do.
    async fn differs_from(s: &Services, cp: &SignedCheckpoint, holder: &str) -> Result<Option<String>, StorageError> {
        // Signed with this node's key, or an earlier one it had (not revoked): a rotation does not
        // make the checkpoints signed before it look forged.
        let keys = s.dir.current().signing_keys(&exchange_wire::UnitAddress::of_node(&s.here), &[]);
        if !cp.verify(&s.node_key().verifying_key()) && !keys.iter().any(|k| cp.verify(&k.0)) {
            return Ok(Some(format!("the checkpoint {holder} holds is not signed with this node's key. {WHAT_TO_DO}")));
        }
        let entry = s.store.audit_page(cp.seq - 1, 1).await?.into_iter().next();
        Ok(match entry {
            Some(e) if e.seq == cp.seq && e.hash == cp.hash => None,
            Some(e) if e.seq == cp.seq => Some(format!(
                "entry {} has chain hash {} here, but the checkpoint this node signed {} (held by {holder}) says {}: \
                 an entry at or before {} was altered and the hashes after it recomputed. {WHAT_TO_DO}",
                cp.seq,
                hex::encode(&e.hash),
                age(cp.at_ms),
                hex::encode(&cp.hash),
                cp.seq
            )),
            _ => Some(format!(
                "entry {} is missing here, but the checkpoint this node signed {} (held by {holder}) covers it: \
                 the end of the log was deleted. {WHAT_TO_DO}",
                cp.seq,
                age(cp.at_ms)
            )),
        })
    }

    /// `audit verify`'s comparison with the latest checkpoint the holder has.
    pub(super) async fn check(&self, s: &Services, parent: Option<(NodeId, PeerId)>) -> Result<CheckpointCheck, StorageError> {
        let (holder, cp) = match self.held(s, parent).await {
            Ok(held) => held,
            Err(why) => {
                let detail = format!("not checked against a checkpoint: {why}; run it again when the parent answers");
                return Ok(CheckpointCheck { holder: String::new(), checked: false, ok: true, seq: None, at_ms: None, detail });
            }
        };
        let Some(cp) = cp else {
            let detail = format!("{holder} holds no checkpoint of this log yet (one is signed every {} s)", self.every.as_secs());
            return Ok(CheckpointCheck { holder, checked: false, ok: true, seq: None, at_ms: None, detail });
        };
        let differs = Self::differs_from(s, &cp, &holder).await?;
        let detail = differs.clone().unwrap_or_else(|| format!("entry {} matches the checkpoint signed {} and held by {holder}", cp.seq, age(cp.at_ms)));
        Ok(CheckpointCheck { holder, checked: true, ok: differs.is_none(), seq: Some(cp.seq), at_ms: Some(cp.at_ms), detail })
    }

    /// The last audit entry, reading on from `scan` (the last one seen before).
    async fn audit_head(s: &Services, scan: &mut Option<(i64, [u8; 32])>) -> Result<(), StorageError> {
        loop {
            let page = s.store.audit_page(scan.map_or(0, |s| s.0), 5000).await?;
            let Some(last) = page.last() else { return Ok(()) };
            *scan = Some((last.seq, <[u8; 32]>::try_from(last.hash.as_slice()).unwrap_or([0; 32])));
        }
    }

    /// One round: compare the log with the held checkpoint, then sign and hand the head if newer.
    async fn round(&self, s: &Services, parent: Option<(NodeId, PeerId)>, scan: &mut Option<(i64, [u8; 32])>) -> Result<(), Round> {
        let count = |outcome: &str| s.metrics.audit_checkpoints.with_label_values(&[outcome]).inc();
        let (holder, held) = self.held(s, parent.clone()).await.inspect_err(|_| count("unreachable")).map_err(Round::NotHanded)?;
        if let Some(cp) = &held {
            if let Some(why) = Self::differs_from(s, cp, &holder).await.map_err(|e| Round::NotHanded(e.to_string()))? {
                count("mismatch");
                return Err(Round::Mismatch(format!("no new checkpoint is signed: {why}")));
            }
        }
        Self::audit_head(s, scan).await.map_err(|e| Round::NotHanded(e.to_string()))?;
        let Some((seq, hash)) = *scan else { return Ok(()) };
        if held.as_ref().is_some_and(|cp| cp.seq >= seq) {
            return Ok(());
        }
        let cp = SignedCheckpoint::sign(&s.node_key(), s.here.as_str(), seq, hash, exchange_wire::now_ms());
        let handed = match parent {
            None => self.keep(&s.here, &s.node_key().verifying_key(), &cp),
            Some((parent, peer)) => match tokio::time::timeout(Duration::from_secs(10), s.net.checkpoint(peer, CheckpointRequest::Hand(cp))).await {
                Ok(Ok(CheckpointResponse::Stored)) => Ok(()),
                Ok(Ok(CheckpointResponse::Refused { reason })) => Err(format!("the parent {parent} refused the checkpoint: {reason}")),
                Ok(Ok(CheckpointResponse::Latest(_))) => Err(format!("the parent {parent} answered out of turn")),
                Ok(Err(e)) => Err(format!("cannot hand the checkpoint to the parent {parent}: {e}")),
                Err(_) => Err(format!("the parent {parent} did not answer within 10 s")),
            },
        };
        count(if handed.is_ok() { "handed" } else { "refused" });
        handed.map_err(Round::NotHanded)
    }

    pub(super) fn answer(&self, s: &Services, peer: PeerId, request: CheckpointRequest) -> CheckpointResponse {
        let dir = s.dir.current();
        let Some(child) = dir.node_by_peer(&peer).filter(|n| n.parent.as_ref() == Some(&s.here)) else {
            return CheckpointResponse::Refused { reason: format!("only children of node {} hand it audit checkpoints", s.here) };
        };
        let count = |outcome: &str| s.metrics.audit_checkpoints.with_label_values(&[outcome]).inc();
        match request {
            CheckpointRequest::Latest => match self.load(&child.id) {
                Ok(cp) => CheckpointResponse::Latest(cp),
                Err(reason) => CheckpointResponse::Refused { reason },
            },
            CheckpointRequest::Hand(cp) => match self.keep(&child.id, &child_key(&dir, &child.id, &cp).unwrap_or(child.public_key).0, &cp) {
                Ok(()) => {
                    count("stored");
                    CheckpointResponse::Stored
                }
                Err(reason) => {
                    count("refused-from-child");
                    CheckpointResponse::Refused { reason }
                }
            },
        }
    }
}

/// The key of `child` valid now that signed `cp` (its current key, or an earlier one in its overlap).
fn child_key(dir: &crate::directory::Directory, child: &NodeId, cp: &SignedCheckpoint) -> Option<exchange_wire::PublicKey> {
    dir.signing_keys(&exchange_wire::UnitAddress::of_node(child), &[exchange_wire::now_ms()]).into_iter().find(|k| cp.verify(&k.0))
}
