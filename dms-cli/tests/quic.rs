//! `dms` over QUIC on a real etcd: `dms node --bind quic://... --tls-dev DIR` processes,
//! requesters with and without TLS options, a node on TCP and QUIC at once, SIGKILL of a
//! QUIC peer detected by DMS heartbeats, production-style certificate files from
//! `dms certs dev`, and `dms node --bind tcp+tls://...` with the same TLS options.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![allow(clippy::print_stdout)] // the measured detection time is reported

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dms::{ClusterPath, Node, NodeEvent, ServicePath};
use dms_test_support::etcd::EtcdServer;

const CLUSTER: &str = "/mp/cn/linux/w1/g1/Battle";
const DEADLINE: Duration = Duration::from_secs(30);
const HEARTBEAT_MS: u64 = 200;

fn dms() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dms"))
}

fn cluster() -> ClusterPath {
    CLUSTER.parse().unwrap()
}

/// A `dms node` process, killed (SIGKILL) when dropped.
struct NodeProcess {
    child: Child,
    endpoints: Vec<String>,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dms node --discovery D --service CLUSTER/INSTANCE --echo EXTRA...` and waits
/// (deadline) for it to print its endpoints and bucket.
fn start_node(discovery: &str, service: &str, extra: &[&str]) -> NodeProcess {
    let mut child = dms()
        .args(["node", "--discovery", discovery, "--service", service])
        .args([
            "--echo",
            "--heartbeat-ms",
            &HEARTBEAT_MS.to_string(),
            "--lease-ttl-s",
            "2",
        ])
        .args(extra)
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
    // The guard owns the child from here: a failed wait below still kills it.
    let mut node = NodeProcess {
        child,
        endpoints: Vec::new(),
    };
    loop {
        let line = rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("{service}: no endpoints and bucket printed ({e})"));
        if let Some(ep) = line.strip_prefix("endpoint ") {
            node.endpoints.push(ep.to_owned());
        }
        if line.starts_with("bucket ") {
            break;
        }
    }
    node
}

fn instance_path(instance: &str) -> String {
    format!("{CLUSTER}/{instance}")
}

/// Runs `dms request --json --count N` to the Battle cluster with `extra` options.
fn request(discovery: &str, count: u32, extra: &[&str]) -> Output {
    dms()
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
        .args(extra)
        .output()
        .unwrap()
}

/// Asserts `dms request` succeeded with `count` echoed replies; returns seq → instance.
fn replies(out: &Output, count: u32) -> BTreeMap<u64, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dms request failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    let replies: BTreeMap<u64, String> = stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(v["payload"], "hi", "{line}");
            assert!(v["rtt_us"].as_u64().is_some(), "{line}");
            let instance = v["instance"]
                .as_str()
                .unwrap_or_else(|| panic!("an error line: {line}"));
            (v["seq"].as_u64().unwrap(), instance.to_owned())
        })
        .collect();
    assert_eq!(replies.len(), count as usize, "{stdout}\n{stderr}");
    replies
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

/// The Battle instances `dms ls` lists, with their endpoints.
fn battle_listing(discovery: &str) -> BTreeMap<String, Vec<String>> {
    ls(discovery)
        .into_iter()
        .filter(|v| v["cluster"] == CLUSTER)
        .map(|v| {
            let endpoints = v["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().to_owned())
                .collect();
            (v["instance"].as_str().unwrap().to_owned(), endpoints)
        })
        .collect()
}

/// Polls `dms ls` until `count` Battle instances are listed (deadline).
fn wait_battles(discovery: &str, count: usize) -> BTreeMap<String, Vec<String>> {
    let start = Instant::now();
    loop {
        let listing = battle_listing(discovery);
        if listing.len() == count {
            return listing;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {count} Battle instances: {listing:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `command` to completion and returns its output; kills it at `deadline` (a node
/// that should have refused to start would otherwise run forever).
fn output_within(mut command: Command, deadline: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // Still running past the deadline: kill it by its pid (we own it).
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "still running after {deadline:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn quic_nodes_answer_tls_requesters_and_refuse_plain_ones_cleanly() {
    let etcd = EtcdServer::start();
    let discovery = format!("etcd://{}", etcd.endpoint());
    let certs = tempfile::tempdir().unwrap();
    let dev = path_str(certs.path());
    let quic = ["--bind", "quic://127.0.0.1:0", "--tls-dev", dev];

    let mut nodes = BTreeMap::new();
    for name in ["battle-1", "battle-2"] {
        let node = start_node(&discovery, &instance_path(name), &quic);
        assert_eq!(node.endpoints.len(), 1, "{:?}", node.endpoints);
        assert!(
            node.endpoints[0].starts_with("quic://127.0.0.1:"),
            "{:?}",
            node.endpoints
        );
        nodes.insert(name.to_owned(), node);
    }

    // `dms ls` lists the QUIC endpoints the nodes printed.
    let listing = wait_battles(&discovery, 2);
    for (name, endpoints) in &listing {
        assert_eq!(endpoints, &nodes[name].endpoints, "{listing:?}");
    }

    // A requester with the same development CA gets every reply over QUIC.
    let out = request(&discovery, 20, &["--tls-dev", dev]);
    let owners = replies(&out, 20);
    let used: HashSet<&str> = owners
        .values()
        .map(|p| p.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        used,
        HashSet::from(["battle-1", "battle-2"]),
        "keys spread over both QUIC nodes: {owners:?}"
    );

    // Without TLS options the requester cannot dial quic:// endpoints: it fails cleanly
    // with "no live instance" (exit 4), saying so on stderr.
    let out = request(
        &discovery,
        1,
        &["--discover-ms", "2000", "--timeout-ms", "2000"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(4),
        "stdout:\n{}\nstderr:\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("no live instance")
            && stderr.contains(CLUSTER)
            && stderr.contains("only quic:// endpoints")
            && stderr.contains("--tls-dev"),
        "stderr explains: {stderr}"
    );
    assert!(out.stdout.is_empty(), "no reply line printed");
    println!("a requester without TLS options says: {stderr}");

    // A node on TCP and QUIC at once is reachable over TCP without TLS options.
    drop(nodes);
    let both = start_node(
        &discovery,
        &instance_path("battle-3"),
        &[
            "--bind",
            "tcp://127.0.0.1:0",
            "--bind",
            "quic://127.0.0.1:0",
            "--tls-dev",
            dev,
        ],
    );
    let schemes: Vec<&str> = both
        .endpoints
        .iter()
        .map(|e| e.split_once("://").unwrap().0)
        .collect();
    assert_eq!(schemes, ["tcp", "quic"], "{:?}", both.endpoints);
    // The SIGKILLed QUIC-only nodes stay listed until their 2 s leases lapse.
    let listing = wait_battles(&discovery, 1);
    assert_eq!(listing["battle-3"], both.endpoints);
    let out = request(&discovery, 5, &["--prefer", "tcp"]);
    let owners = replies(&out, 5);
    assert!(
        owners.values().all(|p| p.ends_with("/battle-3")),
        "{owners:?}"
    );
    // And over QUIC by a requester with the CA that prefers it.
    let out = request(&discovery, 5, &["--tls-dev", dev, "--prefer", "quic"]);
    replies(&out, 5);
}

/// `dms node --bind tcp+tls://...` with the QUIC/TLS options serves requesters with the
/// same CA over TCP+TLS; a requester without them cannot dial it (no plaintext fallback)
/// and says why; a node on tcp:// and tcp+tls:// is dialled over TLS by a requester with
/// credentials.
#[test]
fn tcp_tls_nodes_answer_tls_requesters_and_refuse_plain_ones_cleanly() {
    let etcd = EtcdServer::start();
    let discovery = format!("etcd://{}", etcd.endpoint());
    let certs = tempfile::tempdir().unwrap();
    let dev = path_str(certs.path());
    let node = start_node(
        &discovery,
        &instance_path("battle-1"),
        &["--bind", "tcp+tls://127.0.0.1:0", "--tls-dev", dev],
    );
    assert_eq!(node.endpoints.len(), 1, "{:?}", node.endpoints);
    assert!(
        node.endpoints[0].starts_with("tcp+tls://127.0.0.1:"),
        "{:?}",
        node.endpoints
    );
    let listing = wait_battles(&discovery, 1);
    assert_eq!(listing["battle-1"], node.endpoints);

    let out = request(&discovery, 5, &["--tls-dev", dev]);
    let owners = replies(&out, 5);
    assert!(
        owners.values().all(|p| p.ends_with("/battle-1")),
        "{owners:?}"
    );

    let out = request(
        &discovery,
        1,
        &["--discover-ms", "2000", "--timeout-ms", "2000"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "stderr:\n{stderr}");
    assert!(
        stderr.contains("only tcp+tls:// endpoints") && stderr.contains("--tls-dev"),
        "stderr explains: {stderr}"
    );

    // Both schemes published: a requester with credentials prefers TLS by default, and
    // with `--prefer tcp+tls` only it still gets every reply.
    drop(node);
    let both = start_node(
        &discovery,
        &instance_path("battle-2"),
        &[
            "--bind",
            "tcp://127.0.0.1:0",
            "--bind",
            "tcp+tls://127.0.0.1:0",
            "--tls-dev",
            dev,
        ],
    );
    let schemes: Vec<&str> = both
        .endpoints
        .iter()
        .map(|e| e.split_once("://").unwrap().0)
        .collect();
    assert_eq!(schemes, ["tcp", "tcp+tls"], "{:?}", both.endpoints);
    let listing = wait_battles(&discovery, 1);
    assert_eq!(listing["battle-2"], both.endpoints);
    let out = request(&discovery, 5, &["--tls-dev", dev, "--prefer", "tcp+tls"]);
    let owners = replies(&out, 5);
    assert!(
        owners.values().all(|p| p.ends_with("/battle-2")),
        "{owners:?}"
    );
}

/// Waits (deadline) for the next event matching `pick`.
async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
    deadline: Duration,
    mut pick: impl FnMut(&NodeEvent) -> bool,
) -> NodeEvent {
    tokio::time::timeout(deadline, async {
        loop {
            match events.recv().await {
                Ok(event) if pick(&event) => return event,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    panic!("lagged {n} events")
                }
                Err(e) => panic!("events: {e}"),
            }
        }
    })
    .await
    .expect("the event within its deadline")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_quic_peer_is_detected_by_dms_heartbeats() {
    const INTERVAL: Duration = Duration::from_millis(100);
    const MISSED: u32 = 3;
    let etcd = EtcdServer::start();
    let discovery = format!("etcd://{}", etcd.endpoint());
    let certs = tempfile::tempdir().unwrap();
    let dev = path_str(certs.path()).to_owned();

    let target_path: ServicePath = instance_path("battle-1").parse().unwrap();
    let mut child = {
        let (discovery, target, dev) = (discovery.clone(), target_path.to_string(), dev.clone());
        tokio::task::spawn_blocking(move || {
            start_node(
                &discovery,
                &target,
                &["--bind", "quic://127.0.0.1:0", "--tls-dev", &dev],
            )
        })
        .await
        .unwrap()
    };

    let etcd_discovery =
        dms_discovery::etcd::EtcdDiscovery::connect(&[etcd.endpoint()], Default::default())
            .await
            .unwrap();
    let node = Node::builder("/mp/cn/linux/w1/g1/Lobby/lobby-1".parse().unwrap())
        .discovery(etcd_discovery)
        .quic_dev_certificates(certs.path())
        .bind("quic://127.0.0.1:0".parse().unwrap())
        .prefer(["quic"])
        .heartbeat(INTERVAL, MISSED)
        .target(cluster())
        .start()
        .await
        .unwrap();
    let mut events = node.events();
    // PeerUp may come before `events()` subscribed: the instance's state covers that.
    node.wait_for_instances(&cluster(), 1, DEADLINE)
        .await
        .unwrap();
    let instances = node.instances(&cluster()).await;
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert_eq!(instances[0].path, target_path);
    assert!(instances[0].endpoints[0].starts_with("quic://"));
    // A request goes over the QUIC link before the kill.
    let reply = node
        .request(&cluster(), 7u64, dms::Multipart::from_frames(["hi"]))
        .await
        .unwrap();
    assert_eq!(reply.from, target_path);

    // Heartbeats keep an idle QUIC link up: no PeerDown for several intervals.
    let quiet = tokio::time::timeout(
        INTERVAL * MISSED * 2,
        next_event(&mut events, DEADLINE, |e| {
            matches!(e, NodeEvent::PeerDown { .. })
        }),
    )
    .await;
    assert!(quiet.is_err(), "a live peer went down: {quiet:?}");

    let killed = Instant::now();
    child.child.kill().unwrap();
    let down = next_event(
        &mut events,
        DEADLINE,
        |e| matches!(e, NodeEvent::PeerDown { path, .. } if *path == target_path),
    )
    .await;
    let detected = killed.elapsed();
    let _ = child.child.wait();
    let bound = INTERVAL * MISSED;
    println!(
        "kill -9 of a QUIC peer detected in {} ms (heartbeat {} ms × {MISSED} = {} ms): {down:?}",
        detected.as_millis(),
        INTERVAL.as_millis(),
        bound.as_millis()
    );
    // DMS heartbeats, not quinn's 30 s default idle timeout, detect it: within the
    // heartbeat bound, with 2× slack for scheduling on a loaded machine.
    assert!(
        detected <= bound * 2,
        "detected in {detected:?}, bound {bound:?} (× 2 slack)"
    );
    assert!(detected < Duration::from_secs(30));
    let after = node.instances(&cluster()).await;
    assert!(!after.iter().any(|i| i.is_ready()), "{after:?}");
    node.shutdown().await;
}

/// The `--tls-cert/--tls-key/--tls-ca` options `dms certs dev` printed, by service path.
fn cert_options(stdout: &str) -> BTreeMap<String, Vec<String>> {
    stdout
        .lines()
        .filter_map(|line| {
            let (path, options) = line.split_once(": --tls-cert ")?;
            let options: Vec<String> = format!("--tls-cert {options}")
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            Some((path.to_owned(), options))
        })
        .collect()
}

#[test]
fn production_style_certificate_files_from_dms_certs_dev() {
    let etcd = EtcdServer::start();
    let discovery = format!("etcd://{}", etcd.endpoint());
    let certs = tempfile::tempdir().unwrap();
    let p1 = instance_path("battle-1");
    let p2 = "/mp/cn/linux/w1/g1/Lobby/lobby-1";

    let out = dms()
        .args(["certs", "dev", path_str(certs.path()), "--service", &p1])
        .args(["--service", p2])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let options = cert_options(&stdout);
    assert_eq!(
        options.keys().collect::<Vec<_>>(),
        [p1.as_str(), p2],
        "{stdout}"
    );
    for opts in options.values() {
        let flags: Vec<&str> = opts.iter().step_by(2).map(String::as_str).collect();
        assert_eq!(flags, ["--tls-cert", "--tls-key", "--tls-ca"], "{stdout}");
        for file in opts.iter().skip(1).step_by(2) {
            let file = PathBuf::from(file);
            assert!(file.starts_with(certs.path()), "{}", file.display());
            assert!(file.is_file(), "{} written", file.display());
        }
    }
    let with = |path: &str, extra: &[&'static str]| -> Vec<String> {
        let mut args = options[path].clone();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };

    // A node with P1's files; a requester with P2's files (it is P2).
    let node_args = with(&p1, &["--bind", "quic://127.0.0.1:0"]);
    let node = start_node(&discovery, &p1, &refs(&node_args));
    assert!(
        node.endpoints[0].starts_with("quic://"),
        "{:?}",
        node.endpoints
    );
    wait_battles(&discovery, 1);
    let out = request(&discovery, 3, &refs(&options[p2]));
    let owners = replies(&out, 3);
    assert!(owners.values().all(|p| *p == p1), "{owners:?}");

    // P1's files with `--service P2`: the node refuses to start, naming both paths.
    let mut wrong = dms();
    wrong
        .args(["node", "--discovery", &discovery, "--service", p2])
        .args(["--bind", "quic://127.0.0.1:0"])
        .args(&options[&p1]);
    let out = output_within(wrong, DEADLINE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {stderr}");
    assert!(
        stderr.contains(&p1) && stderr.contains(p2),
        "the error names both paths: {stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("bucket "),
        "it never registered"
    );
    drop(node);
}
