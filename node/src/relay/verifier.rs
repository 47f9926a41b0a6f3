//! Group verification: one task gathers the signature checks that requests have queued and runs them
//! as one ed25519 batch on the blocking pool. It is to signatures what group commit
//! (`relay/committer.rs`) is to fsync: a batch costs about half as much per signature as checking
//! one by one, and most requests bring one signature (an agency submits one document per request; a
//! neighbour's handover is often small), so only checks gathered across requests are batched at all.
//!
//! The task never waits for more work: when a place on the pool is free it takes what is queued (up
//! to a bound of signatures, [`MAX_SIGNATURES`]), so at light load a check starts at once and at
//! heavy load batches grow by themselves. At most a bounded number of batches run at once (one per
//! CPU, [`in_flight`]): signature checks cannot take every thread of the blocking pool, and while
//! all places are busy requests wait in the queue, where they join the next batch.
//!
//! Batching across requests changes no verdict. `verify_batch` judges each item as strict
//! verification does (an item it cannot judge so is checked alone), and when the batch equation
//! fails it checks every item one by one: a bad signature in one request refuses that item only,
//! never another request's. Checks marked [`Check::strict`] (receipts: see the door's `verify`), and
//! those with other than one key (a rotation in progress, or no valid key), are checked one by one,
//! strictly, in the same job after the batch.
//!
//! Two queues, as at the committer: requests with a 特急 or 加急 envelope ([`Check::is_urgent`]) wait
//! in their own, and whenever a place on the pool is free their checks go first, in a batch of
//! their own. Without it, a 特急 document reaching a busy relay waited behind every routine batch
//! already queued (43 ms at the city in a `bench --urgent-behind 50000` run).
//!
//! Stopping ([`Verifier::stop`], or the node's [`Tasks`] stopping, which runs the task) ends the
//! task: requests queued or sent later get [`Unfinished`], and their callers refuse them for now
//! (nothing was verified, so nothing was accepted); a batch already running finishes and answers. A
//! job that could not finish (it panicked, or was dropped before it started) drops its replies, with
//! the same result for its callers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ed25519_dalek::VerifyingKey;
use exchange_wire::envelope::verify_batch;
use exchange_wire::{EnvelopeError, SignedEnvelope};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::tasks::Tasks;

/// Most signatures one batch gathers from the queue (a single request larger than this is a batch
/// of its own). Past a few hundred the batch equation gains little per signature, and a failed
/// batch is checked again one by one, which a smaller batch bounds.
pub const MAX_SIGNATURES: usize = 256;

/// Batches on the blocking pool at once: one per CPU (at least one), as the work is CPU only.
pub fn in_flight() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One signature to check.
pub struct Check {
    pub signed: SignedEnvelope,
    /// The keys it may be signed with; none makes the check fail (the caller says why).
    pub keys: Vec<VerifyingKey>,
    /// Checked alone with strict verification, never in the batch (a check with other than one
    /// key always is).
    pub strict: bool,
}

impl Check {
    /// Whether it is the signature of a 特急 or 加急 envelope, checked ahead of routine ones.
    pub fn is_urgent(&self) -> bool {
        self.signed.envelope.priority.is_urgent()
    }
}

/// A check, back with its verdict.
pub type Checked = (Check, Result<(), EnvelopeError>);

/// The checks could not finish (the verifier stopped, or its job failed): nothing was verified.
#[derive(Debug, PartialEq)]
pub struct Unfinished;

struct Request {
    checks: Vec<Check>,
    reply: oneshot::Sender<Vec<Checked>>,
}

/// Handle to the verifier task (cheap to clone).
#[derive(Clone)]
pub struct Verifier {
    tx: mpsc::Sender<Request>,
    urgent_tx: mpsc::Sender<Request>,
    stop: CancellationToken,
    /// Batches formed so far (a batch gathers one or more requests).
    batches: Arc<AtomicU64>,
}

impl Verifier {
    /// Starts the task on `tasks`. A batch gathers up to `max_signatures` from the queue; up to
    /// `in_flight` batches run at once.
    pub fn spawn(tasks: &Tasks, max_signatures: usize, in_flight: usize) -> Verifier {
        let max_signatures = max_signatures.max(1);
        // Bounded: when the pool falls behind, callers wait here instead of piling up memory.
        let (tx, rx) = mpsc::channel::<Request>(max_signatures * 2);
        let (urgent_tx, urgent_rx) = mpsc::channel::<Request>(max_signatures * 2);
        let stop = CancellationToken::new();
        let batches = Arc::new(AtomicU64::new(0));
        let queues = Queues { routine: rx, urgent: urgent_rx };
        tasks.spawn(run(queues, stop.clone(), batches.clone(), max_signatures, in_flight.max(1)));
        Verifier { tx, urgent_tx, stop, batches }
    }

    /// Stops the task: what is queued, and every later request, is answered [`Unfinished`]; batches
    /// already on the pool finish and answer.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Checks `checks` (in one batch with whatever else is queued) and returns each with its
    /// verdict, in order. Checks of which any is urgent go through the urgent queue, ahead of
    /// routine ones.
    pub async fn verify(&self, checks: Vec<Check>) -> Result<Vec<Checked>, Unfinished> {
        if checks.is_empty() {
            return Ok(vec![]);
        }
        if self.stop.is_cancelled() {
            return Err(Unfinished);
        }
        let (reply, rx) = oneshot::channel();
        let queue = if checks.iter().any(Check::is_urgent) { &self.urgent_tx } else { &self.tx };
        queue.send(Request { checks, reply }).await.map_err(|_| Unfinished)?;
        rx.await.map_err(|_| Unfinished)
    }

    /// Batches formed so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

/// The two queues the task takes requests from.
struct Queues {
    routine: mpsc::Receiver<Request>,
    urgent: mpsc::Receiver<Request>,
}

/// The task: waits for a free place on the pool, takes what is queued (urgent requests first, and
/// alone), starts its batch.
async fn run(mut queues: Queues, stop: CancellationToken, batches: Arc<AtomicU64>, max_signatures: usize, in_flight: usize) {
    let mut jobs: JoinSet<()> = JoinSet::new();
    // A request taken from the queue that did not fit in the batch before: it starts the next.
    let mut carried: Option<Request> = None;
    loop {
        while jobs.len() >= in_flight {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(done) = jobs.join_next() => ended(done),
            }
        }
        if stop.is_cancelled() {
            break;
        }
        let first = match carried.take() {
            Some(r) => r,
            None => tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                    ended(done);
                    continue;
                }
                // Both senders live in every handle, so the queues close together.
                r = queues.urgent.recv() => match r {
                    Some(r) => r,
                    None => break,
                },
                r = queues.routine.recv() => match r {
                    Some(r) => r,
                    None => break,
                },
            },
        };
        // A batch gathers from the queue its first request came from: urgent checks never wait
        // for a batch of routine ones.
        let queue = if first.checks.iter().any(Check::is_urgent) { &mut queues.urgent } else { &mut queues.routine };
        let mut n = first.checks.len();
        let mut batch = vec![first];
        while n < max_signatures {
            match queue.try_recv() {
                Ok(r) if n + r.checks.len() > max_signatures => {
                    carried = Some(r);
                    break;
                }
                Ok(r) => {
                    n += r.checks.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        batches.fetch_add(1, Ordering::Relaxed);
        jobs.spawn_blocking(move || check(batch));
    }
    // Stopped: the queued requests (and `carried`) are dropped with their replies, so their callers
    // get `Unfinished`; the batches on the pool run to the end and answer.
    jobs.detach_all();
}

/// A job that ended: one that panicked has dropped its replies (its callers refuse for now).
fn ended(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "signature checks did not finish; their requests are refused for now");
    }
}

/// One batch over the batchable checks of all `requests`, then the others one by one; each request
/// is answered with its own checks and verdicts, in order.
fn check(requests: Vec<Request>) {
    let verdicts: Vec<Result<(), EnvelopeError>> = {
        let all: Vec<&Check> = requests.iter().flat_map(|r| &r.checks).collect();
        let batchable: Vec<usize> = (0..all.len()).filter(|&i| !all[i].strict && all[i].keys.len() == 1).collect();
        let refs: Vec<(&SignedEnvelope, &VerifyingKey)> = batchable.iter().map(|&i| (&all[i].signed, &all[i].keys[0])).collect();
        let mut out: Vec<Option<Result<(), EnvelopeError>>> = vec![None; all.len()];
        for (&i, r) in batchable.iter().zip(verify_batch(&refs)) {
            out[i] = Some(r);
        }
        out.into_iter()
            .zip(&all)
            .map(|(r, c)| r.unwrap_or_else(|| c.keys.iter().find_map(|k| c.signed.verify(k).ok()).ok_or(EnvelopeError::BadSignature)))
            .collect()
    };
    let mut verdicts = verdicts.into_iter();
    for r in requests {
        // `zip` takes from the checks first, so it stops at the request's last without taking a
        // verdict of the next request.
        let mine: Vec<Checked> = r.checks.into_iter().zip(verdicts.by_ref()).collect();
        let _ = r.reply.send(mine);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::test_key;
    use exchange_wire::{Envelope, Kind, Priority, UnitAddress};

    /// A routine document from 六榕街道 signed with key `seed`, `n` making it unique.
    fn signed(seed: u8, n: u8) -> SignedEnvelope {
        signed_as(seed, n, Priority::Routine)
    }

    fn signed_as(seed: u8, n: u8, priority: Priority) -> SignedEnvelope {
        let u = |s: &str| s.parse::<UnitAddress>().unwrap();
        Envelope::new(Kind::Document, u("gz.yuexiu/liurong-street"), vec![u("gz.haizhu/civil-affairs")], vec![], priority, &[n])
            .sign(&test_key(seed))
    }

    /// Signed with key 7 and checked against key 7 (`good`) or key 8 (not).
    fn check(n: u8, good: bool) -> Check {
        Check { signed: signed(7, n), keys: vec![test_key(if good { 7 } else { 8 }).verifying_key()], strict: false }
    }

    fn verdicts(r: Result<Vec<Checked>, Unfinished>) -> Vec<Result<(), EnvelopeError>> {
        r.expect("verified").into_iter().map(|(_, v)| v).collect()
    }

    /// Requests queued together are checked in one batch, each answered with its own checks in
    /// order. (The test runs on one thread: the requests are all queued before the task first
    /// runs.)
    #[tokio::test]
    async fn requests_queued_together_share_one_batch() {
        let tasks = Tasks::new();
        let verifier = Verifier::spawn(&tasks, MAX_SIGNATURES, 1);
        let two = vec![check(2, true), check(3, true)];
        let ids: Vec<_> = two.iter().map(|c| c.signed.id).collect();
        let (a, b, c) = tokio::join!(verifier.verify(vec![check(1, true)]), verifier.verify(two), verifier.verify(vec![check(4, true)]));
        assert_eq!(verifier.batches(), 1, "three requests, one batch");
        let b = b.unwrap();
        assert_eq!(b.iter().map(|(c, _)| c.signed.id).collect::<Vec<_>>(), ids, "its own checks, in order");
        assert!(b.iter().all(|(_, v)| v.is_ok()));
        assert_eq!(verdicts(a), [Ok(())]);
        assert_eq!(verdicts(c), [Ok(())]);

        // Bounded by signatures: 2 per batch makes three batches of the four signatures queued
        // (the request of two does not fit beside the first, so it starts the next batch).
        let verifier = Verifier::spawn(&tasks, 2, 1);
        let (a, b, c) = tokio::join!(
            verifier.verify(vec![check(1, true)]),
            verifier.verify(vec![check(2, true), check(3, true)]),
            verifier.verify(vec![check(4, true)]),
        );
        assert_eq!(verifier.batches(), 3);
        assert_eq!((verdicts(a), verdicts(b), verdicts(c)), (vec![Ok(())], vec![Ok(()), Ok(())], vec![Ok(())]));
        tasks.stop(std::time::Duration::from_secs(5)).await;
    }

    /// An urgent request queued behind routine ones is checked first, in a batch of its own, while
    /// one place on the pool is free. (One thread: all three are queued before the task runs.)
    #[tokio::test]
    async fn urgent_checks_go_first_and_alone() {
        let tasks = Tasks::new();
        let verifier = Verifier::spawn(&tasks, MAX_SIGNATURES, 1);
        let order = std::sync::Mutex::new(Vec::new());
        let answered = |name: &'static str, r: Result<Vec<Checked>, Unfinished>| {
            assert!(verdicts(r).iter().all(Result::is_ok));
            order.lock().unwrap().push(name);
        };
        let urgent = |n, p| Check { signed: signed_as(7, n, p), keys: vec![test_key(7).verifying_key()], strict: false };
        tokio::join!(
            async { answered("routine 1", verifier.verify(vec![check(1, true), check(2, true)]).await) },
            async { answered("routine 2", verifier.verify(vec![check(3, true)]).await) },
            async { answered("特急", verifier.verify(vec![urgent(4, Priority::Urgent)]).await) },
        );
        let order = order.into_inner().unwrap();
        assert_eq!(order[0], "特急", "answered first: {order:?}");
        assert_eq!(verifier.batches(), 2, "the urgent check alone, then both routine requests together");
        assert!(urgent(5, Priority::Express).is_urgent(), "加急 counts as urgent");
        assert!(!check(6, true).is_urgent());
        tasks.stop(std::time::Duration::from_secs(5)).await;
    }

    /// One bad signature in request A refuses that item only: A's other items and every item of
    /// request B, checked in the same batch, are accepted.
    #[tokio::test]
    async fn a_bad_signature_refuses_its_own_item_only() {
        let tasks = Tasks::new();
        let verifier = Verifier::spawn(&tasks, MAX_SIGNATURES, 2);
        let (a, b) = tokio::join!(
            verifier.verify(vec![check(1, true), check(2, false), check(3, true)]),
            verifier.verify(vec![check(4, true), check(5, true), check(6, true)]),
        );
        assert_eq!(verifier.batches(), 1, "both requests in one batch");
        assert_eq!(verdicts(a), [Ok(()), Err(EnvelopeError::BadSignature), Ok(())]);
        assert_eq!(verdicts(b), [Ok(()), Ok(()), Ok(())], "the other request is all accepted");
        tasks.stop(std::time::Duration::from_secs(5)).await;
    }

    /// Strict checks and checks with several keys or none are checked one by one, with the same
    /// verdicts as the batch would give them.
    #[tokio::test]
    async fn strict_and_several_keys_are_checked_alone() {
        let tasks = Tasks::new();
        let verifier = Verifier::spawn(&tasks, MAX_SIGNATURES, 1);
        let keys = |seeds: &[u8]| seeds.iter().map(|&s| test_key(s).verifying_key()).collect::<Vec<_>>();
        let got = verifier
            .verify(vec![
                Check { signed: signed(7, 1), keys: keys(&[7]), strict: true },
                Check { signed: signed(7, 2), keys: keys(&[8, 7]), strict: false },
                Check { signed: signed(7, 3), keys: keys(&[8, 9]), strict: false },
                Check { signed: signed(7, 4), keys: vec![], strict: false },
                check(5, true),
            ])
            .await;
        assert_eq!(verdicts(got), [Ok(()), Ok(()), Err(EnvelopeError::BadSignature), Err(EnvelopeError::BadSignature), Ok(())]);
        tasks.stop(std::time::Duration::from_secs(5)).await;
    }

    /// A stopped verifier answers `Unfinished`, whether the request was queued before the stop or
    /// sent after it; so does one whose task the node's tasks stopped. Nothing panics.
    #[tokio::test]
    async fn a_stopped_verifier_answers_unfinished() {
        let tasks = Tasks::new();
        let verifier = Verifier::spawn(&tasks, MAX_SIGNATURES, 1);
        let urgent = Check { signed: signed_as(7, 9, Priority::Urgent), keys: vec![test_key(7).verifying_key()], strict: false };
        let (queued, urgent_queued, ()) = tokio::join!(verifier.verify(vec![check(1, true)]), verifier.verify(vec![urgent]), async { verifier.stop() });
        assert_eq!(queued.err(), Some(Unfinished), "queued before the stop");
        assert_eq!(urgent_queued.err(), Some(Unfinished), "queued in the urgent queue before the stop");
        assert_eq!(verifier.verify(vec![check(2, true)]).await.err(), Some(Unfinished), "sent after it");

        let verifier = Verifier::spawn(&tasks, MAX_SIGNATURES, 1);
        assert_eq!(verdicts(verifier.verify(vec![check(3, true)]).await), [Ok(())]);
        assert_eq!(tasks.stop(std::time::Duration::from_secs(5)).await, 0);
        assert_eq!(verifier.verify(vec![check(4, true)]).await.err(), Some(Unfinished), "after the node's tasks stopped");
        let late = Verifier::spawn(&tasks, MAX_SIGNATURES, 1);
        assert_eq!(late.verify(vec![check(5, true)]).await.err(), Some(Unfinished), "started after the tasks stopped: never runs");
    }
}
