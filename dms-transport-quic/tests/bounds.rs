//! Handshake bounds: a listener that asks every unvalidated client for a Retry round trip
//! still links it (and counts the Retry), and one that allows no unfinished handshake
//! refuses at once instead of holding state.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use dms_core::{MessageMiddleware, Multipart};
use dms_test_support::wait::{message, within};
use support::{node, server};

#[tokio::test]
async fn retry_validates_the_address_then_links() {
    let dir = tempfile::tempdir().unwrap();
    let (server, endpoint) = server(dir.path(), "retrying", |b| b.retry_above(0)).await;
    let client = node(dir.path(), "client", |b| b);
    let peer = within("connect through a Retry", client.connect(&endpoint))
        .await
        .unwrap();
    client
        .send(Multipart::from_frames([
            peer.to_frame(),
            "after retry".into(),
        ]))
        .await
        .unwrap();
    assert_eq!(&message(&server).await[1][..], b"after retry");
    assert!(
        server.stats().retries >= 1,
        "the listener sent a Retry first: {:?}",
        server.stats()
    );
}

#[tokio::test]
async fn handshakes_beyond_the_bound_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // One unfinished handshake at most: eight clients dialling at once find it taken and
    // are refused at once (no connection state kept for them); the bound frees up after.
    let (server, endpoint) = server(dir.path(), "bounded", |b| b.max_handshakes(1)).await;
    let mut dials = tokio::task::JoinSet::new();
    for i in 0..8 {
        let client = node(dir.path(), &format!("c{i}"), |b| b);
        let endpoint = endpoint.clone();
        dials.spawn(async move {
            let result = client.connect(&endpoint).await;
            (client, result)
        });
    }
    let results = within("eight concurrent connects", dials.join_all()).await;
    let linked = results.iter().filter(|(_, r)| r.is_ok()).count();
    let stats = server.stats();
    assert!(linked >= 1, "a handshake within the bound links");
    let errors: Vec<String> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err().map(ToString::to_string))
        .collect();
    assert!(
        linked < 8 && stats.handshakes_refused >= 1,
        "handshakes beyond the bound are refused: {linked} linked, {stats:?}"
    );
    // Refused at once, not left to time out.
    assert!(
        errors.iter().all(|e| e.contains("refused")),
        "every failed dial was refused: {errors:?}"
    );
    let late = node(dir.path(), "late", |b| b);
    let peer = within("connect once the bound is free", late.connect(&endpoint))
        .await
        .unwrap();
    late.send(Multipart::from_frames([peer.to_frame(), "fits".into()]))
        .await
        .unwrap();
    loop {
        let msg = message(&server).await;
        if &msg[1][..] == b"fits" {
            break;
        }
    }
}
