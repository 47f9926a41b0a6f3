//! The access part's state: the unit tokens this node issued, as the engine holds them in memory
//! (by hash): who a token speaks for and whether it was revoked; whether the agency API requires a
//! token; and the access policy. Loaded from storage at start, kept in step by `access`, which
//! holds the rules (kept apart so that the engine can hold this without importing `access`).

use std::collections::HashMap;
use std::sync::RwLock;

use exchange_wire::UnitAddress;

use crate::config::PolicyConfig;
use crate::storage::model::TokenRow;

/// A token known to this node.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub id: String,
    pub unit: UnitAddress,
    pub revoked: bool,
}

/// The access part: the unit tokens this node issued (by hash), whether the agency API requires
/// one, and the access policy. The engine asks it who a token speaks for and whether a message may
/// go from one unit to another; changes to tokens are committed first (by the engine, with their
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

    /// The access policy in force (applied by `access::check_policy`).
    pub fn policy(&self) -> &PolicyConfig {
        &self.policy
    }
}
