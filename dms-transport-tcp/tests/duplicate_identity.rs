//! F13: a duplicate identity (`docs/RELIABILITY.md` F13, `zeromq/libzmq#4503`), over real
//! loopback sockets.
//!
//! A dialler connects under an identity that already has a live link at the listener,
//! 20 times in a row: each time the dialler is told why (its link ends with
//! `LinkDownCause::Refused("duplicate identity")`, the listener's ZMTP ERROR) and the
//! listener reports the typed `DuplicateIdentity`, both at once: the median time from
//! `connect` to the dialler's refusal is under 100 ms and none waits for the 5 s
//! handshake timeout (no hang). The live link is untouched throughout, and once it closes
//! the identity is accepted again at the next attempt (a restarted peer is let in as
//! soon as the old link is gone).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![allow(clippy::print_stdout)] // the measured figures are reported

use std::time::{Duration, Instant};

use bytes::Bytes;
use dms_core::{Incoming, LinkDownCause, MessageMiddleware, MiddlewareError, Multipart, PeerId};
use dms_test_support::wait::{link_down, message, next, within};
use dms_transport_tcp::{TcpConfig, TcpMiddleware};

const ATTEMPTS: usize = 20;

fn id(name: &str) -> PeerId {
    PeerId::new(Bytes::copy_from_slice(name.as_bytes())).unwrap()
}

fn middleware(identity: &'static str) -> TcpMiddleware {
    TcpMiddleware::new(
        TcpConfig::builder()
            .identity(identity)
            .redial(false)
            .build()
            .unwrap(),
    )
}

/// The next event of `m` that is not a `LinkUp`.
async fn next_but_link_up(m: &TcpMiddleware) -> Incoming {
    loop {
        match next(m).await {
            Incoming::LinkUp { .. } => {}
            other => return other,
        }
    }
}

#[tokio::test]
async fn a_duplicate_identity_is_refused_at_once_and_let_in_once_the_old_link_is_gone() {
    let server = middleware("server");
    let endpoint = within("bind", server.bind(&"tcp://127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let first = middleware("twin");
    within("first connect", first.connect(&endpoint))
        .await
        .unwrap();
    match within("the first link", next(&server)).await {
        Incoming::LinkUp { peer, .. } => assert_eq!(peer, id("twin")),
        other => panic!("{other:?}"),
    }

    let mut took = Vec::with_capacity(ATTEMPTS);
    for attempt in 0..ATTEMPTS {
        let twin = middleware("twin");
        let started = Instant::now();
        // The TCP connect and the greeting succeed; the refusal comes at the handshake.
        let _ = within("duplicate connect", twin.connect(&endpoint)).await;
        match within("the dialler's refusal", next_but_link_up(&twin)).await {
            Incoming::LinkDown {
                cause: LinkDownCause::Refused(reason),
                ..
            } => assert!(
                reason.contains("duplicate identity"),
                "attempt {attempt}: refused for {reason:?}"
            ),
            other => panic!("attempt {attempt}: the dialler saw {other:?}"),
        }
        took.push(started.elapsed());
        match within("the listener's refusal", next(&server)).await {
            Incoming::Refused { error, .. } => assert!(
                matches!(&*error, MiddlewareError::DuplicateIdentity(peer) if *peer == id("twin")),
                "attempt {attempt}: {error}"
            ),
            other => panic!("attempt {attempt}: the listener saw {other:?}"),
        }
    }
    took.sort();
    let (median, max) = (took[ATTEMPTS / 2], took[ATTEMPTS - 1]);
    println!(
        "F13: {ATTEMPTS} duplicates refused, dialler told after median {} µs, max {} µs",
        median.as_micros(),
        max.as_micros()
    );
    assert!(median < Duration::from_millis(100), "median {median:?}");
    assert!(
        max < Duration::from_secs(2),
        "a refusal took {max:?}: it waited for something (the handshake timeout is 5 s)"
    );
    assert_eq!(
        server.stats().duplicate_identities,
        ATTEMPTS as u64,
        "{:?}",
        server.stats()
    );

    // The live link still carries messages both ways.
    server
        .send(Multipart::from_frames([
            id("twin").to_frame(),
            Bytes::from_static(b"still you"),
        ]))
        .await
        .unwrap();
    let got = within("the first link's message", message(&first)).await;
    assert_eq!(&got[1][..], b"still you");

    // Once it is gone, the identity is let in again at once.
    first.close();
    let (gone, _) = within("the old link down", link_down(&server)).await;
    assert_eq!(gone, id("twin"));
    let restarted = middleware("twin");
    within("the restarted peer's connect", restarted.connect(&endpoint))
        .await
        .unwrap();
    match within("the restarted peer's link", next(&server)).await {
        Incoming::LinkUp { peer, .. } => assert_eq!(peer, id("twin")),
        other => panic!("the restarted peer was not let in: {other:?}"),
    }
    restarted
        .send(Multipart::from_frames([
            id("server").to_frame(),
            Bytes::from_static(b"back"),
        ]))
        .await
        .unwrap();
    let got = within("the restarted peer's message", message(&server)).await;
    assert_eq!(got[0], id("twin").to_frame());
    assert_eq!(&got[1][..], b"back");
}
