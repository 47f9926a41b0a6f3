//! Large attachments (附件): a 1 GiB scan relayed 越秀 → 广州 → 海珠 through an interrupted link,
//! resumed from the last committed chunk, verified end to end, with every node's resident memory
//! measured; and the refusals around attachments.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use exchange_tests::*;
use exchange_wire::document::Attachment;
use exchange_wire::{Envelope, Kind, Priority, SignedEnvelope, UnitAddress};
use sha2::{Digest as _, Sha256};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
/// The brief's bound on every node's resident memory while it relays a 1 GiB document.
const RSS_BOUND: u64 = 256 * MIB;

fn admin_as(node_url: &str, token: &str, args: &[&str]) -> Output {
    Command::new(admin_binary()).arg("--node").arg(node_url).args(args).env("EXCHANGE_TOKEN", token).output().expect("run exchange-admin")
}

/// Writes `size` bytes that do not repeat (each MiB differs), fast enough for a test.
fn write_scan(path: &Path, size: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block: Vec<u8> = (0..MIB as usize).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut written = 0;
    while written < size {
        block[..8].copy_from_slice(&written.to_be_bytes());
        let n = (size - written).min(MIB) as usize;
        f.write_all(&block[..n]).unwrap();
        written += n as u64;
    }
    f.flush().unwrap();
}

fn sha256_of(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return hex::encode(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

/// Uploads `scan` (described by `a`) to the sender's node, then submits a document of `priority`
/// with `body` from `sender` to `recipient` that cites it.
fn send_with_scan(
    net: &exchange_devnet::launcher::LocalNetwork,
    (sender, recipient): (&UnitAddress, &UnitAddress),
    (scan, a): (&Path, &Attachment),
    priority: Priority,
    body: &[u8],
) -> SignedEnvelope {
    let client = net.client_for(sender);
    client.upload_attachment(scan, a).unwrap();
    let mut e = Envelope::new(Kind::Document, sender.clone(), vec![recipient.clone()], vec![], priority, body);
    a.describe(1, &mut e.metadata);
    let signed = e.sign(&net.unit_keys[sender]);
    client.submit(&signed, body).unwrap();
    signed
}

#[test]
fn a_1_gib_attachment_crosses_an_interrupted_link_resumes_and_arrives_verified() {
    let mut net = three_nodes(FAST_RETRY);
    let sender = unit("gz.yuexiu/liurong-street");
    let recipient = unit("gz.haizhu/civil-affairs");
    let (yuexiu, haizhu) = (net.node("gz.yuexiu").client(), net.node("gz.haizhu").client());
    let scan = net.root.join("城市更新项目图纸扫描件.pdf");
    write_scan(&scan, GIB);
    let body = net.root.join("notice.txt");
    std::fs::write(&body, "关于报送城市更新项目图纸的通知（附件：图纸扫描件）").unwrap();
    let sender_key = net.unit_key_file(&sender).unwrap();

    // The agency sends the document with its attachment through the CLI: uploaded in chunks to
    // 越秀, then the signed document.
    let started = Instant::now();
    let sent = admin_as(
        &net.node("gz.yuexiu").api_url,
        &net.unit_tokens[&sender],
        &[
            "send",
            "--key",
            sender_key.to_str().unwrap(),
            "--from",
            sender.as_str(),
            "--to",
            recipient.as_str(),
            "--title",
            "关于报送城市更新项目图纸的通知",
            "--attach",
            scan.to_str().unwrap(),
            body.to_str().unwrap(),
        ],
    );
    assert!(sent.status.success(), "send failed: {}", String::from_utf8_lossy(&sent.stderr));
    let id: exchange_wire::MessageId = String::from_utf8(sent.stdout).unwrap().trim().parse().unwrap();
    eprintln!("{:>6.1} s  uploaded to 越秀 and accepted", started.elapsed().as_secs_f64());

    // Interrupt the 越秀 → 广州 link mid-transfer: kill -9 the city node once a third has gone over.
    let sent_to_city = || metric(&yuexiu, "exchange_attachment_bytes_sent_total", &[("peer", "gz")]) as u64;
    wait_for("a third of the attachment sent to the city", Duration::from_secs(300), || (sent_to_city() > GIB / 3).then_some(()));
    net.kill("gz").expect("kill -9 the city node");
    let before_kill = sent_to_city();
    assert!(before_kill < GIB, "the transfer was already over when the link was cut");
    eprintln!("{:>6.1} s  city killed after {} MiB had gone over", started.elapsed().as_secs_f64(), before_kill / MIB);
    net.start("gz").expect("restart the city node");

    // The document arrives in 海珠 once, after its attachment.
    let item = wait_for("the document in 海珠's inbox", Duration::from_secs(600), || {
        read_inbox(&net.client_for(&recipient), &recipient).into_iter().find(|i| i.id == id)
    });
    assert_eq!(read_inbox(&net.client_for(&recipient), &recipient).iter().filter(|i| i.id == id).count(), 1);
    eprintln!("{:>6.1} s  delivered into 海珠's inbox", started.elapsed().as_secs_f64());

    // Resumed, not restarted: 越秀 sent the bytes before the cut plus only what the city lacked.
    assert!(metric(&yuexiu, "exchange_attachment_resumes_total", &[("peer", "gz")]) >= 1.0, "the transfer resumed");
    let total = sent_to_city();
    assert!(
        total < GIB + 64 * MIB,
        "越秀 sent {total} bytes for a {GIB}-byte attachment: it must resume from the last committed chunk, not start again \
         (it had sent {before_kill} bytes before the cut)"
    );

    // Memory: every node stayed within the bound while relaying (peak resident set size).
    for id in ["gz.yuexiu", "gz", "gz.haizhu"] {
        let rss = net.node(id).peak_resident_bytes().unwrap();
        eprintln!("peak resident memory of {id} while relaying 1 GiB: {} MiB", rss / MIB);
        assert!(rss < RSS_BOUND, "{id} peaked at {} MiB resident, over {} MiB", rss / MIB, RSS_BOUND / MIB);
    }

    // The recipient saves and verifies it end to end: signature, then the attachment's SHA-256.
    let save = net.root.join("saved");
    let out = admin_as(
        &net.node("gz.haizhu").api_url,
        &net.unit_tokens[&recipient],
        &["inbox", "--unit", recipient.as_str(), "--verify", "--save", save.to_str().unwrap()],
    );
    assert!(out.status.success(), "inbox --save failed: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{:>6.1} s  downloaded and verified by the recipient", started.elapsed().as_secs_f64());
    let saved = save.join(format!("{id}.1.城市更新项目图纸扫描件.pdf"));
    assert_eq!(std::fs::metadata(&saved).unwrap().len(), GIB);
    assert_eq!(sha256_of(&saved), sha256_of(&scan), "the saved attachment is the one sent");
    let (signed, _) = item.message.decode().unwrap();
    assert_eq!(exchange_wire::document::attachments(&signed.envelope).unwrap()[0].sha256.to_hex(), sha256_of(&scan));
    let _ = haizhu;
    let _ = std::fs::remove_file(&scan);
    let _ = std::fs::remove_file(&saved);
}

#[test]
fn attachment_refusals_and_a_resumed_download() {
    let net = three_nodes(FAST_RETRY);
    let sender = unit("gz.yuexiu/liurong-street");
    let recipient = unit("gz.haizhu/civil-affairs");
    let bystander = unit("gz.haizhu/public-security");
    let (yuexiu, haizhu) = (net.client_for(&sender), net.client_for(&recipient));
    let key = &net.unit_keys[&sender];
    let scan = net.root.join("scan.pdf");
    write_scan(&scan, 3 * MIB + 12345);
    let a = Attachment::of_file(&scan, "application/pdf").unwrap();
    let doc = |a: &Attachment| {
        let mut e = Envelope::new(Kind::Document, sender.clone(), vec![recipient.clone()], vec![], Priority::Routine, b"body");
        a.describe(1, &mut e.metadata);
        e.sign(key)
    };

    // A document whose attachment was never uploaded: refused, counted, nothing stored.
    let err = yuexiu.submit(&doc(&a), b"body").unwrap_err();
    assert_eq!(err.code(), Some("attachment-missing"), "{err}");
    assert!(err.to_string().contains(&format!("PUT /v1/attachments/{}", a.sha256)), "{err}");
    assert_eq!(metric(&yuexiu, "exchange_messages_rejected_total", &[("reason", "attachment-missing")]), 1.0);

    // Bytes that are not the described file: refused when the last byte arrives, and discarded.
    let forged = net.root.join("forged.pdf");
    write_scan(&forged, a.size);
    std::fs::OpenOptions::new().write(true).open(&forged).unwrap().write_all(b"altered").unwrap();
    let err = yuexiu.upload_attachment(&forged, &a).unwrap_err();
    assert_eq!(err.code(), Some("attachment-mismatch"), "{err}");
    assert_eq!(yuexiu.attachment_status(&a.sha256).unwrap().committed_bytes, 0, "the forged bytes were discarded");

    // The real upload, in two goes: the first stops after two chunks, the second resumes there.
    let url = format!("{}/v1/attachments/{}?size={}&offset=0", net.node("gz.yuexiu").api_url, a.sha256, a.size);
    let first = std::fs::read(&scan).unwrap()[..(2 * MIB + 100) as usize].to_vec();
    let (status, answer) = put_raw(&url, &first, &net.unit_tokens[&sender]);
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["committed_bytes"], 2 * MIB, "whole chunks are kept, the torn tail is not");
    let (status, answer) = put_raw(&url, b"xx", &net.unit_tokens[&sender]);
    assert_eq!(status, 409, "an upload from the wrong offset is refused: {answer}");
    assert!(answer["message"].as_str().unwrap().contains(&format!("offset={}", 2 * MIB)), "{answer}");
    let done = yuexiu.upload_attachment(&scan, &a).unwrap();
    assert!(done.complete && done.committed_bytes == a.size, "{done:?}");

    let signed = doc(&a);
    yuexiu.submit(&signed, b"body").unwrap();
    wait_for("the document in 海珠's inbox", Duration::from_secs(60), || {
        read_inbox(&haizhu, &recipient).into_iter().find(|i| i.id == signed.id)
    });

    // Another unit of the same node may not read it; the recipient may, and an interrupted download
    // resumes with Range from what it already has.
    let err = net.client_for(&bystander).download_attachment(&signed.id, 1, &a, &net.root.join("stolen")).unwrap_err();
    assert_eq!(err.code(), Some("not-found"), "{err}");
    let dest = net.root.join("saved.pdf");
    std::fs::write(net.root.join("saved.pdf.part"), &std::fs::read(&scan).unwrap()[..MIB as usize + 7]).unwrap();
    let started = Instant::now();
    haizhu.download_attachment(&signed.id, 1, &a, &dest).unwrap();
    assert_eq!(sha256_of(&dest), a.sha256.to_hex());
    assert!(!net.root.join("saved.pdf.part").exists());
    eprintln!("resumed download in {:?}", started.elapsed());
}

/// PUT raw bytes with a token; the status and JSON answer.
fn put_raw(url: &str, body: &[u8], token: &str) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut resp = agent.put(url).header("Authorization", format!("Bearer {token}")).send(body).expect("PUT");
    let status = resp.status().as_u16();
    (status, serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap()).unwrap_or_default())
}

#[test]
fn an_attachment_over_a_transit_nodes_limit_fails_back_to_the_sender_instead_of_waiting_forever() {
    let mut net = exchange_devnet::launcher::LocalNetwork::create(&node_binary(), None, &["gz", "gz.yuexiu", "gz.haizhu"], FAST_RETRY).unwrap();
    // The city takes attachments up to 2 MiB only; 越秀 takes the default 4 GiB.
    let city_config = net.node("gz").config_path.clone();
    let mut config = std::fs::read_to_string(&city_config).unwrap();
    config.push_str("\n[limits]\nmax_attachment_bytes = 2097152\n");
    std::fs::write(&city_config, config).unwrap();
    net.start_all().unwrap();

    let sender = unit("gz.yuexiu/liurong-street");
    let recipient = unit("gz.haizhu/civil-affairs");
    let scan = net.root.join("scan.pdf");
    write_scan(&scan, 3 * MIB);
    let a = Attachment::of_file(&scan, "application/pdf").unwrap();
    let yuexiu = net.client_for(&sender);
    let signed = send_with_scan(&net, (&sender, &recipient), (&scan, &a), Priority::Routine, b"body");

    // The city refuses the attachment for good; the document is refused at the city in turn, kept
    // as a dead letter at 越秀, and its sender sees why.
    let status = wait_for("the recipient failed with the city's reason", Duration::from_secs(60), || {
        let s = yuexiu.status(&signed.id).ok()?;
        let r = s.recipients.into_iter().find(|r| r.unit == recipient)?;
        (r.state == exchange_wire::api::RecipientState::Failed).then_some(r)
    });
    let detail = status.detail.unwrap();
    assert!(detail.contains("limits.max_attachment_bytes"), "{detail}");
    assert!(read_inbox(&net.client_for(&recipient), &recipient).is_empty(), "nothing reached 海珠");
}

/// Sets a file's modification time `days` days back.
fn age_file(path: &Path, days: u64) {
    let then = std::time::SystemTime::now() - Duration::from_secs(days * 86_400);
    std::fs::File::options().write(true).open(path).unwrap().set_modified(then).unwrap();
}

/// Moves a node's custody timestamps `days` days back, in its SQLite file (the node is stopped).
fn age_database(db: &Path, days: i64) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(db).connect().await.unwrap();
        let shift = days * 86_400_000;
        for sql in ["UPDATE messages SET received_at_ms = received_at_ms - $1", "UPDATE inbox SET delivered_at_ms = delivered_at_ms - $1"] {
            sqlx::query(sql).bind(shift).execute(&mut conn).await.unwrap();
        }
    });
}

#[test]
fn retention_removes_an_attachment_only_when_nothing_needs_it() {
    let mut net = three_nodes(FAST_RETRY);
    let sender = unit("gz.yuexiu/liurong-street");
    let recipient = unit("gz.haizhu/civil-affairs");
    let haizhu = net.client_for(&recipient);
    let send = |name: &str, size: u64| {
        let path = net.root.join(name);
        write_scan(&path, size);
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(name.as_bytes()).unwrap();
        let a = Attachment::of_file(&path, "application/pdf").unwrap();
        (send_with_scan(&net, (&sender, &recipient), (&path, &a), Priority::Routine, name.as_bytes()), a)
    };
    // A: signed for by the recipient. C: delivered, not settled yet.
    let (doc_a, a) = send("a.pdf", 2 * MIB);
    let (doc_c, c) = send("c.pdf", MIB);
    for id in [doc_a.id, doc_c.id] {
        wait_for("the document in 海珠's inbox", Duration::from_secs(60), || read_inbox(&haizhu, &recipient).into_iter().find(|i| i.id == id));
    }
    let item = read_inbox(&haizhu, &recipient).into_iter().find(|i| i.id == doc_a.id).unwrap();
    sign_for(&haizhu, &net.unit_keys[&recipient], &recipient, &item);

    // Ten days pass at 海珠.
    net.stop("gz.haizhu").unwrap();
    let dir = net.node("gz.haizhu").data_dir.join("attachments");
    age_database(&net.node("gz.haizhu").database_path(), 10);
    for x in [&a, &c] {
        age_file(&dir.join(x.sha256.to_hex()), 10);
    }
    net.start("gz.haizhu").unwrap();

    let out = AdminAt::of(net.node("gz.haizhu"))
        .command()
        .args(["purge", "--older-than", "5", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 attachment files"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(!dir.join(a.sha256.to_hex()).exists(), "A was signed for long ago: its attachment is gone");
    assert!(dir.join(c.sha256.to_hex()).exists(), "C is still in the inbox, unsettled: its attachment stays");
    let saved = net.root.join("c-saved.pdf");
    haizhu.download_attachment(&doc_c.id, 1, &c, &saved).expect("C's attachment can still be downloaded");
}

/// Cut-through: the city passes the attachment on to 海珠 while it still arrives from 越秀, so 海珠
/// holds part of the file before the city holds all of it. 越秀 is killed mid-transfer: 海珠 keeps an
/// incomplete file and no document; once 越秀 is back, every hop resumes from its committed length,
/// the document is delivered once, and the file at the recipient verifies.
#[test]
fn the_city_passes_an_attachment_on_while_it_arrives_and_a_sender_killed_mid_transfer_resumes() {
    const SIZE: u64 = 128 * MIB;
    let mut net = three_nodes(FAST_RETRY);
    let sender = unit("gz.yuexiu/liurong-street");
    let recipient = unit("gz.haizhu/civil-affairs");
    let scan = net.root.join("scan.pdf");
    write_scan(&scan, SIZE);
    let a = Attachment::of_file(&scan, "application/pdf").unwrap();
    let signed = send_with_scan(&net, (&sender, &recipient), (&scan, &a), Priority::Routine, b"body");
    let started = Instant::now();

    let (city, haizhu) = (net.node("gz").client(), net.node("gz.haizhu").client());
    let city_holds = |city: &exchange_wire::client::ApiClient| metric(city, "exchange_attachment_bytes_received_total", &[("source", "gz.yuexiu")]) as u64;
    let haizhu_holds = |haizhu: &exchange_wire::client::ApiClient| metric(haizhu, "exchange_attachment_bytes_received_total", &[("source", "gz")]) as u64;
    wait_for("the city holds a few chunks", Duration::from_secs(120), || (city_holds(&city) >= 4 * MIB).then_some(()));
    net.kill("gz.yuexiu").expect("kill -9 the sending node");

    // 海珠 receives chunks the city holds, although the city cannot get the rest now.
    wait_for("海珠 holds part of the file", Duration::from_secs(60), || (haizhu_holds(&haizhu) > 0).then_some(()));
    let at_haizhu = haizhu_holds(&haizhu);
    let at_city = city_holds(&city);
    assert!(at_city < SIZE, "the whole file reached the city before 越秀 was killed: make it larger");
    assert!(at_haizhu <= at_city, "海珠 holds {at_haizhu} bytes, more than the city's {at_city}");
    assert!(metric(&city, "exchange_attachment_cut_through_total", &[("peer", "gz.haizhu")]) >= 1.0);
    let far_file = net.node("gz.haizhu").data_dir.join("attachments").join(a.sha256.to_hex());
    assert!(!far_file.exists(), "海珠 cannot hold the complete file");
    assert!(read_inbox(&net.client_for(&recipient), &recipient).is_empty(), "no document is delivered without its whole file");
    eprintln!("{:>6.1} s  越秀 killed: the city held {} MiB, 海珠 already {} MiB", started.elapsed().as_secs_f64(), at_city / MIB, at_haizhu / MIB);

    net.start("gz.yuexiu").expect("restart 越秀");
    let item = wait_for("the document in 海珠's inbox", Duration::from_secs(300), || {
        read_inbox(&net.client_for(&recipient), &recipient).into_iter().find(|i| i.id == signed.id)
    });
    assert_eq!(read_inbox(&net.client_for(&recipient), &recipient).iter().filter(|i| i.id == signed.id).count(), 1);
    eprintln!("{:>6.1} s  delivered into 海珠's inbox", started.elapsed().as_secs_f64());
    // Resumed at both hops rather than sent again from the start (a window of chunks may repeat).
    assert!(city_holds(&city) <= SIZE, "the city received {} bytes of a {SIZE}-byte file", city_holds(&city));
    assert!(haizhu_holds(&haizhu) <= SIZE, "海珠 received {} bytes of a {SIZE}-byte file", haizhu_holds(&haizhu));

    let save = net.root.join("saved");
    let out = admin_as(
        &net.node("gz.haizhu").api_url,
        &net.unit_tokens[&recipient],
        &["inbox", "--unit", recipient.as_str(), "--verify", "--save", save.to_str().unwrap()],
    );
    assert!(out.status.success(), "inbox --save failed: {}", String::from_utf8_lossy(&out.stderr));
    let saved = save.join(format!("{}.1.scan.pdf", item.id));
    assert_eq!(sha256_of(&saved), sha256_of(&scan), "the saved attachment is the one sent");
}

/// An urgent document's attachment does not wait behind a routine transfer on the same link: a 特急
/// document with a small attachment, sent while a routine 512 MiB scan is crossing 越秀 → 广州, reaches
/// 海珠 first, and the routine one still arrives, once.
#[test]
fn an_urgent_attachment_passes_a_routine_transfer_under_way() {
    let net = three_nodes(FAST_RETRY);
    let sender = unit("gz.yuexiu/liurong-street");
    let recipient = unit("gz.haizhu/civil-affairs");
    let prepared = |name: &str, size: u64| {
        let path = net.root.join(name);
        write_scan(&path, size);
        (path.clone(), Attachment::of_file(&path, "application/pdf").unwrap())
    };
    let (routine_scan, urgent_scan) = (prepared("平件-图纸.pdf", 512 * MIB), prepared("特急-汛情.pdf", 2 * MIB));
    let send = |(path, a): &(std::path::PathBuf, Attachment), priority: Priority| {
        send_with_scan(&net, (&sender, &recipient), (path, a), priority, b"body").id
    };
    let routine = send(&routine_scan, Priority::Routine);
    let city = net.node("gz").client();
    wait_for("the routine scan on its way to the city", Duration::from_secs(120), || {
        (metric(&city, "exchange_attachment_bytes_received_total", &[("source", "gz.yuexiu")]) >= (4 * MIB) as f64).then_some(())
    });
    let urgent = send(&urgent_scan, Priority::Urgent);
    let to = net.client_for(&recipient);
    let first = wait_for("a document at 海珠", Duration::from_secs(300), || read_inbox(&to, &recipient).first().map(|i| i.id));
    assert_eq!(first, urgent, "the urgent document (and its attachment) arrived first");
    let inbox = wait_for("both at 海珠", Duration::from_secs(300), || {
        let items = read_inbox(&to, &recipient);
        (items.len() >= 2).then_some(items)
    });
    assert_eq!(inbox.iter().map(|i| i.id).collect::<Vec<_>>(), [urgent, routine], "each once, the urgent one first");
}
