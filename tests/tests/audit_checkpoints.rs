//! Signed audit checkpoints, tried as an insider with the child's database file would: edit an entry
//! and recompute every hash after it (the chain alone then passes), and delete the end of the log
//! with its id counter reset. The parent holds the child's last signed checkpoint; `exchange-admin
//! audit verify` on the child compares with it and names the entry that no longer matches, and the
//! child stops signing checkpoints of the altered log, so the evidence at the parent stays.

use std::path::{Path, PathBuf};
use std::time::Duration;

use exchange_devnet::launcher::LocalNetwork;
use exchange_node_core::storage::EventRow;
use exchange_tests::*;
use serde_json::Value;

const CHILD: &str = "gz.haizhu";

fn sql<T>(db: &Path, f: impl AsyncFnOnce(&mut sqlx::SqliteConnection) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(db).connect().await.unwrap();
        f(&mut conn).await
    })
}

/// Rewrites entry `seq`'s detail and recomputes the chain hash of it and every entry after it, as
/// an insider who knows the (unkeyed) hash would: the chain alone is intact again.
fn rewrite_entry(db: &Path, seq: i64) {
    sql(db, async |conn| {
        use sqlx::Row;
        sqlx::query("UPDATE audit_log SET detail = 'nothing happened' WHERE seq = $1").bind(seq).execute(&mut *conn).await.unwrap();
        let rows = sqlx::query("SELECT seq, at_ms, category, message_id, event, unit, peer, detail, hash FROM audit_log ORDER BY seq")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        let mut prev = [0u8; 32];
        for r in rows {
            let row_seq: i64 = r.get(0);
            let message_id: Option<Vec<u8>> = r.get(3);
            let row = EventRow {
                at_ms: r.get(1),
                category: "",
                message_id: message_id.map(|m| m.try_into().unwrap()),
                event: "",
                unit: r.get(5),
                peer: r.get(6),
                detail: r.get(7),
            };
            let category: String = r.get(2);
            let event: String = r.get(4);
            let hash = row.chain_hash_with(&prev, &category, &event);
            if row_seq >= seq {
                sqlx::query("UPDATE audit_log SET hash = $1 WHERE seq = $2").bind(hash.as_slice()).bind(row_seq).execute(&mut *conn).await.unwrap();
            }
            prev = hash;
        }
    })
}

/// Deletes the entries after `keep` and resets the id counter, so new entries reuse the numbers.
fn truncate_log(db: &Path, keep: i64) {
    sql(db, async |conn| {
        sqlx::query("DELETE FROM audit_log WHERE seq > $1").bind(keep).execute(&mut *conn).await.unwrap();
        sqlx::query("UPDATE sqlite_sequence SET seq = $1 WHERE name = 'audit_log'").bind(keep).execute(&mut *conn).await.unwrap();
    })
}

/// The database files (database, WAL, commit mark) of a stopped node, copied to `to` or back.
fn copy_db_files(db: &Path, from_dir: &Path, to_dir: &Path) {
    let name = db.file_name().unwrap().to_str().unwrap().to_owned();
    std::fs::create_dir_all(to_dir).unwrap();
    for f in std::fs::read_dir(to_dir).unwrap() {
        let f = f.unwrap();
        if f.file_name().to_str().unwrap().starts_with(&name) {
            std::fs::remove_file(f.path()).unwrap();
        }
    }
    for f in std::fs::read_dir(from_dir).unwrap() {
        let f = f.unwrap();
        if f.file_name().to_str().unwrap().starts_with(&name) {
            std::fs::copy(f.path(), to_dir.join(f.file_name())).unwrap();
        }
    }
}

/// `exchange-admin audit verify` on the child: exit code, the JSON verdict and the text one.
fn verify(net: &LocalNetwork) -> (Option<i32>, Value, String) {
    let admin = AdminAt::of(net.node(CHILD));
    let json = admin.command().args(["--json", "audit", "verify"]).output().unwrap();
    let text = admin.command().args(["audit", "verify"]).output().unwrap();
    let words = String::from_utf8_lossy(&text.stdout).into_owned() + &String::from_utf8_lossy(&text.stderr);
    assert_eq!(json.status.code(), text.status.code(), "{words}");
    (text.status.code(), serde_json::from_slice(&json.stdout).unwrap_or(Value::Null), words)
}

/// The checkpoint the parent holds for the child (seq, the whole file).
fn held_at_parent(net: &LocalNetwork) -> Option<(i64, String)> {
    let file: PathBuf = net.node("gz").data_dir.join("audit-checkpoints").join(format!("{CHILD}.json"));
    let text = std::fs::read_to_string(file).ok()?;
    let v: Value = serde_json::from_str(&text).unwrap();
    Some((v["seq"].as_i64().unwrap(), text))
}

#[test]
fn a_rewritten_or_truncated_log_no_longer_matches_the_checkpoint_its_parent_holds() {
    let mut net = LocalNetwork::create(&node_binary(), None, &["gz", CHILD], "[audit]\ncheckpoint_secs = 1\n").expect("lay out the network");
    net.start_all().expect("start the nodes");
    let token = net.unit_tokens.iter().find(|(u, _)| u.node_part() == CHILD).map(|(_, t)| t.clone()).expect("a unit on the child");
    let api = net.node(CHILD).api_url.clone();

    // Audit entries at the child: refused (malformed) submissions, one entry each.
    for _ in 0..12 {
        assert_eq!(post_raw(&format!("{api}/v1/messages"), b"{\"envelope\": {", Some(&token)).0, 400);
    }
    let head = verify(&net).1["head_seq"].as_i64().unwrap();
    assert!(head >= 12, "head {head}");
    wait_for("the parent holds a checkpoint of the child's head", Duration::from_secs(20), || {
        held_at_parent(&net).filter(|(seq, _)| *seq >= head)
    });
    let (code, verdict, words) = verify(&net);
    assert_eq!(code, Some(0), "{words}");
    assert_eq!(verdict["checkpoint"]["checked"], true, "{verdict}");
    assert_eq!(verdict["checkpoint"]["holder"], "gz", "{verdict}");
    assert!(words.contains("matches the checkpoint"), "{words}");

    // The untampered files, kept for later.
    let child_dir = net.node(CHILD).data_dir.clone();
    let db = net.node(CHILD).database_path();
    let pristine = net.root.join("pristine");
    net.stop(CHILD).unwrap();
    copy_db_files(&db, &child_dir, &pristine);
    // The last checkpoint the child handed (at the latest, when it stopped).
    let (checkpointed, _) = held_at_parent(&net).unwrap();

    // 1. An entry edited and the hashes after it recomputed: the chain passes, the checkpoint does not.
    rewrite_entry(&db, 5);
    let (_, before_restart) = held_at_parent(&net).unwrap();
    net.start(CHILD).unwrap();
    let (code, verdict, words) = verify(&net);
    assert_eq!(code, Some(4), "{words}");
    assert_eq!(verdict["ok"], false, "{verdict}");
    assert!(verdict["first_break"].is_null(), "the chain alone is intact again: {verdict}");
    assert_eq!(verdict["checkpoint"]["ok"], false, "{verdict}");
    assert!(
        words.contains("differs from its signed checkpoint") && words.contains(&format!("entry {checkpointed}")) && words.contains("altered"),
        "names the entry and what differs: {words}"
    );
    assert!(words.contains("keep the file for investigation"), "says what to do: {words}");
    // The child does not replace the evidence: it stops signing, and says so in a metric.
    let child_client = net.node(CHILD).client();
    wait_for("the child notices the mismatch", Duration::from_secs(10), || {
        (metric(&child_client, "exchange_audit_checkpoints_total", &[("outcome", "mismatch")]) >= 1.0).then_some(())
    });
    assert_eq!(held_at_parent(&net).unwrap().1, before_restart, "the parent's checkpoint is unchanged");

    // Back to the untampered log: it passes.
    net.stop(CHILD).unwrap();
    copy_db_files(&db, &pristine, &child_dir);
    net.start(CHILD).unwrap();
    let (code, _, words) = verify(&net);
    assert_eq!(code, Some(0), "{words}");

    // 2. The end of the log deleted, with the id counter reset.
    net.stop(CHILD).unwrap();
    truncate_log(&db, checkpointed - 4);
    net.start(CHILD).unwrap();
    let (code, verdict, words) = verify(&net);
    assert_eq!(code, Some(4), "{words}");
    assert!(verdict["first_break"].is_null(), "the shortened chain alone is intact: {verdict}");
    assert!(
        words.contains(&format!("entry {checkpointed} is missing")) && words.contains("deleted"),
        "names the missing entry: {words}"
    );
    assert_eq!(held_at_parent(&net).unwrap().0, checkpointed, "the parent kept the checkpoint");
}
