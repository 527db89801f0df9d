//! `dms demo` runs to completion and its summary line holds the promised numbers.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::process::Command;

#[test]
fn demo_keeps_its_promises() {
    let out = Command::new(env!("CARGO_BIN_EXE_dms"))
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dms demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("summary:"))
        .expect("a summary line");
    let fields: HashMap<&str, &str> = summary["summary:".len()..]
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect();
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
