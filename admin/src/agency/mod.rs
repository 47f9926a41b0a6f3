//! Agency commands: keys, sending documents, reading (and verifying) an inbox, listing overdue 办件,
//! signing for (签收), returning (退回), recalling (撤回), re-sending (补发) and tracing.
//!
//! Everything that needs a unit key happens here, on the agency's machine: the node only ever sees
//! signed envelopes, never a key. Each command talks to the node through `exchange_wire::client`, the
//! same client the tests drive, so what works here works for any agency client.

mod reading;
mod settling;

pub use reading::*;
pub use settling::*;

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
