//! Operator commands: the node's status, its links and queues, tracing a message across the network,
//! dead letters, retries, retention, the audit log and readiness.
//!
//! They all talk to the node's admin API (`--admin`), a separate listener that is on loopback by
//! default. Formatting is kept in pure functions next to each command so it can be unit-tested; the
//! commands themselves only fetch, print and choose the outcome.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use exchange_wire::MessageId;
use exchange_wire::api::{
    AdminActionResponse, AuditPage, AuditVerification, CustodyEvent, DeadLetter,
    DeadLetterSelection, NodeStatus, PeerInfo, QueueInfo, Readiness,
};

use crate::endpoint::Ctx;
use crate::output::{
    Table, action_line, emit, emit_json, emit_more, fields, format_age, format_bytes,
    format_duration_ms, format_ms, sanitize, short_id, truncate,
};
use crate::{
    AuditExportArgs, DeadLetterPurgeArgs, DeadLetterSelectionArgs, Outcome, RetentionArgs,
};

/// Column width for free text from the node (reasons, details); the full text is in `--json` output.
const DETAIL_COLUMNS: usize = 60;

/// Column width for recipient lists of dead letters.
const RECIPIENT_COLUMNS: usize = 40;

/// Audit entries asked for per request by `audit export`.
const AUDIT_PAGE: u32 = 500;

/// `-` for a missing value in a table.
fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// Names joined by commas, or `none`.
fn list<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items
            .iter()
            .map(T::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

// ---- status (without a message id) ----

fn node_status_text(st: &NodeStatus) -> String {
    let node = if st.name.is_empty() || st.name == st.node.as_str() {
        st.node.to_string()
    } else {
        format!("{} ({})", st.node, st.name)
    };
    fields(&[
        ("node", node),
        ("tier", st.tier.clone()),
        ("parent", or_dash(st.parent.as_ref())),
        ("children", list(&st.children)),
        ("peer id", st.peer_id.clone()),
        ("directory", format!("version {}", st.directory_version)),
        (
            "uptime",
            format!(
                "{} (since {} UTC)",
                format_duration_ms(st.uptime_secs.saturating_mul(1000)),
                format_ms(st.started_at_ms)
            ),
        ),
        ("build", st.version.clone()),
    ])
}

/// `status` without a message id: what the node is and how it stands.
pub fn node_status(ctx: &Ctx) -> Result<()> {
    let st = ctx.admin()?.call(|c| c.node_status())?;
    if ctx.json {
        return emit_json(&st);
    }
    emit(&node_status_text(&st))
}

// ---- peers, queues ----

fn peers_table(peers: &[PeerInfo], now_ms: u64) -> Table {
    let mut t = Table::new(&["NODE", "ROLE", "CONNECTED", "LAST SEEN", "RTT MS"]);
    for p in peers {
        t.push(vec![
            p.node.to_string(),
            p.role.clone(),
            if p.connected { "yes" } else { "no" }.into(),
            p.last_seen_ms
                .map(|at| format!("{} ago", format_age(now_ms, at)))
                .unwrap_or_else(|| "never".into()),
            p.rtt_ms
                .map(|ms| format!("{ms:.1}"))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

/// `peers`: the links to the parent and the children.
pub fn peers(ctx: &Ctx) -> Result<()> {
    let answer = ctx.admin()?.call(|c| c.peers())?;
    if ctx.json {
        return emit_json(&answer);
    }
    if answer.peers.is_empty() {
        eprintln!("this node has no parent and no children");
        return Ok(());
    }
    let disconnected = answer.peers.iter().filter(|p| !p.connected).count();
    emit(&peers_table(&answer.peers, exchange_wire::now_ms()).render())?;
    if disconnected > 0 {
        eprintln!(
            "warning: {disconnected} of {} peer(s) not connected; messages for them wait in the queues",
            answer.peers.len()
        );
    }
    Ok(())
}

fn queues_table(queues: &[QueueInfo]) -> Table {
    let mut t = Table::new(&["PEER", "DEPTH", "BYTES", "OLDEST", "DEAD LETTERS"]);
    for q in queues {
        t.push(vec![
            q.peer.to_string(),
            q.depth.to_string(),
            format_bytes(q.bytes),
            q.oldest_age_ms
                .map(format_duration_ms)
                .unwrap_or_else(|| "-".into()),
            q.dead_letters.to_string(),
        ]);
    }
    t
}

/// `queues`: the outbox toward each next hop.
pub fn queues(ctx: &Ctx) -> Result<()> {
    let answer = ctx.admin()?.call(|c| c.queues())?;
    if ctx.json {
        return emit_json(&answer);
    }
    if answer.queues.is_empty() {
        eprintln!("no outbox queues: this node has no next hops");
        return Ok(());
    }
    emit(&queues_table(&answer.queues).render())?;
    if answer.queues.iter().any(|q| q.dead_letters > 0) {
        eprintln!("see the dead letters with: exchange-admin dead-letters list");
    }
    Ok(())
}

// ---- trace ----

/// The timeline of a trace, sorted by time. The sort is stable, so events one node recorded in the
/// same millisecond keep that node's order.
fn trace_table(events: &[CustodyEvent]) -> Table {
    let mut sorted: Vec<&CustodyEvent> = events.iter().collect();
    sorted.sort_by_key(|e| e.at_ms);
    let mut t = Table::new(&["TIME (UTC)", "NODE", "EVENT", "UNIT", "PEER", "DETAIL"]);
    for e in sorted {
        t.push(vec![
            format_ms(e.at_ms),
            e.node.to_string(),
            e.event.clone(),
            or_dash(e.unit.as_ref()),
            or_dash(e.peer.as_ref()),
            e.detail
                .as_deref()
                .map(|d| truncate(&sanitize(d), DETAIL_COLUMNS))
                .unwrap_or_default(),
        ]);
    }
    t
}

/// `trace MESSAGE_ID`: the message's custody events from every node it crossed. Nodes that could not
/// be asked make the trace partial: that is a warning, not a failure (exit 0).
pub fn trace(ctx: &Ctx, id: &MessageId) -> Result<()> {
    let answer = ctx.admin()?.call(|c| c.trace(id))?;
    if !answer.unreachable.is_empty() {
        eprintln!(
            "warning: the trace may be partial: could not ask {} (a link may be down); their events are missing",
            list(&answer.unreachable)
        );
    }
    if ctx.json {
        return emit_json(&answer);
    }
    if answer.events.is_empty() {
        eprintln!(
            "no custody events for {id} on the nodes asked ({}); check the id, or ask the sender's node",
            list(&answer.nodes)
        );
        return Ok(());
    }
    let mut text = format!("message {}\n\n", answer.id);
    text.push_str(&trace_table(&answer.events).render());
    text.push_str(&format!("\nnodes asked: {}\n", list(&answer.nodes)));
    emit(&text)
}

// ---- dead letters ----

fn dead_letters_table(letters: &[DeadLetter]) -> Table {
    let mut t = Table::new(&[
        "SEQ",
        "MESSAGE",
        "PEER",
        "RECIPIENTS",
        "ATTEMPTS",
        "QUEUED (UTC)",
        "REASON",
    ]);
    for d in letters {
        t.push(vec![
            d.seq.to_string(),
            short_id(&d.message_id.to_hex()).to_owned(),
            d.peer.to_string(),
            truncate(&list(&d.recipients), RECIPIENT_COLUMNS),
            d.attempts.to_string(),
            format_ms(d.enqueued_at_ms),
            truncate(&sanitize(&d.reason), DETAIL_COLUMNS),
        ]);
    }
    t
}

/// `dead-letters list`.
pub fn dead_letters(ctx: &Ctx) -> Result<()> {
    let answer = ctx.admin()?.call(|c| c.dead_letters())?;
    if ctx.json {
        return emit_json(&answer);
    }
    if answer.dead_letters.is_empty() {
        eprintln!("no dead letters");
        return Ok(());
    }
    emit(&dead_letters_table(&answer.dead_letters).render())?;
    eprintln!(
        "resend with: exchange-admin dead-letters resend SEQ... (or --all); purge for good with: \
         exchange-admin dead-letters purge SEQ... --yes"
    );
    Ok(())
}

/// The selection to send: every dead letter, or the given seqs once each, in the order given.
fn selection(a: &DeadLetterSelectionArgs) -> DeadLetterSelection {
    let mut seen = BTreeSet::new();
    DeadLetterSelection {
        seqs: a.seqs.iter().copied().filter(|s| seen.insert(*s)).collect(),
        all: a.all,
    }
}

/// Refuses a destructive command unless `--yes` was given, explaining what it would destroy.
pub fn confirmed(yes: bool, what: &str) -> Result<()> {
    if !yes {
        bail!("refusing without --yes: {what}");
    }
    Ok(())
}

/// Prints an action's answer, warning when fewer dead letters were changed than were named.
fn report_action(
    ctx: &Ctx,
    answer: &AdminActionResponse,
    named: &DeadLetterSelection,
) -> Result<()> {
    if !named.all && answer.affected < named.seqs.len() as u64 {
        eprintln!(
            "warning: {} of the {} seq number(s) given were not dead letters (already resent or purged? see \
             exchange-admin dead-letters list)",
            named.seqs.len() as u64 - answer.affected,
            named.seqs.len()
        );
    }
    if ctx.json {
        return emit_json(answer);
    }
    emit(&action_line(answer))
}

/// `dead-letters resend (--all | SEQ...)`.
pub fn resend_dead_letters(ctx: &Ctx, a: &DeadLetterSelectionArgs) -> Result<()> {
    let sel = selection(a);
    let answer = ctx.admin()?.call(|c| c.resend_dead_letters(&sel))?;
    report_action(ctx, &answer, &sel)
}

/// `dead-letters purge (--all | SEQ...) --yes`. Irreversible, so refused without `--yes`.
pub fn purge_dead_letters(ctx: &Ctx, a: &DeadLetterPurgeArgs) -> Result<()> {
    let sel = selection(&a.selection);
    confirmed(
        a.yes,
        "purging dead letters is irreversible: they are deleted for good and never delivered to their \
         recipients. Review them with `exchange-admin dead-letters list` (or resend them), then repeat with --yes",
    )?;
    let answer = ctx.admin()?.call(|c| c.purge_dead_letters(&sel))?;
    report_action(ctx, &answer, &sel)
}

// ---- retry, retention ----

/// `retry`: every forwarder tries now.
pub fn retry(ctx: &Ctx) -> Result<()> {
    let answer = ctx.admin()?.call(|c| c.retry_now())?;
    if ctx.json {
        return emit_json(&answer);
    }
    emit(&action_line(&answer))
}

/// `purge --older-than DAYS --yes`: drops old payloads. Irreversible, so refused without `--yes`.
pub fn retention_purge(ctx: &Ctx, a: &RetentionArgs) -> Result<()> {
    confirmed(
        a.yes,
        &format!(
            "the payloads and inbox entries of settled messages older than {} day(s) would be deleted for good \
             (message ids and the audit log are kept); repeat with --yes to confirm",
            a.older_than
        ),
    )?;
    let answer = ctx.admin()?.call(|c| c.retention_purge(a.older_than))?;
    if ctx.json {
        return emit_json(&answer);
    }
    emit(&action_line(&answer))
}

// ---- audit ----

/// The verdict on an audit verification and the line that says it. A node that reports a failure
/// without naming the entry, or names one while saying all is well, is taken as broken.
/// The verdict on the chain, then on the signed checkpoint its holder keeps: a log that differs from
/// its checkpoint is broken even when its chain is intact (rewritten, or its tail deleted).
fn verification_text(v: &AuditVerification) -> (Outcome, String) {
    let (outcome, mut text) = chain_text(v);
    match &v.checkpoint {
        Some(c) if c.checked && !c.ok => {
            let chain = if outcome == Outcome::Done { String::new() } else { text };
            return (Outcome::AuditBroken, format!("{chain}audit log differs from its signed checkpoint: {}\n", sanitize(&c.detail)));
        }
        Some(c) => text.push_str(&format!("checkpoint: {}\n", sanitize(&c.detail))),
        None => {}
    }
    (outcome, text)
}

fn chain_text(v: &AuditVerification) -> (Outcome, String) {
    match (&v.first_break, v.ok && v.checkpoint.as_ref().is_none_or(|c| c.ok)) {
        (Some(b), _) => (
            Outcome::AuditBroken,
            format!(
                "audit chain broken at entry {}: {}\n",
                b.seq,
                sanitize(&b.reason)
            ),
        ),
        (None, false) => (
            Outcome::AuditBroken,
            "audit chain broken (the node did not say at which entry)\n".into(),
        ),
        (None, true) if v.entries == 0 => (Outcome::Done, "OK: the audit log is empty\n".into()),
        (None, true) => (
            Outcome::Done,
            format!(
                "OK: {} entries, head seq {}, head hash {}\n",
                v.entries,
                v.head_seq,
                sanitize(&v.head_hash)
            ),
        ),
    }
}

/// `audit verify`: exit 0 when the chain is intact, 4 when it is broken.
pub fn audit_verify(ctx: &Ctx) -> Result<Outcome> {
    let v = ctx.admin()?.call(|c| c.audit_verify())?;
    let (outcome, line) = verification_text(&v);
    if ctx.json {
        emit_json(&v)?;
    } else {
        emit(&line)?;
    }
    if outcome == Outcome::Done && v.entries > 0 {
        eprintln!(
            "keep the head seq and hash elsewhere: a later verify whose chain no longer passes through them \
             shows the log was cut"
        );
    }
    Ok(outcome)
}

/// How far an export got.
#[derive(Debug, PartialEq, Eq)]
struct Exported {
    /// Entries written.
    count: u64,
    /// The last seq written (or the starting point, if none were).
    last: i64,
    /// False when stdout was closed before the end of the log.
    complete: bool,
}

/// Pages through the audit log after `after`, writing one JSON line per entry, until a page comes back
/// empty or `write` reports that stdout is closed.
fn export_audit(
    mut after: i64,
    mut fetch: impl FnMut(i64) -> Result<AuditPage>,
    mut write: impl FnMut(&str) -> Result<bool>,
) -> Result<Exported> {
    let mut count = 0u64;
    loop {
        let page = fetch(after)?;
        let Some(last) = page.entries.last().map(|e| e.seq) else {
            return Ok(Exported {
                count,
                last: after,
                complete: true,
            });
        };
        // A node whose pages do not move forward would make this loop forever (and repeat entries).
        if page.entries.iter().any(|e| e.seq <= after) {
            bail!(
                "the node returned audit entries at or before seq {after} when asked for those after it; \
                 stopped so as not to repeat them"
            );
        }
        let mut text = String::new();
        for entry in &page.entries {
            text.push_str(&serde_json::to_string(entry)?);
            text.push('\n');
        }
        if !write(&text)? {
            return Ok(Exported {
                count,
                last: after,
                complete: false,
            });
        }
        count += page.entries.len() as u64;
        after = page.next_after.max(last);
    }
}

/// `audit export [--after SEQ]`: JSON lines on stdout, one audit entry per line.
pub fn audit_export(ctx: &Ctx, a: &AuditExportArgs) -> Result<()> {
    let admin = ctx.admin()?;
    let done = export_audit(
        a.after,
        |after| admin.call(|c| c.audit_page(after, AUDIT_PAGE)),
        emit_more,
    )?;
    if done.complete {
        eprintln!(
            "exported {} audit entries; continue later with: exchange-admin audit export --after {}",
            done.count, done.last
        );
    }
    Ok(())
}

// ---- ready ----

fn readiness_text(r: &Readiness) -> (Outcome, String) {
    let mut t = Table::new(&["CHECK", "STATE", "DETAIL"]);
    for c in &r.checks {
        t.push(vec![
            c.name.clone(),
            if c.ok { "ok" } else { "FAIL" }.into(),
            truncate(&sanitize(&c.detail), DETAIL_COLUMNS),
        ]);
    }
    let mut text = if r.checks.is_empty() {
        String::new()
    } else {
        t.render() + "\n"
    };
    // The node's verdict decides, as its HTTP status (200 or 503) does for probes.
    if r.ready {
        text.push_str("ready\n");
        (Outcome::Done, text)
    } else {
        let failed = r.checks.iter().filter(|c| !c.ok).count();
        text.push_str(&format!(
            "not ready: {failed} of {} check(s) failing\n",
            r.checks.len()
        ));
        (Outcome::NotReady, text)
    }
}

/// `ready`: each readiness check; exit 0 when ready, 5 when not.
pub fn ready(ctx: &Ctx) -> Result<Outcome> {
    let r = ctx.admin()?.call(|c| c.readiness())?;
    let (outcome, text) = readiness_text(&r);
    if ctx.json {
        emit_json(&r)?;
    } else {
        emit(&text)?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use exchange_wire::api::{AuditBreak, AuditEntry, Check};

    fn id() -> MessageId {
        "0123456789abcdef".repeat(4).parse().unwrap()
    }

    fn event(node: &str, at_ms: u64, event: &str) -> CustodyEvent {
        CustodyEvent {
            node: node.parse().unwrap(),
            at_ms,
            event: event.into(),
            unit: None,
            peer: None,
            detail: None,
        }
    }

    #[test]
    fn node_status_shows_name_neighbours_and_uptime() {
        let st = NodeStatus {
            node: "gz.yuexiu".parse().unwrap(),
            name: "越秀区".into(),
            tier: "district".into(),
            parent: Some("gz".parse().unwrap()),
            children: vec![],
            peer_id: "12D3KooW".into(),
            directory_version: 42,
            version: "0.1.0".into(),
            started_at_ms: 1_700_000_000_000,
            uptime_secs: 3 * 86_400 + 4 * 3600 + 59,
        };
        let text = node_status_text(&st);
        assert!(
            text.starts_with("node       gz.yuexiu (越秀区)\n"),
            "{text}"
        );
        assert!(text.contains("parent     gz\n"));
        assert!(text.contains("children   none\n"));
        assert!(text.contains("directory  version 42\n"));
        assert!(text.contains("uptime     3d04h (since 2023-11-14 22:13:20.000 UTC)\n"));
        assert!(text.ends_with("build      0.1.0\n"));
    }

    #[test]
    fn peers_show_ages_and_round_trips() {
        let peer = |node: &str, connected, last_seen_ms, rtt_ms| PeerInfo {
            node: node.parse().unwrap(),
            role: "child".into(),
            peer_id: "p".into(),
            connected,
            last_seen_ms,
            rtt_ms,
            addresses: vec![],
        };
        let text = peers_table(
            &[
                peer("gz.haizhu", true, Some(95_000), Some(0.84)),
                peer("gz.tianhe", false, None, None),
            ],
            100_000,
        )
        .render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NODE       ROLE   CONNECTED  LAST SEEN  RTT MS");
        assert_eq!(lines[1], "gz.haizhu  child  yes        5s ago     0.8");
        assert_eq!(lines[2], "gz.tianhe  child  no         never      -");
    }

    #[test]
    fn queues_show_bytes_and_oldest_age() {
        let text = queues_table(&[QueueInfo {
            peer: "gz".parse().unwrap(),
            depth: 120,
            bytes: 3 * 1024 * 1024,
            oldest_age_ms: Some(125_000),
            dead_letters: 2,
        }])
        .render();
        assert_eq!(
            text.lines().nth(1).unwrap(),
            "gz    120    3.0 MiB  2m05s   2"
        );
    }

    #[test]
    fn trace_is_sorted_by_time_keeping_each_nodes_order() {
        let mut late = event("gz.haizhu", 3_000, "delivered");
        late.unit = Some("gz.haizhu/civil-affairs".parse().unwrap());
        let mut forwarded = event("gz.yuexiu", 2_000, "forwarded");
        forwarded.peer = Some("gz".parse().unwrap());
        let events = vec![
            late,
            event("gz", 2_000, "received"),
            forwarded,
            event("gz.yuexiu", 1_000, "accepted"),
        ];
        let text = trace_table(&events).render();
        let order: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().nth(3).unwrap())
            .collect();
        assert_eq!(order, ["accepted", "received", "forwarded", "delivered"]);
        assert!(text.contains("gz.haizhu/civil-affairs"));
    }

    #[test]
    fn selections_drop_repeated_seqs() {
        let sel = selection(&DeadLetterSelectionArgs {
            all: false,
            seqs: vec![5, 3, 5],
        });
        assert_eq!(sel.seqs, [5, 3]);
        assert!(!sel.all);
        let json = serde_json::to_value(selection(&DeadLetterSelectionArgs {
            all: true,
            seqs: vec![],
        }))
        .unwrap();
        assert_eq!(json, serde_json::json!({ "seqs": [], "all": true }));
    }

    #[test]
    fn destructive_commands_need_yes() {
        assert!(confirmed(true, "x").is_ok());
        let e = confirmed(false, "purging is irreversible").unwrap_err();
        assert!(e.to_string().contains("--yes"));
        assert!(e.to_string().contains("irreversible"));
    }

    fn verification(ok: bool, first_break: Option<AuditBreak>) -> AuditVerification {
        AuditVerification {
            ok,
            entries: 1234,
            head_seq: 1234,
            head_hash: "ab".repeat(32),
            first_break,
            checkpoint: None,
        }
    }

    #[test]
    fn audit_verdicts() {
        let (outcome, line) = verification_text(&verification(true, None));
        assert_eq!(outcome, Outcome::Done);
        assert_eq!(
            line,
            format!(
                "OK: 1234 entries, head seq 1234, head hash {}\n",
                "ab".repeat(32)
            )
        );

        let broken = AuditBreak {
            seq: 17,
            reason: "hash does not follow from the entry".into(),
        };
        let (outcome, line) = verification_text(&verification(false, Some(broken.clone())));
        assert_eq!(outcome, Outcome::AuditBroken);
        assert_eq!(
            line,
            "audit chain broken at entry 17: hash does not follow from the entry\n"
        );
        assert_eq!(
            verification_text(&verification(true, Some(broken))).0,
            Outcome::AuditBroken
        );
        assert_eq!(
            verification_text(&verification(false, None)).0,
            Outcome::AuditBroken
        );

        let mut empty = verification(true, None);
        empty.entries = 0;
        assert_eq!(verification_text(&empty).1, "OK: the audit log is empty\n");
    }

    fn entry(seq: i64) -> AuditEntry {
        AuditEntry {
            seq,
            at_ms: 1_000 + seq as u64,
            category: "custody".into(),
            message_id: Some(id()),
            event: "accepted".into(),
            unit: None,
            peer: None,
            detail: None,
            hash: format!("{seq:064x}"),
        }
    }

    /// A fake audit log of `n` entries served in pages of `page`.
    fn pages(n: i64, page: usize) -> impl FnMut(i64) -> Result<AuditPage> {
        move |after| {
            let entries: Vec<AuditEntry> = (after + 1..=n).take(page).map(entry).collect();
            let next_after = entries.last().map(|e| e.seq).unwrap_or(after);
            Ok(AuditPage {
                entries,
                next_after,
            })
        }
    }

    #[test]
    fn export_pages_through_the_log_as_json_lines() {
        let mut out = String::new();
        let done = export_audit(0, pages(7, 3), |t| {
            out.push_str(t);
            Ok(true)
        })
        .unwrap();
        assert_eq!(
            done,
            Exported {
                count: 7,
                last: 7,
                complete: true
            }
        );
        let seqs: Vec<i64> = out
            .lines()
            .map(|l| serde_json::from_str::<AuditEntry>(l).unwrap().seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);

        let done = export_audit(5, pages(7, 3), |_| Ok(true)).unwrap();
        assert_eq!((done.count, done.last, done.complete), (2, 7, true));
        let done = export_audit(7, pages(7, 3), |_| Ok(true)).unwrap();
        assert_eq!((done.count, done.last, done.complete), (0, 7, true));
    }

    #[test]
    fn export_stops_when_stdout_closes() {
        let mut calls = 0;
        let done = export_audit(0, pages(1_000, 10), |_| {
            calls += 1;
            Ok(calls < 3)
        })
        .unwrap();
        assert_eq!((done.count, done.last, done.complete), (20, 20, false));
    }

    #[test]
    fn export_refuses_a_log_that_does_not_move_forward() {
        let stuck = |_after: i64| {
            Ok(AuditPage {
                entries: vec![entry(1)],
                next_after: 1,
            })
        };
        let e = export_audit(1, stuck, |_| Ok(true)).unwrap_err();
        assert!(e.to_string().contains("seq 1"), "{e}");
    }

    #[test]
    fn readiness_lists_checks_and_decides_the_exit() {
        let check = |name: &str, ok| Check {
            name: name.into(),
            ok,
            detail: format!("{name} detail"),
        };
        let ready = Readiness {
            ready: true,
            checks: vec![check("storage", true), check("parent-link", true)],
        };
        let (outcome, text) = readiness_text(&ready);
        assert_eq!(outcome, Outcome::Done);
        assert!(
            text.contains("storage      ok     storage detail\n"),
            "{text}"
        );
        assert!(text.ends_with("\nready\n"));

        let not_ready = Readiness {
            ready: false,
            checks: vec![check("storage", true), check("parent-link", false)],
        };
        let (outcome, text) = readiness_text(&not_ready);
        assert_eq!(outcome, Outcome::NotReady);
        assert!(text.contains("parent-link  FAIL"), "{text}");
        assert!(text.ends_with("not ready: 1 of 2 check(s) failing\n"));
    }
}
