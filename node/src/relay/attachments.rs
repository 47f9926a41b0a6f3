//! Attachments in custody. A document is taken into custody only when every attachment it describes
//! is complete and verified here, so custody of a document always includes its attachments.
//!
//! Before a forwarder hands a document with attachments to a neighbour, the attachments go first,
//! on their own protocol and in their own task per neighbour: the task asks how much the neighbour
//! holds and sends the rest chunk by chunk, each chunk acknowledged after the neighbour's `fsync`.
//! An interrupted link resumes from the last committed chunk. Meanwhile the forwarder keeps handing
//! over everything else, so a 1 GiB scan never holds up an urgent notice. The offer names the
//! document, so a receiver that relays it can pass the chunks on as they arrive (`cut_through`).

use std::sync::Arc;
use std::time::Duration;

use exchange_wire::document::{self, Attachment};
use exchange_wire::{Digest, Envelope, Kind, NodeId, UnitAddress};
use crate::network::PeerId;
use crate::network::Reply;

use super::backoff::Backoff;
use super::signals::{Signals, peer_for};
use super::access::Caller;
use super::refused::Refused;
use super::refusal::Refusal;
use crate::network::protocol::{AttachmentRequest, AttachmentResponse, OfferedFor};
pub use super::attachment_state::Attachments;
use super::attachment_state::AtNeighbour;
use crate::storage::attachments::{AttachmentError, CHUNK_BYTES, Held};
use crate::storage::StoredMessage;

/// Every attachment description has this metadata key (canonical bytes hold keys verbatim).
const ATTACHMENT_KEY: &[u8] = b"attachment.1.sha256";
/// Chunks sent to a neighbour before the first of them is acknowledged.
const CHUNKS_IN_FLIGHT: usize = 4;
/// How long a chunk that arrived ahead of its predecessor waits for it.
const REORDER_WAIT: Duration = Duration::from_secs(30);

/// Why an attachment transfer stopped before the neighbour held it all.
pub(super) struct Interrupted {
    reason: String,
    /// The neighbour refused it for good: retrying cannot help.
    permanent: bool,
    /// The bytes stopped arriving here (a cut-through transfer whose sender stopped): the transfer
    /// ends without the neighbour holding the file, and a later one resumes it.
    stalled: bool,
}

impl From<String> for Interrupted {
    fn from(reason: String) -> Interrupted {
        Interrupted { reason, permanent: false, stalled: false }
    }
}

impl Interrupted {
    pub(super) fn stalled(reason: String) -> Interrupted {
        Interrupted { reason, permanent: false, stalled: true }
    }
}

/// The document an attachment is sent for, named in the offer so the neighbour can pass the
/// attachment on before the document arrives.
pub(super) enum ForDocument {
    /// A document in custody here, by its canonical header (its signature is read from the store).
    Stored(Vec<u8>),
    /// A document a neighbour named in its own offer (cut-through).
    Offered(OfferedFor),
}

impl ForDocument {
    /// The document's priority, if its header reads.
    fn priority(&self) -> Option<exchange_wire::Priority> {
        let header = match self {
            ForDocument::Stored(header) => header,
            ForDocument::Offered(offered) => &offered.header,
        };
        Envelope::from_canonical_bytes(header).ok().map(|e| e.priority)
    }
}

/// The one answer for an attachment a document may not cite: not uploaded here by its sender, nor
/// received here by it.
pub(crate) fn not_uploaded(sender: &UnitAddress, a: &Attachment) -> Refusal {
    Refusal::new(
        "attachment-missing",
        409,
        format!(
            "attachment {} ({} bytes, SHA-256 {}) has not been uploaded to this node by {sender}, nor received here in a document {sender} may read: upload it with PUT /v1/attachments/{} first (exchange-admin send --attach does this), then submit the document",
            exchange_wire::document::escaped(&a.name),
            a.size,
            a.sha256,
            a.sha256
        ),
    )
}


impl Attachments {
    /// The attachments `env` describes that are not complete here yet. Refuses malformed
    /// descriptions, oversized attachments and sizes that contradict a stored copy.
    pub(crate) fn missing_attachments(&self, env: &Envelope) -> Result<Vec<Attachment>, Refusal> {
        if env.kind != Kind::Document {
            return Ok(Vec::new());
        }
        let described = document::attachments(env).map_err(|e| Refusal::malformed(e.to_string()))?;
        let mut missing = Vec::new();
        for a in described {
            if a.size > self.services.limits.max_attachment_bytes {
                return Err(Refusal::new(
                    "payload-too-large",
                    413,
                    format!(
                        "attachment {} is {} bytes; this node accepts attachments up to {} bytes (limits.max_attachment_bytes)",
                        exchange_wire::document::escaped(&a.name), a.size, self.services.limits.max_attachment_bytes
                    ),
                ));
            }
            match self.files.open_complete(&a.sha256) {
                Ok(Some((_, len))) if len == a.size => {
                    // In use again: a retention sweep must not take it for an old file now. If a
                    // sweep removed it in the meantime, it is missing after all.
                    match self.files.touch(&a.sha256) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(a),
                        Err(e) => tracing::warn!(error = %e, attachment = %a.sha256, "cannot mark an attachment as used"),
                    }
                }
                Ok(Some((_, len))) => {
                    return Err(Refusal::malformed(format!(
                        "attachment {} is described as {} bytes, but the bytes with SHA-256 {} are {len} bytes long",
                        exchange_wire::document::escaped(&a.name), a.size, a.sha256
                    )));
                }
                Ok(None) => missing.push(a),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the attachment store");
                    return Err(Refusal { code: "storage", message: "the node could not read its attachment store; try again later".into(), status: 503, transient: true });
                }
            }
        }
        Ok(missing)
    }

    /// Appends bytes from a neighbour to an attachment on a blocking thread and counts them.
    pub(crate) async fn store_attachment_chunk(
        self: &Arc<Self>,
        from: &str,
        sha256: Digest,
        size: u64,
        offset: u64,
        bytes: Vec<u8>,
    ) -> Result<Held, AttachmentError> {
        let store = self.files.clone();
        self.append_counted(from, sha256, size, bytes, move |b| store.append(&sha256, size, offset, b)).await
    }

    /// Appends bytes of `unit`'s own upload (begun with [`crate::storage::attachments::AttachmentStore::begin_upload`]).
    pub(crate) async fn store_upload_chunk(
        self: &Arc<Self>,
        unit: &UnitAddress,
        sha256: Digest,
        size: u64,
        offset: u64,
        bytes: Vec<u8>,
    ) -> Result<Held, AttachmentError> {
        let store = self.files.clone();
        let unit = unit.to_string();
        self.append_counted("agency", sha256, size, bytes, move |b| store.append_upload(&unit, &sha256, size, offset, b)).await
    }

    async fn append_counted(
        &self,
        from: &str,
        sha256: Digest,
        size: u64,
        bytes: Vec<u8>,
        append: impl FnOnce(&[u8]) -> Result<Held, AttachmentError> + Send + 'static,
    ) -> Result<Held, AttachmentError> {
        if size > self.services.limits.max_attachment_bytes {
            return Err(AttachmentError::TooLarge { size, limit: self.services.limits.max_attachment_bytes });
        }
        self.health.intake().map_err(AttachmentError::IntakeClosed)?;
        let len = bytes.len() as u64;
        let held = tokio::task::spawn_blocking(move || append(&bytes))
            .await
            .unwrap_or_else(|e| Err(AttachmentError::Io(std::io::Error::other(e))));
        match &held {
            Ok(h) => {
                self.services.metrics.attachment_bytes_received.with_label_values(&[from]).inc_by(len);
                if *h == Held::Complete {
                    tracing::info!(%sha256, size, %from, "attachment complete and verified");
                }
            }
            Err(AttachmentError::Io(e)) => {
                self.services.metrics.storage_errors.with_label_values(&["commit"]).inc();
                tracing::error!(error = %e, %sha256, "cannot write an attachment chunk");
            }
            Err(_) => {}
        }
        held
    }

    /// Whether `unit` may have attachment `sha256` (see it held, cite it, read it): it uploaded the
    /// bytes here itself, or received them with a document it may read (it sent the document, or
    /// the document is in its inbox and was not recalled). A file that only passed through this
    /// node, or another unit's upload, is not the unit's: knowing a SHA-256 gives nothing.
    pub(crate) async fn may_have_attachment(&self, unit: &UnitAddress, sha256: &Digest) -> Result<bool, Refusal> {
        let (store, u, d) = (self.files.clone(), unit.to_string(), *sha256);
        if tokio::task::spawn_blocking(move || store.uploaded_by(&u, &d)).await.unwrap_or(false) {
            return Ok(true);
        }
        let hex = sha256.to_hex();
        // Bounded: decoys citing the hex in another field can only come from the unit's own mail.
        let headers = self.services.store.documents_readable_by(&hex, unit.as_str(), 256).await?;
        Ok(headers.iter().any(|h| {
            Envelope::from_canonical_bytes(h)
                .ok()
                .and_then(|env| document::attachments(&env).ok())
                .is_some_and(|all| all.iter().any(|a| a.sha256 == *sha256))
        }))
    }

    /// A document submitted at this node may cite only attachments its sender may have (see
    /// [`Attachments::may_have_attachment`]). An attachment that is not held and one that is held but
    /// not the sender's get the same answer, so a refusal tells nothing about other units' files.
    /// Left to the later checks: callers that may not act for the sender, and malformed
    /// descriptions. With authentication off (`api.require_auth = false`) there is no unit to hold
    /// to its own files.
    pub(crate) async fn check_citations(&self, caller: &Caller, env: &Envelope) -> Result<(), Refusal> {
        if env.kind != Kind::Document || !matches!(caller, Caller::Unit(_)) || caller.may_act_for(&env.sender).is_err() {
            return Ok(());
        }
        let Ok(described) = document::attachments(env) else { return Ok(()) };
        for a in described {
            let held = matches!(self.files.open_complete(&a.sha256), Ok(Some((_, len))) if len == a.size);
            if !held || !self.may_have_attachment(&env.sender, &a.sha256).await? {
                return Err(not_uploaded(&env.sender, &a));
            }
        }
        Ok(())
    }

    /// Removes agencies' unfinished uploads not written for `attachments.upload_ttl_secs`, at a
    /// quarter of that interval (at most every minute, at least every second), for as long as the
    /// node runs.
    pub(crate) async fn sweep_uploads_forever(self: Arc<Self>) {
        let ttl = self.files.upload_limits.ttl;
        let every = (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        self.services.metrics.attachment_uploads_swept.with_label_values(&[] as &[&str]).inc_by(0);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let store = self.files.clone();
            match tokio::task::spawn_blocking(move || store.sweep_uploads(std::time::SystemTime::now())).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => {
                    self.services.metrics.attachment_uploads_swept.with_label_values(&[] as &[&str]).inc_by(n);
                    tracing::info!(uploads = n, ttl_secs = ttl.as_secs(), "removed unfinished attachment uploads abandoned for longer than attachments.upload_ttl_secs");
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot sweep unfinished attachment uploads"),
                Err(e) => tracing::warn!(error = %e, "attachment upload sweep task failed"),
            }
        }
    }

    /// Chunks of one attachment may arrive out of order (several are in flight on their own
    /// streams): one that starts past the committed length waits, briefly, for the chunks before it.
    async fn wait_for_predecessor(&self, sha256: Digest, offset: u64) {
        let mut progress = self.progress(sha256);
        if *progress.borrow() == offset || offset < CHUNK_BYTES {
            return;
        }
        if let Ok(Held::Partial(n)) = self.attachment_held(sha256).await
            && n >= offset
        {
            return;
        }
        if tokio::time::timeout(REORDER_WAIT, progress.wait_for(|&c| c >= offset)).await.is_err() {
            let committed = *progress.borrow();
            tracing::warn!(attachment = %sha256, offset, committed, wait_s = REORDER_WAIT.as_secs(), "a chunk waited for the chunks before it and they did not come; trying it anyway");
        }
    }

    /// How much of `sha256` is held here.
    pub(crate) async fn attachment_held(&self, sha256: Digest) -> std::io::Result<Held> {
        let store = self.files.clone();
        tokio::task::spawn_blocking(move || store.held(&sha256)).await.map_err(std::io::Error::other)?
    }

    /// Answers a neighbour's offer or chunk, after the chunk is durable. An offer naming its
    /// document starts passing the attachment on at once (cut-through): `forwarder` gives the
    /// signals of a neighbour's forwarder, starting it if need be.
    pub(crate) async fn answer_attachment(
        self: Arc<Self>,
        peer: PeerId,
        request: AttachmentRequest,
        channel: Reply<AttachmentResponse>,
        forwarder: impl Fn(&NodeId) -> Arc<Signals>,
    ) {
        let Some(from) = self.services.dir.current().node_by_peer(&peer).map(|n| n.id.clone()) else {
            let reason = format!("peer {peer} is not a node in the directory");
            return self.services.net.respond_attachment(channel, AttachmentResponse::Refused { reason, permanent: false }).await;
        };
        let held = match request {
            AttachmentRequest::Offer { sha256, size, document } => {
                if let Some(offered) = document {
                    self.pass_on_early(&from, sha256, size, offered, forwarder);
                }
                self.attachment_held(sha256).await.map_err(AttachmentError::Io)
            }
            AttachmentRequest::Chunk { sha256, size, offset, bytes } => {
                self.wait_for_predecessor(sha256, offset).await;
                let held = self.store_attachment_chunk(from.as_str(), sha256, size, offset, bytes).await;
                self.committed(sha256, &held);
                held
            }
        };
        if let Err(e @ AttachmentError::DigestMismatch { .. }) = &held {
            // A neighbour's bytes that do not match the signed digest: corrupt storage or worse.
            let r = Refusal::new("attachment-mismatch", 422, e.to_string());
            self.services.refused(from.as_str(), &[Refused { id: None, kind: Some(Kind::Document), refusal: &r }]).await;
        }
        let response = match held {
            Ok(Held::Complete) => AttachmentResponse::Held { committed: 0, complete: true },
            Ok(Held::Partial(committed)) => AttachmentResponse::Held { committed, complete: false },
            Err(e) => AttachmentResponse::Refused { permanent: matches!(e, AttachmentError::TooLarge { .. }), reason: e.to_string() },
        };
        self.services.net.respond_attachment(channel, response).await;
    }

    /// Whether neighbour `hop` holds every attachment of the document with canonical `header`. Starts
    /// the transfer of those it may lack; the forwarder is woken when one completes.
    pub(crate) fn attachments_at(self: &Arc<Self>, hop: &NodeId, signals: &Arc<Signals>, header: &[u8]) -> bool {
        // The hot path: most documents have no attachment; skip parsing their headers.
        if !header.windows(ATTACHMENT_KEY.len()).any(|w| w == ATTACHMENT_KEY) {
            return true;
        }
        let Ok(env) = Envelope::from_canonical_bytes(header) else { return true };
        if env.kind != Kind::Document {
            return true;
        }
        let Ok(described) = document::attachments(&env) else { return true };
        let mut ready = true;
        for a in described {
            match self.at_neighbour(hop, a.sha256) {
                AtNeighbour::Held => {}
                AtNeighbour::Running => ready = false,
                AtNeighbour::Started => {
                    ready = false;
                    let doc = ForDocument::Stored(header.to_vec());
                    self.services.tasks.spawn(self.clone().send_attachment(hop.clone(), signals.clone(), a, doc));
                }
            }
        }
        ready
    }

    /// Retention: removes attachment files not written or used since `before_ms` that no message
    /// still needs (see [`crate::storage::Store::attachment_in_use`]), and abandoned partial uploads
    /// as old. Returns how many files were removed.
    pub(crate) async fn sweep_attachments(&self, before_ms: i64) -> Result<u64, crate::storage::StorageError> {
        let before = std::time::UNIX_EPOCH + Duration::from_millis(before_ms.max(0) as u64);
        let store = self.files.clone();
        let files = tokio::task::spawn_blocking(move || store.files())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|e| crate::storage::StorageError::Corrupt(format!("cannot list the attachment store: {e}")))?;
        let mut removed = 0;
        for (digest, complete, modified) in files {
            if modified >= before || (complete && self.services.store.attachment_in_use(&digest.to_hex(), before_ms).await?) {
                continue;
            }
            let store = self.files.clone();
            match tokio::task::spawn_blocking(move || store.remove_unused(&digest, complete, before)).await {
                Ok(Ok(true)) => removed += 1,
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, attachment = %digest, "cannot remove an old attachment file"),
                Err(e) => tracing::warn!(error = %e, "attachment sweep task failed"),
            }
        }
        Ok(removed)
    }

    /// Forgets that `hop` holds the attachments of a document it asked to be retried.
    pub(crate) fn forget_attachments_at(&self, hop: &NodeId, header: &[u8]) {
        let Ok(env) = Envelope::from_canonical_bytes(header) else { return };
        let Ok(described) = document::attachments(&env) else { return };
        for a in described {
            self.forget(hop, a.sha256);
        }
    }

    /// Sends one attachment to `hop` until the neighbour holds all of it, resuming after failures
    /// from what the neighbour has committed. One attachment at a time per neighbour.
    pub(super) async fn send_attachment(self: Arc<Self>, hop: NodeId, signals: Arc<Signals>, a: Attachment, doc: ForDocument) {
        let urgent = doc.priority().is_some_and(|p| p.is_urgent());
        let _turn = if urgent { signals.urgent_attachment_turn.lock().await } else { signals.attachment_turn.lock().await };
        let offered = self.offered_for(doc).await;
        let cfg = &self.services.relay_cfg;
        let mut backoff = Backoff::new(Duration::from_millis(cfg.retry_initial_ms), Duration::from_millis(cfg.retry_max_ms));
        loop {
            match self.try_send_attachment(&hop, &a, offered.clone()).await {
                Ok(()) => break,
                Err(Interrupted { reason, stalled: true, .. }) => {
                    tracing::warn!(%hop, attachment = %a.sha256, %reason, "stopped passing an attachment on; it resumes when it arrives again");
                    self.transfer_abandoned(&hop, a.sha256);
                    // A document waiting for it (there should be none: custody needs the whole
                    // file here) starts a new transfer.
                    signals.work.notify_one();
                    return;
                }
                Err(Interrupted { reason, permanent: true, .. }) => {
                    // The document goes on all the same: the neighbour refuses it for good, so it
                    // becomes a dead letter here and its sender is told, instead of waiting forever.
                    tracing::error!(%hop, attachment = %a.sha256, %reason, "neighbour refused an attachment for good; handing over its document to be refused");
                    break;
                }
                Err(Interrupted { reason, .. }) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%hop, attachment = %a.sha256, %reason, retry_in_ms = delay.as_millis() as u64, "attachment transfer interrupted; will resume");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = signals.link_up.notified() => {}
                    }
                }
            }
        }
        self.transfer_ended(&hop, a.sha256);
        signals.work.notify_one();
    }

    /// The signed document to name in the offer (without it the neighbour only waits for the document).
    async fn offered_for(&self, doc: ForDocument) -> Option<OfferedFor> {
        let header = match doc {
            ForDocument::Offered(offered) => return Some(offered),
            ForDocument::Stored(header) => header,
        };
        let id: [u8; 32] = exchange_wire::digest_payload(&header).0;
        match self.services.store.message(&id).await {
            Ok(Some(StoredMessage { signature, .. })) => Some(OfferedFor { header, signature }),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a document to name in an attachment offer");
                None
            }
        }
    }

    async fn try_send_attachment(&self, hop: &NodeId, a: &Attachment, document: Option<OfferedFor>) -> Result<(), Interrupted> {
        use futures::StreamExt;
        let peer = peer_for(&self.services.dir.current(), &self.links, hop).ok_or_else(|| Interrupted::from(format!("{hop} is not in the directory")))?;
        let ask = |request| async move {
            match self.services.net.attachment(peer, request).await.map_err(|e| Interrupted::from(e.to_string()))? {
                AttachmentResponse::Held { complete: true, .. } => Ok(None),
                AttachmentResponse::Held { committed, .. } => Ok(Some(committed)),
                AttachmentResponse::Refused { reason, permanent } => Err(Interrupted { reason: format!("{hop} refused: {reason}"), permanent, stalled: false }),
            }
        };
        let Some(offset) = ask(AttachmentRequest::Offer { sha256: a.sha256, size: a.size, document }).await? else { return Ok(()) };
        if offset > 0 {
            self.services.metrics.attachment_resumes.with_label_values(&[hop.as_str()]).inc();
            tracing::info!(%hop, attachment = %a.sha256, offset, size = a.size, "resuming an attachment transfer from the neighbour's last committed chunk");
        }
        // A window of chunks in flight, so the link carries the next chunks while the neighbour
        // writes one to disk; the neighbour appends them in order (see `answer_attachment`). Chunks
        // still arriving here (cut-through) join the window as they become durable.
        let mut in_flight = futures::stream::FuturesOrdered::new();
        let mut next = offset;
        loop {
            while in_flight.len() < CHUNKS_IN_FLIGHT && next < a.size {
                let Some(bytes) = self.chunk_if_held(a, next).await? else { break };
                let (len, at) = (bytes.len() as u64, next);
                next += len;
                in_flight.push_back(ask(AttachmentRequest::Chunk { sha256: a.sha256, size: a.size, offset: at, bytes }));
                self.services.metrics.attachment_bytes_sent.with_label_values(&[hop.as_str()]).inc_by(len);
            }
            if in_flight.is_empty() && next < a.size {
                self.wait_for_chunk(a, next).await?;
                continue;
            }
            match in_flight.next().await {
                None => return Err(Interrupted::from(format!("{hop} did not report the attachment complete after its last chunk"))),
                Some(Ok(None)) => return Ok(()),
                Some(Ok(Some(_))) => {}
                Some(Err(e)) => return Err(e),
            }
        }
    }
}
