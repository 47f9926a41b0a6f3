//! The city node killed with SIGKILL in the middle of a stream of documents from 越秀 to 海珠 (some
//! copied to city units), every recipient signing for each one, and the reconciliation of what was
//! sent against what arrived. Shared by the SQLite and the PostgreSQL city tests, which differ only
//! in the city's store and in what they then check inside it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use exchange_devnet::launcher::LocalNetwork;
use exchange_wire::api::{BatchItemResult, RecipientState};
use exchange_wire::{MessageId, UnitAddress};

use crate::{Receiver, document, metric, read_inbox, short, submission, unit, wait_for};

/// The stream and when the city dies.
pub struct CityOutage {
    pub messages: usize,
    /// Sending units at 越秀 and receiving units at 海珠 (and the city).
    pub units_per_node: usize,
    /// Every `cc_every`-th document is also copied to a city unit (0: none).
    pub cc_every: usize,
    /// The city is killed after this batch of 50, and restarted after that one.
    pub kill_after_batch: usize,
    pub restart_after_batch: usize,
}

impl CityOutage {
    /// Runs the stream on a started three-node network and asserts the reconciliation: every
    /// accepted document in each recipient's inbox exactly once, seen once by its agency and signed
    /// for, each receipt recorded once back at the sender's node.
    pub fn run(&self, net: &mut LocalNetwork) {
        let (kill, restart) = (self.kill_after_batch, self.restart_after_batch);
        self.run_with(net, |net, n| {
            if n == kill {
                // The city dies mid-stream, with batches in flight in both directions.
                net.kill("gz").expect("kill -9 the city node");
            }
            if n == restart {
                net.start("gz").expect("restart the city node");
            }
        });
    }

    /// [`CityOutage::run`] with another outage: `after_batch(net, n)` runs after batch `n` was
    /// accepted by 越秀 (the fields `kill_after_batch` and `restart_after_batch` are not used).
    pub fn run_with(&self, net: &mut LocalNetwork, mut after_batch: impl FnMut(&mut LocalNetwork, usize)) {
        let units = |node: &str| -> Vec<UnitAddress> {
            net.unit_keys.keys().filter(|u| u.node_part() == node).take(self.units_per_node).cloned().collect()
        };
        let (senders, haizhu, city) = (units("gz.yuexiu"), units("gz.haizhu"), units("gz"));
        let keys = Arc::new(net.unit_keys.clone());

        // Pre-signed in batches of 50, each from one 越秀 unit: document i goes to one 海珠 unit.
        let mut expected: BTreeMap<UnitAddress, Vec<MessageId>> = BTreeMap::new();
        let mut sender_of: HashMap<MessageId, UnitAddress> = HashMap::new();
        let mut stream = Vec::with_capacity(self.messages);
        for i in 0..self.messages {
            let from = &senders[(i / 50) % senders.len()];
            let to = haizhu[i % haizhu.len()].clone();
            let copied = self.cc_every > 0 && i % self.cc_every == 0;
            let cc: Vec<&str> = if copied { vec![city[i % city.len()].as_str()] } else { vec![] };
            let payload = format!("第{i}号文件：关于做好防汛工作的通知").into_bytes();
            let doc = document(&keys[from], from.as_str(), &[to.as_str()], &cc, &payload, &format!("通知 {i}"));
            expected.entry(to).or_default().push(doc.id);
            sender_of.insert(doc.id, from.clone());
            for c in &cc {
                expected.entry(unit(c)).or_default().push(doc.id);
            }
            stream.push(submission(&doc, &payload));
        }
        let receipts_expected = expected.values().map(Vec::len).sum::<usize>();
        let receivers: Vec<(UnitAddress, Receiver)> = expected
            .keys()
            .map(|u| (u.clone(), Receiver::spawn(net.client_for(u), u.clone(), keys[u].clone(), keys.clone())))
            .collect();

        let yuexiu = net.node("gz.yuexiu").client();
        let mut accepted = 0;
        for (n, batch) in stream.chunks(50).enumerate() {
            let from = &senders[n % senders.len()];
            let answer = net.client_for(from).submit_batch(batch.to_vec()).expect("submit a batch");
            for r in answer.results {
                match r {
                    BatchItemResult::Accepted(_) => accepted += 1,
                    BatchItemResult::Refused(e) => panic!("refused: {e:?}"),
                }
            }
            after_batch(net, n);
        }
        assert_eq!(accepted, self.messages, "the district node accepted the whole stream");
        assert!(
            metric(&yuexiu, "exchange_send_failures_total", &[("peer", "gz")]) > 0.0,
            "越秀 must have felt the outage (otherwise the kill came too late to test anything)"
        );

        wait_for("every receipt back at 越秀", Duration::from_secs(180), || {
            let returned = metric(&yuexiu, "exchange_receipts_total", &[("direction", "returned")]);
            (returned as usize >= receipts_expected).then_some(())
        });
        let seen: HashMap<UnitAddress, HashMap<MessageId, usize>> = receivers.into_iter().map(|(u, r)| (u, r.finish())).collect();

        // Reconcile what was sent against what arrived.
        for (u, ids) in &expected {
            let inbox = read_inbox(&net.client_for(u), u);
            let mut copies: HashMap<MessageId, usize> = HashMap::new();
            for item in &inbox {
                *copies.entry(item.id).or_default() += 1;
            }
            assert_eq!(copies.len(), ids.len(), "{u}: inbox holds exactly the messages sent to it");
            for id in ids {
                assert_eq!(copies.get(id), Some(&1), "{u}: message {} in the inbox exactly once (0 lost, 0 duplicated)", short(id));
                assert_eq!(seen[u].get(id), Some(&1), "{u}: the agency saw {} exactly once", short(id));
            }
            assert!(inbox.iter().all(|i| i.state == RecipientState::SignedFor));
        }
        let returned = metric(&yuexiu, "exchange_receipts_total", &[("direction", "returned")]) as usize;
        assert_eq!(returned, receipts_expected, "each receipt recorded once at the sender's node");
        for ids in expected.values() {
            for id in ids.iter().step_by(7) {
                let status = net.client_for(&sender_of[id]).status(id).unwrap();
                assert!(status.recipients.iter().all(|r| r.state == RecipientState::SignedFor && r.receipt.is_some()));
            }
        }
    }
}
