//! Requests without a valid unit token, tried as a flood: each is refused (401 `unauthenticated`,
//! saying what to send), counted in `exchange_agency_refusals_total{reason}`, and audited as one
//! entry per source and reason per `api.refusal_audit_secs`, not one synced row each; custody state
//! is untouched and the node keeps answering valid requests meanwhile.

use std::time::{Duration, Instant};

use exchange_devnet::launcher::LocalNetwork;
use exchange_tests::*;

/// The attack of issue 12 point 7: 2,000 requests with a token this node never issued.
const FLOOD: usize = 2000;

fn agency_refused_rows(net: &LocalNetwork) -> Vec<exchange_wire::api::AuditEntry> {
    let page = net.node("gz").admin().audit_page(0, 100_000).unwrap();
    page.entries.into_iter().filter(|e| e.event == "agency-refused").collect()
}

/// The count an aggregated entry carries for `reason` (its detail starts with the count).
fn counted(rows: &[exchange_wire::api::AuditEntry], reason: &str) -> u64 {
    rows.iter()
        .filter_map(|r| r.detail.as_deref())
        .filter(|d| d.contains(&format!("({reason})")))
        .map(|d| d.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn a_flood_of_bad_tokens_is_counted_and_audited_in_aggregate() {
    let mut net = LocalNetwork::create(&node_binary(), None, &["gz"], "").expect("lay out the network");
    let path = &net.node("gz").config_path;
    let config = std::fs::read_to_string(path).unwrap().replacen("[api]\n", "[api]\nrefusal_audit_secs = 1\n", 1);
    std::fs::write(path, config).unwrap();
    net.start_all().expect("start the node");
    let gz = net.node("gz");
    let unit = net.unit_tokens.keys().find(|u| u.node_part() == "gz").expect("a unit on gz").clone();
    let valid = net.client_for(&unit);
    read_inbox(&valid, &unit);
    let before = stored_counts(&gz.database_path());

    let forged = gz.client().with_token("govx_this-token-was-never-issued-by-this-node");
    let anonymous = gz.client();
    let started = Instant::now();
    for i in 0..FLOOD {
        let err = forged.inbox(&unit, 0, 10, Duration::ZERO).unwrap_err();
        assert_eq!(err.code(), Some("unauthenticated"), "{err}");
        if i == 0 {
            assert!(err.to_string().contains("not one this node issued") && err.to_string().contains("tokens issue"), "{err}");
        }
        if i % 500 == 0 {
            // Valid requests are answered throughout.
            let asked = Instant::now();
            valid.inbox(&unit, 0, 10, Duration::ZERO).expect("a valid inbox read during the flood");
            assert!(asked.elapsed() < Duration::from_secs(1), "a valid read took {:?} during the flood", asked.elapsed());
        }
    }
    for _ in 0..5 {
        let err = anonymous.inbox(&unit, 0, 10, Duration::ZERO).unwrap_err();
        assert_eq!(err.code(), Some("unauthenticated"), "{err}");
        assert!(err.to_string().contains("Authorization: Bearer"), "{err}");
    }
    let seconds = started.elapsed().as_secs() + 1;

    // Counted one by one.
    let metrics = gz.client();
    assert_eq!(metric(&metrics, "exchange_agency_refusals_total", &[("reason", "bad-token")]), FLOOD as f64);
    assert_eq!(metric(&metrics, "exchange_agency_refusals_total", &[("reason", "no-token")]), 5.0);

    // Audited in aggregate: every refusal is in some entry's count, in a handful of entries.
    let rows = wait_for("the refusals audited", Duration::from_secs(10), || {
        let rows = agency_refused_rows(&net);
        (counted(&rows, "bad-token") == FLOOD as u64 && counted(&rows, "no-token") == 5).then_some(rows)
    });
    assert!(
        rows.iter().all(|r| r.category == "refusal" && r.detail.as_deref().unwrap().contains("agency API request(s) from 127.0.0.1")),
        "{rows:?}"
    );
    // One entry per source and reason per second at most (2 reasons), plus the interval edges.
    assert!(rows.len() as u64 <= 2 * (seconds + 3), "{} audit rows for {} refusals in {seconds} s", rows.len(), FLOOD + 5);
    let after = stored_counts(&gz.database_path());
    assert!(after.audit - before.audit <= rows.len() as i64 + 2, "audit rows: {} -> {}", before.audit, after.audit);
    assert_eq!(
        (after.messages, after.outbox, after.inbox, after.tracking, after.events),
        (before.messages, before.outbox, before.inbox, before.tracking, before.events),
        "no custody state changed"
    );
    valid.inbox(&unit, 0, 10, Duration::ZERO).expect("a valid inbox read after the flood");
}
