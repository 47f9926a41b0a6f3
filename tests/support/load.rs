//! A steady stream of signed documents kept up while a fault is made, and the reconciliation that
//! ends every fault test: each acknowledged document in each recipient's inbox exactly once, seen
//! once by the recipient's system, and its signed receipt recorded at the sender's node.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exchange_devnet::launcher::LocalNetwork;
use exchange_wire::api::BatchItemResult;
use exchange_wire::client::ApiClient;
use exchange_wire::{MessageId, UnitAddress};

use crate::{Receiver, document, read_inbox, short, submission, wait_for};

/// A document the sender's node acknowledged.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub id: MessageId,
    pub from: UnitAddress,
    pub to: UnitAddress,
    /// When the acknowledgement came back.
    pub at: Instant,
}

/// Documents submitted in the background at a steady pace; see [`Load::start`].
pub struct Load {
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<Accepted>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Submits about `per_second` documents a second, in batches of `batch`, each batch from one of
    /// `senders` (units of one node, taking turns), each document to one of `recipients` (in turn),
    /// with a payload of `payload_bytes`. A batch the node does not answer (down, paused) is submitted
    /// again, unchanged, until it is answered: ids are content-derived, so an answer `duplicate` for
    /// a batch whose first answer was lost still acknowledges it. A refusal fails the test.
    pub fn start(net: &LocalNetwork, senders: &[UnitAddress], recipients: &[UnitAddress], per_second: u32, batch: usize, payload_bytes: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let clients: Vec<(UnitAddress, ApiClient, ed25519_dalek::SigningKey)> =
            senders.iter().map(|u| (u.clone(), net.client_for(u), net.unit_keys[u].clone())).collect();
        let recipients = recipients.to_vec();
        let pace = Duration::from_secs_f64(batch as f64 / per_second as f64);
        let (flag, record) = (stop.clone(), accepted.clone());
        let handle = std::thread::spawn(move || {
            let mut n = 0usize;
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let (from, client, key) = &clients[(n / batch) % clients.len()];
                let mut docs = Vec::with_capacity(batch);
                let mut meta = Vec::with_capacity(batch);
                for _ in 0..batch {
                    let to = recipients[n % recipients.len()].clone();
                    let mut payload = format!("第{n}号文件：关于做好防汛工作的通知。").into_bytes();
                    payload.resize(payload_bytes.max(payload.len()), b'.');
                    let doc = document(key, from.as_str(), &[to.as_str()], &[], &payload, &format!("通知 {n}"));
                    meta.push((doc.id, to));
                    docs.push(submission(&doc, &payload));
                    n += 1;
                }
                let answer = loop {
                    match client.submit_batch(docs.clone()) {
                        Ok(a) => break a,
                        Err(e) if e.code().is_none() => std::thread::sleep(Duration::from_millis(50)),
                        Err(e) => panic!("a batch from {from} was refused: {e}"),
                    }
                };
                let at = Instant::now();
                let mut record = record.lock().unwrap();
                for ((id, to), r) in meta.into_iter().zip(answer.results) {
                    match r {
                        BatchItemResult::Accepted(a) => {
                            assert_eq!(a.id, id, "the node acknowledged another id");
                            record.push(Accepted { id, from: from.clone(), to, at });
                        }
                        BatchItemResult::Refused(e) => panic!("document {} refused: {e:?}", short(&id)),
                    }
                }
                drop(record);
                next += pace;
                match next.checked_duration_since(Instant::now()) {
                    Some(d) => std::thread::sleep(d),
                    None => next = Instant::now(),
                }
            }
        });
        Load { stop, accepted, handle: Some(handle) }
    }

    /// Documents acknowledged so far, in order.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.accepted.lock().unwrap().clone()
    }

    /// How many documents were acknowledged so far.
    pub fn count(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    /// Waits until at least `n` more documents than now are acknowledged.
    pub fn wait_more(&self, n: usize, timeout: Duration) {
        let target = self.count() + n;
        wait_for(&format!("{n} more documents acknowledged"), timeout, || (self.count() >= target).then_some(()));
    }

    /// Stops submitting and returns every acknowledged document.
    pub fn finish(mut self) -> Vec<Accepted> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take()
            && let Err(panic) = h.join()
        {
            std::panic::resume_unwind(panic);
        }
        self.accepted()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts a [`Receiver`] for each of `units`, signing for each page in one request.
pub fn receivers(net: &LocalNetwork, units: &[UnitAddress]) -> Vec<(UnitAddress, Receiver)> {
    let keys = Arc::new(net.unit_keys.clone());
    units.iter().map(|u| (u.clone(), Receiver::spawn_batched(net.client_for(u), u.clone(), keys[u].clone(), keys.clone()))).collect()
}

/// Each recipient's state and whether a receipt is recorded, from the tracking table of the
/// database at `path` (the sender's node; read-only, the node may be running).
pub fn tracking(path: &Path) -> HashMap<(MessageId, String), (String, bool)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use sqlx::{ConnectOptions, Row};
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true);
        let mut conn = opts.connect().await.expect("open the node database");
        let rows = sqlx::query("SELECT message_id, recipient, state, receipt_id IS NOT NULL AS has_receipt FROM tracking")
            .fetch_all(&mut conn)
            .await
            .expect("read the tracking table");
        rows.iter()
            .map(|r| {
                let id: Vec<u8> = r.get("message_id");
                let id = exchange_wire::Digest(id.try_into().expect("32-byte message id"));
                ((id, r.get::<String, _>("recipient")), (r.get::<String, _>("state"), r.get::<bool, _>("has_receipt")))
            })
            .collect()
    })
}

/// The reconciliation: waits (up to `timeout`) until every acknowledged document's receipt is
/// recorded at its sender's node, then checks that each recipient's inbox holds each document sent
/// to it exactly once and nothing else, that its system saw each exactly once, and that no node has
/// anything left to send. Prints a one-line summary.
pub fn reconcile(net: &LocalNetwork, accepted: &[Accepted], receivers: Vec<(UnitAddress, Receiver)>, timeout: Duration) {
    let start = Instant::now();
    let mut expected: BTreeMap<UnitAddress, Vec<MessageId>> = BTreeMap::new();
    for a in accepted {
        expected.entry(a.to.clone()).or_default().push(a.id);
    }
    let sender_nodes: BTreeSet<&str> = accepted.iter().map(|a| a.from.node_part()).collect();
    let settled = |rows: &HashMap<(MessageId, String), (String, bool)>, a: &Accepted| {
        rows.get(&(a.id, a.to.to_string())).is_some_and(|(state, receipt)| state == "signed-for" && *receipt)
    };
    // Polled from the database file, so not too often.
    loop {
        let rows: HashMap<_, _> = sender_nodes.iter().flat_map(|n| tracking(&net.node(n).database_path())).collect();
        let missing = accepted.iter().filter(|a| !settled(&rows, a)).count();
        if missing == 0 {
            break;
        }
        assert!(start.elapsed() < timeout, "after {timeout:?}, {missing} of {} receipts are not back at the sender's node", accepted.len());
        std::thread::sleep(Duration::from_millis(250));
    }
    let seen: HashMap<UnitAddress, HashMap<MessageId, usize>> = receivers.into_iter().map(|(u, r)| (u, r.finish())).collect();
    for (u, ids) in &expected {
        let mut copies: HashMap<MessageId, usize> = HashMap::new();
        for item in read_inbox(&net.client_for(u), u) {
            *copies.entry(item.id).or_default() += 1;
        }
        assert_eq!(copies.len(), ids.len(), "{u}: the inbox holds exactly the documents acknowledged for it");
        for id in ids {
            assert_eq!(copies.get(id), Some(&1), "{u}: document {} in the inbox exactly once", short(id));
            assert_eq!(seen.get(u).and_then(|s| s.get(id)), Some(&1), "{u}: its system saw {} exactly once", short(id));
        }
        let extra = seen.get(u).map(|s| s.len()).unwrap_or(0);
        assert_eq!(extra, ids.len(), "{u}: its system saw nothing it was not sent");
    }
    wait_for("every outbox empty", Duration::from_secs(30), || {
        net.nodes.values().all(|n| crate::stored_counts(&n.database_path()).outbox == 0).then_some(())
    });
    println!(
        "reconciled {} acknowledged documents for {} recipients: each delivered exactly once, every receipt back at the sender ({:.1} s)",
        accepted.len(),
        expected.len(),
        start.elapsed().as_secs_f64()
    );
}
