//! `exchange-node bench --peer nats --sweep …`: the nodes and NATS JetStream (leaf → hub → leaf, three
//! file-backed streams chained by sourcing) run with the same messages at each offered rate; every
//! run's JSON carries both rows with positive throughput and all messages stored at every hop, the
//! plots are SVG files with a curve per system, and no nats-server is left running afterwards.
//! Needs a nats-server binary (Debian's package, `NATS_SERVER`, or tools/fetch-nats-2.10.sh); the
//! test says so and passes without one only when the machine has none.

use std::path::{Path, PathBuf};
use std::process::Command;

use exchange_tests::*;

fn nats_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER").map(PathBuf::from).filter(|p| p.is_file()) {
        return Some(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("nats-server")).find(|p| p.is_file()));
    on_path.or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file()))
}

/// A well-formed SVG document with at least one drawn curve and the given legend texts.
fn check_svg(path: &Path, legends: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(text.trim_start().starts_with("<svg") && text.trim_end().ends_with("</svg>"), "{} is not an SVG document", path.display());
    assert_eq!(text.matches("<svg").count(), text.matches("</svg>").count(), "{}: unbalanced <svg>", path.display());
    let curves = text.split("<polyline").skip(1).filter(|p| p.split("points=\"").nth(1).and_then(|s| s.split('"').next()).is_some_and(|pts| pts.split_whitespace().count() >= 2));
    assert!(curves.count() >= legends.len(), "{}: fewer curves than systems", path.display());
    for l in legends {
        assert!(text.contains(l), "{}: no legend {l:?}", path.display());
    }
}

#[test]
fn bench_runs_nats_as_the_peer_in_the_same_run_and_draws_the_plots() {
    let Some(server) = nats_server() else {
        println!("SKIPPED: no nats-server on this machine (apt-get install nats-server, or tools/fetch-nats-2.10.sh and NATS_SERVER=…)");
        return;
    };
    let tmp = tempfile::Builder::new().prefix("bench-peer-").tempdir().unwrap();
    let json = tmp.path().join("result.json");
    let dir = tmp.path().join("run");
    let out = Command::new(node_binary())
        .args(["bench", "--peer", "nats", "--messages", "200", "--sweep", "300,600", "--no-sign-for", "--deadline-secs", "60"])
        .arg("--nats-server")
        .arg(&server)
        .arg("--json")
        .arg(&json)
        .arg("--dir")
        .arg(&dir)
        .output()
        .expect("run exchange-node bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed ({}):\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("nodes ÷ NATS: throughput"), "no comparison printed:\n{stdout}");

    // The servers ran with their stores in the bench's folder and are gone.
    assert!(dir.join("rate-300/nats/data/leafB").is_dir(), "no NATS store in the bench's folder");
    let left = processes_mentioning(&dir.to_string_lossy());
    assert!(left.is_empty(), "processes of the run still running: {left:?}");

    let summary = read_json(&json);
    let runs = summary["sweep"].as_array().expect("sweep array");
    assert_eq!(runs.len(), 2);
    for (run, rate) in runs.iter().zip([300.0, 600.0]) {
        assert_eq!(run["rate"].as_f64(), Some(rate));
        let one = read_json(Path::new(run["json"].as_str().unwrap()));
        assert_eq!(one["ok"], true, "{one}");
        assert_eq!(one["args"]["rate"].as_f64(), Some(rate));
        assert!(one["throughput"]["messages_per_s"].as_f64().unwrap() > 0.0);
        let peer = &one["peer_nats"];
        assert!(peer["throughput"]["messages_per_s"].as_f64().unwrap() > 0.0, "{peer}");
        assert_eq!(peer["messages"], 200);
        assert_eq!(peer["latency_ms"]["samples"], 200);
        assert!(peer["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
        // Every message (and the warm-up message) stored at every hop, none delivered twice.
        for stream in ["DOCS_A", "DOCS_HUB", "DOCS_B"] {
            assert_eq!(peer["stored"][stream], 201, "{stream}: {peer}");
        }
        assert_eq!(peer["duplicates"], 0);
        // --nats-sync auto: fsync after every write where the server can (2.10 and later).
        let minor: u32 = peer["server"]["version"].as_str().unwrap().split('.').nth(1).unwrap().parse().unwrap();
        assert!(peer["sync"].as_str().unwrap().contains(if minor >= 10 { "always" } else { "default" }), "{peer}");
        assert!(one["nodes_versus_peer_nats"]["throughput"].as_f64().unwrap() > 0.0);
        check_svg(Path::new(one["plots"]["latency_cdf"].as_str().unwrap()), &["exchange nodes", "NATS"]);
    }
    check_svg(Path::new(summary["plots"]["throughput_against_load"].as_str().unwrap()), &["exchange nodes", "NATS", "offered = achieved"]);
}

#[test]
fn bench_without_a_nats_server_says_how_to_get_one() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-nats-server");
    let out = Command::new(node_binary())
        .args(["bench", "--peer", "nats", "--messages", "10"])
        .arg("--nats-server")
        .arg(&missing)
        .arg("--json")
        .arg(tmp.path().join("r.json"))
        .output()
        .expect("run exchange-node bench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no such file") && stderr.contains("tools/fetch-nats-2.10.sh"), "unclear error: {stderr}");
    assert!(!tmp.path().join("r.json").exists(), "a result was written although nothing ran");
}
