//! Parsing of command-line values that clap cannot check alone: recipient lists, metadata pairs,
//! priorities and message ids. Errors are caught here, before anything is signed or sent, and say
//! what to type instead.

use std::collections::BTreeMap;
use std::str::FromStr;

use exchange_wire::document::{
    DEADLINE, DOC_DATE, DOC_NUMBER, DOC_TYPE, HANDLING, ISSUER, RESEND_OF, SIGNER, TITLE,
};
use exchange_wire::{MessageId, Priority, UnitAddress};

/// Metadata key for the payload's file name, which `send` takes from its FILE argument. (Not a
/// GB/T 9704 field, so not in `exchange_wire::document`.)
pub const META_FILE_NAME: &str = "file-name";

/// The GB/T 9704 metadata keys `send` fills from options of the same name (`--title`, `--doc-date`,
/// ...). `--meta` may not set them, so each has one way in, checked by its own parser.
pub const FLAG_KEYS: [&str; 8] = [
    TITLE, DOC_NUMBER, ISSUER, SIGNER, DOC_DATE, DOC_TYPE, HANDLING, DEADLINE,
];

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

/// Parses `--meta key=value` pairs. Keys that `send` sets from its own flags, `resend.of` (which only
/// `resend` sets), and the `receipt.` and `report.` keys that mark receipts and delivery reports, are
/// refused so a document cannot be made to look like something else.
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
            k if FLAG_KEYS.contains(&k) => {
                return Err(format!("set {k} with --{k}, not with --meta"));
            }
            META_FILE_NAME => {
                return Err(format!(
                    "{META_FILE_NAME} is taken from the name of the FILE sent, not set with --meta"
                ));
            }
            RESEND_OF => {
                return Err(format!(
                    "{RESEND_OF} is set by `exchange-admin resend MESSAGE_ID` (补发), not with --meta"
                ));
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

/// 办件 or 阅件: whether the recipients are to act on the document or only to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// 办件: to be handled, usually by a deadline.
    Action,
    /// 阅件: for information.
    Information,
}

impl Handling {
    /// The value of the `handling` metadata, as the node checks it.
    pub fn as_str(self) -> &'static str {
        match self {
            Handling::Action => "action",
            Handling::Information => "information",
        }
    }
}

/// Parses `--handling`: `action` or `information`, or the Chinese terms 办件 and 阅件.
pub fn handling(s: &str) -> Result<Handling, String> {
    match s.trim() {
        "办件" => Ok(Handling::Action),
        "阅件" => Ok(Handling::Information),
        other => match other.to_ascii_lowercase().as_str() {
            "action" => Ok(Handling::Action),
            "information" => Ok(Handling::Information),
            _ => Err(format!(
                "{s:?}: give action (办件, to be handled) or information (阅件, to be read)"
            )),
        },
    }
}

/// A calendar date as `YYYY-MM-DD` (成文日期, 办理时限): a real day of a year from 1900 on, by the
/// same rule the node applies (`exchange_wire::document::is_date`).
pub fn date(s: &str) -> Result<String, String> {
    let d = s.trim();
    if exchange_wire::document::is_date(d) {
        Ok(d.to_owned())
    } else {
        Err(format!("{s:?} is not a date as YYYY-MM-DD, such as 2025-05-20"))
    }
}

/// The reason of a 退回 (`return --reason`): required, so the sender learns what to fix. Trimmed;
/// line breaks and tabs are kept, other control characters (terminal escapes) are refused.
pub fn reason(s: &str) -> Result<String, String> {
    plain_reason(
        s,
        "the reason is empty: a return (退回) must tell the sender why, such as --reason \"发文字号有误，请核对后重发\"",
    )
}

/// The reason of a 撤回 (`recall --reason`): required, as the node requires it, so the recipients'
/// records say why the document was withdrawn. Checked as [`reason`].
pub fn recall_reason(s: &str) -> Result<String, String> {
    plain_reason(
        s,
        "the reason is empty: a recall (撤回) must say why the document is withdrawn, such as --reason \"发文字号有误，重新印发\"",
    )
}

/// Trimmed, non-empty plain text (`empty` is the complaint when it is empty).
fn plain_reason(s: &str, empty: &str) -> Result<String, String> {
    let r = s.trim();
    if r.is_empty() {
        return Err(empty.into());
    }
    if r.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("the reason holds control characters; give plain text".into());
    }
    Ok(r.to_owned())
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

/// The longest unit token accepted on the command line; real ones are far shorter.
const MAX_TOKEN_LEN: usize = 512;

/// A unit token (`--token`, `EXCHANGE_TOKEN`): printable ASCII without spaces, as it goes into an
/// `Authorization: Bearer` header. Checked here so a stray newline from a file or a script fails with
/// a clear message instead of as a transport error. The value is never echoed back.
pub fn token(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(
            "the token is empty: give the token printed by `exchange-admin tokens issue`".into(),
        );
    }
    if t.len() > MAX_TOKEN_LEN || !t.chars().all(|c| c.is_ascii_graphic()) {
        return Err(
            "the token holds spaces, control or non-ASCII characters, or is too long: give the token exactly \
             as `exchange-admin tokens issue` printed it"
                .into(),
        );
    }
    Ok(t.to_owned())
}

/// A token id as `tokens list` shows it (hex; the node uses the first 16 characters of the token's
/// SHA-256). Lower-cased; refused unless hex, so it is safe to put in a URL path.
pub fn token_id(s: &str) -> Result<String, String> {
    let id = s.trim().to_ascii_lowercase();
    if (8..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(format!(
            "{s:?} is not a token id: give the ID column of `exchange-admin tokens list` (hex), not the token itself"
        ))
    }
}

/// A lowercase word such as a node tier (`city`, `district`) or a unit kind (`department`, `bureau`,
/// `street-office`): a-z, 0-9 and '-'.
pub fn word(s: &str) -> Result<String, String> {
    let w = s.trim();
    if !w.is_empty()
        && w.len() <= 64
        && w.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Ok(w.to_owned())
    } else {
        Err(format!(
            "{s:?}: use a lowercase word of a-z, 0-9 and '-', such as district or street-office"
        ))
    }
}

/// A display name (a node's or a unit's, usually Chinese): non-empty, no control characters.
pub fn name(s: &str) -> Result<String, String> {
    let n = s.trim();
    if n.is_empty() {
        return Err("the name is empty".into());
    }
    if n.chars().any(char::is_control) || n.chars().count() > 200 {
        return Err("the name holds control characters or is longer than 200 characters".into());
    }
    Ok(n.to_owned())
}

/// A libp2p multiaddress where a node listens, such as `/ip4/198.51.100.11/tcp/7401`. Only the shape
/// is checked here (the node parses it fully).
pub fn multiaddr(s: &str) -> Result<String, String> {
    let a = s.trim();
    let parts: Vec<&str> = a.split('/').collect();
    if a.starts_with('/')
        && parts.len() >= 3
        && parts[1..].iter().all(|p| !p.is_empty())
        && !a.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        Ok(a.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a multiaddress: give one such as /ip4/198.51.100.11/tcp/7401"
        ))
    }
}

/// The 31 characters of a unified social credit code (统一社会信用代码, GB 32100-2015): digits and
/// capital letters without I, O, S, V and Z.
const USCC_CHARS: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";

/// Weights of the first 17 characters in the check character's sum (3^i mod 31).
const USCC_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// A unified social credit code (统一社会信用代码): 18 characters whose last is a check character
/// over the first 17 (GB 32100-2015). Upper-cased; a mistyped code is refused with the reason.
pub fn uscc(s: &str) -> Result<String, String> {
    let code = s.trim().to_ascii_uppercase();
    let bad = |why: String| {
        Err(format!(
            "{s:?} is not a unified social credit code (统一社会信用代码): {why}"
        ))
    };
    if code.chars().count() != 18 {
        return bad(format!(
            "it has {} characters, not 18",
            code.chars().count()
        ));
    }
    let mut values = Vec::with_capacity(18);
    for c in code.chars() {
        match USCC_CHARS.find(c) {
            Some(v) => values.push(v as u32),
            None => {
                return bad(format!(
                    "{c:?} is not used in these codes (digits and capitals except I, O, S, V, Z)"
                ));
            }
        }
    }
    let sum: u32 = values[..17]
        .iter()
        .zip(USCC_WEIGHTS)
        .map(|(v, w)| v * w)
        .sum();
    let check = (31 - sum % 31) % 31;
    if values[17] != check {
        let expected = USCC_CHARS.as_bytes()[check as usize] as char;
        return bad(format!(
            "its check character is {}, but the first 17 give {expected}; is it mistyped?",
            &code[17..]
        ));
    }
    Ok(code)
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
        for key in FLAG_KEYS {
            let e = metadata(&strings(&[&format!("{key}=x")])).unwrap_err();
            assert!(e.contains(&format!("--{key}")), "{e}");
        }
        assert!(
            metadata(&strings(&["file-name=x.pdf"]))
                .unwrap_err()
                .contains("FILE")
        );
        assert_eq!(
            metadata(&strings(&["classification=none"])).unwrap()["classification"],
            "none",
            "the node's check decides about classification"
        );
        assert!(
            metadata(&strings(&["receipt.for=x"]))
                .unwrap_err()
                .contains("reserved")
        );
        let e = metadata(&strings(&[&format!("resend.of={}", "ab".repeat(32))])).unwrap_err();
        assert!(e.contains("exchange-admin resend"), "{e}");
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
    fn handling_in_both_languages() {
        assert_eq!(handling("action"), Ok(Handling::Action));
        assert_eq!(handling(" Information "), Ok(Handling::Information));
        assert_eq!(handling("办件"), Ok(Handling::Action));
        assert_eq!(handling("阅件"), Ok(Handling::Information));
        assert_eq!(Handling::Action.as_str(), "action");
        assert_eq!(Handling::Information.as_str(), "information");
        assert!(handling("read").unwrap_err().contains("阅件"));
    }

    #[test]
    fn dates_are_real_days() {
        assert_eq!(date(" 2025-05-20 ").unwrap(), "2025-05-20");
        assert_eq!(date("2024-02-29").unwrap(), "2024-02-29");
        assert_eq!(date("2000-02-29").unwrap(), "2000-02-29");
        for bad in [
            "2025/05/20",
            "2025-5-20",
            "20250520",
            "2025-13-01",
            "2025-00-10",
            "2025-04-31",
            "2025-02-29",
            "1900-02-29",
            "1899-12-31",
            "2025-05-00",
            "+025-05-20",
            "２０２５-05-20",
            "",
        ] {
            assert!(date(bad).unwrap_err().contains("YYYY-MM-DD"), "{bad:?}");
        }
    }

    #[test]
    fn reasons_are_required_plain_text() {
        assert_eq!(
            reason("  发文字号有误\n请核对后重发 ").unwrap(),
            "发文字号有误\n请核对后重发"
        );
        assert!(reason("").unwrap_err().contains("empty"));
        assert!(reason(" \n\t ").unwrap_err().contains("empty"));
        assert!(reason("a\x1b[2Jb").is_err());
        assert!(reason("").unwrap_err().contains("退回"));
        assert_eq!(recall_reason(" 发文字号有误 ").unwrap(), "发文字号有误");
        let e = recall_reason(" \n ").unwrap_err();
        assert!(e.contains("empty") && e.contains("撤回"), "{e}");
        assert!(recall_reason("a\x1b[2Jb").is_err());
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

    #[test]
    fn tokens_are_header_safe() {
        assert_eq!(token("  abc.DEF_123-x\n").unwrap(), "abc.DEF_123-x");
        assert!(token("").is_err());
        assert!(token("   ").is_err());
        assert!(token("ab cd").is_err());
        assert!(token("ab\ncd").is_err());
        assert!(token("令牌").is_err());
        assert!(token(&"a".repeat(513)).is_err());
        let e = token("ab cd").unwrap_err();
        assert!(!e.contains("ab cd"), "the token is not echoed: {e}");
    }

    #[test]
    fn token_ids_are_hex() {
        assert_eq!(token_id("0123456789ABCDEF").unwrap(), "0123456789abcdef");
        assert!(token_id("0123").is_err());
        assert!(token_id("../../admin").is_err());
        assert!(token_id("0123456789abcdeg").is_err());
    }

    #[test]
    fn words_names_and_multiaddrs() {
        assert_eq!(word("street-office").unwrap(), "street-office");
        assert!(word("District").is_err());
        assert!(word("").is_err());
        assert!(word("a b").is_err());
        assert_eq!(name(" 越秀区交换平台 ").unwrap(), "越秀区交换平台");
        assert!(name(" ").is_err());
        assert!(name("a\x1b[2J").is_err());
        assert_eq!(
            multiaddr("/ip4/198.51.100.11/tcp/7401").unwrap(),
            "/ip4/198.51.100.11/tcp/7401"
        );
        assert!(multiaddr("198.51.100.11:7401").is_err());
        assert!(multiaddr("/ip4//tcp/1").is_err());
        assert!(multiaddr("/ip4").is_err());
        assert!(multiaddr("/ip4/1.2.3.4/tcp/1 /x").is_err());
    }

    #[test]
    fn unified_social_credit_codes() {
        // Published codes of well-known companies.
        for code in [
            "91350100M000100Y43",
            "9144030071526726XG",
            "914403001922038216",
        ] {
            assert_eq!(uscc(code).unwrap(), code);
        }
        assert_eq!(uscc("9144030071526726xg").unwrap(), "9144030071526726XG");
        let e = uscc("91350100M000100Y44").unwrap_err();
        assert!(e.contains("give 3"), "{e}");
        assert!(
            uscc("91350100M000100Y4")
                .unwrap_err()
                .contains("17 characters")
        );
        assert!(uscc("91350100M000I00Y43").unwrap_err().contains("'I'"));
    }
}
