//! The DMS protocol as documented: a peer written in Python from `docs/PROTOCOL.md` alone
//! (`py/dms_peer.py`) talks to a real DMS node. It is given the node's discovery record
//! (the value under the node's path, §8), decodes it and dials the endpoint it names; it
//! probes with READY, heartbeats, sends a request, answers one from the node, gets a
//! version-2 frame refused on a second link, and says DISCONNECT; the node must see all
//! of it as a well-behaved peer. (The script also checks the golden vectors of §8 — record,
//! bucket key, dispatch hash — with its own implementation of the document.)
//!
//! Needs `python3` with pyzmq (the README's test command installs it); `DMS_PYTHON` picks
//! another interpreter.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Stdio;

use dms::registration::{Registration, instance_key};
use dms::{Discovery, MemoryDiscovery, Multipart, Node, NodeEvent, ServicePath};
use dms_core::Role;
use dms_test_support::wait::within;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

const NODE: &str = "/demo/cn/android/w1/g1/Battle/battle-1";
const PY_1: &str = "/demo/cn/android/w1/g1/Lobby/py-1";
/// The detail of the Python peer's final DISCONNECT.
const BYE: &str = "py-1 done";

fn python(node: &str, record_hex: &str) -> Child {
    let interpreter = std::env::var("DMS_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/dms_peer.py");
    Command::new(interpreter)
        .arg(script)
        .args([node, record_hex])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs (install pyzmq: see README)")
}

/// Echoes the child's stdout to the test's output as it comes, and collects it.
fn collect_stdout(child: &mut Child) -> JoinHandle<Vec<String>> {
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    tokio::spawn(async move {
        let mut out = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("dms_peer.py: {line}");
            out.push(line);
        }
        out
    })
}

/// Answers every request with its payload frames plus one frame naming the node.
fn serve(node: Node) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(request) = node.next_request().await {
            let mut body = request.body().clone();
            body.push(node.path().to_string());
            let _ = request.reply(body).await;
        }
    })
}

/// The next event about `path`, skipping the others.
async fn event_of(events: &mut broadcast::Receiver<NodeEvent>, path: &ServicePath) -> NodeEvent {
    within(&format!("an event of {path}"), async {
        loop {
            match events.recv().await.expect("event stream") {
                NodeEvent::PeerUp { path: p, .. } | NodeEvent::PeerDown { path: p, .. }
                    if p != *path => {}
                event @ (NodeEvent::PeerUp { .. } | NodeEvent::PeerDown { .. }) => return event,
                // Other events (routing table changes...) say nothing of this peer.
                _ => {}
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_peer_from_the_protocol_document() {
    let discovery = MemoryDiscovery::new();
    let node = Node::builder(NODE.parse().unwrap())
        .discovery(discovery.clone())
        .start()
        .await
        .expect("node starts");
    // What a tool reads from discovery: the record under the node's path (§8.1).
    let record = discovery
        .get(&instance_key(node.path()).unwrap())
        .await
        .unwrap()
        .entry
        .expect("the node's record")
        .value;
    let decoded = Registration::decode(&record).expect("a valid record");
    let record_hex: String = record.iter().map(|b| format!("{b:02x}")).collect();
    let mut events = node.events();
    let server = serve(node.clone());
    let py: ServicePath = PY_1.parse().unwrap();

    let mut child = python(node.path().as_str(), &record_hex);
    let stdout = collect_stdout(&mut child);

    match event_of(&mut events, &py).await {
        NodeEvent::PeerUp { role, .. } => assert_eq!(role, Role::Acceptor),
        other => panic!("expected PeerUp of {py}, got {other:?}"),
    }

    let reply = within(
        "the Python peer's reply",
        node.request_instance(&py, Multipart::from_frames(["from-dms"])),
    )
    .await
    .expect("the Python peer answers");
    assert_eq!(reply.from, py);
    assert_eq!(reply.body, Multipart::from_frames(["pong-from-python"]));

    match event_of(&mut events, &py).await {
        NodeEvent::PeerDown { reason, .. } => {
            assert!(reason.contains(BYE), "PeerDown reason: {reason}");
        }
        other => panic!("expected PeerDown of {py}, got {other:?}"),
    }

    let status = within("the Python peer to exit", child.wait())
        .await
        .expect("wait");
    let out = within("the Python peer's output", stdout)
        .await
        .expect("stdout task");
    assert!(status.success(), "Python peer failed: {status}\n{out:#?}");
    assert_eq!(out.last().map(String::as_str), Some("ok"), "{out:#?}");
    let expected = format!(
        "0 record of {NODE}: bucket {}, endpoints {:?}, dialling {}",
        decoded.bucket,
        decoded.endpoints,
        node.endpoints()[0]
    );
    assert_eq!(
        out.first().map(|line| line.replace('\'', "\"")),
        Some(expected),
        "the record as Python decoded it"
    );

    node.shutdown().await;
    within("the handler to stop", server).await.unwrap();
}
