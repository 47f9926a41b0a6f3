//! The bounds on agencies' unfinished uploads (`attachments.*` in the configuration), kept apart
//! from `uploads` so the attachment store can hold them without importing the uploads it serves.

use std::time::Duration;

/// Per-unit bounds on unfinished uploads, and how long one is kept without a new chunk.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    /// Most unfinished uploads one unit may have open at once.
    pub max_open_per_unit: usize,
    /// Most bytes (declared sizes) of one unit's unfinished uploads together.
    pub max_bytes_per_unit: u64,
    /// An unfinished upload not written for this long is removed.
    pub ttl: Duration,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits { max_open_per_unit: 8, max_bytes_per_unit: 16 * 1024 * 1024 * 1024, ttl: Duration::from_secs(24 * 3600) }
    }
}
