//! The relay engine: custody of messages from agencies and neighbours, delivery into inboxes,
//! receipts, and the forwarders that carry the outbox to neighbours.
//!
//! Every path follows one rule: verify, decide (plain functions in [`custody`]), commit through the
//! group committer, and only then acknowledge, wake forwarders and count.

pub mod committer;
pub mod custody;
pub mod forwarder;
pub mod refusal;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ed25519_dalek::SigningKey;
use exchange_wire::api::{
    BatchItemResult, InboxItem, ReceiptView, RecipientState, RecipientStatus, SignForResponse, SignedMessage,
    StatusResponse, SubmitResponse,
};
use exchange_wire::envelope::verify_batch;
use exchange_wire::receipt::{Hop, Receipt};
use exchange_wire::{Digest, Envelope, Kind, MessageId, NodeId, SignedEnvelope, UnitAddress};
use libp2p::PeerId;
use libp2p::request_response::ResponseChannel;
use tokio::sync::watch;

use crate::config::{Limits, NodeConfig, RelayConfig};
use crate::directory::{Directory, DirectoryHandle};
use crate::metrics::Metrics;
use crate::network::protocol::{ParcelResult, TransferRequest, TransferResponse};
use crate::network::{self, Neighbour};
use crate::storage::{AuditRow, InboxRecord, JobOutcome, Record, Store, WriteJob};
use committer::Committer;
use custody::{Context, Incoming, Summary};
use forwarder::Signals;
pub use refusal::Refusal;

/// Everything the node's tasks share.
pub struct Engine {
    pub here: NodeId,
    pub dir: DirectoryHandle,
    pub store: Arc<dyn Store>,
    pub committer: Committer,
    pub metrics: Arc<Metrics>,
    pub net: network::Client,
    pub limits: Limits,
    pub relay_cfg: RelayConfig,
    /// Upper bound on an inbox long-poll.
    pub api_max_wait_ms: u64,
    pub peer_id: PeerId,
    pub started: Instant,
    node_key: SigningKey,
    forwarders: Mutex<HashMap<NodeId, Arc<Signals>>>,
    /// Bumped after every commit that put something into an inbox (long-poll wake-up).
    inbox_changes: watch::Sender<u64>,
}

/// A decoded, not yet verified message, with what is needed to verify it.
struct Candidate {
    signed: SignedEnvelope,
    payload: Vec<u8>,
    recipients: Vec<UnitAddress>,
    hops: Vec<Hop>,
}

impl Engine {
    pub fn new(
        cfg: &NodeConfig,
        dir: DirectoryHandle,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        net: network::Client,
        node_key: SigningKey,
    ) -> Arc<Engine> {
        let committer = Committer::spawn(store.clone(), metrics.clone(), cfg.relay.commit_max_requests);
        let peer_id = crate::directory::peer_id_of(&exchange_wire::PublicKey(node_key.verifying_key()));
        Arc::new(Engine {
            here: cfg.node_id.clone(),
            dir,
            store,
            committer,
            metrics,
            net,
            limits: cfg.limits.clone(),
            relay_cfg: cfg.relay.clone(),
            api_max_wait_ms: cfg.api.max_wait_ms,
            peer_id,
            started: Instant::now(),
            node_key,
            forwarders: Mutex::new(HashMap::new()),
            inbox_changes: watch::channel(0).0,
        })
    }

    /// Starts forwarders for every neighbour and every hop with queued work, tells the network which
    /// peers to admit and dial, and sets the outbox gauges.
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        let dir = self.dir.current();
        let allowed: Vec<PeerId> = dir.nodes().filter(|n| n.id != self.here).map(|n| n.peer_id).collect();
        let neighbours: Vec<Neighbour> =
            dir.neighbours(&self.here).into_iter().map(|n| Neighbour { peer: n.peer_id, addresses: n.addresses.clone() }).collect();
        for n in dir.neighbours(&self.here) {
            self.forwarder(&n.id);
            self.metrics.peer_up.with_label_values(&[n.id.as_str()]).set(0);
        }
        for (hop, depth) in self.store.outbox_depths().await? {
            self.metrics.outbox_depth.with_label_values(&[&hop]).set(depth);
            if let Ok(id) = hop.parse() {
                self.forwarder(&id).work.notify_one();
            }
        }
        self.net.set_peers(allowed, neighbours).await;
        Ok(())
    }

    /// The forwarder signals for `hop`, starting its task on first use.
    fn forwarder(self: &Arc<Self>, hop: &NodeId) -> Arc<Signals> {
        let mut map = self.forwarders.lock().expect("forwarders lock");
        map.entry(hop.clone())
            .or_insert_with(|| {
                let signals = Arc::new(Signals::default());
                tokio::spawn(forwarder::run(self.clone(), hop.clone(), signals.clone()));
                signals.work.notify_one();
                signals
            })
            .clone()
    }

    /// Reacts to the network: inbound batches and links going up or down.
    pub async fn on_network_event(self: &Arc<Self>, event: network::NetworkEvent) {
        match event {
            network::NetworkEvent::Inbound { peer, request, channel } => {
                let engine = self.clone();
                tokio::spawn(async move { engine.inbound(peer, request, channel).await });
            }
            network::NetworkEvent::PeerUp(peer) | network::NetworkEvent::PeerDown(peer) => {
                let up = matches!(event, network::NetworkEvent::PeerUp(_));
                if let Some(node) = self.dir.current().node_by_peer(&peer).map(|n| n.id.clone()) {
                    self.metrics.peer_up.with_label_values(&[node.as_str()]).set(up as i64);
                    if up {
                        self.forwarder(&node).link_up.notify_one();
                    }
                }
            }
        }
    }

    fn context<'a>(&'a self, dir: &'a Directory) -> Context<'a> {
        Context { here: &self.here, dir, node_key: &self.node_key, now_ms: exchange_wire::now_ms() }
    }

    /// Verifies candidates' signatures against the directory, in one batch where possible.
    ///
    /// Receipts, and senders with more than one valid key (a rotation in progress), are checked one by
    /// one with strict verification: a receipt must verify offline exactly as it did here, and batch
    /// verification is not bit-for-bit the same check (see docs/protocol.md).
    async fn verify(dir: &Arc<Directory>, candidates: &[Candidate]) -> Vec<Result<(), Refusal>> {
        let keys: Vec<Vec<ed25519_dalek::VerifyingKey>> = candidates
            .iter()
            .map(|c| dir.signing_keys(&c.signed.envelope.sender).into_iter().map(|k| k.0).collect())
            .collect();
        let work: Vec<(SignedEnvelope, Vec<ed25519_dalek::VerifyingKey>)> =
            candidates.iter().zip(&keys).map(|(c, k)| (c.signed.clone(), k.clone())).collect();
        // Signature checks are CPU work: keep them off the async workers when there are many.
        let check = move || -> Vec<Result<(), exchange_wire::EnvelopeError>> {
            let batchable: Vec<usize> =
                (0..work.len()).filter(|&i| work[i].1.len() == 1 && work[i].0.envelope.kind != Kind::Receipt).collect();
            let refs: Vec<(&SignedEnvelope, &ed25519_dalek::VerifyingKey)> = batchable.iter().map(|&i| (&work[i].0, &work[i].1[0])).collect();
            let mut out: Vec<Option<Result<(), exchange_wire::EnvelopeError>>> = vec![None; work.len()];
            for (&i, r) in batchable.iter().zip(verify_batch(&refs)) {
                out[i] = Some(r);
            }
            out.into_iter()
                .enumerate()
                .map(|(i, r)| {
                    r.unwrap_or_else(|| {
                        let (signed, keys) = &work[i];
                        keys.iter().find_map(|k| signed.verify(k).ok()).ok_or(exchange_wire::EnvelopeError::BadSignature)
                    })
                })
                .collect()
        };
        let results = if candidates.len() > 8 { tokio::task::spawn_blocking(check).await.expect("verify task") } else { check() };
        results
            .into_iter()
            .zip(candidates.iter().zip(&keys))
            .map(|(r, (c, k))| {
                if k.is_empty() {
                    return Err(Refusal::new(
                        "unknown-sender",
                        403,
                        format!("sender {} is not in the directory, so its signature cannot be checked", c.signed.envelope.sender),
                    ));
                }
                r.map_err(Refusal::from)
            })
            .collect()
    }

    /// Records refusals: a metric, an audit entry and a log line for each.
    async fn refused(&self, source: &str, refusals: &[(Option<MessageId>, &Refusal)]) {
        if refusals.is_empty() {
            return;
        }
        let now = exchange_wire::now_ms() as i64;
        let mut audit = Vec::new();
        for (id, r) in refusals {
            self.metrics.rejected.with_label_values(&[r.code]).inc();
            if r.code == "bad-signature" {
                let from = if source == "agency" { "agency" } else { "peer" };
                self.metrics.signature_failures.with_label_values(&[from]).inc();
            }
            tracing::warn!(%source, code = r.code, message = ?id.map(|i| i.to_hex()), reason = %r.message, "refused");
            let detail = match id {
                Some(id) => format!("{}: {} (message {id})", r.code, r.message),
                None => format!("{}: {}", r.code, r.message),
            };
            audit.push(AuditRow { at_ms: now, category: "refused", source: source.to_string(), detail });
        }
        if let Err(e) = self.committer.commit(vec![WriteJob::Record(Record { audit, ..Default::default() })]).await {
            tracing::error!(error = %e, "cannot write audit entries for refused input");
        }
    }

    /// Records one refused API request (malformed body, oversized request).
    pub async fn refused_input(&self, r: &Refusal) {
        self.refused("agency", &[(None, r)]).await;
    }

    /// After a commit: wake forwarders, wake inbox long-polls, count.
    fn after_commit(self: &Arc<Self>, summary: &Summary, outbox_rows: &HashMap<NodeId, i64>) {
        for hop in &summary.next_hops {
            self.forwarder(hop).work.notify_one();
        }
        for (hop, n) in outbox_rows {
            self.metrics.outbox_depth.with_label_values(&[hop.as_str()]).add(*n);
        }
        if !summary.delivered.is_empty() {
            self.inbox_changes.send_modify(|v| *v += 1);
        }
        for k in &summary.delivered {
            self.metrics.delivered.with_label_values(&[k.as_str()]).inc();
        }
        for ms in &summary.latencies_ms {
            self.metrics.delivery_latency.observe(*ms as f64 / 1000.0);
        }
        if summary.receipts_returned > 0 {
            self.metrics.receipts.with_label_values(&["signed-for", "returned"]).inc_by(summary.receipts_returned as u64);
        }
    }

    /// After a neighbour's acknowledgement was recorded.
    pub(crate) fn after_acknowledged(&self, hop: &NodeId, record: &Record) {
        let gone = (record.outbox_done.len() + record.outbox_dead.len()) as i64;
        self.metrics.outbox_depth.with_label_values(&[hop.as_str()]).sub(gone);
        self.metrics.forwarded.with_label_values(&[hop.as_str()]).inc_by(record.outbox_done.len() as u64);
    }

    /// Decides custody for verified candidates and commits them together. One result per candidate.
    async fn take_custody(
        self: &Arc<Self>,
        dir: &Directory,
        from: Option<&NodeId>,
        candidates: Vec<(Candidate, Result<(), Refusal>)>,
        extra: impl Fn(&Candidate, &mut crate::storage::Custody),
        sign_for: Option<(String, [u8; 32])>,
    ) -> Vec<Result<JobOutcome, Refusal>> {
        let ctx = self.context(dir);
        let mut results: Vec<Option<Result<JobOutcome, Refusal>>> = Vec::with_capacity(candidates.len());
        let mut jobs = Vec::new();
        let mut job_of = Vec::new();
        let mut summaries = Vec::new();
        for (i, (cand, verdict)) in candidates.into_iter().enumerate() {
            if let Err(r) = verdict {
                results.push(Some(Err(r)));
                continue;
            }
            let kind = cand.signed.envelope.kind;
            let mut incoming_extra = crate::storage::Custody::default();
            extra(&cand, &mut incoming_extra);
            let incoming = Incoming { signed: cand.signed, payload: cand.payload, recipients: cand.recipients, from: from.cloned(), hops: cand.hops };
            match custody::take(&ctx, incoming) {
                Ok((mut c, s)) => {
                    c.events.extend(incoming_extra.events);
                    let job = match &sign_for {
                        Some((unit, id)) => WriteJob::SignFor { unit: unit.clone(), message_id: *id, receipt: c },
                        None => WriteJob::Custody(c),
                    };
                    jobs.push(job);
                    job_of.push(i);
                    summaries.push((s, kind));
                    results.push(None);
                }
                Err(r) => results.push(Some(Err(r))),
            }
        }
        if !jobs.is_empty() {
            let outbox_rows: Vec<HashMap<NodeId, i64>> = jobs.iter().map(outbox_counts).collect();
            match self.committer.commit(jobs).await {
                Ok(outcomes) => {
                    for ((outcome, i), ((summary, kind), rows)) in outcomes.into_iter().zip(job_of).zip(summaries.into_iter().zip(outbox_rows)) {
                        if outcome == JobOutcome::Stored {
                            let source = if from.is_some() { "peer" } else { "agency" };
                            self.metrics.accepted.with_label_values(&[kind.as_str(), source]).inc();
                            self.after_commit(&summary, &rows);
                        }
                        results[i] = Some(Ok(outcome));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "commit failed; nothing was accepted");
                    for i in job_of {
                        results[i] = Some(Err(Refusal {
                            code: "storage",
                            message: "the node could not store the message; nothing was accepted, try again later".into(),
                            status: 503,
                            transient: true,
                        }));
                    }
                }
            }
        }
        results.into_iter().map(|r| r.expect("every candidate has a result")).collect()
    }

    /// Checks a submission from an agency up to (not including) the signature.
    fn decode_submission(&self, dir: &Directory, m: &SignedMessage) -> Result<Candidate, Refusal> {
        let env = &m.envelope;
        if env.kind != Kind::Document {
            return Err(Refusal::new(
                "unsupported-kind",
                400,
                format!("agencies submit documents here; a {} is sent through its own endpoint", env.kind),
            ));
        }
        self.check_size(env.payload_size)?;
        if dir.home_of(&env.sender).as_ref() != Some(&self.here) {
            return Err(match dir.home_of(&env.sender) {
                None => Refusal::new("unknown-sender", 403, format!("sender {} is not in the directory", env.sender)),
                Some(home) => Refusal::new(
                    "wrong-node",
                    403,
                    format!("sender {} belongs to node {home}; submit through that node", env.sender),
                ),
            });
        }
        let (signed, payload) = m.decode()?;
        // Unknown recipients are refused here, at ingress, never dropped further on.
        crate::routing::plan(dir, &self.here, signed.envelope.recipients())?;
        let recipients = signed.envelope.recipients().cloned().collect();
        Ok(Candidate { signed, payload, recipients, hops: vec![] })
    }

    fn check_size(&self, size: u64) -> Result<(), Refusal> {
        if size > self.limits.max_payload_bytes {
            return Err(Refusal::new(
                "payload-too-large",
                413,
                format!(
                    "payload is {size} bytes; this node accepts at most {} bytes (limits.max_payload_bytes)",
                    self.limits.max_payload_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Submissions from agencies: verify, take custody, answer after the commit.
    pub async fn submit(self: &Arc<Self>, messages: Vec<SignedMessage>) -> Vec<BatchItemResult> {
        let dir = self.dir.current();
        let decoded: Vec<Result<Candidate, Refusal>> = messages.iter().map(|m| self.decode_submission(&dir, m)).collect();
        let ids: Vec<Option<MessageId>> = messages.iter().map(|m| Some(m.envelope.message_id())).collect();
        drop(messages);
        let results = self.verify_and_take(&dir, None, decoded, None).await;
        let refusals: Vec<(Option<MessageId>, &Refusal)> =
            results.iter().zip(&ids).filter_map(|(r, id)| r.as_ref().err().map(|e| (*id, e))).collect();
        self.refused("agency", &refusals).await;
        let now = exchange_wire::now_ms();
        results
            .into_iter()
            .zip(ids)
            .map(|(r, id)| match r {
                Ok(outcome) => BatchItemResult::Accepted(SubmitResponse {
                    id: id.expect("decoded"),
                    duplicate: outcome == JobOutcome::Duplicate,
                    accepted_at_ms: now,
                }),
                Err(e) => BatchItemResult::Refused(e.body()),
            })
            .collect()
    }

    async fn verify_and_take(
        self: &Arc<Self>,
        dir: &Arc<Directory>,
        from: Option<&NodeId>,
        decoded: Vec<Result<Candidate, Refusal>>,
        sign_for: Option<(String, [u8; 32], UnitAddress, MessageId)>,
    ) -> Vec<Result<JobOutcome, Refusal>> {
        let mut slots: Vec<Option<Result<JobOutcome, Refusal>>> = Vec::with_capacity(decoded.len());
        let mut ok = Vec::new();
        let mut ok_idx = Vec::new();
        for (i, d) in decoded.into_iter().enumerate() {
            match d {
                Ok(c) => {
                    ok.push(c);
                    ok_idx.push(i);
                    slots.push(None);
                }
                Err(r) => slots.push(Some(Err(r))),
            }
        }
        let verdicts = Self::verify(dir, &ok).await;
        let extra = |_: &Candidate, c: &mut crate::storage::Custody| {
            if let Some((_, _, unit, id)) = &sign_for {
                c.events.push(custody::event(id.0, exchange_wire::now_ms(), "signed-for", Some(unit), None, None));
            }
        };
        let taken = self
            .take_custody(dir, from, ok.into_iter().zip(verdicts).collect(), extra, sign_for.as_ref().map(|(u, id, _, _)| (u.clone(), *id)))
            .await;
        for (i, r) in ok_idx.into_iter().zip(taken) {
            slots[i] = Some(r);
        }
        slots.into_iter().map(|s| s.expect("every item has a result")).collect()
    }

    /// A batch handed over by a neighbour: verify each parcel, commit, answer after the commit.
    pub async fn inbound(self: Arc<Self>, peer: PeerId, request: TransferRequest, channel: ResponseChannel<TransferResponse>) {
        let dir = self.dir.current();
        let Some(from) = dir.node_by_peer(&peer).map(|n| n.id.clone()) else {
            // The allow list should have stopped it; refuse everything without storing anything.
            let r = Refusal::new("unknown-peer", 403, format!("peer {peer} is not a node in the directory"));
            self.refused(&peer.to_string(), &[(None, &r)]).await;
            let results = request.parcels.iter().map(|_| ParcelResult::Refused { code: r.code.into(), reason: r.message.clone() }).collect();
            self.net.respond(channel, TransferResponse { results }).await;
            return;
        };
        let decoded: Vec<Result<Candidate, Refusal>> = request.parcels.into_iter().map(|p| self.decode_parcel(p)).collect();
        let ids: Vec<Option<MessageId>> = decoded.iter().map(|d| d.as_ref().ok().map(|c| c.signed.id)).collect();
        let results = self.verify_and_take(&dir, Some(&from), decoded, None).await;
        let refusals: Vec<(Option<MessageId>, &Refusal)> =
            results.iter().zip(&ids).filter_map(|(r, id)| r.as_ref().err().map(|e| (*id, e))).collect();
        self.refused(from.as_str(), &refusals).await;
        if results.iter().any(|r| matches!(r, Err(e) if e.transient)) {
            // Storage trouble: say nothing, so the neighbour keeps custody and retries.
            return;
        }
        let results = results
            .into_iter()
            .map(|r| match r {
                Ok(JobOutcome::Stored) => ParcelResult::Stored,
                Ok(JobOutcome::Duplicate) => ParcelResult::Duplicate,
                Ok(JobOutcome::Conflict(reason)) => ParcelResult::Refused { code: "conflict".into(), reason },
                Err(e) => ParcelResult::Refused { code: e.code.into(), reason: e.message },
            })
            .collect();
        self.net.respond(channel, TransferResponse { results }).await;
    }

    fn decode_parcel(&self, p: crate::network::protocol::Parcel) -> Result<Candidate, Refusal> {
        let sig: [u8; 64] = p.signature.as_slice().try_into().map_err(|_| Refusal::malformed("signature is not 64 bytes"))?;
        let signed = SignedEnvelope::from_canonical(p.header, sig)?;
        let env = &signed.envelope;
        env.check_shape()?;
        self.check_size(env.payload_size)?;
        env.check_payload(&p.payload)?;
        if p.recipients.is_empty() || !p.recipients.iter().all(|r| env.recipients().any(|e| e == r)) {
            return Err(Refusal::malformed("parcel names recipients that the envelope does not"));
        }
        Ok(Candidate { signed, payload: p.payload, recipients: p.recipients, hops: p.hops })
    }

    /// 签收: a recipient signs for a message in its inbox with a receipt signed by its own key.
    pub async fn sign_for(
        self: &Arc<Self>,
        unit: &UnitAddress,
        message_id: &MessageId,
        receipt: SignedMessage,
    ) -> Result<SignForResponse, Refusal> {
        let dir = self.dir.current();
        let result = self.check_sign_for(&dir, unit, message_id, &receipt).await;
        let receipt_id = receipt.envelope.message_id();
        let decoded = match result {
            Ok(c) => c,
            Err(r) => {
                self.refused("agency", &[(Some(receipt_id), &r)]).await;
                return Err(r);
            }
        };
        let sign_for = Some((unit.to_string(), message_id.0, unit.clone(), *message_id));
        let mut results = self.verify_and_take(&dir, None, vec![Ok(decoded)], sign_for).await;
        match results.pop().expect("one result") {
            Ok(JobOutcome::Stored) => {
                self.metrics.receipts.with_label_values(&["signed-for", "issued"]).inc();
                Ok(SignForResponse { message_id: *message_id, receipt_id, duplicate: false })
            }
            Ok(JobOutcome::Duplicate) => Ok(SignForResponse { message_id: *message_id, receipt_id, duplicate: true }),
            Ok(JobOutcome::Conflict(reason)) => {
                let r = Refusal::new("conflict", 409, reason);
                self.refused("agency", &[(Some(receipt_id), &r)]).await;
                Err(r)
            }
            Err(r) => {
                self.refused("agency", &[(Some(receipt_id), &r)]).await;
                Err(r)
            }
        }
    }

    async fn check_sign_for(
        &self,
        dir: &Directory,
        unit: &UnitAddress,
        message_id: &MessageId,
        receipt: &SignedMessage,
    ) -> Result<Candidate, Refusal> {
        if dir.home_of(unit).as_ref() != Some(&self.here) {
            return Err(Refusal::new("not-found", 404, format!("unit {unit} is not hosted on node {}", self.here)));
        }
        let env = &receipt.envelope;
        let facts = Receipt::from_envelope(env)?;
        if &env.sender != unit {
            return Err(Refusal::new("wrong-signer", 403, format!("the receipt is from {} but the inbox is {unit}'s", env.sender)));
        }
        if &facts.for_message != message_id {
            return Err(Refusal::malformed(format!("the receipt is for message {}, not {message_id}", facts.for_message)));
        }
        let entry = self
            .store
            .inbox_entry(unit.as_str(), &message_id.0)
            .await?
            .ok_or_else(|| Refusal::new("not-found", 404, format!("message {message_id} is not in the inbox of {unit}")))?;
        let original = Envelope::from_canonical_bytes(&entry.header).map_err(|e| {
            tracing::error!(error = %e, "a stored header does not parse");
            Refusal::new("storage", 500, "stored message is unreadable")
        })?;
        if original.kind != Kind::Document {
            return Err(Refusal::new(
                "unsupported-kind",
                400,
                format!("message {message_id} is a {}; only documents are signed for", original.kind),
            ));
        }
        if env.to != [original.sender.clone()] {
            return Err(Refusal::malformed(format!("a receipt for this message goes to its sender {}", original.sender)));
        }
        let (signed, payload) = receipt.decode()?;
        Ok(Candidate { signed, payload, recipients: vec![original.sender], hops: vec![] })
    }

    /// Per-recipient status of a message sent from a unit of this node.
    pub async fn status(&self, id: &MessageId) -> Result<StatusResponse, Refusal> {
        let not_here = || {
            Refusal::new("not-found", 404, format!("message {id} was not sent from a unit of node {}; ask the sender's node", self.here))
        };
        let tracking = self.store.tracking(&id.0).await?;
        if tracking.is_empty() {
            return Err(not_here());
        }
        let stored = self.store.message(&id.0).await?.ok_or_else(not_here)?;
        let env = Envelope::from_canonical_bytes(&stored.header).map_err(|_| Refusal::new("storage", 500, "stored message is unreadable"))?;
        let mut recipients = Vec::with_capacity(tracking.len());
        for t in tracking {
            let receipt = match &t.receipt_id {
                Some(rid) => self.receipt_view(rid).await?,
                None => None,
            };
            recipients.push(RecipientStatus {
                unit: t.recipient.parse().map_err(|_| Refusal::new("storage", 500, "stored recipient is unreadable"))?,
                state: parse_state(&t.state),
                node: t.node.parse().unwrap_or_else(|_| self.here.clone()),
                at_ms: t.at_ms as u64,
                detail: t.detail,
                receipt,
            });
        }
        // Hops: ours first, then those delivering nodes reported back, earliest sighting of each node.
        let mut hops: Vec<Hop> = serde_json::from_str(&stored.hops).unwrap_or_default();
        for e in self.store.events(&id.0).await? {
            if e.event == "hop" {
                if let Some(node) = e.peer.and_then(|p| p.parse().ok()) {
                    if !hops.iter().any(|h| h.node == node) {
                        hops.push(Hop { node, at_ms: e.at_ms as u64 });
                    }
                }
            }
        }
        hops.sort_by_key(|h| h.at_ms);
        Ok(StatusResponse { id: *id, kind: env.kind, sender: env.sender, created_at_ms: env.created_at_ms, recipients, hops })
    }

    async fn receipt_view(&self, rid: &[u8]) -> Result<Option<ReceiptView>, Refusal> {
        let Ok(rid) = <[u8; 32]>::try_from(rid) else { return Ok(None) };
        let Some(m) = self.store.message(&rid).await? else { return Ok(None) };
        let Ok(sig) = <[u8; 64]>::try_from(m.signature.as_slice()) else { return Ok(None) };
        let Ok(signed) = SignedEnvelope::from_canonical(m.header, sig) else { return Ok(None) };
        Ok(Some(ReceiptView { id: Digest(rid), envelope: signed.envelope, signature: hex::encode(sig) }))
    }

    /// A unit's inbox after `after`, waiting up to `wait` for news when it is empty (long-poll).
    pub async fn inbox(&self, unit: &UnitAddress, after: i64, limit: u32, wait: std::time::Duration) -> Result<Vec<InboxItem>, Refusal> {
        if self.dir.current().home_of(unit).as_ref() != Some(&self.here) {
            return Err(Refusal::new("not-found", 404, format!("unit {unit} is not hosted on node {}", self.here)));
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.inbox_changes.subscribe();
        loop {
            changes.borrow_and_update();
            let records = self.store.inbox(unit.as_str(), after, limit.clamp(1, 1000)).await?;
            if !records.is_empty() || tokio::time::Instant::now() >= deadline {
                return records.into_iter().map(|r| self.inbox_item(r)).collect();
            }
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    fn inbox_item(&self, r: InboxRecord) -> Result<InboxItem, Refusal> {
        let corrupt = || Refusal::new("storage", 500, "a stored message is unreadable");
        let sig: [u8; 64] = r.signature.as_slice().try_into().map_err(|_| corrupt())?;
        let signed = SignedEnvelope::from_canonical(r.header, sig).map_err(|_| corrupt())?;
        Ok(InboxItem {
            seq: r.seq,
            id: Digest(r.message_id),
            delivered_at_ms: r.delivered_at_ms as u64,
            state: parse_state(&r.state),
            message: SignedMessage::new(&signed, &r.payload),
        })
    }

    /// Custody events this node recorded for a message.
    pub async fn events(&self, id: &MessageId) -> Result<Vec<exchange_wire::api::CustodyEvent>, Refusal> {
        Ok(self
            .store
            .events(&id.0)
            .await?
            .into_iter()
            .map(|e| exchange_wire::api::CustodyEvent {
                node: self.here.clone(),
                at_ms: e.at_ms as u64,
                event: e.event,
                unit: e.unit.and_then(|u| u.parse().ok()),
                peer: e.peer.and_then(|p| p.parse().ok()),
                detail: e.detail,
            })
            .collect())
    }
}

fn outbox_counts(job: &WriteJob) -> HashMap<NodeId, i64> {
    fn walk(c: &crate::storage::Custody, out: &mut HashMap<NodeId, i64>) {
        for o in &c.outbox {
            if let Ok(id) = o.next_hop.parse() {
                *out.entry(id).or_default() += 1;
            }
        }
        for f in &c.follow_ups {
            walk(f, out);
        }
    }
    let mut out = HashMap::new();
    match job {
        WriteJob::Custody(c) | WriteJob::SignFor { receipt: c, .. } => walk(c, &mut out),
        WriteJob::Record(_) => {}
    }
    out
}

fn parse_state(s: &str) -> RecipientState {
    match s {
        "accepted" => RecipientState::Accepted,
        "in-transit" => RecipientState::InTransit,
        "delivered" => RecipientState::Delivered,
        "signed-for" => RecipientState::SignedFor,
        _ => RecipientState::Failed,
    }
}
