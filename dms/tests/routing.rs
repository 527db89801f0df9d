//! Multi-hop routing end to end, in one process: real TCP on loopback, the in-memory
//! discovery. The seed's three scenarios (two clusters fully connected; a subsystem that
//! talks only through a broker cluster; two subsystems joined only through their broker
//! clusters), re-routing after a broker dies, hop-limit exhaustion, an unreachable
//! destination, a routing loop injected into discovery, and broadcast through brokers.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![cfg(feature = "tcp")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dms::routing::{Link, LinkRecord, links_key};
use dms::{
    Discovery, InstanceState, MemoryDiscovery, Multipart, Node, NodeBuilder, NodeEvent,
    RequestError, RouteFailure, ServicePath,
};
use dms_test_support::wait::within;
use support::{cluster, counter, instance};

const WAIT: Duration = Duration::from_secs(10);

fn builder(discovery: &MemoryDiscovery, path: ServicePath) -> NodeBuilder<MemoryDiscovery> {
    // Before any node starts: a node registers its counters with the recorder there is.
    dms_test_support::metrics::recorder();
    Node::builder(path)
        .heartbeat(Duration::from_millis(100), 3)
        .request_timeout(Duration::from_secs(3))
        .discovery(discovery.clone())
}

/// Starts `builder` as an instance that answers every request with its payload and its
/// own path, and counts the notifications it gets.
async fn serve(
    builder: NodeBuilder<MemoryDiscovery>,
) -> (Node, tokio::sync::mpsc::Receiver<Multipart>) {
    let node = builder.start().await.unwrap();
    let server = node.clone();
    let (notes_tx, notes) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            if request.expects_reply() {
                let mut body = request.body().clone();
                body.push(server.path().to_string());
                let _ = request.reply(body).await;
            } else {
                let _ = notes_tx.send(request.body().clone()).await;
            }
        }
    });
    (node, notes)
}

/// Waits until `node` sees `count` instances of `name` reachable (`Ready` or `Routed`).
async fn reachable(node: &Node, name: &str, count: usize) {
    node.wait_for_instances(&cluster(name), count, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{} never reached {count} of {name}: {e}", node.path()));
}

/// The paths of the peers `node` has a session with, from its events since `events`.
fn linked(events: &mut tokio::sync::broadcast::Receiver<NodeEvent>) -> BTreeSet<String> {
    let mut up = BTreeSet::new();
    while let Ok(event) = events.try_recv() {
        match event {
            NodeEvent::PeerUp { path, .. } => {
                up.insert(path.to_string());
            }
            NodeEvent::PeerDown { path, .. } => {
                up.remove(path.as_str());
            }
            _ => {}
        }
    }
    up
}

/// Waits until each `(instance, n)` of `wanted` has published a link record of at least
/// `n` links.
async fn published(discovery: &MemoryDiscovery, wanted: &[(&ServicePath, usize)]) {
    let table_key = dms::routing::table_key(wanted[0].0).unwrap();
    within("the link records to be published", async {
        loop {
            let table = dms::routing::read_table(discovery, &table_key)
                .await
                .unwrap();
            let links = |who: &ServicePath| {
                table
                    .records
                    .iter()
                    .find(|(p, _)| p == who)
                    .map_or(0, |(_, r)| r.links.len())
            };
            if wanted.iter().all(|(who, n)| links(who) >= *n) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

async fn ask(node: &Node, name: &str, key: &str) -> Result<String, RequestError> {
    let reply = node
        .request(&cluster(name), key, Multipart::from_frames(["hi"]))
        .await?;
    Ok(String::from_utf8(reply.body[1].to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fully_connected_clusters_talk_directly() {
    let discovery = MemoryDiscovery::new();
    let (_b1, _) = serve(builder(&discovery, instance("Battle", "fcctd-battle-1"))).await;
    let (_b2, _) = serve(builder(&discovery, instance("Battle", "fcctd-battle-2"))).await;
    let lobby = builder(&discovery, instance("Lobby", "fcctd-lobby-1"))
        .target(cluster("Battle"))
        .start()
        .await
        .unwrap();
    reachable(&lobby, "Battle", 2).await;
    let states: Vec<InstanceState> = lobby
        .instances(&cluster("Battle"))
        .await
        .iter()
        .map(|i| i.state)
        .collect();
    assert_eq!(states, vec![InstanceState::Ready, InstanceState::Ready]);
    for key in ["p1", "p2", "p3"] {
        ask(&lobby, "Battle", key).await.unwrap();
    }
    // Nothing was routed: every message went over its own link.
    assert_eq!(counter("dms_routed_total", lobby.path(), &[]), 0);
}

/// Lobby and Trade both link only to the broker cluster; Lobby reaches Trade through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subsystem_talks_through_its_broker_cluster() {
    let discovery = MemoryDiscovery::new();
    let broker = |name: &str| builder(&discovery, instance("Broker", name)).broker();
    let (b1, _) = serve(broker("broker-1")).await;
    let (b2, _) = serve(broker("broker-2")).await;
    let mut trades = Vec::new();
    for name in ["trade-1", "trade-2", "trade-3"] {
        let (node, _) =
            serve(builder(&discovery, instance("Trade", name)).target(cluster("Broker"))).await;
        trades.push(node);
    }
    let lobby = builder(&discovery, instance("Lobby", "sttibc-lobby-1"))
        .target(cluster("Broker"))
        .routed_target(cluster("Trade"))
        .start()
        .await
        .unwrap();
    let mut lobby_events = lobby.events();
    reachable(&lobby, "Trade", 3).await;
    let trade_states: Vec<InstanceState> = lobby
        .instances(&cluster("Trade"))
        .await
        .iter()
        .map(|i| i.state)
        .collect();
    assert_eq!(trade_states, vec![InstanceState::Routed; 3]);

    // Sticky dispatch over the whole cluster, through the brokers: the same key reaches the
    // same instance every time, different keys spread over the cluster.
    let mut owners = BTreeMap::new();
    for key in 0..60 {
        let key = format!("player-{key}");
        let first = ask(&lobby, "Trade", &key).await.unwrap();
        assert_eq!(
            ask(&lobby, "Trade", &key).await.unwrap(),
            first,
            "sticky through brokers"
        );
        *owners.entry(first).or_insert(0) += 1;
    }
    assert_eq!(
        owners.len(),
        3,
        "every trade instance owns some keys: {owners:?}"
    );
    assert!(counter("dms_routed_total", lobby.path(), &[]) >= 120);
    let forwarded = counter("dms_forwarded_total", b1.path(), &[])
        + counter("dms_forwarded_total", b2.path(), &[]);
    assert!(
        forwarded >= 120,
        "requests and their paths through brokers: {forwarded}"
    );

    // The links that exist: Lobby holds sessions with brokers only.
    let links = linked(&mut lobby_events);
    assert!(
        links.iter().all(|p| p.contains("/Broker/")),
        "lobby's links: {links:?}"
    );
    for trade in &trades {
        let peers = trade.instances(&cluster("Broker")).await;
        assert!(peers.iter().all(|p| p.state == InstanceState::Ready));
    }
}

/// Two brokers of equal cost share the destinations: each Trade instance is always
/// reached through the same broker (its messages keep their order), and both brokers
/// carry some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_of_equal_cost_share_the_destinations() {
    let discovery = MemoryDiscovery::new();
    let (b1, _) = serve(builder(&discovery, instance("Broker", "ecmp-broker-1")).broker()).await;
    let (b2, _) = serve(builder(&discovery, instance("Broker", "ecmp-broker-2")).broker()).await;
    let mut trades = Vec::new();
    for i in 1..=6 {
        let name = format!("ecmp-trade-{i}");
        let (node, _) =
            serve(builder(&discovery, instance("Trade", &name)).target(cluster("Broker"))).await;
        trades.push(node);
    }
    let lobby = builder(&discovery, instance("Lobby", "ecmp-lobby-1"))
        .target(cluster("Broker"))
        .routed_target(cluster("Trade"))
        .start()
        .await
        .unwrap();
    reachable(&lobby, "Trade", 6).await;
    // Both brokers linked to the lobby and every Trade instance before counting.
    published(&discovery, &[(b1.path(), 7), (b2.path(), 7)]).await;
    let forwarded = |b: &Node| counter("dms_forwarded_total", b.path(), &[]);
    let mut through = BTreeMap::new();
    for trade in &trades {
        let before = (forwarded(&b1), forwarded(&b2));
        for _ in 0..3 {
            let reply = lobby
                .request_instance(trade.path(), Multipart::from_frames(["hi"]))
                .await
                .unwrap();
            assert_eq!(&reply.from, trade.path());
        }
        let after = (forwarded(&b1), forwarded(&b2));
        let via = match (after.0 - before.0, after.1 - before.1) {
            (3, 0) => "broker-1",
            (0, 3) => "broker-2",
            other => panic!("{} reached through both brokers: {other:?}", trade.path()),
        };
        through.insert(trade.path().to_string(), via);
    }
    let used: BTreeSet<&str> = through.values().copied().collect();
    assert_eq!(
        used.len(),
        2,
        "every destination through one broker: {through:?}"
    );
}

/// Two subsystems joined only through their broker clusters (portals): Lobby's side never
/// dials Trade's services, nor the other way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_joins_two_subsystems_through_their_brokers() {
    let discovery = MemoryDiscovery::new();
    let (_pb, _) =
        serve(builder(&discovery, instance("TradeGate", "pjtstt-gate-b1")).broker()).await;
    let (pa, _) = serve(
        builder(&discovery, instance("LobbyGate", "pjtstt-gate-a1"))
            .broker()
            .target(cluster("TradeGate")),
    )
    .await;
    let (_trade, _) = serve(
        builder(&discovery, instance("Trade", "pjtstt-trade-1")).target(cluster("TradeGate")),
    )
    .await;
    let lobby = builder(&discovery, instance("Lobby", "pjtstt-lobby-1"))
        .target(cluster("LobbyGate"))
        .routed_target(cluster("Trade"))
        .start()
        .await
        .unwrap();
    let mut events = lobby.events();
    reachable(&lobby, "Trade", 1).await;
    for key in 0..20 {
        let from = ask(&lobby, "Trade", &format!("k{key}")).await.unwrap();
        assert_eq!(from, instance("Trade", "pjtstt-trade-1").to_string());
    }
    let links = linked(&mut events);
    assert!(
        links.iter().all(|p| p.contains("/LobbyGate/")),
        "lobby's links: {links:?}"
    );
    // The gate of Lobby's side links only to its own side and to the other gate.
    let gate_peers = pa.instances(&cluster("TradeGate")).await;
    assert_eq!(gate_peers.len(), 1);
    assert_eq!(gate_peers[0].state, InstanceState::Ready);
    assert!(counter("dms_forwarded_total", pa.path(), &[]) >= 20);
}

/// How the broker in use fails.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// `kill -9`: its sockets close, its peers see the links go at once.
    Kill,
    /// SIGSTOP: it answers nothing, its sockets stay open; its peers find out by the
    /// heartbeat.
    Freeze,
}

/// Two brokers; the one in use fails while requests flow. Every request is answered or
/// fails with a typed error within its timeout, and traffic moves to the other broker:
/// returns how long after the failure the first request got through it.
async fn reroute_when_the_broker_in_use(failure: Failure, tag: &str) -> Duration {
    let discovery = MemoryDiscovery::new();
    let name = |n: &str| format!("{tag}-{n}");
    let (b1, _) = serve(builder(&discovery, instance("Broker", &name("broker-1"))).broker()).await;
    let (b2, _) = serve(builder(&discovery, instance("Broker", &name("broker-2"))).broker()).await;
    let (_trade, _) =
        serve(builder(&discovery, instance("Trade", &name("trade-1"))).target(cluster("Broker")))
            .await;
    let lobby = builder(&discovery, instance("Lobby", &name("lobby-1")))
        .target(cluster("Broker"))
        .routed_target(cluster("Trade"))
        .request_timeout(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    reachable(&lobby, "Broker", 2).await;
    reachable(&lobby, "Trade", 1).await;
    ask(&lobby, "Trade", "k").await.unwrap();
    let used_b1 = counter("dms_forwarded_total", b1.path(), &[]) > 0;
    let (victim, survivor) = if used_b1 { (b1, b2) } else { (b2, b1) };

    let failed_at = std::sync::Arc::new(std::sync::OnceLock::<tokio::time::Instant>::new());
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let load = {
        let answered = answered.clone();
        let (lobby, failed_at, survivor) =
            (lobby.clone(), failed_at.clone(), survivor.path().clone());
        tokio::spawn(async move {
            let (mut ok, mut failed, mut rerouted) = (0u32, Vec::new(), None);
            let started = tokio::time::Instant::now();
            // Until 50 requests in a row succeeded after the failure (or 8 s).
            let mut streak = 0;
            while started.elapsed() < Duration::from_secs(8) && streak < 50 {
                let sent = tokio::time::Instant::now();
                let through_survivor = counter("dms_forwarded_total", &survivor, &[]);
                match ask(&lobby, "Trade", "k").await {
                    Ok(_) => {
                        ok += 1;
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if let Some(at) = failed_at.get() {
                            streak += 1;
                            let moved =
                                counter("dms_forwarded_total", &survivor, &[]) > through_survivor;
                            if moved && rerouted.is_none() {
                                rerouted = Some(at.elapsed());
                            }
                        }
                    }
                    Err(error) => {
                        streak = 0;
                        failed.push(error);
                    }
                }
                assert!(
                    sent.elapsed() < Duration::from_millis(2500),
                    "a request outlived its timeout"
                );
            }
            (ok, failed, streak, rerouted)
        })
    };
    // The load is under way (answered through the victim) before it fails.
    within("the load to be under way", async {
        while answered.load(std::sync::atomic::Ordering::SeqCst) < 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    failed_at.set(tokio::time::Instant::now()).unwrap();
    match failure {
        Failure::Kill => victim.kill().await,
        Failure::Freeze => victim.suspend().await,
    }
    let (ok, failed, streak, rerouted) = load.await.unwrap();
    assert_eq!(streak, 50, "traffic did not recover: {failed:?}");
    for error in &failed {
        // Typed: the request was lost with its link, or a hop answered in its place.
        assert!(
            matches!(
                error,
                RequestError::PeerLost(_)
                    | RequestError::Timeout
                    | RequestError::Route { .. }
                    | RequestError::NoInstance(_)
            ),
            "{error:?}"
        );
    }
    assert!(ok > 0);
    let rerouted = rerouted.expect("a request through the surviving broker");
    eprintln!(
        "re-route after a broker's {failure:?}: {} ms ({ok} answered, {} failed with typed errors)",
        rerouted.as_millis(),
        failed.len()
    );
    rerouted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_moves_to_the_remaining_broker_when_one_is_killed() {
    reroute_when_the_broker_in_use(Failure::Kill, "kill").await;
}

/// A frozen broker is found out by the heartbeat: 100 ms × 3 here, so traffic moves
/// within the bound plus slack for a loaded machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_moves_to_the_remaining_broker_when_one_freezes() {
    let rerouted = reroute_when_the_broker_in_use(Failure::Freeze, "freeze").await;
    assert!(
        rerouted <= Duration::from_millis(300) + Duration::from_secs(2),
        "{rerouted:?}"
    );
}

/// Lobby - broker-1 - broker-2 - Trade: three links. A hop limit of 2 is exhausted at
/// broker-2, which answers; a hop limit of 3 gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_limit_exhaustion_is_answered() {
    let discovery = MemoryDiscovery::new();
    let (_b2, _) = serve(builder(&discovery, instance("Far", "hleia-broker-2")).broker()).await;
    let (_b1, _) = serve(
        builder(&discovery, instance("Near", "hleia-broker-1"))
            .broker()
            .target(cluster("Far")),
    )
    .await;
    let (_trade, _) =
        serve(builder(&discovery, instance("Trade", "hleia-trade-1")).target(cluster("Far"))).await;
    let short = builder(&discovery, instance("Lobby", "hleia-lobby-1"))
        .target(cluster("Near"))
        .routed_target(cluster("Trade"))
        .hop_limit(2)
        .start()
        .await
        .unwrap();
    let long = builder(&discovery, instance("Lobby", "hleia-lobby-2"))
        .target(cluster("Near"))
        .routed_target(cluster("Trade"))
        .hop_limit(3)
        .start()
        .await
        .unwrap();
    reachable(&short, "Trade", 1).await;
    reachable(&long, "Trade", 1).await;
    match ask(&short, "Trade", "k").await {
        Err(RequestError::Route {
            failure: RouteFailure::HopLimitExceeded,
            detail,
        }) => {
            assert!(detail.contains("broker-2"), "{detail}");
        }
        other => panic!("expected a hop-limit error, got {other:?}"),
    }
    assert_eq!(
        counter(
            "dms_forward_failures_total",
            &instance("Far", "hleia-broker-2"),
            &[("reason", "hop_limit")]
        ),
        1
    );
    ask(&long, "Trade", "k").await.unwrap();
}

/// A sender cannot buy a longer life for its messages than the brokers allow: broker-1
/// clamps the hop limit 255 it receives to its own (1), so broker-2 answers
/// `HopLimitExceeded` although the origin allowed 255 hops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_clamps_the_hop_limit_to_its_own() {
    let discovery = MemoryDiscovery::new();
    let (_b2, _) = serve(builder(&discovery, instance("Far", "clamp-broker-2")).broker()).await;
    let (_b1, _) = serve(
        builder(&discovery, instance("Near", "clamp-broker-1"))
            .broker()
            .hop_limit(1)
            .target(cluster("Far")),
    )
    .await;
    let (_trade, _) =
        serve(builder(&discovery, instance("Trade", "clamp-trade-1")).target(cluster("Far"))).await;
    let greedy = builder(&discovery, instance("Lobby", "clamp-lobby-1"))
        .target(cluster("Near"))
        .routed_target(cluster("Trade"))
        .hop_limit(255)
        .start()
        .await
        .unwrap();
    reachable(&greedy, "Trade", 1).await;
    match ask(&greedy, "Trade", "k").await {
        Err(RequestError::Route {
            failure: RouteFailure::HopLimitExceeded,
            detail,
        }) => assert!(detail.contains("clamp-broker-2"), "{detail}"),
        other => panic!("expected a hop-limit error, got {other:?}"),
    }
}

/// The ACL of the destination judges the origin, not the broker that relays: trade-1
/// lets the broker connect and forward and lobby-1 request; lobby-2's requests through
/// the same broker are refused by trade-1, within one round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_does_not_launder_a_denied_origin() {
    let discovery = MemoryDiscovery::new();
    let (_b1, _) = serve(builder(&discovery, instance("Broker", "acl-broker-1")).broker()).await;
    let policy: dms::AclPolicy = format!(
        "allow connect,forward from {}\nallow request from {}",
        cluster("Broker"),
        instance("Lobby", "acl-lobby-1")
    )
    .parse()
    .unwrap();
    let (trade, _) = serve(
        builder(&discovery, instance("Trade", "acl-trade-1"))
            .target(cluster("Broker"))
            .acl_policy(policy),
    )
    .await;
    let mut lobbies = Vec::new();
    for name in ["acl-lobby-1", "acl-lobby-2"] {
        let node = builder(&discovery, instance("Lobby", name))
            .target(cluster("Broker"))
            .routed_target(cluster("Trade"))
            .start()
            .await
            .unwrap();
        reachable(&node, "Trade", 1).await;
        lobbies.push(node);
    }
    assert_eq!(
        ask(&lobbies[0], "Trade", "k").await.unwrap(),
        trade.path().to_string()
    );
    match ask(&lobbies[1], "Trade", "k").await {
        Err(RequestError::Denied {
            service,
            op,
            detail,
        }) => {
            assert_eq!(&service, trade.path());
            assert_eq!(op, dms::Operation::Request);
            assert!(detail.contains("acl-lobby-2"), "{detail}");
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    assert_eq!(trade.protocol_stats().acl_denied_requests, 1);
}

/// Writes `links` as `path`'s link record, as an attacker with write access to
/// discovery could.
async fn forge(
    discovery: &MemoryDiscovery,
    path: &ServicePath,
    forwards: bool,
    links: &[&ServicePath],
) {
    let record = LinkRecord::new(
        forwards,
        links
            .iter()
            .map(|p| Link {
                to: p.to_string(),
                cost: 1,
            })
            .collect(),
    );
    discovery
        .set(&links_key(path).unwrap(), record.encode(), None)
        .await
        .unwrap();
}

/// Discovery says broker-1 links to trade-1, but it does not: broker-1 answers
/// `Unreachable` within one round trip, and counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_destination_is_answered_by_the_hop() {
    let discovery = MemoryDiscovery::new();
    let (b1, _) = serve(builder(&discovery, instance("Broker", "udiabt-broker-1")).broker()).await;
    // Trade is registered but links to nobody.
    let (trade, _) = serve(builder(&discovery, instance("Trade", "udiabt-trade-1"))).await;
    let lobby = builder(&discovery, instance("Lobby", "udiabt-lobby-1"))
        .target(cluster("Broker"))
        .routed_target(cluster("Trade"))
        .start()
        .await
        .unwrap();
    reachable(&lobby, "Broker", 1).await;
    // broker-1's own record (its link to lobby) first, then the forgery over it.
    published(&discovery, &[(b1.path(), 1)]).await;
    forge(&discovery, trade.path(), false, &[b1.path()]).await;
    forge(&discovery, b1.path(), true, &[lobby.path(), trade.path()]).await;
    reachable(&lobby, "Trade", 1).await;
    match ask(&lobby, "Trade", "k").await {
        Err(RequestError::Route {
            failure: RouteFailure::Unreachable,
            detail,
        }) => {
            assert!(detail.contains("no route"), "{detail}");
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
    assert_eq!(
        counter(
            "dms_forward_failures_total",
            b1.path(),
            &[("reason", "unreachable")]
        ),
        1
    );
}

/// Forged records make broker-1 route trade-1 through broker-2 and broker-2 through
/// broker-1: the request comes back towards where it came from, the loop is cut at once
/// and counted, and the origin hears of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_loop_injected_into_discovery_terminates() {
    let discovery = MemoryDiscovery::new();
    let (b1, _) = serve(builder(&discovery, instance("Broker", "rliidt-broker-1")).broker()).await;
    let (b2, _) = serve(
        builder(&discovery, instance("Broker", "rliidt-broker-2"))
            .broker()
            .target(cluster("Broker")),
    )
    .await;
    let (trade, _) = serve(builder(&discovery, instance("Trade", "rliidt-trade-1"))).await;
    let lobby = builder(&discovery, instance("Lobby", "rliidt-lobby-1"))
        .target(cluster("Broker"))
        .routed_target(cluster("Trade"))
        .start()
        .await
        .unwrap();
    reachable(&lobby, "Broker", 2).await;
    published(&discovery, &[(b1.path(), 2), (b2.path(), 2)]).await;
    // Each broker is told the other links to trade-1 (and trade-1 confirms both).
    forge(&discovery, trade.path(), false, &[b1.path(), b2.path()]).await;
    forge(
        &discovery,
        b1.path(),
        true,
        &[lobby.path(), b2.path(), trade.path()],
    )
    .await;
    forge(
        &discovery,
        b2.path(),
        true,
        &[lobby.path(), b1.path(), trade.path()],
    )
    .await;
    reachable(&lobby, "Trade", 1).await;
    // Until both brokers read the forged records, the one asked may only find no route;
    // every answer is a typed routing error, and the loop shows once both have them.
    let loops_seen = within("the injected loop to be cut", async {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match ask(&lobby, "Trade", "k").await {
                Err(RequestError::Route {
                    failure: RouteFailure::Unreachable,
                    detail,
                }) => {
                    if detail.contains("loop") {
                        return attempts;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                other => panic!("expected a routing error, got {other:?}"),
            }
        }
    })
    .await;
    let loops = counter(
        "dms_forward_failures_total",
        b1.path(),
        &[("reason", "loop")],
    ) + counter(
        "dms_forward_failures_total",
        b2.path(),
        &[("reason", "loop")],
    );
    assert_eq!(loops, 1, "one loop cut after {loops_seen} attempts");
}

/// A broadcast to a cluster reached only through brokers: each live instance gets it
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_through_brokers_reaches_each_instance_once() {
    let discovery = MemoryDiscovery::new();
    let (_b1, _) = serve(builder(&discovery, instance("Broker", "btbrei-broker-1")).broker()).await;
    let (_b2, _) = serve(builder(&discovery, instance("Broker", "btbrei-broker-2")).broker()).await;
    let mut inboxes = Vec::new();
    for name in ["guild-1", "guild-2", "guild-3"] {
        let (node, notes) =
            serve(builder(&discovery, instance("Guild", name)).target(cluster("Broker"))).await;
        inboxes.push((node, notes));
    }
    let lobby = builder(&discovery, instance("Lobby", "btbrei-lobby-1"))
        .target(cluster("Broker"))
        .routed_target(cluster("Guild"))
        .start()
        .await
        .unwrap();
    reachable(&lobby, "Guild", 3).await;
    let reached = lobby
        .broadcast(&cluster("Guild"), Multipart::from_frames(["news"]))
        .await
        .unwrap();
    assert_eq!(reached.len(), 3);
    for (node, notes) in &mut inboxes {
        let note = within("routing", notes.recv()).await.unwrap();
        assert_eq!(&note[0][..], b"news", "{}", node.path());
    }
    // Exactly once: a marker broadcast after it is the next thing each one gets.
    lobby
        .broadcast(&cluster("Guild"), Multipart::from_frames(["marker"]))
        .await
        .unwrap();
    for (node, notes) in &mut inboxes {
        let note = within("routing", notes.recv()).await.unwrap();
        assert_eq!(&note[0][..], b"marker", "{} got a duplicate", node.path());
    }
}
