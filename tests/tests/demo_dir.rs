//! `exchange-node demo --dir DIR` leaves a network an operator can pick up without the demo: every
//! unit's key and API token (0600) and `network.toml` listing every node's addresses. This test runs
//! the demo, checks what it printed and wrote, starts the three nodes again from the folder's
//! configurations, and acts for two demo units with `exchange-admin` using only those files: a street
//! office sends a document, the bureau reads it in its inbox, verifies it and signs for it, and the
//! sender's status shows the receipt.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use exchange_tests::*;

/// Node processes started by the test from the folder; stopped (SIGTERM, then killed) on drop.
struct Started(Vec<Child>);

impl Drop for Started {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        }
        for c in &mut self.0 {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn text(o: &Output) -> String {
    assert!(o.status.success(), "command failed ({}): {}\n{}", o.status, String::from_utf8_lossy(&o.stderr), String::from_utf8_lossy(&o.stdout));
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// `exchange-admin --node API` acting for a unit, with the token read from its token file.
fn as_unit(api: &str, token_file: &Path, args: &[&str]) -> Output {
    let token = std::fs::read_to_string(token_file).expect("read the unit's token file");
    Command::new(admin_binary())
        .arg("--node")
        .arg(api)
        .args(args)
        .env("EXCHANGE_TOKEN", token.trim())
        .output()
        .expect("run exchange-admin")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[test]
fn demo_dir_leaves_units_that_can_be_acted_for_afterwards() {
    let tmp = tempfile::Builder::new().prefix("demo-dir-").tempdir().unwrap();
    let dir = tmp.path().join("net");
    let demo = Command::new(node_binary()).arg("demo").arg("--dir").arg(&dir).output().expect("run the demo");
    let printed = text(&demo);

    // The index: every node with its addresses (also printed), every unit with its key and token.
    let index: toml::Table = std::fs::read_to_string(dir.join("network.toml")).expect("network.toml").parse().expect("network.toml parses");
    let nodes = index["node"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "the demo's three nodes");
    let field = |t: &toml::Value, k: &str| t[k].as_str().unwrap_or_else(|| panic!("{k} in {t}")).to_string();
    for n in nodes {
        for k in ["api", "admin", "metrics"] {
            assert!(printed.contains(&field(n, k)), "the demo prints {} {k} {}:\n{printed}", field(n, "id"), field(n, k));
        }
        assert_eq!(mode(&dir.join(field(n, "admin_token_file"))), 0o600);
    }
    let topology = exchange_devnet::launcher::Topology::guangzhou();
    let hosted = topology.units.iter().filter(|u| ["gz", "gz.yuexiu", "gz.haizhu"].contains(&u.address.node_part())).count();
    let units = index["unit"].as_array().unwrap();
    assert_eq!(units.len(), hosted, "every unit of the three nodes is in the index");
    for u in units {
        assert_eq!(mode(&dir.join(field(u, "key_file"))), 0o600, "{}", field(u, "address"));
        assert_eq!(mode(&dir.join(field(u, "token_file"))), 0o600, "{}", field(u, "address"));
    }
    let unit_files = |address: &str| -> (String, PathBuf, PathBuf) {
        let u = units.iter().find(|u| field(u, "address") == address).unwrap_or_else(|| panic!("{address} in the index"));
        (field(u, "api"), dir.join(field(u, "key_file")), dir.join(field(u, "token_file")))
    };

    // The nodes again, from the folder's configurations, as an operator would start them.
    let mut started = Started(Vec::new());
    for n in nodes {
        let log = std::fs::OpenOptions::new().append(true).create(true).open(dir.join(field(n, "log"))).unwrap();
        let child = Command::new(node_binary())
            .arg("run")
            .arg("--config")
            .arg(dir.join(field(n, "config")))
            .env_remove("EXCHANGE_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start a node");
        started.0.push(child);
    }
    for n in nodes {
        let api = exchange_wire::client::ApiClient::new(&field(n, "api"));
        wait_for(&format!("{} to answer /healthz", field(n, "id")), Duration::from_secs(30), || api.health().ok());
    }

    // 越秀's street office sends a document with its key and token files only.
    let (sender, recipient) = ("gz.yuexiu/liurong-street", "gz.haizhu/civil-affairs");
    let (sender_api, sender_key, sender_token) = unit_files(sender);
    let (recipient_api, recipient_key, recipient_token) = unit_files(recipient);
    let body = dir.join("通知.txt");
    std::fs::write(&body, "各单位：演示网络重启后的第一份公文。").unwrap();
    let id = text(&as_unit(
        &sender_api,
        &sender_token,
        &["send", "--key", sender_key.to_str().unwrap(), "--from", sender, "--to", recipient, "--title", "重启后的通知", body.to_str().unwrap()],
    ))
    .trim()
    .to_string();
    assert_eq!(id.len(), 64, "message id on stdout: {id}");

    // 海珠's bureau finds it in its inbox, verifies the sender's signature and signs for it.
    wait_for("the document in the recipient's inbox", Duration::from_secs(60), || {
        let out = as_unit(&recipient_api, &recipient_token, &["--json", "inbox", "--unit", recipient, "--wait", "2"]);
        let page: serde_json::Value = serde_json::from_str(&text(&out)).unwrap();
        page["items"].as_array().unwrap().iter().any(|i| i["id"] == id.as_str()).then_some(())
    });
    let verified = text(&as_unit(&recipient_api, &recipient_token, &["inbox", "--unit", recipient, "--verify"]));
    assert!(verified.contains("重启后的通知"), "the inbox shows the document:\n{verified}");
    let receipt = text(&as_unit(&recipient_api, &recipient_token, &["sign-for", "--key", recipient_key.to_str().unwrap(), "--unit", recipient, &id]));
    assert_eq!(receipt.trim().len(), 64, "receipt id on stdout: {receipt}");
    wait_for("the receipt back at the sender's node", Duration::from_secs(60), || {
        let s: serde_json::Value = serde_json::from_str(&text(&as_unit(&sender_api, &sender_token, &["--json", "status", &id]))).unwrap();
        (s["recipients"][0]["state"] == "signed-for" && s["recipients"][0]["receipt"]["id"] == receipt.trim()).then_some(())
    });
    drop(started);
}
