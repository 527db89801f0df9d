//! Multi-process clusters through the `dms` tool, on a real etcd: three `dms node --echo`
//! processes of one cluster, requester processes, SIGKILL and restart of a node, and an
//! etcd restart under traffic.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dms_test_support::etcd::{EtcdCluster, EtcdServer};

const CLUSTER: &str = "/mp/cn/linux/w1/g1/Battle";
const DEADLINE: Duration = Duration::from_secs(30);
/// Heartbeat of the nodes and requesters: dead after 3 × 200 ms.
const HEARTBEAT_MS: u64 = 200;

fn dms() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dms"))
}

/// A `dms node` process, killed (SIGKILL) when dropped.
struct NodeProcess {
    child: Child,
    endpoint: String,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(discovery: &str, instance: &str) -> NodeProcess {
    start_node_with(discovery, instance, 2).0
}

/// Starts a node with a lease of `ttl_s` seconds; returns it and the bucket it printed.
fn start_node_with(discovery: &str, instance: &str, ttl_s: u32) -> (NodeProcess, u32) {
    let mut child = dms()
        .args(["node", "--discovery", discovery, "--service"])
        .arg(format!("{CLUSTER}/{instance}"))
        .args([
            "--echo",
            "--heartbeat-ms",
            &HEARTBEAT_MS.to_string(),
            "--lease-ttl-s",
            &ttl_s.to_string(),
        ])
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
    let mut endpoint = None;
    let bucket = loop {
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("the node prints its endpoint and bucket");
        if let Some(ep) = line.strip_prefix("endpoint ") {
            endpoint = Some(ep.to_owned());
        }
        if let Some(bucket) = line.strip_prefix("bucket ") {
            break bucket.parse().unwrap();
        }
    };
    let node = NodeProcess {
        child,
        endpoint: endpoint.expect("an endpoint line"),
    };
    (node, bucket)
}

/// Runs `dms request --json --count N` (keys 0..N) and returns (seq → instance or error).
fn request_all(discovery: &str, count: u32) -> BTreeMap<u64, Result<String, String>> {
    let out = dms()
        .args([
            "request",
            "--discovery",
            discovery,
            "--to",
            CLUSTER,
            "--json",
            "--data",
            "hi",
        ])
        .args([
            "--count",
            &count.to_string(),
            "--heartbeat-ms",
            &HEARTBEAT_MS.to_string(),
        ])
        .output()
        .unwrap();
    let results = parse(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        results.len(),
        count as usize,
        "dms request answered {} of {count}: {}",
        results.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    results
}

fn parse(stdout: &str) -> BTreeMap<u64, Result<String, String>> {
    stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            let seq = v["seq"].as_u64().unwrap();
            match v["instance"].as_str() {
                Some(instance) => {
                    assert_eq!(v["payload"], "hi");
                    assert!(v["rtt_us"].as_u64().is_some());
                    (seq, Ok(instance.rsplit('/').next().unwrap().to_owned()))
                }
                None => (seq, Err(v["error"].as_str().unwrap_or_default().to_owned())),
            }
        })
        .collect()
}

fn ls(discovery: &str) -> Vec<serde_json::Value> {
    let out = dms()
        .args(["ls", "--discovery", discovery, "--json", "/mp"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Polls `dms ls` until `check` holds (deadline).
fn wait_ls(discovery: &str, what: &str, check: impl Fn(&[serde_json::Value]) -> bool) {
    let start = Instant::now();
    while !check(&ls(discovery)) {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn instances(listing: &[serde_json::Value]) -> HashSet<String> {
    listing
        .iter()
        .map(|v| v["instance"].as_str().unwrap().to_owned())
        .collect()
}

/// A node killed with SIGKILL and started again at once, as a supervisor does (well
/// within its 30 s lease), starts first time, 20 times in a row: it finds its old
/// registration's endpoint dead, takes the registration and its bucket over atomically,
/// and serves its old keys again. A second live process on the same path is still
/// refused.
#[test]
fn crashed_node_restarted_within_its_lease_takes_its_place_back() {
    const TTL_S: u32 = 30;
    const KEYS: u32 = 30;
    let etcd = EtcdServer::start();
    let discovery = format!("etcd://{}", etcd.endpoint());
    let mut nodes = BTreeMap::new();
    let mut bucket = 0;
    for name in ["battle-1", "battle-2", "battle-3"] {
        let (node, b) = start_node_with(&discovery, name, TTL_S);
        if name == "battle-2" {
            bucket = b;
        }
        nodes.insert(name, node);
    }
    wait_ls(&discovery, "3 registered nodes", |l| {
        instances(l).len() == 3
    });
    let owners: BTreeMap<u64, String> = request_all(&discovery, KEYS)
        .into_iter()
        .map(|(k, v)| (k, v.unwrap()))
        .collect();
    assert!(
        owners.values().any(|o| o == "battle-2"),
        "battle-2 owns keys: {owners:?}"
    );
    for cycle in 0..20 {
        drop(nodes.remove("battle-2")); // SIGKILL, reaped
        let restarted = Instant::now();
        let (node, b) = start_node_with(&discovery, "battle-2", TTL_S);
        let started = restarted.elapsed();
        nodes.insert("battle-2", node);
        assert_eq!(
            b, bucket,
            "cycle {cycle}: the restarted node has its bucket back"
        );
        let serving = Instant::now();
        let now = request_all(&discovery, KEYS);
        for (key, owner) in &owners {
            assert_eq!(
                now[key]
                    .as_ref()
                    .unwrap_or_else(|e| panic!("cycle {cycle}, key {key}: {e}")),
                owner,
                "cycle {cycle}: key {key} is served by its owner"
            );
        }
        eprintln!(
            "cycle {cycle}: started in {started:?}, its keys served {:?} later",
            serving.elapsed()
        );
    }
    // The live holder of the path is never displaced.
    let out = dms()
        .args(["node", "--discovery", &discovery, "--service"])
        .arg(format!("{CLUSTER}/battle-2"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a second live battle-2 must not start"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already registered"), "{stderr}");
    assert_eq!(request_all(&discovery, KEYS).len(), KEYS as usize);
}

/// Every request to one instance ends by its own deadline, whatever the target: a
/// requester sending to an instance that freezes (SIGSTOP) mid-stream gets each answer or
/// failure within `--timeout-ms` (400 ms here), not after the 5 s default.
#[test]
fn requests_to_a_frozen_instance_end_by_their_own_timeout() {
    let etcd = EtcdServer::start();
    let discovery = format!("etcd://{}", etcd.endpoint());
    let (node, _) = start_node_with(&discovery, "battle-1", 10);
    let mut requester = dms()
        .args(["request", "--discovery", &discovery, "--json", "--to"])
        .arg(format!("{CLUSTER}/battle-1"))
        .args([
            "--count",
            "12",
            "--interval-ms",
            "50",
            "--timeout-ms",
            "400",
        ])
        .args(["--heartbeat-ms", "1000", "--data", "hi"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = requester.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    let (mut last, first) = rx.recv_timeout(DEADLINE).expect("a first reply");
    assert!(
        first.contains("\"instance\""),
        "answered before the freeze: {first}"
    );
    let pid = node.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut timeouts = 0;
    while let Ok((at, line)) = rx.recv_timeout(DEADLINE) {
        // 400 ms timeout + 50 ms pause, with room for a loaded machine; the bug made
        // this 5 s.
        let gap = at - last;
        assert!(gap < Duration::from_millis(2500), "{gap:?} before {line}");
        timeouts += usize::from(line.contains("timed out") || line.contains("timeout"));
        last = at;
    }
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    let _ = requester.wait();
    assert!(timeouts >= 1, "requests to the frozen instance timed out");
}

/// A restart beside a holder that cannot be probed (SIGSTOPped: its port accepts, it never
/// answers) does not take over a registration that may be live: it waits for the frozen
/// holder's lease to expire, then registers, and serves.
#[test]
fn restart_beside_a_frozen_holder_waits_for_its_lease() {
    let etcd = EtcdServer::start();
    let discovery = format!("etcd://{}", etcd.endpoint());
    let (frozen, _) = start_node_with(&discovery, "battle-2", 2);
    let frozen_endpoint = frozen.endpoint.clone();
    let stop = Command::new("kill")
        .args(["-STOP", &frozen.child.id().to_string()])
        .status()
        .unwrap();
    assert!(stop.success());
    let (fresh, _) = start_node_with(&discovery, "battle-2", 2);
    // It started only once the frozen holder's registration was gone: what is listed now
    // is its own.
    let listing = ls(&discovery);
    let entry = listing
        .iter()
        .find(|v| v["instance"] == "battle-2")
        .expect("battle-2 registered");
    assert_eq!(entry["endpoints"][0].as_str().unwrap(), fresh.endpoint);
    assert_ne!(fresh.endpoint, frozen_endpoint);
    let served = request_all(&discovery, 5);
    assert!(
        served.values().all(|r| r.as_deref() == Ok("battle-2")),
        "{served:?}"
    );
    let _ = Command::new("kill")
        .args(["-CONT", &frozen.child.id().to_string()])
        .status();
}

#[test]
fn keys_stay_put_fail_over_on_sigkill_and_come_back() {
    let etcd = EtcdServer::start();
    let discovery = format!("etcd://{}", etcd.endpoint());
    let mut nodes: BTreeMap<&str, NodeProcess> = BTreeMap::new();
    for name in ["battle-1", "battle-2", "battle-3"] {
        nodes.insert(name, start_node(&discovery, name));
    }
    wait_ls(&discovery, "3 registered nodes", |l| {
        instances(l).len() == 3
    });
    let listing = ls(&discovery);
    for entry in &listing {
        let name = entry["instance"].as_str().unwrap();
        assert_eq!(
            entry["endpoints"][0].as_str().unwrap(),
            nodes[name].endpoint
        );
    }

    const KEYS: u32 = 30;
    let first = request_all(&discovery, KEYS);
    assert_eq!(first.len(), KEYS as usize);
    let owners: BTreeMap<u64, String> = first.into_iter().map(|(k, v)| (k, v.unwrap())).collect();
    // The requester process deregistered itself before exiting.
    let leftovers: Vec<_> = ls(&discovery)
        .into_iter()
        .filter(|v| v["cluster"].as_str().unwrap().ends_with("/dms-cli"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "requester still registered: {leftovers:?}"
    );
    let used: HashSet<&String> = owners.values().collect();
    assert_eq!(
        used.len(),
        3,
        "keys spread over the three nodes: {owners:?}"
    );
    let again = request_all(&discovery, KEYS);
    for (key, owner) in &owners {
        assert_eq!(again[key].as_ref().unwrap(), owner, "key {key} moved");
    }

    // SIGKILL: no DISCONNECT, no deregistration; its lease expires later.
    drop(nodes.remove("battle-2"));
    let killed_at = Instant::now();
    let after_kill = request_all(&discovery, KEYS);
    let failover = killed_at.elapsed();
    for (key, owner) in &owners {
        let now = after_kill[key]
            .as_ref()
            .unwrap_or_else(|e| panic!("key {key} failed: {e}"));
        if owner == "battle-2" {
            assert_ne!(now, "battle-2");
        } else {
            assert_eq!(now, owner, "key {key} moved although its node lives");
        }
    }
    eprintln!("keys of the killed node served elsewhere {failover:?} after SIGKILL");
    wait_ls(&discovery, "the killed node's lease to expire", |l| {
        !instances(l).contains("battle-2")
    });

    nodes.insert("battle-2", start_node(&discovery, "battle-2"));
    wait_ls(&discovery, "battle-2 registered again", |l| {
        instances(l).contains("battle-2")
    });
    let back = request_all(&discovery, KEYS);
    for (key, owner) in &owners {
        assert_eq!(
            back[key].as_ref().unwrap(),
            owner,
            "key {key} did not come back"
        );
    }
}

#[test]
fn etcd_restart_mid_traffic_fails_no_request() {
    let mut etcd = EtcdServer::start();
    let discovery = format!("etcd://{}", etcd.endpoint());
    let _a = start_node(&discovery, "battle-1");
    let _b = start_node(&discovery, "battle-2");
    wait_ls(&discovery, "2 registered nodes", |l| {
        instances(l).len() == 2
    });
    let mut requester = dms()
        .args([
            "request",
            "--discovery",
            &discovery,
            "--to",
            CLUSTER,
            "--json",
            "--data",
            "hi",
        ])
        .args([
            "--count",
            "150",
            "--interval-ms",
            "20",
            "--heartbeat-ms",
            &HEARTBEAT_MS.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = requester.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Let traffic flow, then restart etcd under it.
    let mut lines = Vec::new();
    while lines.len() < 20 {
        lines.push(rx.recv_timeout(DEADLINE).expect("requests flowing"));
    }
    etcd.kill();
    while lines.len() < 40 {
        lines.push(
            rx.recv_timeout(DEADLINE)
                .expect("requests flow while etcd is down"),
        );
    }
    etcd.restart();
    for line in rx.iter() {
        lines.push(line);
    }
    let status = requester.wait().unwrap();
    let results = parse(&lines.join("\n"));
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "requests failed because of the etcd restart: {failed:?}"
    );
    assert_eq!(results.len(), 150);
    assert!(status.success());
    wait_ls(&discovery, "both nodes still registered", |l| {
        instances(l).len() == 2
    });
}

#[test]
fn dms_keeps_working_when_the_etcd_leader_dies() {
    let mut etcd = EtcdCluster::start(3);
    let discovery = format!("etcd://{}", etcd.endpoints().join(","));
    let _a = start_node(&discovery, "battle-1");
    let _b = start_node(&discovery, "battle-2");
    wait_ls(&discovery, "2 registered nodes", |l| {
        instances(l).len() == 2
    });
    let leader = etcd.wait_for_leader();
    etcd.kill_member(leader);
    let results = request_all(&discovery, 10);
    assert_eq!(results.len(), 10);
    assert!(results.values().all(Result::is_ok), "{results:?}");
    let _c = start_node(&discovery, "battle-3");
    wait_ls(&discovery, "a node registered after the leader died", |l| {
        instances(l).len() == 3
    });
    let after = request_all(&discovery, 30);
    let used: HashSet<&String> = after.values().map(|r| r.as_ref().unwrap()).collect();
    assert_eq!(used.len(), 3, "the new node serves too: {after:?}");
}

/// An instance frozen (SIGSTOP) for 3 s and resumed (SIGCONT) costs no request once it
/// serves again: after the first request it answers following the resume, every request
/// to it is answered (issue 13: one failed about 1.6 s after the return). Two rounds,
/// requests every 20 ms to that one instance.
#[test]
fn a_resumed_instance_costs_no_request_once_it_serves_again() {
    const ROUNDS: usize = 2;
    /// Requests that must all be answered after the first answer that follows a resume:
    /// about 3 s at one every 20 ms.
    const AFTER_RETURN: usize = 150;
    let etcd = EtcdServer::start();
    let discovery = format!("etcd://{}", etcd.endpoint());
    // A lease of 2 s: it lapses during the freeze, as it would in production with a
    // freeze longer than the lease.
    let node = start_node(&discovery, "battle-1");
    let _others = [
        start_node(&discovery, "battle-2"),
        start_node(&discovery, "battle-3"),
    ];
    let mut requester = dms()
        .args(["request", "--discovery", &discovery, "--json", "--to"])
        .arg(format!("{CLUSTER}/battle-1"))
        .args([
            "--count",
            "100000",
            "--interval-ms",
            "20",
            "--timeout-ms",
            "500",
        ])
        .args(["--heartbeat-ms", &HEARTBEAT_MS.to_string(), "--data", "hi"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = requester.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let answered = |line: &str| {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["instance"].is_string()
    };
    let next = || rx.recv_timeout(DEADLINE).expect("the requester goes on");
    let pid = node.child.id().to_string();
    let signal = |which: &str| {
        assert!(
            Command::new("kill")
                .args([which, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    for round in 0..ROUNDS {
        // Serving before the freeze.
        while !answered(&next()) {}
        signal("-STOP");
        // The freeze itself: its length is the fault, not a wait for an event.
        std::thread::sleep(Duration::from_secs(3));
        // Lines of requests issued during the freeze: drained up to the resume.
        while rx.try_recv().is_ok() {}
        signal("-CONT");
        let resumed = Instant::now();
        let mut failures_before_return = 0;
        while !answered(&next()) {
            failures_before_return += 1;
            assert!(
                resumed.elapsed() < DEADLINE,
                "round {round}: never served again"
            );
        }
        let returned = resumed.elapsed();
        for i in 0..AFTER_RETURN {
            let line = next();
            assert!(
                answered(&line),
                "round {round}: request {i} after the return ({returned:?} after SIGCONT, \
                 {failures_before_return} failed before it) failed: {line}"
            );
        }
    }
    let _ = requester.kill();
    let _ = requester.wait();
}
