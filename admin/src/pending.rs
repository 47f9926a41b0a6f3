//! Signed documents the node has not answered yet, kept so that `send` run again re-sends the same
//! bytes.
//!
//! Exactly-once holds end to end only if a retry carries the *same* signed envelope: the node
//! recognises it by its id (the SHA-256 of the signed header) and answers "duplicate". A retry that
//! signs again gets a new `created_at_ms`, hence a new id, and the recipients would get the document
//! twice. So `send` writes the envelope it signed here (durably, before handing it over), re-uses it
//! when the same document is sent again, and deletes it once the node has answered.
//!
//! A document is "the same" when every signed field but the signing time is equal: sender,
//! recipients, priority, metadata (title, attachments' descriptions, ...), payload digest and size.
//! The record holds no payload: the file is read again and must still match the signed digest.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use exchange_wire::{Envelope, SignedEnvelope, digest_payload};
use serde::{Deserialize, Serialize};

/// The environment variable naming the folder, as `--pending-dir` does.
pub const PENDING_DIR_ENV: &str = "EXCHANGE_PENDING_DIR";

/// One unanswered send, as written to `<fingerprint>.json`.
#[derive(Serialize, Deserialize)]
struct Record {
    /// The message id, for the user's information (it is recomputed and checked on reading).
    id: String,
    created_at_ms: u64,
    /// The ed25519 signature, hex.
    signature: String,
}

/// The folder of unanswered sends of this user (created 0700; each record 0600: records name
/// a message id, a time and a signature, never a document's content).
pub struct PendingSends {
    dir: PathBuf,
}

/// An envelope ready to hand over, and where it came from.
pub struct Prepared {
    pub signed: SignedEnvelope,
    /// Set when the envelope was signed by an earlier run whose answer never came.
    pub resumed: bool,
    fingerprint: String,
}

impl PendingSends {
    /// The folder given (`--pending-dir` / `EXCHANGE_PENDING_DIR`), else
    /// `$XDG_STATE_HOME/exchange-admin/pending`, else `~/.local/state/exchange-admin/pending`.
    pub fn open(given: Option<&Path>) -> Result<PendingSends> {
        let dir = match given {
            Some(d) => d.to_path_buf(),
            None => default_dir().ok_or_else(|| {
                anyhow!(
                    "no folder for unanswered sends: set --pending-dir or {PENDING_DIR_ENV} (neither HOME nor \
                     XDG_STATE_HOME is set)"
                )
            })?,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create the folder for unanswered sends {}", dir.display()))?;
        Ok(PendingSends { dir })
    }

    /// The envelope to hand over for `unsigned`: the one signed by an earlier unanswered run of the
    /// same document if there is one, else `unsigned` signed now by `sign`, written here durably
    /// before it is returned.
    pub fn prepare(&self, unsigned: Envelope, sign: impl FnOnce(Envelope) -> SignedEnvelope) -> Result<Prepared> {
        let fingerprint = fingerprint(&unsigned);
        if let Some(signed) = self.load(&fingerprint, &unsigned)? {
            return Ok(Prepared { signed, resumed: true, fingerprint });
        }
        let signed = sign(unsigned);
        self.store(&fingerprint, &signed)?;
        Ok(Prepared { signed, resumed: false, fingerprint })
    }

    /// Forgets a send the node has answered (accepted, duplicate, or refused for good).
    pub fn settle(&self, p: &Prepared) -> Result<()> {
        let path = self.path(&p.fingerprint);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove the answered send {}", path.display())),
        }
    }

    fn path(&self, fingerprint: &str) -> PathBuf {
        self.dir.join(format!("{fingerprint}.json"))
    }

    /// The earlier signed envelope of this document, if a record exists. A record that does not
    /// rebuild into a validly signed envelope of this very document is an error, never ignored: the
    /// user decides (removing the file re-signs, at the risk of a second delivery).
    fn load(&self, fingerprint: &str, unsigned: &Envelope) -> Result<Option<SignedEnvelope>> {
        let path = self.path(fingerprint);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read the unanswered send {}", path.display())),
        };
        let damaged = |why: String| {
            anyhow!(
                "the unanswered send {} is damaged ({why}); if the node never accepted this document, remove the \
                 file and run the command again (check first with `exchange-admin status`: the id is in the file)",
                path.display()
            )
        };
        let record: Record = serde_json::from_str(&text).map_err(|e| damaged(e.to_string()))?;
        let signature: [u8; 64] = hex::decode(&record.signature)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| damaged("the signature is not 64 hex bytes".into()))?;
        let mut envelope = unsigned.clone();
        envelope.created_at_ms = record.created_at_ms;
        let signed = SignedEnvelope::from_parts(envelope, signature);
        if signed.id.to_hex() != record.id {
            return Err(damaged(format!("it names id {} but rebuilds into {}", record.id, signed.id)));
        }
        Ok(Some(signed))
    }

    /// Writes the record durably: a temporary file synced, renamed into place, the folder synced.
    fn store(&self, fingerprint: &str, signed: &SignedEnvelope) -> Result<()> {
        let record = Record {
            id: signed.id.to_hex(),
            created_at_ms: signed.envelope.created_at_ms,
            signature: hex::encode(signed.signature),
        };
        let path = self.path(fingerprint);
        let tmp = self.dir.join(format!("{fingerprint}.json.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            f.write_all(serde_json::to_string_pretty(&record).expect("a record serialises").as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        };
        write().with_context(|| {
            format!("cannot keep the signed document in {} until the node answers; nothing was sent", self.dir.display())
        })
    }
}

/// What identifies a document across runs: the SHA-256 of its signed header with the signing time
/// left out, hex.
fn fingerprint(unsigned: &Envelope) -> String {
    let mut e = unsigned.clone();
    e.created_at_ms = 0;
    digest_payload(&e.canonical_bytes()).to_hex()
}

fn default_dir() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("exchange-admin/pending"))
}

/// Whether the node's refusal leaves the document unaccepted for good, so that the next run should
/// sign afresh: any answer but a temporary one (too many requests, storage full, unavailable).
pub fn refusal_is_final(status: u16) -> bool {
    !(status == 429 || status >= 500)
}

#[cfg(test)]
mod tests {
    use super::*;
    use exchange_wire::{Kind, Priority, keys};

    fn doc(title: &str) -> Envelope {
        let mut e = Envelope::new(
            Kind::Document,
            "gz.yuexiu/a".parse().unwrap(),
            vec!["gz.haizhu/b".parse().unwrap()],
            vec![],
            Priority::Routine,
            b"body",
        );
        e.metadata.insert("title".into(), title.into());
        e
    }

    #[test]
    fn the_same_document_is_signed_once_until_settled() {
        let dir = tempfile::tempdir().unwrap();
        let pending = PendingSends::open(Some(&dir.path().join("p"))).unwrap();
        let key = keys::generate();
        let first = pending.prepare(doc("t"), |e| e.sign(&key)).unwrap();
        assert!(!first.resumed);
        let mut later = doc("t");
        later.created_at_ms += 5_000;
        let again = pending.prepare(later, |_| panic!("must not sign again")).unwrap();
        assert!(again.resumed);
        assert_eq!(again.signed.id, first.signed.id);
        assert_eq!(again.signed.signature, first.signed.signature);
        let other = pending.prepare(doc("another title"), |e| e.sign(&key)).unwrap();
        assert!(!other.resumed);
        pending.settle(&again).unwrap();
        let fresh = pending.prepare(doc("t"), |e| e.sign(&key)).unwrap();
        assert!(!fresh.resumed);
    }

    #[test]
    fn a_damaged_record_stops_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let pending = PendingSends::open(Some(dir.path())).unwrap();
        let key = keys::generate();
        let p = pending.prepare(doc("t"), |e| e.sign(&key)).unwrap();
        let path = pending.path(&p.fingerprint);
        let text = fs::read_to_string(&path).unwrap().replace(&p.signed.id.to_hex(), &"0".repeat(64));
        fs::write(&path, text).unwrap();
        let err = pending.prepare(doc("t"), |e| e.sign(&key)).err().unwrap().to_string();
        assert!(err.contains("damaged") && err.contains("remove the file"), "{err}");
    }
}
