//! The admin API's doors, tried as an attacker would: a web page the operator's browser opens (a
//! cross-site `text/plain` or form POST, DNS rebinding), anyone on the host without the operator
//! token, and the operator's own CLI with and without it. Every refusal leaves storage as it was,
//! is counted, and is audited once per source and reason per interval, not once per request.

use std::io::{Read, Write};
use std::time::Duration;

use exchange_devnet::launcher::LocalNetwork;
use exchange_tests::*;
use exchange_wire::directory::UnitStatus;

const UNIT: &str = "gz/general-office";

/// One node (the root, with its units), auditing refused admin requests every second.
fn city() -> LocalNetwork {
    let mut net = LocalNetwork::create(&node_binary(), None, &["gz"], "").expect("lay out the network");
    let path = &net.node("gz").config_path;
    let config = std::fs::read_to_string(path).unwrap().replacen("[admin]\n", "[admin]\nrefusal_audit_secs = 1\n", 1);
    std::fs::write(path, config).unwrap();
    net.start_all().expect("start the node");
    net
}

/// A request written by hand, so every header is the attacker's choice. Returns the status and the
/// JSON body (`null` if the body is not JSON).
fn raw(admin_url: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, serde_json::Value) {
    let addr = admin_url.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("an HTTP status line");
    let json = answer.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn token(net: &LocalNetwork) -> String {
    std::fs::read_to_string(net.node("gz").admin_token_file()).unwrap().trim().to_owned()
}

fn refused(answer: (u16, serde_json::Value), status: u16, code: &str, says: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"], code, "{}", answer.1);
    assert!(answer.1["message"].as_str().unwrap().contains(says), "{}", answer.1);
}

fn admin_refused_rows(net: &LocalNetwork) -> Vec<exchange_wire::api::AuditEntry> {
    let page = net.node("gz").admin().audit_page(0, 10_000).unwrap();
    page.entries.into_iter().filter(|e| e.event == "admin-refused").collect()
}

#[test]
fn a_browser_page_or_a_stranger_can_neither_issue_tokens_nor_suspend_or_revoke_units() {
    let net = city();
    let node = net.node("gz");
    let url = &node.admin_url;
    let good = token(&net);
    let bearer = format!("Bearer {good}");
    let tokens_before = node.admin().tokens(None).unwrap().tokens.len();
    let before = stored_counts(&node.database_path());
    let issue = r#"{"unit":"gz/general-office","label":"pwned"}"#;

    // The issue's attacks: a cross-site text/plain POST with a foreign Origin and Host issuing a
    // token; bodyless form POSTs suspending and revoking a unit.
    let foreign = [("Origin", "http://evil.example"), ("Host", "evil.example"), ("Content-Type", "text/plain")];
    refused(raw(url, "POST", "/admin/v1/tokens", &foreign, issue), 403, "cross-origin", "web browsers");
    let form = [("Origin", "null"), ("Content-Type", "application/x-www-form-urlencoded")];
    for action in ["suspend", "revoke"] {
        refused(raw(url, "POST", &format!("/admin/v1/units/{UNIT}:{action}"), &form, ""), 403, "cross-origin", "web browsers");
    }
    // Even a page that somehow had the token cannot use it from a browser.
    let with_token = [("Origin", "http://evil.example"), ("Authorization", &bearer), ("Content-Type", "application/json")];
    refused(raw(url, "POST", "/admin/v1/tokens", &with_token, issue), 403, "cross-origin", "exchange-admin");
    let fetch = [("Sec-Fetch-Site", "same-origin"), ("Authorization", &bearer)];
    refused(raw(url, "GET", "/admin/v1/tokens", &fetch, ""), 403, "cross-origin", "web browsers");

    // DNS rebinding: the page's own name now points here; same-origin requests carry that name.
    let rebound = [("Host", "rebind.evil.example:9080"), ("Authorization", bearer.as_str()), ("Content-Type", "application/json")];
    refused(raw(url, "GET", "/admin/v1/tokens", &rebound, ""), 403, "host-not-allowed", "admin.allowed_hosts");
    refused(raw(url, "POST", "/admin/v1/tokens", &rebound, issue), 403, "host-not-allowed", "IP address or localhost");

    // Anyone on the host without the operator token: not a read, not a change.
    let json = [("Content-Type", "application/json")];
    refused(raw(url, "POST", "/admin/v1/tokens", &json, issue), 401, "unauthenticated", "admin.token");
    refused(raw(url, "POST", &format!("/admin/v1/units/{UNIT}:revoke"), &json, ""), 401, "unauthenticated", "EXCHANGE_ADMIN_TOKEN_FILE");
    refused(raw(url, "GET", "/admin/v1/audit", &[], ""), 401, "unauthenticated", "operator token");
    let wrong = [("Content-Type", "application/json"), ("Authorization", "Bearer govxop_not-the-token-of-this-node-at-all")];
    refused(raw(url, "POST", &format!("/admin/v1/units/{UNIT}:suspend"), &wrong, ""), 401, "unauthenticated", "not this node's operator token");
    // A unit token is not an operator token.
    let unit_token = format!("Bearer {}", net.unit_tokens[&unit(UNIT)]);
    refused(raw(url, "GET", "/admin/v1/tokens", &[("Authorization", &unit_token)], ""), 401, "unauthenticated", "not this node's");

    // The right token still needs a JSON body declared as JSON, with a body or without.
    let plain = [("Authorization", bearer.as_str()), ("Content-Type", "text/plain")];
    refused(raw(url, "POST", "/admin/v1/tokens", &plain, issue), 415, "unsupported-media-type", "application/json");
    refused(raw(url, "POST", &format!("/admin/v1/units/{UNIT}:suspend"), &[("Authorization", &bearer)], ""), 415, "unsupported-media-type", "without");

    // Nothing changed: no token issued, the unit active, no custody row; only aggregated audit rows.
    assert_eq!(node.admin().tokens(None).unwrap().tokens.len(), tokens_before);
    assert_eq!(node.admin().unit(&unit(UNIT)).unwrap().status, UnitStatus::Active);
    let after = stored_counts(&node.database_path());
    assert_eq!((after.messages, after.outbox, after.inbox, after.tracking, after.events), (before.messages, before.outbox, before.inbox, before.tracking, before.events));

    // Counted by reason.
    let client = node.client();
    for (reason, n) in [("origin", 5.0), ("host", 2.0), ("no-token", 3.0), ("bad-token", 2.0), ("content-type", 2.0)] {
        assert_eq!(metric(&client, "exchange_admin_refusals_total", &[("reason", reason)]), n, "{reason}");
    }

    // A flood of unauthenticated requests: a handful of audit rows, one per source and reason per
    // second, not one synced row each.
    let flood_start = std::time::Instant::now();
    for _ in 0..300 {
        assert_eq!(raw(url, "POST", &format!("/admin/v1/units/{UNIT}:revoke"), &json, "").0, 401);
    }
    let seconds = flood_start.elapsed().as_secs() + 2;
    let rows = wait_for("the refusals audited", Duration::from_secs(10), || {
        let rows = admin_refused_rows(&net);
        let counted: u64 = rows
            .iter()
            .filter(|r| r.detail.as_deref().is_some_and(|d| d.contains("(no-token)")))
            .map(|r| r.detail.as_deref().unwrap().split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        (counted == 303).then_some(rows)
    });
    assert!(rows.iter().all(|r| r.category == "refusal" && r.detail.as_deref().unwrap().contains("from 127.0.0.1")), "{rows:?}");
    for reason in ["origin", "host", "bad-token", "content-type"] {
        assert!(rows.iter().any(|r| r.detail.as_deref().unwrap().contains(&format!("({reason})"))), "{reason} audited: {rows:?}");
    }
    assert!(rows.len() as u64 <= 5 * (seconds + 2), "{} audit rows for 316 refusals in {seconds} s", rows.len());
    let after = stored_counts(&node.database_path());
    assert!(after.audit - before.audit <= rows.len() as i64 + 2, "audit rows: {} -> {}", before.audit, after.audit);
    assert_eq!(node.admin().unit(&unit(UNIT)).unwrap().status, UnitStatus::Active, "the flood revoked nothing");

    // Health and metrics stay open to probes and scrapers, whatever name they use.
    for path in ["/livez", "/readyz", "/metrics"] {
        let (status, _) = raw(url, "GET", path, &[("Host", "city-node.monitoring:9080")], "");
        assert_eq!(status, 200, "{path}");
    }
}

fn cli(net: &LocalNetwork, token_file: Option<&std::path::Path>, args: &[&str]) -> std::process::Output {
    let mut c = AdminAt::of(net.node("gz")).command();
    match token_file {
        Some(f) => c.env("EXCHANGE_ADMIN_TOKEN_FILE", f),
        None => c.env_remove("EXCHANGE_ADMIN_TOKEN_FILE"),
    };
    c.args(args).output().expect("run exchange-admin")
}

#[test]
fn the_cli_works_with_the_operator_token_and_says_what_to_do_without_it() {
    let mut net = city();
    let token_file = net.node("gz").admin_token_file();
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&token_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the node made its token file private");
    let before = stored_counts(&net.node("gz").database_path());

    let none = cli(&net, None, &["units", "suspend", UNIT]);
    assert_eq!(none.status.code(), Some(1));
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(err.contains("HTTP 401") && err.contains("--admin-token-file") && err.contains("EXCHANGE_ADMIN_TOKEN_FILE") && err.contains("admin.token"), "{err}");

    let wrong = net.root.join("wrong.token");
    std::fs::write(&wrong, "govxop_this-is-not-the-token-of-the-city-node\n").unwrap();
    let err = String::from_utf8_lossy(&cli(&net, Some(&wrong), &["tokens", "issue", "--unit", UNIT]).stderr).into_owned();
    assert!(err.contains("is not this node's") && err.contains(&wrong.display().to_string()), "{err}");

    let missing = net.root.join("no-such.token");
    let err = String::from_utf8_lossy(&cli(&net, Some(&missing), &["units", "list"]).stderr).into_owned();
    assert!(err.contains("cannot read the operator token file") && err.contains("no-such.token"), "{err}");
    assert_eq!(stored_counts(&net.node("gz").database_path()).audit, before.audit, "nothing reached the node");
    assert_eq!(net.node("gz").admin().unit(&unit(UNIT)).unwrap().status, UnitStatus::Active);

    // With the token, the operator's verbs work.
    let ok = |args: &[&str]| {
        let o = cli(&net, Some(&token_file), args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    assert!(ok(&["tokens", "issue", "--unit", UNIT, "--label", "cli"]).trim().len() > 20);
    ok(&["units", "suspend", UNIT]);
    assert_eq!(net.node("gz").admin().unit(&unit(UNIT)).unwrap().status, UnitStatus::Suspended);
    ok(&["units", "activate", UNIT]);
    ok(&["audit", "verify"]);

    // A token file others may read is refused at start, with the fix.
    net.stop("gz").unwrap();
    std::fs::set_permissions(&token_file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let err = net.start("gz").unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
}
