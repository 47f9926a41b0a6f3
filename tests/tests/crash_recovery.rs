//! (b) The city node is killed with SIGKILL in the middle of a 2,000-message stream from 越秀 to 海珠
//! (a tenth also copied to city departments), then restarted. Reconciliation: every accepted message
//! is in each of its recipients' inboxes exactly once, and every signed receipt is back at the
//! sender's node.

use exchange_tests::city_outage::CityOutage;
use exchange_tests::*;

#[test]
fn city_killed_mid_stream_loses_nothing_and_delivers_nothing_twice() {
    let mut net = three_nodes(FAST_RETRY);
    // 2,000 documents, every tenth also copied to a city unit; the city dies half way.
    CityOutage { messages: 2000, units_per_node: 6, cc_every: 10, kill_after_batch: 20, restart_after_batch: 30 }.run(&mut net);
    assert_eq!(stored_counts(&net.node("gz").database_path()).outbox, 0, "nothing stuck at the city");
}
