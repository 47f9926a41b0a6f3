//! `exchange-node bench --urgent-behind N --urgent-attachment-mib M`: 特急 documents submitted behind a
//! backlog of routine ones (and a routine document with an attachment started first on the same path)
//! are all delivered, the run reconciles (every document once, every receipt back), the JSON carries
//! each 特急 document's latency and place in 海珠's inbox, and the first one overtakes the bulk of the
//! backlog in front of it. Timings and "delivered first" are printed, not asserted: the forwarder does
//! not overtake a batch already in flight yet (issue 13).
//!
//! The backlog is 2,000 documents instead of the 50,000, so the handover batch is scaled down
//! with it (128 instead of 512 messages): a 特急 document may wait for the batch in flight on each
//! hop, and with 512-message batches two of those would be most of a 2,000-document backlog.

use std::process::Command;

use exchange_tests::*;

const BACKLOG: u64 = 2_000;
const URGENT: u64 = 5;

#[test]
fn urgent_documents_behind_a_backlog_are_delivered_and_measured() {
    let tmp = tempfile::Builder::new().prefix("bench-urgent-").tempdir().unwrap();
    let json = tmp.path().join("result.json");
    let dir = tmp.path().join("run");
    let out = Command::new(node_binary())
        .args(["bench", "--urgent-behind", &BACKLOG.to_string(), "--urgent-count", &URGENT.to_string(), "--urgent-attachment-mib", "8"])
        .args(["--node-config", "[relay]\nbatch_max_messages = 128", "--deadline-secs", "180"])
        .arg("--json")
        .arg(&json)
        .arg("--dir")
        .arg(&dir)
        .output()
        .expect("run exchange-node bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed ({}):\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("特急 documents behind the backlog") && stdout.contains("routine waited for"), "no table printed:\n{stdout}");
    assert!(stdout.contains("target: ahead of every routine document still queued"), "the target is not stated:\n{stdout}");
    let left = processes_mentioning(&dir.to_string_lossy());
    assert!(left.is_empty(), "processes of the run still running: {left:?}");

    // Nothing lost, nothing twice, every receipt back.
    let r = read_json(&json);
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!((r["lost"].as_u64(), r["duplicated"].as_u64()), (Some(0), Some(0)), "{r:#}");
    assert_eq!(r["routine"]["delivered"].as_u64(), Some(BACKLOG));
    assert_eq!(r["receipts"]["returned"].as_f64(), Some((BACKLOG + URGENT + 1) as f64), "{r:#}");
    assert_eq!(r["target"]["latency_ms"].as_f64(), Some(15.0));
    assert!(r["target_met"].is_boolean());

    // Every 特急 document delivered, with its numbers.
    let urgent = r["urgent"].as_array().expect("urgent rows");
    assert_eq!(urgent.len() as u64, URGENT);
    for row in urgent {
        assert!(row["latency_ms"].as_f64().is_some_and(|l| l > 0.0), "{row}");
        let (rank, queued, waited) = (row["inbox_rank"].as_u64(), row["routine_queued_at_submit"].as_u64(), row["routine_waited_for"].as_u64());
        assert!(rank.is_some_and(|r| r <= BACKLOG) && queued.is_some_and(|q| q <= BACKLOG), "{row}");
        assert!(waited.unwrap() <= queued.unwrap() && waited.unwrap() <= rank.unwrap(), "{row}");
        assert!(row["ahead_of_backlog"].is_boolean() && row["within_target"].is_boolean(), "{row}");
    }
    // The first one, behind the whole backlog, came before its bulk: outboxes are read urgent-first.
    let first = &urgent[0];
    assert!(first["inbox_rank"].as_u64().unwrap() < BACKLOG / 2, "the first 特急 document came after most of the backlog: {first}");
    assert!(
        2 * first["routine_waited_for"].as_u64().unwrap() < first["routine_queued_at_submit"].as_u64().unwrap(),
        "the first 特急 document waited for most of the backlog queued in front of it: {first}"
    );

    // The attachment document arrived too, and says where.
    let a = &r["attachment"];
    assert_eq!(a["mib"].as_u64(), Some(8));
    assert!(a["delivered_after_s"].as_f64().is_some_and(|s| s > 0.0), "{a}");
    assert!(a["urgent_delivered_before_it"].as_u64().is_some_and(|u| u <= URGENT), "{a}");
}

#[test]
fn urgent_behind_refuses_options_it_cannot_combine() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(node_binary())
        .args(["bench", "--urgent-behind", "10", "--rate", "100", "--json"])
        .arg(tmp.path().join("r.json"))
        .output()
        .expect("run exchange-node bench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--urgent-behind") && stderr.contains("--rate"), "unclear error: {stderr}");
    assert!(!tmp.path().join("r.json").exists(), "a result was written although nothing ran");
}
