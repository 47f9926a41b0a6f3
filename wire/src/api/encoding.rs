//! Base64 and hex as the JSON shapes carry payloads and signatures.

use base64::Engine as _;

/// Base64 (standard alphabet, padded) as used for payloads in JSON.
pub fn b64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard padded base64.
pub fn b64_decode(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("payload is not valid base64 ({e}): encode it with the standard alphabet, with padding (RFC 4648 section 4)"))
}

/// Decodes a 128-hex-character ed25519 signature.
pub fn signature_from_hex(s: &str) -> Result<[u8; 64], String> {
    let mut sig = [0u8; 64];
    hex::decode_to_slice(s, &mut sig).map_err(|_| "signature must be 128 hex characters".to_string())?;
    Ok(sig)
}
