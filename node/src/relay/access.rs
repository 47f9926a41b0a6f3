//! Who may do what: unit tokens for the agency API (only their SHA-256 is stored), and the access
//! policy that says who may send which kinds of message to whom. Both are decided here, at ingress,
//! so a refusal is a clear error to the caller, never a silent drop further on.



use base64::Engine as _;
use exchange_wire::api::{AdminActionResponse, IssueToken, IssuedToken, TokenInfo};
use exchange_wire::directory::UnitStatus;
use exchange_wire::{Kind, UnitAddress};
use sha2::{Digest, Sha256};

pub use super::tokens::{Access, TokenEntry};
use super::{Engine, Refusal};
use crate::config::PolicyConfig;
use crate::directory::Directory;
use crate::storage::{AdminOp, EventRow, TokenRow, WriteJob};


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

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}


impl Engine {
    /// Refuses a message the access policy does not allow (see [`check_policy`]).
    pub(crate) fn check_access(&self, dir: &Directory, sender: &UnitAddress, recipient: &UnitAddress, kind: Kind) -> Result<(), Refusal> {
        check_policy(self.access.policy(), dir, sender, recipient, kind)
    }

    /// Loads the token hashes into memory (every agency request is checked against them).
    pub(crate) async fn load_tokens(&self) -> anyhow::Result<()> {
        self.access.load(self.store.tokens().await?);
        Ok(())
    }

    /// Who is calling, from the `Authorization` header.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, Refusal> {
        if !self.access.requires_auth() {
            return Ok(Caller::Anyone);
        }
        let hint = "send Authorization: Bearer <token>, with a token issued for your unit by this node's operator (exchange-admin tokens issue); in the CLI, --token or EXCHANGE_TOKEN";
        let token = authorization
            .and_then(|h| h.trim().split_once(char::is_whitespace))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Refusal::new("unauthenticated", 401, format!("this node requires a unit token: {hint}")))?;
        let (unit, revoked_token) = match self.access.lookup(&token_hash(token)) {
            Some(found) => found,
            None => return Err(Refusal::new("unauthenticated", 401, format!("the token is not one this node issued: {hint}"))),
        };
        // A revoked unit's tokens die with it, whatever their own state: the directory is read on
        // every request, so the refusal holds from the moment the revocation is in force here.
        if self.dir.current().unit(&unit).is_some_and(|u| u.status == UnitStatus::Revoked) {
            return Err(Refusal::new(
                "unit-revoked",
                401,
                format!("unit {unit} was revoked by the operator of node {}; its tokens no longer work (a dissolved or compromised unit is registered anew, with new keys and tokens)", self.here),
            ));
        }
        if let Some(id) = revoked_token {
            return Err(Refusal::new("unauthenticated", 401, format!("token {id} was revoked; ask the operator for a new one")));
        }
        Ok(Caller::Unit(unit))
    }

    /// Refuses a request that would change something (send, sign for, upload, register a webhook…)
    /// while the caller's unit is suspended. A suspended unit may still read (see docs/security.md).
    pub fn may_change(&self, caller: &Caller) -> Result<(), Refusal> {
        let Caller::Unit(unit) = caller else { return Ok(()) };
        match self.dir.current().unit(unit) {
            Some(u) if u.status == UnitStatus::Suspended => Err(Refusal::new(
                "unit-suspended",
                403,
                format!("unit {unit} is suspended by the operator of node {}: it may read its inbox and the status of its messages, but send, sign for, upload or change nothing until it is activated again", self.here),
            )),
            _ => Ok(()),
        }
    }

    /// After a unit's revocation: its tokens are marked revoked and its webhook removed, in one
    /// commit with their audit entries. [`Engine::authenticate`] already refuses the tokens (it reads
    /// the directory), so this makes the stored state say the same (`tokens list`, no pusher left).
    pub(crate) async fn retire_unit_credentials(&self, unit: &UnitAddress) -> Result<(), Refusal> {
        let now = exchange_wire::now_ms() as i64;
        let ids: Vec<String> =
            self.store.tokens().await?.into_iter().filter(|t| t.unit == unit.as_str() && t.revoked_at_ms.is_none()).map(|t| t.id).collect();
        let mut jobs: Vec<WriteJob> = ids
            .iter()
            .map(|id| WriteJob::Admin {
                op: AdminOp::RevokeToken { id: id.clone(), at_ms: now },
                events: vec![self.admin_event("tokens-revoke", format!("token {id}: unit {unit} revoked"))],
            })
            .collect();
        jobs.push(WriteJob::Admin {
            op: AdminOp::RemoveWebhook { unit: unit.to_string() },
            events: vec![self.admin_event("webhook-remove", format!("{unit}: unit revoked"))],
        });
        if let Err(e) = self.committer.commit(jobs).await {
            self.metrics.storage_errors.with_label_values(&["commit"]).inc();
            return Err(Refusal {
                code: "storage",
                message: format!("unit {unit} is revoked and its tokens are refused, but marking them revoked in storage failed ({e}); run the revoke again"),
                status: 503,
                transient: true,
            });
        }
        self.access.mark_revoked(|t| &t.unit == unit);
        Ok(())
    }

    /// `exchange-admin tokens issue`.
    pub async fn issue_token(&self, req: IssueToken) -> Result<IssuedToken, Refusal> {
        if req.unit.is_node() {
            return Err(Refusal::malformed(format!("{} is the node's own address, not a unit; tokens are issued for units", req.unit)));
        }
        let dir = self.dir.current();
        if dir.home_of(&req.unit).as_ref() != Some(&self.here) {
            return Err(Refusal::new("wrong-node", 403, format!("unit {} is not hosted on node {}; issue its token there", req.unit, self.here)));
        }
        if dir.unit(&req.unit).is_some_and(|u| u.status == UnitStatus::Revoked) {
            return Err(Refusal::new("conflict", 409, format!("unit {} is revoked for good; register a new unit and issue its token", req.unit)));
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| Refusal::new("storage", 503, format!("no randomness: {e}")))?;
        let token = format!("govx_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
        let hash = token_hash(&token);
        let id = hex::encode(&hash[..8]);
        let row = TokenRow {
            id: id.clone(),
            hash,
            unit: req.unit.to_string(),
            label: req.label.clone(),
            issued_at_ms: exchange_wire::now_ms() as i64,
            revoked_at_ms: None,
        };
        let event = self.admin_event("tokens-issue", format!("token {id} for {} ({})", req.unit, req.label));
        self.commit_admin(AdminOp::IssueToken(row), event).await?;
        self.access.insert(hash, TokenEntry { id: id.clone(), unit: req.unit.clone(), revoked: false });
        Ok(IssuedToken { id, unit: req.unit, token })
    }

    /// `exchange-admin tokens revoke`.
    pub async fn revoke_token(&self, id: &str) -> Result<AdminActionResponse, Refusal> {
        let event = self.admin_event("tokens-revoke", format!("token {id}"));
        let n = self.commit_admin(AdminOp::RevokeToken { id: id.to_string(), at_ms: exchange_wire::now_ms() as i64 }, event).await?;
        if n == 0 {
            return Err(Refusal::new("not-found", 404, format!("no live token with id {id} on this node")));
        }
        self.access.mark_revoked(|t| t.id == id);
        Ok(AdminActionResponse { affected: n, message: format!("token {id} revoked; requests with it are refused from now on") })
    }

    /// `exchange-admin tokens list`.
    pub async fn token_infos(&self, unit: Option<&UnitAddress>) -> Result<Vec<TokenInfo>, Refusal> {
        Ok(self
            .store
            .tokens()
            .await?
            .into_iter()
            .filter_map(|t| {
                let u: UnitAddress = t.unit.parse().ok()?;
                unit.is_none_or(|w| w == &u).then(|| TokenInfo {
                    id: t.id,
                    unit: u,
                    label: t.label,
                    issued_at_ms: t.issued_at_ms.max(0) as u64,
                    revoked_at_ms: t.revoked_at_ms.map(|r| r.max(0) as u64),
                })
            })
            .collect())
    }

    fn admin_event(&self, event: &'static str, detail: String) -> EventRow {
        EventRow { at_ms: exchange_wire::now_ms() as i64, category: "admin", message_id: None, event, unit: None, peer: None, detail: Some(detail) }
    }

    async fn commit_admin(&self, op: AdminOp, event: EventRow) -> Result<u64, Refusal> {
        match self.committer.commit(vec![WriteJob::Admin { op, events: vec![event] }]).await {
            Ok(o) => Ok(match o.first() {
                Some(crate::storage::JobOutcome::Affected(n)) => *n,
                _ => 0,
            }),
            Err(e) => {
                self.metrics.storage_errors.with_label_values(&["commit"]).inc();
                Err(Refusal { code: "storage", message: format!("the change could not be stored ({e}); nothing changed"), status: 503, transient: true })
            }
        }
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
