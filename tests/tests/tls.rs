//! Issue 12, point 11: bearer tokens never cross a network in clear text. A node with a certificate
//! serves the agency API over TLS; the API client and `exchange-admin` trust it through a CA file; a
//! plain-HTTP client or one without the CA gets nothing; and a node refuses to start serving plain
//! HTTP on an address other than loopback unless its configuration says so.

use std::io::{Read as _, Write as _};
use std::process::Command;
use std::time::Duration;

use exchange_devnet::launcher::LocalNetwork;
use exchange_tests::*;
use exchange_wire::client::ApiClient;

/// Adds `lines` at the start of the `[section]` table of `node`'s configuration.
fn configure(net: &LocalNetwork, node: &str, section: &str, lines: &str) {
    let path = &net.node(node).config_path;
    let text = std::fs::read_to_string(path).unwrap();
    let header = format!("[{section}]\n");
    assert!(text.contains(&header), "the configuration has a [{section}] table");
    std::fs::write(path, text.replacen(&header, &format!("{header}{lines}\n"), 1)).unwrap();
}

#[test]
fn agency_api_over_tls_with_a_ca_file() {
    let mut net = LocalNetwork::create(&node_binary(), None, &["gz"], "").expect("lay out the network");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).expect("self-signed certificate");
    let cert = net.root.join("api-cert.pem");
    let key = net.root.join("api-key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    configure(&net, "gz", "api", &format!("tls_cert = {:?}\ntls_key = {:?}", cert.display().to_string(), key.display().to_string()));
    {
        let gz = net.nodes.values_mut().find(|n| n.id.as_str() == "gz").unwrap();
        gz.api_url = gz.api_url.replace("http://", "https://");
        gz.ca_file = Some(cert.clone());
    }
    net.start_all().expect("the node starts with TLS on the agency API");

    let gz = net.node("gz");
    let units: Vec<_> = net.unit_tokens.keys().filter(|u| u.node_part() == "gz").cloned().collect();
    let (sender, recipient) = (&units[0], &units[1]);
    let client = net.client_for(sender);
    let doc = document(&net.unit_keys[sender], &sender.to_string(), &[&recipient.to_string()], &[], b"over TLS", "tls");
    let accepted = client.submit(&doc, b"over TLS").expect("a client with the CA file submits a document over TLS");
    let inbox = wait_for("the document in the recipient's inbox", Duration::from_secs(10), || {
        let items = read_inbox(&net.client_for(recipient), recipient);
        (!items.is_empty()).then_some(items)
    });
    assert_eq!(inbox.len(), 1);

    // exchange-admin talks TLS with --ca-file (or EXCHANGE_CA_FILE).
    let out = Command::new(admin_binary())
        .args(["--node", &gz.api_url, "status", &accepted.id.to_string()])
        .env("EXCHANGE_CA_FILE", &cert)
        .env("EXCHANGE_TOKEN", &net.unit_tokens[sender])
        .output()
        .unwrap();
    assert!(out.status.success(), "exchange-admin status over TLS: {}", String::from_utf8_lossy(&out.stderr));
    let without_ca = Command::new(admin_binary())
        .args(["--node", &gz.api_url, "status", &accepted.id.to_string()])
        .env_remove("EXCHANGE_CA_FILE")
        .env("EXCHANGE_TOKEN", &net.unit_tokens[sender])
        .output()
        .unwrap();
    assert!(!without_ca.status.success(), "without the CA file the certificate is not trusted");

    // A client without the CA is refused by its own TLS check; plain HTTP on the TLS port gets no
    // HTTP answer, so a token sent in clear text is never read.
    let untrusting = ApiClient::new(&gz.api_url);
    assert!(untrusting.health().is_err(), "the self-signed certificate is not trusted without the CA file");
    let addr = gz.api_url.trim_start_matches("https://");
    let mut plain = std::net::TcpStream::connect(addr).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    plain.write_all(format!("GET /v1/units/{recipient}/inbox HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", net.unit_tokens[recipient]).as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "plain HTTP is not served on the TLS port");
    assert!(metric(&gz.client(), "exchange_http_connections_closed_total", &[("listener", "agency"), ("reason", "tls-handshake")]) >= 1.0);
}

#[test]
fn plain_http_off_loopback_is_refused_at_start() {
    let mut net = LocalNetwork::create(&node_binary(), None, &["gz"], "").expect("lay out the network");
    let path = net.node("gz").config_path.clone();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("[api]\nlisten = \"127.0.0.1:"));
    std::fs::write(&path, text.replacen("[api]\nlisten = \"127.0.0.1:", "[api]\nlisten = \"0.0.0.0:", 1)).unwrap();
    let err = format!("{:#}", net.start("gz").expect_err("plain HTTP on 0.0.0.0 is refused"));
    let log = std::fs::read_to_string(&net.node("gz").log_path).unwrap();
    for phrase in ["refusing to serve plain HTTP", "api.tls_cert", "api.allow_plain_http = true"] {
        assert!(log.contains(phrase), "the refusal says {phrase:?}: {err}\n{log}");
    }

    // Said explicitly, it starts.
    configure(&net, "gz", "api", "allow_plain_http = true");
    net.start("gz").expect("with api.allow_plain_http = true the node serves plain HTTP");
}
