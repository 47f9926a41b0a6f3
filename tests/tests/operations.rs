//! The operator verbs of `exchange-admin` against real nodes: status, peers, queues, a trace across
//! three nodes, dead letters (made by a city that accepts smaller payloads than 越秀), resend after
//! the fix,
//! purge, retry, retention, readiness, and the audit chain: intact, then broken by editing and by
//! deleting rows in the database file.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use exchange_tests::*;
use serde_json::Value;

fn admin(at: &AdminAt, args: &[&str]) -> Output {
    at.command().args(args).output().expect("run exchange-admin")
}

fn ok_json(url: &AdminAt, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let o = admin(url, &all);
    assert!(o.status.success(), "exchange-admin {args:?} failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

/// Runs SQL against a node's database file from outside, as someone tampering with it would.
fn tamper(db: &Path, sql: &'static str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(db).connect().await.unwrap();
        let n = sqlx::query(sql).execute(&mut conn).await.unwrap().rows_affected();
        assert_eq!(n, 1, "{sql} changed one row");
    });
}

#[test]
fn operators_answer_where_is_it_what_is_stuck_and_was_anything_altered() {
    let mut net = exchange_devnet::launcher::LocalNetwork::create(&node_binary(), None, &["gz", "gz.yuexiu", "gz.haizhu"], FAST_RETRY).unwrap();
    // The city is misconfigured to take payloads of at most 1 KiB: it refuses larger ones for good.
    let missing = "gz.haizhu/chigang-street";
    let city_cfg = net.node("gz").config_path.clone();
    let cfg = std::fs::read_to_string(&city_cfg).unwrap();
    std::fs::write(&city_cfg, format!("{cfg}\n[limits]\nmax_payload_bytes = 1024\n")).unwrap();
    net.start_all().unwrap();

    let keys = Arc::new(net.unit_keys.clone());
    let (yuexiu_admin, city_admin) = (AdminAt::of(net.node("gz.yuexiu")), AdminAt::of(net.node("gz")));
    let sender = unit("gz.yuexiu/liurong-street");
    let yuexiu = net.client_for(&sender);

    // status and peers.
    let status = ok_json(&yuexiu_admin, &["status"]);
    assert_eq!((status["node"].as_str(), status["tier"].as_str(), status["parent"].as_str()), (Some("gz.yuexiu"), Some("district"), Some("gz")));
    let city_status = ok_json(&city_admin, &["status"]);
    assert_eq!(city_status["children"], serde_json::json!(["gz.haizhu", "gz.yuexiu"]));
    let peers = wait_for("a ping round trip to the city", Duration::from_secs(20), || {
        let p = ok_json(&yuexiu_admin, &["peers"]);
        (p["peers"][0]["rtt_ms"].as_f64().is_some()).then_some(p)
    });
    assert_eq!((peers["peers"][0]["node"].as_str(), peers["peers"][0]["role"].as_str()), (Some("gz"), Some("parent")));
    assert_eq!(peers["peers"][0]["connected"], true);

    // A normal document, then its trace across all three nodes from the sender's node alone.
    let doc = document(&keys[&sender], sender.as_str(), &["gz.haizhu/civil-affairs"], &[], b"trace me", "追踪");
    yuexiu.submit(&doc, b"trace me").unwrap();
    let recipient = unit("gz.haizhu/civil-affairs");
    let r = Receiver::spawn(net.client_for(&recipient), recipient.clone(), keys[&recipient].clone(), keys.clone());
    wait_for("signed for", Duration::from_secs(20), || {
        yuexiu.status(&doc.id).ok()?.recipients.iter().all(|r| r.state == exchange_wire::api::RecipientState::SignedFor).then_some(())
    });
    r.finish();
    let trace = ok_json(&yuexiu_admin, &["trace", &doc.id.to_hex()]);
    assert_eq!(trace["nodes"], serde_json::json!(["gz", "gz.haizhu", "gz.yuexiu"]), "{trace}");
    assert_eq!(trace["unreachable"], serde_json::json!([]));
    let events: Vec<(String, String)> = trace["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["node"].as_str().unwrap().to_string(), e["event"].as_str().unwrap().to_string()))
        .collect();
    // Each event once: a node's events must not come back twice through two neighbours.
    let rows: Vec<String> = trace["events"].as_array().unwrap().iter().map(|e| e.to_string()).collect();
    let unique: std::collections::BTreeSet<&String> = rows.iter().collect();
    assert_eq!(unique.len(), rows.len(), "the trace repeats events: {trace}");
    assert!(!events_named(&trace, "hop"), "every node answered: their own rows stand for the reported hops: {trace}");
    for expected in [("gz.yuexiu", "accepted"), ("gz", "received"), ("gz", "forwarded"), ("gz.haizhu", "delivered"), ("gz.haizhu", "signed-for")] {
        assert!(events.contains(&(expected.0.into(), expected.1.into())), "trace lacks {expected:?}: {events:?}");
    }

    // Two documents the city refuses for good: dead letters at 越秀, visible in queues and metrics.
    let stuck: Vec<_> = (0..2)
        .map(|i| {
            let payload = format!("stuck {i} ").repeat(300).into_bytes();
            let d = document(&keys[&sender], sender.as_str(), &[missing], &[], &payload, "stuck");
            yuexiu.submit(&d, &payload).unwrap();
            d
        })
        .collect();
    let dead = wait_for("two dead letters at 越秀", Duration::from_secs(20), || {
        let d = ok_json(&yuexiu_admin, &["dead-letters", "list"]);
        (d["dead_letters"].as_array()?.len() == 2).then_some(d)
    });
    assert!(dead["dead_letters"][0]["reason"].as_str().unwrap().contains("payload-too-large"), "{dead}");
    let queues = wait_for("queues show the dead letters", Duration::from_secs(10), || {
        let q = ok_json(&yuexiu_admin, &["queues"]);
        (q["queues"][0]["dead_letters"] == 2).then_some(q)
    });
    assert_eq!((queues["queues"][0]["peer"].as_str(), queues["queues"][0]["depth"].as_u64()), (Some("gz"), Some(0)));
    assert_eq!(metric(&yuexiu, "exchange_dead_letters_total", &[("peer", "gz")]), 2.0);

    // The fix: the city gets its normal limit back. Resend one dead letter, purge the other.
    net.stop("gz").unwrap();
    std::fs::write(&city_cfg, cfg).unwrap();
    net.start("gz").unwrap();
    let seqs: Vec<String> = dead["dead_letters"].as_array().unwrap().iter().map(|d| d["seq"].to_string()).collect();
    let (first_id, second_id) = (dead["dead_letters"][0]["message_id"].as_str().unwrap(), dead["dead_letters"][1]["message_id"].as_str().unwrap());
    let resent = ok_json(&yuexiu_admin, &["dead-letters", "resend", &seqs[0]]);
    assert_eq!(resent["affected"], 1);
    let refused = admin(&yuexiu_admin, &["dead-letters", "purge", &seqs[1]]);
    assert_eq!(refused.status.code(), Some(1), "purge needs --yes");
    assert_eq!(ok_json(&yuexiu_admin, &["dead-letters", "purge", &seqs[1], "--yes"])["affected"], 1);
    let chigang = net.client_for(&unit(missing));
    let delivered = wait_for("the resent document delivered", Duration::from_secs(20), || {
        let inbox = read_inbox(&chigang, &unit(missing));
        (!inbox.is_empty()).then_some(inbox)
    });
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].id.to_hex(), first_id);
    assert!(stuck.iter().any(|d| d.id.to_hex() == second_id));
    assert_eq!(ok_json(&yuexiu_admin, &["dead-letters", "list"])["dead_letters"], serde_json::json!([]));

    // retry, retention purge, readiness.
    assert!(ok_json(&yuexiu_admin, &["retry"])["affected"].as_u64().unwrap() >= 1);
    assert_eq!(ok_json(&yuexiu_admin, &["purge", "--older-than", "30", "--yes"])["affected"], 0, "nothing is 30 days old");
    assert_eq!(admin(&yuexiu_admin, &["ready"]).status.code(), Some(0));
    net.stop("gz").unwrap();
    let not_ready = wait_for("越秀 not ready without its parent", Duration::from_secs(20), || {
        let o = admin(&yuexiu_admin, &["--json", "ready"]);
        (o.status.code() == Some(5)).then_some(o)
    });
    let readiness: Value = serde_json::from_slice(&not_ready.stdout).unwrap();
    assert!(readiness["checks"].as_array().unwrap().iter().any(|c| c["name"] == "parent" && c["ok"] == false), "{readiness}");

    // The audit chain: intact; every admin action above is in it; export matches.
    let verified = ok_json(&yuexiu_admin, &["audit", "verify"]);
    assert_eq!(verified["ok"], true, "{verified}");
    let export = admin(&yuexiu_admin, &["audit", "export"]);
    assert!(export.status.success());
    let lines: Vec<Value> = String::from_utf8(export.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len() as u64, verified["entries"].as_u64().unwrap());
    for action in ["dead-letters-resend", "dead-letters-purge", "retry", "retention-purge"] {
        assert!(lines.iter().any(|e| e["category"] == "admin" && e["event"] == action), "audit log lacks {action}");
    }

    // Tampering: edit one entry's detail in 越秀's database file.
    tamper(&net.node("gz.yuexiu").database_path(), "UPDATE audit_log SET detail = 'nothing happened' WHERE seq = 3");
    let broken = admin(&yuexiu_admin, &["audit", "verify"]);
    assert_eq!(broken.status.code(), Some(4), "{}", String::from_utf8_lossy(&broken.stdout));
    let text = String::from_utf8_lossy(&broken.stdout).to_string() + &String::from_utf8_lossy(&broken.stderr);
    assert!(text.contains("entry 3"), "names the first broken entry: {text}");

    // Deleting: remove an entry from 海珠's log; the break is reported where the gap is.
    let haizhu_admin = AdminAt::of(net.node("gz.haizhu"));
    assert_eq!(ok_json(&haizhu_admin, &["audit", "verify"])["ok"], true);
    tamper(&net.node("gz.haizhu").database_path(), "DELETE FROM audit_log WHERE seq = 2");
    let verdict: Value = serde_json::from_slice(&admin(&haizhu_admin, &["--json", "audit", "verify"]).stdout).unwrap();
    assert_eq!(verdict["ok"], false);
    assert_eq!(verdict["first_break"]["seq"], 3, "{verdict}");
}

fn events_named(trace: &serde_json::Value, name: &str) -> bool {
    trace["events"].as_array().unwrap().iter().any(|e| e["event"] == name)
}
