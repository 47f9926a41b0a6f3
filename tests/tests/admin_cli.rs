//! The agency commands of `exchange-admin`, run as a script would run them, against real nodes:
//! keygen, send a file, list the inbox, sign for, and show the status with the receipt.

use std::process::{Command, Output};
use std::time::Duration;

use exchange_tests::*;

fn admin(node_url: &str, args: &[&str]) -> Output {
    Command::new(admin_binary()).arg("--node").arg(node_url).args(args).env_remove("EXCHANGE_TOKEN").output().expect("run exchange-admin")
}

/// Runs `exchange-admin` as a unit's agency system: with the unit's token in `EXCHANGE_TOKEN`.
fn admin_as(node_url: &str, token: &str, args: &[&str]) -> Output {
    Command::new(admin_binary()).arg("--node").arg(node_url).args(args).env("EXCHANGE_TOKEN", token).output().expect("run exchange-admin")
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
    let out = admin_as(
        &yuexiu,
        &sender_token,
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
    let port = exchange_node::launcher::free_port().unwrap();
    let unreachable = admin(&format!("http://127.0.0.1:{port}"), &["status", &id]);
    assert_eq!(unreachable.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach"), "{}", String::from_utf8_lossy(&unreachable.stderr));
}
