//! Cut-through of attachments: a node receiving an attachment passes its chunks on toward the
//! document's recipients as they become durable here, while the rest still arrives, so a large file
//! crosses two hops in about the time of one instead of two.
//!
//! The node learns where the file goes before the document arrives: the sending node's `Offer`
//! carries the signed document the attachment belongs to (header and signature, no payload). The
//! signature is checked against the directory and the recipients are routed by the same tree rules
//! as the document will be; the neighbours on the way on, other than the one the bytes come from,
//! get the attachment by the ordinary transfer (`attachments::send_attachment`), which here reads
//! each chunk as soon as it is committed (see `AttachmentStore::read_held_chunk`).
//!
//! Custody does not change: the document is handed over only once the next hop holds the whole file
//! and verified its digest itself. Each hop verifies independently, and the last chunk leaves a node
//! only after the file verified there, so a next hop never completes a file its predecessor did not.
//! What can go wrong is only wasted bytes: a document that never comes (its partial or complete file
//! at the next hop is swept by retention like any unused one), or an upstream sender that stops (the
//! transfer waits [`UPSTREAM_STALL`], gives up without marking the neighbour as holding the file, and
//! the next transfer resumes from the neighbour's committed length).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use exchange_wire::document::{self, Attachment};
use exchange_wire::{Digest, Kind, NodeId, SignedEnvelope};

use super::attachment_state::{AtNeighbour, Attachments};
use super::signals::Signals;
use super::attachments::{ForDocument, Interrupted};
use crate::network::protocol::OfferedFor;
use crate::routing::{self, NextHop};
use crate::storage::attachments::Held;

/// How long a transfer waits for the next chunk to become durable here before it gives up (the node
/// sending it to us stopped or lost its link; its retry offers again and starts a new transfer).
const UPSTREAM_STALL: Duration = Duration::from_secs(30);

impl Attachments {
    /// A neighbour offers attachment `sha256` of the document `offered`: starts passing it on to the
    /// next hops of the document's recipients (except `from`) now. A document that does not verify
    /// or route here starts nothing: its attachment then waits for the document, as without cut-through.
    /// `forwarder` gives the signals of a neighbour's forwarder (starting it if need be).
    pub(crate) fn pass_on_early(self: &Arc<Self>, from: &NodeId, sha256: Digest, size: u64, offered: OfferedFor, forwarder: impl Fn(&NodeId) -> Arc<Signals>) {
        let (a, hops) = match self.early_hops(from, sha256, size, &offered) {
            Ok(found) => found,
            Err(reason) => {
                tracing::info!(%from, attachment = %sha256, %reason, "not passing an offered attachment on before its document arrives");
                return;
            }
        };
        for hop in hops {
            if let AtNeighbour::Started = self.at_neighbour(&hop, sha256) {
                self.services.metrics.attachment_cut_through.with_label_values(&[hop.as_str()]).inc();
                tracing::info!(%from, %hop, attachment = %sha256, "passing an attachment on as it arrives (cut-through)");
                let signals = forwarder(&hop);
                let doc = ForDocument::Offered(offered.clone());
                self.services.tasks.spawn(self.clone().send_attachment(hop, signals, a.clone(), doc));
            }
        }
    }

    /// The attachment as the verified document describes it, and the neighbours it goes on to.
    fn early_hops(&self, from: &NodeId, sha256: Digest, size: u64, offered: &OfferedFor) -> Result<(Attachment, Vec<NodeId>), String> {
        if size > self.services.limits.max_attachment_bytes {
            return Err("over this node's limits.max_attachment_bytes".into());
        }
        let signature: [u8; 64] = offered.signature.as_slice().try_into().map_err(|_| "the signature is not 64 bytes".to_string())?;
        let signed = SignedEnvelope::from_canonical(offered.header.clone(), signature).map_err(|e| e.to_string())?;
        let env = &signed.envelope;
        if env.kind != Kind::Document {
            return Err("not a document".into());
        }
        let a = document::attachments(env)
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|a| a.sha256 == sha256 && a.size == size)
            .ok_or("the document does not describe this attachment")?;
        let dir = self.services.dir.current();
        if !dir.signing_keys(&env.sender, &[env.created_at_ms]).iter().any(|k| signed.verify(&k.0).is_ok()) {
            return Err("the document's signature does not verify against the directory here".into());
        }
        // In the node tree, the recipients the document comes here for are exactly those whose
        // next hop from here is not the neighbour it comes from.
        let hops: BTreeSet<NodeId> = env
            .recipients()
            .filter_map(|r| match routing::next_hop(&dir, &self.services.here, &dir.home_of(r)?) {
                Ok(NextHop::Node(hop)) if hop != *from => Some(hop),
                _ => None,
            })
            .collect();
        Ok((a, hops.into_iter().collect()))
    }

    /// The chunk of `a` at `offset` if it is held here (complete, or committed so far by a transfer
    /// still arriving); `None` if not yet.
    pub(super) async fn chunk_if_held(&self, a: &Attachment, offset: u64) -> Result<Option<Vec<u8>>, Interrupted> {
        let store = self.files.clone();
        let (sha256, size) = (a.sha256, a.size);
        tokio::task::spawn_blocking(move || store.read_held_chunk(&sha256, size, offset))
            .await
            .map_err(|e| Interrupted::from(e.to_string()))?
            .map_err(|e| Interrupted::from(format!("cannot read attachment {sha256} here: {e}")))
    }

    /// Waits until the chunk of `a` at `offset` is held here; gives up after [`UPSTREAM_STALL`]
    /// without a new chunk committed.
    pub(super) async fn wait_for_chunk(&self, a: &Attachment, offset: u64) -> Result<(), Interrupted> {
        let end = (offset + crate::storage::attachments::CHUNK_BYTES).min(a.size);
        loop {
            // Subscribed before looking, so a commit in between is not missed.
            let mut progress = self.progress(a.sha256);
            match self.attachment_held(a.sha256).await {
                Ok(Held::Complete) => {
                    drop(progress);
                    self.forget_progress(a.sha256);
                    return Ok(());
                }
                // The last chunk is read from the complete file only (see `read_held_chunk`).
                Ok(Held::Partial(n)) if n >= end && end < a.size => return Ok(()),
                Ok(Held::Partial(_)) => {}
                Err(e) => return Err(Interrupted::from(format!("cannot read attachment {} here: {e}", a.sha256))),
            }
            if tokio::time::timeout(UPSTREAM_STALL, progress.changed()).await.is_err() {
                // The sender logs this reason (`send_attachment`): with where it stopped.
                return Err(Interrupted::stalled(format!(
                    "no new chunk of the attachment arrived here for {} s (the node sending it stopped): waiting for offset {offset}, last seen committed {}",
                    UPSTREAM_STALL.as_secs(),
                    *progress.borrow()
                )));
            }
        }
    }
}
