//! `exchange-node devnet`: the whole Guangzhou network (13 node processes, 209 units) on loopback.
//!
//! (a) `--scenario` drives mixed traffic between every pair of nodes, queries between districts,
//!     base data (a death, a marriage, a move-out) to subscribers and directory changes on the way, and exits 0 only if every document arrived exactly once, every
//!     receipt came back and every query was answered; the
//!     folder holds every unit's key and token, the index and a Prometheus configuration for the 13
//!     nodes (checked by promtool when it is installed).
//! (b) Without `--scenario` it runs until SIGTERM, with every node answering, then stops its nodes.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use exchange_tests::*;

/// 13 node processes each: one devnet at a time on a 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn index(dir: &Path) -> toml::Table {
    std::fs::read_to_string(dir.join("network.toml")).expect("network.toml").parse().expect("network.toml parses")
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
}

#[test]
fn devnet_scenario_reconciles() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::Builder::new().prefix("devnet-").tempdir().unwrap();
    let dir = tmp.path().join("gz");
    let started = Instant::now();
    let out = Command::new(node_binary())
        .args(["devnet", "--scenario", "10", "--dir"])
        .arg(&dir)
        .output()
        .expect("run exchange-node devnet");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "devnet --scenario failed ({}):\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(180), "the scenario took {:?}", started.elapsed());
    assert!(stdout.contains("== Reconciled:") && stdout.contains("delivered exactly once") && stdout.contains("every receipt back"), "{stdout}");
    assert!(stdout.contains("ordered pairs of nodes that carried documents: 156 of 156"), "every pair of nodes: {stdout}");
    let answered = stdout.lines().find(|l| l.starts_with("== Reconciled:")).and_then(|l| l.split(", ").last()).unwrap_or_default();
    let queries: usize = answered.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(queries >= 5 && answered.ends_with("queries answered"), "queries between districts were answered: {answered:?}");
    let directory = stdout.lines().find(|l| l.trim_start().starts_with("directory: 13 nodes, 209 units;")).unwrap_or_else(|| panic!("no directory cost: {stdout}"));
    assert!(directory.contains("MiB of memory in every node") && directory.contains("µs per recipient"), "{directory}");
    for class in ["特急", "加急", "平件"] {
        assert!(stdout.contains(class), "latency of {class}: {stdout}");
    }
    for flow in ["person.death ", "person.marriage ", "person.move-out "] {
        let line = stdout.lines().find(|l| l.trim_start().starts_with(flow)).unwrap_or_else(|| panic!("no line for {flow}: {stdout}"));
        assert!(line.contains("ms to the last subscriber"), "{line}");
    }
    for change in ["suspend ", "rotate the key of ", "add "] {
        let line = stdout.lines().find(|l| l.trim_start().starts_with(change)).unwrap_or_else(|| panic!("no line for {change}: {stdout}"));
        assert!(line.contains(" ms;") && !line.contains("FAILED"), "{line}");
    }

    // The folder: 13 nodes, 209 units with 0600 key and token files, Prometheus for the 13 nodes.
    let index = index(&dir);
    let nodes = index["node"].as_array().unwrap();
    let units = index["unit"].as_array().unwrap();
    assert_eq!((nodes.len(), units.len()), (13, 209));
    for u in units {
        for k in ["key_file", "token_file"] {
            let file = dir.join(u[k].as_str().unwrap());
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600, "{}", file.display());
        }
    }
    for n in nodes {
        for k in ["api", "admin", "metrics"] {
            assert!(stdout.contains(n[k].as_str().unwrap()), "{} {k} printed", n["id"]);
        }
    }
    let prometheus = dir.join("prometheus/prometheus.yml");
    let yml = std::fs::read_to_string(&prometheus).unwrap();
    assert_eq!(yml.matches("- targets:").count(), 13, "{yml}");
    for n in nodes {
        let target = n["api"].as_str().unwrap().trim_start_matches("http://");
        assert!(yml.contains(&format!("[\"{target}\"]")) && yml.contains(&format!("node: {} }}", n["id"].as_str().unwrap())), "{target} in {yml}");
    }
    assert!(dir.join("prometheus/alerts.yml").exists());
    match Command::new("promtool").arg("check").arg("config").arg(&prometheus).output() {
        Ok(check) => assert!(check.status.success(), "promtool check config: {}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr)),
        Err(e) => eprintln!("promtool not installed ({e}); the scrape configuration was checked by this test only"),
    }
}

#[test]
fn devnet_runs_until_sigterm_then_stops_its_nodes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::Builder::new().prefix("devnet-").tempdir().unwrap();
    let dir = tmp.path().join("gz");
    let mut devnet = Command::new(node_binary())
        .args(["devnet", "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start exchange-node devnet");
    // Its table of nodes, up to the line saying it runs.
    let mut lines = BufReader::new(devnet.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in lines.by_ref() {
        let line = line.unwrap();
        let running = line.contains("Ctrl-C");
        printed.push(line);
        if running || Instant::now() > deadline {
            break;
        }
    }
    assert!(printed.last().is_some_and(|l| l.contains("Ctrl-C")), "devnet did not say it runs:\n{}", printed.join("\n"));
    let pids: Vec<u32> = printed
        .iter()
        .filter(|l| l.trim_start().starts_with("gz"))
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect();
    assert_eq!(pids.len(), 13, "a pid per node:\n{}", printed.join("\n"));

    // Every node answers, and a unit can act with its files while the devnet runs.
    let index = index(&dir);
    for n in index["node"].as_array().unwrap() {
        exchange_wire::client::ApiClient::new(n["api"].as_str().unwrap()).health().expect("every node answers /healthz");
    }
    let u = index["unit"].as_array().unwrap().iter().find(|u| u["address"].as_str() == Some("gz.nansha/civil-affairs")).unwrap();
    let token = std::fs::read_to_string(dir.join(u["token_file"].as_str().unwrap())).unwrap();
    let out = Command::new(admin_binary())
        .args(["--node", u["api"].as_str().unwrap(), "--json", "inbox", "--unit", "gz.nansha/civil-affairs"])
        .env("EXCHANGE_TOKEN", token.trim())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // SIGTERM: the devnet stops every node and exits 0.
    assert!(Command::new("kill").arg("-TERM").arg(devnet.id().to_string()).status().unwrap().success());
    let status = wait_for("the devnet to exit", Duration::from_secs(60), || devnet.try_wait().unwrap());
    assert!(status.success(), "devnet exited with {status}");
    for pid in pids {
        assert!(!alive(pid), "node process {pid} still runs after the devnet stopped");
    }
}
