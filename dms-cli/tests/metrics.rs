//! `dms node --metrics ADDR` and `dms stats ADDR` as processes: the node prints the bound
//! metrics address with its endpoints, serves the kernel's figures in the Prometheus text
//! format, `dms stats` reads them (table and JSON), the figures move with traffic (over
//! a real etcd), and a busy metrics address or an endpoint that is not a metrics server
//! fails with a clear error and a non-zero exit.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CLUSTER: &str = "/mt/cn/linux/w1/g1/Battle";
const DEADLINE: Duration = Duration::from_secs(30);

fn dms() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dms"))
}

/// A `dms node` process, killed when dropped.
struct NodeProcess {
    child: Child,
    metrics: String,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dms node --echo --metrics 127.0.0.1:0` and waits (deadline) for its lines up
/// to `bucket`; returns it with the metrics address it printed.
fn start_node(discovery: &str, service: &str) -> NodeProcess {
    start_node_with(
        discovery,
        service,
        &["--heartbeat-ms", "200", "--lease-ttl-s", "2"],
    )
}

/// As [`start_node`], with these options besides `--echo` and `--metrics`.
fn start_node_with(discovery: &str, service: &str, options: &[&str]) -> NodeProcess {
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
fn run(command: &mut Command) -> Output {
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
fn stats_json(addr: &str) -> Vec<serde_json::Value> {
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
fn total(samples: &[serde_json::Value], name: &str, node: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name && s["labels"]["node"] == node)
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

/// How many samples of `name` the node has (a registered figure shows even at 0).
fn count(samples: &[serde_json::Value], name: &str, node: &str) -> usize {
    samples
        .iter()
        .filter(|s| s["name"] == name && s["labels"]["node"] == node)
        .count()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A node on the embedded discovery serves its registered figures at once (at 0), as
/// JSON and as a table grouped by name.
#[test]
fn node_serves_its_figures_and_stats_prints_them() {
    let service = format!("{CLUSTER}/solo-1");
    let node = start_node("memory://", &service);
    let samples = stats_json(&node.metrics);
    for name in [
        "dms_requests_total",
        "dms_requests_received_total",
        "dms_dropped_total",
        "dms_peers_up_total",
        "dms_peers_lost_total",
        "dms_peers_ready",
        "dms_parked_messages",
    ] {
        assert!(
            count(&samples, name, &service) >= 1,
            "{name} of {service} in {samples:?}"
        );
    }
    assert_eq!(
        total(&samples, "dms_requests_received_total", &service),
        0.0
    );
    let ok = samples
        .iter()
        .find(|s| s["name"] == "dms_requests_total" && s["labels"]["outcome"] == "ok")
        .unwrap();
    assert_eq!(ok["labels"]["node"], service.as_str());

    let out = run(dms().args(["stats", &node.metrics]));
    assert!(out.status.success(), "{}", stderr_of(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("LABELS") && header.ends_with("VALUE"),
        "{header}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("dms_requests_total ") && l.contains("outcome=ok"))
        .unwrap_or_else(|| panic!("a dms_requests_total row: {table}"));
    assert!(row.contains(&format!("node={service}")), "{row}");
    assert!(row.ends_with(" 0"), "{row}");
    // The same endpoint under the http:// form, and the --prefix filter.
    let out = run(dms().args([
        "stats",
        &format!("http://{}/metrics", node.metrics),
        "--json",
        "--prefix",
        "dms_peers_",
    ]));
    assert!(out.status.success(), "{}", stderr_of(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = doc
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(!names.is_empty());
    assert!(
        names.iter().all(|n| n.starts_with("dms_peers_")),
        "{names:?}"
    );

    // The endpoint defends itself: silent connections do not block a scrape, another
    // method is 405, a head that is not HTTP or never ends is 400.
    let silent: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(&node.metrics).unwrap())
        .collect();
    assert_eq!(
        count(&stats_json(&node.metrics), "dms_peers_ready", &service),
        1
    );
    drop(silent);
    let raw = |request: &[u8]| {
        let mut stream = std::net::TcpStream::connect(&node.metrics).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let _ = stream.write_all(request);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    };
    assert!(raw(b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(raw(b"hello\r\n\r\n").starts_with("HTTP/1.1 400"));
    // Exactly the 8 KiB the endpoint reads (more would be reset unread, racing the answer).
    assert!(raw(&[b'a'; 8 * 1024]).starts_with("HTTP/1.1 400"));
    let head = raw(b"HEAD / HTTP/1.0\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
}

/// A metrics address already taken stops the node before it starts, with the address
/// and the cause on stderr and exit code 1 (as a busy --bind endpoint).
#[test]
fn busy_metrics_address_fails_the_start() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(dms().args([
        "node",
        "--discovery",
        "memory://",
        "--service",
        &format!("{CLUSTER}/busy-1"),
        "--metrics",
        &addr,
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains(&format!("cannot serve metrics on {addr}")),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("service "),
        "the node did not start"
    );
    // Not an address at all: a usage error (exit 2).
    let out = run(dms().args([
        "node",
        "--discovery",
        "memory://",
        "--service",
        &format!("{CLUSTER}/busy-1"),
        "--metrics",
        "localhost",
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
}

/// A one-connection server on loopback that answers every connection with `answer`
/// (None: holds the connection open, silent) after reading what the client sent.
fn fake_server(answer: Option<&'static [u8]>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 1024];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = stream.read(&mut buf);
            match answer {
                Some(bytes) => {
                    let _ = stream.write_all(bytes);
                }
                None => held.push(stream),
            }
        }
    });
    addr
}

/// `dms stats` against what is not a metrics endpoint fails with a clear error and a
/// non-zero exit: nothing listening, a non-HTTP server (an SSH banner, a DMS node's
/// ZMTP greeting), an HTTP error status, a body that is not the text format, silence.
#[test]
fn stats_against_what_is_not_a_metrics_endpoint_fails_clearly() {
    let expect_failure = |addr: &str, extra: &[&str], what: &str| {
        let out = run(dms().arg("stats").arg(addr).args(extra));
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{addr}: {stderr}");
        assert!(
            stderr.contains(what),
            "{addr}: expected {what:?} in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.stdout.is_empty(), "nothing on stdout");
    };
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    expect_failure(&closed, &[], "cannot connect");
    expect_failure(
        &fake_server(Some(b"SSH-2.0-OpenSSH_9.6\r\n")),
        &[],
        "not an HTTP server",
    );
    expect_failure(
        &fake_server(Some(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")),
        &[],
        "HTTP status 404",
    );
    expect_failure(
        &fake_server(Some(
            b"HTTP/1.1 200 OK\r\nContent-Length: 28\r\n\r\n# TYPE x counter\nx 1\n<html>\n",
        )),
        &[],
        "line 3",
    );
    expect_failure(
        &fake_server(None),
        &["--timeout-ms", "300"],
        "no complete answer within",
    );
    // A DMS node's own ZMTP endpoint is not its metrics endpoint.
    let mut child = dms()
        .args(["node", "--discovery", "memory://", "--service"])
        .arg(format!("{CLUSTER}/zmtp-1"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let endpoint = loop {
        let line = rx.recv_timeout(DEADLINE).unwrap();
        if let Some(endpoint) = line.strip_prefix("endpoint tcp://") {
            break endpoint.to_owned();
        }
    };
    expect_failure(&endpoint, &["--timeout-ms", "3000"], "not an HTTP server");
    let _ = child.kill();
    let _ = child.wait();
    // A malformed address is a usage error.
    let out = run(dms().args(["stats", "no-port-here"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
}

/// Over a real etcd: a request from another process moves the node's
/// `dms_requests_received_total` and `dms_peers_up_total`.
#[cfg(feature = "etcd")]
#[test]
fn a_request_moves_the_node_s_counters() {
    let etcd = dms_test_support::etcd::EtcdServer::start();
    let discovery = format!("etcd://{}", etcd.endpoint());
    let service = format!("{CLUSTER}/battle-1");
    let node = start_node(&discovery, &service);
    let before = stats_json(&node.metrics);
    assert_eq!(total(&before, "dms_requests_received_total", &service), 0.0);
    assert_eq!(total(&before, "dms_peers_up_total", &service), 0.0);

    let out = run(dms().args([
        "request",
        "--discovery",
        &discovery,
        "--to",
        CLUSTER,
        "--data",
        "hi",
        "--count",
        "3",
        "--json",
    ]));
    assert!(out.status.success(), "dms request: {}", stderr_of(&out));

    let after = stats_json(&node.metrics);
    let received = total(&after, "dms_requests_received_total", &service);
    assert!(received >= 3.0, "received {received}: {after:?}");
    let request_kind = after
        .iter()
        .find(|s| {
            s["name"] == "dms_requests_received_total"
                && s["labels"]["node"] == service.as_str()
                && s["labels"]["kind"] == "request"
        })
        .unwrap();
    assert!(request_kind["value"].as_f64().unwrap() >= 3.0);
    let up = total(&after, "dms_peers_up_total", &service);
    assert!(up >= 1.0, "peers up {up}: {after:?}");
}

/// The value of `name{node, reason}` (0 when the node has no such sample).
#[cfg(feature = "etcd")]
fn by_reason(samples: &[serde_json::Value], name: &str, node: &str, reason: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name && s["labels"]["node"] == node)
        .filter(|s| s["labels"]["reason"] == reason)
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

/// Polls the node's figures until `check` holds (deadline); returns them.
#[cfg(feature = "etcd")]
fn wait_stats(
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

/// F15 with a real signal: `kill -TERM` of a `dms node` process. It leaves gracefully:
/// its peer counts the session lost by DISCONNECT (not by heartbeats, which could not
/// fire within the 15 s bound of its 5 s heartbeat, nor by a bare link loss), the
/// process exits with success, and its registration is gone from etcd as it exits,
/// not 30 s later when its lease would lapse. A request its handler holds then (a
/// `dms request` process with a 20 s timeout, the answer 60 s away) ends at once with
/// the graceful close (`PeerClosed`), not by its timeout.
#[cfg(feature = "etcd")]
#[test]
fn a_terminated_node_says_goodbye_and_deregisters() {
    let etcd = dms_test_support::etcd::EtcdServer::start();
    let discovery = format!("etcd://{}", etcd.endpoint());
    let battle = format!("{CLUSTER}/battle-1");
    let lobby = "/mt/cn/linux/w1/g1/Lobby/lobby-1";
    let slow = ["--heartbeat-ms", "5000", "--lease-ttl-s", "30"];
    let mut server = start_node_with(
        &discovery,
        &battle,
        &[&slow[..], &["--echo-delay-ms", "60000"]].concat(),
    );
    let client = start_node_with(
        &discovery,
        lobby,
        &[&slow[..], &["--target", CLUSTER]].concat(),
    );
    wait_stats(&client.metrics, "the lobby's session with battle-1", |s| {
        total(s, "dms_peers_ready", lobby) >= 1.0
    });
    let requester = dms()
        .args(["request", "--discovery", &discovery, "--to", &battle])
        .args(["--timeout-ms", "20000", "--heartbeat-ms", "5000"])
        .args(["--data", "held"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_stats(&server.metrics, "battle-1 holding the request", |s| {
        total(s, "dms_requests_received_total", &battle) >= 1.0
    });

    let pid = server.child.id().to_string();
    let signalled = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(signalled.success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "battle-1 did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "battle-1 exited with {status}");
    let asked = requester.wait_with_output().unwrap();
    let ended = start.elapsed();
    let said = stderr_of(&asked);
    assert!(!asked.status.success(), "the held request was answered");
    assert!(
        said.contains("closed its session before replying"),
        "not a graceful close: {said}"
    );
    assert!(
        ended < Duration::from_secs(10),
        "the held request ended {ended:?} after SIGTERM (its timeout is 20 s): {said}"
    );

    let lost = "dms_peers_lost_total";
    let after = wait_stats(&client.metrics, "the lobby's loss of battle-1", |s| {
        total(s, lost, lobby) >= 1.0
    });
    assert_eq!(
        by_reason(&after, lost, lobby, "disconnected"),
        1.0,
        "{after:?}"
    );
    for reason in ["heartbeat", "link_down", "probe_timeout"] {
        assert_eq!(
            by_reason(&after, lost, lobby, reason),
            0.0,
            "{reason}: {after:?}"
        );
    }

    let listed = run(dms().args(["ls", "--discovery", &discovery, "--json", "/mt"]));
    assert!(listed.status.success(), "dms ls: {}", stderr_of(&listed));
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(
        !listing.contains("battle-1"),
        "battle-1 still registered after a graceful exit: {listing}"
    );
    assert!(
        listing.contains("lobby-1"),
        "the lobby is listed: {listing}"
    );
}

/// Sends `sig` (`-STOP`, `-CONT`...) to `node`'s process.
#[cfg(feature = "etcd")]
fn send_signal(node: &NodeProcess, sig: &str) {
    let pid = node.child.id().to_string();
    let sent = Command::new("kill").args([sig, &pid]).status().unwrap();
    assert!(sent.success(), "kill {sig} {pid}");
}

/// The requester of [`linked_pair`].
#[cfg(feature = "etcd")]
const LOBBY: &str = "/mt/cn/linux/w1/g1/Lobby/lobby-1";

/// A real etcd, `dms node` battle-1 of [`CLUSTER`] and `dms node` lobby-1 targeting it
/// with heartbeats of 200 ms × 3, both with 30 s leases; returns etcd (keep it), battle-1's
/// path, battle-1 and lobby-1.
#[cfg(feature = "etcd")]
fn linked_pair() -> (
    dms_test_support::etcd::EtcdServer,
    String,
    NodeProcess,
    NodeProcess,
) {
    let etcd = dms_test_support::etcd::EtcdServer::start();
    let discovery = format!("etcd://{}", etcd.endpoint());
    let battle = format!("{CLUSTER}/battle-1");
    let server = start_node_with(&discovery, &battle, &["--lease-ttl-s", "30"]);
    let heartbeat = ["--heartbeat-ms", "200", "--lease-ttl-s", "30"];
    let target = ["--target", CLUSTER];
    let client = start_node_with(&discovery, LOBBY, &[&heartbeat[..], &target].concat());
    (etcd, battle, server, client)
}

/// F16 with a real signal: a requester process frozen with SIGSTOP, its socket open (the
/// kernel keeps acknowledging it), is dropped by its responder within the liveness
/// timeout its READY asked for (200 ms × 3 = 600 ms): not before two of its heartbeats
/// could have been missed, and long before TCP would notice anything. The responder
/// counts the loss as `heartbeat`. Resumed (SIGCONT), the requester links again.
#[cfg(feature = "etcd")]
#[test]
fn a_frozen_requester_is_dropped_within_its_ready_timeout_and_links_again_when_resumed() {
    let (_etcd, battle, server, client) = linked_pair();
    let lobby = LOBBY;
    wait_stats(&server.metrics, "battle-1's session with the lobby", |s| {
        total(s, "dms_peers_ready", &battle) >= 1.0
    });
    let lost = "dms_peers_lost_total";
    let signal = |sig: &str| send_signal(&client, sig);

    signal("-STOP");
    let frozen = Instant::now();
    let after = wait_stats(&server.metrics, "battle-1 dropping the frozen lobby", |s| {
        total(s, lost, &battle) >= 1.0
    });
    let took = frozen.elapsed();
    signal("-CONT");
    println!(
        "F16: a SIGSTOPped requester dropped after {} ms (bound 600 ms)",
        took.as_millis()
    );
    assert_eq!(
        by_reason(&after, lost, &battle, "heartbeat"),
        1.0,
        "{after:?}"
    );
    assert!(
        took >= Duration::from_millis(400),
        "dropped after {took:?}: before two heartbeats could be missed"
    );
    assert!(
        took < Duration::from_millis(1800),
        "dropped after {took:?}: not within the READY timeout (600 ms) and its slack"
    );

    let back = wait_stats(&client.metrics, "the resumed lobby linked again", |s| {
        total(s, "dms_peers_up_total", lobby) >= 2.0 && total(s, "dms_peers_ready", lobby) >= 1.0
    });
    assert!(total(&back, lost, lobby) >= 1.0, "{back:?}");
}

/// F2 with a real signal, five rounds: a responder process frozen with SIGSTOP (its
/// socket open) is declared dead by its requester within [0.6, 2] × the heartbeat bound
/// (200 ms × 3 = 600 ms), counted `heartbeat`; resumed (SIGCONT), it is linked again
/// within the redial delay's upper bound (5 s) plus a second, and the resumed responder
/// mostly takes the requester's DISCONNECT waiting in its socket rather than a stale
/// verdict of its own (it was frozen about as long as its liveness bound). The detection times of the
/// rounds are printed (the distribution in docs/RELIABILITY.md).
#[cfg(feature = "etcd")]
#[test]
fn a_frozen_responder_is_declared_dead_within_the_bound_and_rejoins_when_resumed() {
    const ROUNDS: u32 = 5;
    let (_etcd, battle, server, client) = linked_pair();
    let lobby = LOBBY;
    wait_stats(&client.metrics, "the lobby's session with battle-1", |s| {
        total(s, "dms_peers_ready", lobby) >= 1.0
    });
    let signal = |sig: &str| send_signal(&server, sig);
    let lost = "dms_peers_lost_total";
    let (mut detected, mut rejoined, mut others) = (Vec::new(), Vec::new(), Vec::new());
    // `others`: the lobby's losses by any other reason so far.
    for round in 1..=ROUNDS {
        let ups = total(&stats_json(&client.metrics), "dms_peers_up_total", lobby);
        signal("-STOP");
        let frozen = Instant::now();
        let after = wait_stats(&client.metrics, "the lobby declaring battle-1 dead", |s| {
            by_reason(s, lost, lobby, "heartbeat") >= f64::from(round)
        });
        let took = frozen.elapsed();
        signal("-CONT");
        let resumed = Instant::now();
        let reasons: Vec<_> = after
            .iter()
            .filter(|s| s["name"] == lost && s["labels"]["node"] == lobby)
            .map(|s| (s["labels"]["reason"].clone(), s["value"].clone()))
            .collect();
        // Each freeze is one loss by heartbeat. (Under load a redial after a resume was
        // seen to cost one more session, lost `link_down`, in 1 of 5 runs: not asserted
        // here, printed, and open in docs/RELIABILITY.md F2.)
        assert_eq!(
            by_reason(&after, lost, lobby, "heartbeat"),
            f64::from(round),
            "round {round}: {reasons:?}"
        );
        others = reasons
            .into_iter()
            .filter(|(reason, n)| reason != "heartbeat" && n.as_f64() != Some(0.0))
            .collect();
        assert!(
            took >= Duration::from_millis(360) && took < Duration::from_millis(1200),
            "round {round}: declared dead after {took:?}, the bound is 600 ms"
        );
        wait_stats(&client.metrics, "battle-1 linked again", |s| {
            total(s, "dms_peers_up_total", lobby) > ups && total(s, "dms_peers_ready", lobby) >= 1.0
        });
        let back = resumed.elapsed();
        assert!(
            back < Duration::from_secs(6),
            "round {round}: linked again after {back:?}"
        );
        detected.push(took.as_millis());
        rejoined.push(back.as_millis());
    }
    // The resumed responder reads its requester's DISCONNECT before judging the silence
    // of the old session: it condemns the requester by a stale heartbeat verdict in no
    // round when the machine is quiet, in one of five under a CI run's load (a late tick
    // lets the link tasks run once; under load they may not have read yet), and did in
    // four or five of five before it took the input first.
    let at_server = stats_json(&server.metrics);
    let (stale, told) = (
        by_reason(&at_server, lost, &battle, "heartbeat"),
        by_reason(&at_server, lost, &battle, "disconnected"),
    );
    assert!(
        stale <= 2.0,
        "stale verdicts at the resumed responder in {stale} of {ROUNDS} rounds"
    );
    assert!(
        stale + told >= f64::from(ROUNDS),
        "{told} sessions ended by DISCONNECT, {stale} by heartbeat"
    );
    println!(
        "F2: a SIGSTOPped responder declared dead after {detected:?} ms (bound 600 ms), linked again {rejoined:?} ms after SIGCONT; other losses {others:?}"
    );
}
