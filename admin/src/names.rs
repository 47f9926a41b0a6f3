//! Attachment names from other units, made safe to print and to save. A name is signed by its
//! sender; nodes refuse control characters and names over 255 bytes at intake, but a document
//! accepted by an older node may still carry one, and this command must neither execute it on the
//! terminal nor fail on it.

use exchange_wire::MessageId;
use exchange_wire::document::is_unsafe_in_name;

/// Longest file name written, in bytes: 255 (what common file systems take) less the `.part` suffix
/// an interrupted download is kept under.
const MAX_FILE_NAME_BYTES: usize = 250;
/// A file name extension kept when a long name is shortened, if it is at most this long.
const MAX_KEPT_EXTENSION_BYTES: usize = 16;

/// The name to print: see [`exchange_wire::document::escaped`].
pub fn shown(name: &str) -> String {
    exchange_wire::document::escaped(name)
}

/// The file name attachment `n` of message `id` is saved under: `<id>.<n>.<name>`, with unsafe
/// characters as `_` and the name shortened (keeping its extension) to fit one file name.
pub fn saved_file_name(id: &MessageId, n: usize, name: &str) -> String {
    let prefix = format!("{id}.{n}.");
    let clean: String = name.chars().map(|c| if is_unsafe_in_name(c) || c == '/' || c == '\\' { '_' } else { c }).collect();
    let room = MAX_FILE_NAME_BYTES - prefix.len();
    if clean.len() <= room {
        return prefix + &clean;
    }
    let ext = clean.rfind('.').map(|i| &clean[i..]).filter(|e| e.len() <= MAX_KEPT_EXTENSION_BYTES).unwrap_or("");
    let mut stem_end = room - ext.len();
    while !clean.is_char_boundary(stem_end) {
        stem_end -= 1;
    }
    format!("{prefix}{}{ext}", &clean[..stem_end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_and_control_names_become_one_safe_file_name() {
        let id = exchange_wire::Digest([7; 32]);
        assert_eq!(saved_file_name(&id, 1, "scan.pdf"), format!("{id}.1.scan.pdf"));
        let long = saved_file_name(&id, 2, &format!("{}.pdf", "报".repeat(90)));
        assert!(long.len() <= MAX_FILE_NAME_BYTES && long.ends_with("报.pdf"), "{long}");
        assert_eq!(saved_file_name(&id, 3, "a\u{1b}[2Jb\u{202e}.txt"), format!("{id}.3.a_[2Jb_.txt"));
        assert_eq!(shown("a\u{1b}[2J"), "a\\u{1b}[2J");
    }
}
