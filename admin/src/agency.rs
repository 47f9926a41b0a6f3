//! Agency commands: keys, sending documents, reading an inbox, signing for (签收) and tracing.
//!
//! Everything that needs a unit key happens here, on the agency's machine: the node only ever sees
//! signed envelopes, never a key. Each command talks to the node through `exchange_wire::client`, the
//! same client the tests drive, so what works here works for any agency client.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use exchange_wire::api::{InboxItem, RecipientStatus};
use exchange_wire::{Envelope, Kind, MessageId, PublicKey, UnitAddress, keys, receipt};

use crate::endpoint::{ActingFor, Ctx, Endpoint};
use crate::output::{Table, emit, emit_json, format_ms, sanitize, short_id, truncate};
use crate::parse::{self, IdPattern, META_DOC_NUMBER, META_FILE_NAME, META_TITLE};
use crate::{InboxArgs, KeygenArgs, PubkeyArgs, SendArgs, SignForArgs};

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
fn document_envelope(a: &SendArgs, payload: &[u8]) -> Result<Envelope> {
    let (to, cc) = parse::recipients(&a.to, &a.cc).map_err(anyhow::Error::msg)?;
    let mut metadata = parse::metadata(&a.meta).map_err(anyhow::Error::msg)?;
    if let Some(title) = &a.title {
        metadata.insert(META_TITLE.into(), title.clone());
    }
    if let Some(number) = &a.doc_number {
        metadata.insert(META_DOC_NUMBER.into(), number.clone());
    }
    if let Some(name) = a.file.file_name() {
        metadata.insert(META_FILE_NAME.into(), name.to_string_lossy().into_owned());
    }
    let mut envelope = Envelope::new(Kind::Document, a.from.clone(), to, cc, a.priority, payload);
    envelope.metadata = metadata;
    envelope.check_shape()?;
    Ok(envelope)
}

/// `send`: reads the file, signs a document envelope with the unit key and hands it to the node.
pub fn send(ctx: &Ctx, a: &SendArgs) -> Result<()> {
    let node = ctx.agency(ActingFor::Unit(&a.from))?;
    let key = keys::read(&a.key)?;
    let payload = std::fs::read(&a.file)
        .with_context(|| format!("cannot read the document {}", a.file.display()))?;
    let signed = document_envelope(a, &payload)?.sign(&key);
    let answer = node.call(|c| c.submit(&signed, &payload))?;
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
    e.metadata
        .get(META_TITLE)
        .or_else(|| e.metadata.get(META_FILE_NAME))
        .cloned()
        .unwrap_or_else(|| "-".into())
}

/// The inbox table for people.
fn inbox_table(items: &[InboxItem]) -> Table {
    let mut t = Table::new(&[
        "SEQ",
        "ID",
        "FROM",
        "KIND",
        "PRIORITY",
        "TITLE",
        "STATE",
        "DELIVERED (UTC)",
    ]);
    for item in items {
        let e = &item.message.envelope;
        t.push(vec![
            item.seq.to_string(),
            short_id(&item.id.to_hex()).to_owned(),
            e.sender.to_string(),
            e.kind.to_string(),
            e.priority.to_string(),
            truncate(&sanitize(&title_of(e)), TITLE_COLUMNS),
            item.state.as_str().to_owned(),
            format_ms(item.delivered_at_ms),
        ]);
    }
    t
}

/// Writes each payload to `dir/<message id>`. The file is named by the id, never by the sender's
/// `file-name`, which another unit chose and could point anywhere. The payload is checked against the
/// signed envelope's digest first, and written under a temporary name then renamed, so a file that
/// exists is always complete.
fn save_payloads(dir: &Path, items: &[InboxItem]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
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
    }
    Ok(())
}

/// `inbox`: one page of a unit's inbox, optionally waiting for new messages and saving payloads.
pub fn inbox(ctx: &Ctx, a: &InboxArgs) -> Result<()> {
    let node = ctx.agency(ActingFor::Unit(&a.unit))?;
    let page = node.call(|c| c.inbox(&a.unit, a.after, a.limit, Duration::from_secs(a.wait)))?;
    if let Some(dir) = &a.save {
        save_payloads(dir, &page.items)?;
        eprintln!("saved {} payload(s) to {}", page.items.len(), dir.display());
    }
    if ctx.json {
        return emit_json(&page);
    }
    if page.items.is_empty() {
        eprintln!("no messages for {} after seq {}", page.unit, a.after);
        return Ok(());
    }
    emit(&inbox_table(&page.items).render())?;
    if page.items.len() as u32 >= a.limit {
        eprintln!("more may follow: --after {}", page.next_after);
    }
    Ok(())
}

/// Finds a message in a unit's inbox, paging from the start. A full id stops at the first match; a
/// prefix reads the whole inbox so that an ambiguous prefix is refused rather than guessed.
fn find_in_inbox(node: &Endpoint, unit: &UnitAddress, wanted: &IdPattern) -> Result<InboxItem> {
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
    if e.kind != Kind::Document {
        bail!(
            "message {} is a {}, not a document; only documents are signed for",
            item.id,
            e.kind
        );
    }
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
            row.push(r.detail.clone().unwrap_or_default());
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
    use exchange_wire::api::{RecipientState, SignedMessage};
    use std::path::PathBuf;

    fn send_args() -> SendArgs {
        SendArgs {
            key: PathBuf::from("unit.key"),
            from: "gz.yuexiu/liurong-street".parse().unwrap(),
            to: vec!["gz/civil-affairs,gz.haizhu/civil-affairs".into()],
            cc: vec!["gz.tianhe/civil-affairs".into()],
            priority: Priority::Express,
            title: Some("关于做好防汛工作的通知".into()),
            doc_number: Some("越府〔2025〕12号".into()),
            meta: vec!["category=notice".into()],
            file: PathBuf::from("/tmp/some/dir/通知.pdf"),
        }
    }

    #[test]
    fn document_envelope_carries_flags_as_metadata() {
        let e = document_envelope(&send_args(), b"payload").unwrap();
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
            document_envelope(&a, b"")
                .unwrap_err()
                .to_string()
                .contains("both")
        );
    }

    #[test]
    fn inbox_table_shows_short_ids_and_titles() {
        let key = keys::generate();
        let e = document_envelope(&send_args(), b"x").unwrap();
        let signed = e.sign(&key);
        let item = InboxItem {
            seq: 7,
            id: signed.id,
            delivered_at_ms: 1_700_000_000_123,
            state: RecipientState::Delivered,
            message: SignedMessage::new(&signed, b"x"),
        };
        let text = inbox_table(&[item]).render();
        let row = text.lines().nth(1).unwrap();
        assert!(row.starts_with("7    "));
        assert!(row.contains(short_id(&signed.id.to_hex())));
        assert!(!row.contains(&signed.id.to_hex()));
        assert!(row.contains("express"));
        assert!(row.contains("关于做好防汛工作的通知"));
        assert!(row.ends_with("2023-11-14 22:13:20.123"));
    }
}
