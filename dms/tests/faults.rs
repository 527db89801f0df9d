//! FAULTS rows of `docs/RELIABILITY.md` over real TCP on loopback, with the fault proxy
//! of `dms-test-support` between nodes where the row needs the network to fail: F1 (a
//! crash with 100 requests in flight), F2 (a frozen responder's rejoin), F3 (half-open
//! link), F4 (a QUIC path gone dark, through the UDP fault proxy), F10 (partition of one
//! edge among three nodes), F12 (reconnect storm), F15 (graceful shutdown), F16 (paused
//! requester). In-memory discovery, the CI liveness profile: heartbeat 100 ms × 3, bound
//! B = 360 ms. Detection times are printed (`--nocapture`).
#![cfg(feature = "tcp")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use dms::{Endpoint, MemoryDiscovery, Multipart, Node, NodeEvent, RequestError, ServicePath};
use dms_test_support::metrics::recorder;
use dms_test_support::tcp_proxy::{TcpProxy, Way};
use dms_test_support::wait::within;
use support::{cluster, instance};
use tokio::sync::broadcast;
use tokio::time::Instant;

const IVL: Duration = Duration::from_millis(100);
const MISSED: u32 = 3;
/// B = missed × ivl + ivl/10 + 50 ms.
const BOUND: Duration = Duration::from_millis(360);
/// Never declared dead before (missed − 1) × ivl of silence.
const NOT_BEFORE: Duration = Duration::from_millis(200);
/// Slack on top of B for a loaded 2-core CI machine.
const SLACK: Duration = Duration::from_millis(720);
/// Redial delays of the nodes here (the cap bounds the reconnect after a heal).
const REDIAL: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

fn tcp(addr: SocketAddr) -> Endpoint {
    format!("tcp://{addr}").parse().unwrap()
}

/// A loopback port free now (a node binds it right after).
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Starts a node answering every request with its payload and its own path.
async fn echo(
    discovery: &MemoryDiscovery,
    path: ServicePath,
    configure: impl FnOnce(dms::NodeBuilder) -> dms::NodeBuilder,
) -> Node {
    recorder();
    let builder = Node::builder(path)
        .heartbeat(IVL, MISSED)
        .reconnect(REDIAL.0, REDIAL.1);
    let node = configure(builder)
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let server = node.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            let mut body = request.body().clone();
            body.push(server.path().to_string());
            let _ = request.reply(body).await;
        }
    });
    node
}

/// A node reached only through a fault proxy: it binds a port, the proxy forwards to it,
/// and the proxy's address is what it publishes.
async fn behind_proxy(
    discovery: &MemoryDiscovery,
    path: ServicePath,
    configure: impl FnOnce(dms::NodeBuilder) -> dms::NodeBuilder,
) -> (Node, TcpProxy) {
    let bound = free_port();
    let proxy = TcpProxy::start(bound);
    let advertised = tcp(proxy.local_addr());
    let node = echo(discovery, path, |b| {
        configure(b.bind(tcp(bound)).advertise(advertised))
    })
    .await;
    (node, proxy)
}

async fn ready(node: &Node, target: &str, count: usize) {
    within(
        &format!("{count} ready instance(s) of {target} at {}", node.path()),
        node.wait_for_instances(&cluster(target), count, Duration::from_secs(15)),
    )
    .await
    .unwrap();
}

async fn ask(node: &Node, target: &str) -> Result<dms::Reply, RequestError> {
    node.request_timeout(
        &cluster(target),
        "player-1",
        Multipart::from_frames(["ping"]),
        Duration::from_secs(2),
    )
    .await
}

/// An echo responder `{row}Battle/battle-1` and a requester `{row}Lobby/lobby-1`
/// targeting its cluster, linked and answered once.
async fn linked_pair(row: &str) -> (Node, Node) {
    let discovery = MemoryDiscovery::new();
    let battle = format!("{row}Battle");
    let server = echo(&discovery, instance(&battle, "battle-1"), |b| b).await;
    let client = echo(
        &discovery,
        instance(&format!("{row}Lobby"), "lobby-1"),
        |b| b.target(cluster(&battle)),
    )
    .await;
    ready(&client, &battle, 1).await;
    ask(&client, &battle).await.unwrap();
    (server, client)
}

/// Waits for `PeerDown` of `peer` on `events`; returns its reason.
async fn peer_down(events: &mut broadcast::Receiver<NodeEvent>, peer: &ServicePath) -> String {
    within(&format!("PeerDown of {peer}"), async {
        loop {
            match events.recv().await {
                Ok(NodeEvent::PeerDown { path, reason }) if &path == peer => return reason,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("events closed"),
            }
        }
    })
    .await
}

/// Every `PeerDown` already received on `events`, by peer.
fn downs_so_far(events: &mut broadcast::Receiver<NodeEvent>) -> Vec<ServicePath> {
    let mut downs = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let NodeEvent::PeerDown { path, .. } = event {
            downs.push(path);
        }
    }
    downs
}

fn assert_detected(who: &str, took: Duration) {
    eprintln!("{who}: declared dead {} ms after the cut", took.as_millis());
    assert!(
        took >= NOT_BEFORE,
        "{who} after {took:?}: before (missed − 1) × ivl of silence"
    );
    assert!(
        took <= BOUND + SLACK,
        "{who} after {took:?}: beyond B + slack"
    );
}

/// F3: a blackhole of both directions (no FIN, no RST: the kernel alone would wait 924 s)
/// is detected by heartbeats on both sides within B; after the heal the requester
/// reconnects and requests succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f3_a_half_open_link_is_detected_on_both_sides_and_heals() {
    let discovery = MemoryDiscovery::new();
    let server_path = instance("F3Battle", "battle-1");
    let (server, proxy) = behind_proxy(&discovery, server_path.clone(), |b| b).await;
    let client = echo(&discovery, instance("F3Lobby", "lobby-1"), |b| {
        b.target(cluster("F3Battle"))
    })
    .await;
    ready(&client, "F3Battle", 1).await;
    ask(&client, "F3Battle").await.unwrap();
    assert!(
        proxy.stats().accepted >= 1,
        "the link goes through the proxy"
    );

    cut_and_detected("F3", &client, &server, || {
        proxy.set_blackhole(Way::Both, true)
    })
    .await;
    // The requester's PINGs were held on their way in; the responder sends nothing but
    // PONGs until it declares the requester dead, then a DISCONNECT, which reaches the
    // proxy just after its `PeerDown`: wait for it rather than race it.
    let held = within("the blackhole to hold traffic both ways", async {
        loop {
            let held = proxy.stats();
            if held.to_target.held >= 1 && held.to_client.held >= 1 {
                return held;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(held.live >= 1, "the sockets stayed open: {held:?}");

    proxy.set_blackhole(Way::Both, false);
    answered_after_heal("F3", &client, "F3Battle").await;
}

/// Cuts the path between `client` and `server` with `cut` and waits for each side's
/// `PeerDown` of the other: both within the detection bound.
async fn cut_and_detected(row: &str, client: &Node, server: &Node, cut: impl FnOnce()) {
    let (mut client_events, mut server_events) = (client.events(), server.events());
    let at = Instant::now();
    cut();
    let (client_saw, server_saw) = tokio::join!(
        async {
            let reason = peer_down(&mut client_events, server.path()).await;
            (at.elapsed(), reason)
        },
        async {
            let reason = peer_down(&mut server_events, client.path()).await;
            (at.elapsed(), reason)
        }
    );
    eprintln!("{row} requester: {client_saw:?}; responder: {server_saw:?}");
    assert_detected(&format!("{row} requester"), client_saw.0);
    assert_detected(&format!("{row} responder"), server_saw.0);
}

/// Once the path is healed: `client` asks `target` until it is answered, within the
/// redial cap, one handshake timeout (a dial lost in the cut) and slack.
async fn answered_after_heal(row: &str, client: &Node, target: &str) {
    let healed = Instant::now();
    within("a request after the heal", async {
        loop {
            if ask(client, target).await.is_ok() {
                return;
            }
            ready(client, target, 1).await;
        }
    })
    .await;
    let back = healed.elapsed();
    eprintln!("{row} reconnect after heal: {} ms", back.as_millis());
    assert!(
        back <= REDIAL.1 + Duration::from_secs(5) + Duration::from_secs(2),
        "{back:?}"
    );
}

/// F4: a QUIC path gone dark. Every datagram between a requester and its responder is
/// dropped (the UDP fault proxy's blackhole: no ICMP, nothing comes back): DMS heartbeats
/// declare the peer dead on both sides within B, not QUIC's idle timeout; after the heal
/// the requester links again and is answered.
#[cfg(feature = "quic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f4_a_dark_quic_path_is_detected_on_both_sides_and_heals() {
    use dms_test_support::udp_proxy::{Faults, UdpProxy};

    let quic = |addr: SocketAddr| -> Endpoint { format!("quic://{addr}").parse().unwrap() };
    let certs = std::env::temp_dir().join(format!(
        "dms-f4-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let bound = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = UdpProxy::start(bound, Faults::none());
    let discovery = MemoryDiscovery::new();
    let server_path = instance("F4Battle", "battle-1");
    let server = echo(&discovery, server_path.clone(), |b| {
        b.quic_dev_certificates(&certs)
            .bind(quic(bound))
            .advertise(quic(proxy.local_addr()))
    })
    .await;
    let client = echo(&discovery, instance("F4Lobby", "lobby-1"), |b| {
        b.quic_dev_certificates(&certs).target(cluster("F4Battle"))
    })
    .await;
    ready(&client, "F4Battle", 1).await;
    ask(&client, "F4Battle").await.unwrap();
    assert!(proxy.forwarded() > 0, "the link goes through the proxy");

    cut_and_detected("F4", &client, &server, || proxy.set_blackhole(true)).await;
    assert!(proxy.dropped() > 0, "the blackhole dropped datagrams");

    proxy.set_blackhole(false);
    answered_after_heal("F4", &client, "F4Battle").await;
    let _ = std::fs::remove_dir_all(&certs);
}

/// F10: A, B and C linked to each other, only A–B through the proxy. Cutting A–B makes A
/// and B declare each other dead within B while A–C and B–C stay up and keep answering;
/// after the heal A reaches B again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f10_a_partition_of_one_edge_leaves_the_others_up() {
    let discovery = MemoryDiscovery::new();
    let c = echo(&discovery, instance("F10C", "c-1"), |b| b).await;
    let (b, proxy) = behind_proxy(&discovery, instance("F10B", "b-1"), |b| {
        b.target(cluster("F10C"))
    })
    .await;
    let a = echo(&discovery, instance("F10A", "a-1"), |b| {
        b.target(cluster("F10B")).target(cluster("F10C"))
    })
    .await;
    ready(&a, "F10B", 1).await;
    ready(&a, "F10C", 1).await;
    ready(&b, "F10C", 1).await;
    ask(&a, "F10B").await.unwrap();
    let before = proxy.stats().to_target.bytes;

    let (mut a_events, mut b_events, mut c_events) = (a.events(), b.events(), c.events());
    let cut = Instant::now();
    proxy.set_blackhole(Way::Both, true);
    // Requests on the healthy edges go on during the cut, while A and B find out.
    let during = async {
        let mut answered = 0;
        while cut.elapsed() < BOUND + SLACK {
            ask(&a, "F10C").await.unwrap();
            ask(&b, "F10C").await.unwrap();
            answered += 2;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        answered
    };
    let (a_saw, b_saw, answered) = tokio::join!(
        async {
            peer_down(&mut a_events, b.path()).await;
            cut.elapsed()
        },
        async {
            peer_down(&mut b_events, a.path()).await;
            cut.elapsed()
        },
        during
    );
    assert_detected("F10 A (requester of B)", a_saw);
    assert_detected("F10 B (responder of A)", b_saw);
    eprintln!("F10: {answered} requests A→C and B→C answered during the cut");
    assert!(proxy.stats().to_target.held >= 1, "{:?}", proxy.stats());
    assert!(proxy.stats().to_target.bytes >= before);
    // No other edge went down.
    assert_eq!(downs_so_far(&mut a_events), Vec::<ServicePath>::new());
    assert_eq!(downs_so_far(&mut b_events), Vec::<ServicePath>::new());
    assert_eq!(downs_so_far(&mut c_events), Vec::<ServicePath>::new());
    for s in a.instances(&cluster("F10C")).await {
        assert!(s.is_ready(), "{s:?}");
    }

    proxy.set_blackhole(Way::Both, false);
    let healed = Instant::now();
    within("A to reach B again", async {
        while ask(&a, "F10B").await.is_err() {
            ready(&a, "F10B", 1).await;
        }
    })
    .await;
    eprintln!(
        "F10 A–B back {} ms after the heal",
        healed.elapsed().as_millis()
    );
    ask(&a, "F10C").await.unwrap();
    ask(&b, "F10C").await.unwrap();
}

/// F10 with a broker: A, B and C linked to each other, C a broker, only A–B through the
/// proxy. Cutting A–B moves A's requests for B onto A → C → B within B + the time for A to
/// see its link gone (its own links are its own truth: no watch delay); every request
/// sent during the cut is answered or fails with a typed error within its timeout; after
/// the heal A talks to B directly again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f10_a_cut_edge_is_routed_around_through_a_broker() {
    let discovery = MemoryDiscovery::new();
    let c = echo(&discovery, instance("F10RC", "c-1"), |b| b.broker()).await;
    let (b, proxy) = behind_proxy(&discovery, instance("F10RB", "b-1"), |b| {
        b.target(cluster("F10RC"))
    })
    .await;
    let a = echo(&discovery, instance("F10RA", "a-1"), |b| {
        b.target(cluster("F10RB")).target(cluster("F10RC"))
    })
    .await;
    ready(&a, "F10RB", 1).await;
    ready(&a, "F10RC", 1).await;
    ready(&b, "F10RC", 1).await;
    // Until A's own link to B is up, A may reach B through C already.
    within("A's direct session with B", async {
        while a
            .instances(&cluster("F10RB"))
            .await
            .iter()
            .any(|s| s.state != dms::InstanceState::Ready)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let routed =
        |node: &Node| recorder().counter("dms_routed_total", &[("node", node.path().as_str())]);
    let before = routed(&a);
    ask(&a, "F10RB").await.unwrap();
    assert_eq!(routed(&a), before, "A–B is direct while it is up");

    let cut = Instant::now();
    proxy.set_blackhole(Way::Both, true);
    let (mut answered, mut failed) = (0u32, Vec::new());
    let rerouted = within("A's requests for B to go through C", async {
        loop {
            let sent = Instant::now();
            match ask(&a, "F10RB").await {
                Ok(reply) if routed(&a) > before => {
                    assert_eq!(&reply.body[1][..], b.path().as_str().as_bytes());
                    answered += 1;
                    return cut.elapsed();
                }
                Ok(_) => answered += 1,
                Err(error) => failed.push(error),
            }
            assert!(
                sent.elapsed() <= Duration::from_millis(2100),
                "a request outlived its timeout"
            );
        }
    })
    .await;
    eprintln!(
        "F10 via a broker: A's requests for B rerouted through C {} ms after the cut ({answered} answered, {} failed: {failed:?})",
        rerouted.as_millis(),
        failed.len()
    );
    for error in &failed {
        assert!(
            matches!(
                error,
                RequestError::PeerLost(_) | RequestError::Timeout | RequestError::NoInstance(_)
            ),
            "{error:?}"
        );
    }
    // RELIABILITY.md F10: within B + 1 s (a loaded CI machine gets the slack on top).
    assert!(
        rerouted <= BOUND + Duration::from_secs(1) + SLACK,
        "{rerouted:?}"
    );
    assert!(recorder().counter("dms_forwarded_total", &[("node", c.path().as_str())]) >= 1);

    proxy.set_blackhole(Way::Both, false);
    within("A to reach B directly again", async {
        loop {
            let before = routed(&a);
            if ask(&a, "F10RB").await.is_ok() && routed(&a) == before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// F15: a node that shuts down says DISCONNECT: its peer's `PeerDown` comes before any
/// heartbeat could have fired, and a request in flight to it ends at once with a typed
/// error, not its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f15_graceful_shutdown_is_seen_at_once_and_ends_requests_in_flight() {
    recorder();
    let discovery = MemoryDiscovery::new();
    let server_path = instance("F15Battle", "battle-1");
    let server = Node::builder(server_path.clone())
        .heartbeat(IVL, MISSED)
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let client = echo(&discovery, instance("F15Lobby", "lobby-1"), |b| {
        b.target(cluster("F15Battle"))
    })
    .await;
    ready(&client, "F15Battle", 1).await;
    let asking = client.clone();
    let in_flight = tokio::spawn(async move {
        let result = asking
            .request_timeout(
                &cluster("F15Battle"),
                "player-1",
                Multipart::from_frames(["never answered"]),
                Duration::from_secs(10),
            )
            .await;
        (result, Instant::now())
    });
    // The server holds the request unanswered.
    let held = within("the request at the server", server.next_request())
        .await
        .unwrap();

    let mut events = client.events();
    let stopped = Instant::now();
    let (_, down) = tokio::join!(server.shutdown(), async {
        let reason = peer_down(&mut events, &server_path).await;
        (stopped.elapsed(), reason)
    });
    let (result, ended_at) = within("the request in flight to end", in_flight)
        .await
        .unwrap();
    let ended = ended_at.duration_since(stopped);
    eprintln!(
        "F15: PeerDown {} µs after shutdown ({}); request in flight ended after {} µs: {result:?}",
        down.0.as_micros(),
        down.1,
        ended.as_micros()
    );
    assert!(
        down.0 < IVL,
        "PeerDown after {:?}: a heartbeat's time",
        down.0
    );
    let err = result.unwrap_err();
    assert!(
        !matches!(err, RequestError::Timeout),
        "the request waited for its timeout: {err:?}"
    );
    assert!(
        matches!(err, RequestError::PeerClosed(_)),
        "not a graceful close: {err:?}"
    );
    assert_eq!(err.outcome(), dms::Outcome::MaybeDelivered);
    assert!(ended < Duration::from_secs(1), "{ended:?}");
    drop(held);
}

/// F16: a requester that stops (as a GC pause or SIGSTOP would) with its socket open is
/// dropped by the responder within the liveness timeout its READY asked for, and the
/// session's loss is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f16_a_paused_requester_is_dropped_within_its_ready_timeout() {
    let (server, client) = linked_pair("F16").await;
    let node = server.path().as_str();
    let lost = |reason: &str| {
        recorder().counter(
            "dms_peers_lost_total",
            &[("node", node), ("reason", reason)],
        )
    };
    let heartbeat_losses = lost("heartbeat");

    let mut events = server.events();
    let paused = Instant::now();
    client.suspend().await;
    let reason = peer_down(&mut events, client.path()).await;
    let took = paused.elapsed();
    eprintln!(
        "F16: responder dropped the paused requester after {} ms ({reason})",
        took.as_millis()
    );
    assert_detected("F16 responder", took);
    assert!(reason.contains("no sign of life"), "{reason}");
    within("the loss counted by reason", async {
        while lost("heartbeat") <= heartbeat_losses {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Nothing is left parked for the paused peer.
    let parked = recorder().gauge("dms_parked_messages", &[("node", node)]);
    assert!(parked.abs() < f64::EPSILON, "{parked} messages parked");
}

/// F2, the rejoin: a responder frozen past its requester's bound (`Node::suspend`) is
/// resumed once the requester has given up on it and linked again. What it then reads
/// holds the PINGs of the old session, that link's end and the requester's new link: the
/// PONGs it answers go to the old link (gone: dropped), never onto the new one, where
/// they would come before its READY and end the new session too. So the freeze costs
/// the requester exactly one session (by heartbeat), and its requests are answered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_a_resumed_responder_costs_its_requester_only_the_frozen_session() {
    let (server, client) = linked_pair("F2").await;
    let node = client.path().as_str();
    // Sessions lost by heartbeat, and by any reason.
    let losses = || {
        let lost = |labels: &[(&str, &str)]| recorder().counter("dms_peers_lost_total", labels);
        (
            lost(&[("node", node), ("reason", "heartbeat")]),
            lost(&[("node", node)]),
        )
    };
    let links_up = || {
        recorder().counter(
            "dms_links_up_total",
            &[("node", node), ("transport", "tcp")],
        )
    };
    // Links are exported once a second: the first one counted is the baseline.
    let linked = within("the first link exported", async {
        loop {
            match links_up() {
                0 => tokio::time::sleep(Duration::from_millis(10)).await,
                n => return n,
            }
        }
    })
    .await;
    let before = losses();

    let mut events = client.events();
    server.suspend().await;
    let reason = peer_down(&mut events, server.path()).await;
    assert!(reason.contains("no sign of life"), "{reason}");
    // The requester dials the frozen responder again: its transport (still running, as a
    // frozen process's kernel does) accepts, the new session waits for its READY.
    within("the requester linked again", async {
        while links_up() <= linked {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    server.resume().await;
    ready(&client, "F2Battle", 1).await;
    let answered = within("a request answered after the resume", async {
        loop {
            match ask(&client, "F2Battle").await {
                Ok(reply) => return reply,
                Err(error) => eprintln!("F2: not yet answered: {error}"),
            }
        }
    })
    .await;
    assert_eq!(answered.from, *server.path());
    let after = losses();
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 1),
        "sessions lost (by heartbeat, by any reason): only the frozen one may be"
    );
}

/// F12: 1,000 clients that redial (full-jitter backoff, 100 ms × 2, cap 5 s) reconnect to
/// a server restarted on the same port 5 s after it went away: all are back within cap +
/// 5 s, and the accepts per 100 ms window peak at no more than 3 × their mean over the
/// reconnect period (restart to last accept).
///
/// The sizes are RELIABILITY.md's, not smaller, because the bound is about the jitter, not
/// the sample: simulating this backoff exactly (attempt *n* uniform in
/// [0, min(5 s, 100 ms × 2ⁿ)]), peak/mean over 500 seeds is a median 2.1 and at most 2.98
/// with 1,000 clients and a 5 s outage, but exceeds 3 in 16 % of runs with 200 clients,
/// and is 4–7 after a 1 s outage (the clients still at small ceilings come back first:
/// full jitter spreads the retries only once the ceilings have reached the cap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f12_a_reconnect_storm_is_spread_by_the_jitter() {
    use dms_core::{Incoming, MessageMiddleware};
    use dms_transport_tcp::{TcpConfig, TcpMiddleware};

    const CLIENTS: usize = 1000;
    const OUTAGE: Duration = Duration::from_secs(5);
    const WINDOW: Duration = Duration::from_millis(100);
    let server_config = || {
        TcpConfig::builder()
            .identity("storm-server")
            .build()
            .unwrap()
    };
    let first = TcpMiddleware::new(server_config());
    let endpoint = first
        .bind(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let client = TcpMiddleware::new(TcpConfig::builder().build().unwrap());
        client.connect(&endpoint).await.unwrap();
        clients.push(client);
    }
    within("every client linked", async {
        let mut up = 0;
        while up < CLIENTS {
            if let Incoming::LinkUp { .. } = first.recv().await.unwrap() {
                up += 1;
            }
        }
    })
    .await;

    first.close();
    drop(first);
    let killed = Instant::now();
    tokio::time::sleep_until(killed + OUTAGE).await;
    let second = TcpMiddleware::new(server_config());
    within("the port to be free again", async {
        while second.bind(&endpoint).await.is_err() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let restarted = Instant::now();
    let mut accepts = Vec::with_capacity(CLIENTS);
    let all_back = tokio::time::timeout(Duration::from_secs(5 + 5), async {
        while accepts.len() < CLIENTS {
            if let Incoming::LinkUp { .. } = second.recv().await.unwrap() {
                accepts.push(restarted.elapsed());
            }
        }
    })
    .await;
    assert!(
        all_back.is_ok(),
        "{} of {CLIENTS} back within cap + 5 s",
        accepts.len()
    );
    let span = *accepts.last().unwrap();
    let windows = usize::try_from(span.as_millis() / WINDOW.as_millis()).unwrap() + 1;
    let mut histogram = vec![0usize; windows];
    for at in &accepts {
        histogram[usize::try_from(at.as_millis() / WINDOW.as_millis()).unwrap()] += 1;
    }
    #[allow(clippy::cast_precision_loss)]
    let mean = CLIENTS as f64 / windows as f64;
    let peak = *histogram.iter().max().unwrap();
    eprintln!(
        "F12: {CLIENTS} clients back {} ms after the restart; accepts per 100 ms: {histogram:?}; \
         peak {peak}, mean {mean:.1}, peak/mean {:.2}",
        span.as_millis(),
        peak as f64 / mean
    );
    #[allow(clippy::cast_precision_loss)]
    let peak_f = peak as f64;
    assert!(
        peak_f <= 3.0 * mean,
        "accepts bunch up: peak {peak} per 100 ms, mean {mean:.1} ({histogram:?})"
    );
    let reconnects: u64 = clients.iter().map(|c| c.stats().reconnect_attempts).sum();
    assert!(reconnects >= CLIENTS as u64, "{reconnects}");
}

/// F1: an instance that crashes (`Node::kill`: its sockets close, no DISCONNECT) while it
/// holds 100 requests. Every one ends at once with `PeerLost` (the link's end, no
/// heartbeat wait), none by its 20 s timeout; each is counted
/// (`dms_requests_total{outcome=peer_lost}`); the cluster's other instance answers the
/// keys next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_a_crash_ends_every_request_in_flight_at_once_and_its_keys_fail_over() {
    recorder();
    let discovery = MemoryDiscovery::new();
    let victim_path = instance("F1Battle", "battle-1");
    let victim = Node::builder(victim_path.clone())
        .heartbeat(IVL, MISSED)
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let survivor = echo(&discovery, instance("F1Battle", "battle-2"), |b| b).await;
    let client = echo(&discovery, instance("F1Lobby", "lobby-1"), |b| {
        b.target(cluster("F1Battle"))
    })
    .await;
    ready(&client, "F1Battle", 2).await;
    let lost = || {
        recorder().counter(
            "dms_requests_total",
            &[("node", client.path().as_str()), ("outcome", "peer_lost")],
        )
    };
    let lost_before = lost();

    let mut in_flight = Vec::new();
    for i in 0..100 {
        let (asking, to) = (client.clone(), victim_path.clone());
        in_flight.push(tokio::spawn(async move {
            let body = Multipart::from_frames([format!("request {i}")]);
            let result = asking
                .request_instance_timeout(&to, body, Duration::from_secs(20))
                .await;
            (result, Instant::now())
        }));
    }
    // The victim holds all of them unanswered (dropping them would answer NO_HANDLER).
    let mut held = Vec::new();
    while held.len() < 100 {
        held.push(
            within("100 requests at the victim", victim.next_request())
                .await
                .unwrap(),
        );
    }
    let killed = Instant::now();
    victim.kill().await;
    let mut slowest = Duration::ZERO;
    for request in in_flight {
        let (result, ended_at) = within("a request in flight to end", request).await.unwrap();
        let err = result.unwrap_err();
        assert!(matches!(err, RequestError::PeerLost(_)), "{err:?}");
        slowest = slowest.max(ended_at.duration_since(killed));
    }
    eprintln!(
        "F1: 100 requests in flight at the crash, the last ended {} µs after it",
        slowest.as_micros()
    );
    // Heartbeats never declare a peer dead before NOT_BEFORE of silence: what ends
    // sooner ended by the link's loss.
    assert!(
        slowest < NOT_BEFORE,
        "requests ended {slowest:?} after the crash: not by the link's loss"
    );
    assert_eq!(lost() - lost_before, 100, "each loss counted once");

    for player in 0..20 {
        let reply = client
            .request_timeout(
                &cluster("F1Battle"),
                format!("player-{player}").as_str(),
                Multipart::from_frames(["after the crash"]),
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        assert_eq!(&reply.from, survivor.path(), "player-{player}");
    }
    drop(held);
}
