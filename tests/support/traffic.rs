//! A steady stream of documents for fault tests, and the reconciliation every fault test ends with:
//! every document whose submission was acknowledged (2xx) is in each recipient's inbox exactly
//! once, and its signed receipt is back at the sender's node.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use exchange_devnet::launcher::LocalNetwork;
use exchange_wire::api::RecipientState;
use exchange_wire::{MessageId, UnitAddress};

use crate::{document, read_inbox, short, wait_for};

/// What a stream sent: the acknowledged documents (with their sender and recipient), and how often
/// each refusal code was answered.
#[derive(Debug, Default, Clone)]
pub struct Sent {
    pub accepted: Vec<(MessageId, UnitAddress, UnitAddress)>,
    pub refused: BTreeMap<String, usize>,
    /// Messages of refusals, one example per code.
    pub refusal_examples: BTreeMap<String, String>,
    /// Submissions whose answer never came (node unreachable): not acknowledged, so not owed.
    pub unanswered: usize,
}

/// Documents submitted one at a time at about `rate` per second from `senders` to `recipients`
/// (round robin), on a background thread, until [`Stream::finish`].
pub struct Stream {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Sent>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Stream {
    pub fn start(net: &LocalNetwork, senders: &[UnitAddress], recipients: &[UnitAddress], rate: u32, label: &str) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Sent::default()));
        let clients: Vec<(UnitAddress, SigningKey, exchange_wire::client::ApiClient)> =
            senders.iter().map(|s| (s.clone(), net.unit_keys[s].clone(), net.client_for(s))).collect();
        let recipients = recipients.to_vec();
        let (flag, log, label) = (stop.clone(), sent.clone(), label.to_string());
        let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut i = 0usize;
            while !flag.load(Ordering::Relaxed) {
                let (from, key, client) = &clients[i % clients.len()];
                let to = &recipients[i % recipients.len()];
                let payload = format!("{label} 第{i}号文件").into_bytes();
                let doc = document(key, from.as_str(), &[to.as_str()], &[], &payload, &format!("{label} {i}"));
                let answer = client.submit(&doc, &payload);
                let mut s = log.lock().unwrap();
                match answer {
                    Ok(_) => s.accepted.push((doc.id, from.clone(), to.clone())),
                    Err(e) => match e.code() {
                        Some(code) => {
                            *s.refused.entry(code.to_string()).or_default() += 1;
                            s.refusal_examples.entry(code.to_string()).or_insert_with(|| e.to_string());
                        }
                        None => s.unanswered += 1,
                    },
                }
                drop(s);
                i += 1;
                // Paced against the start, so slow answers do not lower the offered rate for long.
                if let Some(wait) = (started + period * i as u32).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        });
        Stream { stop, sent, handle: Some(handle) }
    }

    /// What has been sent so far.
    pub fn snapshot(&self) -> Sent {
        self.sent.lock().unwrap().clone()
    }

    /// Stops the stream and returns what it sent.
    pub fn finish(mut self) -> Sent {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("stream thread");
        }
        self.sent.lock().unwrap().clone()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reconciles what was acknowledged against what arrived, through the agency API (so it can be
/// repeated after restarts, unlike `load::reconcile`, which also consumes the receivers): waits (up to
/// `timeout`) until every accepted document is signed for at its sender's node, then checks every
/// recipient's inbox holds each of its documents exactly once.
pub fn reconcile(net: &LocalNetwork, sent: &Sent, timeout: Duration) {
    assert!(!sent.accepted.is_empty(), "the stream must have had documents accepted, or nothing was tested");
    let by_sender: HashMap<MessageId, &UnitAddress> = sent.accepted.iter().map(|(id, from, _)| (*id, from)).collect();
    let mut pending: Vec<MessageId> = sent.accepted.iter().map(|(id, ..)| *id).collect();
    let deadline = Instant::now() + timeout;
    while !pending.is_empty() {
        pending.retain(|id| {
            let status = net.client_for(by_sender[id]).status(id);
            !matches!(status, Ok(s) if s.recipients.iter().all(|r| r.state == RecipientState::SignedFor && r.receipt.is_some()))
        });
        if pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged documents have no receipt back at their sender after {timeout:?}; first: {} ({:?})",
            pending.len(),
            sent.accepted.len(),
            short(&pending[0]),
            net.client_for(by_sender[&pending[0]]).status(&pending[0]).map(|s| s.recipients).map_err(|e| e.to_string()),
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut expected: BTreeMap<&UnitAddress, Vec<MessageId>> = BTreeMap::new();
    for (id, _, to) in &sent.accepted {
        expected.entry(to).or_default().push(*id);
    }
    for (u, ids) in expected {
        let mut copies: HashMap<MessageId, usize> = HashMap::new();
        for item in read_inbox(&net.client_for(u), u) {
            *copies.entry(item.id).or_default() += 1;
        }
        for id in &ids {
            assert_eq!(copies.get(id), Some(&1), "{u}: acknowledged document {} must be in the inbox exactly once", short(id));
        }
    }
}

/// Waits until `node` answers `/readyz` with 200 (or panics after `timeout`).
pub fn wait_ready(net: &LocalNetwork, node: &str, timeout: Duration) {
    let url = format!("{}/readyz", net.node(node).admin_url);
    wait_for(&format!("{node} ready"), timeout, || (http_status(&url) == Some(200)).then_some(()));
}

/// The HTTP status of a GET, or `None` when nothing answered.
pub fn http_status(url: &str) -> Option<u16> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(10))).build().into();
    agent.get(url).call().ok().map(|r| r.status().as_u16())
}
