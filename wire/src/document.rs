//! The official document (公文) carried in an envelope of kind `document`: its GB/T 9704 fields are
//! envelope metadata, so they are signed with the rest of the header and readable without the
//! payload. The payload is the document body.
//!
//! Documents marked 秘密, 机密 or 绝密 never travel on this network: they are refused at ingress.

use crate::envelope::Envelope;

/// 发文字号, e.g. `越六榕〔2005〕12号`.
pub const DOC_NUMBER: &str = "doc-number";
/// 标题.
pub const TITLE: &str = "title";
/// 发文机关 (the issuing organ's name as printed).
pub const ISSUER: &str = "issuer";
/// 签发人.
pub const SIGNER: &str = "signer";
/// 成文日期, `YYYY-MM-DD`.
pub const DOC_DATE: &str = "doc-date";
/// 文种: 通知, 通报, 请示, 批复, 函, 意见, 决定, 报告, 纪要, ...
pub const DOC_TYPE: &str = "doc-type";
/// 办件 (`action`: to be handled) or 阅件 (`information`: to be read).
pub const HANDLING: &str = "handling";
/// 办理时限, `YYYY-MM-DD` (for 办件).
pub const DEADLINE: &str = "deadline";
/// 密级. Absent or `none` for unclassified documents; anything classified is refused.
pub const CLASSIFICATION: &str = "classification";
/// 补发: the id of the document this one re-sends, with the same body, to recipients it missed.
pub const RESEND_OF: &str = "resend.of";

/// Bound on the attachments of one document.
pub const MAX_ATTACHMENTS: usize = 64;

/// Longest attachment name accepted at intake, in bytes of UTF-8: what common file systems take as
/// one file name.
pub const MAX_ATTACHMENT_NAME_BYTES: usize = 255;

/// Characters an attachment name may not hold: control characters (C0, DEL, C1), which a terminal
/// would execute, and the invisible direction marks and overrides, which make `invoice<U+202E>fdp.exe`
/// read as `invoiceexe.pdf`.
pub fn is_unsafe_in_name(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// An attachment name fit to print: unsafe characters (see [`is_unsafe_in_name`]) as `\u{..}`
/// escapes, and a backslash as `\\`. Names from an older node may hold them.
pub fn escaped(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if is_unsafe_in_name(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Checks an attachment name at intake: bounded, printable. Names are signed, so they are refused,
/// not cleaned: the node cannot change what the sender signed.
fn check_name(n: usize, name: &str) -> Result<(), DocumentError> {
    if name.len() > MAX_ATTACHMENT_NAME_BYTES {
        return Err(DocumentError::BadAttachment(format!(
            "attachment {n} name is {} bytes long; names are at most {MAX_ATTACHMENT_NAME_BYTES} bytes of UTF-8: shorten it",
            name.len()
        )));
    }
    if let Some(c) = name.chars().find(|c| is_unsafe_in_name(*c)) {
        return Err(DocumentError::BadAttachment(format!(
            "attachment {n} name {} holds the control or direction character U+{:04X}: rename the file without it",
            escaped(name),
            c as u32
        )));
    }
    Ok(())
}

/// An attachment (附件) of a document. Its description (`attachment.<n>.name`, `.type`, `.size`,
/// `.sha256`, numbered from 1) is signed metadata; its bytes travel beside the envelope in chunks and
/// are bound to the sender's signature by the SHA-256, checked at every hop and by the recipient.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    /// File name as the recipient should save it (no directories).
    pub name: String,
    /// Media type, e.g. `application/pdf`.
    #[serde(rename = "type")]
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: crate::Digest,
}

impl Attachment {
    /// Describes a file as an attachment: its base name, `media_type`, size and SHA-256, read in
    /// pieces so a large scan is never in memory whole.
    pub fn of_file(path: &std::path::Path, media_type: &str) -> std::io::Result<Attachment> {
        use sha2::Digest as _;
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1024 * 1024];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "attachment".into());
        Ok(Attachment { name, media_type: media_type.to_owned(), size, sha256: crate::Digest(hasher.finalize().into()) })
    }

    /// Writes this attachment's description into `metadata` as attachment number `n` (from 1).
    pub fn describe(&self, n: usize, metadata: &mut std::collections::BTreeMap<String, String>) {
        metadata.insert(format!("attachment.{n}.name"), self.name.clone());
        metadata.insert(format!("attachment.{n}.type"), self.media_type.clone());
        metadata.insert(format!("attachment.{n}.size"), self.size.to_string());
        metadata.insert(format!("attachment.{n}.sha256"), self.sha256.to_hex());
    }
}

/// The attachments an envelope describes, in order. Well-formed when numbered 1, 2, … without gaps,
/// each with all four fields, a plain file name, a decimal size and a hex SHA-256.
pub fn attachments(envelope: &Envelope) -> Result<Vec<Attachment>, DocumentError> {
    let meta = &envelope.metadata;
    let mut out = Vec::new();
    let mut numbers = std::collections::BTreeSet::new();
    for key in meta.keys() {
        if let Some(rest) = key.strip_prefix("attachment.") {
            let (n, field) = rest.split_once('.').ok_or_else(|| DocumentError::BadAttachment(format!("metadata key {key:?} is not attachment.<n>.<field>")))?;
            let n: usize = n.parse().ok().filter(|n| (1..=MAX_ATTACHMENTS).contains(n)).ok_or_else(|| {
                DocumentError::BadAttachment(format!("metadata key {key:?}: attachments are numbered 1 to {MAX_ATTACHMENTS}"))
            })?;
            if !["name", "type", "size", "sha256"].contains(&field) {
                return Err(DocumentError::BadAttachment(format!("metadata key {key:?}: the fields are name, type, size and sha256")));
            }
            numbers.insert(n);
        }
    }
    for (i, n) in numbers.into_iter().enumerate() {
        if n != i + 1 {
            return Err(DocumentError::BadAttachment(format!("attachment {} is missing: number attachments 1, 2, 3, … without gaps", i + 1)));
        }
        let get = |field: &str| {
            meta.get(&format!("attachment.{n}.{field}"))
                .ok_or_else(|| DocumentError::BadAttachment(format!("attachment {n} has no {field}")))
        };
        let name = get("name")?.clone();
        if name.is_empty() || name.contains(['/', '\\', '\0']) || name == "." || name == ".." {
            return Err(DocumentError::BadAttachment(format!("attachment {n} name {name:?} must be a plain file name, without directories")));
        }
        let size = get("size")?.parse().map_err(|_| DocumentError::BadAttachment(format!("attachment {n} size must be a number of bytes")))?;
        let sha256 = get("sha256")?.parse().map_err(|e| DocumentError::BadAttachment(format!("attachment {n} sha256: {e}")))?;
        out.push(Attachment { name, media_type: get("type")?.clone(), size, sha256 });
    }
    Ok(out)
}

/// The classification marks that keep a document off this network, in Chinese and in English.
pub const CLASSIFIED_MARKS: [&str; 6] = ["秘密", "机密", "绝密", "secret", "confidential", "top-secret"];

/// Why a document's fields were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error(
        "the document is marked {0}: classified documents (秘密, 机密, 绝密) do not travel on this network; send it through the classified channel"
    )]
    Classified(String),
    #[error("metadata {key} must be a date as YYYY-MM-DD, not {value:?}")]
    BadDate { key: &'static str, value: String },
    #[error("metadata handling must be \"action\" (办件) or \"information\" (阅件), not {0:?}")]
    BadHandling(String),
    #[error("attachment metadata is malformed: {0}")]
    BadAttachment(String),
    #[error("metadata classification {0:?} is not a known mark: leave it out or use \"none\" for unclassified documents")]
    UnknownClassification(String),
}

/// Checks the GB/T 9704 fields a document carries (all optional, but well-formed when present).
pub fn check(envelope: &Envelope) -> Result<(), DocumentError> {
    let meta = &envelope.metadata;
    if let Some(mark) = meta.get(CLASSIFICATION) {
        let m = mark.trim();
        if CLASSIFIED_MARKS.iter().any(|c| m.eq_ignore_ascii_case(c)) || m.contains("秘密") || m.contains("机密") || m.contains("绝密") {
            return Err(DocumentError::Classified(mark.clone()));
        }
        if !(m.is_empty() || m.eq_ignore_ascii_case("none") || m == "公开" || m == "内部") {
            return Err(DocumentError::UnknownClassification(mark.clone()));
        }
    }
    for key in [DOC_DATE, DEADLINE] {
        if let Some(v) = meta.get(key)
            && !is_date(v) {
                return Err(DocumentError::BadDate { key, value: v.clone() });
            }
    }
    if let Some(h) = meta.get(HANDLING)
        && h != "action" && h != "information" {
            return Err(DocumentError::BadHandling(h.clone()));
        }
    for (i, a) in attachments(envelope)?.iter().enumerate() {
        check_name(i + 1, &a.name)?;
    }
    Ok(())
}

/// `YYYY-MM-DD`, digits only, a real calendar day (year 1900 or later).
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) || !digits(8..10) {
        return false;
    }
    let (y, m, d): (u32, u32, u32) = (s[0..4].parse().unwrap_or(0), s[5..7].parse().unwrap_or(0), s[8..10].parse().unwrap_or(0));
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    y >= 1900 && (1..=days).contains(&d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Kind, Priority};

    fn doc(meta: &[(&str, &str)]) -> Envelope {
        let mut e = Envelope::new(
            Kind::Document,
            "gz.yuexiu/liurong-street".parse().unwrap(),
            vec!["gz/civil-affairs".parse().unwrap()],
            vec![],
            Priority::Routine,
            b"x",
        );
        for (k, v) in meta {
            e.metadata.insert((*k).into(), (*v).into());
        }
        e
    }

    #[test]
    fn classified_documents_are_refused() {
        for mark in ["秘密", "机密", "绝密", "机密★10年", "SECRET", "top-secret"] {
            assert!(matches!(check(&doc(&[(CLASSIFICATION, mark)])), Err(DocumentError::Classified(_))), "{mark}");
        }
        for ok in ["none", "公开", "内部", ""] {
            assert!(check(&doc(&[(CLASSIFICATION, ok)])).is_ok(), "{ok}");
        }
        assert!(matches!(check(&doc(&[(CLASSIFICATION, "hush")])), Err(DocumentError::UnknownClassification(_))));
    }

    #[test]
    fn attachments_round_trip_and_malformed_ones_are_refused() {
        let a = Attachment { name: "scan.pdf".into(), media_type: "application/pdf".into(), size: 42, sha256: crate::digest_payload(b"x") };
        let mut e = doc(&[]);
        a.describe(1, &mut e.metadata);
        a.describe(2, &mut e.metadata);
        assert_eq!(attachments(&e).unwrap(), vec![a.clone(), a.clone()]);
        assert!(check(&e).is_ok());
        let mut gap = doc(&[]);
        a.describe(2, &mut gap.metadata);
        assert!(matches!(check(&gap), Err(DocumentError::BadAttachment(m)) if m.contains("attachment 1 is missing")));
        let mut bad = e.clone();
        bad.metadata.insert("attachment.1.name".into(), "../etc/passwd".into());
        assert!(matches!(check(&bad), Err(DocumentError::BadAttachment(_))));
        for name in ["x".repeat(256), "scan\u{1b}[2J.pdf".into(), "invoice\u{202E}fdp.exe".into(), "tab\there".into()] {
            let mut bad = e.clone();
            bad.metadata.insert("attachment.1.name".into(), name.clone());
            assert!(matches!(check(&bad), Err(DocumentError::BadAttachment(_))), "{name:?}");
            assert!(attachments(&bad).is_ok(), "relayed documents from older nodes still parse");
        }
        let mut ok = e.clone();
        ok.metadata.insert("attachment.1.name".into(), "报告".repeat(41) + ".pdf");
        assert!(check(&ok).is_ok(), "255 bytes of UTF-8 are fine");
        assert_eq!(escaped("a\u{1b}[31mb\\c"), "a\\u{1b}[31mb\\\\c");
        let mut bad = e.clone();
        bad.metadata.remove("attachment.2.sha256");
        assert!(matches!(check(&bad), Err(DocumentError::BadAttachment(m)) if m.contains("no sha256")));
        let mut bad = e;
        bad.metadata.insert("attachment.1.size".into(), "big".into());
        assert!(matches!(check(&bad), Err(DocumentError::BadAttachment(_))));
    }

    #[test]
    fn dates_and_handling_are_checked() {
        assert!(check(&doc(&[(DOC_DATE, "2005-05-20"), (DEADLINE, "2005-06-01"), (HANDLING, "action")])).is_ok());
        assert!(matches!(check(&doc(&[(DOC_DATE, "2005/05/20")])), Err(DocumentError::BadDate { .. })));
        assert!(matches!(check(&doc(&[(DEADLINE, "2005-13-01")])), Err(DocumentError::BadDate { .. })));
        assert!(matches!(check(&doc(&[(DEADLINE, "2025-02-29")])), Err(DocumentError::BadDate { .. })));
        assert!(matches!(check(&doc(&[(DEADLINE, "2025-+7-01")])), Err(DocumentError::BadDate { .. })));
        assert!(check(&doc(&[(DEADLINE, "2024-02-29")])).is_ok());
        assert!(matches!(check(&doc(&[(HANDLING, "办件")])), Err(DocumentError::BadHandling(_))));
    }
}
