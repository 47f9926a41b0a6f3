//! Group commit: one task owns all writes and folds every request waiting in its queue into one
//! transaction, so a burst of submissions and transfers costs one fsync, not one each. Callers wait
//! for their reply, which comes only after the commit: that is the custody rule.
//!
//! At shutdown ([`Committer::stop`]) the committer takes no new request (its callers get an error,
//! so they acknowledge nothing), commits what is already queued, answers those waiters, and ends.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::storage::{JobOutcome, Store, StorageError, WriteJob};

struct Request {
    jobs: Vec<WriteJob>,
    /// How many jobs this request brought (its jobs are moved into the shared transaction).
    n: usize,
    reply: oneshot::Sender<Result<Vec<JobOutcome>, Arc<StorageError>>>,
}

/// Handle to the committer task.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Request>,
    stop: CancellationToken,
    /// True once the writer has ended (its queue drained).
    ended: watch::Receiver<bool>,
}

impl Committer {
    /// Starts the task. `max_requests` bounds how many requests one transaction folds together.
    pub fn spawn(store: Arc<dyn Store>, metrics: Arc<Metrics>, max_requests: usize) -> Committer {
        // Bounded: when storage falls behind, callers wait here instead of piling up memory.
        let (tx, mut rx) = mpsc::channel::<Request>(max_requests.max(1) * 2);
        let stop = CancellationToken::new();
        let (ended_tx, ended) = watch::channel(false);
        let stopping = stop.clone();
        let writer = tokio::spawn(async move {
            let mut batch: Vec<Request> = Vec::with_capacity(max_requests);
            let mut closed = false;
            loop {
                let n = if closed {
                    rx.recv_many(&mut batch, max_requests.max(1)).await
                } else {
                    tokio::select! {
                        biased;
                        n = rx.recv_many(&mut batch, max_requests.max(1)) => n,
                        _ = stopping.cancelled() => {
                            // No new requests; what is queued is still committed and answered.
                            rx.close();
                            closed = true;
                            continue;
                        }
                    }
                };
                if n == 0 {
                    break;
                }
                let jobs: Vec<WriteJob> = batch.iter_mut().flat_map(|r| std::mem::take(&mut r.jobs)).collect();
                let started = Instant::now();
                let result = store.commit(&jobs).await;
                metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
                metrics.commit_jobs.observe(jobs.len() as f64);
                match result {
                    Ok(outcomes) => {
                        let mut outcomes = outcomes.into_iter();
                        for r in batch.drain(..) {
                            let mine: Vec<JobOutcome> = outcomes.by_ref().take(r.n).collect();
                            let _ = r.reply.send(Ok(mine));
                        }
                    }
                    Err(e) if batch.len() > 1 => {
                        // One bad request must not sink the others: retry each on its own.
                        tracing::warn!(error = %e, "group commit failed; retrying requests one by one");
                        let mut rest = jobs.into_iter();
                        for r in batch.drain(..) {
                            let mine: Vec<WriteJob> = rest.by_ref().take(r.n).collect();
                            let res = store.commit(&mine).await.map_err(Arc::new);
                            let _ = r.reply.send(res);
                        }
                    }
                    Err(e) => {
                        let e = Arc::new(e);
                        for r in batch.drain(..) {
                            let _ = r.reply.send(Err(e.clone()));
                        }
                    }
                }
            }
            let _ = ended_tx.send(true);
        });
        // A writer that died would leave every later write failing while the node looks alive: end
        // the process instead, so the service manager restarts it on a clean writer (nothing that was
        // not committed was ever acknowledged).
        tokio::spawn(async move {
            if let Err(e) = writer.await
                && e.is_panic()
            {
                tracing::error!("the storage writer task died ({e}); stopping the process so it is restarted");
                std::process::exit(70);
            }
        });
        Committer { tx, stop, ended }
    }

    /// Stops taking requests, commits and answers those already queued, and waits up to `within`
    /// for the writer to end. Returns whether it ended.
    pub async fn stop(&self, within: std::time::Duration) -> bool {
        self.stop.cancel();
        let mut ended = self.ended.clone();
        tokio::time::timeout(within, ended.wait_for(|e| *e)).await.is_ok_and(|r| r.is_ok())
    }

    /// Commits `jobs` (together with whatever else is waiting) and returns their outcomes in order.
    pub async fn commit(&self, jobs: Vec<WriteJob>) -> Result<Vec<JobOutcome>, Arc<StorageError>> {
        let n = jobs.len();
        let (reply, rx) = oneshot::channel();
        let stopped = || Arc::new(StorageError::Corrupt("the storage writer has stopped".into()));
        self.tx.send(Request { jobs, n, reply }).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::conformance::{self, UNIT_A};
    use crate::storage::{AdminOp, SqliteStore, TokenRow};

    /// Document `n`, delivered here to one unit.
    fn document(n: u8) -> WriteJob {
        WriteJob::Custody(conformance::document(n, 2, None, &[UNIT_A], 1))
    }

    fn token(id: &str) -> WriteJob {
        let row = TokenRow { id: id.into(), hash: [1; 32], unit: "gz.haizhu/civil-affairs".into(), label: String::new(), issued_at_ms: 1, revoked_at_ms: None };
        WriteJob::Admin { op: AdminOp::IssueToken(row), events: vec![] }
    }

    /// Requests waiting together share one transaction; when it fails because of one of them, each is
    /// committed again on its own, so only the bad one fails and the others are durable. (The test
    /// runs on one thread: the three requests are all queued before the committer first runs, so
    /// they are folded into one transaction.)
    #[tokio::test]
    async fn one_bad_request_does_not_sink_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_standalone(&dir.path().join("node.db")).await.unwrap());
        let metrics = Arc::new(Metrics::new("test"));
        let committer = Committer::spawn(store.clone(), metrics.clone(), 16);
        committer.commit(vec![token("t1")]).await.unwrap();

        let (a, bad, c) = tokio::join!(
            committer.commit(vec![document(1), document(1)]),
            committer.commit(vec![token("t1")]),
            committer.commit(vec![document(2)]),
        );
        assert_eq!(a.unwrap(), [JobOutcome::Stored, JobOutcome::Duplicate], "each request gets its own outcomes");
        assert!(bad.is_err(), "the token issued twice fails");
        assert_eq!(c.unwrap(), [JobOutcome::Stored]);
        // Two group commits so far: the first token, then the three requests' four jobs together.
        assert_eq!((metrics.commit_jobs.get_sample_count(), metrics.commit_jobs.get_sample_sum()), (2, 5.0), "folded into one");
        for n in [1, 2] {
            assert!(store.message(&[n; 32]).await.unwrap().is_some(), "document {n} is durable");
        }

        // Folded again, all good: one transaction, outcomes split per request.
        let (x, y) = tokio::join!(committer.commit(vec![document(3)]), committer.commit(vec![document(2), document(4)]));
        assert_eq!(x.unwrap(), [JobOutcome::Stored]);
        assert_eq!(y.unwrap(), [JobOutcome::Duplicate, JobOutcome::Stored]);
    }

    /// At shutdown the requests already queued are committed and answered; later ones are refused
    /// (so nothing uncommitted is acknowledged) and leave nothing in storage.
    #[tokio::test]
    async fn stop_drains_the_queue_then_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_standalone(&dir.path().join("node.db")).await.unwrap());
        let committer = Committer::spawn(store.clone(), Arc::new(Metrics::new("test")), 16);
        let (a, b, ended) = tokio::join!(
            committer.commit(vec![document(1)]),
            committer.commit(vec![document(2)]),
            committer.stop(std::time::Duration::from_secs(5)),
        );
        assert_eq!((a.unwrap(), b.unwrap()), (vec![JobOutcome::Stored], vec![JobOutcome::Stored]), "queued before the stop: committed");
        assert!(ended, "the writer ended");
        assert!(committer.commit(vec![document(3)]).await.is_err(), "after the stop: refused");
        for (n, held) in [(1, true), (2, true), (3, false)] {
            assert_eq!(store.message(&[n; 32]).await.unwrap().is_some(), held, "document {n}");
        }
    }
}
