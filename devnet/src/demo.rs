//! `exchange-node demo`: the README's first command. A city node and two district nodes run as real
//! processes on loopback with SQLite under a temporary folder; a street office in 越秀 sends a
//! document to a bureau in 海珠 (主送) and a city department (抄送); both recipients sign for it; the
//! demo prints the hop-by-hop timeline and the verified receipts; then the root signs the example
//! data-sharing catalog, two bureaus subscribe to person.death and a death registered in 越秀 reaches
//! both, signed by civil affairs. It stops the nodes and exits 0, or exits non-zero saying what failed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use exchange_wire::api::{RecipientState, StatusResponse};
use exchange_wire::receipt::{Receipt, signed_for};
use exchange_wire::{Envelope, Kind, MessageId, Priority, SignedEnvelope, UnitAddress};
use exchange_wire::document::Attachment;

use crate::launcher::LocalNetwork;

/// Options of the demo.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Folder for configs, node keys, databases and logs, every unit's key and API token (`units/`,
    /// mode 0600) and `network.toml` (every node's addresses and every unit's files), kept afterwards
    /// (default: a temporary folder, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the folder after the demo.
    #[arg(long)]
    pub keep: bool,
}

const NODES: [&str; 3] = ["gz", "gz.yuexiu", "gz.haizhu"];
const SENDER: &str = "gz.yuexiu/liurong-street";
const MAIN_RECIPIENT: &str = "gz.haizhu/civil-affairs";
const COPY_RECIPIENT: &str = "gz/civil-affairs";

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let binary = std::env::current_exe().context("cannot find the exchange-node binary")?;
    let mut net = LocalNetwork::create(&binary, args.dir.as_deref(), &NODES, "")?;
    println!("== Exchange network demo: city node 广州 and district nodes 越秀, 海珠 on loopback");
    println!("   folder: {}", net.root.display());
    let result = steps(&mut net);
    if result.is_err() {
        for id in NODES {
            eprintln!("--- last log lines of node {id} ---\n{}", net.log_tail(id, 15));
        }
    }
    net.stop_all();
    if args.keep || args.dir.is_some() {
        let root = net.keep_files();
        println!("   files kept in {}; start the nodes again with `exchange-node run --config {}/<node>.toml`", root.display(), root.display());
        println!("   and act for a unit with its files: EXCHANGE_TOKEN=$(cat units/<unit>.token) exchange-admin --node <api> ... --key units/<unit>.key");
    }
    match &result {
        Ok(()) => println!("== Demo finished: the document and its attachment crossed both tiers, both signed receipts verified, the death reached both subscribers, and the query was answered."),
        Err(_) => eprintln!("== Demo FAILED"),
    }
    result
}

/// Bytes standing in for a scan (each KiB differs).
fn scan(size: usize) -> Vec<u8> {
    (0..size).map(|i| ((i / 1024) as u8).wrapping_mul(31) ^ (i as u8)).collect()
}

fn unit(s: &str) -> UnitAddress {
    s.parse().expect("demo addresses are valid")
}

fn unit_name(net: &LocalNetwork, u: &UnitAddress) -> String {
    net.topology.units.iter().find(|t| &t.address == u).map(|t| t.name.clone()).unwrap_or_default()
}

fn steps(net: &mut LocalNetwork) -> anyhow::Result<()> {
    net.start_all()?;
    println!();
    for line in net.address_table().lines() {
        println!("   {line}");
    }
    // Every unit's key and token, so that a kept folder can be acted in afterwards.
    let index = net.write_credentials()?;
    println!("   units' keys and API tokens (0600): {}; index of nodes and units: {}", net.root.join("units").display(), index.display());

    let sent = send_notice(net)?;
    for (recipient, node) in [(&sent.to, "gz.haizhu"), (&sent.cc, "gz")] {
        receive(net, &sent, recipient, node)?;
    }
    let status = wait_signed_for(net, &sent.id)?;
    print_timeline(net, &status, &sent.id, sent.t0)?;
    check_receipts(net, &status, &sent.id)?;
    share_a_death(net)?;
    ask_a_question(net)
}

/// The notice as sent: who sent it to whom, its payload and attachment, its id and when it left.
struct Sent {
    sender: UnitAddress,
    to: UnitAddress,
    cc: UnitAddress,
    payload: Vec<u8>,
    scan: Attachment,
    id: MessageId,
    /// ms since the epoch, just before the upload.
    t0: u64,
}

/// 越秀's street office signs a flood-season notice with a scanned map attached, uploads the map and
/// submits the notice to 海珠 (主送) and the city (抄送).
fn send_notice(net: &LocalNetwork) -> anyhow::Result<Sent> {
    let (sender, to, cc) = (unit(SENDER), unit(MAIN_RECIPIENT), unit(COPY_RECIPIENT));
    let payload = "各有关单位：\n为做好今年汛期防汛防风工作，确保人民群众生命财产安全，现将有关事项通知如下……\n\n越秀区六榕街道办事处\n2005年5月20日\n"
        .as_bytes()
        .to_vec();
    let mut envelope = Envelope::new(Kind::Document, sender.clone(), vec![to.clone()], vec![cc.clone()], Priority::Express, &payload);
    for (k, v) in [
        ("title", "关于做好2005年汛期防汛防风工作的通知"),
        ("doc-number", "越六榕〔2005〕12号"),
        ("issuer", "越秀区六榕街道办事处"),
        ("doc-type", "通知"),
        ("file-name", "防汛通知.txt"),
    ] {
        envelope.metadata.insert(k.into(), v.into());
    }
    // A scanned map as an attachment (附件): uploaded in chunks before the document, its SHA-256 signed.
    let scan_path = net.root.join("防汛责任区划图.pdf");
    std::fs::write(&scan_path, scan(3 * 1024 * 1024 + 4321))?;
    let scan = Attachment::of_file(&scan_path, "application/pdf")?;
    scan.describe(1, &mut envelope.metadata);
    let signed = envelope.sign(&net.unit_keys[&sender]);
    let id = signed.id;
    let t0 = exchange_wire::now_ms();
    net.client_for(&sender).upload_attachment(&scan_path, &scan)?;
    let accepted = net.client_for(&sender).submit(&signed, &payload)?;
    println!("\n-> {} ({}) sends 《{}》 [加急]", sender, unit_name(net, &sender), signed.envelope.metadata["title"]);
    println!("   主送 {} ({}), 抄送 {} ({})", to, unit_name(net, &to), cc, unit_name(net, &cc));
    println!("   附件 {} ({} bytes, SHA-256 {}…), uploaded in 1 MiB chunks", scan.name, scan.size, &scan.sha256.to_hex()[..16]);
    println!("   message id {}  accepted by gz.yuexiu", accepted.id);
    Ok(Sent { sender, to, cc, payload, scan, id, t0 })
}

/// What a recipient's system does: waits for the notice in its inbox at `node`, checks the sender's
/// signature itself (offline), downloads the attachment and signs for the notice (签收).
fn receive(net: &LocalNetwork, sent: &Sent, recipient: &UnitAddress, node: &str) -> anyhow::Result<()> {
    let (sender, id, scan) = (&sent.sender, sent.id, &sent.scan);
    let item = wait_in_inbox(net, node, recipient, &id)?;
    let (got, got_payload) = item.message.decode().context("inbox item does not decode")?;
    got.verify(&net.unit_keys[sender].verifying_key()).context("sender signature does not verify")?;
    if got_payload != sent.payload {
        bail!("payload delivered to {recipient} differs from what was sent");
    }
    println!("<- delivered to {recipient} at node {node}; sender's signature verified offline");
    let saved = net.root.join(format!("{}.{}", recipient.as_str().replace('/', "_"), scan.name));
    net.client_for(recipient).download_attachment(&id, 1, scan, &saved)?;
    println!("   {recipient} downloads the 附件: SHA-256 matches the signed description");
    let receipt = signed_for(recipient.clone(), sender.clone(), id, got.envelope.priority).sign(&net.unit_keys[recipient]);
    let r = net.client_for(recipient).sign_for(recipient, &id, &receipt)?;
    println!("   {recipient} signs for it (签收): receipt {}", r.receipt_id);
    Ok(())
}

/// Every node's custody events for the notice and its receipts, in time order (ms after `t0`), and
/// the path it took.
fn print_timeline(net: &LocalNetwork, status: &StatusResponse, id: &MessageId, t0: u64) -> anyhow::Result<()> {
    println!("\n== Hop-by-hop timeline (ms after submission)");
    let mut events = Vec::new();
    for n in net.nodes.values() {
        events.extend(n.admin().events(id)?.events);
    }
    for n in net.nodes.values() {
        for r in status.recipients.iter().filter_map(|r| r.receipt.as_ref()) {
            let signer = r.envelope.sender.clone();
            events.extend(n.admin().events(&r.id)?.events.into_iter().map(|mut e| {
                e.event = format!("receipt {}", e.event);
                e.unit.get_or_insert(signer.clone());
                e
            }));
        }
    }
    events.sort_by_key(|e| e.at_ms);
    for e in events.iter().filter(|e| e.event != "hop" && e.event != "delivery-reported") {
        let who = [e.unit.as_ref().map(|u| u.to_string()), e.peer.as_ref().map(|p| format!("peer {p}"))]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ");
        println!("   +{:>5} ms  {:<10} {:<20} {}", e.at_ms.saturating_sub(t0), e.node.as_str(), e.event, who);
    }
    println!("\n   path: {}", status.hops.iter().map(|h| h.node.to_string()).collect::<Vec<_>>().join(" -> "));
    Ok(())
}

/// Each recipient's signed receipt as the sender's node holds it, verified offline with the
/// recipient's public key and checked against the notice.
fn check_receipts(net: &LocalNetwork, status: &StatusResponse, id: &MessageId) -> anyhow::Result<()> {
    println!("\n== Signed receipts at the sender's node (verified offline with each recipient's public key)");
    for r in &status.recipients {
        let view = r.receipt.as_ref().with_context(|| format!("no receipt for {}", r.unit))?;
        let sig = exchange_wire::api::signature_from_hex(&view.signature).map_err(anyhow::Error::msg)?;
        let receipt = SignedEnvelope::from_parts(view.envelope.clone(), sig);
        receipt.verify(&net.unit_keys[&r.unit].verifying_key()).with_context(|| format!("receipt from {} does not verify", r.unit))?;
        let facts = Receipt::from_envelope(&receipt.envelope)?;
        if facts.for_message != *id || receipt.envelope.sender != r.unit || receipt.id != view.id {
            bail!("receipt from {} does not match the message", r.unit);
        }
        println!(
            "   {:<26} {:<10} at node {:<10} receipt {}  signature OK",
            r.unit.as_str(),
            r.state.as_str(),
            r.node.as_str(),
            &view.id.to_hex()[..16]
        );
    }
    Ok(())
}

/// Base-data sharing: the root signs the example catalog; the city social-security bureau and 海珠's
/// public-security bureau subscribe to person.death; 越秀's civil-affairs bureau registers a death;
/// both subscribers receive it, signed by civil affairs.
fn share_a_death(net: &LocalNetwork) -> anyhow::Result<()> {
    use exchange_wire::sharing::{self, StartFrom};
    println!("\n== Base-data sharing (数据共享): the root signs the catalog, two bureaus subscribe to person.death");
    let catalog = exchange_node_core::sharing::catalog_from_toml(include_str!("../../configs/catalog.toml"), std::path::Path::new("."))
        .map_err(anyhow::Error::msg)?;
    net.node("gz").admin().publish_catalog(&catalog)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !net.nodes.values().all(|n| n.admin().admin_catalog().is_ok_and(|c| c.version == catalog.version)) {
        if Instant::now() > deadline {
            bail!("the catalog did not reach every node within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (owner, subscribers) = (unit("gz.yuexiu/civil-affairs"), [unit("gz/labour-social-security"), unit("gz.haizhu/public-security")]);
    for s in &subscribers {
        let request = sharing::subscription_request(s.clone(), owner.clone(), "person.death", StartFrom::Beginning, "停发待遇、注销户口")
            .sign(&net.unit_keys[s]);
        net.client_for(s).subscribe(&request, "停发待遇、注销户口".as_bytes())?;
        println!("   {s} ({}) asks {owner} for person.death (open: granted at once)", unit_name(net, s));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !subscribers.iter().all(|s| {
        net.client_for(s).subscriptions(s).is_ok_and(|l| l.subscriptions.iter().any(|v| v.topic == "person.death" && v.state == "granted"))
    }) {
        if Instant::now() > deadline {
            bail!("the subscriptions were not granted within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let subject = "440104193001010011";
    let record = serde_json::json!({"id_number": subject, "name": "李四", "death_date": "2005-05-20", "place": "广州市越秀区"});
    let payload = serde_json::to_vec(&record)?;
    let signed = sharing::record(owner.clone(), "person.death", subject, &payload).sign(&net.unit_keys[&owner]);
    let published = net.client_for(&owner).publish(&signed, &payload)?;
    println!("-> {owner} ({}) registers a death: person.death #{} to {} subscribers", unit_name(net, &owner), published.seq, published.subscribers);
    for s in &subscribers {
        let page = net.client_for(s).records(s, "person.death", None, 10, Duration::from_secs(30))?;
        let item = page.items.first().with_context(|| format!("{s} received no person.death record within 30 s"))?;
        let (got, _) = item.record.decode()?;
        got.verify(&net.unit_keys[&owner].verifying_key()).context("the record's signature does not verify")?;
        println!("<- {s} reads person.death #{}: subject {}, civil affairs' signature verified offline", item.seq, item.subject);
        net.client_for(s).ack(s, "person.death", item.seq)?;
    }
    Ok(())
}

fn wait_in_inbox(net: &LocalNetwork, node: &str, unit: &UnitAddress, id: &MessageId) -> anyhow::Result<exchange_wire::api::InboxItem> {
    let client = net.client_for(unit);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut after = 0;
    while Instant::now() < deadline {
        let page = client.inbox(unit, after, 100, Duration::from_secs(5))?;
        after = page.next_after;
        if let Some(item) = page.items.into_iter().find(|i| &i.id == id) {
            return Ok(item);
        }
    }
    bail!("message {id} did not reach the inbox of {unit} at node {node} within 60 s")
}

fn wait_signed_for(net: &LocalNetwork, id: &MessageId) -> anyhow::Result<exchange_wire::api::StatusResponse> {
    let client = net.client_for(&unit(SENDER));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = client.status(id)?;
        if status.recipients.len() == 2 && status.recipients.iter().all(|r| r.state == RecipientState::SignedFor) {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let states: Vec<String> = status.recipients.iter().map(|r| format!("{} {}", r.unit, r.state.as_str())).collect();
            bail!("receipts did not all come back within 60 s: {}", states.join(", "));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 查询核验: the district police ask civil affairs whether a person is alive and get a signed answer.
fn ask_a_question(net: &LocalNetwork) -> anyhow::Result<()> {
    let (asker, registry) = (unit("gz.haizhu/public-security"), unit("gz.yuexiu/civil-affairs"));
    println!("\n== Queries (查询核验): {asker} asks {registry} whether a person is alive, due in 30 s");
    let question = br#"{"id_number":"440104193001010011"}"#;
    let deadline = exchange_wire::now_ms() + 30_000;
    let query = exchange_wire::query::question(asker.clone(), registry.clone(), "person.alive", deadline, question).sign(&net.unit_keys[&asker]);
    net.client_for(&asker).ask(&query, question)?;
    // The registry's system finds the query in its inbox and answers it, signed with its own key.
    let item = wait_in_inbox(net, "gz.yuexiu", &registry, &query.id)?;
    let answer_body = br#"{"alive":false,"death_date":"2005-05-20"}"#;
    let answer = exchange_wire::query::answer(registry.clone(), asker.clone(), item.id, answer_body).sign(&net.unit_keys[&registry]);
    net.client_for(&registry).answer(&registry, &item.id, &answer, answer_body)?;
    let status = net.client_for(&asker).query_status(&query.id, Duration::from_secs(30))?;
    let got = status.answer.with_context(|| format!("the query ended {} without an answer", status.state.as_str()))?;
    let (signed, body) = got.decode()?;
    signed.verify(&net.unit_keys[&registry].verifying_key()).context("the answer's signature does not verify")?;
    println!("<- answered by {} ({}): {} — signature verified offline", registry, unit_name(net, &registry), String::from_utf8_lossy(&body));
    Ok(())
}
