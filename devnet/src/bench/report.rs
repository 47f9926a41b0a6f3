//! Step 5 of a run: what the timed phase measured, checked (everything delivered exactly once, every
//! receipt back, nothing refused), printed as the summary and gathered as the result's JSON.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::floor::{Floor, FloorCounts};
use super::storage_floor::StorageFloor;
use super::load::{Plan, Shared};
use super::{BenchArgs, INGRESS, NODES, Outcome, POLL, Timed, metric_sum, percentile};

/// Checks, prints and gathers one run of the nodes.
pub(super) fn report(args: &BenchArgs, (floor, storage): (&Floor, &StorageFloor), counts: &FloorCounts, plan: &Plan, pids: &[(String, String)], timed: Timed) -> Outcome {
    let n = args.messages;
    let mut errors = problems(args, &timed);
    let latencies = latencies(&timed.shared, n);
    let times = Times::of(args, &timed);
    let (nodes, node_json) = node_rows(pids, &timed, n, times.elapsed_s);
    let total_cpu_s: f64 = nodes.iter().map(|r| r.cpu_s).sum();
    let total_us = total_cpu_s * 1e6 / n as f64;
    let bench_cpu_s = timed.after.self_cpu.saturating_sub(timed.before.self_cpu) as f64 / timed.ticks;

    print_timed(args, &errors, &times, &latencies, &nodes, total_cpu_s, bench_cpu_s);
    floor.print_against(counts, total_us, storage.per_message_us(counts.envelope_hops));
    print_retries(&timed.shared);

    let Timed { shared, killer, ticks, returned_final, .. } = timed;
    let (failover_json, failover_ms, failover_errors) = killer.finish();
    errors.extend(failover_errors);
    let delivered = shared.delivered.load(Ordering::SeqCst);
    let duplicates = shared.duplicates.load(Ordering::SeqCst);
    let json = json!({
        "ok": errors.is_empty(),
        "lost": plan_lost(n, delivered),
        "duplicated": duplicates,
        "storage": { "city": if args.database_url.is_some() { "postgresql" } else { "sqlite" }, "districts": "sqlite", "city_replicas": args.city_replicas },
        "failover_ms": failover_ms,
        "failover": failover_json,
        "errors": errors,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "clock_ticks_per_second": ticks },
        "args": {
            "messages": n, "size": args.size, "senders": args.senders, "batch": args.batch, "rate": args.rate,
            "sign_for": args.sign_for(), "node_config": args.node_config,
        },
        "topology": {
            "path": NODES, "sender_units": plan.senders.len(), "recipient_units": plan.recipients.len(),
        },
        "agency_signing": { "seconds": plan.signing_s, "us_per_message": plan.signing_s * 1e6 / n as f64 },
        "timed": timed_json(args, &times, &shared, returned_final),
        "throughput": { "messages_per_s": times.rate, "payload_mb_per_s": times.mb_s, "delivery_messages_per_s": times.delivery_rate },
        "latency_ms": latency_json(args, &latencies),
        "nodes": node_json,
        "cpu": {
            "all_nodes_seconds": total_cpu_s,
            "all_nodes_us_per_message": total_us,
            "benchmark_process_seconds": bench_cpu_s,
        },
        "peer": floor.json(counts, total_us, storage.json(counts.envelope_hops)),
    });
    Outcome { json, errors, latencies }
}

/// What went wrong, besides the failures the threads recorded: the deadline passed, messages were
/// lost, receipts are missing, or a node refused inputs.
fn problems(args: &BenchArgs, timed: &Timed) -> Vec<String> {
    let (n, sign_for) = (args.messages, args.sign_for());
    let mut errors: Vec<String> = timed.shared.errors.lock().expect("errors lock").clone();
    let delivered = timed.shared.delivered.load(Ordering::SeqCst);
    if timed.timed_out {
        errors.push(format!(
            "deadline of {} s passed: {delivered} of {n} delivered{}",
            timed.deadline.as_secs(),
            if sign_for { format!(", {} of {n} receipts returned", timed.returned) } else { String::new() }
        ));
    }
    if delivered != n && !timed.timed_out {
        errors.push(format!("{delivered} of {n} delivered"));
    }
    if sign_for && timed.returned_final != n as f64 {
        errors.push(format!("{} receipts returned to {INGRESS} for {n} documents (expected exactly {n})", timed.returned_final));
    }
    for (id, text) in NODES.iter().zip(&timed.after.metrics) {
        let rejected = metric_sum(text, "exchange_messages_rejected_total", &[]);
        if rejected > 0.0 {
            errors.push(format!("node {id} refused {rejected} inputs (exchange_messages_rejected_total); see its log"));
        }
    }
    errors
}

/// Documents not delivered (duplicates are counted apart, not here).
fn plan_lost(n: usize, delivered: usize) -> usize {
    n.saturating_sub(delivered)
}

/// Submit → delivered latency of every delivered message, ms, sorted.
fn latencies(shared: &Shared, n: usize) -> Vec<f64> {
    let mut latencies: Vec<f64> = (0..n)
        .filter_map(|i| {
            let (s, r) = (shared.submit_ns[i].load(Ordering::Relaxed), shared.recv_ns[i].load(Ordering::Relaxed));
            (s > 0 && r > 0).then(|| r.saturating_sub(s) as f64 / 1e6)
        })
        .collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    latencies
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 }
}

/// When the phase's milestones came, in seconds after its start, and the rates they give.
struct Times {
    /// The senders' last batch accepted.
    submitted_s: f64,
    last_delivery_s: f64,
    /// Every receipt back (with receipts), or the end of the phase.
    done_s: f64,
    /// What the rates count over: until every receipt is back, or (no receipts) the last delivery.
    elapsed_s: f64,
    rate: f64,
    delivery_rate: f64,
    mb_s: f64,
}

impl Times {
    fn of(args: &BenchArgs, timed: &Timed) -> Times {
        let (n, shared) = (args.messages, &timed.shared);
        let delivered = shared.delivered.load(Ordering::SeqCst);
        let last_delivery_s = (0..n).map(|i| shared.recv_ns[i].load(Ordering::Relaxed)).max().unwrap_or(0) as f64 / 1e9;
        let submitted_s = shared.senders_done_ns.load(Ordering::SeqCst) as f64 / 1e9;
        let done_s = timed.done_ns.unwrap_or(timed.end_ns) as f64 / 1e9;
        let elapsed_s = if args.sign_for() { done_s } else { last_delivery_s.max(1e-9) };
        let rate = n as f64 / elapsed_s;
        let delivery_rate = delivered as f64 / last_delivery_s.max(1e-9);
        let mb_s = rate * args.size as f64 / 1e6;
        Times { submitted_s, last_delivery_s, done_s, elapsed_s, rate, delivery_rate, mb_s }
    }
}

/// One node's share of the timed phase, as the summary's table shows it.
struct NodeRow {
    id: String,
    cpu_s: f64,
    mean_jobs: f64,
    commits: f64,
    mean_commit_ms: f64,
    send_failures: f64,
    written_kib_per_message: f64,
}

/// Each node's CPU, group commits, send failures and storage writes over the timed phase: the
/// summary's rows and the result's `nodes`.
fn node_rows(pids: &[(String, String)], timed: &Timed, n: usize, elapsed_s: f64) -> (Vec<NodeRow>, Vec<Value>) {
    let (before, after) = (&timed.before, &timed.after);
    let mut rows = Vec::new();
    let mut node_json = Vec::new();
    for (k, (id, pid)) in pids.iter().enumerate() {
        let cpu_s = after.cpu[k].saturating_sub(before.cpu[k]) as f64 / timed.ticks;
        let d = |name: &str, labels: &[&str]| metric_sum(&after.metrics[k], name, labels) - metric_sum(&before.metrics[k], name, labels);
        let (jobs_sum, jobs_count) = (d("exchange_storage_commit_jobs_sum", &[]), d("exchange_storage_commit_jobs_count", &[]));
        let commit_s = d("exchange_storage_commit_seconds_sum", &[]);
        let mean_jobs = if jobs_count > 0.0 { jobs_sum / jobs_count } else { 0.0 };
        let mean_commit_ms = if jobs_count > 0.0 { commit_s * 1e3 / jobs_count } else { 0.0 };
        let send_failures = d("exchange_send_failures_total", &[]);
        let forwarded = d("exchange_messages_forwarded_total", &[]);
        let written = after.written[k].saturating_sub(before.written[k]) as f64;
        rows.push(NodeRow {
            id: id.clone(),
            cpu_s,
            mean_jobs,
            commits: jobs_count,
            mean_commit_ms,
            send_failures,
            written_kib_per_message: written / n as f64 / 1024.0,
        });
        node_json.push(json!({
            "node": id,
            "pid": pid,
            "cpu_seconds": cpu_s,
            "cpu_us_per_message": cpu_s * 1e6 / n as f64,
            "cpu_cores_busy": cpu_s / elapsed_s,
            "commits": jobs_count,
            "mean_commit_jobs": mean_jobs,
            "mean_commit_ms": mean_commit_ms,
            "commit_seconds_total": commit_s,
            "messages_forwarded": forwarded,
            "send_failures": send_failures,
            "storage_written_bytes": written,
        }));
    }
    (rows, node_json)
}

/// The summary of the timed phase: milestones, throughput, latency, and the nodes' table.
fn print_timed(args: &BenchArgs, errors: &[String], times: &Times, latencies: &[f64], nodes: &[NodeRow], total_cpu_s: f64, bench_cpu_s: f64) {
    let (n, sign_for) = (args.messages, args.sign_for());
    println!("\n== Timed phase");
    if !errors.is_empty() {
        println!("   INCOMPLETE RUN ({} problem(s), listed at the end): the numbers below are not a valid result", errors.len());
    }
    println!(
        "   submitted (accepted by {INGRESS}): {:.3} s;  last delivery {:.3} s;  {}",
        times.submitted_s,
        times.last_delivery_s,
        if sign_for { format!("all receipts back {:.3} s (polled every {} ms)", times.done_s, POLL.as_millis()) } else { "no receipts".into() }
    );
    println!(
        "   throughput: {:.0} messages/s, {:.2} MB/s of payload{}",
        times.rate,
        times.mb_s,
        if sign_for { format!(" (delivery alone: {:.0} messages/s)", times.delivery_rate) } else { String::new() }
    );
    println!(
        "   submit → delivery latency, ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  mean {:.1}  ({} samples{})",
        percentile(latencies, 50.0),
        percentile(latencies, 90.0),
        percentile(latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN),
        mean(latencies),
        latencies.len(),
        if args.rate.is_some() { ", from scheduled send times" } else { "" }
    );
    println!("\n   node        CPU s   µs/msg  cores busy  commits  mean jobs/commit  mean commit ms  send failures  written KiB/msg");
    for r in nodes {
        println!(
            "   {:<10} {:>6.2} {:>8.1} {:>11.2} {:>8} {:>17.1} {:>15.2} {:>14} {:>16.1}",
            r.id,
            r.cpu_s,
            r.cpu_s * 1e6 / n as f64,
            r.cpu_s / times.elapsed_s,
            r.commits,
            r.mean_jobs,
            r.mean_commit_ms,
            r.send_failures,
            r.written_kib_per_message
        );
    }
    let total_us = total_cpu_s * 1e6 / n as f64;
    println!("   {:<10} {:>6.2} {:>8.1} {:>11.2}", "all nodes", total_cpu_s, total_us, total_cpu_s / times.elapsed_s);
    println!(
        "   (the benchmark process itself, the agencies' side: {:.2} CPU s, {:.1} µs/msg)",
        bench_cpu_s,
        bench_cpu_s * 1e6 / n as f64
    );
}

/// The clients' retries, when there were any.
fn print_retries(shared: &Shared) {
    let (submit, inbox, sign_for) = (
        shared.submit_retries.load(Ordering::Relaxed),
        shared.poll_retries.load(Ordering::Relaxed),
        shared.sign_for_retries.load(Ordering::Relaxed),
    );
    if submit + inbox + sign_for > 0 {
        println!("   retries: submit {submit}, inbox {inbox}, sign-for {sign_for}");
    }
}

/// The result's `timed` object.
fn timed_json(args: &BenchArgs, times: &Times, shared: &Shared, returned_final: f64) -> Value {
    let duplicates = shared.duplicates.load(Ordering::SeqCst);
    json!({
        "submitted_s": times.submitted_s,
        "last_delivery_s": times.last_delivery_s,
        "receipts_returned_s": if args.sign_for() { Some(times.done_s) } else { None },
        "elapsed_s": times.elapsed_s,
        "delivered": shared.delivered.load(Ordering::SeqCst),
        "duplicates": duplicates,
        "unexpected": shared.unexpected.load(Ordering::SeqCst),
        "receipts_posted": shared.receipts_posted.load(Ordering::SeqCst),
        "receipts_returned": returned_final,
        "retries": {
            "submit": shared.submit_retries.load(Ordering::Relaxed),
            "inbox": shared.poll_retries.load(Ordering::Relaxed),
            "sign_for": shared.sign_for_retries.load(Ordering::Relaxed),
        },
    })
}

/// The result's `latency_ms` object.
fn latency_json(args: &BenchArgs, latencies: &[f64]) -> Value {
    json!({
        "from": if args.rate.is_some() { "scheduled send time" } else { "send time" },
        "samples": latencies.len(),
        "p50": percentile(latencies, 50.0),
        "p90": percentile(latencies, 90.0),
        "p99": percentile(latencies, 99.0),
        "p999": percentile(latencies, 99.9),
        "max": latencies.last().copied(),
        "mean": mean(latencies),
    })
}
