//! The signed directory: its segments and their verification, the node tree, and the units with
//! their keys and status.
//!
//! All of it goes through the node's admin API (`--admin`). The node does the signing: the root node
//! signs the node tree (`nodes add`/`remove` elsewhere are refused by the node), and each node signs
//! the segment of its own units. Formatting is kept in pure functions so it can be unit-tested.

use anyhow::{Context, Result, bail};
use exchange_wire::api::{DirectoryVerification, DirectoryView, NewUnit, RotateKey, SegmentInfo};
use exchange_wire::directory::{KeyRecord, NodeRecord, UnitRecord, UnitStatus};
use exchange_wire::{NodeId, PublicKey, UnitAddress, keys};

use crate::endpoint::Ctx;
use crate::ops::confirmed;
use crate::output::{
    Table, action_line, emit, emit_json, fields, format_duration_ms, format_ms, sanitize, truncate,
};
use crate::{
    KeySourceArgs, NodeAddArgs, NodeRemoveArgs, Outcome, RotateKeyArgs, UnitAddArgs,
    UnitRevokeArgs, UnitsListArgs,
};

/// Column width for names and free text in tables; the full text is in `--json` output.
const NAME_COLUMNS: usize = 40;

/// Column width for node addresses in tables.
const ADDRESS_COLUMNS: usize = 50;

/// Hex characters of a public key shown in tables (`units show` and `--json` show all 64).
const SHORT_KEY: usize = 16;

fn or_dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}

fn short_key(k: &PublicKey) -> String {
    let hex = k.to_hex();
    format!("{}…", &hex[..SHORT_KEY])
}

// ---- directory show / verify ----

fn segments_table(segments: &[SegmentInfo]) -> Table {
    let mut t = Table::new(&[
        "OWNER",
        "KIND",
        "VERSION",
        "SIGNER",
        "SIGNED (UTC)",
        "ENTRIES",
    ]);
    for s in segments {
        t.push(vec![
            s.owner.clone(),
            s.kind.clone(),
            s.version.to_string(),
            s.signer.to_string(),
            format_ms(s.signed_at_ms),
            s.entries.to_string(),
        ]);
    }
    t
}

fn directory_text(d: &DirectoryView) -> String {
    let mut text = fields(&[
        ("directory", format!("version {}", d.version)),
        ("root key", d.root_key.clone()),
        ("segments", d.segments.len().to_string()),
    ]);
    if !d.segments.is_empty() {
        text.push('\n');
        text.push_str(&segments_table(&d.segments).render());
    }
    text
}

/// `directory show`.
pub fn show(ctx: &Ctx) -> Result<()> {
    let d = ctx.admin()?.call(|c| c.directory())?;
    if ctx.json {
        return emit_json(&d);
    }
    emit(&directory_text(&d))
}

/// The verdict on a directory verification and its text. A node that says all is well while a check
/// failed is taken as broken, as for the audit chain.
fn verification_text(v: &DirectoryVerification) -> (Outcome, String) {
    let failed = v.checks.iter().filter(|c| !c.ok).count();
    let mut text = String::new();
    if !v.checks.is_empty() {
        let mut t = Table::new(&["SEGMENT", "VERSION", "STATE", "DETAIL"]);
        for c in &v.checks {
            t.push(vec![
                c.owner.clone(),
                c.version.to_string(),
                if c.ok { "ok" } else { "FAIL" }.into(),
                truncate(&sanitize(&c.detail), 60),
            ]);
        }
        text = t.render() + "\n";
    }
    if v.ok && failed == 0 {
        text.push_str(&format!(
            "OK: {} segment(s) verified against the root key\n",
            v.checks.len()
        ));
        (Outcome::Done, text)
    } else if failed == 0 {
        text.push_str("directory broken (the node did not say which segment)\n");
        (Outcome::DirectoryBroken, text)
    } else {
        text.push_str(&format!(
            "directory broken: {failed} of {} segment(s) fail verification\n",
            v.checks.len()
        ));
        (Outcome::DirectoryBroken, text)
    }
}

/// `directory verify`: exit 0 when every segment verifies, 4 when one does not.
pub fn verify(ctx: &Ctx) -> Result<Outcome> {
    let v = ctx.admin()?.call(|c| c.directory_verify())?;
    let (outcome, text) = verification_text(&v);
    if ctx.json {
        emit_json(&v)?;
    } else {
        emit(&text)?;
    }
    Ok(outcome)
}

// ---- nodes ----

fn nodes_table(nodes: &[NodeRecord]) -> Table {
    let mut t = Table::new(&["ID", "NAME", "TIER", "PARENT", "PUBLIC KEY", "ADDRESSES"]);
    for n in nodes {
        t.push(vec![
            n.id.to_string(),
            truncate(&sanitize(&n.name), NAME_COLUMNS),
            n.tier.clone(),
            or_dash(n.parent.as_ref().map(NodeId::to_string)),
            short_key(&n.public_key),
            truncate(&n.addresses.join(","), ADDRESS_COLUMNS),
        ]);
    }
    t
}

/// `nodes list`.
pub fn nodes_list(ctx: &Ctx) -> Result<()> {
    let answer = ctx.admin()?.call(|c| c.nodes())?;
    if ctx.json {
        return emit_json(&answer);
    }
    if answer.nodes.is_empty() {
        eprintln!("the node holds no node tree yet");
        return Ok(());
    }
    emit(&nodes_table(&answer.nodes).render())
}

fn node_record(a: &NodeAddArgs) -> Result<NodeRecord> {
    if a.parent == a.id {
        bail!("node {} cannot be its own parent", a.id);
    }
    Ok(NodeRecord {
        id: a.id.clone(),
        name: a.name.clone(),
        tier: a.tier.clone(),
        parent: Some(a.parent.clone()),
        public_key: a.public_key,
        addresses: a.addresses.clone(),
        previous_keys: vec![],
    })
}

/// `nodes add`: the root node signs the new tree; other nodes refuse.
pub fn nodes_add(ctx: &Ctx, a: &NodeAddArgs) -> Result<()> {
    let record = node_record(a)?;
    if record.addresses.is_empty() {
        eprintln!(
            "warning: no --address given: other nodes will not know where {} listens",
            record.id
        );
    }
    let answer = ctx.admin()?.call(|c| c.add_node(&record))?;
    if ctx.json {
        return emit_json(&answer);
    }
    emit(&action_line(&answer))?;
    eprintln!(
        "the signed tree now spreads to every node; start {} with a key whose public half is {}",
        record.id, record.public_key
    );
    Ok(())
}

/// `nodes remove ID --yes`.
pub fn nodes_remove(ctx: &Ctx, a: &NodeRemoveArgs) -> Result<()> {
    confirmed(
        a.yes,
        &format!(
            "removing node {} is signed by the root and spreads to every node: its links are refused and \
             messages for its units can no longer be routed; repeat with --yes to confirm",
            a.id
        ),
    )?;
    let answer = ctx.admin()?.call(|c| c.remove_node(&a.id))?;
    if ctx.json {
        return emit_json(&answer);
    }
    emit(&action_line(&answer))
}

// ---- units ----

/// Whether a key verifies signatures made at `now_ms`, and if not, why.
fn key_state(k: &KeyRecord, now_ms: u64) -> &'static str {
    if k.revoked_at_ms.is_some_and(|r| now_ms >= r) {
        "revoked"
    } else if now_ms < k.not_before_ms {
        "not yet valid"
    } else if k.not_after_ms.is_some_and(|end| now_ms >= end) {
        "expired"
    } else {
        "valid"
    }
}

fn status_name(s: UnitStatus) -> &'static str {
    match s {
        UnitStatus::Active => "active",
        UnitStatus::Suspended => "suspended",
        UnitStatus::Revoked => "revoked",
    }
}

fn units_table(units: &[UnitRecord], now_ms: u64) -> Table {
    let mut t = Table::new(&["ADDRESS", "NAME", "KIND", "USCC", "STATUS", "KEYS"]);
    for u in units {
        let valid = u.keys.iter().filter(|k| k.valid_at(now_ms)).count();
        t.push(vec![
            u.address.to_string(),
            truncate(&sanitize(&u.name), NAME_COLUMNS),
            u.kind.clone(),
            or_dash(u.uscc.clone()),
            status_name(u.status).into(),
            format!("{valid} valid of {}", u.keys.len()),
        ]);
    }
    t
}

fn unit_text(u: &UnitRecord, now_ms: u64) -> String {
    let mut text = fields(&[
        ("address", u.address.to_string()),
        ("name", u.name.clone()),
        ("kind", u.kind.clone()),
        ("uscc", or_dash(u.uscc.clone())),
        ("status", status_name(u.status).into()),
    ]);
    text.push('\n');
    if u.keys.is_empty() {
        text.push_str("no keys\n");
        return text;
    }
    let mut t = Table::new(&[
        "PUBLIC KEY",
        "VALID FROM (UTC)",
        "VALID UNTIL (UTC)",
        "REVOKED (UTC)",
        "STATE",
    ]);
    for k in &u.keys {
        t.push(vec![
            k.public_key.to_hex(),
            format_ms(k.not_before_ms),
            k.not_after_ms.map(format_ms).unwrap_or_else(|| "-".into()),
            k.revoked_at_ms.map(format_ms).unwrap_or_else(|| "-".into()),
            key_state(k, now_ms).into(),
        ]);
    }
    text.push_str(&t.render());
    text
}

/// `units list [--node ID]`.
pub fn units_list(ctx: &Ctx, a: &UnitsListArgs) -> Result<()> {
    let answer = ctx.admin()?.call(|c| c.units(a.node_id.as_ref()))?;
    if ctx.json {
        return emit_json(&answer);
    }
    if answer.units.is_empty() {
        match &a.node_id {
            Some(n) => eprintln!("no units of node {n} in the directory"),
            None => eprintln!("no units in the directory"),
        }
        return Ok(());
    }
    emit(&units_table(&answer.units, exchange_wire::now_ms()).render())
}

/// `units show ADDRESS`.
pub fn units_show(ctx: &Ctx, unit: &UnitAddress) -> Result<()> {
    let u = ctx.admin()?.call(|c| c.unit(unit))?;
    if ctx.json {
        return emit_json(&u);
    }
    emit(&unit_text(&u, exchange_wire::now_ms()))
}

/// The public key given by `--public-key`, or read from `--key-file` (only its public half is used).
fn public_key(a: &KeySourceArgs) -> Result<PublicKey> {
    match (&a.public_key, &a.key_file) {
        (Some(k), _) => Ok(*k),
        (None, Some(path)) => {
            let key = keys::read(path)
                .with_context(|| format!("cannot take the public key from {}", path.display()))?;
            Ok(PublicKey(key.verifying_key()))
        }
        (None, None) => {
            bail!("give the unit's public key with --public-key HEX or --key-file FILE")
        }
    }
}

/// A unit is added on its home node, which signs its units: the node part of its address must be
/// the node asked.
fn check_home(unit: &UnitAddress, node: &NodeId, admin_url: &str) -> Result<()> {
    if unit.is_node() {
        bail!(
            "{unit} is the address under which node {} signs itself, not an agency unit",
            unit.node_part()
        );
    }
    if unit.node_part() != node.as_str() {
        bail!(
            "{unit} belongs to node {}, but {admin_url} is the admin API of node {node}: each node signs its own \
             units; run this against {}'s admin API (--admin or EXCHANGE_ADMIN)",
            unit.node_part(),
            unit.node_part()
        );
    }
    Ok(())
}

/// `units add`: the unit joins the segment of the node asked, which signs it.
pub fn units_add(ctx: &Ctx, a: &UnitAddArgs) -> Result<()> {
    let public_key = public_key(&a.key)?;
    let admin = ctx.admin()?;
    let me = admin.call(|c| c.node_status())?;
    check_home(&a.address, &me.node, admin.base_url())?;
    let unit = NewUnit {
        address: a.address.clone(),
        name: a.name.clone(),
        kind: a.kind.clone(),
        uscc: a.uscc.clone(),
        public_key,
    };
    let answer = admin.call(|c| c.add_unit(&unit))?;
    if ctx.json {
        return emit_json(&answer);
    }
    emit(&action_line(&answer))?;
    eprintln!(
        "next, issue the unit's API token for its agency system: exchange-admin tokens issue --unit {}",
        a.address
    );
    Ok(())
}

/// `units suspend ADDRESS`.
pub fn units_suspend(ctx: &Ctx, unit: &UnitAddress) -> Result<()> {
    let answer = ctx.admin()?.call(|c| c.suspend_unit(unit))?;
    if ctx.json {
        return emit_json(&answer);
    }
    emit(&action_line(&answer))?;
    eprintln!("lift the suspension with: exchange-admin units activate {unit}");
    Ok(())
}

/// `units activate ADDRESS`.
pub fn units_activate(ctx: &Ctx, unit: &UnitAddress) -> Result<()> {
    let answer = ctx.admin()?.call(|c| c.activate_unit(unit))?;
    if ctx.json {
        return emit_json(&answer);
    }
    emit(&action_line(&answer))
}

/// `units revoke ADDRESS --yes`. Irreversible, so refused without `--yes`.
pub fn units_revoke(ctx: &Ctx, a: &UnitRevokeArgs) -> Result<()> {
    confirmed(
        a.yes,
        &format!(
            "revoking {} is irreversible: the unit can never send or receive again and nothing signed with its \
             keys from now on verifies. To bar it for a while, use `exchange-admin units suspend {}`; repeat \
             with --yes to confirm",
            a.address, a.address
        ),
    )?;
    let answer = ctx.admin()?.call(|c| c.revoke_unit(&a.address))?;
    if ctx.json {
        return emit_json(&answer);
    }
    emit(&action_line(&answer))
}

/// The body of `units rotate-key`.
fn rotation(a: &RotateKeyArgs, public_key: PublicKey) -> RotateKey {
    RotateKey {
        public_key,
        overlap_secs: a.overlap_secs.unwrap_or(0),
        revoke_old: a.revoke_old,
    }
}

/// What happens to the old key, for the note after a rotation.
fn old_key_note(r: &RotateKey) -> String {
    if r.revoke_old {
        "the old key is revoked: nothing signed with it from now on verifies".into()
    } else if r.overlap_secs == 0 {
        "the old key ended now: sign with the new key from now on".into()
    } else {
        format!(
            "the old key stays valid for {} beside the new one: switch the agency system to the new key before then",
            format_duration_ms(r.overlap_secs.saturating_mul(1000))
        )
    }
}

/// `units rotate-key ADDRESS (--public-key HEX | --key-file FILE) [--overlap-secs N] [--revoke-old]`.
pub fn units_rotate_key(ctx: &Ctx, a: &RotateKeyArgs) -> Result<()> {
    let r = rotation(a, public_key(&a.key)?);
    let answer = ctx.admin()?.call(|c| c.rotate_unit_key(&a.address, &r))?;
    if ctx.json {
        return emit_json(&answer);
    }
    emit(&action_line(&answer))?;
    eprintln!("{}", old_key_note(&r));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use exchange_wire::api::SegmentCheck;
    use std::path::PathBuf;

    /// Key number `n` of a fixed set of fresh keys, the same on every call within a test run.
    fn key(n: u8) -> PublicKey {
        static KEYS: std::sync::OnceLock<Vec<PublicKey>> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| {
            (0..8)
                .map(|_| PublicKey(keys::generate().verifying_key()))
                .collect()
        })[n as usize]
    }

    fn segment(owner: &str, kind: &str, version: u64) -> SegmentInfo {
        SegmentInfo {
            owner: owner.into(),
            kind: kind.into(),
            version,
            signer: "gz".parse().unwrap(),
            signed_at_ms: 1_700_000_000_123,
            entries: 13,
        }
    }

    #[test]
    fn directory_view_lists_segments() {
        let d = DirectoryView {
            version: 8,
            root_key: "ab".repeat(32),
            segments: vec![segment("tree", "node-tree", 3), segment("gz", "units", 5)],
        };
        let text = directory_text(&d);
        assert!(text.starts_with("directory  version 8\n"), "{text}");
        assert!(text.contains(&format!("root key   {}\n", "ab".repeat(32))));
        assert!(
            text.contains("OWNER  KIND       VERSION  SIGNER  SIGNED (UTC)             ENTRIES\n"),
            "{text}"
        );
        assert!(
            text.contains("tree   node-tree  3        gz      2023-11-14 22:13:20.123  13\n"),
            "{text}"
        );
    }

    fn check(owner: &str, ok: bool) -> SegmentCheck {
        SegmentCheck {
            owner: owner.into(),
            version: 2,
            ok,
            detail: if ok {
                "signed by gz".into()
            } else {
                "bad signature".into()
            },
        }
    }

    #[test]
    fn directory_verdicts() {
        let good = DirectoryVerification {
            ok: true,
            checks: vec![check("tree", true), check("gz", true)],
        };
        let (outcome, text) = verification_text(&good);
        assert_eq!(outcome, Outcome::Done);
        assert!(
            text.ends_with("OK: 2 segment(s) verified against the root key\n"),
            "{text}"
        );

        let bad = DirectoryVerification {
            ok: false,
            checks: vec![check("tree", true), check("gz.yuexiu", false)],
        };
        let (outcome, text) = verification_text(&bad);
        assert_eq!(outcome, Outcome::DirectoryBroken);
        assert!(
            text.contains("gz.yuexiu  2        FAIL   bad signature"),
            "{text}"
        );
        assert!(text.ends_with("directory broken: 1 of 2 segment(s) fail verification\n"));

        // A node that contradicts itself is not believed on the good side.
        let odd = DirectoryVerification {
            ok: true,
            checks: vec![check("gz", false)],
        };
        assert_eq!(verification_text(&odd).0, Outcome::DirectoryBroken);
        let odd = DirectoryVerification {
            ok: false,
            checks: vec![],
        };
        assert_eq!(verification_text(&odd).0, Outcome::DirectoryBroken);
    }

    fn record(unit: &str, status: UnitStatus, keys: Vec<KeyRecord>) -> UnitRecord {
        UnitRecord {
            address: unit.parse().unwrap(),
            name: "越秀区六榕街道办事处".into(),
            kind: "street-office".into(),
            uscc: None,
            status,
            keys,
        }
    }

    fn key_record(n: u8, from: u64, until: Option<u64>, revoked: Option<u64>) -> KeyRecord {
        KeyRecord {
            public_key: key(n),
            not_before_ms: from,
            not_after_ms: until,
            revoked_at_ms: revoked,
        }
    }

    #[test]
    fn key_states_follow_the_window() {
        let k = key_record(1, 1_000, Some(5_000), None);
        assert_eq!(key_state(&k, 500), "not yet valid");
        assert_eq!(key_state(&k, 1_000), "valid");
        assert_eq!(key_state(&k, 5_000), "expired");
        let k = key_record(1, 1_000, None, Some(3_000));
        assert_eq!(key_state(&k, 2_999), "valid");
        assert_eq!(key_state(&k, 3_000), "revoked");
        // The states agree with the wire's own rule.
        for now in [0, 999, 1_000, 2_999, 3_000, 9_999] {
            assert_eq!(key_state(&k, now) == "valid", k.valid_at(now), "at {now}");
        }
    }

    #[test]
    fn units_table_counts_valid_keys() {
        let u = record(
            "gz.yuexiu/liurong-street",
            UnitStatus::Suspended,
            vec![
                key_record(1, 0, Some(2_000), None),
                key_record(2, 1_500, None, None),
            ],
        );
        let text = units_table(&[u], 3_000).render();
        let row = text.lines().nth(1).unwrap();
        assert!(
            row.starts_with(
                "gz.yuexiu/liurong-street  越秀区六榕街道办事处  street-office  -     suspended"
            ),
            "{row}"
        );
        assert!(row.ends_with("1 valid of 2"), "{row}");
    }

    #[test]
    fn unit_text_shows_every_key_window() {
        let mut u = record(
            "gz.yuexiu/liurong-street",
            UnitStatus::Active,
            vec![
                key_record(
                    1,
                    1_700_000_000_000,
                    Some(1_700_000_100_000),
                    Some(1_700_000_050_000),
                ),
                key_record(2, 1_700_000_050_000, None, None),
            ],
        );
        u.uscc = Some("11440104MB2C94123X".into());
        let text = unit_text(&u, 1_700_000_060_000);
        assert!(
            text.starts_with("address  gz.yuexiu/liurong-street\n"),
            "{text}"
        );
        assert!(text.contains("uscc     11440104MB2C94123X\n"));
        assert!(text.contains("status   active\n"));
        let lines: Vec<&str> = text.lines().collect();
        let first = lines
            .iter()
            .find(|l| l.starts_with(&key(1).to_hex()))
            .unwrap();
        assert!(
            first.contains("2023-11-14 22:13:20.000  2023-11-14 22:15:00.000"),
            "{first}"
        );
        assert!(first.ends_with("revoked"), "{first}");
        let second = lines
            .iter()
            .find(|l| l.starts_with(&key(2).to_hex()))
            .unwrap();
        assert!(
            second.ends_with("-                        -                        valid"),
            "{second}"
        );
        assert!(
            unit_text(&record("gz/x", UnitStatus::Revoked, vec![]), 0).ends_with("\nno keys\n")
        );
    }

    #[test]
    fn nodes_table_shortens_keys() {
        let n = NodeRecord {
            id: "gz.yuexiu".parse().unwrap(),
            name: "越秀区交换平台".into(),
            tier: "district".into(),
            parent: Some("gz".parse().unwrap()),
            public_key: key(3),
            addresses: vec!["/ip4/198.51.100.11/tcp/7401".into()],
            previous_keys: vec![],
        };
        let root = NodeRecord {
            id: "gz".parse().unwrap(),
            parent: None,
            tier: "city".into(),
            ..n.clone()
        };
        let text = nodes_table(&[root, n]).render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("gz         越秀区交换平台  city      -"),
            "{text}"
        );
        assert!(
            lines[2].contains(&format!("{}…", &key(3).to_hex()[..16])),
            "{text}"
        );
        assert!(!text.contains(&key(3).to_hex()));
        assert!(lines[2].ends_with("/ip4/198.51.100.11/tcp/7401"));
    }

    fn node_args() -> NodeAddArgs {
        NodeAddArgs {
            id: "gz.baiyun".parse().unwrap(),
            parent: "gz".parse().unwrap(),
            tier: "district".into(),
            name: "白云区交换平台".into(),
            public_key: key(4),
            addresses: vec!["/ip4/198.51.100.13/tcp/7403".into()],
        }
    }

    #[test]
    fn node_records_from_flags() {
        let r = node_record(&node_args()).unwrap();
        assert_eq!(r.parent.as_ref().map(NodeId::as_str), Some("gz"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["public_key"], key(4).to_hex());
        assert_eq!(json["addresses"][0], "/ip4/198.51.100.13/tcp/7403");
        let mut a = node_args();
        a.parent = a.id.clone();
        assert!(
            node_record(&a)
                .unwrap_err()
                .to_string()
                .contains("own parent")
        );
    }

    #[test]
    fn units_are_added_on_their_home_node() {
        let home: NodeId = "gz.yuexiu".parse().unwrap();
        let unit: UnitAddress = "gz.yuexiu/liurong-street".parse().unwrap();
        assert!(check_home(&unit, &home, "http://h:9080").is_ok());
        let other: UnitAddress = "gz.haizhu/civil-affairs".parse().unwrap();
        let e = check_home(&other, &home, "http://h:9080")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("belongs to node gz.haizhu") && e.contains("node gz.yuexiu"),
            "{e}"
        );
        // gz.yuexiu.x is another node, not a prefix match of gz.yuexiu.
        let nested: UnitAddress = "gz.yuexiu.x/a".parse().unwrap();
        assert!(check_home(&nested, &home, "u").is_err());
        let node_itself = UnitAddress::of_node(&home);
        assert!(
            check_home(&node_itself, &home, "u")
                .unwrap_err()
                .to_string()
                .contains("signs itself")
        );
    }

    #[test]
    fn public_keys_from_hex_or_key_file() {
        let hex = KeySourceArgs {
            public_key: Some(key(5)),
            key_file: None,
        };
        assert_eq!(public_key(&hex).unwrap(), key(5));

        let dir = std::env::temp_dir().join(format!("exchange-admin-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("unit.key");
        let _ = std::fs::remove_file(&path);
        let secret = keys::generate();
        keys::write_new(&path, &secret, "test").unwrap();
        let from_file = KeySourceArgs {
            public_key: None,
            key_file: Some(path.clone()),
        };
        assert_eq!(
            public_key(&from_file).unwrap(),
            PublicKey(secret.verifying_key())
        );
        let missing = KeySourceArgs {
            public_key: None,
            key_file: Some(PathBuf::from("/nonexistent/unit.key")),
        };
        assert!(
            public_key(&missing)
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/unit.key")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotations_and_their_notes() {
        let args = |overlap_secs, revoke_old| RotateKeyArgs {
            address: "gz/civil-affairs".parse().unwrap(),
            key: KeySourceArgs {
                public_key: Some(key(6)),
                key_file: None,
            },
            overlap_secs,
            revoke_old,
        };
        let r = rotation(&args(None, false), key(6));
        assert_eq!((r.overlap_secs, r.revoke_old), (0, false));
        assert!(old_key_note(&r).contains("ended now"));
        let r = rotation(&args(Some(86_400), false), key(6));
        assert_eq!(r.overlap_secs, 86_400);
        assert!(
            old_key_note(&r).contains("valid for 1d00h"),
            "{}",
            old_key_note(&r)
        );
        let r = rotation(&args(None, true), key(6));
        assert!(r.revoke_old);
        assert!(old_key_note(&r).contains("revoked"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["public_key"], key(6).to_hex());
    }
}
