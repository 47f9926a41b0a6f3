//! Power loss of unsynced writes (issue 10). The city's and the sending district's data directories
//! sit on `exchange-lazyfs`, which holds written data in memory until it is fsynced. Mid-stream,
//! first the city and then the sending district (越秀) lose power: the node is killed with SIGKILL
//! and every byte it wrote but did not fsync is dropped; then it is restarted. Reconciliation: every
//! document whose submission was acknowledged is delivered exactly once and its signed receipt is
//! back at the sender.
//!
//! Both tests skip (and pass) only where FUSE cannot be mounted: not root, or no /dev/fuse. CI runs
//! as root with /dev/fuse, so there they run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use exchange_devnet::launcher::LocalNetwork;
use exchange_tests::lazyfs::{LazyMount, unsupported};
use exchange_tests::*;
use exchange_wire::api::{BatchItemResult, RecipientState, SignedMessage};
use exchange_wire::client::{ApiClient, ClientError};
use exchange_wire::{MessageId, UnitAddress};

fn skip(test: &str) -> bool {
    match unsupported() {
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            true
        }
        None => false,
    }
}

/// Without this, the network test would prove nothing: the tool really loses what was not fsynced,
/// keeps what was, and SQLite in WAL mode runs on it.
#[test]
fn the_test_filesystem_keeps_only_what_was_fsynced() {
    if skip("the_test_filesystem_keeps_only_what_was_fsynced") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut mount = LazyMount::new(&dir.path().join("disk"), &dir.path().join("mnt")).expect("mount");
    let mnt = mount.path().to_path_buf();
    let at = |name: &str| mnt.join(name);

    std::fs::write(at("unsynced"), b"written, never fsynced").unwrap();
    let synced = std::fs::File::create(at("synced")).unwrap();
    synced.write_all_at(b"fsynced", 0).unwrap();
    synced.sync_data().unwrap();
    synced.write_all_at(b" and then more", 7).unwrap();
    drop(synced);
    let shrunk = std::fs::File::create(at("shrunk")).unwrap();
    (&shrunk).write_all(&[7u8; 10_000]).unwrap();
    shrunk.sync_all().unwrap();
    shrunk.set_len(100).unwrap();
    drop(shrunk);
    assert_eq!(std::fs::read(at("unsynced")).unwrap(), b"written, never fsynced", "readers see unsynced data");
    assert_eq!(std::fs::read(at("synced")).unwrap(), b"fsynced and then more");
    assert_eq!(std::fs::metadata(at("shrunk")).unwrap().len(), 100);
    assert_eq!(std::fs::read(mount.backing().join("unsynced")).unwrap(), b"", "nothing reached the disk yet");

    let (fsynced, lost) = sqlite_commits(&at("t.db"));
    assert_eq!(sqlite_rows(&at("t.db")), fsynced + lost, "a second connection sees every commit (shared -shm mmap)");

    mount.power_cut().expect("power cut");
    assert_eq!(std::fs::read(at("unsynced")).unwrap(), b"", "unsynced data is gone after a power cut");
    assert_eq!(std::fs::read(at("synced")).unwrap(), b"fsynced", "fsynced data survives, later writes do not");
    assert_eq!(std::fs::metadata(at("shrunk")).unwrap().len(), 10_000, "an unsynced truncation is undone");
    assert_eq!(sqlite_rows(&at("t.db")), fsynced, "commits made with synchronous=OFF are lost, FULL ones kept");
}

/// Commits rows to a new WAL database, some with `synchronous=FULL`, then some with `OFF`; returns
/// both counts. The connection is leaked, not closed: closing would checkpoint, and a power cut
/// stops a process where it is.
fn sqlite_commits(path: &std::path::Path) -> (i64, i64) {
    use sqlx::ConnectOptions as _;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
        let mut conn = opts.connect().await.expect("open SQLite on the mount");
        sqlx::query("CREATE TABLE t (n INTEGER)").execute(&mut conn).await.unwrap();
        for n in 0..10 {
            sqlx::query("INSERT INTO t VALUES ($1)").bind(n).execute(&mut conn).await.unwrap();
        }
        sqlx::query("PRAGMA synchronous = OFF").execute(&mut conn).await.unwrap();
        for n in 10..15 {
            sqlx::query("INSERT INTO t VALUES ($1)").bind(n).execute(&mut conn).await.unwrap();
        }
        std::mem::forget(conn);
    });
    (10, 5)
}

fn sqlite_rows(path: &std::path::Path) -> i64 {
    use sqlx::ConnectOptions as _;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(path).connect().await.expect("open SQLite");
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(&mut conn).await.unwrap();
        let check: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut conn).await.unwrap();
        assert_eq!(check, "ok");
        rows
    })
}

const MESSAGES: usize = 1500;
const BATCH: usize = 20;
/// The nodes whose data directories are on the test filesystem.
const POWERED: [&str; 2] = ["gz", "gz.yuexiu"];

/// The three-node network with the city's and 越秀's data directories on `exchange-lazyfs`.
/// Dropping it kills those nodes, then unmounts, then drops the network (field order).
struct PoweredNetwork {
    mounts: BTreeMap<&'static str, LazyMount>,
    net: LocalNetwork,
}

impl PoweredNetwork {
    fn start() -> PoweredNetwork {
        let net = LocalNetwork::create(&node_binary(), None, &["gz", "gz.yuexiu", "gz.haizhu"], FAST_RETRY).expect("lay out the network");
        let mut rig = PoweredNetwork { mounts: BTreeMap::new(), net };
        for id in POWERED {
            // The launcher's data_dir is `<root>/<id>`: mount over it, backed by `<root>/<id>.disk`.
            let data_dir = rig.net.node(id).data_dir.clone();
            let mount = LazyMount::new(&rig.net.root.join(format!("{id}.disk")), &data_dir).expect("mount the test filesystem");
            rig.mounts.insert(id, mount);
        }
        rig.net.start_all().expect("start the nodes");
        rig
    }

    /// kill -9 the node, drop everything it wrote but did not fsync, and start it again.
    fn power_cut(&mut self, id: &str) {
        self.net.kill(id).expect("kill -9");
        self.mounts.get_mut(id).expect("a powered node").power_cut().expect("power cut");
        self.net.start(id).unwrap_or_else(|e| panic!("restart {id} after the power cut: {e:#}"));
    }
}

impl Drop for PoweredNetwork {
    fn drop(&mut self) {
        for id in POWERED {
            let _ = self.net.kill(id);
        }
    }
}

/// Submits `batches` in order from a background thread, each to its sender's node, retrying a batch
/// until the node answers (content-derived ids make a retry idempotent). Returns the acknowledged
/// ids and how many attempts found the node down.
fn spawn_submitter(batches: Vec<(ApiClient, Vec<SignedMessage>)>, progress: Arc<AtomicUsize>) -> std::thread::JoinHandle<(HashSet<MessageId>, usize)> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(300);
        let (mut acked, mut failed) = (HashSet::new(), 0);
        for (client, batch) in batches {
            let answer = loop {
                assert!(Instant::now() < deadline, "the stream did not get through within 300 s");
                match client.submit_batch(batch.clone()) {
                    Ok(answer) => break answer,
                    Err(ClientError::Transport { .. }) | Err(ClientError::Refused { status: 503, .. }) => {
                        failed += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => panic!("submission refused: {e}"),
                }
            };
            for r in answer.results {
                match r {
                    BatchItemResult::Accepted(s) => acked.insert(s.id),
                    BatchItemResult::Refused(e) => panic!("refused: {e:?}"),
                };
            }
            progress.store(acked.len(), Ordering::SeqCst);
            // Pace the stream, so the power cuts land in its middle.
            std::thread::sleep(Duration::from_millis(15));
        }
        (acked, failed)
    })
}

/// Waits until every document in `pending` is signed for by all its recipients with the receipt at
/// the sender's node; returns what is still missing at the deadline, described (first ten).
fn wait_for_receipts(net: &LocalNetwork, sender_of: &HashMap<MessageId, UnitAddress>, mut pending: Vec<MessageId>, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let done = |id: &MessageId| {
        let status = net.client_for(&sender_of[id]).status(id);
        status.is_ok_and(|s| s.recipients.iter().all(|r| r.state == RecipientState::SignedFor && r.receipt.is_some()))
    };
    while !pending.is_empty() && Instant::now() < deadline {
        pending.retain(|id| !done(id));
        std::thread::sleep(Duration::from_millis(200));
    }
    pending
        .iter()
        .take(10)
        .map(|id| match net.client_for(&sender_of[id]).status(id) {
            Ok(s) => format!("{}: {:?}", short(id), s.recipients.iter().map(|r| format!("{} {:?} at {}", r.unit, r.state, r.node)).collect::<Vec<_>>()),
            Err(e) => format!("{}: {e}", short(id)),
        })
        .chain((pending.len() > 10).then(|| format!("and {} more", pending.len() - 10)))
        .collect()
}

#[test]
fn acknowledged_documents_survive_power_cuts_of_the_city_and_the_sending_district() {
    if skip("acknowledged_documents_survive_power_cuts_of_the_city_and_the_sending_district") {
        return;
    }
    let mut rig = PoweredNetwork::start();
    let started = Instant::now();
    let units = |node: &str| -> Vec<UnitAddress> { rig.net.unit_keys.keys().filter(|u| u.node_part() == node).take(6).cloned().collect() };
    let (senders, haizhu, city) = (units("gz.yuexiu"), units("gz.haizhu"), units("gz"));
    let keys = Arc::new(rig.net.unit_keys.clone());

    // Message i goes to one 海珠 unit; every tenth is also copied to a city unit, so the city
    // delivers into inboxes on its own lazy disk too.
    let mut expected: BTreeMap<UnitAddress, Vec<MessageId>> = BTreeMap::new();
    let mut sender_of: HashMap<MessageId, UnitAddress> = HashMap::new();
    let mut batches = Vec::new();
    for (n, chunk) in (0..MESSAGES).collect::<Vec<_>>().chunks(BATCH).enumerate() {
        let from = &senders[n % senders.len()];
        let mut batch = Vec::new();
        for &i in chunk {
            let to = haizhu[i % haizhu.len()].clone();
            let cc: Vec<&str> = if i % 10 == 0 { vec![city[i % city.len()].as_str()] } else { vec![] };
            let payload = format!("第{i}号文件：关于停电演练的通知").into_bytes();
            let doc = document(&keys[from], from.as_str(), &[to.as_str()], &cc, &payload, &format!("停电 {i}"));
            expected.entry(to).or_default().push(doc.id);
            for c in &cc {
                expected.entry(unit(c)).or_default().push(doc.id);
            }
            sender_of.insert(doc.id, from.clone());
            batch.push(submission(&doc, &payload));
        }
        batches.push((rig.net.client_for(from), batch));
    }
    let receivers: Vec<(UnitAddress, Receiver)> = expected
        .keys()
        .map(|u| (u.clone(), Receiver::spawn(rig.net.client_for(u), u.clone(), keys[u].clone(), keys.clone())))
        .collect();

    let progress = Arc::new(AtomicUsize::new(0));
    let submitter = spawn_submitter(batches, progress.clone());
    let acked_so_far = |n: usize| {
        let progress = progress.clone();
        move || (progress.load(Ordering::SeqCst) >= n).then_some(())
    };
    wait_for("a third of the stream acknowledged", Duration::from_secs(120), acked_so_far(MESSAGES / 3));
    rig.power_cut("gz");
    wait_for("two thirds of the stream acknowledged", Duration::from_secs(120), acked_so_far(2 * MESSAGES / 3));
    let yuexiu = rig.net.node("gz.yuexiu").client();
    assert!(
        metric(&yuexiu, "exchange_send_failures_total", &[("peer", "gz")]) > 0.0,
        "越秀 must have felt the city's outage (otherwise the cut came too late to test anything)"
    );
    rig.power_cut("gz.yuexiu");
    let (acked, failed_attempts) = submitter.join().expect("the submitter thread");
    assert!(failed_attempts > 0, "the submitter must have met 越秀 down mid-stream");
    assert_eq!(acked.len(), MESSAGES, "every document was acknowledged (after retries while its node was down)");
    eprintln!("stream acknowledged {:?} after the network was up ({failed_attempts} attempts met a node down)", started.elapsed());

    // Every receipt back at the sender's node, read from its durable status (not from a counter
    // that restarts with the node).
    let pending = wait_for_receipts(&rig.net, &sender_of, acked.iter().copied().collect(), Duration::from_secs(180));
    assert!(pending.is_empty(), "{} acknowledged documents never completed (lost by a power cut?): {}", pending.len(), pending.join("; "));
    let seen: HashMap<UnitAddress, HashMap<MessageId, usize>> = receivers.into_iter().map(|(u, r)| (u, r.finish())).collect();

    for (u, ids) in &expected {
        let inbox = read_inbox(&rig.net.client_for(u), u);
        let mut copies: HashMap<MessageId, usize> = HashMap::new();
        for item in &inbox {
            *copies.entry(item.id).or_default() += 1;
        }
        assert_eq!(copies.len(), ids.len(), "{u}: inbox holds exactly the documents sent to it");
        for id in ids {
            assert_eq!(copies.get(id), Some(&1), "{u}: document {} in the inbox exactly once", short(id));
            assert_eq!(seen[u].get(id), Some(&1), "{u}: the agency saw {} exactly once", short(id));
        }
        assert!(inbox.iter().all(|i| i.state == RecipientState::SignedFor), "{u}: every document signed for");
    }
    for id in POWERED {
        let db = rig.net.node(id).database_path();
        wait_for(&format!("{id}'s outbox drained"), Duration::from_secs(30), || (stored_counts(&db).outbox == 0).then_some(()));
    }
    eprintln!("reconciled {:?} after the network was up", started.elapsed());
}
