//! `dms bench --json` prints lines in the schema of shared/peers (checked here: the
//! schema and the set of measurements, never the speed).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashSet;
use std::process::Command;

fn bench(extra: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_dms"))
        .args(["bench", "--json", "--duration", "0.1"])
        .args(extra)
        .output()
        .unwrap();
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
        ["tcp", "quic", "shm"].contains(&line["transport"].as_str().unwrap()),
        "{line}"
    );
    assert!(!line["pattern"].as_str().unwrap().is_empty(), "{line}");
    assert!(line["msg_size"].as_u64().unwrap() > 0, "{line}");
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
    let lines = bench(&["--scenario", "request"]);
    lines.iter().for_each(check_schema);
    let keys = keys(&lines);
    assert!(keys.contains(&("request-reply".into(), "rtt_p50_us".into(), 64, 1)));
    for in_flight in [1, 16, 256] {
        let pattern = format!("request-reply-in-flight-{in_flight}");
        assert!(keys.contains(&(pattern, "throughput_msgs_per_s".into(), 64, 1)));
    }
}
