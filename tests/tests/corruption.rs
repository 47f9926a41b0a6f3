//! A damaged database is detected, never served: bit flips in the database file, bit flips in the
//! write-ahead log, and a truncated write-ahead log, each on the city node after real traffic.
//!
//! - Damage in the database file is found by the check at open: the node refuses to start, names
//!   the file and the recovery steps, and changes nothing. Started with no time for that check, it
//!   finds the damage in the background, reports not ready and refuses new work.
//! - Damage to the WAL's valid frames makes SQLite silently replay a shorter history; the commit
//!   mark beside the database shows transactions are missing, and the node refuses to start.
//! - The undamaged files start and everything reconciles: the damage, not the test, made the refusals.

use std::path::{Path, PathBuf};
use std::time::Duration;

use exchange_tests::load::receivers;
use exchange_tests::*;
use exchange_wire::UnitAddress;
use sha2::{Digest, Sha256};

fn digest(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read file")))
}

/// Moves every committed page into the database file (the node stopped), so damage to the file
/// is damage to current pages.
fn checkpoint(db: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(db).connect().await.expect("open the database");
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn).await.expect("checkpoint");
    });
}

fn appended_config(path: &Path, extra: &str) {
    let mut text = std::fs::read_to_string(path).unwrap();
    text.push_str(extra);
    std::fs::write(path, text).unwrap();
}

fn copy_files(from: &Path, to: &Path, names: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for n in names {
        let _ = std::fs::remove_file(to.join(n));
        if from.join(n).exists() {
            std::fs::copy(from.join(n), to.join(n)).unwrap();
        }
    }
}

fn units(net: &exchange_devnet::launcher::LocalNetwork, node: &str) -> Vec<UnitAddress> {
    net.unit_keys.keys().filter(|u| u.node_part() == node).take(3).cloned().collect()
}

#[test]
fn bit_flips_in_the_database_file_are_refused_at_start_and_found_while_running() {
    let mut net = three_nodes(FAST_RETRY);
    let recipients = units(&net, "gz.haizhu");
    let readers = receivers(&net, &recipients);
    let stream = Stream::start(&net, &units(&net, "gz.yuexiu"), &recipients, 200, "损坏测试");
    wait_for("300 documents accepted", Duration::from_secs(60), || (stream.snapshot().accepted.len() >= 300).then_some(()));
    let sent = stream.finish();
    reconcile(&net, &sent, Duration::from_secs(60));

    net.stop("gz").expect("stop the city");
    let db = net.node("gz").database_path();
    checkpoint(&db);
    flip_middle_page(&db, 24);
    let damaged = digest(&db);

    let err = net.start("gz").expect_err("the city must refuse a damaged database").to_string();
    let log = net.log_tail("gz", 20);
    assert!(err.contains("exited during start-up"), "{err}");
    assert!(log.contains("refusing to start") && log.contains(&db.display().to_string()), "{log}");
    assert!(log.contains("Recovering a damaged database") && log.contains("exchange-node restore"), "the recovery steps are named: {log}");
    assert_eq!(digest(&db), damaged, "the node changed nothing in the damaged file");

    // With no time for the check at open, the node starts, finds the damage in the background, and
    // neither serves it nor takes new work.
    appended_config(&net.node("gz").config_path, "\n[storage]\nopen_check_secs = 0\n");
    net.start("gz").expect("start with the check left to the background");
    let admin = net.node("gz").admin();
    let check = wait_for("the city not ready for a damaged database", Duration::from_secs(30), || {
        let r = admin.readiness().ok()?;
        r.checks.into_iter().find(|c| c.name == "storage" && !c.ok && c.detail.contains("damaged"))
    });
    eprintln!("readiness: {}", check.detail);
    assert_eq!(metric(&net.node("gz").client(), "exchange_storage_healthy", &[]), 0.0);
    assert!(metric(&net.node("gz").client(), "exchange_storage_faults_total", &[("kind", "corrupt")]) >= 1.0);
    let city_unit = units(&net, "gz")[0].clone();
    let doc = document(&net.unit_keys[&city_unit], city_unit.as_str(), &[recipients[0].as_str()], &[], b"x", "after damage");
    let refused = net.client_for(&city_unit).submit(&doc, b"x").expect_err("no new work on a damaged database");
    assert_eq!(refused.code(), Some("storage-damaged"), "{refused}");
    drop(readers);
}

#[test]
fn lost_write_ahead_log_frames_are_detected_and_the_intact_files_reconcile() {
    let mut net = three_nodes(FAST_RETRY);
    let recipients = units(&net, "gz.haizhu");
    let readers = receivers(&net, &recipients);
    let senders = units(&net, "gz.yuexiu");
    let stream = Stream::start(&net, &senders, &recipients, 100, "日志损坏测试");
    wait_for("150 documents accepted", Duration::from_secs(60), || (stream.snapshot().accepted.len() >= 150).then_some(()));
    let mut all = stream.finish();
    reconcile(&net, &all, Duration::from_secs(60));

    // The city dies with transactions in its WAL.
    let data = net.node("gz").data_dir.clone();
    let wal = data.join("node.db-wal");
    let keep: PathBuf = net.root.join("gz-intact");
    let files = ["node.db", "node.db-wal", "node.db.mark"];
    let cut = wait_for("two transactions in the city's WAL", Duration::from_secs(30), || {
        // A few more receipts' worth of commits, then look.
        let more = Stream::start(&net, &senders, &recipients, 50, "再发");
        std::thread::sleep(Duration::from_millis(300));
        all.accepted.extend(more.finish().accepted);
        net.kill("gz").expect("kill -9 the city");
        let cut = wal_cut_after_first_commit(&wal);
        if cut.is_none() {
            net.start("gz").expect("restart the city");
        }
        cut
    });
    copy_files(&data, &keep, &files);
    let _ = std::fs::remove_file(data.join("node.db-shm"));

    // A truncated WAL.
    std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(cut).unwrap();
    let err = net.start("gz").expect_err("a truncated WAL must be refused").to_string();
    let log = net.log_tail("gz", 20);
    assert!(err.contains("exited during start-up") && log.contains("lost committed transactions") && log.contains("node.db.mark"), "{log}");

    // A bit flip in a frame of the WAL.
    copy_files(&keep, &data, &files);
    flip_wal_frame(&wal, cut, 16);
    net.start("gz").expect_err("a damaged WAL frame must be refused");
    assert!(net.log_tail("gz", 20).contains("lost committed transactions"));

    // The intact files: the city starts and everything reconciles.
    copy_files(&keep, &data, &files);
    net.start("gz").expect("the intact files start");
    let more = Stream::start(&net, &senders, &recipients, 100, "恢复后");
    wait_for("50 more accepted", Duration::from_secs(30), || (more.snapshot().accepted.len() >= 50).then_some(()));
    all.accepted.extend(more.finish().accepted);
    reconcile(&net, &all, Duration::from_secs(60));
    drop(readers);
}
