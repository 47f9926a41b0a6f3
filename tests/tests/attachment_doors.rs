//! Closed doors around attachments (issue 12, points 2, 4 and 8), each attack performed against real
//! node processes: knowing an attachment's SHA-256 gives nothing (neither its bytes, nor whether the
//! node holds it, nor the right to cite it), uploads are bounded per unit and abandoned ones are
//! swept without holding descriptors, and attachment names are bounded and printable.

use std::path::Path;
use std::time::Duration;

use exchange_tests::*;
use exchange_wire::api::RecipientState;
use exchange_wire::document::Attachment;
use exchange_wire::{Envelope, Kind, Priority, SignedEnvelope, UnitAddress};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// `method` (GET or HEAD) on `url` with `token`: the status and the body as JSON (null if none).
fn ask(method: &str, url: &str, token: &str) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {token}");
    let mut resp = match method {
        "HEAD" => agent().head(url).header("Authorization", &auth).call(),
        _ => agent().get(url).header("Authorization", &auth).call(),
    }
    .expect(method);
    let body = resp.body_mut().read_to_vec().unwrap_or_default();
    (resp.status().as_u16(), serde_json::from_slice(&body).unwrap_or_default())
}

fn put_raw(url: &str, body: &[u8], token: &str) -> (u16, serde_json::Value) {
    let mut resp = agent().put(url).header("Authorization", format!("Bearer {token}")).send(body).expect("PUT");
    let status = resp.status().as_u16();
    (status, serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap()).unwrap_or_default())
}

/// A document from `from` to `to` describing `attachments`, signed with `from`'s key.
fn doc_citing(net: &exchange_devnet::launcher::LocalNetwork, from: &UnitAddress, to: &UnitAddress, attachments: &[&Attachment]) -> SignedEnvelope {
    let mut e = Envelope::new(Kind::Document, from.clone(), vec![to.clone()], vec![], Priority::Routine, b"body");
    for (i, a) in attachments.iter().enumerate() {
        a.describe(i + 1, &mut e.metadata);
    }
    e.sign(&net.unit_keys[from])
}

fn write_file(path: &Path, len: usize, seed: u8) {
    std::fs::write(path, (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>()).unwrap();
}

/// Custody rows a refused submission must not have touched (audit entries of the refusal aside).
fn custody(counts: StoredCounts) -> (i64, i64, i64, i64) {
    (counts.messages, counts.outbox, counts.inbox, counts.tracking)
}

#[test]
fn knowing_a_sha256_neither_reads_nor_reveals_nor_cites_an_attachment() {
    let net = three_nodes(FAST_RETRY);
    let owner = unit("gz.yuexiu/liurong-street");
    let recipient = unit("gz.haizhu/civil-affairs");
    let neighbour = unit("gz.yuexiu/public-security"); // another unit of the owner's node
    let at_city = unit("gz/general-office"); // a unit of the node the file only passes through
    let accomplice = unit("gz.haizhu/public-security");
    let secret = net.root.join("confidential.pdf");
    write_file(&secret, (2 * MIB + 4321) as usize, 7);
    let a = Attachment::of_file(&secret, "application/pdf").unwrap();
    let never = Attachment { sha256: exchange_wire::digest_payload(b"no such file"), ..a.clone() };

    // The owner uploads and sends the file to one recipient in 海珠, through the city.
    let owner_client = net.client_for(&owner);
    owner_client.upload_attachment(&secret, &a).unwrap();
    let sent = doc_citing(&net, &owner, &recipient, &[&a]);
    owner_client.submit(&sent, b"body").unwrap();
    wait_for("the document in 海珠's inbox", Duration::from_secs(60), || {
        read_inbox(&net.client_for(&recipient), &recipient).into_iter().find(|i| i.id == sent.id)
    });
    // Its delivery report is back: nothing more moves on its account while refusals are counted.
    wait_for("the delivery report at 越秀", Duration::from_secs(60), || {
        let s = owner_client.status(&sent.id).ok()?;
        s.recipients.iter().all(|r| r.state == RecipientState::Delivered).then_some(())
    });
    let city_copy = net.node("gz").data_dir.join("attachments").join(a.sha256.to_hex());
    assert!(city_copy.exists(), "the file passed through the city node and is held there");

    for (who, node) in [(&neighbour, "gz.yuexiu"), (&at_city, "gz")] {
        let url = format!("{}/v1/attachments/{}", net.node(node).api_url, a.sha256);
        let unheld = format!("{}/v1/attachments/{}", net.node(node).api_url, never.sha256);
        let token = &net.unit_tokens[who];

        // The hash oracle: "held by someone else" and "not held" get the same answer.
        for method in ["GET", "HEAD"] {
            let (held_status, held_body) = ask(method, &url, token);
            let (unheld_status, unheld_body) = ask(method, &unheld, token);
            assert_eq!((held_status, unheld_status), (404, 404), "{who} {method} on {node}: {held_body} / {unheld_body}");
            assert_eq!(held_body["error"], unheld_body["error"], "{who} {method}");
        }

        // Citing the file by its hash: refused exactly as citing a file that is not there, and
        // nothing is stored or queued.
        let db = net.node(node).database_path();
        let before = custody(stored_counts(&db));
        let client = net.client_for(who);
        let attack = doc_citing(&net, who, &accomplice, &[&a]);
        let err = client.submit(&attack, b"body").unwrap_err();
        let unheld_err = client.submit(&doc_citing(&net, who, &accomplice, &[&never]), b"body").unwrap_err();
        assert_eq!(err.code(), Some("attachment-missing"), "{who} on {node}: {err}");
        assert_eq!(unheld_err.code(), err.code());
        let message = err.to_string();
        assert!(message.contains("upload it with PUT /v1/attachments/"), "the refusal says what to do: {message}");
        assert_eq!(message.replace(&a.sha256.to_hex(), "H"), unheld_err.to_string().replace(&never.sha256.to_hex(), "H"));
        assert_eq!(custody(stored_counts(&db)), before, "{who}: nothing stored or queued on {node}");
        assert_eq!(client.status(&attack.id).unwrap_err().code(), Some("not-found"), "the refused document is not held");
        assert!(metric(&client, "exchange_messages_rejected_total", &[("reason", "attachment-missing")]) >= 2.0);

        // Downloading through the owner's document as a unit that is neither its sender nor a recipient.
        let err = client.download_attachment(&sent.id, 1, &a, &net.root.join(format!("stolen-{node}"))).unwrap_err();
        assert_eq!(err.code(), Some("not-found"), "{err}");
        let part = std::fs::metadata(net.root.join(format!("stolen-{node}.part"))).map(|m| m.len()).unwrap_or(0);
        assert!(!net.root.join(format!("stolen-{node}")).exists() && part == 0, "no byte was served");
    }

    // The recipient holds the file through a document it may read: it sees it whole and may cite
    // it again (forwarding), without uploading it.
    let recipient_client = net.client_for(&recipient);
    assert!(recipient_client.attachment_status(&a.sha256).unwrap().complete);
    let forwarded = doc_citing(&net, &recipient, &accomplice, &[&a]);
    recipient_client.submit(&forwarded, b"body").unwrap();

    // A second document to the recipient, recalled before it is signed for: the recipient may no
    // longer download the file through it, nor see it through it.
    let other = net.root.join("second.pdf");
    write_file(&other, 5000, 9);
    let b = Attachment::of_file(&other, "application/pdf").unwrap();
    owner_client.upload_attachment(&other, &b).unwrap();
    let second = doc_citing(&net, &owner, &recipient, &[&b]);
    owner_client.submit(&second, b"body").unwrap();
    wait_for("the second document in 海珠's inbox", Duration::from_secs(60), || {
        read_inbox(&recipient_client, &recipient).into_iter().find(|i| i.id == second.id)
    });
    let withdraw = exchange_wire::receipt::recall(owner.clone(), vec![recipient.clone()], second.id, Priority::Routine, "sent in error").sign(&net.unit_keys[&owner]);
    owner_client.recall(&second.id, &withdraw).unwrap();
    wait_for("the recall reached 海珠", Duration::from_secs(30), || {
        let s = owner_client.status(&second.id).ok()?;
        s.recipients.iter().all(|r| r.state == RecipientState::Recalled).then_some(())
    });
    let dest = net.root.join("after-recall.pdf");
    let err = recipient_client.download_attachment(&second.id, 1, &b, &dest).unwrap_err();
    assert_eq!(err.code(), Some("not-found"), "a recalled document's attachment is not served: {err}");
    let part = std::fs::metadata(net.root.join("after-recall.pdf.part")).map(|m| m.len()).unwrap_or(0);
    assert!(!dest.exists() && part == 0, "no byte was served");
    let (status, _) = ask("GET", &format!("{}/v1/attachments/{}", net.node("gz.haizhu").api_url, b.sha256), &net.unit_tokens[&recipient]);
    assert_eq!(status, 404, "after the recall the recipient is told nothing of the file");
    let db = net.node("gz.haizhu").database_path();
    let before = custody(stored_counts(&db));
    let err = recipient_client.submit(&doc_citing(&net, &recipient, &accomplice, &[&b]), b"body").unwrap_err();
    assert_eq!(err.code(), Some("attachment-missing"), "{err}");
    assert_eq!(custody(stored_counts(&db)), before);
    // The sender still may: it is its own document.
    owner_client.download_attachment(&second.id, 1, &b, &net.root.join("sender-copy.pdf")).unwrap();

    // A unit that has the bytes itself may upload them again (the node checks them) and then cite
    // them: deduplication never skips the proof.
    let neighbour_client = net.client_for(&neighbour);
    let done = neighbour_client.upload_attachment(&secret, &a).unwrap();
    assert!(done.complete, "{done:?}");
    neighbour_client.submit(&doc_citing(&net, &neighbour, &accomplice, &[&a]), b"body").unwrap();
}

#[test]
fn uploads_are_bounded_per_unit_swept_when_abandoned_and_hold_no_descriptor() {
    let mut net = exchange_devnet::launcher::LocalNetwork::create(&node_binary(), None, &["gz", "gz.yuexiu", "gz.haizhu"], FAST_RETRY).unwrap();
    let config = net.node("gz.yuexiu").config_path.clone();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "\n[limits]\nmax_attachment_bytes = 107374182400\n\n\
         [attachments]\nmax_open_uploads_per_unit = 32\nmax_upload_bytes_per_unit = 139586437120\nupload_ttl_secs = 20\n",
    );
    std::fs::write(&config, text).unwrap();
    net.start_all().unwrap();
    let node = net.node("gz.yuexiu");
    let (hoarder, other) = (unit("gz.yuexiu/liurong-street"), unit("gz.yuexiu/health"));
    let upload_url = |i: u32, size: u64| format!("{}/v1/attachments/{}?size={size}&offset=0", node.api_url, exchange_wire::digest_payload(&i.to_be_bytes()));
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", node.pid().unwrap())).unwrap().count();
    let chunk = vec![0x5a; MIB as usize];

    // 30 uploads declared as 4 GiB, each given one chunk and abandoned: no descriptor stays open.
    let before = fds();
    for i in 0..30 {
        let (status, answer) = put_raw(&upload_url(i, 4 * GIB), &chunk, &net.unit_tokens[&hoarder]);
        assert_eq!((status, answer["committed_bytes"].as_u64()), (202, Some(MIB)), "upload {i}: {answer}");
    }
    let after = fds();
    assert!(after < before + 10, "30 abandoned uploads took {} descriptors ({before} → {after})", after - before);

    // The count quota: the 33rd unfinished upload is refused, with what to do.
    for i in 30..32 {
        assert_eq!(put_raw(&upload_url(i, 4 * GIB), b"", &net.unit_tokens[&hoarder]).0, 202);
    }
    let attachments_dir = node.data_dir.join("attachments");
    let files_before = count_files(&attachments_dir);
    // No body: the node refuses before reading one (a body could meet a closed connection).
    let (status, answer) = put_raw(&upload_url(32, 4 * GIB), b"", &net.unit_tokens[&hoarder]);
    assert_eq!((status, answer["error"].as_str()), (429, Some("too-many-uploads")), "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("attachments.max_open_uploads_per_unit"), "{answer}");
    assert_eq!(count_files(&attachments_dir), files_before, "the refused upload left no file");

    // The byte quota, for another unit: its own count, its own bytes.
    assert_eq!(put_raw(&upload_url(100, 100 * GIB), b"", &net.unit_tokens[&other]).0, 202);
    let (status, answer) = put_raw(&upload_url(101, 40 * GIB), b"", &net.unit_tokens[&other]);
    assert_eq!((status, answer["error"].as_str()), (507, Some("upload-quota")), "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("attachments.max_upload_bytes_per_unit"), "{answer}");
    assert_eq!(count_files(&attachments_dir), files_before + 1, "only the accepted upload's file");
    let client = net.client_for(&hoarder);
    assert_eq!(metric(&client, "exchange_messages_rejected_total", &[("reason", "too-many-uploads")]), 1.0);
    assert_eq!(metric(&client, "exchange_messages_rejected_total", &[("reason", "upload-quota")]), 1.0);

    // Abandoned for longer than upload_ttl_secs: swept, counted, and the quota is free again.
    wait_for("the abandoned uploads swept", Duration::from_secs(90), || {
        (metric(&client, "exchange_attachment_uploads_swept_total", &[]) >= 33.0).then_some(())
    });
    assert_eq!(client.attachment_status(&exchange_wire::digest_payload(&0u32.to_be_bytes())).unwrap().committed_bytes, 0);
    assert_eq!(count_files(&attachments_dir), 0, "no unfinished upload is left");
    assert_eq!(put_raw(&upload_url(200, 4 * GIB), b"", &net.unit_tokens[&hoarder]).0, 202, "the quota is free again");
}

/// Files (not folders) under `dir`, recursively.
fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn long_and_control_character_attachment_names_are_refused_at_intake() {
    let net = three_nodes(FAST_RETRY);
    let sender = unit("gz.yuexiu/liurong-street");
    let recipient = unit("gz.haizhu/civil-affairs");
    let client = net.client_for(&sender);
    let file = net.root.join("scan.pdf");
    write_file(&file, 3000, 1);
    let good = Attachment::of_file(&file, "application/pdf").unwrap();
    client.upload_attachment(&file, &good).unwrap();
    let db = net.node("gz.yuexiu").database_path();
    let before = custody(stored_counts(&db));
    for (name, says) in [
        (format!("{}.pdf", "x".repeat(266)), "at most 255 bytes"),
        ("report\u{1b}]0;pwned\u{7}\u{1b}[2J.pdf".to_string(), "control or direction character U+001B"),
        ("invoice\u{202e}fdp.exe".to_string(), "U+202E"),
    ] {
        let a = Attachment { name: name.clone(), ..good.clone() };
        let err = client.submit(&doc_citing(&net, &sender, &recipient, &[&a]), b"body").unwrap_err();
        assert_eq!(err.code(), Some("malformed"), "{name:?}: {err}");
        let message = err.to_string();
        assert!(message.contains(says), "{message}");
        assert!(!message.chars().any(|c| c.is_control()), "the refusal never echoes a raw control character: {message:?}");
    }
    assert_eq!(custody(stored_counts(&db)), before, "nothing stored or queued");
    // A 255-byte name is fine.
    let a = Attachment { name: format!("{}.pdf", "报".repeat(83)), ..good };
    assert_eq!(a.name.len(), 253);
    let long = doc_citing(&net, &sender, &recipient, &[&a]);
    client.submit(&long, b"body").unwrap();

    // The recipient saves it with the CLI: `<id>.<n>.<name>` would pass the file system's 255 bytes,
    // so the name is shortened (extension kept) instead of stopping `inbox --save`.
    wait_for("the document in 海珠's inbox", Duration::from_secs(60), || {
        read_inbox(&net.client_for(&recipient), &recipient).into_iter().find(|i| i.id == long.id)
    });
    let save = net.root.join("saved");
    let out = std::process::Command::new(admin_binary())
        .args(["--node", &net.node("gz.haizhu").api_url, "inbox", "--unit", recipient.as_str(), "--save", save.to_str().unwrap()])
        .env("EXCHANGE_TOKEN", &net.unit_tokens[&recipient])
        .output()
        .unwrap();
    assert!(out.status.success(), "inbox --save failed: {}", String::from_utf8_lossy(&out.stderr));
    let saved: Vec<String> = std::fs::read_dir(&save).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let file = saved.iter().find(|n| n.starts_with(&format!("{}.1.", long.id))).expect("the attachment is saved");
    assert!(file.len() <= 250 && file.ends_with("报.pdf"), "{file}");
}
