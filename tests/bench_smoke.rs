//! `tablecast bench` keeps working: a few players for a few seconds against a node the tool
//! starts itself, and the JSON it writes has what BENCHMARKS.md relies on. Not a timing test.

use std::process::Command;

#[test]
fn a_short_bench_run_delivers_to_every_player_and_writes_its_json() {
    let dir = std::env::temp_dir().join(format!("tablecast-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json = dir.join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tablecast"))
        .args(["bench", "--subscribers", "5", "--duration", "3s", "--json"])
        .arg(&json)
        .args(["--bet-duration", "1s"])
        .output()
        .expect("the tablecast binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");
    let text = std::fs::read_to_string(&json).expect("the JSON file was written");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    for key in [
        "subscribers",
        "loss_ratio",
        "packets_delivered",
        "server_cpu_cores",
        "server_rss_bytes",
        "loadgen_cpu_cores",
        "forward_latency_ms",
        "join_to_keyframe_ms",
        "control_fanout_ms",
        "bets",
    ] {
        assert!(v.get(key).is_some(), "{key} is missing from {text}");
    }
    assert_eq!(v["subscribers"], 5, "{stdout}");
    assert!(
        v["packets_delivered"].as_u64().unwrap_or(0) > 0,
        "nothing delivered: {text}"
    );
    let loss = v["loss_ratio"].as_f64().expect("loss_ratio is a number");
    assert!(loss < 0.05, "loss ratio {loss}: {text}");
    assert!(
        v["forward_latency_ms"]["samples"].as_u64().unwrap_or(0) > 0,
        "no latency samples: {text}"
    );
    assert!(
        v["server_cpu_cores"].as_f64().is_some() && v["server_rss_bytes"].as_u64().is_some(),
        "the node's /proc figures are missing: {text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bench --cluster` keeps working: a redis-server and three nodes, six players (two on each
/// node), one round; every event reaches every player once and every bet is accepted.
#[test]
fn a_short_cluster_bench_loses_no_event_and_splits_owner_from_the_others() {
    let dir = std::env::temp_dir().join(format!(
        "tablecast-bench-cluster-smoke-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json = dir.join("cluster.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tablecast"))
        .args(["bench", "--cluster", "--players", "6", "--rounds", "1"])
        .args(["--bet-spread", "200ms", "--json"])
        .arg(&json)
        .output()
        .expect("the tablecast binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");
    let text = std::fs::read_to_string(&json).expect("the JSON file was written");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(v["nodes"], 3, "{text}");
    assert_eq!(v["players_on_owner"], 2, "{text}");
    assert_eq!(v["players_failed"], 0, "{text}");
    assert_eq!(v["events_lost"], 0, "{text}");
    assert_eq!(v["events_duplicated"], 0, "{text}");
    assert!(v["events_expected"].as_u64().unwrap_or(0) > 0, "{text}");
    assert_eq!(v["bets_accepted"], 6, "{text}");
    for latency in ["fanout_ms", "bet_ms"] {
        for side in ["owner", "other"] {
            assert!(
                v[latency][side]["samples"].as_u64().unwrap_or(0) > 0,
                "no {latency} samples for players on the {side}: {text}"
            );
        }
    }
    assert_eq!(
        v["node_cpu"].as_array().map(Vec::len),
        Some(3),
        "a CPU figure per node: {text}"
    );
    assert!(stdout.contains("control fan-out"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bench --cascade` keeps working: a redis-server, an origin and two edges; four players on the
/// origin, then four on the edges, a second each, and one join probe of each kind. The edges'
/// players get video through two relays: the origin forwards 4 packets per packet received in
/// phase A and 2 (one per relay) in phase B.
#[test]
fn a_short_cascade_bench_feeds_the_edges_through_two_relays() {
    let dir = std::env::temp_dir().join(format!(
        "tablecast-bench-cascade-smoke-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json = dir.join("cascade.json");
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_tablecast"))
        .args(["bench", "--cascade", "--players", "4", "--duration", "1s"])
        .args(["--settle", "500ms", "--probes", "1", "--json"])
        .arg(&json)
        .output()
        .expect("the tablecast binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");
    let text = std::fs::read_to_string(&json).expect("the JSON file was written");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    for (phase, fan_out) in [("on_origin", 4.0), ("on_edges", 2.0)] {
        let p = &v[phase];
        assert_eq!(p["players_with_keyframe"], 4, "{phase}: {text}");
        assert!(
            p["packets_delivered"].as_u64().unwrap_or(0) > 0,
            "{phase}: nothing delivered: {text}"
        );
        assert!(
            p["loss_ratio"].as_f64().is_some_and(|l| l < 0.05),
            "{phase}: {text}"
        );
        assert!(
            p["latency_ms"]["samples"].as_u64().unwrap_or(0) > 0,
            "{phase}: no latency samples: {text}"
        );
        assert!(
            p["origin_cpu_cores"].as_f64().is_some(),
            "{phase}: no origin CPU: {text}"
        );
        let per = p["origin_forwarded_per_received"].as_f64().unwrap_or(0.0);
        assert!(
            (per - fan_out).abs() < 0.5,
            "{phase}: the origin forwarded {per} packets per packet received, not about {fan_out}: {text}"
        );
    }
    assert_eq!(v["on_edges"]["origin_relays_out"], 2.0, "{text}");
    assert_eq!(v["on_origin"]["origin_relays_out"], 0.0, "{text}");
    assert!(v["origin_cpu_ratio"].as_f64().is_some(), "{text}");
    assert!(v["hop_added"]["p50_ms"].as_f64().is_some(), "{text}");
    for kind in ["origin", "edge_warm", "edge_cold"] {
        assert!(
            v["join_probes"][kind]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
            "no {kind} join probe: {text}"
        );
    }
    assert!(stdout.contains("hop adds"), "{stdout}");
    eprintln!("cascade smoke run took {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}
