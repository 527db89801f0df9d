//! Interop with real libzmq (pyzmq's bundled libzmq): a libzmq DEALER and a libzmq ROUTER
//! connect to a DMS endpoint, and DMS connects to a libzmq ROUTER. Each exchange carries
//! empty frames, LONG frames, a 4 MiB message and 10,000 numbered messages, both ways.
//!
//! Needs `python3` with pyzmq (the README's test command installs it); `DMS_PYTHON` picks
//! another interpreter.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Stdio;

use bytes::Bytes;
use dms_core::{Endpoint, MessageMiddleware, Multipart, PeerId};
use dms_test_support::wait::{link_up, message, within};
use dms_transport_tcp::{TcpConfig, TcpMiddleware};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The messages of `zmq_peer.py`'s `script()`.
fn script() -> Vec<Vec<Bytes>> {
    let mut out = vec![
        vec![Bytes::new()],
        vec![Bytes::new(), Bytes::new(), Bytes::from_static(b"x")],
        vec![Bytes::from(vec![b'a'; 256]), Bytes::from(vec![b'b'; 1000])],
        vec![(0..4u32 << 20).map(|i| (i % 251) as u8).collect()],
    ];
    out.extend((0..10_000u32).map(|i| vec![Bytes::copy_from_slice(&i.to_be_bytes())]));
    out
}

fn python(args: &[&str]) -> Child {
    let interpreter = std::env::var("DMS_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/zmq_peer.py");
    Command::new(interpreter)
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs (install pyzmq: see README)")
}

async fn finished_ok(child: Child) {
    let out = within("the libzmq peer to finish", child.wait_with_output())
        .await
        .expect("python output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "libzmq peer failed: {}\n{stdout}",
        out.status
    );
    assert_eq!(stdout.lines().last(), Some("ok"), "{stdout}");
}

fn server(identity: &str) -> TcpMiddleware {
    TcpMiddleware::new(
        TcpConfig::builder()
            .identity(identity.to_owned())
            .build()
            .unwrap(),
    )
}

/// Receives the whole script from `peer` and echoes each message back as it comes.
async fn check_and_echo(dms: &TcpMiddleware, peer: &PeerId) {
    for (n, frames) in script().into_iter().enumerate() {
        let msg = message(dms).await;
        assert_eq!(&msg[0], peer.as_bytes(), "message {n} sender");
        assert_eq!(&msg.frames()[1..], &frames[..], "message {n} content");
        dms.send(msg).await.expect("echo");
    }
}

async fn bound(dms: &TcpMiddleware) -> Endpoint {
    dms.bind(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libzmq_dealer_connects_to_dms() {
    let dms = server("dms-server");
    let endpoint = bound(&dms).await;
    let child = python(&["dealer", endpoint.as_str()]);
    let (peer, _) = link_up(&dms).await;
    assert_eq!(peer.to_string(), "py-dealer");
    check_and_echo(&dms, &peer).await;
    finished_ok(child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libzmq_router_connects_to_dms() {
    let dms = server("dms-server");
    let endpoint = bound(&dms).await;
    let child = python(&["router-connect", endpoint.as_str()]);
    let (peer, _) = link_up(&dms).await;
    assert_eq!(peer.to_string(), "py-router");
    check_and_echo(&dms, &peer).await;
    finished_ok(child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dms_connects_to_libzmq_router() {
    let mut child = python(&["router-bind"]);
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let port = within("the ROUTER's port", lines.next_line())
        .await
        .expect("read")
        .expect("a port line");
    let endpoint: Endpoint = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let dms = server("dms-client");
    let router = within("connect", dms.connect(&endpoint))
        .await
        .expect("connect");
    assert_eq!(router.to_string(), "py-router-bound");
    let sender = {
        let dms = dms.clone();
        let router = router.clone();
        tokio::spawn(async move {
            for frames in script() {
                let mut msg = Multipart::from_frames([router.to_frame()]);
                msg.extend(frames);
                dms.send(msg).await.expect("send to libzmq");
            }
        })
    };
    for (n, frames) in script().into_iter().enumerate() {
        let msg = message(&dms).await;
        assert_eq!(&msg[0], router.as_bytes(), "echo {n} sender");
        assert_eq!(&msg.frames()[1..], &frames[..], "echo {n} content");
    }
    within("sender", sender).await.expect("sender task");
    let mut rest = String::new();
    while let Some(line) = lines.next_line().await.expect("read") {
        rest.push_str(&line);
        rest.push('\n');
    }
    let status = within("the libzmq peer to exit", child.wait())
        .await
        .expect("wait");
    assert!(status.success(), "libzmq peer failed: {status}\n{rest}");
    assert!(rest.ends_with("ok\n"), "{rest}");
}
