//! `ask` and `answer`: queries (查询核验) to an authoritative unit, answered by a deadline.
//!
//! `ask` signs a query with the asking unit's key, hands it to the unit's node and waits for the
//! outcome: the answer, whose signature it verifies here against the answering unit's keys from the
//! directory, or a timeout at the deadline (exit code 3). `answer` signs the asked unit's answer to a
//! query in its inbox.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use exchange_wire::api::{InboxItem, RecipientState};
use exchange_wire::{keys, query};

use crate::agency::{find_in_inbox, unit_record, verify_item};
use crate::endpoint::{ActingFor, Ctx};
use crate::output::{emit, emit_json, format_ms};
use crate::{AnswerArgs, AskArgs, Outcome};

/// Longest single wait on the node; `ask` waits again until the deadline.
const WAIT_STEP: Duration = Duration::from_secs(30);

/// The question or answer text: the argument itself, or the contents of a file given as `@FILE`.
fn body(text: &str) -> Result<Vec<u8>> {
    match text.strip_prefix('@') {
        Some(path) => std::fs::read(path).map_err(|e| anyhow!("cannot read {path}: {e}")),
        None => Ok(text.as_bytes().to_vec()),
    }
}

/// `ask`: signs and sends a query, then waits for its answer or its timeout.
pub fn ask(ctx: &Ctx, a: &AskArgs) -> Result<Outcome> {
    let node = ctx.agency(ActingFor::Unit(&a.from))?;
    let key = keys::read(&a.key)?;
    let question = body(&a.question)?;
    let deadline_ms = exchange_wire::now_ms() + a.within * 1000;
    let signed = query::question(a.from.clone(), a.to.clone(), &a.topic, deadline_ms, &question).sign(&key);
    let accepted = node.call(|c| c.ask(&signed, &question))?;
    if !ctx.json {
        eprintln!("asked {} ({}), due by {} UTC; waiting for the answer", a.to, a.topic, format_ms(deadline_ms));
    }
    // Wait past the deadline by a little: the asker's node records the timeout at the deadline.
    let give_up = Instant::now() + Duration::from_secs(a.within) + Duration::from_secs(30);
    let status = loop {
        let s = node.call(|c| c.query_status(&accepted.id, WAIT_STEP))?;
        if matches!(s.state, RecipientState::Answered | RecipientState::TimedOut | RecipientState::Failed) || Instant::now() > give_up {
            break s;
        }
    };
    if ctx.json {
        emit_json(&status)?;
    }
    match (status.state, &status.answer) {
        (RecipientState::Answered, Some(answer)) => {
            // Verify here, offline, against the answering unit's keys: the node's word is not proof.
            let record = unit_record(&node, &answer.envelope.sender).map_err(|e| e.to_string());
            let item = InboxItem { seq: 0, id: answer.envelope.message_id(), delivered_at_ms: status.at_ms, state: status.state, message: answer.clone() };
            if let Err(why) = verify_item(&item, &record) {
                bail!("the answer from {} does not verify: {why}", answer.envelope.sender);
            }
            let (_, payload) = answer.decode()?;
            if !ctx.json {
                eprintln!("answered by {} at {} UTC (signature verified):", answer.envelope.sender, format_ms(status.at_ms));
                emit(&format!("{}\n", String::from_utf8_lossy(&payload)))?;
            }
            Ok(Outcome::Done)
        }
        (RecipientState::TimedOut, _) => {
            eprintln!("no answer from {} by the deadline ({} UTC): the query timed out", status.asked, format_ms(status.deadline_ms));
            Ok(Outcome::TimedOut)
        }
        (RecipientState::Failed, _) => bail!("the query could not be delivered: {}", status.detail.unwrap_or_default()),
        (state, _) => bail!("the query is still {} after its deadline; ask the node's operator (exchange-admin trace {})", state.as_str(), status.id),
    }
}

/// `answer`: signs the unit's answer to a query in its inbox and hands it to the node.
pub fn answer(ctx: &Ctx, a: &AnswerArgs) -> Result<()> {
    let node = ctx.agency(ActingFor::Unit(&a.unit))?;
    let key = keys::read(&a.key)?;
    let text = body(&a.answer)?;
    let item = find_in_inbox(&node, &a.unit, &a.query)?;
    let asker = item.message.envelope.sender.clone();
    if item.message.envelope.kind != exchange_wire::Kind::Query {
        bail!("message {} is a {}, not a query", item.id, item.message.envelope.kind);
    }
    let signed = query::answer(a.unit.clone(), asker.clone(), item.id, &text).sign(&key);
    let accepted = node.call(|c| c.answer(&a.unit, &item.id, &signed, &text))?;
    if ctx.json {
        return emit_json(&accepted);
    }
    eprintln!("answered query {} from {asker}; answer:", item.id);
    emit(&format!("{}\n", accepted.id))
}
