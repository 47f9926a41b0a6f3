//! Key files and public keys.
//!
//! A key file holds one ed25519 secret key (its 32-byte seed) as 64 hex characters, with comment lines
//! starting with `#`. Unit keys belong to agencies and never leave them; a node key is both the node's
//! signing key and its libp2p identity. Key files must be readable by their owner only (mode 0600): a
//! key that others can read is refused with the `chmod` that fixes it.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a key or key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write key file {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("key file {path} already exists; remove it first if you really mean to replace the key")]
    Exists { path: String },
    #[error("key file {path} is readable by other users (mode {mode:o}); run: chmod 600 {path}")]
    Permissions { path: String, mode: u32 },
    #[error("key file {path} does not hold a key: expected 64 hex characters (an ed25519 seed)")]
    Format { path: String },
    #[error("{0:?} is not an ed25519 public key: expected 64 hex characters")]
    PublicFormat(String),
    #[error("public key {0} is a weak key (it has a small-order component) and is refused")]
    WeakKey(String),
}

/// Generates a fresh secret key from the operating system's random source.
pub fn generate() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the operating system's random source is unavailable");
    SigningKey::from_bytes(&seed)
}

/// Writes a new key file with mode 0600. Refuses to overwrite an existing file.
pub fn write_new(path: &Path, key: &SigningKey, label: &str) -> Result<(), KeyError> {
    let shown = path.display().to_string();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => KeyError::Exists { path: shown.clone() },
        _ => KeyError::Write { path: shown.clone(), source: e },
    })?;
    let body = format!(
        "# exchange network ed25519 secret key: {label}\n# public key {}\n{}\n",
        PublicKey(key.verifying_key()),
        hex::encode(key.to_bytes())
    );
    f.write_all(body.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| KeyError::Write { path: shown, source: e })
}

/// Reads a key file, refusing one that other users can read.
pub fn read(path: &Path) -> Result<SigningKey, KeyError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| KeyError::Read { path: shown.clone(), source: e })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path: shown, mode });
        }
    }
    let _ = meta;
    let text = std::fs::read_to_string(path).map_err(|e| KeyError::Read { path: shown.clone(), source: e })?;
    parse(&text, &shown)
}

/// Parses the text of a key file (read from `shown`, named in errors): comment lines starting with
/// `#`, then the 32-byte seed as 64 hex characters.
pub fn parse(text: &str, shown: &str) -> Result<SigningKey, KeyError> {
    let format = || KeyError::Format { path: shown.to_owned() };
    let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).ok_or_else(format)?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(line, &mut seed).map_err(|_| format())?;
    Ok(SigningKey::from_bytes(&seed))
}

/// An ed25519 public key, written as 64 hex characters. Weak keys (of small order, or with a small-order
/// component) are refused on parse.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub VerifyingKey);

impl PublicKey {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut b).map_err(|_| KeyError::PublicFormat(s.to_owned()))?;
        let k = VerifyingKey::from_bytes(&b).map_err(|_| KeyError::PublicFormat(s.to_owned()))?;
        // No honest key has a small-order component; one that has lets its holder make signatures that
        // batch and single verification judge differently. The check costs one scalar multiplication,
        // once per key.
        if k.is_weak() || !k.to_edwards().is_torsion_free() {
            return Err(KeyError::WeakKey(s.to_owned()));
        }
        Ok(PublicKey(k))
    }
}
impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}
impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_and_permissions() {
        let dir = std::env::temp_dir().join(format!("govx-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("unit.key");
        let _ = std::fs::remove_file(&path);
        let k = generate();
        write_new(&path, &k, "test").unwrap();
        assert_eq!(read(&path).unwrap().to_bytes(), k.to_bytes());
        assert!(matches!(write_new(&path, &k, "again"), Err(KeyError::Exists { .. })));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(read(&path), Err(KeyError::Permissions { .. })));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
