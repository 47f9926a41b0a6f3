//! The access part's handle, [`Access`]: the unit tokens this node issued, as the engine holds them
//! in memory (by hash), whether the agency API requires a token, and the access policy; who a
//! caller is ([`Access::authenticate`]) and whether a message may go from one unit to another
//! ([`check_policy`]). Loaded from storage at start and kept in step by `access`, which commits the
//! changes (kept apart so that the engine can hold this without importing `access`).

use std::collections::HashMap;
use std::sync::RwLock;

use exchange_wire::directory::UnitStatus;
use exchange_wire::{Kind, NodeId, UnitAddress};
use sha2::{Digest, Sha256};

use super::refusal::Refusal;
use crate::config::PolicyConfig;
use crate::directory::Directory;
use crate::storage::model::TokenRow;

/// The caller of an agency request: the unit its token belongs to, or anyone when authentication is
/// turned off (`api.require_auth = false`).
#[derive(Debug, Clone)]
pub enum Caller {
    Unit(UnitAddress),
    Anyone,
}

impl Caller {
    /// Refuses unless the caller may act for `unit`.
    pub fn may_act_for(&self, unit: &UnitAddress) -> Result<(), Refusal> {
        match self {
            Caller::Anyone => Ok(()),
            Caller::Unit(u) if u == unit => Ok(()),
            Caller::Unit(u) => Err(Refusal::new(
                "forbidden",
                403,
                format!("the token belongs to {u}; it cannot act for {unit} (set --token or EXCHANGE_TOKEN to a token of {unit})"),
            )),
        }
    }
}

pub(super) fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A token known to this node.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub id: String,
    pub unit: UnitAddress,
    pub revoked: bool,
}

/// The access part: the unit tokens this node issued (by hash), whether the agency API requires
/// one, and the access policy. The engine asks it who a token speaks for and whether a message may
/// go from one unit to another; changes to tokens are committed first (by `access`, with their
/// audit entries) and then applied here.
pub struct Access {
    tokens: RwLock<HashMap<[u8; 32], TokenEntry>>,
    require_auth: bool,
    policy: PolicyConfig,
}

impl Access {
    pub fn new(require_auth: bool, policy: PolicyConfig) -> Access {
        Access { tokens: RwLock::new(HashMap::new()), require_auth, policy }
    }

    /// Holds the tokens read from storage (at start).
    pub(super) fn load(&self, rows: Vec<TokenRow>) {
        let mut map = self.tokens.write().expect("tokens lock");
        for t in rows {
            if let Ok(unit) = t.unit.parse() {
                map.insert(t.hash, TokenEntry { id: t.id, unit, revoked: t.revoked_at_ms.is_some() });
            }
        }
    }

    /// Whether agency requests must carry a unit token (`api.require_auth`).
    pub fn requires_auth(&self) -> bool {
        self.require_auth
    }

    /// Who is calling, from the `Authorization` header.
    pub fn authenticate(&self, dir: &Directory, here: &NodeId, authorization: Option<&str>) -> Result<Caller, Refusal> {
        if !self.require_auth {
            return Ok(Caller::Anyone);
        }
        let hint = "send Authorization: Bearer <token>, with a token issued for your unit by this node's operator (exchange-admin tokens issue); in the CLI, --token or EXCHANGE_TOKEN";
        let token = authorization
            .and_then(|h| h.trim().split_once(char::is_whitespace))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Refusal::new("unauthenticated", 401, format!("this node requires a unit token: {hint}")))?;
        let (unit, revoked_token) = match self.lookup(&token_hash(token)) {
            Some(found) => found,
            None => return Err(Refusal::new("unauthenticated", 401, format!("the token is not one this node issued: {hint}"))),
        };
        // A revoked unit's tokens die with it, whatever their own state: the directory is read on
        // every request, so the refusal holds from the moment the revocation is in force here.
        if dir.unit(&unit).is_some_and(|u| u.status == UnitStatus::Revoked) {
            return Err(Refusal::new(
                "unit-revoked",
                401,
                format!("unit {unit} was revoked by the operator of node {}; its tokens no longer work (a dissolved or compromised unit is registered anew, with new keys and tokens)", here),
            ));
        }
        if let Some(id) = revoked_token {
            return Err(Refusal::new("unauthenticated", 401, format!("token {id} was revoked; ask the operator for a new one")));
        }
        Ok(Caller::Unit(unit))
    }

    /// Refuses a request that would change something (send, sign for, upload, register a webhook…)
    /// while the caller's unit is suspended. A suspended unit may still read (see docs/security.md).
    pub fn may_change(&self, dir: &Directory, here: &NodeId, caller: &Caller) -> Result<(), Refusal> {
        let Caller::Unit(unit) = caller else { return Ok(()) };
        match dir.unit(unit) {
            Some(u) if u.status == UnitStatus::Suspended => Err(Refusal::new(
                "unit-suspended",
                403,
                format!("unit {unit} is suspended by the operator of node {}: it may read its inbox and the status of its messages, but send, sign for, upload or change nothing until it is activated again", here),
            )),
            _ => Ok(()),
        }
    }

    /// The unit the token with this hash was issued for, and the token's id if it was revoked;
    /// `None` when this node did not issue it.
    pub(super) fn lookup(&self, hash: &[u8; 32]) -> Option<(UnitAddress, Option<String>)> {
        self.tokens.read().expect("tokens lock").get(hash).map(|t| (t.unit.clone(), t.revoked.then(|| t.id.clone())))
    }

    pub(super) fn insert(&self, hash: [u8; 32], entry: TokenEntry) {
        self.tokens.write().expect("tokens lock").insert(hash, entry);
    }

    /// Marks revoked every token `which` selects (after the revocation was committed).
    pub(super) fn mark_revoked(&self, which: impl Fn(&TokenEntry) -> bool) {
        for t in self.tokens.write().expect("tokens lock").values_mut().filter(|t| which(t)) {
            t.revoked = true;
        }
    }

    /// Refuses a message the access policy does not allow (see [`check_policy`]).
    pub fn check(&self, dir: &Directory, sender: &UnitAddress, recipient: &UnitAddress, kind: Kind) -> Result<(), Refusal> {
        check_policy(&self.policy, dir, sender, recipient, kind)
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else { return false };
            (0..=tail.len()).filter(|&i| tail.is_char_boundary(i)).any(|i| glob(rest, &tail[i..]))
        }
    }
}

/// Applies the access policy to one sender, recipient and kind.
pub fn check_policy(policy: &PolicyConfig, dir: &Directory, sender: &UnitAddress, recipient: &UnitAddress, kind: Kind) -> Result<(), Refusal> {
    let kind_of = |u: &UnitAddress| dir.unit(u).map(|e| e.kind.as_str()).unwrap_or("");
    let matches = |p: &Option<String>, u: &UnitAddress| p.as_deref().is_none_or(|p| glob(p, u.as_str()));
    let kind_matches = |k: &Option<String>, u: &UnitAddress| k.as_deref().is_none_or(|k| k == kind_of(u));
    let rule = policy.rules.iter().find(|r| {
        matches(&r.from, sender)
            && kind_matches(&r.from_kind, sender)
            && matches(&r.to, recipient)
            && kind_matches(&r.to_kind, recipient)
            && (r.kinds.is_empty() || r.kinds.iter().any(|k| k == kind.as_str()))
    });
    let (action, name) = match rule {
        Some(r) => (r.action.as_str(), format!("rule {:?}", r.name)),
        None => (policy.default.as_str(), "the default policy".to_string()),
    };
    if action == "deny" {
        return Err(Refusal::new(
            "policy-denied",
            403,
            format!("{name} does not allow {sender} to send a {kind} to {recipient}; ask the node's operator if this is wrong"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PolicyRule;
    use crate::directory::test_tree;

    #[test]
    fn globs() {
        assert!(glob("gz.*/*-street", "gz.yuexiu/liurong-street"));
        assert!(!glob("gz.*/*-street", "gz/civil-affairs"));
        assert!(glob("*", "anything"));
        assert!(glob("gz/civil-affairs", "gz/civil-affairs"));
        assert!(!glob("gz/civil", "gz/civil-affairs"));
    }

    #[test]
    fn first_matching_rule_decides_then_the_default() {
        let dir = test_tree();
        let rule = |name: &str, from: &str, to: &str, action: &str| PolicyRule {
            name: name.into(),
            from: Some(from.into()),
            from_kind: None,
            to: Some(to.into()),
            to_kind: None,
            kinds: vec!["document".into()],
            action: action.into(),
        };
        let policy = PolicyConfig {
            default: "allow".into(),
            rules: vec![rule("streets may write to the city", "*/liurong-street", "gz/*", "allow"), rule("no streets to the province", "*-street", "gd/*", "deny")],
        };
        let (street, city, province): (UnitAddress, UnitAddress, UnitAddress) =
            ("gz.yuexiu/liurong-street".parse().unwrap(), "gz/civil-affairs".parse().unwrap(), "gd/gov".parse().unwrap());
        assert!(check_policy(&policy, &dir, &street, &city, Kind::Document).is_ok());
        let err = check_policy(&policy, &dir, &street, &province, Kind::Document).unwrap_err();
        assert_eq!(err.code, "policy-denied");
        assert!(err.message.contains("no streets to the province"), "{}", err.message);
        assert!(check_policy(&policy, &dir, &city, &province, Kind::Document).is_ok(), "no rule: the default allows");
        let closed = PolicyConfig { default: "deny".into(), rules: vec![] };
        assert!(check_policy(&closed, &dir, &city, &province, Kind::Document).is_err());
    }
}
