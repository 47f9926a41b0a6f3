//! What follows a commit, as a part sees it: a part that commits outside the custody pipeline (a
//! backlog page, a decision) holds a [`CommitDone`] instead of the engine, and tells it of each
//! commit. The engine implements it (`after_commit.rs`): it knows the links, so it wakes the
//! forwarders of the next hops, the inbox long-polls, counts, and starts the work the commit left
//! (subscription requests to decide, the rest of a backlog to send).
//!
//! This file names no part and not `Engine`, so a part's file may import it.

use super::custody::Summary;

/// Told of every commit a part made, once it is durable.
pub trait CommitDone {
    /// Does what follows the commit `summary` describes.
    fn committed(&self, summary: &Summary);

    /// A granted subscription's backlog is left to send, a page per commit: start sending it
    /// (`sharing::backfill::send_backlogs`, a task of its own, so the grant is answered at once).
    fn backlog_left(&self);
}
