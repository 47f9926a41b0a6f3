//! Parsing of command-line values that clap cannot check alone: recipient lists, metadata pairs,
//! priorities and message ids. Errors are caught here, before anything is signed or sent, and say
//! what to type instead.

use std::collections::BTreeMap;
use std::str::FromStr;

use exchange_wire::{MessageId, Priority, UnitAddress};

/// Metadata keys the `send` command fills from its own flags.
pub const META_TITLE: &str = "title";
pub const META_DOC_NUMBER: &str = "doc-number";
pub const META_FILE_NAME: &str = "file-name";

/// Parses recipient flags: each value may hold several addresses separated by commas, and the flag
/// may be repeated (`--to a,b --to c`). Empty items (a trailing comma from a script) are skipped; a
/// unit listed twice is refused, since the node would refuse the envelope anyway.
pub fn unit_list(values: &[String]) -> Result<Vec<UnitAddress>, String> {
    let mut out: Vec<UnitAddress> = Vec::new();
    for item in values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let unit = UnitAddress::from_str(item).map_err(|e| e.to_string())?;
        if out.contains(&unit) {
            return Err(format!("recipient {unit} is listed twice"));
        }
        out.push(unit);
    }
    Ok(out)
}

/// Main (主送) and copy (抄送) recipients: at least one main recipient, and no unit in both lists.
pub fn recipients(
    to: &[String],
    cc: &[String],
) -> Result<(Vec<UnitAddress>, Vec<UnitAddress>), String> {
    let to = unit_list(to)?;
    let cc = unit_list(cc)?;
    if to.is_empty() {
        return Err("give at least one main recipient with --to UNIT[,UNIT...]".into());
    }
    if let Some(both) = cc.iter().find(|u| to.contains(u)) {
        return Err(format!(
            "{both} is both a main (--to) and a copy (--cc) recipient; list it once"
        ));
    }
    Ok((to, cc))
}

/// Parses `--meta key=value` pairs. Keys that `send` sets from its own flags, and the `receipt.` and
/// `report.` keys that mark receipts and delivery reports, are refused so a document cannot be made to
/// look like something else.
pub fn metadata(pairs: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("--meta {pair:?} is not key=value"))?;
        let key = key.trim();
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "--meta {pair:?}: the key must be non-empty and contain no spaces"
            ));
        }
        match key {
            META_TITLE | META_DOC_NUMBER | META_FILE_NAME => {
                return Err(format!("set {key} with --{key}, not with --meta"));
            }
            k if k.starts_with("receipt.") || k.starts_with("report.") => {
                return Err(format!(
                    "metadata key {k} is reserved for receipts and delivery reports"
                ));
            }
            _ => {}
        }
        if out.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(format!("--meta key {key} is given twice"));
        }
    }
    Ok(out)
}

/// Parses a priority: the wire names, or the Chinese terms operators know (特急, 加急, 平件).
pub fn priority(s: &str) -> Result<Priority, String> {
    match s.trim() {
        "特急" => Ok(Priority::Urgent),
        "加急" => Ok(Priority::Express),
        "平件" => Ok(Priority::Routine),
        other => other.to_ascii_lowercase().parse(),
    }
}

/// A message id as typed: the full 64 hex characters, or (where a command can search) a prefix such
/// as the short id shown in tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdPattern {
    Full(MessageId),
    Prefix(String),
}

/// The shortest prefix accepted: short enough to type, long enough not to match by accident.
pub const MIN_ID_PREFIX: usize = 8;

impl IdPattern {
    pub fn matches(&self, id: &MessageId) -> bool {
        match self {
            IdPattern::Full(full) => full == id,
            IdPattern::Prefix(p) => id.to_hex().starts_with(p.as_str()),
        }
    }
}

impl FromStr for IdPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<IdPattern, String> {
        let s = s.trim().to_ascii_lowercase();
        if s.len() == 64 {
            return s.parse().map(IdPattern::Full);
        }
        if s.len() >= MIN_ID_PREFIX && s.len() < 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(IdPattern::Prefix(s));
        }
        Err(format!(
            "{s:?} is not a message id: give the 64 hex characters, or at least the first {MIN_ID_PREFIX}"
        ))
    }
}

/// A full message id (commands that ask the node directly cannot search by prefix).
pub fn full_id(s: &str) -> Result<MessageId, String> {
    let s = s.trim().to_ascii_lowercase();
    if s.len() < 64 && s.len() >= MIN_ID_PREFIX && s.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?} is a shortened id; give all 64 hex characters (shown by `send` and by `--json` output)"
        ));
    }
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn recipient_lists_split_on_commas_and_repeat() {
        let units = unit_list(&strings(&[
            "gz/civil-affairs, gz.haizhu/civil-affairs,",
            "gz.yuexiu/liurong-street",
        ]))
        .unwrap();
        let shown: Vec<&str> = units.iter().map(|u| u.as_str()).collect();
        assert_eq!(
            shown,
            [
                "gz/civil-affairs",
                "gz.haizhu/civil-affairs",
                "gz.yuexiu/liurong-street"
            ]
        );
        assert!(unit_list(&[]).unwrap().is_empty());
    }

    #[test]
    fn recipient_lists_refuse_bad_and_repeated_units() {
        assert!(
            unit_list(&strings(&["gz/a,GZ/b"]))
                .unwrap_err()
                .contains("GZ/b")
        );
        assert!(
            unit_list(&strings(&["gz/a", "gz/a"]))
                .unwrap_err()
                .contains("twice")
        );
        assert!(unit_list(&strings(&["gz"])).is_err());
    }

    #[test]
    fn main_and_copy_recipients() {
        let (to, cc) = recipients(&strings(&["gz/a,gz/b"]), &strings(&["gz/c"])).unwrap();
        assert_eq!((to.len(), cc.len()), (2, 1));
        assert!(
            recipients(&[], &strings(&["gz/c"]))
                .unwrap_err()
                .contains("--to")
        );
        assert!(
            recipients(&strings(&["gz/a"]), &strings(&["gz/a"]))
                .unwrap_err()
                .contains("both")
        );
    }

    #[test]
    fn metadata_pairs() {
        let m = metadata(&strings(&["category=notice", "note=a=b", "empty="])).unwrap();
        assert_eq!(m["category"], "notice");
        assert_eq!(m["note"], "a=b");
        assert_eq!(m["empty"], "");
        assert!(metadata(&strings(&["novalue"])).is_err());
        assert!(metadata(&strings(&["=x"])).is_err());
        assert!(
            metadata(&strings(&["a=1", "a=2"]))
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            metadata(&strings(&["title=x"]))
                .unwrap_err()
                .contains("--title")
        );
        assert!(
            metadata(&strings(&["receipt.for=x"]))
                .unwrap_err()
                .contains("reserved")
        );
    }

    #[test]
    fn priorities_in_both_languages() {
        assert_eq!(priority("urgent"), Ok(Priority::Urgent));
        assert_eq!(priority("Express"), Ok(Priority::Express));
        assert_eq!(priority("平件"), Ok(Priority::Routine));
        assert_eq!(priority("特急"), Ok(Priority::Urgent));
        assert!(priority("asap").is_err());
    }

    #[test]
    fn id_patterns() {
        let hex = "0123456789abcdef".repeat(4);
        let id: MessageId = hex.parse().unwrap();
        assert_eq!(hex.parse::<IdPattern>(), Ok(IdPattern::Full(id)));
        let p: IdPattern = "0123456789AB".parse().unwrap();
        assert!(p.matches(&id));
        assert!(!"0123456780".parse::<IdPattern>().unwrap().matches(&id));
        assert!("0123".parse::<IdPattern>().is_err());
        assert!("xyzxyzxyz".parse::<IdPattern>().is_err());
        assert_eq!(full_id(&hex), Ok(id));
        assert!(full_id("0123456789ab").unwrap_err().contains("64"));
    }
}
