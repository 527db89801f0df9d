//! `dms node --metrics ADDR` and `dms stats ADDR` as processes: the node prints the bound
//! metrics address with its endpoints, serves the kernel's figures in the Prometheus text
//! format, `dms stats` reads them (table and JSON), the figures move with traffic (over
//! a real etcd), and a busy metrics address or an endpoint that is not a metrics server
//! fails with a clear error and a non-zero exit. (Nodes sent signals: `signals.rs`.)
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use support::{DEADLINE, count, dms, run, start_node, stats_json, stderr_of, total};

const CLUSTER: &str = "/mt/cn/linux/w1/g1/Battle";

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
