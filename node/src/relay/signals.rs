//! The wake-ups of one forwarder: new work, the link coming back, and the turn of attachment
//! transfers. The engine holds one per neighbour; the forwarder waits on it.

use tokio::sync::Notify;

/// Wake-up signals for one forwarder.
#[derive(Default)]
pub struct Signals {
    /// New outbox entries were committed for this neighbour (or an attachment reached it).
    pub work: Notify,
    /// The link to this neighbour came up.
    pub link_up: Notify,
    /// Held by the attachment transfer to this neighbour that has its turn: one at a time.
    pub attachment_turn: tokio::sync::Mutex<()>,
}
