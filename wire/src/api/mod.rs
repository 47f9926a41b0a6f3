//! JSON shapes of the agency HTTP API and the admin API (see `docs/openapi.yaml`).
//!
//! One file per concept; every type is re-exported here, so `exchange_wire::api::X` is the path to
//! use. The files name each other directly (`super::submit::SignedMessage`), never through this one.

mod audit;
mod directory;
mod encoding;
mod inbox;
mod operations;
mod queries;
mod status;
mod submit;
mod tokens;

pub use audit::*;
pub use directory::*;
pub use encoding::*;
pub use inbox::*;
pub use operations::*;
pub use queries::*;
pub use status::*;
pub use submit::*;
pub use tokens::*;
