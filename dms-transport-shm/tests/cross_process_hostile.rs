//! A hostile process against an honest middleware (this process): `shm-peer hostile`
//! does the rendezvous by hand from the documented protocol, then sends bad hellos, or
//! breaks the rings (absurd positions, garbage, random scribbles over headers and data).
//! This process stays up, every bad link ends with a typed error and is counted, and a
//! good client is still served afterwards.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::io::ErrorKind;
use std::time::Duration;

use bytes::Bytes;
use dms_core::{Endpoint, Incoming, LinkDownCause, MessageMiddleware, Multipart, PeerId};
use dms_transport_shm::{ShmConfig, ShmMiddleware};
use support::{Peer, numbered};

const PROMPT: Duration = Duration::from_secs(3);

async fn honest() -> (ShmMiddleware, String, Endpoint) {
    let shm = ShmMiddleware::new(ShmConfig::builder().identity("honest").build().unwrap());
    let name = support::unique("hostile");
    let endpoint = shm
        .bind(&format!("shm://{name}").parse().unwrap())
        .await
        .unwrap();
    (shm, name, endpoint)
}

/// A good client from another process still gets its messages through.
async fn a_good_client_is_served(shm: &ShmMiddleware, endpoint: &Endpoint) {
    let mut good = Peer::spawn(&["send", &endpoint.to_string(), "20", "9", "1", "70000"]);
    let mut next = 0;
    let peer = support::event(shm, Duration::from_secs(10), "good client", |e| match e {
        Incoming::Message(m) => {
            if let Some(count) = numbered::end_count(&m.frames()[1..]) {
                assert_eq!(count, next);
                return Some(m.frames()[0].clone());
            }
            assert_eq!(numbered::verify(&m.frames()[1..]), Ok(next));
            next += 1;
            None
        }
        _ => None,
    })
    .await;
    shm.send(Multipart::from_frames([
        peer,
        Bytes::from_static(numbered::ACK),
    ]))
    .await
    .unwrap();
    good.expect("ACKED", Duration::from_secs(10)).await;
    assert_eq!(good.wait(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_hellos_are_refused_counted_and_the_server_goes_on() {
    let (shm, name, endpoint) = honest().await;
    // (case, the status answered: 1 bad hello, 2 bad capacity, 3 bad memory; none: the
    // acceptor closes without an answer)
    let cases = [
        ("bad-magic", "1"),
        ("bad-version", "1"),
        ("no-fds", "1"),
        ("one-fd", "1"),
        ("three-fds", "1"),
        ("bad-capacity", "2"),
        ("huge-capacity", "2"),
        ("unsealed", "3"),
        ("wrong-size", "3"),
        ("write-sealed", "3"),
        ("not-a-socket", "3"),
        ("dgram-socket", "3"),
        ("short-hello", "eof"),
    ];
    for (n, (case, status)) in cases.iter().enumerate() {
        let mut hostile = Peer::spawn(&["hostile", &name, case, "1"]);
        let answer = hostile.expect("ANSWER", Duration::from_secs(10)).await;
        assert_eq!(answer, *status, "{case}: {:?}", hostile.log);
        assert_eq!(hostile.wait(Duration::from_secs(10)).await, Some(0));
        let refused = support::event(&shm, PROMPT, case, |e| match e {
            Incoming::Refused { error, .. } => Some(error.to_string()),
            _ => None,
        })
        .await;
        support::eventually(PROMPT, case, || shm.stats().setup_failures == n as u64 + 1).await;
        assert!(shm.peers().is_empty(), "{case}: {refused}");
    }
    let stats = shm.stats();
    assert_eq!(stats.setup_failures, cases.len() as u64);
    assert_eq!(stats.links.links_up, 0);
    a_good_client_is_served(&shm, &endpoint).await;
}

/// Runs the ring attack `case`; returns how the honest link ended.
async fn attack(shm: &ShmMiddleware, name: &str, case: &str, seed: u64) -> LinkDownCause {
    let mut hostile = Peer::spawn(&["hostile", name, case, &seed.to_string()]);
    hostile.expect("HANDSHAKEN", Duration::from_secs(10)).await;
    let peer: PeerId = support::event(shm, PROMPT, "LinkUp", |e| match e {
        Incoming::LinkUp { peer, .. } => Some(peer.clone()),
        _ => None,
    })
    .await;
    assert!(peer.to_string().starts_with("hostile-"), "{peer}");
    hostile.say("GO").await;
    // Keep writing to it, so that our writer reads its (broken) positions too.
    let writer = {
        let shm = shm.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            for i in 0u32.. {
                let msg = Multipart::from_frames([peer.to_frame(), Bytes::from(vec![7; 999])]);
                if matches!(
                    shm.try_send(msg),
                    Err(dms_core::SendError::UnknownPeer { .. })
                ) {
                    return i;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            unreachable!()
        })
    };
    let cause = support::event(shm, Duration::from_secs(5), case, |e| match e {
        Incoming::LinkDown { peer: p, cause, .. } if *p == peer => Some(cause.clone()),
        Incoming::Message(m) if m[0] == peer.to_frame() => None, // garbage that parsed
        _ => None,
    })
    .await;
    support::within(PROMPT, "writer stops", writer)
        .await
        .unwrap();
    hostile.expect("CLOSED", Duration::from_secs(10)).await;
    assert_eq!(hostile.wait(Duration::from_secs(10)).await, Some(0));
    cause
}

fn invalid_data(cause: &LinkDownCause) -> bool {
    matches!(cause, LinkDownCause::Io(e) if e.kind() == ErrorKind::InvalidData)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_breaks_the_rings_costs_its_link_only() {
    let (shm, name, endpoint) = honest().await;

    let cause = attack(&shm, &name, "absurd-tail", 1).await;
    assert!(invalid_data(&cause), "absurd tail: {cause}");
    assert_eq!(shm.stats().corrupt_rings, 1);

    let cause = attack(&shm, &name, "absurd-head", 2).await;
    assert!(invalid_data(&cause), "absurd head: {cause}");
    assert_eq!(shm.stats().corrupt_rings, 2);

    let cause = attack(&shm, &name, "garbage", 3).await;
    assert!(
        matches!(cause, LinkDownCause::Protocol(_)),
        "garbage: {cause}"
    );
    assert_eq!(shm.stats().links.protocol_errors, 1);

    // Random scribbles over headers and data, absurd and plausible positions, flags.
    let before = shm.stats();
    let rounds = 12;
    for seed in 0..rounds {
        let cause = attack(&shm, &name, "chaos", 100 + seed).await;
        assert!(
            matches!(
                cause,
                LinkDownCause::Io(_) | LinkDownCause::Protocol(_) | LinkDownCause::ClosedByPeer
            ),
            "chaos {seed}: {cause}"
        );
    }
    let after = shm.stats();
    assert_eq!(after.links.links_down - before.links.links_down, rounds);
    let typed = (after.corrupt_rings - before.corrupt_rings)
        + (after.links.protocol_errors - before.links.protocol_errors);
    assert!(
        typed > 0,
        "no chaos round was seen as corruption: {after:?}"
    );

    a_good_client_is_served(&shm, &endpoint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_breaks_the_rings_before_the_handshake_is_refused() {
    let (shm, name, endpoint) = honest().await;
    for seed in 0..5 {
        let mut hostile = Peer::spawn(&["hostile", &name, "chaos-early", &seed.to_string()]);
        hostile.expect("ATTACKED", Duration::from_secs(10)).await;
        let refused = support::event(&shm, Duration::from_secs(10), "Refused", |e| match e {
            Incoming::Refused { error, .. } => Some(error.to_string()),
            Incoming::LinkUp { peer, .. } => panic!("chaos made a link: {peer}"),
            _ => None,
        })
        .await;
        assert!(!refused.is_empty());
        hostile.expect("CLOSED", Duration::from_secs(10)).await;
        assert_eq!(hostile.wait(Duration::from_secs(10)).await, Some(0));
    }
    assert_eq!(shm.stats().links.handshake_failures, 5);
    a_good_client_is_served(&shm, &endpoint).await;
}
