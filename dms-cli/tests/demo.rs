//! `dms demo` runs to completion and its summary line holds the promised numbers, over TCP
//! and over QUIC.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::process::Command;

/// Runs `dms demo ARGS`, asserts it exits 0 and returns its stdout.
fn run_demo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dms"))
        .arg("demo")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dms demo {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The `key=value` fields of the summary line.
fn summary(stdout: &str) -> (&str, HashMap<&str, &str>) {
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("summary:"))
        .expect("a summary line");
    let fields = summary["summary:".len()..]
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    (summary, fields)
}

/// The promises every medium keeps.
fn assert_promises(stdout: &str) {
    let (summary, fields) = summary(stdout);
    assert_eq!(fields["lost_silently"], "0", "{summary}");
    assert_eq!(fields["others_moved"], "0", "{summary}");
    assert_eq!(fields["result"], "ok", "{summary}");
    let detection: f64 = fields["failure_detection_ms"].parse().unwrap();
    let bound: f64 = fields["detection_bound_ms"].parse().unwrap();
    assert!(
        detection >= bound * 0.6,
        "detected in {detection} ms: faster than heartbeats can"
    );
    assert!(
        detection <= bound * 2.0,
        "detected in {detection} ms, bound {bound} ms"
    );
    let answered: u64 = fields["answered"].parse().unwrap();
    assert!(answered > 0);
    for section in ["== 1.", "== 3.", "== 4.", "== 5.", "== 6.", "== 7."] {
        assert!(stdout.contains(section), "missing {section}");
    }
    assert_routed_act(stdout);
}

/// The routed act: Trade reached only through the brokers, none lost while the broker on
/// the route is killed, the route moved to the other broker, every player kept its Trade
/// instance.
fn assert_routed_act(stdout: &str) {
    let line = stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("routed summary:"))
        .expect("a routed summary line");
    let fields: HashMap<&str, &str> = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    assert_eq!(fields["lost_silently"], "0", "{line}");
    assert_eq!(fields["result"], "ok", "{line}");
    let number = |k: &str| -> u64 { fields[k].parse().unwrap() };
    assert_eq!(
        number("sent"),
        number("answered") + number("failed_with_error"),
        "{line}"
    );
    assert!(number("answered") > 0, "{line}");
    let before: Vec<&str> = fields["route_before"].split('>').collect();
    let after: Vec<&str> = fields["route_after"].split('>').collect();
    assert_eq!(before.len(), 3, "lobby -> broker -> trade: {line}");
    assert_eq!(after.len(), 3, "{line}");
    assert!(before[1].starts_with("broker-") && after[1].starts_with("broker-"));
    assert_ne!(
        before[1], after[1],
        "re-routed through the other broker: {line}"
    );
    assert_eq!((before[0], before[2]), (after[0], after[2]));
    let (kept, players) = fields["players_kept"].split_once('/').unwrap();
    assert_eq!(kept, players, "{line}");
    assert!(
        stdout.contains("none with Trade"),
        "the origin holds no session with Trade:\n{stdout}"
    );
}

#[test]
fn demo_keeps_its_promises() {
    assert_promises(&run_demo(&[]));
}

#[test]
fn demo_over_quic_keeps_its_promises() {
    let stdout = run_demo(&["--transport", "quic"]);
    assert_promises(&stdout);
    assert!(
        stdout.contains("QUIC"),
        "the demo says it runs over QUIC:\n{stdout}"
    );
}
