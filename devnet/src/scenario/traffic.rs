//! The scenario's traffic: senders of documents, recipients who read, verify, sign for and answer,
//! and askers of queries, each a thread; [`Traffic`] owns them and stops them in order.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use exchange_wire::api::SignForResult;
use exchange_wire::document::Attachment;
use exchange_wire::receipt::signed_for;
use exchange_wire::{Envelope, Kind, MessageId, Priority, UnitAddress};

use super::{Actor, Keys, PRIORITIES, Sent, Shared};

/// The running threads of the traffic.
pub(super) struct Traffic {
    stop_sending: Arc<AtomicBool>,
    stop_reading: Arc<AtomicBool>,
    attachments: Arc<AtomicU64>,
    senders: Vec<JoinHandle<()>>,
    readers: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Starts a reader per recipient, a sender per sender (each going round the other nodes'
    /// recipients, `rate` documents per second in all) and one thread asking the askers' queries.
    pub(super) fn start(
        senders: Vec<Actor>,
        recipients: Vec<Actor>,
        askers: Vec<(Actor, UnitAddress)>,
        rate: f64,
        folder: PathBuf,
        ledger: &Shared,
        keys: &Keys,
    ) -> Traffic {
        let stop_sending = Arc::new(AtomicBool::new(false));
        let stop_reading = Arc::new(AtomicBool::new(false));
        let attachments = Arc::new(AtomicU64::new(0));
        let recipient_units: Vec<UnitAddress> = recipients.iter().map(|a| a.unit.clone()).collect();
        let readers = recipients
            .into_iter()
            .map(|r| {
                let (ledger, stop, keys) = (ledger.clone(), stop_reading.clone(), keys.clone());
                std::thread::spawn(move || read_inbox(r, ledger, stop, keys))
            })
            .collect();
        let per_sender = rate / senders.len().max(1) as f64;
        let mut threads: Vec<JoinHandle<()>> = senders
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let (ledger, stop, atts, folder) = (ledger.clone(), stop_sending.clone(), attachments.clone(), folder.clone());
                let n = recipient_units.len();
                let targets: Vec<UnitAddress> = (1..n).map(|k| recipient_units[(i + k) % n].clone()).collect();
                std::thread::spawn(move || send_documents(s, targets, per_sender, ledger, stop, atts, folder))
            })
            .collect();
        let (l, stop) = (ledger.clone(), stop_sending.clone());
        threads.push(std::thread::spawn(move || ask_queries(askers, l, stop)));
        Traffic { stop_sending, stop_reading, attachments, senders: threads, readers }
    }

    /// Stops submitting (each sender finishes its round first); returns how many documents carried
    /// an attachment.
    pub(super) fn stop_sending(&mut self) -> anyhow::Result<u64> {
        self.stop_sending.store(true, Ordering::SeqCst);
        for t in self.senders.drain(..) {
            t.join().map_err(|_| anyhow::anyhow!("a sender thread panicked"))?;
        }
        Ok(self.attachments.load(Ordering::SeqCst))
    }

    /// Stops the readers (after the reconciliation, or when it failed).
    pub(super) fn stop_reading(&mut self) -> anyhow::Result<()> {
        self.stop_sending.store(true, Ordering::SeqCst);
        self.stop_reading.store(true, Ordering::SeqCst);
        for t in self.senders.drain(..).chain(self.readers.drain(..)) {
            t.join().map_err(|_| anyhow::anyhow!("a traffic thread panicked"))?;
        }
        Ok(())
    }
}

/// A sender: documents round the other nodes' recipients, paced to `rate` per second.
pub(super) fn send_documents(
    s: Actor,
    targets: Vec<UnitAddress>,
    rate: f64,
    ledger: Shared,
    stop: Arc<AtomicBool>,
    attachments: Arc<AtomicU64>,
    folder: PathBuf,
) {
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.01));
    let begin = Instant::now();
    let mut n = 0usize;
    // Once round the other nodes at least, however short the run: every ordered pair carries documents.
    while n < targets.len() || !stop.load(Ordering::SeqCst) {
        let due = begin + interval * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait.min(Duration::from_millis(200)));
            continue;
        }
        let recipient = targets[n % targets.len()].clone();
        let priority = PRIORITIES[(n / targets.len() + n) % 3];
        let with_attachment = n % 5 == 4;
        match send_one(&s, &recipient, priority, n, with_attachment.then_some(&folder)) {
            Ok(sent) => {
                if with_attachment {
                    attachments.fetch_add(1, Ordering::SeqCst);
                }
                ledger.lock().expect("ledger").sent.insert(sent.0, sent.1);
            }
            Err(e) => ledger.lock().expect("ledger").errors.push(format!("{} -> {recipient}: {e:#}", s.unit)),
        }
        n += 1;
    }
}

/// Signs and submits one document (with an attachment written under `attachment_in`, if given),
/// retrying transport errors with the same signed bytes (the node recognises a repeat).
pub(super) fn send_one(
    s: &Actor,
    recipient: &UnitAddress,
    priority: Priority,
    n: usize,
    attachment_in: Option<&PathBuf>,
) -> anyhow::Result<(MessageId, Sent)> {
    let payload = format!("{} 第{n}号 致 {recipient}：关于做好城市运行保障工作的通知（演练）。\n", s.unit).repeat(8).into_bytes();
    let mut envelope = Envelope::new(Kind::Document, s.unit.clone(), vec![recipient.clone()], vec![], priority, &payload);
    envelope.metadata.insert("title".into(), format!("城市运行保障演练通知 {n}"));
    envelope.metadata.insert("doc-number".into(), format!("穗演〔2026〕{n}号"));
    let attachment = match attachment_in {
        Some(folder) => {
            std::fs::create_dir_all(folder)?;
            let path = folder.join(format!("{}-{n}.pdf", s.unit.as_str().replace('/', "_")));
            let body: Vec<u8> = (0..256 * 1024 + n).map(|i| (i as u8) ^ (n as u8).wrapping_mul(17)).collect();
            std::fs::write(&path, body)?;
            let a = Attachment::of_file(&path, "application/pdf")?;
            a.describe(1, &mut envelope.metadata);
            Some((path, a))
        }
        None => None,
    };
    let signed = envelope.sign(&s.key);
    let at = Instant::now();
    retry(|| {
        if let Some((path, a)) = &attachment {
            s.client.upload_attachment(path, a)?;
        }
        s.client.submit(&signed, &payload)
    })?;
    if let Some((path, _)) = attachment {
        let _ = std::fs::remove_file(path);
    }
    let attachment = attachment_in.is_some();
    Ok((signed.id, Sent { sender: s.unit.clone(), recipient: recipient.clone(), priority, attachment, at }))
}

/// Calls `f` until it succeeds, a node refuses (an error), or 30 s of transport errors passed.
pub(super) fn retry<T>(mut f: impl FnMut() -> Result<T, exchange_wire::client::ClientError>) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(exchange_wire::client::ClientError::Transport { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A recipient: long-polls its inbox, checks every document's signature and signs for each page.
pub(super) fn read_inbox(r: Actor, ledger: Shared, stop: Arc<AtomicBool>, keys: Keys) {
    let mut after = 0;
    while !stop.load(Ordering::SeqCst) {
        let page = match r.client.inbox(&r.unit, after, 100, Duration::from_millis(500)) {
            Ok(p) => p,
            Err(exchange_wire::client::ClientError::Transport { .. }) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => {
                ledger.lock().expect("ledger").errors.push(format!("inbox of {}: {e}", r.unit));
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        after = page.next_after;
        let seen = Instant::now();
        let mut receipts = Vec::new();
        for item in page.items {
            // Not a document (a query, answered here, or a sharing item): no receipt, not counted.
            let mut not_a_document = false;
            let problem = (|| -> anyhow::Result<()> {
                let (got, _) = item.message.decode().context("does not decode")?;
                if !matches!(got.envelope.kind, Kind::Document | Kind::Query) {
                    // Subscription requests and node-signed decisions: the base-data part's business.
                    not_a_document = true;
                    return Ok(());
                }
                let key = keys.lock().expect("keys").get(&got.envelope.sender).map(|k| k.verifying_key());
                let key = key.with_context(|| format!("from unknown sender {}", got.envelope.sender))?;
                got.verify(&key).context("sender's signature does not verify")?;
                if got.envelope.kind == Kind::Query {
                    // 查询核验: the asked unit's system answers from its inbox, signed with its key.
                    not_a_document = true;
                    let body = br#"{"alive":true}"#;
                    let answer = exchange_wire::query::answer(r.unit.clone(), got.envelope.sender.clone(), item.id, body).sign(&r.key);
                    retry(|| r.client.answer(&r.unit, &item.id, &answer, body))?;
                    ledger.lock().expect("ledger").answered.insert(item.id, Instant::now());
                    return Ok(());
                }
                receipts.push(signed_for(r.unit.clone(), got.envelope.sender.clone(), item.id, got.envelope.priority).sign(&r.key));
                Ok(())
            })();
            if not_a_document && problem.is_ok() {
                continue;
            }
            let mut l = ledger.lock().expect("ledger");
            match (problem, l.sent.get(&item.id).map(|s| s.recipient == r.unit)) {
                (Err(e), _) => l.errors.push(format!("{} in the inbox of {}: {e:#}", item.id, r.unit)),
                (Ok(()), Some(false)) => l.strangers.push(format!("{} in the inbox of {}", item.id, r.unit)),
                // Ours (or, if not yet recorded, checked against the ledger when reconciling).
                (Ok(()), _) => l.delivered.entry(item.id).or_insert((0, seen)).0 += 1,
            }
        }
        if receipts.is_empty() {
            continue;
        }
        match retry(|| r.client.sign_for_batch(&r.unit, &receipts)) {
            Ok(answer) => {
                for result in answer.results {
                    if let SignForResult::Refused(e) = result {
                        ledger.lock().expect("ledger").errors.push(format!("sign-for at {} refused: {} {}", r.unit, e.error, e.message));
                    }
                }
            }
            Err(e) => ledger.lock().expect("ledger").errors.push(format!("sign-for at {}: {e:#}", r.unit)),
        }
    }
}

/// Asks one query per second, round the (asker, asked) pairs, until `stop`.
pub(super) fn ask_queries(askers: Vec<(Actor, UnitAddress)>, ledger: Shared, stop: Arc<AtomicBool>) {
    let mut n = 0usize;
    while !askers.is_empty() && !stop.load(Ordering::SeqCst) {
        let (asker, asked) = &askers[n % askers.len()];
        let body = format!(r#"{{"id_number":"4401{:014}"}}"#, n);
        let deadline = exchange_wire::now_ms() + 60_000;
        let query = exchange_wire::query::question(asker.unit.clone(), asked.clone(), "person.alive", deadline, body.as_bytes()).sign(&asker.key);
        let at = Instant::now();
        match retry(|| asker.client.ask(&query, body.as_bytes())) {
            Ok(_) => {
                ledger.lock().expect("ledger").queries.insert(query.id, (asker.unit.clone(), at));
            }
            Err(e) => ledger.lock().expect("ledger").errors.push(format!("{} asks {asked}: {e:#}", asker.unit)),
        }
        n += 1;
        let next = at + Duration::from_secs(1);
        while !stop.load(Ordering::SeqCst) && Instant::now() < next {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

