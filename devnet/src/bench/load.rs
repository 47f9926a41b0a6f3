//! The agencies' side of the benchmark: the documents signed in advance (who sends what to whom),
//! and the threads of the timed phase that submit them in batches, read the 海珠 inboxes and sign
//! for (签收) what they read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ed25519_dalek::SigningKey;
use exchange_wire::api::{BatchItemResult, SignForResult, SignedMessage};
use exchange_wire::client::{ApiClient, ClientError};
use exchange_wire::receipt::signed_for;
use exchange_wire::{MessageId, SignedEnvelope, UnitAddress};

use super::{BenchArgs, EGRESS, INGRESS, Run, benchmark_document, make_payload, units_of};
use crate::launcher::LocalNetwork;

/// Who sends and who receives what.
pub(super) struct Plan {
    pub(super) senders: Vec<UnitAddress>,
    /// Each unit's API token, by position in `senders` / `recipients`.
    sender_tokens: Vec<String>,
    pub(super) recipients: Vec<UnitAddress>,
    recipient_tokens: Vec<String>,
    recipient_keys: Vec<SigningKey>,
    /// Pre-signed envelopes, index = message number; payloads are regenerated from the index.
    signed: Vec<SignedEnvelope>,
    index: HashMap<MessageId, u32>,
    /// How long the agencies took to sign them all.
    pub(super) signing_s: f64,
}

impl Plan {
    /// Step 3: the agencies sign every document in advance (not timed with the nodes). Each batch
    /// comes from one sender unit (an agency system batches its own documents), the batches
    /// round-robin over the 越秀 units; recipients round-robin over the 海珠 units.
    pub(super) fn sign(net: &LocalNetwork, args: &BenchArgs) -> anyhow::Result<Plan> {
        let n = args.messages;
        let senders = units_of(net, INGRESS);
        let recipients = units_of(net, EGRESS);
        if senders.is_empty() || recipients.is_empty() {
            bail!("the topology has no units at {INGRESS} or {EGRESS}");
        }
        let recipients: Vec<UnitAddress> = recipients.into_iter().take(n).collect();
        let recipient_keys = recipients.iter().map(|u| net.unit_keys[u].clone()).collect();
        let sign_started = Instant::now();
        let mut signed = Vec::with_capacity(n);
        for i in 0..n {
            let (s, r) = (&senders[(i / args.batch) % senders.len()], &recipients[i % recipients.len()]);
            let payload = make_payload(i, args.size);
            let mut e = benchmark_document(i, s, r, &payload);
            e.metadata.insert("doc-number".into(), format!("bench〔{}〕{i}号", e.created_at_ms));
            signed.push(e.sign(&net.unit_keys[s]));
        }
        let signing_s = sign_started.elapsed().as_secs_f64();
        let index: HashMap<MessageId, u32> = signed.iter().enumerate().map(|(i, s)| (s.id, i as u32)).collect();
        if index.len() != n {
            bail!("two pre-signed messages have the same id; the benchmark's messages must differ");
        }
        println!(
            "\n== Agencies pre-signed {n} documents in {:.2} s ({:.1} µs each, payload generation and digest included; not timed below)",
            signing_s,
            signing_s * 1e6 / n as f64
        );
        let token = |u: &UnitAddress| net.unit_tokens.get(u).cloned().with_context(|| format!("no API token for {u}"));
        let sender_tokens = senders.iter().map(token).collect::<anyhow::Result<_>>()?;
        let recipient_tokens = recipients.iter().map(token).collect::<anyhow::Result<_>>()?;
        Ok(Plan { senders, sender_tokens, recipients, recipient_tokens, recipient_keys, signed, index, signing_s })
    }

    fn recipient_of(&self, i: usize) -> usize {
        i % self.recipients.len()
    }
}

/// State shared by the benchmark's threads. Times are nanoseconds after `t0`, plus one (0 = not yet).
pub(super) struct Shared {
    run: Run,
    pub(super) submit_ns: Vec<AtomicU64>,
    pub(super) recv_ns: Vec<AtomicU64>,
    recv_count: Vec<AtomicU32>,
    pub(super) delivered: AtomicUsize,
    pub(super) duplicates: AtomicU64,
    pub(super) unexpected: AtomicU64,
    pub(super) receipts_posted: AtomicUsize,
    pub(super) submit_retries: AtomicU64,
    pub(super) poll_retries: AtomicU64,
    pub(super) sign_for_retries: AtomicU64,
    pub(super) senders_done_ns: AtomicU64,
}

impl Shared {
    pub(super) fn new(n: usize) -> Shared {
        Shared {
            run: Run::new(),
            submit_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            recv_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            recv_count: (0..n).map(|_| AtomicU32::new(0)).collect(),
            delivered: AtomicUsize::new(0),
            duplicates: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            receipts_posted: AtomicUsize::new(0),
            submit_retries: AtomicU64::new(0),
            poll_retries: AtomicU64::new(0),
            sign_for_retries: AtomicU64::new(0),
            senders_done_ns: AtomicU64::new(0),
        }
    }
}

impl std::ops::Deref for Shared {
    type Target = Run;
    fn deref(&self) -> &Run {
        &self.run
    }
}

/// Retries `f` on transport errors and transient refusals (status 503), up to `attempts` times.
fn with_retries<T>(shared: &Shared, counter: &AtomicU64, attempts: u32, mut f: impl FnMut(u32) -> Result<T, ClientError>) -> Result<T, ClientError> {
    let mut attempt = 0;
    loop {
        match f(attempt) {
            Ok(v) => return Ok(v),
            Err(e) => {
                let transient = matches!(&e, ClientError::Transport { .. } | ClientError::Refused { status: 503, .. });
                attempt += 1;
                if !transient || attempt >= attempts || shared.stopped() {
                    return Err(e);
                }
                counter.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn sender_thread(shared: Arc<Shared>, plan: Arc<Plan>, client: ApiClient, next_batch: Arc<AtomicUsize>, args: BenchArgs) {
    let n = plan.signed.len();
    loop {
        if shared.stopped() {
            return;
        }
        let b = next_batch.fetch_add(1, Ordering::SeqCst);
        let start = b * args.batch;
        if start >= n {
            return;
        }
        let end = (start + args.batch).min(n);
        let scheduled = args.rate.map(|r| Duration::from_secs_f64(start as f64 / r));
        if let Some(due) = scheduled {
            let wait = due.saturating_sub(shared.t0.elapsed());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        let build = || -> Vec<SignedMessage> { (start..end).map(|i| SignedMessage::new(&plan.signed[i], &make_payload(i, args.size))).collect() };
        let client = client.clone().with_token(plan.sender_tokens[b % plan.sender_tokens.len()].clone());
        let messages = build();
        // Open loop: count from the scheduled time, so falling behind shows as latency.
        let at = match scheduled {
            Some(due) => due.as_nanos() as u64 + 1,
            None => shared.now_ns(),
        };
        for i in start..end {
            shared.submit_ns[i].store(at, Ordering::Relaxed);
        }
        let mut first = Some(messages);
        let mut tries = 0u32;
        let result = with_retries(&shared, &shared.submit_retries, 20, |_| {
            tries += 1;
            client.submit_batch(first.take().unwrap_or_else(build))
        });
        match result {
            Ok(resp) if resp.results.len() == end - start => {
                for (i, r) in (start..end).zip(resp.results) {
                    match r {
                        // A retried batch may have been stored the first time: then duplicate is right.
                        BatchItemResult::Accepted(a) if a.duplicate && tries == 1 => {
                            shared.fail(format!("message {i}: {INGRESS} called a fresh message a duplicate"))
                        }
                        BatchItemResult::Accepted(a) if a.id == plan.signed[i].id => {}
                        BatchItemResult::Accepted(a) => {
                            shared.fail(format!("message {i}: the node answered with id {} instead of {}", a.id, plan.signed[i].id))
                        }
                        BatchItemResult::Refused(e) => {
                            shared.fail(format!("message {i} refused by {INGRESS}: {} ({})", e.message, e.error))
                        }
                    }
                }
            }
            Ok(resp) => shared.fail(format!("a batch of {} got {} results", end - start, resp.results.len())),
            Err(e) => shared.fail(format!("submitting a batch to {INGRESS} failed: {e}")),
        }
        shared.senders_done_ns.fetch_max(shared.now_ns(), Ordering::SeqCst);
    }
}

fn receiver_thread(shared: Arc<Shared>, plan: Arc<Plan>, client: ApiClient, r: usize, sign_for: bool) {
    let unit = &plan.recipients[r];
    let mut after = 0i64;
    let mut last_round = false;
    loop {
        if shared.stopped() {
            // One last look, without waiting, for anything delivered twice late.
            if last_round {
                return;
            }
            last_round = true;
        }
        let wait = if last_round { Duration::ZERO } else { Duration::from_millis(500) };
        let page = match with_retries(&shared, &shared.poll_retries, 20, |_| client.inbox(unit, after, 1000, wait)) {
            Ok(p) => p,
            Err(e) => {
                shared.fail(format!("reading the inbox of {unit} failed: {e}"));
                return;
            }
        };
        let now = shared.now_ns();
        after = page.next_after;
        let mut to_sign = Vec::with_capacity(page.items.len());
        for item in page.items {
            let Some(&i) = plan.index.get(&item.id) else {
                shared.unexpected.fetch_add(1, Ordering::Relaxed);
                shared.fail(format!("an unexpected message {} arrived in the inbox of {unit}", item.id));
                continue;
            };
            let i = i as usize;
            if shared.recv_count[i].fetch_add(1, Ordering::SeqCst) > 0 {
                shared.duplicates.fetch_add(1, Ordering::Relaxed);
                shared.fail(format!("message {i} ({}) was delivered more than once (seen again in {unit})", item.id));
                continue;
            }
            shared.recv_ns[i].store(now, Ordering::Relaxed);
            if plan.recipient_of(i) != r {
                shared.fail(format!("message {i} arrived in the inbox of {unit}, not of {}", plan.recipients[plan.recipient_of(i)]));
            }
            // What a recipient's system checks: the payload is the one the sender signed over.
            match item.message.decode() {
                Ok((got, payload)) if got.id == item.id && payload.len() == plan.signed[i].envelope.payload_size as usize => {}
                Ok(_) => shared.fail(format!("message {i} arrived with a different envelope or payload")),
                Err(e) => shared.fail(format!("message {i} arrived altered: {e}")),
            }
            shared.delivered.fetch_add(1, Ordering::SeqCst);
            to_sign.push(i);
        }
        if sign_for && !to_sign.is_empty() && !shared.stopped() {
            sign_page(&shared, &plan, &client, r, &to_sign);
        }
    }
}

/// Signs for one page of an inbox in one request, as a recipient's system does after reading it: each
/// receipt signed with the recipient's own key.
fn sign_page(shared: &Shared, plan: &Plan, client: &ApiClient, r: usize, indices: &[usize]) {
    let recipient = &plan.recipients[r];
    let receipts: Vec<_> = indices
        .iter()
        .map(|&i| {
            let signed = &plan.signed[i];
            signed_for(recipient.clone(), signed.envelope.sender.clone(), signed.id, signed.envelope.priority).sign(&plan.recipient_keys[r])
        })
        .collect();
    match with_retries(shared, &shared.sign_for_retries, 20, |_| client.sign_for_batch(recipient, &receipts)) {
        Ok(resp) if resp.results.len() == indices.len() => {
            for (res, &i) in resp.results.iter().zip(indices) {
                match res {
                    SignForResult::SignedFor(ok) if ok.message_id == plan.signed[i].id => {
                        shared.receipts_posted.fetch_add(1, Ordering::SeqCst);
                    }
                    SignForResult::SignedFor(_) => shared.fail(format!("signing for message {i} answered about another message")),
                    SignForResult::Refused(e) => shared.fail(format!("signing for message {i} refused: {}: {}", e.error, e.message)),
                }
            }
        }
        Ok(resp) => shared.fail(format!("{} results for {} receipts", resp.results.len(), indices.len())),
        Err(e) => shared.fail(format!("signing for {} messages at {EGRESS} failed: {e}", indices.len())),
    }
}

/// The agencies' threads of the timed phase: one receiver per 海珠 unit (started first), then
/// `--senders` senders sharing the batches.
pub(super) struct Load {
    receivers: Vec<JoinHandle<()>>,
    senders: Vec<JoinHandle<()>>,
}

impl Load {
    pub(super) fn start(shared: &Arc<Shared>, plan: &Arc<Plan>, ingress: &ApiClient, egress: &ApiClient, args: &BenchArgs) -> Load {
        let sign_for = args.sign_for();
        let mut receivers = Vec::new();
        for r in 0..plan.recipients.len() {
            let (s, p, c) = (shared.clone(), plan.clone(), ApiClient::new(egress.base_url()).with_token(plan.recipient_tokens[r].clone()));
            receivers.push(std::thread::spawn(move || receiver_thread(s, p, c, r, sign_for)));
        }
        let next_batch = Arc::new(AtomicUsize::new(0));
        let mut senders = Vec::new();
        for _ in 0..args.senders {
            let (s, p, c, nb, a) = (shared.clone(), plan.clone(), ingress.clone(), next_batch.clone(), args.clone());
            senders.push(std::thread::spawn(move || sender_thread(s, p, c, nb, a)));
        }
        Load { receivers, senders }
    }

    /// After the timed phase: waits for the senders, then stops the receivers after their last look.
    pub(super) fn wind_down(self, shared: &Shared) {
        for t in self.senders {
            let _ = t.join();
        }
        // Let anything delivered twice show up before the receivers take their last look.
        std::thread::sleep(Duration::from_millis(300));
        shared.stop.store(true, Ordering::SeqCst);
        for t in self.receivers {
            let _ = t.join();
        }
    }
}
