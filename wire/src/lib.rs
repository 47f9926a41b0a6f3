//! Wire model of the government exchange network.
//!
//! Everything an agency client, the admin CLI and the node must agree on byte for byte lives here and
//! nowhere else: unit addresses, the envelope, its canonical signed byte layout, the content-derived
//! message id, receipts, key files and the JSON shapes of the agency HTTP API. The crate pulls in no
//! networking stack (the optional `client` feature adds a small blocking HTTP client), so agencies and
//! the admin CLI stay light. `docs/protocol.md` is the normative description; `docs/test-vectors.json`
//! is checked against this code by the tests.

pub mod address;
pub mod api;
pub mod backup;
#[cfg(feature = "client")]
pub mod client;
pub mod directory;
pub mod document;
pub mod envelope;
pub mod keys;
pub mod query;
pub mod receipt;
pub mod sharing;
pub mod time;

pub use address::{AddressError, NodeId, UnitAddress};
pub use envelope::{
    Digest, Envelope, EnvelopeError, Kind, MessageId, Priority, SignedEnvelope, digest_payload,
};
pub use keys::{KeyError, PublicKey};
pub use time::now_ms;
