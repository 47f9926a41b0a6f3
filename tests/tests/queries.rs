//! Queries (查询核验) across tiers with `exchange-admin ask` and `answer`: 海珠区公安分局 asks
//! 越秀区民政局 whether a person is alive and gets the signed answer; a query nobody answers times
//! out at its deadline, even across a restart of the asker's node, and a late answer is refused.

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use exchange_tests::*;
use exchange_wire::api::RecipientState;
use exchange_wire::{Kind, query};

fn admin_as(node_url: &str, token: &str, args: &[&str]) -> Output {
    Command::new(admin_binary()).arg("--node").arg(node_url).args(args).env("EXCHANGE_TOKEN", token).output().expect("run exchange-admin")
}

#[test]
fn a_query_is_answered_across_tiers_and_an_unanswered_one_times_out() {
    let mut net = three_nodes(FAST_RETRY);
    let asker = unit("gz.haizhu/public-security");
    let registry = unit("gz.yuexiu/civil-affairs");
    let silent = unit("gz/civil-affairs");
    let (haizhu_url, yuexiu_url) = (net.node("gz.haizhu").api_url.clone(), net.node("gz.yuexiu").api_url.clone());
    let asker_key = net.unit_key_file(&asker).unwrap();
    let registry_key = net.unit_key_file(&registry).unwrap();

    // 越秀区民政局's system: answers every person.alive query in its inbox from its records.
    let stop = Arc::new(AtomicBool::new(false));
    let responder = {
        let (stop, client, token) = (stop.clone(), net.client_for(&registry), net.unit_tokens[&registry].clone());
        let (url, key, registry) = (yuexiu_url.clone(), registry_key.clone(), registry.clone());
        std::thread::spawn(move || {
            let mut after = 0;
            let mut answered = 0;
            while !stop.load(Ordering::Relaxed) {
                let page = client.inbox(&registry, after, 100, Duration::from_millis(500)).expect("read the inbox");
                after = page.next_after;
                for item in page.items.iter().filter(|i| i.message.envelope.kind == Kind::Query) {
                    let (_, question) = item.message.decode().unwrap();
                    let question = String::from_utf8(question).unwrap();
                    let record = if question.contains("440104195001011234") {
                        r#"{"alive":false,"death_date":"2026-11-20","registered_by":"越秀区民政局"}"#
                    } else {
                        r#"{"alive":true}"#
                    };
                    let out = admin_as(&url, &token, &["answer", "--key", key.to_str().unwrap(), "--unit", registry.as_str(), &item.id.to_hex(), record]);
                    assert!(out.status.success(), "answer failed: {}", String::from_utf8_lossy(&out.stderr));
                    answered += 1;
                }
            }
            answered
        })
    };

    // Answered: the asker's CLI prints the answer after verifying its signature.
    let out = admin_as(
        &haizhu_url,
        &net.unit_tokens[&asker],
        &["ask", "--key", asker_key.to_str().unwrap(), "--from", asker.as_str(), "--to", registry.as_str(), "--topic", "person.alive", "--within", "60", r#"{"id_number":"440104195001011234"}"#],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ask failed: {stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""alive":false"#), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("answered by gz.yuexiu/civil-affairs") && stderr.contains("signature verified"), "{stderr}");

    // Answered once: a second answer to the same query is refused.
    let registry_client = net.client_for(&registry);
    let q = read_inbox(&registry_client, &registry).into_iter().find(|i| i.message.envelope.kind == Kind::Query).unwrap();
    assert_eq!(q.state, RecipientState::Answered);
    let again = query::answer(registry.clone(), asker.clone(), q.id, b"{\"alive\":true}").sign(&net.unit_keys[&registry]);
    let err = registry_client.answer(&registry, &q.id, &again, b"{\"alive\":true}").unwrap_err();
    assert_eq!(err.code(), Some("conflict"), "{err}");
    stop.store(true, Ordering::Relaxed);
    assert_eq!(responder.join().unwrap(), 1, "the registry answered the one query once");

    // Unanswered: 广州市民政局 has no system answering; the asker learns of the timeout at the deadline.
    let out = admin_as(
        &haizhu_url,
        &net.unit_tokens[&asker],
        &["ask", "--key", asker_key.to_str().unwrap(), "--from", asker.as_str(), "--to", silent.as_str(), "--topic", "legal-person.registered", "--within", "3", r#"{"uscc":"91440101MA5CXXXX0X"}"#],
    );
    assert_eq!(out.status.code(), Some(3), "a timed-out query exits 3: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));

    // The asked unit did get it, but its answer after the deadline is refused.
    let silent_client = net.client_for(&silent);
    let late = read_inbox(&silent_client, &silent).into_iter().find(|i| i.message.envelope.kind == Kind::Query).expect("delivered");
    let answer = query::answer(silent.clone(), asker.clone(), late.id, b"{\"registered\":true}").sign(&net.unit_keys[&silent]);
    let err = silent_client.answer(&silent, &late.id, &answer, b"{\"registered\":true}").unwrap_err();
    assert_eq!(err.code(), Some("deadline-passed"), "{err}");

    // A timeout is recorded even when the asker's node was down at the deadline.
    let asker_client = net.client_for(&asker);
    let due = exchange_wire::now_ms() + 3000;
    let signed = query::question(asker.clone(), silent.clone(), "person.alive", due, b"{}").sign(&net.unit_keys[&asker]);
    let id = asker_client.ask(&signed, b"{}").unwrap().id;
    net.kill("gz.haizhu").expect("kill -9 the asker's node");
    wait_for("the deadline to pass", Duration::from_secs(10), || (exchange_wire::now_ms() > due + 500).then_some(()));
    net.start("gz.haizhu").expect("restart the asker's node");
    let status = wait_for("the timeout recorded after the restart", Duration::from_secs(30), || {
        let s = net.client_for(&asker).query_status(&id, Duration::from_secs(5)).ok()?;
        (s.state == RecipientState::TimedOut).then_some(s)
    });
    assert_eq!(status.node.as_str(), "gz.haizhu");
    assert!(status.detail.unwrap().contains("no answer by the deadline"));

    let haizhu = net.node("gz.haizhu").client();
    wait_for("the second timeout counted", Duration::from_secs(5), || {
        (metric(&haizhu, "exchange_queries_total", &[("outcome", "timed-out")]) >= 1.0).then_some(())
    });
    assert_eq!(metric(&haizhu, "exchange_queries_total", &[("outcome", "answered")]), 0.0, "counters restart with the process");
    let yuexiu = net.node("gz.yuexiu").client();
    assert_eq!(metric(&yuexiu, "exchange_messages_rejected_total", &[("reason", "conflict")]), 1.0, "the second answer was counted as refused");
}
