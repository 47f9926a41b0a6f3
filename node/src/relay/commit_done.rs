//! What follows a commit, as a part sees it: a part that commits (the custody pipeline, a backlog
//! page, a decision) holds a [`CommitDone`] and tells it of each commit. The forwarding part
//! implements it (`after_commit.rs`): it wakes the forwarders of the next hops and the inbox
//! long-polls, counts, and hands the work the commit left to other parts as [`FollowUp`]s, which
//! the engine runs.
//!
//! This file names no part and not `Engine`, so a part's file may import it.

use std::sync::Mutex;

use tokio::sync::mpsc;

use super::custody::Summary;

/// Told of every commit a part made, once it is durable.
pub trait CommitDone {
    /// Does what follows the commit `summary` describes.
    fn committed(&self, summary: &Summary);

    /// A granted subscription's backlog is left to send, a page per commit: start sending it
    /// (`sharing::backfill::send_backlogs`, a task of its own, so the grant is answered at once).
    fn backlog_left(&self);
}

/// Work a commit leaves for parts outside the custody pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUp {
    /// Subscription requests arrived: decide them (data sharing).
    SubscriptionRequests,
    /// A granted backlog is left to send (data sharing).
    Backlogs,
    /// Recalls were decided here: report them to their senders.
    Recalls,
}

/// The follow-ups of commits, queued in order until the engine, at start-up, takes the receiving
/// end and runs each (so the pipeline that commits needs no handle on the parts that follow up).
pub struct FollowUps {
    tx: mpsc::UnboundedSender<FollowUp>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<FollowUp>>>,
}

impl Default for FollowUps {
    fn default() -> FollowUps {
        let (tx, rx) = mpsc::unbounded_channel();
        FollowUps { tx, rx: Mutex::new(Some(rx)) }
    }
}

impl FollowUps {
    /// Queues `f` for the engine.
    pub fn send(&self, f: FollowUp) {
        // Only fails once the engine's receiving task has ended (shutdown): nothing to run it then.
        let _ = self.tx.send(f);
    }

    /// The receiving end, once (the engine's start-up takes it).
    pub fn take(&self) -> Option<mpsc::UnboundedReceiver<FollowUp>> {
        self.rx.lock().expect("follow-ups lock").take()
    }
}
