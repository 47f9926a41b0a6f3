//! The city node on PostgreSQL (a fresh database, dropped at the end): a stream of documents from
//! 越秀 to 海珠 crosses it and every receipt comes back, while the city node is killed with SIGKILL
//! mid-stream and restarted on the same database. Reconciliation: every accepted document is in its
//! recipient's inbox exactly once, every signed receipt is back at the sender's node, and nothing is
//! left in the city's outbox. The district nodes stay on SQLite, so one network runs both stores.

use exchange_node_core::storage::postgres::scratch::ScratchDatabase;
use exchange_tests::city_outage::CityOutage;
use exchange_tests::*;

const MESSAGES: usize = 600;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

/// Rows left in the city's outbox, and messages it holds.
fn city_counts(url: &str) -> (i64, i64) {
    runtime().block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(url).await.expect("connect to the city's database");
        let outbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(&mut c).await.unwrap();
        let messages: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages").fetch_one(&mut c).await.unwrap();
        (outbox, messages)
    })
}

#[test]
fn city_on_postgres_killed_mid_stream_loses_nothing_and_delivers_nothing_twice() {
    let db = runtime().block_on(ScratchDatabase::create());
    let mut net = exchange_devnet::launcher::LocalNetwork::create(&node_binary(), None, &["gz", "gz.yuexiu", "gz.haizhu"], FAST_RETRY)
        .expect("lay out the network");
    // Only the city node keeps custody in PostgreSQL.
    net.set_storage("gz", &format!("url = \"{}\"", db.url)).unwrap();
    net.start_all().expect("start the nodes");

    CityOutage { messages: MESSAGES, units_per_node: 4, cc_every: 0, kill_after_batch: 4, restart_after_batch: 8 }.run(&mut net);
    let (outbox, messages) = city_counts(&db.url);
    assert_eq!(outbox, 0, "nothing stuck at the city");
    assert!(messages >= 2 * MESSAGES as i64, "the city held every document and its receipt in PostgreSQL ({messages} messages)");
    drop(net);
}
