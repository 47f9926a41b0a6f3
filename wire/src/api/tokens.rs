//! Unit API tokens (admin API): issuing, listing.

use serde::{Deserialize, Serialize};

use crate::address::UnitAddress;

/// Body of `POST /admin/v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssueToken {
    pub unit: UnitAddress,
    #[serde(default)]
    pub label: String,
}

/// The answer to `POST /admin/v1/tokens`: the token is shown this once; the node keeps its hash only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedToken {
    /// Handle for listing and revoking (the first 16 hex characters of the token's SHA-256).
    pub id: String,
    pub unit: UnitAddress,
    pub token: String,
}

/// A token as `GET /admin/v1/tokens` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub unit: UnitAddress,
    pub label: String,
    pub issued_at_ms: u64,
    pub revoked_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokensResponse {
    pub tokens: Vec<TokenInfo>,
}
