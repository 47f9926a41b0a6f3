//! Refusals: what was wrong with input, in words an agency developer or operator can act on.

use exchange_wire::EnvelopeError;
use exchange_wire::api::ErrorBody;

use crate::routing::RouteError;
use crate::storage::StorageError;
use crate::storage::health::IntakeClosed;

/// A refused request or parcel. `code` is stable (used as the metric label and in the API's error
/// body); `message` says what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
    /// HTTP status for the agency API.
    pub status: u16,
    /// True when retrying later may succeed (storage trouble); false for bad input.
    pub transient: bool,
}

impl Refusal {
    pub fn new(code: &'static str, status: u16, message: impl Into<String>) -> Refusal {
        Refusal { code, message: message.into(), status, transient: false }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: self.code.to_string(), message: self.message.clone() }
    }

    pub fn malformed(message: impl Into<String>) -> Refusal {
        Refusal::new("malformed", 400, message)
    }
}

impl From<EnvelopeError> for Refusal {
    fn from(e: EnvelopeError) -> Refusal {
        let code = match &e {
            EnvelopeError::BadSignature => "bad-signature",
            EnvelopeError::PayloadDigest | EnvelopeError::PayloadSize { .. } => "payload-mismatch",
            EnvelopeError::Version(_) => "unsupported-version",
            EnvelopeError::NoRecipients | EnvelopeError::DuplicateRecipient(_) | EnvelopeError::TooManyRecipients(_) => {
                "bad-recipients"
            }
            EnvelopeError::Malformed(_) | EnvelopeError::Submission(_) => "malformed",
        };
        let status = if code == "bad-signature" { 403 } else { 400 };
        Refusal::new(code, status, e.to_string())
    }
}

impl From<RouteError> for Refusal {
    fn from(e: RouteError) -> Refusal {
        match e {
            RouteError::UnknownUnit(_) => Refusal::new("unknown-unit", 422, e.to_string()),
            RouteError::NoRoute(..) => Refusal::new("no-route", 422, e.to_string()),
        }
    }
}

impl Refusal {
    /// New work refused while the node's storage is short of space (or damaged): temporary, 503.
    pub fn storage_full(closed: &IntakeClosed) -> Refusal {
        let code = match closed {
            IntakeClosed::LowSpace { .. } => "storage-full",
            IntakeClosed::Damaged(_) => "storage-damaged",
        };
        Refusal { code, message: format!("{closed}; nothing was accepted, try again later"), status: 503, transient: true }
    }
}

impl From<StorageError> for Refusal {
    fn from(e: StorageError) -> Refusal {
        tracing::error!(error = %e, "storage failure");
        Refusal {
            code: "storage",
            message: "the node could not store the message; nothing was accepted, try again later".into(),
            status: 503,
            transient: true,
        }
    }
}
