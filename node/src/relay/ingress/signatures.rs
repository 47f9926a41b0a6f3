//! The door's signature checks: which keys each candidate is checked against, and the refusal a
//! failed check gets. The checks themselves run on the shared verifier (`relay/verifier.rs`),
//! batched with those of other requests.

use std::sync::Arc;

use exchange_wire::{EnvelopeError, Kind, UnitAddress};

use super::{Candidate, Ingress};
use crate::directory::Directory;
use crate::relay::refusal::Refusal;
use crate::relay::verifier::{Check, Unfinished};

/// The checks could not finish: nothing was verified, so nothing was accepted.
fn verification_unfinished() -> Refusal {
    Refusal {
        code: "unavailable",
        message: "the node could not finish checking signatures (it may be stopping); nothing was accepted, try again later".into(),
        status: 503,
        transient: true,
    }
}

impl Ingress<'_> {
    /// Verifies candidates' signatures against the directory, in one batch where possible (with the
    /// checks other requests have queued: see `relay/verifier.rs`).
    ///
    /// The key must have been valid when the envelope was created; at ingress (`at_ingress`) it
    /// must also be valid now, so a revoked or expired key is refused at once, while what was
    /// accepted before a revocation still travels and delivers (see docs/protocol.md).
    ///
    /// Receipts, and senders with more than one valid key (a rotation in progress), are checked one
    /// by one with strict verification: a receipt must verify offline exactly as it did here, and
    /// batch verification is not bit-for-bit the same check (see docs/protocol.md). Receipts are
    /// marked [`Check::strict`]; the verifier checks a sender with several keys one by one in any
    /// case.
    ///
    /// The candidates come back with their verdicts, in order; their envelopes travel to the
    /// blocking pool and back rather than being copied for it. `Err` when the checks could not
    /// finish (the verifier stopping, or its job failing): nothing was verified, so every candidate
    /// is refused, for now.
    pub(super) async fn verify(
        &self,
        dir: &Arc<Directory>,
        candidates: Vec<Candidate>,
        at_ingress: bool,
    ) -> Result<(Vec<Candidate>, Vec<Result<(), Refusal>>), Refusal> {
        let now = exchange_wire::now_ms();
        let mut checks = Vec::with_capacity(candidates.len());
        let mut rest = Vec::with_capacity(candidates.len());
        for Candidate { signed, payload, recipients, hops } in candidates {
            let created = signed.envelope.created_at_ms;
            let times: &[u64] = if at_ingress { &[created, now] } else { &[created] };
            let keys = dir.signing_keys(&signed.envelope.sender, times).into_iter().map(|k| k.0).collect();
            let strict = signed.envelope.kind == Kind::Receipt;
            checks.push(Check { signed, keys, strict });
            rest.push((payload, recipients, hops));
        }
        let checked = self.services.verifier.verify(checks).await.map_err(|Unfinished| {
            tracing::warn!("signature checks did not finish; refusing the request for now");
            verification_unfinished()
        })?;
        let mut candidates = Vec::with_capacity(checked.len());
        let mut verdicts = Vec::with_capacity(checked.len());
        for ((check, r), (payload, recipients, hops)) in checked.into_iter().zip(rest) {
            verdicts.push(verdict(dir, &check, r));
            candidates.push(Candidate { signed: check.signed, payload, recipients, hops });
        }
        Ok((candidates, verdicts))
    }
}

/// The refusal of a check that failed: no key valid for it, or a signature that does not verify
/// (saying so when it was made with a key the sender had).
fn verdict(dir: &Directory, c: &Check, r: Result<(), EnvelopeError>) -> Result<(), Refusal> {
    let sender: &UnitAddress = &c.signed.envelope.sender;
    if c.keys.is_empty() {
        return Err(if dir.home_of(sender).is_none() {
            Refusal::new("unknown-sender", 403, format!("sender {sender} is not in the directory, so its signature cannot be checked"))
        } else {
            Refusal::new(
                "key-not-valid",
                403,
                format!("no key of {sender} is valid for this envelope: the key was revoked or has expired; sign with the unit's current key"),
            )
        });
    }
    r.map_err(|e| {
        // Signed with a key the unit had, but not one valid for this envelope: say so.
        if dir.signed_with_revoked_node_key(&c.signed) {
            Refusal::new("key-revoked", 403, format!("the envelope is signed with a key of {sender} that the root revoked"))
        } else if dir.signing_keys(sender, &[]).iter().any(|k| c.signed.verify(&k.0).is_ok()) {
            Refusal::new(
                "key-not-valid",
                403,
                format!("the envelope is signed with a key of {sender} that was revoked or has expired; sign with the unit's current key"),
            )
        } else {
            Refusal::from(e)
        }
    })
}
