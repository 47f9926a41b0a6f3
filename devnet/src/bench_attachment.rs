//! `exchange-node bench --attachment-mib N`: one document with an N MiB attachment relayed
//! 越秀 → 广州 → 海珠, every node a real process on loopback.
//!
//! 1. **Peer on the same machine, same run**: what one hop must do with the bytes at the least,
//!    measured in this process: SHA-256 of every byte and writing it to disk with an `fsync` per
//!    1 MiB chunk (the durability a chunk needs before it is acknowledged).
//! 2. The attachment is uploaded to 越秀 (`PUT /v1/attachments/…`), the document submitted, and the
//!    time each node holds the whole attachment is read off its `exchange_attachment_bytes_received_total`
//!    (polled every 20 ms), as is the time 海珠 holds its first chunk (cut-through: the city passes
//!    chunks on while they still arrive, so the two hops overlap), then the delivery into 海珠's
//!    inbox and the download there.
//! 3. Every node's peak resident memory (VmHWM) is printed against the 256 MiB bound.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use exchange_wire::document::Attachment;
use exchange_wire::client::ApiClient;
use exchange_wire::{Envelope, Kind, MessageId, Priority, UnitAddress};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::launcher::LocalNetwork;
use exchange_node_core::storage::attachments::CHUNK_BYTES;

const MIB: u64 = 1024 * 1024;
/// The brief's bound on each node's resident memory while relaying a large document.
const RSS_BOUND_MIB: u64 = 256;

/// Runs the attachment benchmark with an attachment of `mib` MiB.
pub fn run(args: &super::bench::BenchArgs, mib: u64) -> anyhow::Result<()> {
    if mib == 0 {
        bail!("--attachment-mib must be at least 1");
    }
    let size = mib * MIB;
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!("== Attachment benchmark ({profile} build): one document with a {mib} MiB attachment, 越秀 → 广州 → 海珠");
    let work = tempfile::tempdir()?;
    let file = work.path().join("scan.bin");
    write_file(&file, size)?;
    let attachment = Attachment::of_file(&file, "application/octet-stream")?;

    // 1. The peer.
    let floor = floor_mb_s(&file, &work.path().join("floor.bin"))?;
    println!("\n== Peer: one hop's least work per byte, measured in this process");
    println!("   SHA-256 and write with an fsync per {} MiB chunk: {floor:.0} MB/s", CHUNK_BYTES / MIB);

    // 2. The network.
    let binary = std::env::current_exe().context("cannot find the exchange-node binary")?;
    let mut net = LocalNetwork::create(&binary, args.dir.as_deref(), &super::bench::NODES, &args.node_config)?;
    let result = net.start_all().and_then(|()| relay(&net, &file, &attachment, size, floor));
    if result.is_err() {
        for id in super::bench::NODES {
            eprintln!("--- last log lines of node {id} ---\n{}", net.log_tail(id, 15));
        }
    }
    net.stop_all();
    if args.dir.is_some() {
        println!("   files kept in {}", net.keep_files().display());
    }
    let outcome = result?;
    std::fs::write(&args.json, serde_json::to_vec_pretty(&outcome.0)?).with_context(|| format!("cannot write {}", args.json.display()))?;
    println!("   result written to {}", args.json.display());
    if !outcome.1.is_empty() {
        for e in &outcome.1 {
            eprintln!("   {e}");
        }
        bail!("{} problem(s)", outcome.1.len());
    }
    println!("== Benchmark finished: the attachment arrived whole and verified; every node stayed under {RSS_BOUND_MIB} MiB");
    Ok(())
}

pub(crate) fn write_file(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut block: Vec<u8> = (0..MIB as usize).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut written = 0u64;
    while written < size {
        block[..8].copy_from_slice(&written.to_be_bytes());
        let n = (size - written).min(MIB) as usize;
        f.write_all(&block[..n])?;
        written += n as u64;
    }
    f.flush()?;
    Ok(())
}

/// MB/s of SHA-256 plus a durable chunked write of `file` (read from the page cache).
fn floor_mb_s(file: &Path, out: &Path) -> anyhow::Result<f64> {
    use std::io::Read;
    let mut src = std::fs::File::open(file)?;
    let mut dst = std::fs::File::create(out)?;
    let mut buf = vec![0u8; CHUNK_BYTES as usize];
    let mut hasher = Sha256::new();
    let started = Instant::now();
    let mut total = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        dst.sync_data()?;
        total += n as u64;
    }
    let _ = hasher.finalize();
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(out)?;
    Ok(total as f64 / 1e6 / secs)
}

fn received(net: &LocalNetwork, node: &str) -> f64 {
    let text = net.node(node).client().metrics_text().unwrap_or_default();
    super::bench::metric_sum(&text, "exchange_attachment_bytes_received_total", &[])
}

fn relay(net: &LocalNetwork, file: &Path, a: &Attachment, size: u64, floor: f64) -> anyhow::Result<(serde_json::Value, Vec<String>)> {
    super::bench::wait_links(net)?;
    let t = time_relay(net, file, a, size)?;
    let mb = size as f64 / 1e6;
    print_relay(&t, mb, floor);
    let (rss, errors) = peak_memory(net)?;
    let json = json!({
        "attachment_bytes": size,
        "peer_floor_mb_s": floor,
        "upload_s": t.upload,
        "at_city_s": t.city,
        "first_at_haizhu_s": t.first_far,
        "at_haizhu_s": t.haizhu,
        "delivered_s": t.delivered,
        "download_s": t.download,
        "end_to_end_mb_s": mb / t.delivered,
        "per_hop_mb_s": mb / t.city,
        "end_to_end_over_first_hop": t.delivered / t.city,
        "peak_rss_mib": rss,
    });
    Ok((json, errors))
}

/// The relay's times in seconds: upload and download on their own, the rest counted from the
/// document's submission.
#[derive(Clone, Copy)]
struct RelayTimes {
    upload: f64,
    /// The city holds the whole attachment.
    city: f64,
    /// 海珠 holds its first chunk, then the whole attachment.
    first_far: f64,
    haizhu: f64,
    /// The document is in the recipient's inbox.
    delivered: f64,
    download: f64,
}

/// Uploads the attachment to 越秀, submits the document naming it, follows it to 海珠's inbox and
/// downloads the attachment there.
fn time_relay(net: &LocalNetwork, file: &Path, a: &Attachment, size: u64) -> anyhow::Result<RelayTimes> {
    let from: exchange_wire::UnitAddress = "gz.yuexiu/liurong-street".parse()?;
    let to: exchange_wire::UnitAddress = "gz.haizhu/civil-affairs".parse()?;
    let sender = net.client_for(&from);

    let started = Instant::now();
    sender.upload_attachment(file, a).map_err(|e| anyhow::anyhow!("upload: {e}"))?;
    let upload = started.elapsed().as_secs_f64();

    let mut e = Envelope::new(Kind::Document, from.clone(), vec![to.clone()], vec![], Priority::Routine, "附件见扫描件".as_bytes());
    e.metadata.insert("title".into(), "关于报送图纸扫描件的函".into());
    a.describe(1, &mut e.metadata);
    let signed = e.sign(&net.unit_keys[&from]);
    let relay_start = Instant::now();
    sender.submit(&signed, "附件见扫描件".as_bytes()).map_err(|e| anyhow::anyhow!("submit: {e}"))?;
    let recipient = net.client_for(&to);
    let (city, first_far, haizhu, delivered) = follow(net, &recipient, &to, &signed.id, size, relay_start)?;

    let dest = file.with_file_name("downloaded.bin");
    let started = Instant::now();
    recipient.download_attachment(&signed.id, 1, a, &dest).map_err(|e| anyhow::anyhow!("download: {e}"))?;
    let download = started.elapsed().as_secs_f64();
    std::fs::remove_file(&dest)?;
    Ok(RelayTimes { upload, city, first_far, haizhu, delivered, download })
}

/// Polls every 20 ms until the document is in `to`'s inbox: each node holds the whole attachment
/// when its received counter reaches the size. Returns, in seconds after `relay_start`, when the
/// city held it all, when 海珠 held its first chunk and all of it, and when the document arrived.
fn follow(
    net: &LocalNetwork,
    recipient: &ApiClient,
    to: &UnitAddress,
    id: &MessageId,
    size: u64,
    relay_start: Instant,
) -> anyhow::Result<(f64, f64, f64, f64)> {
    let (mut at_city, mut at_haizhu, mut first_at_haizhu) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    let delivered = loop {
        if at_city.is_none() && received(net, "gz") >= size as f64 {
            at_city = Some(relay_start.elapsed().as_secs_f64());
        }
        let at_far = received(net, "gz.haizhu");
        if first_at_haizhu.is_none() && at_far > 0.0 {
            first_at_haizhu = Some(relay_start.elapsed().as_secs_f64());
        }
        if at_haizhu.is_none() && at_far >= size as f64 {
            at_haizhu = Some(relay_start.elapsed().as_secs_f64());
        }
        let inbox = recipient.inbox(to, 0, 10, Duration::ZERO).map_err(|e| anyhow::anyhow!("inbox: {e}"))?;
        if inbox.items.iter().any(|i| i.id == *id) {
            break relay_start.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            bail!("the document did not arrive within 600 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (city, haizhu) = (at_city.unwrap_or(delivered), at_haizhu.unwrap_or(delivered));
    Ok((city, first_at_haizhu.unwrap_or(haizhu), haizhu, delivered))
}

fn print_relay(t: &RelayTimes, mb: f64, floor: f64) {
    let RelayTimes { upload, city, first_far, haizhu, delivered, download } = *t;
    println!("\n== Relay of {mb:.0} MB");
    println!("   upload to 越秀 (HTTP, streamed)        {upload:>7.2} s  {:>6.0} MB/s", mb / upload);
    println!("   越秀 → 广州 (whole attachment at gz)   {city:>7.2} s  {:>6.0} MB/s", mb / city);
    println!("   广州 → 海珠 (first chunk at 海珠)       {first_far:>7.2} s  (cut-through: before the city holds it all)");
    println!("   广州 → 海珠 (whole attachment at 海珠) {haizhu:>7.2} s  {:>7.2} s after the city", haizhu - city);
    println!("   document in 海珠's inbox after         {delivered:>7.2} s  {:>6.0} MB/s end to end", mb / delivered);
    println!("   download at 海珠 (HTTP, streamed)      {download:>7.2} s  {:>6.0} MB/s", mb / download);
    // The hops overlap: the first one's rate is the rate of both, and the end-to-end time is about
    // one hop's (a ratio of 2.0 would be store and forward).
    let per_hop = mb / city;
    println!("   per hop {per_hop:.0} MB/s = {:.0}% of the peer's {floor:.0} MB/s", 100.0 * per_hop / floor);
    println!("   end to end / first hop = {:.2} (1.0: the hops fully overlap; 2.0: store and forward)", delivered / city);
}

/// Every node's peak resident memory (VmHWM) in MiB, printed against the bound; a node over it is
/// an error.
fn peak_memory(net: &LocalNetwork) -> anyhow::Result<(serde_json::Map<String, serde_json::Value>, Vec<String>)> {
    let mut errors = Vec::new();
    let mut rss = serde_json::Map::new();
    println!("\n== Peak resident memory (VmHWM)");
    for id in super::bench::NODES {
        let peak = net.node(id).peak_resident_bytes()? / MIB;
        println!("   {id:<10} {peak:>4} MiB (bound {RSS_BOUND_MIB} MiB)");
        if peak >= RSS_BOUND_MIB {
            errors.push(format!("{id} peaked at {peak} MiB resident, over {RSS_BOUND_MIB} MiB"));
        }
        rss.insert(id.to_string(), json!(peak));
    }
    Ok((rss, errors))
}
