//! Shared helpers for the end-to-end tests: the node binaries (built once), local networks of real
//! node processes, waiting on conditions with deadlines, reading metrics, and looking into a node's
//! SQLite file the way an auditor would.

pub mod city_outage;
pub mod lazyfs;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;

mod small_fs;
mod sqlite_file;
mod traffic;
pub use small_fs::{SmallFs, is_root};
pub use sqlite_file::{flip_middle_page, flip_wal_frame, wal_cut_after_first_commit};
pub use traffic::{Sent, Stream, http_status, reconcile, wait_ready};
use exchange_devnet::launcher::LocalNetwork;
use exchange_wire::api::{InboxItem, SignedMessage};
use exchange_wire::client::ApiClient;
use exchange_wire::{Envelope, Kind, MessageId, Priority, SignedEnvelope, UnitAddress};

pub mod load;
pub mod netns;
pub mod rogue_peer;
pub mod wal;

/// The folder holding the built binaries (`target/debug`, or `target/release` under `cargo test --release`),
/// building them once per test process.
/// Integration tests of this crate do not trigger a build of other packages' binaries, so the first
/// caller runs `cargo build --workspace --bins` (quick when nothing changed).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // target/<profile>/deps/<test> -> target/<profile>: build the binaries with the same profile
        // as the tests (`cargo test --release` runs them against release binaries).
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe.parent().and_then(Path::parent).expect("target folder").to_path_buf();
        let mut args = vec!["build", "--workspace", "--bins", "--quiet"];
        if dir.file_name().is_some_and(|n| n == "release") {
            args.push("--release");
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        command.args(&args).current_dir(env!("CARGO_MANIFEST_DIR"));
        // `cargo test` gives this process the test crate's CARGO_PKG_*, CARGO_MANIFEST_* … variables.
        // Passed on, they change ring's build fingerprint (its build script tracks them), so ring and
        // everything above it would be rebuilt here, and again by the next `cargo test`.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR"]
                .iter()
                .any(|p| key.starts_with(p))
            {
                command.env_remove(&*key);
            }
        }
        let status = command
            .status()
            .expect("cannot run cargo to build the node binaries");
        assert!(status.success(), "building the node binaries failed");
        dir
    })
}

/// The `exchange-node` binary.
pub fn node_binary() -> PathBuf {
    bin_dir().join("exchange-node")
}

/// The `exchange-admin` binary.
pub fn admin_binary() -> PathBuf {
    bin_dir().join("exchange-admin")
}

/// A node's admin API as `exchange-admin` reaches it: the address and the operator token file.
#[derive(Debug, Clone)]
pub struct AdminAt {
    pub url: String,
    pub token_file: PathBuf,
}

impl AdminAt {
    pub fn of(node: &exchange_devnet::launcher::LocalNode) -> AdminAt {
        AdminAt { url: node.admin_url.clone(), token_file: node.admin_token_file() }
    }

    /// `exchange-admin --admin URL` with the node's operator token (EXCHANGE_ADMIN_TOKEN_FILE) and no
    /// unit token.
    pub fn command(&self) -> std::process::Command {
        let mut c = std::process::Command::new(admin_binary());
        c.arg("--admin").arg(&self.url).env("EXCHANGE_ADMIN_TOKEN_FILE", &self.token_file).env_remove("EXCHANGE_TOKEN");
        c
    }
}

/// Relay settings that make retries quick in tests (backoff capped at one second).
pub const FAST_RETRY: &str = "[relay]\nretry_initial_ms = 50\nretry_max_ms = 1000\n";

/// A started network of the city node and two district nodes (越秀, 海珠), on the store
/// [`on_postgres`] chooses.
pub fn three_nodes(extra_config: &str) -> LocalNetwork {
    let mut net = LocalNetwork::create(&node_binary(), None, &["gz", "gz.yuexiu", "gz.haizhu"], extra_config)
        .expect("lay out the network");
    if on_postgres() {
        put_on_postgres(&mut net);
    }
    net.start_all().expect("start the nodes");
    net
}

/// Whether the end-to-end tests built on [`three_nodes`] run their nodes on PostgreSQL
/// (`EXCHANGE_TEST_STORE=postgres`: the same tests on the other store; `.ci/run` runs a set of them
/// so) instead of the embedded SQLite default.
pub fn on_postgres() -> bool {
    std::env::var("EXCHANGE_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// Gives every node of `net` (not started yet) a fresh PostgreSQL database of its own, dropped with
/// the network after its nodes stopped.
pub fn put_on_postgres(net: &mut LocalNetwork) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let ids: Vec<String> = net.nodes.keys().map(|id| id.to_string()).collect();
    for id in ids {
        let db = rt.block_on(exchange_node_core::storage::postgres::scratch::ScratchDatabase::create());
        net.set_storage(&id, &format!("url = \"{}\"", db.url)).expect("point a node at its database");
        net.keep_alive.push(Box::new(db));
    }
}

pub fn unit(s: &str) -> UnitAddress {
    s.parse().expect("valid unit address")
}

/// A signed document.
pub fn document(key: &SigningKey, from: &str, to: &[&str], cc: &[&str], payload: &[u8], title: &str) -> SignedEnvelope {
    let mut e = Envelope::new(
        Kind::Document,
        unit(from),
        to.iter().map(|u| unit(u)).collect(),
        cc.iter().map(|u| unit(u)).collect(),
        Priority::Routine,
        payload,
    );
    e.metadata.insert("title".into(), title.into());
    e.sign(key)
}

/// Waits until `check` returns `Some`, polling every 20 ms, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a whole inbox (every page) without waiting.
pub fn read_inbox(client: &ApiClient, unit: &UnitAddress) -> Vec<InboxItem> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = client.inbox(unit, after, 1000, Duration::ZERO).expect("read inbox");
        if page.items.is_empty() {
            return all;
        }
        after = page.next_after;
        all.extend(page.items);
    }
}

/// The value of one Prometheus sample, e.g. `exchange_messages_rejected_total{reason="bad-signature"}`,
/// matching every label given (0 when absent).
pub fn metric(client: &ApiClient, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = client.metrics_text().expect("read /metrics");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Row counts of the custody tables in a node's SQLite file, read directly from the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredCounts {
    pub messages: i64,
    pub outbox: i64,
    pub inbox: i64,
    pub tracking: i64,
    /// Custody entries of the audit log.
    pub events: i64,
    /// Other audit-log entries (refusals, admin actions).
    pub audit: i64,
}

/// Reads [`StoredCounts`] from the database at `path` (read-only; the node may be running).
pub fn stored_counts(path: &Path) -> StoredCounts {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use sqlx::ConnectOptions;
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true);
        let mut conn = opts.connect().await.expect("open the node database");
        let mut count = async |from: &str| -> i64 {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {from}")))
                .fetch_one(&mut conn)
                .await
                .expect("count rows")
        };
        StoredCounts {
            messages: count("messages").await,
            outbox: count("outbox").await,
            inbox: count("inbox").await,
            tracking: count("tracking").await,
            events: count("audit_log WHERE category = 'custody'").await,
            audit: count("audit_log WHERE category <> 'custody'").await,
        }
    })
}

/// Signs for an inbox item as its recipient.
pub fn sign_for(client: &ApiClient, key: &SigningKey, recipient: &UnitAddress, item: &InboxItem) {
    let env = &item.message.envelope;
    let receipt = exchange_wire::receipt::signed_for(recipient.clone(), env.sender.clone(), item.id, env.priority).sign(key);
    client.sign_for(recipient, &item.id, &receipt).expect("sign for");
}

/// Decodes an inbox item and verifies the sender's signature offline.
pub fn verify_item(item: &InboxItem, sender_key: &SigningKey) -> (SignedEnvelope, Vec<u8>) {
    let (signed, payload) = item.message.decode().expect("inbox item decodes");
    signed.verify(&sender_key.verifying_key()).expect("sender signature verifies");
    assert_eq!(signed.id, item.id, "inbox id is the content-derived id");
    (signed, payload)
}

/// POSTs a raw body (for malformed-input tests) over a fresh HTTP/1.1 connection, with a unit's
/// token if given; returns the status and the body as JSON (or as a JSON string when it is not JSON).
pub fn post_raw(url: &str, body: &[u8], token: Option<&str>) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer and close before reading an oversized body: ignore write errors.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let status: u16 = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("HTTP status");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_string()));
    (status, json)
}

/// A message id's short form for messages.
pub fn short(id: &MessageId) -> String {
    id.to_hex()[..12].to_string()
}

/// Turns a signed envelope into the JSON submission.
pub fn submission(signed: &SignedEnvelope, payload: &[u8]) -> SignedMessage {
    SignedMessage::new(signed, payload)
}


/// An agency system reading one unit's inbox in the background: it long-polls, verifies each
/// sender's signature offline, signs for every document, and counts how often it saw each id (and
/// notes when it first saw it).
pub struct Receiver {
    stop: Arc<AtomicBool>,
    arrivals: Arc<std::sync::Mutex<HashMap<MessageId, Instant>>>,
    handle: Option<std::thread::JoinHandle<HashMap<MessageId, usize>>>,
}

impl Receiver {
    /// Starts reading `unit`'s inbox with `client` (its home node, with the unit's token). Transport
    /// errors (a node down) are retried, and a
    /// receipt whose answer was lost is re-sent unchanged, so it is recognised as a duplicate.
    pub fn spawn(client: ApiClient, unit: UnitAddress, key: SigningKey, sender_keys: Arc<BTreeMap<UnitAddress, SigningKey>>) -> Receiver {
        Self::start(client, unit, key, sender_keys, false)
    }

    /// Like [`Receiver::spawn`], but signs for each page of the inbox in one request, as a system
    /// working through a backlog would: it keeps up with thousands of documents, so when it first
    /// sees a document measures the network, not the reader.
    pub fn spawn_batched(client: ApiClient, unit: UnitAddress, key: SigningKey, sender_keys: Arc<BTreeMap<UnitAddress, SigningKey>>) -> Receiver {
        Self::start(client, unit, key, sender_keys, true)
    }

    fn start(client: ApiClient, unit: UnitAddress, key: SigningKey, sender_keys: Arc<BTreeMap<UnitAddress, SigningKey>>, batched: bool) -> Receiver {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let arrivals = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let arrived = arrivals.clone();
        let handle = std::thread::spawn(move || {
            let mut seen: HashMap<MessageId, usize> = HashMap::new();
            let mut after = 0;
            while !flag.load(Ordering::Relaxed) {
                let page = match client.inbox(&unit, after, 500, Duration::from_millis(500)) {
                    Ok(p) => p,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                let now = Instant::now();
                {
                    let mut first = arrived.lock().unwrap();
                    for i in &page.items {
                        first.entry(i.id).or_insert(now);
                    }
                }
                let mut receipts = Vec::with_capacity(page.items.len());
                for item in &page.items {
                    *seen.entry(item.id).or_default() += 1;
                    let sender = &item.message.envelope.sender;
                    verify_item(item, &sender_keys[sender]);
                    let env = &item.message.envelope;
                    receipts.push((item.id, exchange_wire::receipt::signed_for(unit.clone(), env.sender.clone(), item.id, env.priority).sign(&key)));
                }
                sign_page(&client, &unit, &receipts, batched);
                after = page.next_after;
            }
            seen
        });
        Receiver { stop, arrivals, handle: Some(handle) }
    }

    /// When the reader first saw `id` in the inbox, if it has.
    pub fn arrived(&self, id: &MessageId) -> Option<Instant> {
        self.arrivals.lock().unwrap().get(id).copied()
    }

    /// Stops reading and returns how often each id was seen.
    pub fn finish(mut self) -> HashMap<MessageId, usize> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().expect("receiver thread")
    }
}

/// Hands a page's receipts to the node, one request each or all in one, retrying transport errors
/// and temporary refusals (`storage-full`: a commit met a full disk, "try again later") with the same
/// receipts (a retried receipt is recognised as a duplicate). Any other refusal fails the test.
fn sign_page(client: &ApiClient, unit: &UnitAddress, receipts: &[(MessageId, SignedEnvelope)], batched: bool) {
    const TEMPORARY: &str = "storage-full";
    let retry = |e: exchange_wire::client::ClientError, what: &str| match e.code() {
        None | Some(TEMPORARY) => std::thread::sleep(Duration::from_millis(100)),
        Some(_) => panic!("sign-for of {what} by {unit} refused: {e}"),
    };
    if batched {
        let mut left: Vec<&(MessageId, SignedEnvelope)> = receipts.iter().collect();
        while !left.is_empty() {
            let envelopes: Vec<SignedEnvelope> = left.iter().map(|(_, r)| r.clone()).collect();
            match client.sign_for_batch(unit, &envelopes) {
                Ok(answer) => {
                    let mut again = Vec::new();
                    for (r, item) in answer.results.iter().zip(&left) {
                        match r {
                            exchange_wire::api::SignForResult::Refused(e) if e.error == TEMPORARY => again.push(*item),
                            exchange_wire::api::SignForResult::Refused(e) => panic!("sign-for of {} by {unit} refused: {e:?}", item.0),
                            _ => {}
                        }
                    }
                    if !again.is_empty() {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    left = again;
                }
                Err(e) => retry(e, &format!("{} documents", left.len())),
            }
        }
        return;
    }
    for (id, receipt) in receipts {
        loop {
            match client.sign_for(unit, id, receipt) {
                Ok(_) => break,
                Err(e) => retry(e, &id.to_string()),
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Processes whose command line mentions `needle` (a benchmark's node and peer processes, to check
/// that a run left none behind).
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok().map(|c| (e.file_name(), c)))
        .map(|(pid, c)| format!("{} {}", pid.to_string_lossy(), String::from_utf8_lossy(&c).replace('\0', " ")))
        .filter(|c| c.contains(needle))
        .collect()
}

/// A JSON file a run wrote.
pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}
