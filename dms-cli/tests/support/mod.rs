//! What the tests that run `dms node` processes share: starting one, running the CLI to
//! its end, reading a node's figures with `dms stats`, and signalling it.
#![allow(dead_code)] // each test file uses some of these

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a test waits for any one thing.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

pub(crate) fn dms() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dms"))
}

/// A `dms node` process, killed when dropped.
pub(crate) struct NodeProcess {
    pub(crate) child: Child,
    /// The metrics address it printed.
    pub(crate) metrics: String,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dms node --echo --metrics 127.0.0.1:0` and waits (deadline) for its lines up
/// to `bucket`; returns it with the metrics address it printed.
pub(crate) fn start_node(discovery: &str, service: &str) -> NodeProcess {
    start_node_with(
        discovery,
        service,
        &["--heartbeat-ms", "200", "--lease-ttl-s", "2"],
    )
}

/// As [`start_node`], with these options besides `--echo` and `--metrics`.
pub(crate) fn start_node_with(discovery: &str, service: &str, options: &[&str]) -> NodeProcess {
    let mut child = dms()
        .args(["node", "--discovery", discovery, "--service", service])
        .arg("--echo")
        .args(options)
        .args(["--metrics", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut node = NodeProcess {
        child,
        metrics: String::new(),
    };
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("the node prints its lines; so far: {seen:?}"));
        if let Some(addr) = line.strip_prefix("metrics ") {
            node.metrics = addr.to_owned();
        }
        let done = line.starts_with("bucket ");
        seen.push(line);
        if done {
            break;
        }
    }
    assert!(
        !node.metrics.is_empty(),
        "a `metrics HOST:PORT` line before `bucket`: {seen:?}"
    );
    assert!(
        !node.metrics.ends_with(":0"),
        "the port is resolved: {}",
        node.metrics
    );
    node
}

/// Runs a command to its end, or fails the test at the deadline.
pub(crate) fn run(command: &mut Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("{command:?} did not end within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `dms stats ADDR --json`: the samples.
pub(crate) fn stats_json(addr: &str) -> Vec<serde_json::Value> {
    let out = run(dms().args(["stats", addr, "--json"]));
    assert!(
        out.status.success(),
        "dms stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc.as_array().unwrap().clone()
}

/// The sum of `name` over the samples whose labels include `node`.
pub(crate) fn total(samples: &[serde_json::Value], name: &str, node: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name && s["labels"]["node"] == node)
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

/// How many samples of `name` the node has (a registered figure shows even at 0).
pub(crate) fn count(samples: &[serde_json::Value], name: &str, node: &str) -> usize {
    samples
        .iter()
        .filter(|s| s["name"] == name && s["labels"]["node"] == node)
        .count()
}

pub(crate) fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The value of `name{node, reason}` (0 when the node has no such sample).
pub(crate) fn by_reason(
    samples: &[serde_json::Value],
    name: &str,
    node: &str,
    reason: &str,
) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name && s["labels"]["node"] == node)
        .filter(|s| s["labels"]["reason"] == reason)
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

/// Polls the node's figures until `check` holds (deadline); returns them.
pub(crate) fn wait_stats(
    addr: &str,
    what: &str,
    check: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let samples = stats_json(addr);
        if check(&samples) {
            return samples;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `sig` (`-STOP`, `-CONT`, `-KILL`...) to `node`'s process.
pub(crate) fn send_signal(node: &NodeProcess, sig: &str) {
    let pid = node.child.id().to_string();
    let sent = Command::new("kill").args([sig, &pid]).status().unwrap();
    assert!(sent.success(), "kill {sig} {pid}");
}
