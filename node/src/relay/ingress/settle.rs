//! 签收 and 退回 handed over by a recipient: checked against the inbox entry they settle, decided once
//! by the settlement rules in the same transaction, and sent back to the sender as a signed receipt.

use exchange_wire::api::{SignForResponse, SignedMessage};
use exchange_wire::receipt::{Receipt, ReceiptType};
use exchange_wire::{Envelope, Kind, MessageId, UnitAddress};

use crate::relay::access::Caller;
use crate::relay::refusal::Refusal;
use crate::directory::Directory;
use crate::storage::JobOutcome;

use super::*;

impl Ingress<'_> {
    /// 签收 (`kind` signed-for) or 退回 (returned, with a signed reason): a recipient settles a
    /// message in its inbox with a receipt signed by its own key. A message is settled once.
    pub async fn settle(
        &self,
        caller: &Caller,
        unit: &UnitAddress,
        message_id: &MessageId,
        receipt: SignedMessage,
        kind: ReceiptType,
    ) -> Result<SignForResponse, Refusal> {
        self.settle_many(caller, unit, vec![(*message_id, receipt)], kind).await.pop().expect("one result")
    }

    /// Several 签收 by one unit, verified in one batch and committed in one transaction; one result
    /// per receipt, in order.
    pub async fn sign_for_many(
        &self,
        caller: &Caller,
        unit: &UnitAddress,
        receipts: Vec<(MessageId, SignedMessage)>,
    ) -> Vec<Result<SignForResponse, Refusal>> {
        self.settle_many(caller, unit, receipts, ReceiptType::SignedFor).await
    }

    /// Settles messages in `unit`'s inbox with receipts of type `expected`.
    pub(in crate::relay) async fn settle_many(
        &self,
        caller: &Caller,
        unit: &UnitAddress,
        receipts: Vec<(MessageId, SignedMessage)>,
        expected: ReceiptType,
    ) -> Vec<Result<SignForResponse, Refusal>> {
        let dir = self.services.dir.current();
        let mut decoded = Vec::with_capacity(receipts.len());
        let mut sign_fors = Vec::with_capacity(receipts.len());
        let mut ids = Vec::with_capacity(receipts.len());
        for (message_id, receipt) in &receipts {
            let checked = match caller.may_act_for(unit) {
                Ok(()) => self.check_sign_for(&dir, unit, message_id, receipt, expected).await,
                Err(r) => Err(r),
            };
            decoded.push(checked);
            sign_fors.push(Some(SignFor { unit: unit.clone(), message_id: *message_id, state: expected.as_str() }));
            ids.push((Some(receipt.envelope.message_id()), Some(Kind::Receipt)));
        }
        let results: Vec<Result<SignForResponse, Refusal>> = self
            .verify_and_take(&dir, None, decoded, sign_fors)
            .await
            .into_iter()
            .zip(&receipts)
            .zip(&ids)
            .map(|((r, (message_id, _)), (receipt_id, _))| {
                let receipt_id = receipt_id.expect("every receipt has an id");
                match r {
                    Ok(JobOutcome::Duplicate) => Ok(SignForResponse { message_id: *message_id, receipt_id, duplicate: true }),
                    Ok(JobOutcome::Conflict(reason)) => Err(Refusal::new("conflict", 409, reason)),
                    Ok(_) => {
                        self.services.metrics.receipts.with_label_values(&[expected.as_str(), "issued"]).inc();
                        Ok(SignForResponse { message_id: *message_id, receipt_id, duplicate: false })
                    }
                    Err(r) => Err(r),
                }
            })
            .collect();
        self.services.refused("agency", &refusals(&results, &ids)).await;
        results
    }

    pub(in crate::relay) async fn check_sign_for(
        &self,
        dir: &Directory,
        unit: &UnitAddress,
        message_id: &MessageId,
        receipt: &SignedMessage,
        expected: ReceiptType,
    ) -> Result<Candidate, Refusal> {
        if dir.home_of(unit).as_ref() != Some(&self.services.here) {
            return Err(Refusal::new("not-found", 404, format!("unit {unit} is not hosted on node {}", self.services.here)));
        }
        let env = &receipt.envelope;
        let facts = Receipt::from_envelope(env)?;
        if facts.receipt_type != expected {
            return Err(Refusal::malformed(format!(
                "this endpoint takes {} receipts, not {}: sign for at …/sign-for, return at …/return",
                expected.as_str(),
                facts.receipt_type.as_str()
            )));
        }
        checks::check_fresh(&self.services.limits, exchange_wire::now_ms(), env.created_at_ms)?;
        checks::check_active(dir, unit)?;
        if &env.sender != unit {
            return Err(Refusal::new("wrong-signer", 403, format!("the receipt is from {} but the inbox is {unit}'s", env.sender)));
        }
        if &facts.for_message != message_id {
            return Err(Refusal::malformed(format!("the receipt is for message {}, not {message_id}", facts.for_message)));
        }
        let original = self.inbox_original(unit, message_id, "message").await?;
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

    /// The envelope of message `id` in `unit`'s inbox (`what` names it in the refusal: "message",
    /// "query").
    pub(in crate::relay) async fn inbox_original(&self, unit: &UnitAddress, id: &MessageId, what: &str) -> Result<Envelope, Refusal> {
        let entry = self
            .services
            .store
            .inbox_entry(unit.as_str(), &id.0)
            .await?
            .ok_or_else(|| Refusal::new("not-found", 404, format!("{what} {id} is not in the inbox of {unit}")))?;
        Envelope::from_canonical_bytes(&entry.header).map_err(|e| {
            tracing::error!(error = %e, "a stored header does not parse");
            Refusal::new("storage", 500, "stored message is unreadable")
        })
    }
}
