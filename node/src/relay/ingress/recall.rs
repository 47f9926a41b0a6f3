//! 撤回 and 补发 handed over by the sender: a recall of a document sent from here, decided at each
//! recipient's node in order with its settlement, and a re-send of the same body to recipients the
//! original missed.

use exchange_wire::api::{SignedMessage, SubmitResponse};
use exchange_wire::{Envelope, Kind, MessageId};

use crate::relay::access::Caller;
use crate::relay::refused::Refused;
use crate::relay::refusal::Refusal;
use crate::directory::Directory;
use crate::storage::JobOutcome;

use super::*;

impl Ingress<'_> {
    /// 撤回: the sender of document `message_id` withdraws it from recipients who have not settled it.
    /// Each recipient's home node decides, in order with any 签收 or 退回, and reports back.
    pub async fn recall(&self, caller: &Caller, message_id: &MessageId, recall: SignedMessage) -> Result<SubmitResponse, Refusal> {
        let dir = self.services.dir.current();
        let recall_id = recall.envelope.message_id();
        let checked = self.check_recall(&dir, caller, message_id, &recall).await;
        let mut results = self.verify_and_take(&dir, None, vec![checked], vec![None]).await;
        let result = results.pop().expect("one result");
        if let Err(r) = &result {
            self.services.refused("agency", &[Refused { id: Some(recall_id), kind: Some(Kind::Recall), refusal: r }]).await;
        }
        result.map(|outcome| SubmitResponse { id: recall_id, duplicate: outcome == JobOutcome::Duplicate, accepted_at_ms: exchange_wire::now_ms() })
    }

    pub(in crate::relay) async fn check_recall(&self, dir: &Directory, caller: &Caller, message_id: &MessageId, m: &SignedMessage) -> Result<Candidate, Refusal> {
        let env = &m.envelope;
        caller.may_act_for(&env.sender)?;
        let target = exchange_wire::receipt::recalled_message(env)?;
        if &target != message_id {
            return Err(Refusal::malformed(format!("the recall is for message {target}, not {message_id}")));
        }
        let not_here = || Refusal::new("not-found", 404, format!("message {message_id} was not sent from a unit of node {}", self.services.here));
        let stored = self.services.store.message(&message_id.0).await?.ok_or_else(not_here)?;
        let original = Envelope::from_canonical_bytes(&stored.header).map_err(|_| Refusal::new("storage", 500, "stored message is unreadable"))?;
        if original.kind != Kind::Document || original.sender != env.sender || self.services.store.tracking(&message_id.0).await?.is_empty() {
            return Err(not_here());
        }
        if let Some(r) = env.recipients().find(|r| !original.recipients().any(|o| o == *r)) {
            return Err(Refusal::malformed(format!("{r} is not a recipient of message {message_id}")));
        }
        checks::check_fresh(&self.services.limits, exchange_wire::now_ms(), env.created_at_ms)?;
        checks::check_active(dir, &env.sender)?;
        let (signed, payload) = m.decode()?;
        let recipients = signed.envelope.recipients().cloned().collect();
        Ok(Candidate { signed, payload, recipients, hops: vec![] })
    }

    /// 补发: re-sends document `message_id` (same body) to recipients it did not reach. The re-send is a
    /// document of its own, signed by the same sender, with `resend.of` naming the original; the
    /// original's status lists its recipients too.
    pub async fn resend(&self, caller: &Caller, message_id: &MessageId, m: SignedMessage) -> Result<SubmitResponse, Refusal> {
        let env = &m.envelope;
        let resend_id = env.message_id();
        let refuse = |r: Refusal| async move {
            self.services.refused("agency", &[Refused { id: Some(resend_id), kind: Some(Kind::Document), refusal: &r }]).await;
            Err(r)
        };
        if let Err(r) = caller.may_act_for(&env.sender) {
            return refuse(r).await;
        }
        if env.metadata.get(exchange_wire::document::RESEND_OF) != Some(&message_id.to_hex()) {
            return refuse(Refusal::malformed(format!("a 补发 carries metadata resend.of = {message_id}"))).await;
        }
        match self.held(&m).await {
            Held::Exactly => return Ok(SubmitResponse { id: resend_id, duplicate: true, accepted_at_ms: exchange_wire::now_ms() }),
            Held::WithOtherPayload(r) => return refuse(r).await,
            Held::Not => {}
        }
        let status = match self.services.status(caller, message_id).await {
            Ok(s) => s,
            Err(r) => return refuse(r).await,
        };
        let original = match self.services.store.message(&message_id.0).await {
            Ok(Some(o)) => Envelope::from_canonical_bytes(&o.header).map_err(|_| Refusal::new("storage", 500, "stored message is unreadable")),
            Ok(None) => Err(Refusal::new("not-found", 404, format!("message {message_id} is not held here"))),
            Err(e) => Err(e.into()),
        };
        let original = match original {
            Ok(o) => o,
            Err(r) => return refuse(r).await,
        };
        if original.sender != env.sender || original.payload_digest != env.payload_digest {
            return refuse(Refusal::malformed("a 补发 comes from the original sender with the original body (same payload digest)")).await;
        }
        if let Some(r) = env.recipients().find(|r| status.recipients.iter().any(|s| &s.unit == *r)) {
            return refuse(Refusal::malformed(format!("{r} already received message {message_id}; a 补发 goes only to recipients it missed"))).await;
        }
        self.take_submissions(caller, vec![m], true).await.pop().expect("one result")
    }
}
