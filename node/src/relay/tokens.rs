//! The unit tokens this node issued, as the engine holds them in memory (by hash): who a token
//! speaks for and whether it was revoked. Loaded from storage at start, kept in step by `access`.

use exchange_wire::UnitAddress;

/// A token known to this node.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub id: String,
    pub unit: UnitAddress,
    pub revoked: bool,
}
