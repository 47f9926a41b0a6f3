//! The agency commands of `exchange-admin`, run as a script would run them, against real nodes:
//! keygen, send a file, list the inbox, sign for, and show the status with the receipt.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use exchange_tests::*;

fn admin(node_url: &str, args: &[&str]) -> Output {
    Command::new(admin_binary()).arg("--node").arg(node_url).args(args).env_remove("EXCHANGE_TOKEN").output().expect("run exchange-admin")
}

/// Runs `exchange-admin` as a unit's agency system: with the unit's token in `EXCHANGE_TOKEN`, and
/// its unanswered sends kept in the test's own folder (`pending` beside the node folders).
fn admin_as(node_url: &str, token: &str, args: &[&str]) -> Output {
    admin_with(node_url, token, None, args)
}

fn admin_with(node_url: &str, token: &str, pending: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(admin_binary());
    c.arg("--node").arg(node_url).args(args).env("EXCHANGE_TOKEN", token);
    if let Some(dir) = pending {
        c.env("EXCHANGE_PENDING_DIR", dir);
    }
    c.output().expect("run exchange-admin")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "exchange-admin failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn agency_commands_drive_the_real_api() {
    let net = three_nodes(FAST_RETRY);
    let (yuexiu, haizhu) = (net.node("gz.yuexiu").api_url.clone(), net.node("gz.haizhu").api_url.clone());
    let sender = unit("gz.yuexiu/liurong-street");
    let recipient = unit("gz.haizhu/civil-affairs");
    let sender_key = net.unit_key_file(&sender).unwrap();
    let recipient_key = net.unit_key_file(&recipient).unwrap();
    let (sender_token, recipient_token) = (net.unit_tokens[&sender].clone(), net.unit_tokens[&recipient].clone());

    // keygen: a 0600 file, the public key on stdout, and no overwriting.
    let fresh = net.root.join("fresh.key");
    let public = stdout(&admin(&yuexiu, &["keygen", "--out", fresh.to_str().unwrap()]));
    assert_eq!(public.trim().len(), 64, "public key hex: {public}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(admin(&yuexiu, &["keygen", "--out", fresh.to_str().unwrap()]).status.code(), Some(1));

    // send a file as a document.
    let file = net.root.join("通知.txt");
    std::fs::write(&file, "各街道办事处：请于本周五前报送统计数据。").unwrap();
    let out = admin_with(
        &yuexiu,
        &sender_token,
        Some(&net.root.join("pending")),
        &[
            "send", "--key", sender_key.to_str().unwrap(), "--from", sender.as_str(), "--to", recipient.as_str(),
            "--priority", "express", "--title", "关于报送统计数据的通知", "--doc-number", "越六榕〔2005〕7号",
            file.to_str().unwrap(),
        ],
    );
    let id = stdout(&out).trim().to_string();
    assert_eq!(id.len(), 64, "message id on stdout: {id}");

    // inbox --json at the recipient's node, waiting for the document.
    let item = wait_for("the document in the inbox", Duration::from_secs(30), || {
        let out = admin_as(&haizhu, &recipient_token, &["--json", "inbox", "--unit", recipient.as_str(), "--wait", "2"]);
        let page: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        page["items"].as_array().unwrap().iter().find(|i| i["id"] == id.as_str()).cloned()
    });
    assert_eq!(item["message"]["envelope"]["metadata"]["title"], "关于报送统计数据的通知");
    let table = stdout(&admin_as(&haizhu, &recipient_token, &["inbox", "--unit", recipient.as_str()]));
    assert!(table.contains("关于报送统计数据的通知"), "the table shows the title:\n{table}");

    // sign-for with the recipient's key, then the sender's node shows the signed-for state.
    let receipt = stdout(&admin_as(&haizhu, &recipient_token, &["sign-for", "--key", recipient_key.to_str().unwrap(), "--unit", recipient.as_str(), &id]));
    assert_eq!(receipt.trim().len(), 64, "receipt id on stdout: {receipt}");
    let status = wait_for("signed-for at the sender's node", Duration::from_secs(30), || {
        let s: serde_json::Value = serde_json::from_str(&stdout(&admin_as(&yuexiu, &sender_token, &["--json", "status", &id]))).unwrap();
        (s["recipients"][0]["state"] == "signed-for").then_some(s)
    });
    assert_eq!(status["recipients"][0]["receipt"]["id"], receipt.trim());
    let table = stdout(&admin_as(&yuexiu, &sender_token, &["status", &id]));
    assert!(table.contains("signed-for") && table.contains(recipient.as_str()), "status table:\n{table}");

    // Without the unit's token the node refuses, and says what to do.
    let no_token = admin(&haizhu, &["inbox", "--unit", recipient.as_str()]);
    assert_eq!(no_token.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("token"), "{}", String::from_utf8_lossy(&no_token.stderr));

    // Exit codes scripts rely on: 1 for a refusal, 2 when the node cannot be reached.
    let refused = admin_as(&haizhu, &recipient_token, &["sign-for", "--key", recipient_key.to_str().unwrap(), "--unit", recipient.as_str(), &"0".repeat(64)]);
    assert_eq!(refused.status.code(), Some(1), "{}", String::from_utf8_lossy(&refused.stderr));
    let port = exchange_devnet::launcher::free_port().unwrap();
    let unreachable = admin(&format!("http://127.0.0.1:{port}"), &["status", &id]);
    assert_eq!(unreachable.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach"), "{}", String::from_utf8_lossy(&unreachable.stderr));
}

/// A proxy in front of `node` that loses the first answer: it passes the request on, and when the
/// node starts answering (it answers only after committing) it closes both connections without
/// passing a byte back. Later connections pass through untouched.
fn losing_first_answer(node: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let node = node.trim_start_matches("http://").to_owned();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(mut client) = client else { return };
            let mut upstream = TcpStream::connect(&node).unwrap();
            let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut c2, &mut u2));
            if n == 0 {
                let mut first = [0u8; 1];
                let _ = upstream.read(&mut first);
                let _ = client.shutdown(std::net::Shutdown::Both);
                let _ = upstream.shutdown(std::net::Shutdown::Both);
            } else {
                std::thread::spawn(move || std::io::copy(&mut upstream, &mut client).and_then(|_| client.flush()));
            }
        }
    });
    format!("http://{addr}")
}

/// Exactly once through the reference client: the node commits a document but its answer is lost;
/// running the same `send` again re-sends the same signed bytes, the node answers "duplicate", and
/// the recipient holds one document, not two.
#[test]
fn send_run_again_after_a_lost_answer_delivers_once() {
    let net = three_nodes(FAST_RETRY);
    let (yuexiu, haizhu) = (net.node("gz.yuexiu").api_url.clone(), net.node("gz.haizhu").api_url.clone());
    let sender = unit("gz.yuexiu/liurong-street");
    let recipient = unit("gz.haizhu/civil-affairs");
    let key = net.unit_key_file(&sender).unwrap();
    let (sender_token, recipient_token) = (net.unit_tokens[&sender].clone(), net.unit_tokens[&recipient].clone());
    let pending = net.root.join("pending");
    let file = net.root.join("lost-answer.txt");
    std::fs::write(&file, "答复丢失后重发，不得重复投递。").unwrap();
    let args = [
        "send", "--key", key.to_str().unwrap(), "--from", sender.as_str(), "--to", recipient.as_str(), "--title", "丢失的答复",
        file.to_str().unwrap(),
    ];

    let lost = admin_with(&losing_first_answer(&yuexiu), &sender_token, Some(&pending), &args);
    let stderr = String::from_utf8_lossy(&lost.stderr);
    assert_eq!(lost.status.code(), Some(2), "no usable answer: {stderr}");
    assert!(stderr.contains("run the same command again"), "{stderr}");
    let kept: Vec<_> = std::fs::read_dir(&pending).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(kept.len(), 1, "the signed document is kept: {kept:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&kept[0]).unwrap().permissions().mode() & 0o777, 0o600);
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&kept[0]).unwrap()).unwrap();
    let id = record["id"].as_str().unwrap().to_owned();
    // The node did commit it: the answer, not the document, was lost.
    let status = stdout(&admin_as(&yuexiu, &sender_token, &["--json", "status", &id]));
    assert!(status.contains(recipient.as_str()), "{status}");

    let again = admin_with(&yuexiu, &sender_token, Some(&pending), &args);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(stdout(&again).trim(), id, "the same message: {stderr}");
    assert!(stderr.contains("re-sending message") && stderr.contains("duplicate"), "{stderr}");
    assert_eq!(std::fs::read_dir(&pending).unwrap().count(), 0, "answered, so forgotten");

    // Reconcile at the recipient: once delivered, exactly one document with that title.
    let titled = |page: &serde_json::Value| {
        page["items"].as_array().unwrap().iter().filter(|i| i["message"]["envelope"]["metadata"]["title"] == "丢失的答复").count()
    };
    let inbox = || -> serde_json::Value {
        serde_json::from_str(&stdout(&admin_as(&haizhu, &recipient_token, &["--json", "inbox", "--unit", recipient.as_str()]))).unwrap()
    };
    wait_for("the document delivered", Duration::from_secs(30), || (titled(&inbox()) > 0).then_some(()));
    let status: serde_json::Value = serde_json::from_str(&stdout(&admin_as(&yuexiu, &sender_token, &["--json", "status", &id]))).unwrap();
    wait_for("the delivery report back", Duration::from_secs(30), || {
        let s: serde_json::Value = serde_json::from_str(&stdout(&admin_as(&yuexiu, &sender_token, &["--json", "status", &id]))).unwrap();
        (s["recipients"][0]["state"] == "delivered").then_some(())
    });
    assert_eq!(status["recipients"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(titled(&inbox()), 1, "one document, not two");
}
