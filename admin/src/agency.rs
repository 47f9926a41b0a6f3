//! Agency commands: keys, sending documents, reading (and verifying) an inbox, listing overdue 办件,
//! signing for (签收), returning (退回), recalling (撤回), re-sending (补发) and tracing.
//!
//! Everything that needs a unit key happens here, on the agency's machine: the node only ever sees
//! signed envelopes, never a key. Each command talks to the node through `exchange_wire::client`, the
//! same client the tests drive, so what works here works for any agency client.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use exchange_wire::api::{
    InboxItem, InboxResponse, RecipientState, RecipientStatus, StatusResponse,
};
use exchange_wire::client::ClientError;
use exchange_wire::directory::{UnitRecord, UnitStatus};
use exchange_wire::document::Attachment;
use exchange_wire::{Envelope, Kind, MessageId, PublicKey, UnitAddress, document, keys, receipt};

use crate::endpoint::{ActingFor, Ctx, Endpoint};
use crate::output::{
    Table, china_day, date_days, emit, emit_json, format_ms, sanitize, short_id, truncate,
};
use crate::parse::{self, IdPattern, META_FILE_NAME};
use crate::pending::{self, PendingSends};
use crate::{
    DocumentFields, InboxArgs, KeygenArgs, OverdueArgs, PubkeyArgs, RecallArgs, ResendArgs,
    ReturnArgs, SendArgs, SignForArgs,
};

/// The longest inbox long-poll: the client gives up on any answer after 120 s, so the node must get
/// to answer well before that.
pub const MAX_WAIT_SECS: u64 = 100;

/// Inbox page size used when searching an inbox. Pages carry payloads, so keep them modest.
const SEARCH_PAGE: u32 = 50;

/// Column width for titles in tables; the full title is in `--json` output.
const TITLE_COLUMNS: usize = 40;

/// `keygen`: a fresh unit key in a new file only its owner can read.
pub fn keygen(ctx: &Ctx, a: &KeygenArgs) -> Result<()> {
    let key = keys::generate();
    keys::write_new(&a.out, &key, &a.label)?;
    let public = PublicKey(key.verifying_key());
    if ctx.json {
        return emit_json(
            &serde_json::json!({ "public_key": public, "file": a.out.display().to_string() }),
        );
    }
    eprintln!(
        "wrote {} (mode 0600); register this public key for the unit in the directory:",
        a.out.display()
    );
    emit(&format!("{public}\n"))
}

/// `pubkey`: the public half of a key file, to register in the directory.
pub fn pubkey(ctx: &Ctx, a: &PubkeyArgs) -> Result<()> {
    let public = PublicKey(keys::read(&a.key)?.verifying_key());
    if ctx.json {
        return emit_json(
            &serde_json::json!({ "public_key": public, "file": a.key.display().to_string() }),
        );
    }
    emit(&format!("{public}\n"))
}

/// Builds the (unsigned) document envelope for `send`. Separate from the I/O so it can be tested.
/// The GB/T 9704 fields are checked as the node checks them at ingress (`document::check`), so a
/// document the node would refuse, a classified one above all, is refused here before it is signed.
fn document_envelope(a: &SendArgs, payload: &[u8], attachments: &[Attachment]) -> Result<Envelope> {
    build_document(&a.from, &a.to, &a.cc, &a.doc, &a.file, payload, attachments)
}

/// The (unsigned) document envelope from `from` with the fields of `send` and `resend`, checked as
/// [`document_envelope`] says.
fn build_document(
    from: &UnitAddress,
    to: &[String],
    cc: &[String],
    d: &DocumentFields,
    file: &Path,
    payload: &[u8],
    attachments: &[Attachment],
) -> Result<Envelope> {
    let (to, cc) = parse::recipients(to, cc).map_err(anyhow::Error::msg)?;
    let mut metadata = parse::metadata(&d.meta).map_err(anyhow::Error::msg)?;
    let fields = [
        (document::TITLE, d.title.as_deref()),
        (document::DOC_NUMBER, d.doc_number.as_deref()),
        (document::ISSUER, d.issuer.as_deref()),
        (document::SIGNER, d.signer.as_deref()),
        (document::DOC_DATE, d.doc_date.as_deref()),
        (document::DOC_TYPE, d.doc_type.as_deref()),
        (document::HANDLING, d.handling.map(parse::Handling::as_str)),
        (document::DEADLINE, d.deadline.as_deref()),
    ];
    for (key, value) in fields {
        if let Some(v) = value {
            metadata.insert(key.into(), v.to_owned());
        }
    }
    if let Some(name) = file.file_name() {
        metadata.insert(META_FILE_NAME.into(), name.to_string_lossy().into_owned());
    }
    for (i, a) in attachments.iter().enumerate() {
        a.describe(i + 1, &mut metadata);
    }
    let mut envelope = Envelope::new(Kind::Document, from.clone(), to, cc, d.priority, payload);
    envelope.metadata = metadata;
    envelope.check_shape()?;
    document::check(&envelope)
        .map_err(|e| anyhow!("{e} (checked before signing: nothing was sent)"))?;
    Ok(envelope)
}

/// The media type recorded for an attachment, from its file name's extension.
fn media_type(path: &Path) -> &'static str {
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "ofd" => "application/ofd",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "wps" => "application/vnd.ms-works",
        "txt" => "text/plain",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "tif" | "tiff" => "image/tiff",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// Reads each `--attach` file once to describe it (size, SHA-256), in pieces.
fn describe_attachments(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Attachment)>> {
    if paths.len() > document::MAX_ATTACHMENTS {
        bail!("{} attachments given; a document carries at most {}", paths.len(), document::MAX_ATTACHMENTS);
    }
    paths
        .iter()
        .map(|p| {
            let a = Attachment::of_file(p, media_type(p)).with_context(|| format!("cannot read the attachment {}", p.display()))?;
            Ok((p.clone(), a))
        })
        .collect()
}

/// Uploads each attachment to the node, resuming from the node's last committed chunk after an
/// interruption (a few attempts, then the command fails; running it again resumes too).
fn upload_attachments(node: &Endpoint, attachments: &[(PathBuf, Attachment)]) -> Result<()> {
    for (path, a) in attachments {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match node.call(|c| c.upload_attachment(path, a)) {
                Ok(s) if s.complete => break,
                Ok(s) if attempt < 5 => eprintln!("upload of {} interrupted at byte {}; resuming", crate::names::shown(&a.name), s.committed_bytes),
                Ok(s) => bail!("upload of {} stopped at byte {} of {}; run the command again to resume", crate::names::shown(&a.name), s.committed_bytes, a.size),
                Err(e) if attempt < 5 => eprintln!("upload of {} interrupted ({e:#}); resuming", crate::names::shown(&a.name)),
                Err(e) => return Err(e.context(format!("upload of {} failed; run the command again to resume", crate::names::shown(&a.name)))),
            }
            std::thread::sleep(Duration::from_millis(500 * attempt));
        }
        eprintln!("attachment {} uploaded ({} bytes, SHA-256 {})", crate::names::shown(&a.name), a.size, a.sha256);
    }
    Ok(())
}

/// `send`: reads the file, signs a document envelope with the unit key and hands it to the node.
/// The signed envelope is kept in the pending folder until the node answers, so that running the
/// command again after a lost answer re-sends the same bytes (see [`crate::pending`]).
pub fn send(ctx: &Ctx, a: &SendArgs) -> Result<()> {
    let node = ctx.agency(ActingFor::Unit(&a.from))?;
    let key = keys::read(&a.key)?;
    let payload = std::fs::read(&a.file)
        .with_context(|| format!("cannot read the document {}", a.file.display()))?;
    let attachments = describe_attachments(&a.doc.attach)?;
    let described: Vec<Attachment> = attachments.iter().map(|(_, a)| a.clone()).collect();
    let pending = PendingSends::open(a.pending_dir.as_deref())?;
    let mut prepared = pending.prepare(document_envelope(a, &payload, &described)?, |e| e.sign(&key))?;
    if prepared.resumed {
        eprintln!(
            "re-sending message {} signed {} UTC, whose answer never came: the node will not deliver it twice",
            prepared.signed.id,
            format_ms(prepared.signed.envelope.created_at_ms)
        );
    }
    upload_attachments(&node, &attachments)?;
    let mut answer = node.call(|c| Ok(c.submit(&prepared.signed, &payload)))?;
    if prepared.resumed && matches!(&answer, Err(e) if e.code() == Some("stale-envelope")) {
        // The node does not hold it (it would have answered "duplicate") and it is past the replay
        // window: signing again cannot deliver it twice.
        eprintln!("the node never received message {}, now too old to accept; signing it again", prepared.signed.id);
        pending.settle(&prepared)?;
        prepared = pending.prepare(document_envelope(a, &payload, &described)?, |e| e.sign(&key))?;
        answer = node.call(|c| Ok(c.submit(&prepared.signed, &payload)))?;
    }
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            if matches!(&e, ClientError::Refused { status, .. } if pending::refusal_is_final(*status)) {
                pending.settle(&prepared)?;
            } else {
                eprintln!(
                    "message {} is kept until the node answers: run the same command again to re-send it",
                    prepared.signed.id
                );
            }
            return node.call(|_| Err(e));
        }
    };
    pending.settle(&prepared)?;
    if ctx.json {
        return emit_json(&answer);
    }
    if answer.duplicate {
        eprintln!(
            "duplicate: the node already held this message (accepted {} UTC); it will not be delivered twice",
            format_ms(answer.accepted_at_ms)
        );
    } else {
        eprintln!(
            "accepted {} UTC; follow it with: exchange-admin status {}",
            format_ms(answer.accepted_at_ms),
            answer.id
        );
    }
    emit(&format!("{}\n", answer.id))
}

/// The title shown for a message: its `title` metadata, else its file name, else `-`.
fn title_of(e: &Envelope) -> String {
    let title = e
        .metadata
        .get(document::TITLE)
        .or_else(|| e.metadata.get(META_FILE_NAME))
        .cloned()
        .unwrap_or_else(|| "-".into());
    // Attachments first, so truncating a long title never hides them.
    match document::attachments(e).map(|a| a.len()) {
        Ok(n) if n > 0 => format!("[附件 {n}] {title}"),
        _ => title,
    }
}

/// Whether a message's signature verified (`inbox --verify`), or why not.
type Verdict = Result<(), String>;

/// The inbox table for people; with verdicts (one per item), a VERIFIED column.
fn inbox_table(items: &[InboxItem], verdicts: Option<&[Verdict]>) -> Table {
    let mut header = vec![
        "SEQ",
        "ID",
        "FROM",
        "KIND",
        "PRIORITY",
        "TITLE",
        "STATE",
        "DELIVERED (UTC)",
    ];
    if verdicts.is_some() {
        header.push("VERIFIED");
    }
    let mut t = Table::new(&header);
    for (i, item) in items.iter().enumerate() {
        let e = &item.message.envelope;
        let mut row = vec![
            item.seq.to_string(),
            short_id(&item.id.to_hex()).to_owned(),
            e.sender.to_string(),
            e.kind.to_string(),
            e.priority.to_string(),
            truncate(&sanitize(&title_of(e)), TITLE_COLUMNS),
            item.state.as_str().to_owned(),
            format_ms(item.delivered_at_ms),
        ];
        if let Some(v) = verdicts {
            let ok = v.get(i).is_some_and(Result::is_ok);
            row.push(if ok { "yes" } else { "NO" }.to_owned());
        }
        t.push(row);
    }
    t
}

/// A sender's directory record as the node gave it, or why there is none.
type SenderRecord = Result<UnitRecord, String>;

/// Verifies one inbox item offline: its envelope must hash to its id, its payload match the signed
/// digest, and its signature verify against one of the sender's keys that was valid when the
/// envelope was created (`KeyRecord::valid_at`): a key not yet valid, expired or revoked by then does
/// not count.
pub(crate) fn verify_item(item: &InboxItem, sender: &SenderRecord) -> Verdict {
    let claimed = &item.message.envelope.sender;
    let record = sender.as_ref().map_err(Clone::clone)?;
    if &record.address != claimed {
        return Err(format!(
            "the directory answered for {}, not for the sender {claimed}",
            record.address
        ));
    }
    let (signed, _payload) = item
        .message
        .decode()
        .map_err(|e| format!("the message does not decode: {e}"))?;
    if signed.id != item.id {
        return Err(format!(
            "its envelope hashes to {}, not to its id",
            signed.id
        ));
    }
    let created = signed.envelope.created_at_ms;
    let valid: Vec<_> = record.keys.iter().filter(|k| k.valid_at(created)).collect();
    if valid.is_empty() {
        return Err(format!(
            "none of the {} key(s) of {claimed} in the directory was valid when it was created ({} UTC)",
            record.keys.len(),
            format_ms(created)
        ));
    }
    if valid.iter().any(|k| signed.verify(&k.public_key.0).is_ok()) {
        Ok(())
    } else {
        Err(format!(
            "the signature does not verify against the {} key(s) of {claimed} valid when it was created \
             ({} UTC): forged or altered",
            valid.len(),
            format_ms(created)
        ))
    }
}

/// The directory record of each sender in `items`, asked of the node once per sender. A sender the
/// directory does not list is recorded as such (its messages fail verification); any other failure
/// stops the command.
fn sender_records(
    node: &Endpoint,
    items: &[InboxItem],
) -> Result<HashMap<UnitAddress, SenderRecord>> {
    let mut records = HashMap::new();
    for item in items {
        let sender = &item.message.envelope.sender;
        if records.contains_key(sender) {
            continue;
        }
        let record = node
            .call_found(|c| c.directory_unit(sender))?
            .ok_or_else(|| {
                format!(
                    "{sender} is not in the directory of the node at {}",
                    node.base_url()
                )
            });
        records.insert(sender.clone(), record);
    }
    Ok(records)
}

/// Verifies every item against the records of its sender (one verdict per item, in order).
fn verify_items(items: &[InboxItem], records: &HashMap<UnitAddress, SenderRecord>) -> Vec<Verdict> {
    items
        .iter()
        .map(|item| {
            let sender = &item.message.envelope.sender;
            match records.get(sender) {
                Some(record) => verify_item(item, record),
                None => Err(format!("no directory record was asked for {sender}")),
            }
        })
        .collect()
}

/// The inbox page as JSON, each item with `verified` and, when it failed, `verify_error`.
fn inbox_json(
    page: &exchange_wire::api::InboxResponse,
    verdicts: &[Verdict],
) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(page)?;
    if let Some(items) = value.get_mut("items").and_then(|v| v.as_array_mut()) {
        for (item, verdict) in items.iter_mut().zip(verdicts) {
            if let Some(obj) = item.as_object_mut() {
                obj.insert("verified".into(), verdict.is_ok().into());
                if let Err(why) = verdict {
                    obj.insert("verify_error".into(), why.clone().into());
                }
            }
        }
    }
    Ok(value)
}

/// Writes each payload to `dir/<message id>` and each attachment to `dir/<message id>.<n>.<name>`
/// (the name cleaned and shortened to one file name, see `names::saved_file_name`).
/// Files are named by the id, never by the sender's `file-name` alone, which another unit chose and
/// could point anywhere (attachment names are plain file names: the node refuses any other). The
/// payload is checked against the signed envelope's digest, each attachment against its signed
/// SHA-256, and both are written under a temporary name then renamed, so a file that exists is always
/// complete. An interrupted attachment download resumes when the command runs again.
fn save_payloads(node: &Endpoint, dir: &Path, items: &[InboxItem]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut unsaved = 0;
    for item in items {
        let (signed, payload) = item
            .message
            .decode()
            .map_err(|e| anyhow!("message {} was not saved: {e}", item.id))?;
        if signed.id != item.id {
            bail!(
                "message {} was not saved: its envelope hashes to {}, not to its id",
                item.id,
                signed.id
            );
        }
        let path = dir.join(item.id.to_hex());
        let part = dir.join(format!(".{}.part", item.id));
        std::fs::write(&part, &payload)
            .and_then(|_| std::fs::rename(&part, &path))
            .with_context(|| format!("cannot write {}", path.display()))?;
        let attachments = document::attachments(&signed.envelope)
            .map_err(|e| anyhow!("the attachments of message {} were not saved: {e}", item.id))?;
        for (i, a) in attachments.iter().enumerate() {
            // Shortened and cleaned (see `names`): a name from an older node never stops the rest.
            let dest = dir.join(crate::names::saved_file_name(&item.id, i + 1, &a.name));
            if dest.exists() {
                continue;
            }
            if let Err(e) = node.call(|c| c.download_attachment(&item.id, i + 1, a, &dest)) {
                eprintln!("attachment {} of message {} was not saved: {e:#}", crate::names::shown(&a.name), item.id);
                unsaved += 1;
            }
        }
    }
    if unsaved > 0 {
        bail!("{unsaved} attachment(s) were not saved (see above); everything else was: run the command again to retry them");
    }
    Ok(())
}

/// `inbox`: one page of a unit's inbox, optionally waiting for new messages, verifying signatures
/// and saving payloads. With `--verify`, only verified payloads are saved, and the command fails
/// (exit code 1) after printing the page when any message does not verify.
pub fn inbox(ctx: &Ctx, a: &InboxArgs) -> Result<()> {
    let node = ctx.agency(ActingFor::Unit(&a.unit))?;
    let page = node.call(|c| c.inbox(&a.unit, a.after, a.limit, Duration::from_secs(a.wait)))?;
    let verdicts = if a.verify {
        let records = sender_records(&node, &page.items)?;
        Some(verify_items(&page.items, &records))
    } else {
        None
    };
    if let Some(dir) = &a.save {
        let keep: Vec<InboxItem> = match &verdicts {
            Some(v) => page
                .items
                .iter()
                .zip(v)
                .filter(|(_, verdict)| verdict.is_ok())
                .map(|(item, _)| item.clone())
                .collect(),
            None => page.items.clone(),
        };
        save_payloads(&node, dir, &keep)?;
        eprintln!("saved {} payload(s) to {}", keep.len(), dir.display());
        if keep.len() < page.items.len() {
            eprintln!(
                "{} payload(s) not saved: their signatures did not verify",
                page.items.len() - keep.len()
            );
        }
    }
    let failed: Vec<(&InboxItem, &String)> = match &verdicts {
        Some(v) => page
            .items
            .iter()
            .zip(v)
            .filter_map(|(item, verdict)| verdict.as_ref().err().map(|why| (item, why)))
            .collect(),
        None => Vec::new(),
    };
    if ctx.json {
        match &verdicts {
            Some(v) => emit_json(&inbox_json(&page, v)?)?,
            None => emit_json(&page)?,
        }
    } else if page.items.is_empty() {
        eprintln!("no messages for {} after seq {}", page.unit, a.after);
    } else {
        emit(&inbox_table(&page.items, verdicts.as_deref()).render())?;
        if page.items.len() as u32 >= a.limit {
            eprintln!("more may follow: --after {}", page.next_after);
        }
    }
    for (item, why) in &failed {
        eprintln!(
            "NOT VERIFIED: message {} (seq {}) from {}: {}",
            item.id,
            item.seq,
            item.message.envelope.sender,
            sanitize(why)
        );
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} message(s) failed signature verification; do not act on them",
            failed.len(),
            page.items.len()
        );
    }
    Ok(())
}

/// How many days past its deadline (办理时限, `YYYY-MM-DD` in China Standard Time) a document is at
/// `now_ms`: 0 on the deadline itself, 1 the day after, and so on, counted in whole China Standard
/// Time days. `None` when the deadline is not a real date. A deadline still ahead (this machine's
/// clock is behind the node's) counts as 0.
fn days_overdue(deadline: &str, now_ms: u64) -> Option<u64> {
    let days = china_day(now_ms) - date_days(deadline)?;
    Some(days.max(0) as u64)
}

/// The `overdue` table for people, at `now_ms`; items in the node's order (earliest deadline first).
fn overdue_table(items: &[InboxItem], now_ms: u64) -> Table {
    let mut t = Table::new(&[
        "DEADLINE",
        "DAYS OVERDUE",
        "ID",
        "FROM",
        "TITLE",
        "DOC NUMBER",
    ]);
    for item in items {
        let e = &item.message.envelope;
        let deadline = e.metadata.get(document::DEADLINE);
        let days = deadline
            .and_then(|d| days_overdue(d, now_ms))
            .map_or_else(|| "?".to_owned(), |d| d.to_string());
        t.push(vec![
            deadline.cloned().unwrap_or_else(|| "-".into()),
            days,
            short_id(&item.id.to_hex()).to_owned(),
            e.sender.to_string(),
            truncate(&sanitize(&title_of(e)), TITLE_COLUMNS),
            e.metadata
                .get(document::DOC_NUMBER)
                .cloned()
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

/// `overdue`: the unit's 办件 whose deadline has passed and that it has neither signed for nor
/// returned, earliest deadline first (the node picks and orders them). Succeeds whether or not any
/// are overdue; an empty list is noted on stderr.
pub fn overdue(ctx: &Ctx, a: &OverdueArgs) -> Result<()> {
    let node = ctx.agency(ActingFor::Unit(&a.unit))?;
    let page: InboxResponse = node.call(|c| c.overdue(&a.unit))?;
    if ctx.json {
        emit_json(&page)?;
    } else if !page.items.is_empty() {
        emit(&overdue_table(&page.items, exchange_wire::now_ms()).render())?;
    }
    if page.items.is_empty() {
        eprintln!("nothing overdue");
    }
    Ok(())
}

/// Finds a message in a unit's inbox, paging from the start. A full id stops at the first match; a
/// prefix reads the whole inbox so that an ambiguous prefix is refused rather than guessed.
pub(crate) fn find_in_inbox(node: &Endpoint, unit: &UnitAddress, wanted: &IdPattern) -> Result<InboxItem> {
    let mut after = 0;
    let mut seen = 0usize;
    let mut found: Vec<InboxItem> = Vec::new();
    loop {
        let page = node.call(|c| c.inbox(unit, after, SEARCH_PAGE, Duration::ZERO))?;
        if page.items.is_empty() {
            break;
        }
        seen += page.items.len();
        found.extend(page.items.into_iter().filter(|i| wanted.matches(&i.id)));
        if matches!(wanted, IdPattern::Full(_)) && !found.is_empty() {
            break;
        }
        // A node that does not move forward would make this loop forever.
        if page.next_after <= after {
            break;
        }
        after = page.next_after;
    }
    let shown = match wanted {
        IdPattern::Full(id) => id.to_hex(),
        IdPattern::Prefix(p) => p.clone(),
    };
    match found.len() {
        0 => bail!(
            "message {shown} is not in the inbox of {unit} at {} ({seen} message(s) looked at); check the id and \
             --unit, or whether it has been delivered yet (exchange-admin status ID at the sender's node)",
            node.base_url()
        ),
        1 => Ok(found.remove(0)),
        _ => {
            let ids: Vec<String> = found.iter().map(|i| i.id.to_hex()).collect();
            bail!(
                "{shown} matches {} messages; give more of the id: {}",
                ids.len(),
                ids.join(", ")
            )
        }
    }
}

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
fn require_document(item: &InboxItem, verb: &str) -> Result<()> {
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
fn require_not_recalled(item: &InboxItem, unit: &UnitAddress, verb: &str) -> Result<()> {
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
fn return_receipt(unit: &UnitAddress, item: &InboxItem, reason: &str) -> Result<Envelope> {
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
const RESENT_AS: &str = "补发 as message ";

/// The 补发 through which a recipient in a document's status was reached, if it was one.
fn resent_as(r: &RecipientStatus) -> Option<MessageId> {
    r.detail
        .as_deref()?
        .strip_prefix(RESENT_AS)?
        .get(..64)?
        .parse()
        .ok()
}

/// Whether nothing is left to recall from a recipient in this state: it settled the document (签收,
/// 退回, or an earlier 撤回), or a node refused the document for good so it never got it.
fn is_final(state: RecipientState) -> bool {
    matches!(
        state,
        RecipientState::SignedFor
            | RecipientState::Returned
            | RecipientState::Recalled
            | RecipientState::Failed
    )
}

/// What a final state means, after the recipient's address.
fn final_as(state: RecipientState) -> &'static str {
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
fn recall_targets(st: &StatusResponse, only: &[UnitAddress]) -> Result<Vec<UnitAddress>> {
    if st.kind != Kind::Document {
        bail!(
            "message {} is a {}, not a document; only documents are recalled",
            st.id,
            st.kind
        );
    }
    let resent: Vec<(&RecipientStatus, MessageId)> = st
        .recipients
        .iter()
        .filter_map(|r| resent_as(r).map(|m| (r, m)))
        .collect();
    if only.is_empty() {
        let open: Vec<UnitAddress> = st
            .recipients
            .iter()
            .filter(|r| resent_as(r).is_none() && !is_final(r.state))
            .map(|r| r.unit.clone())
            .collect();
        if !open.is_empty() {
            return Ok(open);
        }
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
        let mut open_resends: Vec<String> = resent
            .iter()
            .filter(|(r, _)| !is_final(r.state))
            .map(|(_, m)| m.to_hex())
            .collect();
        open_resends.sort_unstable();
        open_resends.dedup();
        if !open_resends.is_empty() {
            why.push_str(&format!(
                "; recipients reached by a 补发 are recalled by the 补发's own id: {}",
                open_resends.join(", ")
            ));
        }
        bail!(why);
    }
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
fn recall_envelope(
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
fn resend_envelope(a: &ResendArgs, st: &StatusResponse, payload: &[u8], attachments: &[Attachment]) -> Result<Envelope> {
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
fn check_sender_key(
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
fn recipients_table(recipients: &[RecipientStatus]) -> Table {
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

#[cfg(test)]
mod tests {
    use super::*;
    use exchange_wire::Priority;
    use exchange_wire::api::SignedMessage;
    use exchange_wire::directory::KeyRecord;
    use std::path::PathBuf;

    fn send_args() -> SendArgs {
        SendArgs {
            key: PathBuf::from("unit.key"),
            from: "gz.yuexiu/liurong-street".parse().unwrap(),
            to: vec!["gz/civil-affairs,gz.haizhu/civil-affairs".into()],
            cc: vec!["gz.tianhe/civil-affairs".into()],
            doc: DocumentFields {
                priority: Priority::Express,
                title: Some("关于做好防汛工作的通知".into()),
                doc_number: Some("越府〔2025〕12号".into()),
                issuer: None,
                signer: None,
                doc_date: None,
                doc_type: None,
                handling: None,
                deadline: None,
                meta: vec!["category=notice".into()],
                attach: vec![],
            },
            pending_dir: None,
            file: PathBuf::from("/tmp/some/dir/通知.pdf"),
        }
    }

    #[test]
    fn document_envelope_carries_flags_as_metadata() {
        let e = document_envelope(&send_args(), b"payload", &[]).unwrap();
        assert_eq!(e.kind, Kind::Document);
        assert_eq!(e.to.len(), 2);
        assert_eq!(e.cc.len(), 1);
        assert_eq!(e.priority, Priority::Express);
        assert_eq!(e.metadata["title"], "关于做好防汛工作的通知");
        assert_eq!(e.metadata["doc-number"], "越府〔2025〕12号");
        assert_eq!(e.metadata["file-name"], "通知.pdf");
        assert_eq!(e.metadata["category"], "notice");
        e.check_payload(b"payload").unwrap();
    }

    #[test]
    fn document_envelope_refuses_bad_recipients() {
        let mut a = send_args();
        a.cc = vec!["gz/civil-affairs".into()];
        assert!(
            document_envelope(&a, b"", &[])
                .unwrap_err()
                .to_string()
                .contains("both")
        );
    }

    #[test]
    fn inbox_table_shows_short_ids_and_titles() {
        let key = keys::generate();
        let e = document_envelope(&send_args(), b"x", &[]).unwrap();
        let signed = e.sign(&key);
        let item = InboxItem {
            seq: 7,
            id: signed.id,
            delivered_at_ms: 1_700_000_000_123,
            state: RecipientState::Delivered,
            message: SignedMessage::new(&signed, b"x"),
        };
        let text = inbox_table(&[item], None).render();
        let row = text.lines().nth(1).unwrap();
        assert!(row.starts_with("7    "));
        assert!(row.contains(short_id(&signed.id.to_hex())));
        assert!(!row.contains(&signed.id.to_hex()));
        assert!(row.contains("express"));
        assert!(row.contains("关于做好防汛工作的通知"));
        assert!(row.ends_with("2023-11-14 22:13:20.123"));
    }

    #[test]
    fn document_envelope_carries_the_gbt_9704_fields() {
        let mut a = send_args();
        a.doc.issuer = Some("越秀区六榕街道办事处".into());
        a.doc.signer = Some("张三".into());
        a.doc.doc_date = Some("2025-05-20".into());
        a.doc.doc_type = Some("通知".into());
        a.doc.handling = Some(parse::Handling::Action);
        a.doc.deadline = Some("2025-06-01".into());
        let e = document_envelope(&a, b"payload", &[]).unwrap();
        let m = &e.metadata;
        assert_eq!(m[document::TITLE], "关于做好防汛工作的通知");
        assert_eq!(m[document::DOC_NUMBER], "越府〔2025〕12号");
        assert_eq!(m[document::ISSUER], "越秀区六榕街道办事处");
        assert_eq!(m[document::SIGNER], "张三");
        assert_eq!(m[document::DOC_DATE], "2025-05-20");
        assert_eq!(m[document::DOC_TYPE], "通知");
        assert_eq!(m[document::HANDLING], "action");
        assert_eq!(m[document::DEADLINE], "2025-06-01");
        a.doc.handling = Some(parse::Handling::Information);
        let e = document_envelope(&a, b"payload", &[]).unwrap();
        assert_eq!(e.metadata[document::HANDLING], "information");
        document::check(&e).unwrap();
    }

    #[test]
    fn classified_documents_are_refused_before_signing() {
        for mark in ["机密", "秘密★1年", "top-secret"] {
            let mut a = send_args();
            a.doc.meta = vec![format!("classification={mark}")];
            let err = document_envelope(&a, b"x", &[]).unwrap_err().to_string();
            let node_says = document::DocumentError::Classified(mark.into()).to_string();
            assert!(err.starts_with(&node_says), "{err}");
            assert!(err.contains("nothing was sent"), "{err}");
        }
        let mut a = send_args();
        a.doc.meta = vec!["classification=内部".into()];
        assert!(document_envelope(&a, b"x", &[]).is_ok());
        a.doc.meta = vec!["classification=hush".into()];
        let err = document_envelope(&a, b"x", &[]).unwrap_err().to_string();
        assert!(err.contains("not a known mark"), "{err}");
    }

    /// The document of `send_args`, with payload `x`, signed with `$key`, in an inbox in `$state`.
    /// (A macro: the signing key's type is not exported by the wire crate.)
    macro_rules! inbox_item {
        ($key:expr, $state:expr) => {
            inbox_item(
                &document_envelope(&send_args(), b"x", &[]).unwrap().sign(&$key),
                $state,
            )
        };
    }

    /// The public half of a signing key.
    macro_rules! public {
        ($key:expr) => {
            PublicKey($key.verifying_key())
        };
    }

    fn inbox_item(signed: &exchange_wire::SignedEnvelope, state: RecipientState) -> InboxItem {
        InboxItem {
            seq: 3,
            id: signed.id,
            delivered_at_ms: 1_700_000_000_123,
            state,
            message: SignedMessage::new(signed, b"x"),
        }
    }

    fn record(keys: Vec<KeyRecord>) -> SenderRecord {
        Ok(UnitRecord {
            address: "gz.yuexiu/liurong-street".parse().unwrap(),
            name: "越秀区六榕街道办事处".into(),
            kind: "street-office".into(),
            uscc: None,
            status: UnitStatus::Active,
            keys,
        })
    }

    fn key_record(
        public_key: PublicKey,
        not_before_ms: u64,
        not_after_ms: Option<u64>,
        revoked_at_ms: Option<u64>,
    ) -> KeyRecord {
        KeyRecord {
            public_key,
            not_before_ms,
            not_after_ms,
            revoked_at_ms,
        }
    }

    #[test]
    fn inbox_table_shows_returned_and_verified() {
        let key = keys::generate();
        let items = [
            inbox_item!(key, RecipientState::Returned),
            inbox_item!(key, RecipientState::SignedFor),
        ];
        let text = inbox_table(&items, None).render();
        assert!(!text.contains("VERIFIED"));
        assert!(
            text.lines().nth(1).unwrap().contains(" returned "),
            "{text}"
        );
        assert!(
            text.lines().nth(2).unwrap().contains(" signed-for "),
            "{text}"
        );
        let verdicts = [Ok(()), Err("forged".to_string())];
        let text = inbox_table(&items, Some(&verdicts)).render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("VERIFIED"), "{text}");
        assert!(lines[1].ends_with(" yes"), "{text}");
        assert!(lines[2].ends_with(" NO"), "{text}");
    }

    #[test]
    fn verification_uses_the_keys_valid_when_created() {
        let key = keys::generate();
        let other = keys::generate();
        let item = inbox_item!(key, RecipientState::Delivered);
        let created = item.message.envelope.created_at_ms;

        assert_eq!(
            verify_item(
                &item,
                &record(vec![key_record(public!(key), 0, None, None)])
            ),
            Ok(())
        );
        // The right key among others, one of them not valid then.
        let keys = vec![
            key_record(public!(other), 0, Some(created), None),
            key_record(public!(key), created, Some(created + 1), None),
        ];
        assert_eq!(verify_item(&item, &record(keys)), Ok(()));

        let cases = [
            (
                vec![key_record(public!(other), 0, None, None)],
                "does not verify",
            ),
            (
                vec![key_record(public!(key), created + 1, None, None)],
                "was valid",
            ),
            (
                vec![key_record(public!(key), 0, Some(created), None)],
                "was valid",
            ),
            (
                vec![key_record(public!(key), 0, None, Some(created))],
                "was valid",
            ),
            (vec![], "none of the 0 key(s)"),
        ];
        for (keys, expected) in cases {
            let why = verify_item(&item, &record(keys)).unwrap_err();
            assert!(why.contains(expected), "{why}");
        }
        // Revoked after it was created: it was signed while the key was good.
        let keys = vec![key_record(public!(key), 0, None, Some(created + 1))];
        assert_eq!(verify_item(&item, &record(keys)), Ok(()));

        let missing: SenderRecord = Err("gz.yuexiu/liurong-street is not in the directory".into());
        assert!(
            verify_item(&item, &missing)
                .unwrap_err()
                .contains("not in the directory")
        );

        let mut wrong_unit = record(vec![key_record(public!(key), 0, None, None)]).unwrap();
        wrong_unit.address = "gz/civil-affairs".parse().unwrap();
        assert!(
            verify_item(&item, &Ok(wrong_unit))
                .unwrap_err()
                .contains("not for the sender")
        );
    }

    #[test]
    fn verification_catches_altered_messages() {
        let key = keys::generate();
        let good = record(vec![key_record(public!(key), 0, None, None)]);

        let mut altered = inbox_item!(key, RecipientState::Delivered);
        altered
            .message
            .envelope
            .metadata
            .insert(document::TITLE.into(), "改过的标题".into());
        let why = verify_item(&altered, &good).unwrap_err();
        assert!(why.contains("hashes to"), "{why}");

        // Altered and its id recomputed to match: the signature no longer fits.
        let mut forged = inbox_item!(key, RecipientState::Delivered);
        forged
            .message
            .envelope
            .metadata
            .insert(document::TITLE.into(), "改过的标题".into());
        forged.id = forged.message.envelope.message_id();
        let why = verify_item(&forged, &good).unwrap_err();
        assert!(why.contains("does not verify"), "{why}");

        let mut payload = inbox_item!(key, RecipientState::Delivered);
        payload.message.payload = SignedMessage::new(
            &document_envelope(&send_args(), b"y", &[]).unwrap().sign(&key),
            b"y",
        )
        .payload;
        assert!(
            verify_item(&payload, &good)
                .unwrap_err()
                .contains("does not decode")
        );
    }

    #[test]
    fn verdicts_follow_each_sender_and_go_into_json() {
        let key = keys::generate();
        let items = vec![
            inbox_item!(key, RecipientState::Delivered),
            inbox_item!(keys::generate(), RecipientState::Delivered),
        ];
        let mut records = HashMap::new();
        records.insert(
            "gz.yuexiu/liurong-street".parse().unwrap(),
            record(vec![key_record(public!(key), 0, None, None)]),
        );
        let verdicts = verify_items(&items, &records);
        assert!(verdicts[0].is_ok());
        assert!(verdicts[1].is_err());
        let page = exchange_wire::api::InboxResponse {
            unit: "gz/civil-affairs".parse().unwrap(),
            items,
            next_after: 3,
        };
        let json = inbox_json(&page, &verdicts).unwrap();
        assert_eq!(json["items"][0]["verified"], true);
        assert!(json["items"][0].get("verify_error").is_none());
        assert_eq!(json["items"][1]["verified"], false);
        assert!(
            json["items"][1]["verify_error"]
                .as_str()
                .unwrap()
                .contains("does not verify")
        );
        assert_eq!(json["next_after"], 3);

        let none: HashMap<UnitAddress, SenderRecord> = HashMap::new();
        assert!(verify_items(&page.items, &none).iter().all(Result::is_err));
    }

    /// Milliseconds since the epoch at `hour`:`minute` China Standard Time on `date`.
    fn cst(date: &str, hour: u64, minute: u64) -> u64 {
        let day = date_days(date).unwrap() as u64;
        (day * 86_400 + hour * 3600 + minute * 60 - 8 * 3600) * 1000
    }

    #[test]
    fn days_overdue_counts_china_standard_time_days() {
        let deadline = "2025-06-01";
        assert_eq!(days_overdue(deadline, cst("2025-06-01", 23, 59)), Some(0));
        assert_eq!(days_overdue(deadline, cst("2025-06-02", 0, 0)), Some(1));
        // 2025-06-02 07:00 in China is still 2025-06-01 in UTC: the day counts in China.
        assert_eq!(days_overdue(deadline, cst("2025-06-02", 7, 0)), Some(1));
        assert_eq!(
            days_overdue(deadline, cst("2025-06-02", 23, 59) + 59_999),
            Some(1)
        );
        assert_eq!(days_overdue(deadline, cst("2025-06-03", 0, 0)), Some(2));
        assert_eq!(days_overdue(deadline, cst("2025-07-01", 12, 0)), Some(30));
        // Across a leap day and a year end.
        assert_eq!(days_overdue("2024-02-28", cst("2024-03-01", 9, 0)), Some(2));
        assert_eq!(days_overdue("2023-02-28", cst("2023-03-01", 9, 0)), Some(1));
        assert_eq!(days_overdue("2024-12-31", cst("2025-01-01", 0, 0)), Some(1));
        assert_eq!(
            days_overdue("2024-12-31", cst("2026-01-01", 0, 0)),
            Some(366)
        );
        // This machine's clock behind the node's: not yet due here, shown as 0.
        assert_eq!(days_overdue(deadline, cst("2025-05-30", 12, 0)), Some(0));
        for bad in ["2025-02-30", "2025/06/01", "", "soon"] {
            assert_eq!(days_overdue(bad, cst("2025-06-02", 0, 0)), None, "{bad:?}");
        }
    }

    #[test]
    fn overdue_table_shows_deadlines_and_days() {
        let key = keys::generate();
        let mut a = send_args();
        a.doc.handling = Some(parse::Handling::Action);
        a.doc.deadline = Some("2025-06-01".into());
        let signed = document_envelope(&a, b"x", &[]).unwrap().sign(&key);
        let with_deadline = inbox_item(&signed, RecipientState::Delivered);
        let mut bare = inbox_item!(key, RecipientState::Delivered);
        bare.message.envelope.metadata.remove(document::DOC_NUMBER);
        let text = overdue_table(&[with_deadline, bare], cst("2025-06-04", 10, 0)).render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("DEADLINE    DAYS OVERDUE  ID  "),
            "{text}"
        );
        assert!(
            lines[0].ends_with("TITLE                   DOC NUMBER"),
            "{text}"
        );
        let row = lines[1];
        assert!(row.starts_with("2025-06-01  3             "), "{text}");
        assert!(row.contains(short_id(&signed.id.to_hex())), "{text}");
        assert!(!row.contains(&signed.id.to_hex()), "{text}");
        assert!(row.contains("gz.yuexiu/liurong-street"), "{text}");
        assert!(row.contains("关于做好防汛工作的通知"), "{text}");
        assert!(row.ends_with("越府〔2025〕12号"), "{text}");
        // No deadline (the node only lists 办件 with one): shown as unknown rather than guessed.
        assert!(lines[2].starts_with("-           ?             "), "{text}");
        assert!(lines[2].ends_with(" -"), "{text}");
    }

    #[test]
    fn return_receipts() {
        let key = keys::generate();
        let unit: UnitAddress = "gz/civil-affairs".parse().unwrap();
        let item = inbox_item!(key, RecipientState::Delivered);
        let e = return_receipt(&unit, &item, " 发文字号有误 ").unwrap();
        assert_eq!(e.kind, Kind::Receipt);
        assert_eq!(e.sender, unit);
        assert_eq!(e.to, std::slice::from_ref(&item.message.envelope.sender));
        assert_eq!(e.priority, Priority::Express);
        let facts = receipt::Receipt::from_envelope(&e).unwrap();
        assert_eq!(facts.for_message, item.id);
        assert_eq!(facts.receipt_type, receipt::ReceiptType::Returned);
        assert_eq!(facts.reason.as_deref(), Some("发文字号有误"));

        assert!(
            return_receipt(&unit, &item, "  ")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let long = "理".repeat(exchange_wire::envelope::MAX_HEADER_BYTES);
        assert!(
            return_receipt(&unit, &item, &long)
                .unwrap_err()
                .to_string()
                .contains("cannot be sent")
        );

        let signed = inbox_item!(key, RecipientState::SignedFor);
        let err = return_receipt(&unit, &signed, "x").unwrap_err().to_string();
        assert!(err.contains("already signed for"), "{err}");
        let returned = inbox_item!(key, RecipientState::Returned);
        let err = return_receipt(&unit, &returned, "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("already returned"), "{err}");

        let receipt = receipt::signed_for(
            unit.clone(),
            item.message.envelope.sender.clone(),
            item.id,
            Priority::Routine,
        )
        .sign(&key);
        let not_a_document = InboxItem {
            id: receipt.id,
            message: SignedMessage::new(&receipt, b""),
            ..inbox_item!(key, RecipientState::Delivered)
        };
        let err = return_receipt(&unit, &not_a_document, "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a document"), "{err}");
    }

    fn unit(s: &str) -> UnitAddress {
        s.parse().unwrap()
    }

    fn row(u: &str, state: RecipientState, detail: Option<String>) -> RecipientStatus {
        RecipientStatus {
            unit: unit(u),
            state,
            node: "gz".parse().unwrap(),
            at_ms: 1_700_000_000_123,
            detail,
            receipt: None,
        }
    }

    /// The status of a document from 六榕街道 with `rows` as its recipients.
    fn doc_status(rows: Vec<RecipientStatus>) -> StatusResponse {
        StatusResponse {
            id: "ab".repeat(32).parse().unwrap(),
            kind: Kind::Document,
            sender: unit("gz.yuexiu/liurong-street"),
            created_at_ms: 1_700_000_000_000,
            recipients: rows,
            hops: vec![],
        }
    }

    fn resend_id() -> MessageId {
        "cd".repeat(32).parse().unwrap()
    }

    /// A status row of a recipient reached by the 补发 `resend_id()`, as the sender's node writes it.
    fn resent_row(u: &str, state: RecipientState, detail: Option<&str>) -> RecipientStatus {
        let d = detail.map(|d| format!(": {d}")).unwrap_or_default();
        row(
            u,
            state,
            Some(format!("补发 as message {}{d}", resend_id())),
        )
    }

    fn mixed_status() -> StatusResponse {
        doc_status(vec![
            row("gz.haizhu/civil-affairs", RecipientState::Delivered, None),
            row("gz.tianhe/civil-affairs", RecipientState::InTransit, None),
            row("gz/civil-affairs", RecipientState::SignedFor, None),
            row(
                "gz/finance",
                RecipientState::Returned,
                Some("发文字号有误".into()),
            ),
            row(
                "gz/housing",
                RecipientState::Recalled,
                Some("recalled before it was settled".into()),
            ),
            row(
                "gz/transport",
                RecipientState::Failed,
                Some("unit suspended".into()),
            ),
            row("gz/health", RecipientState::Accepted, None),
            resent_row("gz/education", RecipientState::Delivered, None),
        ])
    }

    #[test]
    fn resent_rows_name_their_resend() {
        assert_eq!(
            resent_as(&resent_row("gz/a", RecipientState::Delivered, None)),
            Some(resend_id())
        );
        assert_eq!(
            resent_as(&resent_row("gz/a", RecipientState::Returned, Some("重复"))),
            Some(resend_id())
        );
        assert_eq!(
            resent_as(&row("gz/a", RecipientState::Delivered, None)),
            None
        );
        let odd = row(
            "gz/a",
            RecipientState::Returned,
            Some("补发 as message 12".into()),
        );
        assert_eq!(resent_as(&odd), None);
    }

    #[test]
    fn recall_goes_to_the_open_recipients_by_default() {
        let st = mixed_status();
        let targets = recall_targets(&st, &[]).unwrap();
        let names: Vec<&str> = targets.iter().map(UnitAddress::as_str).collect();
        assert_eq!(
            names,
            [
                "gz.haizhu/civil-affairs",
                "gz.tianhe/civil-affairs",
                "gz/health"
            ],
            "settled, failed and 补发 recipients are left out"
        );
    }

    #[test]
    fn recall_to_checks_each_named_recipient() {
        let st = mixed_status();
        let only = [unit("gz.tianhe/civil-affairs")];
        assert_eq!(recall_targets(&st, &only).unwrap(), only);
        let cases = [
            ("gz/civil-affairs", "signed for it (签收)"),
            ("gz/finance", "returned it (退回)"),
            ("gz/housing", "recalled (撤回) already"),
            ("gz/transport", "refused it for good"),
            ("gz/planning", "not a recipient"),
        ];
        for (u, expected) in cases {
            let only = [unit("gz.haizhu/civil-affairs"), unit(u)];
            let e = recall_targets(&st, &only).unwrap_err().to_string();
            assert!(e.contains(expected), "{u}: {e}");
            assert!(e.contains(u), "{e}");
        }
        let e = recall_targets(&st, &[unit("gz/education")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("补发") && e.contains(&resend_id().to_hex()),
            "{e}"
        );
    }

    #[test]
    fn recall_says_when_nobody_is_left() {
        let st = doc_status(vec![
            row("gz/a", RecipientState::SignedFor, None),
            row("gz/b", RecipientState::SignedFor, None),
            row("gz/c", RecipientState::Returned, Some("x".into())),
            resent_row("gz/d", RecipientState::Delivered, None),
        ]);
        let e = recall_targets(&st, &[]).unwrap_err().to_string();
        assert!(e.starts_with("nobody left to recall"), "{e}");
        assert!(e.contains("2 signed-for, 1 returned"), "{e}");
        assert!(
            e.contains(&resend_id().to_hex()),
            "an open 补发 is pointed to: {e}"
        );

        let st = doc_status(vec![resent_row("gz/d", RecipientState::SignedFor, None)]);
        let e = recall_targets(&st, &[]).unwrap_err().to_string();
        assert!(e.contains("none listed") && !e.contains("补发"), "{e}");

        let mut receipt = mixed_status();
        receipt.kind = Kind::Receipt;
        let e = recall_targets(&receipt, &[]).unwrap_err().to_string();
        assert!(e.contains("not a document"), "{e}");
    }

    #[test]
    fn recall_envelopes() {
        let st = mixed_status();
        let targets = recall_targets(&st, &[]).unwrap();
        let e = recall_envelope(&st, targets.clone(), Priority::Urgent, " 发文字号有误 ").unwrap();
        assert_eq!(e.kind, Kind::Recall);
        assert_eq!(e.sender, st.sender);
        assert_eq!(e.to, targets);
        assert_eq!(e.priority, Priority::Urgent);
        assert_eq!(e.payload_size, 0);
        assert_eq!(e.metadata[receipt::META_RECALL_REASON], "发文字号有误");
        assert_eq!(receipt::recalled_message(&e).unwrap(), st.id);

        let e = recall_envelope(&st, targets.clone(), Priority::Routine, " \n").unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let long = "理".repeat(exchange_wire::envelope::MAX_HEADER_BYTES);
        let e = recall_envelope(&st, targets, Priority::Routine, &long).unwrap_err();
        assert!(e.to_string().contains("cannot be sent"), "{e}");
    }

    fn resend_args() -> ResendArgs {
        let s = send_args();
        ResendArgs {
            key: s.key,
            to: vec!["gz/planning".into()],
            cc: vec![],
            doc: s.doc,
            message: "ab".repeat(32).parse().unwrap(),
            file: s.file,
        }
    }

    #[test]
    fn resend_envelopes_name_the_original() {
        let st = mixed_status();
        let e = resend_envelope(&resend_args(), &st, b"the body", &[]).unwrap();
        assert_eq!(e.kind, Kind::Document);
        assert_eq!(e.sender, st.sender, "the sender is the original's");
        assert_eq!(e.to, [unit("gz/planning")]);
        assert_eq!(e.metadata[document::RESEND_OF], st.id.to_hex());
        assert_eq!(e.metadata[document::TITLE], "关于做好防汛工作的通知");
        assert_eq!(e.metadata[META_FILE_NAME], "通知.pdf");
        assert_eq!(e.priority, Priority::Express);
        e.check_payload(b"the body").unwrap();
        document::check(&e).unwrap();
    }

    #[test]
    fn resend_refuses_recipients_already_listed() {
        let st = mixed_status();
        for (u, expected) in [
            ("gz/civil-affairs", "state signed-for"),
            ("gz/transport", "state failed"),
            ("gz/education", "by 补发 as message"),
        ] {
            let mut a = resend_args();
            a.cc = vec![u.into()];
            let e = resend_envelope(&a, &st, b"x", &[]).unwrap_err().to_string();
            assert!(e.contains(u) && e.contains(expected), "{e}");
            assert!(e.contains("missed"), "{e}");
        }
        let mut a = resend_args();
        a.doc.meta = vec!["classification=机密".into()];
        assert!(
            resend_envelope(&a, &st, b"x", &[]).is_err(),
            "checked as send checks"
        );
        let mut receipt = mixed_status();
        receipt.kind = Kind::Receipt;
        let e = resend_envelope(&resend_args(), &receipt, b"x", &[]).unwrap_err();
        assert!(e.to_string().contains("not a document"), "{e}");
    }

    #[test]
    fn the_signing_key_must_be_the_senders() {
        let key = keys::generate();
        let other = keys::generate();
        let sender = unit("gz.yuexiu/liurong-street");
        let file = Path::new("liurong.key");
        let now = 1_700_000_000_000;
        let good = record(vec![
            key_record(public!(other), 0, Some(now), None),
            key_record(public!(key), 0, None, None),
        ])
        .unwrap();
        check_sender_key(&good, &sender, &public!(key), file, now).unwrap();

        let e = check_sender_key(&good, &sender, &public!(keys::generate()), file, now)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not one of the 2 key(s)") && e.contains("liurong.key"),
            "{e}"
        );
        let e = check_sender_key(&good, &sender, &public!(other), file, now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid now"), "{e}");
        let revoked = record(vec![key_record(public!(key), 0, None, Some(now))]).unwrap();
        let e = check_sender_key(&revoked, &sender, &public!(key), file, now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid now"), "{e}");

        let mut suspended = good.clone();
        suspended.status = UnitStatus::Suspended;
        let e = check_sender_key(&suspended, &sender, &public!(key), file, now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("suspended"), "{e}");
        let e = check_sender_key(&good, &unit("gz/civil-affairs"), &public!(key), file, now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not for the sender"), "{e}");
    }

    #[test]
    fn status_table_shows_recalls_and_resends() {
        let st = mixed_status();
        let text = recipients_table(&st.recipients).render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("DETAIL"), "{text}");
        let housing = lines.iter().find(|l| l.starts_with("gz/housing ")).unwrap();
        assert!(
            housing.contains(" recalled ") && housing.ends_with("recalled before it was settled"),
            "{text}"
        );
        let education = lines
            .iter()
            .find(|l| l.starts_with("gz/education "))
            .unwrap();
        assert!(
            education.ends_with(&format!("补发 as message {}", resend_id())),
            "{text}"
        );
        let multi_line = [row(
            "gz/a",
            RecipientState::Returned,
            Some("第一行\n第二行\x1b[2J".into()),
        )];
        let text = recipients_table(&multi_line).render();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("第一行 第二行\u{FFFD}[2J"), "{text}");

        let plain = [row("gz/a", RecipientState::Recalled, None)];
        let text = recipients_table(&plain).render();
        assert!(
            !text.contains("DETAIL") && text.contains(" recalled "),
            "{text}"
        );
    }

    #[test]
    fn recalled_documents_are_not_settled_again() {
        let key = keys::generate();
        let u = unit("gz/civil-affairs");
        let item = inbox_item!(key, RecipientState::Recalled);
        let e = return_receipt(&u, &item, "x").unwrap_err().to_string();
        assert!(
            e.contains("recalled (撤回)") && e.contains("returned"),
            "{e}"
        );
        let e = require_not_recalled(&item, &u, "signed for")
            .unwrap_err()
            .to_string();
        assert!(e.contains("can no longer be signed for"), "{e}");
        let item = inbox_item!(key, RecipientState::Delivered);
        assert!(require_not_recalled(&item, &u, "signed for").is_ok());
    }
}
