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
    for section in ["== 1.", "== 3.", "== 4.", "== 5.", "== 6."] {
        assert!(stdout.contains(section), "missing {section}");
    }
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
