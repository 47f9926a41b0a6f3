//! Which attachments a stored message cites, recorded beside it.
//!
//! Two questions are asked by attachment: may this file be dropped (nothing that still needs it
//! cites it), and which documents citing it may a unit read. Answering them by searching every
//! stored header for the digest's hex read the whole messages table each time; instead every store
//! records, in the same transaction as the message, one row per attachment the message's header
//! describes, indexed by digest. The header is decoded here, in Rust, so every storage engine records
//! the same rows and no engine needs to parse headers in SQL.

use exchange_wire::{Digest, Envelope};

/// The SHA-256 digests of the attachments `header` (canonical envelope bytes) describes, each once,
/// in metadata order. Lenient on purpose: any `attachment.<n>.sha256` value that is a digest counts,
/// even in a description that is otherwise malformed, so a file is kept rather than dropped while
/// anything names it. Callers that grant access re-check the header strictly. A header that does not
/// decode cites nothing.
pub fn cited(header: &[u8]) -> Vec<[u8; 32]> {
    let Ok(env) = Envelope::from_canonical_bytes(header) else { return Vec::new() };
    let mut out: Vec<[u8; 32]> = Vec::new();
    for (key, value) in &env.metadata {
        let numbered = key.strip_prefix("attachment.").and_then(|rest| rest.strip_suffix(".sha256"));
        if numbered.is_none() {
            continue;
        }
        if let Ok(d) = value.parse::<Digest>() {
            if !out.contains(&d.0) {
                out.push(d.0);
            }
        }
    }
    out
}

/// The digest a caller names in hex, or `None` when it is not one (then nothing cites it).
pub fn digest_of_hex(sha256_hex: &str) -> Option<[u8; 32]> {
    sha256_hex.parse::<Digest>().ok().map(|d| d.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use exchange_wire::document::Attachment;
    use exchange_wire::{Kind, Priority};

    fn header(metadata: &[(&str, String)]) -> Vec<u8> {
        let mut env = Envelope::new(
            Kind::Document,
            "gz.yuexiu/liurong-street".parse().unwrap(),
            vec!["gz.haizhu/civil-affairs".parse().unwrap()],
            vec![],
            Priority::Routine,
            b"body",
        );
        for (k, v) in metadata {
            env.metadata.insert((*k).to_string(), v.clone());
        }
        env.canonical_bytes()
    }

    #[test]
    fn every_described_digest_is_cited_once() {
        let a = Attachment { name: "a.pdf".into(), media_type: "application/pdf".into(), size: 3, sha256: Digest([1; 32]) };
        let b = Attachment { name: "b.pdf".into(), media_type: "application/pdf".into(), size: 4, sha256: Digest([2; 32]) };
        let mut meta = std::collections::BTreeMap::new();
        a.describe(1, &mut meta);
        b.describe(2, &mut meta);
        Attachment { name: "again.pdf".into(), ..a.clone() }.describe(3, &mut meta);
        let pairs: Vec<(&str, String)> = meta.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        assert_eq!(cited(&header(&pairs)), vec![[1; 32], [2; 32]]);
    }

    #[test]
    fn the_hex_elsewhere_or_a_bad_header_cites_nothing() {
        let hex = Digest([3; 32]).to_hex();
        assert!(cited(&header(&[("subject", hex.clone()), ("attachment.1.name", hex.clone())])).is_empty());
        assert!(cited(&header(&[("attachment.1.sha256", "not hex".into())])).is_empty());
        assert!(cited(format!("attachment.1.sha256={hex}").as_bytes()).is_empty(), "not a canonical envelope");
        assert_eq!(digest_of_hex(&hex), Some([3; 32]));
        assert_eq!(digest_of_hex("xyz"), None);
    }
}
