//! B7: duplicate identities racing (`docs/RELIABILITY.md` B7, `zeromq/libzmq` PR #3225),
//! over real loopback sockets against one `TcpMiddleware`.
//!
//! 1,000 dialling middlewares under 10 identities (100 contenders each), their tasks
//! released together by a barrier, connect at once. Once every connection has an outcome
//! at the listener: exactly one link per identity is live, the 990 others were refused
//! with the typed `DuplicateIdentity` of their own identity and counted, no connection
//! failed or was evicted for any other reason, and the peers the middleware reports are
//! exactly the 10 identities. Each dialler agrees: the one the listener kept receives a
//! message sent to its identity, every other sees its link refused with the listener's
//! "duplicate identity". The winners then close; the map empties (10 `LinkDown`) and the
//! next run races again under the same identities, three runs in all, the second and
//! third with each dialler's start spread over 0-5 ms.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![allow(clippy::print_stdout)] // the measured figures are reported

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dms_core::{
    Endpoint, Incoming, LinkDownCause, MessageMiddleware, MiddlewareError, Multipart, PeerId,
};
use dms_test_support::wait::{next, within};
use dms_transport_tcp::{TcpConfig, TcpMiddleware};
use tokio::sync::Barrier;

const CONNECTIONS: usize = 1000;
const IDENTITIES: usize = 10;
const RUNS: usize = 3;

fn id(name: &str) -> PeerId {
    PeerId::new(Bytes::copy_from_slice(name.as_bytes())).unwrap()
}

fn identity(i: usize) -> String {
    format!("racer-{}", i % IDENTITIES)
}

/// What a dialler saw after its connect.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Its link stayed up: the listener's message reached it.
    Kept,
    /// Refused by the listener with this reason.
    Refused(String),
}

/// A dialler's life: wait for the others, (optionally) a spread-out start, connect, then
/// either the listener's message (kept) or the refusal (refused). Returns its middleware
/// too, so a kept link stays up until the run is over.
async fn dial(
    i: usize,
    endpoint: Endpoint,
    start: Arc<Barrier>,
    spread: bool,
) -> (usize, TcpMiddleware, Outcome) {
    let client = TcpMiddleware::new(
        TcpConfig::builder()
            .identity(identity(i))
            .redial(false)
            .build()
            .unwrap(),
    );
    start.wait().await;
    if spread {
        // Input shaping, not a wait for anything: dialler i starts (i × 7,919 mod 5,000) µs
        // after the barrier.
        tokio::time::sleep(Duration::from_micros((i as u64 * 7919) % 5000)).await;
    }
    let server = within("connect", client.connect(&endpoint))
        .await
        .unwrap_or_else(|error| panic!("dialler {i}: connect failed: {error}"));
    assert_eq!(server, id("server"));
    let outcome = loop {
        match next(&client).await {
            Incoming::LinkUp { .. } => {}
            Incoming::Message(msg) => {
                assert_eq!(&msg[1][..], identity(i).as_bytes(), "dialler {i}");
                break Outcome::Kept;
            }
            Incoming::LinkDown {
                cause: LinkDownCause::Refused(reason),
                ..
            } => break Outcome::Refused(reason),
            other => panic!("dialler {i}: {other:?}"),
        }
    };
    (i, client, outcome)
}

/// One race of `CONNECTIONS` diallers; returns how long the listener took to settle.
async fn race(server: &TcpMiddleware, endpoint: &Endpoint, run: usize) -> Duration {
    let spread = run > 0;
    let start = Arc::new(Barrier::new(CONNECTIONS + 1));
    let diallers: Vec<_> = (0..CONNECTIONS)
        .map(|i| tokio::spawn(dial(i, endpoint.clone(), start.clone(), spread)))
        .collect();
    let before = server.stats();
    start.wait().await;
    let released = Instant::now();

    // The listener's view, until every connection has an outcome.
    let mut kept: BTreeMap<PeerId, usize> = BTreeMap::new();
    let mut refused: BTreeMap<PeerId, usize> = BTreeMap::new();
    let mut other_refusals = Vec::new();
    let mut outcomes = 0;
    while outcomes < CONNECTIONS {
        match next(server).await {
            Incoming::LinkUp { peer, .. } => *kept.entry(peer).or_default() += 1,
            Incoming::Refused { error, .. } => match &*error {
                MiddlewareError::DuplicateIdentity(peer) => {
                    *refused.entry(peer.clone()).or_default() += 1;
                }
                _ => other_refusals.push(error.to_string()),
            },
            other => panic!("run {run}: the listener saw {other:?}"),
        }
        outcomes += 1;
    }
    let settled = released.elapsed();

    let identities: BTreeSet<PeerId> = (0..IDENTITIES).map(|i| id(&identity(i))).collect();
    assert_eq!(other_refusals, Vec::<String>::new(), "run {run}");
    assert_eq!(
        kept,
        identities.iter().map(|p| (p.clone(), 1)).collect(),
        "run {run}: exactly one link per identity"
    );
    let contenders = CONNECTIONS / IDENTITIES;
    assert_eq!(
        refused,
        identities
            .iter()
            .map(|p| (p.clone(), contenders - 1))
            .collect(),
        "run {run}: every other contender refused as a duplicate of its own identity"
    );
    let peers: BTreeSet<PeerId> = server.peers().into_iter().collect();
    assert_eq!(peers, identities, "run {run}: the identity map");
    let stats = server.stats();
    let delta = |now: u64, then: u64| now - then;
    assert_eq!(
        delta(stats.duplicate_identities, before.duplicate_identities),
        (CONNECTIONS - IDENTITIES) as u64,
        "run {run}"
    );
    assert_eq!(
        delta(stats.links_up, before.links_up),
        IDENTITIES as u64,
        "run {run}"
    );
    assert_eq!(stats.handshake_failures, 0, "run {run}");
    assert_eq!(stats.handshakes_evicted, 0, "run {run}");
    assert_eq!(stats.peer_limit_refusals, 0, "run {run}");
    assert_eq!(stats.events_dropped, 0, "run {run}");

    // Each dialler agrees with the listener.
    for peer in &identities {
        server
            .send(Multipart::from_frames([peer.to_frame(), peer.to_frame()]))
            .await
            .unwrap();
    }
    let mut winners: BTreeMap<String, usize> = BTreeMap::new();
    let mut losers: BTreeMap<String, usize> = BTreeMap::new();
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for dialler in diallers {
        // A panicking dialler fails the test here.
        let (i, client, outcome) = within("a dialler", dialler).await.unwrap();
        match outcome {
            Outcome::Kept => *winners.entry(identity(i)).or_default() += 1,
            Outcome::Refused(reason) => {
                assert_eq!(reason, "duplicate identity", "dialler {i}");
                *losers.entry(identity(i)).or_default() += 1;
            }
        }
        clients.push(client);
    }
    let names: BTreeSet<String> = (0..IDENTITIES).map(identity).collect();
    assert_eq!(
        winners,
        names.iter().map(|n| (n.clone(), 1)).collect(),
        "run {run}: one dialler kept per identity"
    );
    assert_eq!(
        losers,
        names.iter().map(|n| (n.clone(), contenders - 1)).collect(),
        "run {run}: the others refused"
    );

    // The winners go: the map empties.
    drop(clients);
    let mut gone = BTreeSet::new();
    while gone.len() < IDENTITIES {
        match next(server).await {
            Incoming::LinkDown { peer, .. } => assert!(gone.insert(peer), "run {run}"),
            other => panic!("run {run}: {other:?} while the winners closed"),
        }
    }
    assert_eq!(gone, identities, "run {run}");
    settled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_handshakes_under_few_identities_leave_one_link_each_and_a_consistent_map() {
    let server = TcpMiddleware::new(
        TcpConfig::builder()
            .identity("server")
            .max_handshakes(CONNECTIONS)
            .max_peers(CONNECTIONS)
            .inbound_queue(4 * CONNECTIONS)
            .build()
            .unwrap(),
    );
    let endpoint = server
        .bind(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut settled = Vec::new();
    for run in 0..RUNS {
        settled.push(race(&server, &endpoint, run).await);
    }
    let stats = server.stats();
    assert_eq!(
        stats.duplicate_identities,
        (RUNS * (CONNECTIONS - IDENTITIES)) as u64
    );
    assert_eq!(stats.links_up, (RUNS * IDENTITIES) as u64);
    assert_eq!(stats.links_down, (RUNS * IDENTITIES) as u64);
    println!(
        "B7 {RUNS} runs of {CONNECTIONS} racing handshakes under {IDENTITIES} identities: \
         {IDENTITIES} kept and {} refused as duplicates each run, listener settled after \
         {settled:?}",
        CONNECTIONS - IDENTITIES
    );
}
