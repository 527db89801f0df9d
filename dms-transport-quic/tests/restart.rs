//! Reconnecting after the peer's PROCESS restarts: the test binary runs itself as a child
//! echo server, kills it with SIGKILL (no CONNECTION_CLOSE goes out), sees the link go
//! down from QUIC's idle timeout, starts the child again on the same port and connects.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dms_core::{Incoming, MessageMiddleware};
use dms_test_support::wait::{link_up, next, within};
use support::{endpoint, round_trip_echo};

/// Set in the child's environment: `<port> <certificate dir>`.
const CHILD_ENV: &str = "DMS_QUIC_RESTART_CHILD";

/// The child: a QUIC echo server on the port and with the certificates its parent named.
/// Not a test of its own (ignored): the parent runs it with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process, run by `reconnects_after_the_peer_process_restarts` with --ignored"]
#[allow(clippy::print_stdout)] // the READY line is how the parent learns the port
async fn child_echo_server() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (port, dir) = spec.split_once(' ').unwrap();
    let server = support::node(Path::new(dir), "echo", |b| b);
    let bound = server
        .bind(&format!("quic://127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    let addr = support::addr(&bound);
    println!("READY {}", addr.port());
    loop {
        if let Incoming::Message(msg) = server.recv().await.unwrap() {
            server.send(msg).await.unwrap();
        }
    }
}

/// A running child; killed (and reaped) when dropped, so a failing test leaves none.
struct ChildGuard {
    child: Child,
    addr: SocketAddr,
}

impl ChildGuard {
    /// Starts the child echo server on `port` (0: any) and waits for its READY line.
    fn start(port: u16, dir: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_echo_server",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{port} {}", dir.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut guard = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        // Read the READY line on a thread, so a child that never says it cannot hang us.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                // The harness may have written "test child_echo_server ... " before it.
                if let Some((_, port)) = line.split_once("READY ") {
                    let _ = tx.send(port.trim().parse::<u16>().unwrap());
                    break;
                }
            }
            // Keep draining, so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the child echo server did not say READY");
        guard.addr.set_port(port);
        guard
    }

    /// SIGKILL: the process dies without closing its connections.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_peer_process_restarts() {
    let dir = tempfile::tempdir().unwrap();
    // Create the CA and the server's certificate once, before any child races for them.
    support::tls(dir.path(), "echo");
    let mut child = ChildGuard::start(0, dir.path());
    let server_endpoint = endpoint(child.addr);

    let client = support::node(dir.path(), "client", |b| {
        b.liveness(Duration::from_millis(100), 3)
    });
    let server_id = within("connect", client.connect(&server_endpoint))
        .await
        .unwrap();
    link_up(&client).await;
    round_trip_echo(&client, &server_id, "before").await;

    child.kill();
    let killed = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(2), client.recv()).await {
            Ok(Ok(Incoming::LinkDown { peer, cause, .. })) => {
                assert_eq!(peer, server_id);
                eprintln!("restart: LinkDown after {:?}: {cause}", killed.elapsed());
                break;
            }
            Ok(Ok(Incoming::Message(msg))) => panic!("message {msg:?} from a dead peer"),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => panic!("client failed: {error}"),
            Err(_) => panic!("no LinkDown within 2 s of SIGKILL"),
        }
    }
    assert!(killed.elapsed() < Duration::from_secs(2));
    // The same server, restarted on the same port.
    let port = child.addr.port();
    drop(child);
    let child = ChildGuard::start(port, dir.path());
    assert_eq!(child.addr, support::addr(&server_endpoint));
    let again = within(
        "connect after the restart",
        client.connect(&server_endpoint),
    )
    .await
    .unwrap();
    assert_eq!(again, server_id);
    loop {
        if let Incoming::LinkUp { peer, .. } = next(&client).await {
            assert_eq!(peer, server_id);
            break;
        }
    }
    round_trip_echo(&client, &server_id, "after").await;
    drop(child);
}
