//! The node's background tasks, owned. Every task the node starts after start-up (forwarders,
//! pushers, answers to neighbours, sweeps, periodic jobs) is spawned through [`Tasks`], which tracks
//! it and can tell all of them to stop at once, so a shutdown knows what is still running and can
//! wait for it, for a bounded time.
//!
//! Stopping drops a task at its next `.await`. That is safe by the custody rule: nothing is
//! acknowledged before its commit, so a task cut before its commit acknowledged nothing (the
//! agency or the neighbour sends again, and the message id makes that a duplicate), and a task cut
//! after its commit lost only its wake-ups, which the next start redoes from storage. The one task
//! that must not be cut mid-way, the group committer, is not spawned here: it drains its queue
//! itself when told to stop (see `relay::committer`).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Tracks the node's background tasks and stops them together (cheap to clone).
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Runs `task` until it ends or the node stops, whichever comes first. After [`Tasks::stop`],
    /// nothing new starts.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.stop.is_cancelled() {
            return;
        }
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// The token cancelled when the node stops, for tasks that stop at a point of their choosing.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Tells every task to stop and waits up to `within` for them to end. Returns how many were
    /// still running when the time was up (0: all ended).
    pub async fn stop(&self, within: Duration) -> usize {
        self.stop.cancel();
        self.tracker.close();
        match tokio::time::timeout(within, self.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tracker.len(),
        }
    }

    /// Tasks running now.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_ends_every_task_and_starts_no_new_one() {
        let tasks = Tasks::new();
        for _ in 0..3 {
            tasks.spawn(async { std::future::pending::<()>().await });
        }
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await
        });
        assert_eq!(tasks.running(), 4);
        assert_eq!(tasks.stop(Duration::from_secs(5)).await, 0, "every task ended");
        assert!(rx.try_recv().is_err(), "the task was dropped, and with it what it held");
        tasks.spawn(async { std::future::pending::<()>().await });
        assert_eq!(tasks.running(), 0, "nothing starts after stop");
    }
}
