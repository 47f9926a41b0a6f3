//! Messages handed to this node: documents from agencies, batches from neighbours, and 签收 receipts.
//! Each is decoded, checked against the directory, verified (in batches), decided by the custody
//! rules and committed; the answer goes out only after the commit.
//!
//! This file is the door a document passes: [`Ingress::submit`] (an agency) and [`Ingress::inbound`]
//! (a neighbour) both end in [`Ingress::verify_and_take`]. Beside it: [`checks`] (what an agency's
//! input must satisfy), [`signatures`] (the keys each signature is checked against, and the refusal a
//! failed check gets; the checks themselves run in `relay/verifier.rs`, batched across requests),
//! [`recall`] (撤回, 补发), [`settle`] (签收, 退回) and, in `relay/asking.rs`, queries and their answers
//! ([`Ingress::ask`], [`Ingress::answer`]).

pub(in crate::relay) mod checks;
mod recall;
mod settle;
mod signatures;

use std::sync::Arc;

use exchange_wire::api::{BatchItemResult, SignedMessage, SubmitResponse};
use exchange_wire::receipt::Hop;
use exchange_wire::{Envelope, Kind, MessageId, NodeId, SignedEnvelope, UnitAddress};
use crate::network::PeerId;
use crate::network::Reply;

use super::Engine;
use super::access::{Access, Caller};
use super::attachment_state::Attachments;
use super::commit_done::CommitDone;
use super::custody::{self, Incoming};
use super::deadlines::Queries;
use super::forwarder::Forwarders;
use super::refusal::Refusal;
use super::refused::Refused;
use super::services::Services;
use crate::storage::health::StorageHealth;
use crate::directory::Directory;
use crate::network::protocol::{Parcel, ParcelResult, TransferRequest, TransferResponse};
use crate::storage::{JobOutcome, WriteJob};

/// The door of the custody pipeline: verifies what agencies and neighbours hand this node, lets the
/// custody rules decide, commits, and answers only after the commit. It owns nothing: it is lent
/// for one request ([`Engine::ingress`]) the parts it uses, and tells the forwarders
/// ([`CommitDone`]) of each commit.
pub struct Ingress<'a> {
    pub(super) services: &'a Services,
    /// Intake closes while storage is short of space (see `storage::health`).
    pub(super) health: &'a StorageHealth,
    /// The access policy, checked for every recipient.
    pub(super) access: &'a Access,
    /// A document is taken only with all its attachments held here.
    pub(super) attachments: &'a Attachments,
    /// Told of every commit: it wakes the next hops' forwarders (see `after_commit`).
    pub(super) forwarders: &'a Arc<Forwarders>,
    /// A query taken is watched to its deadline.
    pub(super) queries: &'a Queries,
}

impl Engine {
    /// The door, lent for one request (see [`Ingress`]).
    pub fn ingress(&self) -> Ingress<'_> {
        Ingress {
            services: &self.services,
            health: &self.health,
            access: &self.access,
            attachments: &self.attachments,
            forwarders: &self.forwarders,
            queries: &self.queries,
        }
    }
}

/// A decoded message, not yet verified.
pub(crate) struct Candidate {
    pub(super) signed: SignedEnvelope,
    pub(super) payload: Vec<u8>,
    /// The recipients this node becomes responsible for.
    pub(super) recipients: Vec<UnitAddress>,
    pub(super) hops: Vec<Hop>,
}

/// A 签收 in progress: whose inbox, which message.
pub(super) struct SignFor {
    pub(super) unit: UnitAddress,
    pub(super) message_id: MessageId,
    /// The inbox state the receipt settles the message in: `signed-for` or `returned`.
    pub(super) state: &'static str,
}

/// This node's copy of the sender's directory segment is older than the handing node's.
fn directory_behind() -> Refusal {
    Refusal {
        code: "directory-behind",
        message: "this node's directory is older than the sender's keys; retry shortly".into(),
        status: 503,
        transient: true,
    }
}

/// A neighbour handed over a document before this node holds all its attachments (say, after losing
/// one): it offers the attachments again and retries.
fn attachment_not_here(a: &exchange_wire::document::Attachment) -> Refusal {
    Refusal {
        code: "attachment-missing",
        message: format!("attachment {} (SHA-256 {}) is not complete at this node yet; send it first", exchange_wire::document::escaped(&a.name), a.sha256),
        status: 503,
        transient: true,
    }
}

/// Parcels a neighbour should hand over again shortly: not bad input, neither counted nor audited.
fn waits(r: &Refusal) -> bool {
    matches!(r.code, "directory-behind" | "attachment-missing" | "storage-full" | "storage-damaged")
}

/// Kinds that bring new work (and bytes) to a node. While storage is short of space they are
/// refused for now; receipts, reports, recalls, answers and decisions settle what is already held
/// and are still taken, within the reserve (see `storage::health`).
fn takes_space(kind: Kind) -> bool {
    matches!(kind, Kind::Document | Kind::Query | Kind::DataRecord | Kind::DataDelivery | Kind::SubscriptionRequest)
}

fn storage_refusal() -> Refusal {
    Refusal {
        code: "storage",
        message: "the node could not store the message; nothing was accepted, try again later".into(),
        status: 503,
        transient: true,
    }
}

/// Collects the refusals among `results` for [`Services::refused`].
fn refusals<'a, T>(results: &'a [Result<T, Refusal>], ids: &[(Option<MessageId>, Option<Kind>)]) -> Vec<Refused<'a>> {
    results
        .iter()
        .zip(ids)
        .filter_map(|(r, (id, kind))| r.as_ref().err().map(|refusal| Refused { id: *id, kind: *kind, refusal }))
        .collect()
}

impl Ingress<'_> {
    /// Submissions from agencies: verify, take custody, answer after the commit.
    pub async fn submit(&self, caller: &Caller, messages: Vec<SignedMessage>) -> Vec<BatchItemResult> {
        self.take_submissions(caller, messages, false)
            .await
            .into_iter()
            .map(|r| match r {
                Ok(ok) => BatchItemResult::Accepted(ok),
                Err(e) => BatchItemResult::Refused(e.body()),
            })
            .collect()
    }

    /// [`Ingress::submit`] with the refusals themselves (already counted and audited).
    async fn take_submissions(
        &self,
        caller: &Caller,
        messages: Vec<SignedMessage>,
        resend: bool,
    ) -> Vec<Result<SubmitResponse, Refusal>> {
        let dir = self.services.dir.current();
        let ids: Vec<(Option<MessageId>, Option<Kind>)> =
            messages.iter().map(|m| (Some(m.envelope.message_id()), Some(m.envelope.kind))).collect();
        let mut cited = Vec::with_capacity(messages.len());
        for m in &messages {
            cited.push(self.attachments.check_citations(caller, &m.envelope).await);
        }
        let decoded: Vec<Result<Candidate, Refusal>> = messages
            .iter()
            .zip(cited)
            .map(|(m, cited)| {
                if !resend && m.envelope.metadata.contains_key(exchange_wire::document::RESEND_OF) {
                    return Err(Refusal::malformed("a 补发 (metadata resend.of) is submitted to /v1/messages/{id}/resend"));
                }
                cited?;
                self.decode_submission(&dir, caller, m)
            })
            .collect();
        let no_sign_fors = (0..decoded.len()).map(|_| None).collect();
        let mut results = self.verify_and_take(&dir, None, decoded, no_sign_fors).await;
        // A re-sent message already held is a duplicate, whatever a check would say of it today
        // (its window may have passed, its key been rotated, its sender been suspended): re-signing
        // it would make a second message, so the sender must learn that the first is in custody.
        for (r, m) in results.iter_mut().zip(&messages) {
            let recheck = matches!(r, Err(e) if !matches!(e.code, "forbidden" | "malformed" | "payload-mismatch" | "storage"));
            if recheck {
                match self.held(m).await {
                    Held::Exactly => *r = Ok(JobOutcome::Duplicate),
                    Held::WithOtherPayload(refusal) => *r = Err(refusal),
                    Held::Not => {}
                }
            }
        }
        drop(messages);
        self.services.refused("agency", &refusals(&results, &ids)).await;
        let now = exchange_wire::now_ms();
        results
            .into_iter()
            .zip(ids)
            .map(|(r, (id, _))| {
                r.map(|outcome| SubmitResponse {
                    id: id.expect("every submission has an id"),
                    duplicate: outcome == JobOutcome::Duplicate,
                    accepted_at_ms: now,
                })
            })
            .collect()
    }

    /// Whether this node already holds this submission: the same id (so the same signed header) and
    /// the same signature; and whether the payload matches the header.
    pub(super) async fn held(&self, m: &SignedMessage) -> Held {
        if m.envelope.kind != Kind::Document {
            return Held::Not;
        }
        let same_signature = match self.services.store.message(&m.envelope.message_id().0).await {
            Ok(Some(held)) => hex::encode(&held.signature) == m.signature.to_ascii_lowercase(),
            _ => false,
        };
        match (same_signature, m.decode()) {
            (false, _) => Held::Not,
            (true, Ok(_)) => Held::Exactly,
            (true, Err(e)) => Held::WithOtherPayload(e.into()),
        }
    }

    /// Checks a submission from an agency up to (not including) the signature.
    fn decode_submission(&self, dir: &Directory, caller: &Caller, m: &SignedMessage) -> Result<Candidate, Refusal> {
        let env = &m.envelope;
        caller.may_act_for(&env.sender)?;
        if env.kind != Kind::Document {
            return Err(Refusal::new(
                "unsupported-kind",
                400,
                format!("agencies submit documents here; a {} is sent through its own endpoint", env.kind),
            ));
        }
        checks::check_size(&self.services.limits, env.payload_size)?;
        checks::check_sender(&self.services.here, &self.services.limits, exchange_wire::now_ms(), dir, caller, env)?;
        exchange_wire::document::check(env).map_err(|e| {
            let code = if matches!(e, exchange_wire::document::DocumentError::Classified(_)) { "classified" } else { "malformed" };
            Refusal::new(code, if code == "classified" { 403 } else { 400 }, e.to_string())
        })?;
        if let Some(a) = self.attachments.missing_attachments(env)?.first() {
            return Err(Refusal::new(
                "attachment-missing",
                409,
                format!(
                    "attachment {} ({} bytes, SHA-256 {}) has not been uploaded to this node: upload it with PUT /v1/attachments/{} first (exchange-admin send --attach does this), then submit the document",
                    exchange_wire::document::escaped(&a.name), a.size, a.sha256, a.sha256
                ),
            ));
        }
        let (signed, payload) = m.decode()?;
        // Unknown, reserved, suspended or forbidden recipients are refused here, at ingress, never
        // dropped further on.
        custody::check_recipients(signed.envelope.recipients())?;
        crate::routing::plan(dir, &self.services.here, signed.envelope.recipients())?;
        for r in signed.envelope.recipients() {
            if !dir.is_active(r) {
                return Err(Refusal::new("recipient-unavailable", 422, format!("recipient {r} is suspended or revoked; it cannot receive")));
            }
            self.access.check(dir, &env.sender, r, env.kind)?;
        }
        let recipients = signed.envelope.recipients().cloned().collect();
        Ok(Candidate { signed, payload, recipients, hops: vec![] })
    }

    /// A batch handed over by a neighbour: verify each parcel, commit, answer after the commit.
    pub(crate) async fn inbound(&self, peer: PeerId, request: TransferRequest, channel: Reply<TransferResponse>) {
        let dir = self.services.dir.current();
        let Some(from) = dir.node_by_peer(&peer).map(|n| n.id.clone()) else {
            // The allow list should have stopped it; refuse everything without storing anything.
            let r = Refusal::new("unknown-peer", 403, format!("peer {peer} is not a node in the directory"));
            self.services.refused(&peer.to_string(), &[Refused { id: None, kind: None, refusal: &r }]).await;
            let results = request.parcels.iter().map(|_| ParcelResult::Refused { code: r.code.into(), reason: r.message.clone() }).collect();
            self.services.net.respond(channel, TransferResponse::results(results)).await;
            return;
        };
        let ids: Vec<(Option<MessageId>, Option<Kind>)> = request
            .parcels
            .iter()
            .map(|p| match Envelope::from_canonical_bytes(&p.header) {
                Ok(e) => (Some(e.message_id()), Some(e.kind)),
                Err(_) => (None, None),
            })
            .collect();
        // Custody moves only along the tree: a node that is in the directory but is neither this
        // node's parent nor one of its children has no business handing anything over here (it
        // would bypass the nodes between, and speak for routes it is not on).
        if !dir.neighbours(&self.services.here).iter().any(|n| n.id == from) {
            let r = Refusal::new(
                "not-neighbour",
                403,
                format!("node {from} is not a neighbour of {} in the node tree (only the parent and the children hand over custody); nothing was taken", self.services.here),
            );
            let refused: Vec<Refused> = ids.iter().map(|(id, kind)| Refused { id: *id, kind: *kind, refusal: &r }).collect();
            self.services.refused(from.as_str(), &refused).await;
            let results = ids.iter().map(|_| ParcelResult::Refused { code: r.code.into(), reason: r.message.clone() }).collect();
            self.services.net.respond(channel, TransferResponse::results(results)).await;
            return;
        }
        // Parcels whose sender's keys this node knows only in an older version wait for the directory.
        let behind: Vec<bool> = request
            .parcels
            .iter()
            .map(|p| {
                Envelope::from_canonical_bytes(&p.header)
                    .map(|e| dir.key_segment_version(&e.sender) < p.sender_segment_version)
                    .unwrap_or(false)
            })
            .collect();
        let decoded: Vec<Result<Candidate, Refusal>> = request
            .parcels
            .into_iter()
            .zip(&behind)
            .map(|(p, &behind)| if behind { Err(directory_behind()) } else { self.decode_parcel(p) })
            .collect();
        let no_sign_fors = (0..decoded.len()).map(|_| None).collect();
        let results = self.verify_and_take(&dir, Some(&from), decoded, no_sign_fors).await;
        // Waiting for the directory is not bad input: it is neither counted nor audited.
        let mut refused = refusals(&results, &ids);
        refused.retain(|r| !waits(r.refusal) && !r.refusal.transient);
        self.services.refused(from.as_str(), &refused).await;
        // Storage trouble is answered at once, parcel by parcel: the neighbour keeps custody of what
        // was not stored and hands it over again after its backoff (a silent answer would hold it
        // until its request timed out).
        let results = results
            .into_iter()
            .map(|r| match r {
                Ok(JobOutcome::Duplicate) => ParcelResult::Duplicate,
                Ok(_) => ParcelResult::Stored,
                Err(e) if waits(&e) || e.transient => ParcelResult::Retry { reason: e.message },
                Err(e) => ParcelResult::Refused { code: e.code.into(), reason: e.message },
            })
            .collect();
        self.services.net.respond(channel, TransferResponse::results(results)).await;
    }

    fn decode_parcel(&self, p: Parcel) -> Result<Candidate, Refusal> {
        let sig: [u8; 64] = p.signature.as_slice().try_into().map_err(|_| Refusal::malformed("signature is not 64 bytes"))?;
        let signed = SignedEnvelope::from_canonical(p.header, sig)?;
        let env = &signed.envelope;
        env.check_shape()?;
        checks::check_size(&self.services.limits, env.payload_size)?;
        env.check_payload(&p.payload)?;
        if let Some(a) = self.attachments.missing_attachments(env)?.first() {
            return Err(attachment_not_here(a));
        }
        if p.recipients.is_empty() || !p.recipients.iter().all(|r| env.recipients().any(|e| e == r)) {
            return Err(Refusal::malformed("parcel names recipients that the envelope does not"));
        }
        Ok(Candidate { signed, payload: p.payload, recipients: p.recipients, hops: p.hops })
    }

    /// Verifies, decides and commits decoded candidates together. One result per input, in order.
    /// `sign_fors[i]` makes input `i` a 签收 receipt that flips its inbox entry in the same commit.
    pub(super) async fn verify_and_take(
        &self,
        dir: &Arc<Directory>,
        from: Option<&NodeId>,
        decoded: Vec<Result<Candidate, Refusal>>,
        sign_fors: Vec<Option<SignFor>>,
    ) -> Vec<Result<JobOutcome, Refusal>> {
        let mut results: Vec<Option<Result<JobOutcome, Refusal>>> = Vec::with_capacity(decoded.len());
        let mut candidates = Vec::new();
        let mut positions = Vec::new();
        for (i, d) in decoded.into_iter().enumerate() {
            match d {
                Ok(c) => {
                    candidates.push(c);
                    positions.push(i);
                    results.push(None);
                }
                Err(r) => results.push(Some(Err(r))),
            }
        }
        let (candidates, verdicts) = match self.verify(dir, candidates, from.is_none()).await {
            Ok(verified) => verified,
            Err(unfinished) => {
                for i in positions {
                    results[i] = Some(Err(unfinished.clone()));
                }
                return results.into_iter().map(|r| r.expect("every input has a result")).collect();
            }
        };
        let taken = self.take_verified(dir, from, candidates.into_iter().zip(verdicts).zip(positions), sign_fors, &mut results);
        if !taken.jobs.is_empty() {
            self.commit_taken(from, taken, &mut results).await;
        }
        results.into_iter().map(|r| r.expect("every input has a result")).collect()
    }

    /// Decides custody (`custody::take`) of each verified candidate, `(candidate, verdict), input`;
    /// a refusal is its input's result.
    fn take_verified(
        &self,
        dir: &Directory,
        from: Option<&NodeId>,
        verified: impl Iterator<Item = ((Candidate, Result<(), Refusal>), usize)>,
        mut sign_fors: Vec<Option<SignFor>>,
        results: &mut [Option<Result<JobOutcome, Refusal>>],
    ) -> Taken {
        let ctx = self.services.context(dir);
        let intake = self.health.intake();
        let mut taken = Taken::default();
        for ((cand, verdict), i) in verified {
            if let Err(r) = verdict {
                results[i] = Some(Err(r));
                continue;
            }
            let kind = cand.signed.envelope.kind;
            if let Err(closed) = &intake
                && takes_space(kind)
            {
                results[i] = Some(Err(Refusal::storage_full(closed)));
                continue;
            }
            let incoming = Incoming { signed: cand.signed, payload: cand.payload, recipients: cand.recipients, from: from.cloned(), hops: cand.hops };
            match custody::take(&ctx, incoming) {
                Ok((mut c, summary)) => {
                    let job = match sign_fors.get_mut(i).and_then(Option::take) {
                        Some(s) => {
                            let event = if s.state == "returned" { "returned" } else { "signed-for" };
                            c.events.push(custody::event(s.message_id.0, ctx.now_ms, event, Some(&s.unit), None, None));
                            WriteJob::SignFor { unit: s.unit.to_string(), message_id: s.message_id.0, state: s.state, receipt: c }
                        }
                        None => WriteJob::Custody(c),
                    };
                    taken.jobs.push(job);
                    taken.positions.push(i);
                    taken.summaries.push((summary, kind));
                }
                Err(r) => results[i] = Some(Err(r)),
            }
        }
        taken
    }

    /// Commits what was taken, in one group commit; counts and wakes the forwarders for what was
    /// stored, and refuses every job if the commit failed.
    async fn commit_taken(&self, from: Option<&NodeId>, taken: Taken, results: &mut [Option<Result<JobOutcome, Refusal>>]) {
        let Taken { jobs, positions, summaries } = taken;
        match self.services.committer.commit(jobs).await {
            Ok(outcomes) => {
                let source = if from.is_some() { "peer" } else { "agency" };
                for ((outcome, i), (summary, kind)) in outcomes.into_iter().zip(positions).zip(summaries) {
                    if outcome == JobOutcome::Stored {
                        self.services.metrics.accepted.with_label_values(&[kind.as_str(), source]).inc();
                        self.forwarders.committed(&summary);
                    }
                    results[i] = Some(Ok(outcome));
                }
            }
            Err(e) => {
                self.services.metrics.storage_errors.with_label_values(&["commit"]).inc();
                tracing::error!(error = %e, "commit failed; nothing was accepted");
                // A commit that met a full disk closed intake (see `storage::health`): say so.
                let refusal = self.health.intake().err().map(|c| Refusal::storage_full(&c)).unwrap_or_else(storage_refusal);
                for i in positions {
                    results[i] = Some(Err(refusal.clone()));
                }
            }
        }
    }
}

/// The custody jobs decided for one commit, with the input each came from and what to count once
/// it is stored.
#[derive(Default)]
struct Taken {
    jobs: Vec<WriteJob>,
    positions: Vec<usize>,
    summaries: Vec<(custody::Summary, Kind)>,
}

/// What this node holds of a document submitted again.
pub(super) enum Held {
    /// Not this message with this signature.
    Not,
    /// Exactly this submission: a duplicate.
    Exactly,
    /// This message and signature, with a payload that does not match it: the refusal it gets
    /// (`payload-mismatch`, or `malformed` for a payload that is not base64), whatever else has
    /// changed since (its window, its sender's status).
    WithOtherPayload(Refusal),
}
