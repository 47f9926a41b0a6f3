//! Who may do what: unit tokens for the agency API (only their SHA-256 is stored), and the access
//! policy that says who may send which kinds of message to whom. Both are decided at ingress, so a
//! refusal is a clear error to the caller, never a silent drop further on. The part's handle,
//! [`Access`] (in `tokens.rs`), holds the tokens and the policy and decides who a caller is and
//! what it may send; this file holds what changes them (issue, revoke, retire), committed with
//! their audit entries before the handle applies them.

use base64::Engine as _;
use exchange_wire::api::{AdminActionResponse, IssueToken, IssuedToken, TokenInfo};
use exchange_wire::directory::UnitStatus;
use exchange_wire::UnitAddress;

pub use super::tokens::{Access, Caller, TokenEntry, check_policy, glob};
use super::tokens::token_hash;
use super::{Engine, Refusal};
use crate::storage::{AdminOp, EventRow, TokenRow, WriteJob};

impl Engine {
    /// Who is calling, from the `Authorization` header (see [`Access::authenticate`]).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, Refusal> {
        self.access.authenticate(&self.dir.current(), &self.here, authorization)
    }

    /// Refuses a change while the caller's unit is suspended (see [`Access::may_change`]).
    pub fn may_change(&self, caller: &Caller) -> Result<(), Refusal> {
        self.access.may_change(&self.dir.current(), &self.here, caller)
    }

    /// Loads the token hashes into memory (every agency request is checked against them).
    pub(crate) async fn load_tokens(&self) -> anyhow::Result<()> {
        self.access.load(self.store.tokens().await?);
        Ok(())
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
