//! Settling and following up what was sent or received: 签收, 退回, 撤回, 补发 and a document's
//! status, each signed on the agency's machine.

use super::*;

/// `sign-for`: 签收 a document in the unit's inbox with a receipt signed by the unit's key.
pub fn sign_for(ctx: &Ctx, a: &SignForArgs) -> Result<()> {
    let node = ctx.agency(ActingFor::Unit(&a.unit))?;
    // Read the key first: a bad key file should fail before any network work.
    let key = keys::read(&a.key)?;
    let item = find_in_inbox(&node, &a.unit, &a.message)?;
    let e = &item.message.envelope;
    require_document(&item, "signed for")?;
    require_not_recalled(&item, &a.unit, "signed for")?;
    let signed =
        receipt::signed_for(a.unit.clone(), e.sender.clone(), item.id, e.priority).sign(&key);
    let answer = node.call(|c| c.sign_for(&a.unit, &item.id, &signed))?;
    if ctx.json {
        return emit_json(&answer);
    }
    if answer.duplicate {
        eprintln!(
            "{} was already signed for; the node keeps the first receipt",
            answer.message_id
        );
    } else {
        eprintln!(
            "signed for {} from {}; receipt:",
            answer.message_id, e.sender
        );
    }
    emit(&format!("{}\n", answer.receipt_id))
}

/// Refuses a message that is not a document: receipts are not settled.
pub(super) fn require_document(item: &InboxItem, verb: &str) -> Result<()> {
    let kind = item.message.envelope.kind;
    if kind != Kind::Document {
        bail!(
            "message {} is a {kind}, not a document; only documents are {verb}",
            item.id
        );
    }
    Ok(())
}

/// Refuses a document its sender recalled (撤回) from `unit`: it is settled, and the node refuses
/// any 签收 or 退回 of it.
pub(super) fn require_not_recalled(item: &InboxItem, unit: &UnitAddress, verb: &str) -> Result<()> {
    if item.state == RecipientState::Recalled {
        bail!(
            "message {} was recalled (撤回) from {unit} by its sender {}; a recalled document can no longer be {verb}",
            item.id,
            item.message.envelope.sender
        );
    }
    Ok(())
}

/// Builds the (unsigned) 退回 receipt for `item` in `unit`'s inbox. Refuses what the node would
/// refuse: a non-document, a document already settled (签收 or 退回; a document is settled once), an
/// empty reason, a reason too long for an envelope header.
pub(super) fn return_receipt(unit: &UnitAddress, item: &InboxItem, reason: &str) -> Result<Envelope> {
    require_document(item, "returned")?;
    match item.state {
        RecipientState::SignedFor => bail!(
            "message {} was already signed for (签收) by {unit}; a document is settled once, so it can no \
             longer be returned",
            item.id
        ),
        RecipientState::Returned => bail!(
            "message {} was already returned (退回) by {unit}; the sender's node has the first receipt \
             (exchange-admin status ID there shows it)",
            item.id
        ),
        _ => {}
    }
    require_not_recalled(item, unit, "returned")?;
    let reason = parse::reason(reason).map_err(anyhow::Error::msg)?;
    let e = &item.message.envelope;
    let envelope = receipt::returned(unit.clone(), e.sender.clone(), item.id, e.priority, &reason);
    envelope
        .check_shape()
        .context("the reason cannot be sent")?;
    Ok(envelope)
}

/// `return`: 退回 a document in the unit's inbox to its sender, with a reason, in a receipt signed by
/// the unit's key.
pub fn return_message(ctx: &Ctx, a: &ReturnArgs) -> Result<()> {
    let node = ctx.agency(ActingFor::Unit(&a.unit))?;
    // Read the key first: a bad key file should fail before any network work.
    let key = keys::read(&a.key)?;
    let item = find_in_inbox(&node, &a.unit, &a.message)?;
    let signed = return_receipt(&a.unit, &item, &a.reason)?.sign(&key);
    let answer = node.call(|c| c.return_message(&a.unit, &item.id, &signed))?;
    if ctx.json {
        return emit_json(&answer);
    }
    let sender = &item.message.envelope.sender;
    if answer.duplicate {
        eprintln!(
            "{} was already returned with this receipt; the node keeps the first",
            answer.message_id
        );
    } else {
        eprintln!(
            "returned (退回) {} to {sender}; its node will show it as returned with the reason; receipt:",
            answer.message_id
        );
    }
    emit(&format!("{}\n", answer.receipt_id))
}

/// How the sender's node marks, in `detail`, the recipients of a 补发 listed in the original's
/// status: `补发 as message <id>`, maybe followed by `: <detail of that recipient>`.
pub(super) const RESENT_AS: &str = "补发 as message ";

/// The 补发 through which a recipient in a document's status was reached, if it was one.
pub(super) fn resent_as(r: &RecipientStatus) -> Option<MessageId> {
    r.detail
        .as_deref()?
        .strip_prefix(RESENT_AS)?
        .get(..64)?
        .parse()
        .ok()
}

/// Whether nothing is left to recall from a recipient in this state: it settled the document (签收,
/// 退回, or an earlier 撤回), or a node refused the document for good so it never got it.
pub(super) fn is_final(state: RecipientState) -> bool {
    matches!(
        state,
        RecipientState::SignedFor
            | RecipientState::Returned
            | RecipientState::Recalled
            | RecipientState::Failed
    )
}

/// What a final state means, after the recipient's address.
pub(super) fn final_as(state: RecipientState) -> &'static str {
    match state {
        RecipientState::SignedFor => "signed for it (签收)",
        RecipientState::Returned => "returned it (退回)",
        RecipientState::Recalled => "has had it recalled (撤回) already",
        RecipientState::Failed => "never got it: a node refused it for good",
        _ => "has not settled it",
    }
}

/// The recipients a 撤回 of the document in `st` goes to. With `only` empty, every recipient of the
/// document whose state is still open (accepted, in-transit, delivered); else exactly those, each of
/// which must be such a recipient. Recipients reached by a 补发 are another message's, recalled by
/// that message's id. Refuses when nobody is left to recall, saying why.
pub(super) fn recall_targets(st: &StatusResponse, only: &[UnitAddress]) -> Result<Vec<UnitAddress>> {
    if st.kind != Kind::Document {
        bail!(
            "message {} is a {}, not a document; only documents are recalled",
            st.id,
            st.kind
        );
    }
    if !only.is_empty() {
        return named_targets(st, only);
    }
    let open: Vec<UnitAddress> = st
        .recipients
        .iter()
        .filter(|r| resent_as(r).is_none() && !is_final(r.state))
        .map(|r| r.unit.clone())
        .collect();
    if open.is_empty() {
        return Err(nobody_left_to_recall(st));
    }
    Ok(open)
}

/// Why a recall of every open recipient of `st` has nobody to go to: the recipients' states counted,
/// and the 补发 whose own ids would recall the recipients they reached.
fn nobody_left_to_recall(st: &StatusResponse) -> anyhow::Error {
    let mut counts: std::collections::BTreeMap<RecipientState, usize> = Default::default();
    for r in st.recipients.iter().filter(|r| resent_as(r).is_none()) {
        *counts.entry(r.state).or_default() += 1;
    }
    let counts: Vec<String> = counts
        .iter()
        .map(|(state, n)| format!("{n} {}", state.as_str()))
        .collect();
    let mut why = format!(
        "nobody left to recall message {} from: every recipient has settled it or cannot get it ({}); a recall \
         only withdraws a document not yet signed for or returned",
        st.id,
        if counts.is_empty() {
            "none listed".to_owned()
        } else {
            counts.join(", ")
        }
    );
    let mut open_resends: Vec<String> = st
        .recipients
        .iter()
        .filter(|r| !is_final(r.state))
        .filter_map(resent_as)
        .map(|m| m.to_hex())
        .collect();
    open_resends.sort_unstable();
    open_resends.dedup();
    if !open_resends.is_empty() {
        why.push_str(&format!(
            "; recipients reached by a 补发 are recalled by the 补发's own id: {}",
            open_resends.join(", ")
        ));
    }
    anyhow::anyhow!(why)
}

/// The recipients of `st` named in `only`, each of which must still be open and reached by this
/// message itself (not by a 补发).
fn named_targets(st: &StatusResponse, only: &[UnitAddress]) -> Result<Vec<UnitAddress>> {
    let mut out = Vec::new();
    for unit in only {
        let Some(r) = st.recipients.iter().find(|r| &r.unit == unit) else {
            bail!(
                "{unit} is not a recipient of message {}; `exchange-admin status {}` lists them",
                st.id,
                st.id
            );
        };
        if let Some(m) = resent_as(r) {
            bail!(
                "{unit} got this document by a 补发, message {m}, not by message {}: recall that one \
                 (exchange-admin recall ... {m})",
                st.id
            );
        }
        if is_final(r.state) {
            bail!(
                "{unit} {}: nothing is left to recall there (state {})",
                final_as(r.state),
                r.state.as_str()
            );
        }
        out.push(unit.clone());
    }
    Ok(out)
}

/// The (unsigned) 撤回 of the document in `st` from `targets`, which its sender signs. Refuses an
/// empty reason and one too long for an envelope header, as the node would.
pub(super) fn recall_envelope(
    st: &StatusResponse,
    targets: Vec<UnitAddress>,
    priority: exchange_wire::Priority,
    reason: &str,
) -> Result<Envelope> {
    let reason = parse::recall_reason(reason).map_err(anyhow::Error::msg)?;
    let envelope = receipt::recall(st.sender.clone(), targets, st.id, priority, &reason);
    envelope
        .check_shape()
        .context("the recall cannot be sent")?;
    receipt::recalled_message(&envelope)?;
    Ok(envelope)
}

/// The (unsigned) 补发 of the document in `st`: a document of its own from the same sender, with the
/// fields given and `resend.of` naming the original, to recipients the original does not list yet
/// (the node refuses any it lists, whatever their state).
pub(super) fn resend_envelope(a: &ResendArgs, st: &StatusResponse, payload: &[u8], attachments: &[Attachment]) -> Result<Envelope> {
    if st.kind != Kind::Document {
        bail!(
            "message {} is a {}, not a document; only documents are re-sent (补发)",
            st.id,
            st.kind
        );
    }
    let mut envelope = build_document(&st.sender, &a.to, &a.cc, &a.doc, &a.file, payload, attachments)?;
    let listed = envelope
        .recipients()
        .find_map(|u| st.recipients.iter().find(|r| &r.unit == u));
    if let Some(r) = listed {
        let how = match resent_as(r) {
            Some(m) => format!("by 补发 as message {m}, "),
            None => String::new(),
        };
        bail!(
            "{} is already a recipient of message {} ({how}state {}); a 补发 goes only to recipients the document \
             missed",
            r.unit,
            st.id,
            r.state.as_str()
        );
    }
    envelope
        .metadata
        .insert(document::RESEND_OF.into(), st.id.to_hex());
    envelope.check_shape()?;
    Ok(envelope)
}

/// The directory record of `unit`, as the node's directory lists it.
pub(crate) fn unit_record(node: &Endpoint, unit: &UnitAddress) -> Result<UnitRecord> {
    node.call_found(|c| c.directory_unit(unit))?.ok_or_else(|| {
        anyhow!(
            "{unit} is not in the directory of the node at {}",
            node.base_url()
        )
    })
}

/// Checks, before anything is signed, that `key` (read from `file`) is one of the keys the directory
/// lists for `unit`, the sender, valid at `at_ms`, and that the unit is active: the node refuses what
/// is signed otherwise.
pub(super) fn check_sender_key(
    record: &UnitRecord,
    unit: &UnitAddress,
    key: &PublicKey,
    file: &Path,
    at_ms: u64,
) -> Result<()> {
    if &record.address != unit {
        bail!(
            "the directory answered for {}, not for the sender {unit}",
            record.address
        );
    }
    match record.status {
        UnitStatus::Active => {}
        UnitStatus::Suspended => bail!(
            "{unit} is suspended in the directory: its node refuses what it signs until an operator activates it"
        ),
        UnitStatus::Revoked => {
            bail!("{unit} is revoked in the directory: it can no longer sign anything")
        }
    }
    let mine: Vec<_> = record
        .keys
        .iter()
        .filter(|k| &k.public_key == key)
        .collect();
    if mine.is_empty() {
        bail!(
            "the key in {} (public key {key}) is not one of the {} key(s) of {unit} in the directory; the document's \
             sender signs here: give --key the key file of {unit}",
            file.display(),
            record.keys.len()
        );
    }
    if !mine.iter().any(|k| k.valid_at(at_ms)) {
        bail!(
            "the key in {} is a key of {unit}, but the directory says it is not valid now (not yet valid, expired \
             or revoked): use the unit's current key",
            file.display()
        );
    }
    Ok(())
}

/// `recall MESSAGE_ID`: 撤回 a document this unit sent from recipients who have not settled it, with a
/// reason, in a recall signed by the unit's key. The sender, the recipients and their states come
/// from the document's status at the sender's node.
pub fn recall(ctx: &Ctx, a: &RecallArgs) -> Result<()> {
    let only = parse::unit_list(&a.to).map_err(anyhow::Error::msg)?;
    let node = ctx.agency(ActingFor::SenderOf(&a.message))?;
    // Read the key first: a bad key file should fail before any network work.
    let key = keys::read(&a.key)?;
    let st = node.call(|c| c.status(&a.message))?;
    let targets = recall_targets(&st, &only)?;
    let envelope = recall_envelope(&st, targets, a.priority, &a.reason)?;
    let record = unit_record(&node, &st.sender)?;
    let public = PublicKey(key.verifying_key());
    check_sender_key(&record, &st.sender, &public, &a.key, envelope.created_at_ms)?;
    let signed = envelope.sign(&key);
    let answer = node.call(|c| c.recall(&a.message, &signed))?;
    let recipients = &signed.envelope.to;
    if ctx.json {
        let mut value = serde_json::to_value(&answer)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("message_id".into(), st.id.to_hex().into());
            obj.insert("recipients".into(), serde_json::to_value(recipients)?);
        }
        return emit_json(&value);
    }
    if answer.duplicate {
        eprintln!(
            "duplicate: the node already held this recall (accepted {} UTC)",
            format_ms(answer.accepted_at_ms)
        );
    } else {
        let names: Vec<String> = recipients.iter().map(ToString::to_string).collect();
        eprintln!(
            "recall (撤回) of {} accepted {} UTC for {} recipient(s): {}",
            st.id,
            format_ms(answer.accepted_at_ms),
            names.len(),
            names.join(", ")
        );
        eprintln!(
            "each recipient's node decides in order with any 签收 or 退回 it received; `exchange-admin status {}` \
             shows each as recalled, or as signed-for or returned if it settled first. Recall id:",
            st.id
        );
    }
    emit(&format!("{}\n", answer.id))
}

/// `resend MESSAGE_ID FILE`: 补发 a document this unit sent, same body, to recipients it missed, as a
/// new document signed by the unit's key with `resend.of` naming the original.
pub fn resend(ctx: &Ctx, a: &ResendArgs) -> Result<()> {
    // The recipients and --meta are checked before any network work; the rest of the document's
    // fields once the sender is known (`resend_envelope`), still before anything is signed.
    parse::recipients(&a.to, &a.cc).map_err(anyhow::Error::msg)?;
    parse::metadata(&a.doc.meta).map_err(anyhow::Error::msg)?;
    let node = ctx.agency(ActingFor::SenderOf(&a.message))?;
    // Read the key and the file first: bad ones should fail before any network work.
    let key = keys::read(&a.key)?;
    let payload = std::fs::read(&a.file)
        .with_context(|| format!("cannot read the document {}", a.file.display()))?;
    let st = node.call(|c| c.status(&a.message))?;
    let attachments = describe_attachments(&a.doc.attach)?;
    let described: Vec<Attachment> = attachments.iter().map(|(_, a)| a.clone()).collect();
    let envelope = resend_envelope(a, &st, &payload, &described)?;
    let record = unit_record(&node, &st.sender)?;
    let public = PublicKey(key.verifying_key());
    check_sender_key(&record, &st.sender, &public, &a.key, envelope.created_at_ms)?;
    let signed = envelope.sign(&key);
    upload_attachments(&node, &attachments)?;
    let answer = node.call(|c| c.resend(&a.message, &signed, &payload))?;
    if ctx.json {
        let mut value = serde_json::to_value(&answer)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("resend_of".into(), st.id.to_hex().into());
        }
        return emit_json(&value);
    }
    if answer.duplicate {
        eprintln!(
            "duplicate: the node already held this 补发 (accepted {} UTC); it will not be delivered twice",
            format_ms(answer.accepted_at_ms)
        );
    } else {
        eprintln!(
            "补发 of {} accepted {} UTC; `exchange-admin status {}` lists its recipients with the original's, \
             `exchange-admin status {}` follows the 补发 alone. New message id:",
            st.id,
            format_ms(answer.accepted_at_ms),
            st.id,
            answer.id
        );
    }
    emit(&format!("{}\n", answer.id))
}

/// The per-recipient table of `status`.
pub(super) fn recipients_table(recipients: &[RecipientStatus]) -> Table {
    let with_detail = recipients.iter().any(|r| r.detail.is_some());
    let mut header = vec!["UNIT", "STATE", "NODE", "AT (UTC)", "RECEIPT"];
    if with_detail {
        header.push("DETAIL");
    }
    let mut t = Table::new(&header);
    for r in recipients {
        let mut row = vec![
            r.unit.to_string(),
            r.state.as_str().to_owned(),
            r.node.to_string(),
            format_ms(r.at_ms),
            r.receipt
                .as_ref()
                .map(|x| short_id(&x.id.to_hex()).to_owned())
                .unwrap_or_else(|| "-".into()),
        ];
        if with_detail {
            // A return's reason may span lines; a table row may not.
            let detail = r.detail.as_deref().unwrap_or_default();
            row.push(sanitize(&detail.replace(['\n', '\t'], " ")));
        }
        t.push(row);
    }
    t
}

/// `status MESSAGE_ID`: where a message is, per recipient, and the hops it took.
pub fn status(ctx: &Ctx, id: &MessageId) -> Result<()> {
    let node = ctx.agency(ActingFor::SenderOf(id))?;
    let st = node.call(|c| c.status(id))?;
    if ctx.json {
        return emit_json(&st);
    }
    let mut text = format!(
        "message {}\n{} from {}, created {} UTC\n\n",
        st.id,
        st.kind,
        st.sender,
        format_ms(st.created_at_ms)
    );
    text.push_str(&recipients_table(&st.recipients).render());
    if st.hops.is_empty() {
        text.push_str("\nno hops reported yet\n");
    } else {
        let mut hops = Table::new(&["HOP", "NODE", "AT (UTC)"]);
        for (i, h) in st.hops.iter().enumerate() {
            hops.push(vec![
                (i + 1).to_string(),
                h.node.to_string(),
                format_ms(h.at_ms),
            ]);
        }
        text.push_str("\nhops:\n");
        text.push_str(&hops.render());
    }
    emit(&text)
}
