//! Group commit: one task owns all writes and folds every request waiting in its queue into one
//! transaction, so a burst of submissions and transfers costs one fsync, not one each. Callers wait
//! for their reply, which comes only after the commit: that is the custody rule.
//!
//! Two queues, like a priority inbox: requests that take custody of 特急 or 加急 messages
//! ([`WriteJob::is_urgent`]) wait in their own, and whenever the writer is free it commits those
//! first, in a transaction of their own. There is one writer, so an urgent request cannot go
//! beside a routine transaction under way; instead that transaction ends early. It is applied in
//! parts of about [`PART_JOBS`] jobs ([`Store::commit_parts`]), and when an urgent request is
//! waiting after a part, the parts applied so far are committed, the urgent request next, and the
//! rest of the routine work after it, with whatever queued meanwhile. Under a backlog a recipient's
//! node folds requests of up to a thousand 签收 each into transactions of 1,000-3,000 jobs and
//! 350-890 ms; the urgent document now waits for one part and the commit of what was applied, not
//! for all of it (docs/performance.md). A routine transaction always commits its first part, so a
//! steady flow of urgent work slows routine work but cannot stop it. A request is answered once,
//! when all its jobs are durable.
//! Only requests of custody and settlement jobs are cut between their jobs: each job has its own
//! outcome there, and one committed before the others is what a retry after a lost answer meets
//! anyway (a duplicate). Any other request goes whole into one transaction.
//!
//! `relay.commit_max_jobs` (unset by default) also bounds a transaction: it takes no more requests
//! once it holds that many jobs.
//!
//! At shutdown ([`Committer::stop`]) the committer takes no new request (its callers get an error,
//! so they acknowledge nothing), commits what is already queued, answers those waiters, and ends.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::storage::{JobOutcome, Store, StorageError, WriteJob};

/// Jobs of a routine transaction between two points where it may end early for urgent work. Parts
/// of 32 and of 128 jobs cost no throughput measurably, on SQLite or PostgreSQL; at a recipient's
/// node under a backlog 128 jobs take 30-40 ms, which an urgent document may wait for at each hop.
pub const PART_JOBS: usize = 64;

type Reply = oneshot::Sender<Result<Vec<JobOutcome>, Arc<StorageError>>>;

struct Request {
    /// The jobs not committed yet (moved into the shared transaction while it runs).
    jobs: Vec<WriteJob>,
    /// How many jobs are not committed yet.
    n: usize,
    /// Outcomes of this request's first jobs, committed by a transaction that ended early.
    done: Vec<JobOutcome>,
    /// Whether the transaction may end between this request's jobs, not only after the last: its
    /// jobs are custody and settlement alone, each with its own outcome, and one committed without
    /// the others is what a retry after a lost answer meets anyway (a duplicate).
    divisible: bool,
    reply: Reply,
}

impl Request {
    fn new(jobs: Vec<WriteJob>, reply: Reply) -> Request {
        let divisible = jobs.iter().all(|j| matches!(j, WriteJob::Custody(_) | WriteJob::SignFor { .. }));
        Request { n: jobs.len(), jobs, done: Vec::new(), divisible, reply }
    }

    /// Answers with every outcome, those of earlier transactions first.
    fn answer(mut self, result: Result<Vec<JobOutcome>, Arc<StorageError>>) {
        let _ = self.reply.send(result.map(|mut rest| {
            self.done.append(&mut rest);
            self.done
        }));
    }
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
    /// once it holds `max_jobs` jobs.
    pub fn spawn(store: Arc<dyn Store>, metrics: Arc<Metrics>, max_requests: usize, max_jobs: usize) -> Committer {
        let max = max_requests.max(1);
        // Bounded: when storage falls behind, callers wait here instead of piling up memory.
        let (tx, mut rx) = mpsc::channel::<Request>(max * 2);
        let (urgent_tx, mut urgent_rx) = mpsc::channel::<Request>(max * 2);
        let stop = CancellationToken::new();
        let (ended_tx, ended) = watch::channel(false);
        let stopping = stop.clone();
        let writer = tokio::spawn(async move {
            let mut batch: Vec<Request> = Vec::with_capacity(max);
            let mut urgent: Vec<Request> = Vec::new();
            // What a routine transaction that ended early left uncommitted: it goes first in the
            // next routine transaction, once the urgent work is committed.
            let mut left: Vec<Request> = Vec::new();
            let mut closed = false;
            loop {
                let routine_lane = if !left.is_empty() {
                    take_queued(&mut urgent_rx, &mut batch, max, usize::MAX);
                    if batch.is_empty() {
                        batch.append(&mut left);
                        take_queued(&mut rx, &mut batch, max, max_jobs);
                    }
                    left.is_empty()
                } else if closed {
                    match urgent_rx.recv_many(&mut batch, max).await {
                        0 => routine(&mut rx, &mut batch, max, max_jobs).await > 0,
                        _ => false,
                    }
                } else {
                    // Biased: what is urgent is taken first, and alone.
                    let routine_lane = tokio::select! {
                        biased;
                        _ = urgent_rx.recv_many(&mut urgent, max) => false,
                        n = routine(&mut rx, &mut batch, max, max_jobs) => n > 0,
                        _ = stopping.cancelled() => {
                            // No new requests; what is queued is still committed and answered.
                            urgent_rx.close();
                            rx.close();
                            closed = true;
                            continue;
                        }
                    };
                    batch.append(&mut urgent);
                    routine_lane
                };
                if batch.is_empty() {
                    break;
                }
                // Only a routine transaction ends early, and only for urgent work waiting.
                let cuts = if routine_lane { part_cuts(&batch) } else { Vec::new() };
                let jobs: Vec<WriteJob> = batch.iter_mut().flat_map(|r| std::mem::take(&mut r.jobs)).collect();
                let end_early = || !urgent_rx.is_empty();
                let started = Instant::now();
                let result = store.commit_parts(&jobs, &cuts, &end_early).await;
                metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
                match result {
                    Ok(outcomes) => {
                        metrics.commit_jobs.observe(outcomes.len() as f64);
                        if outcomes.len() < jobs.len() {
                            metrics.commits_ended_early.inc();
                        }
                        let mut outcomes = outcomes.into_iter();
                        let mut uncommitted = jobs.into_iter().skip(outcomes.len());
                        for mut r in batch.drain(..) {
                            let before = r.done.len();
                            r.done.extend(outcomes.by_ref().take(r.n));
                            r.n -= r.done.len() - before;
                            if r.n == 0 {
                                r.answer(Ok(Vec::new()));
                            } else {
                                r.jobs = uncommitted.by_ref().take(r.n).collect();
                                left.push(r);
                            }
                        }
                    }
                    Err(e) if batch.len() > 1 => {
                        metrics.commit_jobs.observe(jobs.len() as f64);
                        // One bad request must not sink the others: retry each on its own.
                        tracing::warn!(error = %e, "group commit failed; retrying requests one by one");
                        let mut rest = jobs.into_iter();
                        for r in batch.drain(..) {
                            let mine: Vec<WriteJob> = rest.by_ref().take(r.n).collect();
                            let res = store.commit(&mine).await.map_err(Arc::new);
                            r.answer(res);
                        }
                    }
                    Err(e) => {
                        metrics.commit_jobs.observe(jobs.len() as f64);
                        let e = Arc::new(e);
                        for r in batch.drain(..) {
                            r.answer(Err(e.clone()));
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
        let (reply, rx) = oneshot::channel();
        let stopped = || Arc::new(StorageError::Corrupt("the storage writer has stopped".into()));
        let queue = if jobs.iter().any(WriteJob::is_urgent) { &self.urgent_tx } else { &self.tx };
        queue.send(Request::new(jobs, reply)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Waits for the next routine request, then takes those queued behind it without waiting (see
/// [`take_queued`]). Returns how many the transaction holds (0: the queue is closed and empty).
/// Cancel-safe: a request is taken from the queue only when it is kept.
async fn routine(rx: &mut mpsc::Receiver<Request>, batch: &mut Vec<Request>, max_requests: usize, max_jobs: usize) -> usize {
    let Some(first) = rx.recv().await else { return 0 };
    batch.push(first);
    take_queued(rx, batch, max_requests, max_jobs);
    batch.len()
}

/// Takes the requests queued in `rx`, without waiting, while the transaction holds fewer than
/// `max_requests` requests and `max_jobs` jobs.
fn take_queued(rx: &mut mpsc::Receiver<Request>, batch: &mut Vec<Request>, max_requests: usize, max_jobs: usize) {
    let mut jobs: usize = batch.iter().map(|r| r.n).sum();
    while batch.len() < max_requests && jobs < max_jobs {
        match rx.try_recv() {
            Ok(r) => {
                jobs += r.n;
                batch.push(r);
            }
            Err(_) => break,
        }
    }
}

/// Where a routine transaction of `batch` may end early (see [`Store::commit_parts`]): once a part
/// holds [`PART_JOBS`] jobs, at the end of a request, or at once inside a divisible one.
fn part_cuts(batch: &[Request]) -> Vec<usize> {
    let (mut cuts, mut at, mut part) = (Vec::new(), 0, 0);
    for r in batch {
        let mut left = r.n;
        while r.divisible && part + left > PART_JOBS {
            let step = PART_JOBS - part;
            at += step;
            left -= step;
            cuts.push(at);
            part = 0;
        }
        at += left;
        part += left;
        if part >= PART_JOBS {
            cuts.push(at);
            part = 0;
        }
    }
    cuts
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

    /// An urgent request that arrives while a routine transaction is under way ends it after the
    /// part being applied: the part is committed, then the urgent request alone, then the rest of
    /// the routine request with whatever queued meanwhile. Each request is answered once, with all
    /// its outcomes, after all its jobs are durable.
    #[tokio::test]
    async fn urgent_work_ends_a_routine_transaction_early() {
        let (_dir, store, metrics, committer) = started().await;
        let order = std::sync::Mutex::new(Vec::new());
        let routine = async {
            let outcome = committer.commit((1..=250).map(document).collect()).await.unwrap();
            order.lock().unwrap().push("routine");
            outcome
        };
        let urgent = async {
            // Sent once the writer has taken the routine request (its queue has room again), so it
            // arrives during that transaction: one thread, and the writer yields only at storage.
            while committer.tx.capacity() < committer.tx.max_capacity() {
                tokio::task::yield_now().await;
            }
            let outcome = committer.commit(vec![document_of(255, exchange_wire::Priority::Urgent)]).await.unwrap();
            order.lock().unwrap().push("urgent");
            outcome
        };
        let (r, u) = tokio::join!(routine, urgent);
        assert_eq!((r.len(), u), (250, vec![JobOutcome::Stored]));
        assert!(r.iter().all(|o| *o == JobOutcome::Stored), "every routine outcome, in one answer");
        assert_eq!(order.into_inner().unwrap(), ["urgent", "routine"]);
        assert_eq!(metrics.commits_ended_early.get(), 1);
        assert_eq!((metrics.commit_jobs.get_sample_count(), metrics.commit_jobs.get_sample_sum()), (3, 251.0), "one part, the urgent one, the rest");
        for n in (1..=250).chain([255]) {
            assert!(store.message(&[n; 32]).await.unwrap().is_some(), "document {n} is durable");
        }
    }

    /// A transaction may end every [`PART_JOBS`] jobs inside a request of custody jobs, but only
    /// after the whole of any other request.
    #[test]
    fn parts_end_inside_divisible_requests_only() {
        let request = |jobs: Vec<WriteJob>| Request::new(jobs, oneshot::channel().0);
        let documents = |k: usize| (0..k).map(|n| document(n as u8)).collect::<Vec<_>>();
        let tokens = |k: usize| (0..k).map(|n| token(&n.to_string())).collect::<Vec<_>>();
        const P: usize = PART_JOBS;
        assert_eq!(part_cuts(&[request(documents(P + P / 2)), request(documents(2 * P))]), [P, 2 * P, 3 * P]);
        assert_eq!(part_cuts(&[request(documents(P / 2)), request(tokens(3 * P)), request(documents(10))]), [P / 2 + 3 * P]);
        assert_eq!(part_cuts(&[request(tokens(P / 4)), request(documents(P / 4))]), Vec::<usize>::new());
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
