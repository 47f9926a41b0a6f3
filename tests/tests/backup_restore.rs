//! Backup, restore and reconciliation, with real node processes.
//!
//! (a) Documents stream 越秀 → 广州 → 海珠 while 海珠's units sign for them. The city is backed up
//! online in the middle of the stream (`exchange-admin backup`; commits go on during the copy), the
//! stream goes on, the city is killed with SIGKILL, restored from the backup (`exchange-node
//! restore`), started, and reconciles with its neighbours. Then every document whose submission was
//! acknowledged is delivered exactly once with its receipt back at the sender, and the
//! reconciliation report lists the documents the city had acknowledged after the backup, checked
//! against what the test saw arrive before the kill.
//!
//! (b) The refusals: a backup of another node, a damaged database copy (bytes flipped; truncated
//! with a matching manifest), a folder that is not a backup, a running node, a backup into a
//! non-empty folder. None of them changes anything; a good backup then restores.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use exchange_devnet::launcher::{LocalNetwork, LocalNode};
use exchange_tests::*;
use exchange_wire::api::{BatchItemResult, RecipientState};
use exchange_wire::backup::{BackupManifest, ReconcileState, ReconciliationPage};
use exchange_wire::client::ApiClient;
use exchange_wire::{MessageId, UnitAddress};

/// A document whose submission the sending node acknowledged.
#[derive(Clone)]
struct Sent {
    id: MessageId,
    from: UnitAddress,
    to: UnitAddress,
    submitted_at_ms: u64,
}

/// Documents submitted from 越秀 in batches in the background, each batch acknowledged before the
/// next.
struct Stream {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Sent>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Stream {
    fn start(net: &LocalNetwork, senders: Vec<UnitAddress>, recipients: Vec<UnitAddress>, size: usize, pause: Duration) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
        let clients: Vec<ApiClient> = senders.iter().map(|s| net.client_for(s)).collect();
        let keys: Vec<SigningKey> = senders.iter().map(|s| net.unit_keys[s].clone()).collect();
        let (flag, log) = (stop.clone(), sent.clone());
        let handle = std::thread::spawn(move || {
            let mut n = 0usize;
            while !flag.load(Ordering::Relaxed) {
                let s = (n / 10) % senders.len();
                let mut batch = Vec::new();
                let mut docs = Vec::new();
                for _ in 0..10 {
                    let to = &recipients[n % recipients.len()];
                    let mut payload = format!("第{n}号文件：关于做好防汛工作的通知。").into_bytes();
                    payload.resize(size, b'.');
                    let doc = document(&keys[s], senders[s].as_str(), &[to.as_str()], &[], &payload, &format!("通知 {n}"));
                    docs.push(Sent { id: doc.id, from: senders[s].clone(), to: to.clone(), submitted_at_ms: 0 });
                    batch.push(submission(&doc, &payload));
                    n += 1;
                }
                let at = exchange_wire::now_ms();
                let answer = clients[s].submit_batch(batch).expect("越秀 answers every batch");
                for (mut d, r) in docs.into_iter().zip(answer.results) {
                    match r {
                        BatchItemResult::Accepted(_) => {
                            d.submitted_at_ms = at;
                            log.lock().unwrap().push(d);
                        }
                        BatchItemResult::Refused(e) => panic!("越秀 refused a document: {e:?}"),
                    }
                }
                std::thread::sleep(pause);
            }
        });
        Stream { stop, sent, handle: Some(handle) }
    }

    fn count(&self) -> usize {
        self.sent.lock().unwrap().len()
    }

    fn finish(mut self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().expect("the stream thread");
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `exchange-admin` against a node's admin API, with its operator token file.
fn admin(node: &LocalNode, args: &[&str]) -> Output {
    Command::new(admin_binary())
        .arg("--admin")
        .arg(&node.admin_url)
        .args(args)
        .env("EXCHANGE_ADMIN_TOKEN_FILE", node.admin_token_file())
        .output()
        .expect("run exchange-admin")
}

fn restore(config: &Path, from: &Path) -> Output {
    Command::new(node_binary()).arg("restore").arg("--config").arg(config).arg("--from").arg(from).output().expect("run exchange-node restore")
}

fn text(o: &Output) -> String {
    format!("exit {:?}\nstdout: {}\nstderr: {}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn backup(net: &LocalNetwork, node: &str, out: &Path) -> BackupManifest {
    let o = admin(net.node(node), &["--json", "backup", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "backup of {node}: {}", text(&o));
    serde_json::from_slice(&o.stdout).expect("the backup's manifest as JSON")
}

/// One number from a node's database file, read-only (the node may be running).
fn query_i64(db: &Path, sql: &str) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(db).read_only(true).connect().await.expect("open the database");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string())).fetch_one(&mut conn).await.expect("query")
    })
}

/// Ids in the inboxes of `units` now.
fn inbox_ids(net: &LocalNetwork, units: &[UnitAddress]) -> BTreeSet<MessageId> {
    units.iter().flat_map(|u| read_inbox(&net.client_for(u), u)).map(|i| i.id).collect()
}

fn folders_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix)).collect()
}

#[test]
fn city_restored_from_an_online_backup_recovers_what_its_neighbours_hold() {
    let t0 = Instant::now();
    let mut net = three_nodes(FAST_RETRY);
    stage(t0, "three nodes up");
    let pick = |node: &str| -> Vec<UnitAddress> { net.unit_keys.keys().filter(|u| u.node_part() == node).take(6).cloned().collect() };
    let (senders, haizhu) = (pick("gz.yuexiu"), pick("gz.haizhu"));
    let keys = Arc::new(net.unit_keys.clone());
    let receivers: Vec<(UnitAddress, Receiver)> =
        haizhu.iter().map(|u| (u.clone(), Receiver::spawn(net.client_for(u), u.clone(), keys[u].clone(), keys.clone()))).collect();
    let city_db = net.node("gz").database_path();

    // One document with a 3 MiB attachment, so the backup and the restore carry an attachment file.
    let with_attachment = send_with_attachment(&net, &senders[0], &haizhu[0]);
    // A heavy start (160 documents of 256 KiB), so that copying the city's database takes a while.
    let heavy = Stream::start(&net, senders.clone(), haizhu.clone(), 256 * 1024, Duration::ZERO);
    wait_for("160 heavy documents accepted", Duration::from_secs(180), || (heavy.count() >= 160).then_some(()));
    let mut sent = heavy.finish();
    stage(t0, "heavy documents accepted");
    let city = net.node("gz").client();
    wait_for("the heavy documents at the city", Duration::from_secs(180), || {
        (metric(&city, "exchange_messages_accepted_total", &[("kind", "document"), ("source", "peer")]) as usize > sent.len()).then_some(())
    });

    // The stream: about 150 small documents a second.
    let stream = Stream::start(&net, senders.clone(), haizhu.clone(), 1024, Duration::from_millis(60));
    wait_for("the stream under way", Duration::from_secs(30), || (stream.count() >= 200).then_some(()));
    let delivered_before_backup = inbox_ids(&net, &haizhu);
    let backup_dir = net.root.join("backup-gz");
    let manifest = backup(&net, "gz", &backup_dir);
    check_backup_folder(&manifest, &backup_dir, &city_db);

    stage(t0, "backup taken");

    // The stream goes on; then the city dies with documents for 海珠 waiting in its outbox, and is
    // restored from the backup.
    let outage = lose_the_city(&mut net, &stream, &haizhu, &backup_dir);
    stage(t0, "city restored and started");
    let restarted = stream.count();
    wait_for("the stream reaching the restored city", Duration::from_secs(30), || (stream.count() >= restarted + 100).then_some(()));
    sent.extend(stream.finish());
    sent.push(with_attachment);

    let o = admin(net.node("gz"), &["--json", "reconcile", "--wait", "120"]);
    assert!(o.status.success(), "reconcile: {}", text(&o));
    stage(t0, "reconciled");
    let page: ReconciliationPage = serde_json::from_slice(&o.stdout).expect("the report as JSON");
    check_report(&page, &sent, &manifest, &delivered_before_backup, &outage);
    check_counted_and_audited(&net, &page);

    // Nothing acknowledged is lost or delivered twice, and every receipt is back at the sender.
    let yuexiu = net.node("gz.yuexiu").client();
    wait_for("every receipt back at 越秀", Duration::from_secs(240), || {
        (metric(&yuexiu, "exchange_receipts_total", &[("direction", "returned")]) as usize >= sent.len()).then_some(())
    });
    stage(t0, "every receipt back");
    let seen: HashMap<UnitAddress, HashMap<MessageId, usize>> = receivers.into_iter().map(|(u, r)| (u, r.finish())).collect();
    reconcile_delivery(&net, &sent, &seen);
    stage(t0, "deliveries reconciled");
    wait_for("nothing left in the city's outbox", Duration::from_secs(60), || (stored_counts(&city_db).outbox == 0).then_some(()));
    stage(t0, "done");
}

/// Progress on stderr, for the test's log.
fn stage(t0: Instant, what: &str) {
    eprintln!("[{:6.1} s] {what}", t0.elapsed().as_secs_f64());
}

/// What the test knows of the city's last moments.
struct Outage {
    /// Documents in 海珠's inboxes just before 海珠 was stopped.
    delivered_before_kill: BTreeSet<MessageId>,
    /// Documents waiting in the city's outbox for 海珠 (stopped) when the city was killed: held by
    /// the city alone, and by 越秀, which had handed them over.
    stranded: BTreeSet<MessageId>,
    killed_at_ms: u64,
}

/// Stops 海珠 so documents pile up at the city, kills the city, restores it from the backup and
/// starts both again.
fn lose_the_city(net: &mut LocalNetwork, stream: &Stream, haizhu: &[UnitAddress], backup_dir: &Path) -> Outage {
    let after_backup = stream.count();
    wait_for("the stream going on after the backup", Duration::from_secs(30), || (stream.count() >= after_backup + 300).then_some(()));
    let delivered_before_kill = inbox_ids(net, haizhu);
    net.stop("gz.haizhu").expect("stop 海珠");
    let city = net.node("gz").client();
    wait_for("documents waiting at the city for 海珠", Duration::from_secs(30), || {
        (metric(&city, "exchange_outbox_depth", &[("peer", "gz.haizhu")]) >= 100.0).then_some(())
    });
    // Waiting at the city, and not at 海珠 (a batch 海珠 took just before it stopped may still wait
    // at the city for its acknowledgement).
    let waiting = query_ids(&net.node("gz").database_path(), "SELECT message_id FROM outbox WHERE next_hop = 'gz.haizhu'");
    let at_haizhu = query_ids(&net.node("gz.haizhu").database_path(), "SELECT id FROM messages");
    let stranded: BTreeSet<MessageId> = waiting.difference(&at_haizhu).copied().collect();
    let killed_at_ms = exchange_wire::now_ms();
    net.kill("gz").expect("kill -9 the city node");
    let during_outage = stream.count();
    wait_for("documents queued at 越秀 during the outage", Duration::from_secs(30), || (stream.count() >= during_outage + 50).then_some(()));
    let o = restore(&net.node("gz").config_path, backup_dir);
    assert!(o.status.success(), "restore: {}", text(&o));
    let aside = folders_named(&net.node("gz").data_dir, "before-restore-");
    assert_eq!(aside.len(), 1, "the replaced data is kept aside");
    assert!(aside[0].join("node.db").exists(), "the old database moved aside, not deleted");
    assert!(net.node("gz").data_dir.join("attachments").read_dir().unwrap().count() >= 1, "the attachment restored");
    net.start("gz.haizhu").expect("start 海珠 again");
    net.start("gz").expect("start the restored city node");
    Outage { delivered_before_kill, stranded, killed_at_ms }
}

/// Sends one document with a 3 MiB attachment through the CLI; returns it as sent.
fn send_with_attachment(net: &LocalNetwork, from: &UnitAddress, to: &UnitAddress) -> Sent {
    let scan = net.root.join("防汛责任区划图.pdf");
    std::fs::write(&scan, (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<u8>>()).unwrap();
    let body = net.root.join("notice.txt");
    std::fs::write(&body, "关于做好防汛工作的通知（附件：责任区划图）").unwrap();
    let key = net.unit_key_file(from).unwrap();
    let submitted_at_ms = exchange_wire::now_ms();
    let o = Command::new(admin_binary())
        .args(["--node", &net.node(from.node_part()).api_url, "send", "--key", key.to_str().unwrap(), "--from", from.as_str()])
        .args(["--to", to.as_str(), "--title", "关于做好防汛工作的通知", "--attach", scan.to_str().unwrap(), body.to_str().unwrap()])
        .env("EXCHANGE_TOKEN", &net.unit_tokens[from])
        .env("EXCHANGE_PENDING_DIR", net.root.join("pending"))
        .output()
        .unwrap();
    assert!(o.status.success(), "send with an attachment: {}", text(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().parse().expect("the message id on stdout");
    Sent { id, from: from.clone(), to: to.clone(), submitted_at_ms }
}

/// Message ids from a node's database file, read-only (the node may be running).
fn query_ids(db: &Path, sql: &str) -> BTreeSet<MessageId> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(db).read_only(true).connect().await.expect("open the database");
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string())).fetch_all(&mut conn).await.expect("query");
        rows.into_iter().map(|id| exchange_wire::Digest(id.try_into().expect("32-byte ids"))).collect()
    })
}

/// The backup folder holds a private, complete copy, and commits went on while it was taken.
fn check_backup_folder(m: &BackupManifest, dir: &Path, live_db: &Path) {
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(m.node.as_str(), "gz");
    let db = dir.join("node.db");
    assert_eq!(std::fs::metadata(&db).unwrap().permissions().mode() & 0o777, 0o600, "the database copy is private");
    assert_eq!(std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o700, "the backup folder is private");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), m.database.bytes);
    assert!(m.database.bytes > 40 * 1024 * 1024, "the copy holds the heavy documents ({} bytes)", m.database.bytes);
    assert!(m.attachments.files >= 1 && m.attachments.linked == m.attachments.files, "attachments hard-linked: {:?}", m.attachments);
    assert!(dir.join("manifest.json").exists());
    // Written during the copy: committed after the copy's snapshot, before the backup finished.
    let during = query_i64(
        live_db,
        &format!("SELECT COUNT(*) FROM messages WHERE seq > {} AND received_at_ms <= {}", m.database.messages_last_seq, m.finished_at_ms),
    );
    eprintln!(
        "backup: {} bytes in {} ms; {during} messages committed at the city while it was taken",
        m.database.bytes,
        m.finished_at_ms - m.taken_at_ms
    );
    assert!(during > 0, "writes went on during the backup");
    let in_copy = query_i64(&db, "SELECT COUNT(*) FROM messages");
    assert_eq!(in_copy, m.database.messages, "the manifest's marks are the copy's");
}

/// The report against what the test saw: documents that reached 海珠 before the backup began are in
/// the backup (not listed). Documents submitted after the backup finished were acknowledged by the
/// city after the backup if they reached 海珠 before the kill (listed as passed on to 海珠 and
/// recovered from 越秀) or were waiting at the city for 海珠 at the kill (recovered from 越秀 only).
/// Documents submitted after the kill are not listed.
fn check_report(page: &ReconciliationPage, sent: &[Sent], m: &BackupManifest, before_backup: &BTreeSet<MessageId>, outage: &Outage) {
    let report = page.report.as_ref().expect("a report");
    assert_eq!(report.state, ReconcileState::Done);
    assert_eq!(report.backup_taken_at_ms, m.taken_at_ms);
    assert!(report.neighbours.iter().all(|n| n.answered) && report.neighbours.len() == 2, "{:?}", report.neighbours);
    assert_eq!(page.entries.len() as u64, report.entries, "--json lists every entry");
    let by_id: HashMap<MessageId, &Sent> = sent.iter().map(|s| (s.id, s)).collect();
    let mut listed: BTreeMap<(MessageId, &str, &str), &str> = BTreeMap::new();
    for e in page.entries.iter().filter(|e| e.kind == "document") {
        let s = by_id.get(&e.id).unwrap_or_else(|| panic!("listed document {} was never sent", short(&e.id)));
        assert!(!before_backup.contains(&e.id), "{} reached 海珠 before the backup, yet is listed", short(&e.id));
        assert!(s.submitted_at_ms < outage.killed_at_ms, "{} was submitted after the kill, yet is listed", short(&e.id));
        listed.insert((e.id, e.neighbour.as_str(), e.direction.as_str()), e.outcome.as_str());
    }
    let after_backup = |s: &&Sent| s.submitted_at_ms > m.finished_at_ms;
    let known: Vec<&Sent> = sent.iter().filter(after_backup).filter(|s| outage.delivered_before_kill.contains(&s.id)).collect();
    assert!(!known.is_empty(), "documents went through the city between the backup and the kill");
    for s in &known {
        assert_eq!(listed.get(&(s.id, "gz.haizhu", "to")), Some(&"passed-on"), "{} passed on to 海珠", short(&s.id));
        assert_eq!(listed.get(&(s.id, "gz.yuexiu", "from")), Some(&"recovered"), "{} recovered from 越秀", short(&s.id));
    }
    let stranded: Vec<&Sent> = sent.iter().filter(after_backup).filter(|s| outage.stranded.contains(&s.id)).collect();
    assert!(stranded.len() >= 50, "documents were held by the city alone at the kill ({})", stranded.len());
    for s in &stranded {
        assert_eq!(listed.get(&(s.id, "gz.yuexiu", "from")), Some(&"recovered"), "{} recovered from 越秀", short(&s.id));
        assert_eq!(listed.get(&(s.id, "gz.haizhu", "to")), None, "{} never reached 海珠 before the kill", short(&s.id));
    }
    let c = &report.counts;
    assert!(c.recovered > 0 && c.passed_on > 0 && c.held > 0, "{c:?}");
    assert_eq!(c.unrecoverable, 0, "nothing was purged anywhere");
    assert!(report.unknowable.contains("submit them again"), "{}", report.unknowable);
    eprintln!(
        "reconciliation: {c:?}; {} document entries; {} documents known to have crossed the city after the backup, {} stranded there",
        listed.len(),
        known.len(),
        stranded.len()
    );
}

/// The metric and the audit entries of the reconciliation.
fn check_counted_and_audited(net: &LocalNetwork, page: &ReconciliationPage) {
    let report = page.report.as_ref().unwrap();
    let city = net.node("gz").client();
    assert_eq!(metric(&city, "exchange_reconciliation_messages_total", &[("outcome", "recovered")]) as u64, report.counts.recovered);
    assert_eq!(metric(&city, "exchange_reconciliation_messages_total", &[("outcome", "passed-on")]) as u64, report.counts.passed_on);
    let requeued = metric(&net.node("gz.yuexiu").client(), "exchange_reconciliation_messages_total", &[("outcome", "requeued")]);
    assert!(requeued > 0.0, "越秀 queued documents again for the city");
    let (admin, mut after, mut events) = (net.node("gz").admin(), 0, BTreeSet::new());
    loop {
        let page = admin.audit_page(after, 10_000).expect("the city's audit log");
        if page.entries.is_empty() {
            break;
        }
        after = page.next_after;
        events.extend(page.entries.into_iter().filter(|e| e.category == "admin").map(|e| e.event));
    }
    for event in ["restored", "reconciled"] {
        assert!(events.contains(event), "audit entry {event} among {events:?}");
    }
}

/// Every acknowledged document in its recipient's inbox exactly once, seen once by the agency,
/// signed for, and signed for at the sender's node.
fn reconcile_delivery(net: &LocalNetwork, sent: &[Sent], seen: &HashMap<UnitAddress, HashMap<MessageId, usize>>) {
    let mut expected: BTreeMap<&UnitAddress, BTreeSet<MessageId>> = BTreeMap::new();
    for s in sent {
        expected.entry(&s.to).or_default().insert(s.id);
    }
    for (u, ids) in &expected {
        let inbox = read_inbox(&net.client_for(u), u);
        let mut copies: HashMap<MessageId, usize> = HashMap::new();
        for item in &inbox {
            *copies.entry(item.id).or_default() += 1;
        }
        assert_eq!(copies.len(), ids.len(), "{u}: the inbox holds exactly the documents sent to it");
        for id in ids.iter() {
            assert_eq!(copies.get(id), Some(&1), "{u}: {} in the inbox exactly once", short(id));
            assert_eq!(seen[*u].get(id), Some(&1), "{u}: the agency saw {} exactly once", short(id));
        }
        assert!(inbox.iter().all(|i| i.state == RecipientState::SignedFor));
    }
    let returned = metric(&net.node("gz.yuexiu").client(), "exchange_receipts_total", &[("direction", "returned")]) as usize;
    assert_eq!(returned, sent.len(), "each receipt recorded once at the sender's node");
    for s in sent.iter().step_by(7) {
        let status = net.client_for(&s.from).status(&s.id).unwrap();
        assert!(status.recipients.iter().all(|r| r.state == RecipientState::SignedFor && r.receipt.is_some()), "{}", short(&s.id));
    }
}

/// SHA-256 of a file, hex.
fn file_sha256(path: &Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn restore_refuses_another_nodes_backup_a_damaged_one_and_a_running_node() {
    let mut net = LocalNetwork::create(&node_binary(), None, &["gz", "gz.yuexiu"], FAST_RETRY).expect("lay out the network");
    net.start_all().expect("start the nodes");
    let (city, config) = (net.node("gz").data_dir.clone(), net.node("gz").config_path.clone());
    let yuexiu_backup = net.root.join("backup-yuexiu");
    backup(&net, "gz.yuexiu", &yuexiu_backup);
    let good = net.root.join("backup-gz");
    let manifest = backup(&net, "gz", &good);
    let o = admin(net.node("gz"), &["backup", "--out", good.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "a backup into a folder that is not empty: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"), "{}", text(&o));

    // Behind the operator token, like every admin route.
    let sneaky = net.root.join("backup-without-token");
    let body = serde_json::json!({ "out": sneaky.to_str().unwrap() }).to_string();
    let (status, answer) = post_raw(&format!("{}/admin/v1/backup", net.node("gz").admin_url), body.as_bytes(), None);
    assert_eq!((status, answer["error"].as_str()), (401, Some("unauthenticated")), "{answer}");
    assert!(!sneaky.exists(), "nothing written without the operator token");

    let o = restore(&config, &good);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("seems to be running"), "running node: {}", text(&o));
    net.stop("gz").expect("stop the city");
    let before = file_sha256(&city.join("node.db"));

    let damaged = |name: &str, damage: &dyn Fn(&Path)| -> PathBuf {
        let dir = net.root.join(name);
        std::fs::create_dir(&dir).unwrap();
        for f in ["node.db", "manifest.json"] {
            std::fs::copy(good.join(f), dir.join(f)).unwrap();
        }
        damage(&dir);
        dir
    };
    let flipped = damaged("flipped", &|dir| {
        let mut bytes = std::fs::read(dir.join("node.db")).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 24] {
            *b ^= 0x5a;
        }
        std::fs::write(dir.join("node.db"), bytes).unwrap();
    });
    let truncated = damaged("truncated", &|dir| {
        let db = dir.join("node.db");
        let bytes = std::fs::read(&db).unwrap();
        std::fs::write(&db, &bytes[..bytes.len() / 2]).unwrap();
        // The manifest made to match, as if the file had been damaged before it was written.
        let mut m = manifest.clone();
        (m.database.bytes, m.database.sha256) = ((bytes.len() / 2) as u64, file_sha256(&db));
        std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    });
    let not_a_backup = damaged("not-a-backup", &|dir| std::fs::remove_file(dir.join("manifest.json")).unwrap());
    for (from, expect) in [
        (&yuexiu_backup, "is a backup of node gz.yuexiu"),
        (&flipped, "is damaged"),
        (&truncated, "integrity check"),
        (&not_a_backup, "has no manifest.json"),
    ] {
        let o = restore(&config, from);
        assert_eq!(o.status.code(), Some(1), "{}: {}", from.display(), text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(expect) && err.contains("nothing was changed"), "{}", text(&o));
        assert_eq!(file_sha256(&city.join("node.db")), before, "the city's database untouched after {}", from.display());
        assert!(folders_named(&city, "before-restore-").is_empty() && !city.join("node.db.restoring").exists());
    }

    let o = restore(&config, &good);
    assert!(o.status.success(), "restore from the good backup: {}", text(&o));
    net.start("gz").expect("start the restored city");
    let o = admin(net.node("gz"), &["--json", "reconcile", "--wait", "60"]);
    assert!(o.status.success(), "reconcile: {}", text(&o));
    let page: ReconciliationPage = serde_json::from_slice(&o.stdout).unwrap();
    let report = page.report.expect("a report");
    assert_eq!((report.state, report.neighbours.len()), (ReconcileState::Done, 1));
    assert_eq!(report.counts.unrecoverable, 0);
}
