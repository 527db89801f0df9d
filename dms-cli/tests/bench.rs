//! `dms bench --json` prints lines in the schema of shared/peers (checked here: the
//! schema and the set of measurements, never the speed), and `--plot` writes SVG charts.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Output};

fn dms_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dms"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

fn bench(extra: &[&str]) -> Vec<serde_json::Value> {
    bench_for(0.1, extra)
}

fn bench_for(duration: f64, extra: &[&str]) -> Vec<serde_json::Value> {
    let duration = duration.to_string();
    let mut args = vec!["--json", "--duration", &duration];
    args.extend_from_slice(extra);
    let out = dms_bench(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

fn check_schema(line: &serde_json::Value) {
    assert_eq!(line["peer"], "dms", "{line}");
    assert!(
        ["tcp", "quic", "shm", "memory", "etcd"].contains(&line["transport"].as_str().unwrap()),
        "{line}"
    );
    assert!(!line["pattern"].as_str().unwrap().is_empty(), "{line}");
    // A handshake time has no payload; every other line measures messages.
    let payload_free = line["metric"] == "handshake_us";
    assert!(
        payload_free || line["msg_size"].as_u64().unwrap() > 0,
        "{line}"
    );
    assert!(line["frames"].as_u64().unwrap() >= 1, "{line}");
    assert!(line["n"].as_u64().unwrap() > 0, "{line}");
    let value = line["value"].as_f64().unwrap();
    assert!(value.is_finite() && value > 0.0, "{line}");
}

fn keys(lines: &[serde_json::Value]) -> HashSet<(String, String, u64, u64)> {
    lines
        .iter()
        .map(|l| {
            (
                l["pattern"].as_str().unwrap().to_owned(),
                l["metric"].as_str().unwrap().to_owned(),
                l["msg_size"].as_u64().unwrap(),
                l["frames"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn transport_lines_match_the_peers_schema() {
    for mode in [&["--in-process"][..], &[][..]] {
        let mut args = vec!["--scenario", "transport"];
        args.extend_from_slice(mode);
        let lines = bench(&args);
        lines.iter().for_each(check_schema);
        let keys = keys(&lines);
        for transport in ["tcp", "quic"] {
            assert!(
                lines
                    .iter()
                    .any(|l| l["transport"] == transport && l["metric"] == "handshake_us"),
                "{transport} handshake time"
            );
        }
        for size in [64, 1024, 65536] {
            for metric in ["throughput_msgs_per_s", "throughput_MB_per_s"] {
                assert!(
                    keys.contains(&("router-dealer".into(), metric.into(), size, 1)),
                    "{metric} {size}"
                );
            }
        }
        assert!(keys.contains(&(
            "router-dealer-multipart".into(),
            "throughput_msgs_per_s".into(),
            64,
            3
        )));
        for size in [64, 1024] {
            for metric in ["rtt_p50_us", "rtt_p99_us", "rtt_p999_us"] {
                assert!(
                    keys.contains(&("router-dealer".into(), metric.into(), size, 1)),
                    "{metric} {size}"
                );
            }
        }
    }
}

#[test]
fn request_lines_match_the_peers_schema() {
    // The responder in a second process (its registration copied over), and in this one.
    for mode in [&[][..], &["--in-process"][..]] {
        let mut args = vec!["--scenario", "request"];
        args.extend_from_slice(mode);
        let lines = bench(&args);
        lines.iter().for_each(check_schema);
        let keys = keys(&lines);
        assert!(keys.contains(&("request-reply".into(), "rtt_p50_us".into(), 64, 1)));
        for in_flight in [1, 16, 256] {
            let pattern = format!("request-reply-in-flight-{in_flight}");
            assert!(keys.contains(&(pattern, "throughput_msgs_per_s".into(), 64, 1)));
        }
    }
}

#[test]
fn broadcast_lines_match_the_peers_schema() {
    let lines = bench_for(0.05, &["--scenario", "broadcast"]);
    lines.iter().for_each(check_schema);
    assert!(lines.iter().all(|l| l["transport"] == "tcp"), "{lines:?}");
    let keys = keys(&lines);
    for metric in [
        "round_p50_us",
        "round_p99_us",
        "round_p999_us",
        "round_max_us",
        "broadcasts_per_s",
    ] {
        assert!(
            keys.contains(&("broadcast-8".into(), metric.into(), 64, 1)),
            "{metric}: {keys:?}"
        );
    }
}

/// The discovery scenario's lines on `backend`, checked.
fn check_discovery(lines: &[serde_json::Value], backend: &str) {
    lines.iter().for_each(check_schema);
    assert!(lines.iter().all(|l| l["transport"] == backend), "{lines:?}");
    assert!(
        lines.iter().all(|l| l["pattern"] == "discovery-churn"),
        "{lines:?}"
    );
    let metrics: HashSet<&str> = lines
        .iter()
        .map(|l| l["metric"].as_str().unwrap())
        .collect();
    for metric in [
        "registrations_per_s",
        "register_p50_us",
        "register_p99_us",
        "watch_latency_p50_us",
        "watch_latency_p99_us",
    ] {
        assert!(metrics.contains(metric), "{metric}: {metrics:?}");
    }
}

#[test]
fn discovery_lines_match_the_peers_schema() {
    let lines = bench_for(0.05, &["--scenario", "discovery"]);
    check_discovery(&lines, "memory");
}

#[cfg(feature = "etcd")]
#[test]
fn discovery_on_etcd() {
    let etcd = dms_test_support::etcd::EtcdServer::start();
    let url = format!("etcd://{}", etcd.endpoint());
    let lines = bench_for(0.05, &["--scenario", "discovery", "--discovery", &url]);
    check_discovery(&lines, "etcd");
}

/// A fresh directory under the system's temporary one (removed by the caller).
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dms-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn plot_writes_svg_charts() {
    // A directory that does not exist yet, one level down: --plot creates it.
    let root = temp_dir("plot");
    let dir = root.join("charts");
    let out = dms_bench(&[
        "--scenario",
        "broadcast",
        "--duration",
        "0.05",
        "--plot",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["latency.svg", "throughput.svg"] {
        let svg = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(
            svg.starts_with("<svg") || svg.starts_with("<?xml"),
            "{name}: {}",
            &svg[..svg.len().min(200)]
        );
        assert!(svg.trim_end().ends_with("</svg>"), "{name}");
        assert!(
            svg.contains("broadcast-8"),
            "{name} has no broadcast series"
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn plot_into_an_unwritable_place_fails_before_measuring() {
    // A regular file where the directory should be: no permission tricks (tests may run
    // as root, who can write anywhere).
    let root = temp_dir("plot-file");
    std::fs::create_dir_all(&root).unwrap();
    let file = root.join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let out = dms_bench(&[
        "--scenario",
        "broadcast",
        "--plot",
        file.join("charts").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write plots to"), "{stderr}");
    assert!(
        !stderr.contains("broadcast:"),
        "measured before failing: {stderr}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn peers_run_in_the_same_run_with_the_same_schema_and_ratios_are_printed() {
    let out = dms_bench(&[
        "--json",
        "--duration",
        "0.05",
        "--scenario",
        "transport",
        "--peers",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect();
    let mut peers = HashSet::new();
    for line in &lines {
        let peer = line["peer"].as_str().unwrap().to_owned();
        // Same schema as DMS's own lines, whoever was measured.
        let mut as_dms = line.clone();
        as_dms["peer"] = "dms".into();
        check_schema(&as_dms);
        peers.insert(peer);
    }
    let mut expected = HashSet::from(["dms".to_owned(), "raw-tcp".to_owned()]);
    if cfg!(feature = "zmq") {
        expected.insert("libzmq".to_owned());
    }
    assert_eq!(peers, expected);
    let raw = |metric: &str, size: u64| {
        lines.iter().any(|l| {
            l["peer"] == "raw-tcp" && l["metric"] == metric && l["msg_size"].as_u64() == Some(size)
        })
    };
    assert!(raw("throughput_msgs_per_s", 64) && raw("rtt_p50_us", 64));
    // The ratios go to stderr with --json (stdout stays JSON lines).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dms/peer") && stderr.contains("raw-tcp"),
        "{stderr}"
    );
}

#[test]
fn both_sides_can_run_on_a_multi_thread_runtime() {
    let lines = bench_for(0.05, &["--scenario", "request", "--worker-threads", "2"]);
    lines.iter().for_each(check_schema);
    assert!(keys(&lines).contains(&("request-reply".into(), "rtt_p50_us".into(), 64, 1)));
}
