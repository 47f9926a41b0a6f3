//! Group commit: one task owns all writes and folds every request waiting in its queue into one
//! transaction, so a burst of submissions and transfers costs one fsync, not one each. Callers wait
//! for their reply, which comes only after the commit: that is the custody rule.
//!
//! Two queues, like a priority inbox: requests that take custody of 特急 or 加急 messages
//! ([`WriteJob::is_urgent`]) wait in their own, and whenever the writer is free it commits those
//! first, in a transaction of their own. A commit under way is never interrupted (there is one
//! writer), but an urgent document waits at most for it, not also for the hundreds of routine jobs
//! that queued up meanwhile and would otherwise share its transaction. That wait is the length of
//! a routine transaction: at most `relay.commit_max_requests` requests, and, when
//! `relay.commit_max_jobs` is set, no more requests once it holds that many jobs. Under a backlog a
//! recipient's node folds requests of up to a thousand 签收 each into commits of 1,000-3,000 jobs
//! and 350-890 ms; a bound of 512 jobs about halved the 特急 wait, but cost 6% of the throughput at
//! full speed and more while a backlog drains (smaller commits write more pages per document), so it
//! is the operator's choice, unset by default (docs/performance.md).
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
    urgent_tx: mpsc::Sender<Request>,
    stop: CancellationToken,
    /// True once the writer has ended (its queue drained).
    ended: watch::Receiver<bool>,
}

impl Committer {
    /// Starts the task. One transaction folds at most `max_requests` requests, and takes no more
    /// once it holds `max_jobs` jobs (a request always goes whole).
    pub fn spawn(store: Arc<dyn Store>, metrics: Arc<Metrics>, max_requests: usize, max_jobs: usize) -> Committer {
        // Bounded: when storage falls behind, callers wait here instead of piling up memory.
        let (tx, mut rx) = mpsc::channel::<Request>(max_requests.max(1) * 2);
        let (urgent_tx, mut urgent_rx) = mpsc::channel::<Request>(max_requests.max(1) * 2);
        let stop = CancellationToken::new();
        let (ended_tx, ended) = watch::channel(false);
        let stopping = stop.clone();
        let writer = tokio::spawn(async move {
            let mut batch: Vec<Request> = Vec::with_capacity(max_requests);
            let mut urgent: Vec<Request> = Vec::new();
            let mut closed = false;
            loop {
                let max = max_requests.max(1);
                let n = if closed {
                    match urgent_rx.recv_many(&mut batch, max).await {
                        0 => routine(&mut rx, &mut batch, max, max_jobs).await,
                        n => n,
                    }
                } else {
                    // Biased: what is urgent is taken first, and alone.
                    let n = tokio::select! {
                        biased;
                        n = urgent_rx.recv_many(&mut urgent, max) => n,
                        n = routine(&mut rx, &mut batch, max, max_jobs) => n,
                        _ = stopping.cancelled() => {
                            // No new requests; what is queued is still committed and answered.
                            urgent_rx.close();
                            rx.close();
                            closed = true;
                            continue;
                        }
                    };
                    batch.append(&mut urgent);
                    n
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
        Committer { tx, urgent_tx, stop, ended }
    }

    /// Stops taking requests, commits and answers those already queued, and waits up to `within`
    /// for the writer to end. Returns whether it ended.
    pub async fn stop(&self, within: std::time::Duration) -> bool {
        self.stop.cancel();
        let mut ended = self.ended.clone();
        tokio::time::timeout(within, ended.wait_for(|e| *e)).await.is_ok_and(|r| r.is_ok())
    }

    /// Commits `jobs` (together with whatever else is waiting) and returns their outcomes in order.
    /// Jobs of which any is urgent go through the urgent queue, ahead of routine ones.
    pub async fn commit(&self, jobs: Vec<WriteJob>) -> Result<Vec<JobOutcome>, Arc<StorageError>> {
        let n = jobs.len();
        let (reply, rx) = oneshot::channel();
        let stopped = || Arc::new(StorageError::Corrupt("the storage writer has stopped".into()));
        let queue = if jobs.iter().any(WriteJob::is_urgent) { &self.urgent_tx } else { &self.tx };
        queue.send(Request { jobs, n, reply }).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Waits for the next routine request, then takes those queued behind it without waiting, while the
/// transaction holds fewer than `max_requests` requests and `max_jobs` jobs. Returns how many it took
/// (0: the queue is closed and empty). Cancel-safe: a request is taken from the queue only when it
/// is kept.
async fn routine(rx: &mut mpsc::Receiver<Request>, batch: &mut Vec<Request>, max_requests: usize, max_jobs: usize) -> usize {
    let Some(first) = rx.recv().await else { return 0 };
    let mut jobs = first.n;
    batch.push(first);
    while batch.len() < max_requests && jobs < max_jobs {
        match rx.try_recv() {
            Ok(r) => {
                jobs += r.n;
                batch.push(r);
            }
            Err(_) => break,
        }
    }
    batch.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::conformance::{self, UNIT_A};
    use crate::storage::{AdminOp, SqliteStore, TokenRow};

    /// A committer on a fresh SQLite store (which lives as long as the folder), folding up to 16
    /// requests a transaction.
    async fn started() -> (tempfile::TempDir, Arc<dyn Store>, Arc<Metrics>, Committer) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_standalone(&dir.path().join("node.db")).await.unwrap());
        let metrics = Arc::new(Metrics::new("test"));
        let committer = Committer::spawn(store.clone(), metrics.clone(), 16, 8);
        (dir, store, metrics, committer)
    }

    /// Document `n` of `priority`, delivered here to one unit.
    fn document_of(n: u8, priority: exchange_wire::Priority) -> WriteJob {
        WriteJob::Custody(conformance::document(n, priority.rank(), None, &[UNIT_A], 1))
    }

    /// Routine document `n`, delivered here to one unit.
    fn document(n: u8) -> WriteJob {
        document_of(n, exchange_wire::Priority::Routine)
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
        let (_dir, store, metrics, committer) = started().await;
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

    /// An urgent document queued behind routine ones is committed first, in a transaction of its
    /// own; the routine ones follow together. (One thread: all three are queued before the writer
    /// first runs.)
    #[tokio::test]
    async fn urgent_jobs_go_first_in_a_commit_of_their_own() {
        let (_dir, _, metrics, committer) = started().await;
        let urgent = || document_of(3, exchange_wire::Priority::Urgent);
        assert!(urgent().is_urgent() && document_of(4, exchange_wire::Priority::Express).is_urgent() && !document(1).is_urgent());
        let order = std::sync::Mutex::new(Vec::new());
        let commit = |name: &'static str, jobs: Vec<WriteJob>| {
            let (committer, order) = (&committer, &order);
            async move {
                let outcome = committer.commit(jobs).await.unwrap();
                order.lock().unwrap().push(name);
                outcome
            }
        };
        let (a, b, u) = tokio::join!(commit("routine 1", vec![document(1)]), commit("routine 2", vec![document(2)]), commit("urgent", vec![urgent()]));
        assert_eq!((a, b, u), (vec![JobOutcome::Stored], vec![JobOutcome::Stored], vec![JobOutcome::Stored]));
        assert_eq!(order.into_inner().unwrap()[0], "urgent", "the urgent document was committed first");
        assert_eq!((metrics.commit_jobs.get_sample_count(), metrics.commit_jobs.get_sample_sum()), (2, 3.0), "alone, then the two routine ones together");
    }

    /// A transaction takes no more requests once it holds `max_jobs` jobs (8 here), though a request
    /// always goes whole: the wait of an urgent request behind a routine commit stays bounded. (One
    /// thread: all requests are queued before the writer first runs.)
    #[tokio::test]
    async fn a_transaction_takes_no_more_requests_once_it_holds_max_jobs() {
        let (_dir, store, metrics, committer) = started().await;
        let (a, b, c, d) = tokio::join!(
            committer.commit((1..=5).map(document).collect()),
            committer.commit((6..=9).map(document).collect()),
            committer.commit((10..=11).map(document).collect()),
            committer.commit((12..=20).map(document).collect()),
        );
        assert!([a, b, c, d].iter().all(|r| r.as_ref().is_ok_and(|o| o.iter().all(|o| *o == JobOutcome::Stored))));
        // 5 + 4 reach the bound; then 2 + 9 (the last request whole, beyond the bound).
        assert_eq!((metrics.commit_jobs.get_sample_count(), metrics.commit_jobs.get_sample_sum()), (2, 20.0), "two transactions, not one");
        for n in 1..=20 {
            assert!(store.message(&[n; 32]).await.unwrap().is_some(), "document {n} is durable");
        }
    }

    /// At shutdown the requests already queued are committed and answered; later ones are refused
    /// (so nothing uncommitted is acknowledged) and leave nothing in storage.
    #[tokio::test]
    async fn stop_drains_the_queue_then_refuses() {
        let (_dir, store, _, committer) = started().await;
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
