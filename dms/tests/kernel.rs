//! The kernel end to end, in one process: real TCP on loopback (QUIC with development
//! certificates in a build without TCP), the in-memory discovery.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use dms::{MemoryDiscovery, Multipart, Node, NodeEvent, RequestError, ServicePath};
use dms_test_support::wait::within;
use support::{cluster, instance, node_builder};

/// Starts an instance that answers every request with its payload and its own path.
async fn echo(
    discovery: &MemoryDiscovery,
    path: ServicePath,
    configure: impl FnOnce(dms::NodeBuilder) -> dms::NodeBuilder,
) -> Node {
    let builder = configure(node_builder(path).heartbeat(Duration::from_millis(100), 3));
    let node = builder.discovery(discovery.clone()).start().await.unwrap();
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

async fn lobby(discovery: &MemoryDiscovery, targets: &[&str]) -> Node {
    let mut builder =
        node_builder(instance("Lobby", "lobby-1")).heartbeat(Duration::from_millis(100), 3);
    for t in targets {
        builder = builder.target(cluster(t));
    }
    builder.discovery(discovery.clone()).start().await.unwrap()
}

async fn owner(lobby: &Node, key: &str) -> String {
    let reply = lobby
        .request(
            &cluster("Battle"),
            key,
            Multipart::from_frames([key.to_owned()]),
        )
        .await
        .unwrap();
    assert_eq!(&reply.body[0][..], key.as_bytes());
    assert_eq!(reply.body[1], reply.from.to_string().as_bytes());
    reply.from.instance().to_owned()
}

/// Battle instances 1 to 3, echoing.
async fn three_battles(discovery: &MemoryDiscovery) -> Vec<Node> {
    let mut battles = Vec::new();
    for i in 1..=3 {
        let path = instance("Battle", &format!("battle-{i}"));
        battles.push(echo(discovery, path, |b| b).await);
    }
    battles
}

/// Waits for the three Battle instances, then routes 60 players: player → instance.
async fn owners_of_60_players(lobby: &Node) -> HashMap<String, String> {
    within(
        "3 battles",
        lobby.wait_for_instances(&cluster("Battle"), 3, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let mut owners = HashMap::new();
    for player in 0..60 {
        let key = format!("player-{player}");
        owners.insert(key.clone(), owner(lobby, &key).await);
    }
    owners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_by_key_stick_to_one_instance_and_spread() {
    let discovery = MemoryDiscovery::new();
    let _battles = three_battles(&discovery).await;
    let lobby = lobby(&discovery, &["Battle"]).await;
    let owners = owners_of_60_players(&lobby).await;
    for (key, first) in &owners {
        assert_eq!(&owner(&lobby, key).await, first, "{key} moved");
    }
    let used: HashSet<_> = owners.values().collect();
    assert_eq!(used.len(), 3, "keys spread over every instance");

    // A second requester (a fresh process would do the same) agrees on every key.
    let other = node_builder(instance("Lobby", "lobby-2"))
        .target(cluster("Battle"))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    within(
        "3 battles",
        other.wait_for_instances(&cluster("Battle"), 3, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    for (key, first) in &owners {
        assert_eq!(&owner(&other, key).await, first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_live_instance() {
    let discovery = MemoryDiscovery::new();
    let clubs: Vec<Node> = {
        let mut v = Vec::new();
        for i in 1..=2 {
            v.push(
                node_builder(instance("Club", &format!("club-{i}")))
                    .discovery(discovery.clone())
                    .start()
                    .await
                    .unwrap(),
            );
        }
        v
    };
    let lobby = lobby(&discovery, &["Club"]).await;
    within(
        "clubs",
        lobby.wait_for_instances(&cluster("Club"), 2, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let reached = lobby
        .broadcast(&cluster("Club"), Multipart::from_frames(["guild war at 8"]))
        .await
        .unwrap();
    assert_eq!(reached.len(), 2);
    for club in &clubs {
        let note = within("broadcast copy", club.next_request()).await.unwrap();
        assert!(note.is_broadcast());
        assert!(!note.expects_reply());
        assert_eq!(note.from(), lobby.path());
        assert_eq!(&note.body()[0][..], b"guild war at 8");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_instance_is_detected_its_keys_move_and_come_back() {
    let discovery = MemoryDiscovery::new();
    let battles = three_battles(&discovery).await;
    let lobby = lobby(&discovery, &["Battle"]).await;
    let owners = owners_of_60_players(&lobby).await;
    let mut events = lobby.events();
    let suspended_at = tokio::time::Instant::now();
    battles[1].suspend().await;
    let down = within("PeerDown of battle-2", async {
        loop {
            if let Ok(NodeEvent::PeerDown { path, reason }) = events.recv().await {
                if path.instance() == "battle-2" {
                    return reason;
                }
            }
        }
    })
    .await;
    let detected = suspended_at.elapsed();
    assert!(down.contains("no sign of life"), "{down}");
    assert!(
        detected >= Duration::from_millis(200),
        "detected after {detected:?}: too early to be heartbeats"
    );
    for (key, first) in &owners {
        let now = owner(&lobby, key).await;
        if first == "battle-2" {
            assert_ne!(now, "battle-2");
        } else {
            assert_eq!(&now, first, "{key} moved although its instance lived");
        }
    }
    // The instance dies for good and a new process takes its place.
    battles[1].kill().await;
    let back = echo(&discovery, instance("Battle", "battle-2"), |b| b).await;
    within(
        "battle-2 back",
        lobby.wait_for_instances(&cluster("Battle"), 3, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    assert_eq!(
        back.bucket(),
        battles[1].bucket(),
        "the restarted instance reclaims its bucket"
    );
    for (key, first) in &owners {
        assert_eq!(&owner(&lobby, key).await, first, "{key} did not come back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_refusal_is_a_clear_error() {
    let discovery = MemoryDiscovery::new();
    let _battle = echo(&discovery, instance("Battle", "battle-1"), |b| {
        b.allow(cluster("Club"))
    })
    .await;
    let lobby = lobby(&discovery, &["Battle"]).await;
    // The refusal may come before any subscription to events could see it: ask until the
    // probe has been answered (no instance while it is pending), then it is `Denied`.
    let denied = within("refusal", async {
        loop {
            match lobby
                .request(&cluster("Battle"), "p", Multipart::from_frames(["x"]))
                .await
            {
                Err(RequestError::NoInstance(_)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                other => return other,
            }
        }
    })
    .await;
    match denied {
        Err(RequestError::Denied {
            service,
            op,
            detail,
        }) => {
            assert_eq!(service, instance("Battle", "battle-1"));
            assert_eq!(op, dms::Operation::Connect);
            assert!(detail.contains("/Lobby"), "{detail}");
            assert!(detail.starts_with("denied connect from "), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_reported_not_silent() {
    let discovery = MemoryDiscovery::new();
    let lobby = lobby(&discovery, &["Battle"]).await;
    assert!(matches!(
        lobby
            .request(&cluster("Battle"), 1u64, Multipart::from_frames(["x"]))
            .await,
        Err(RequestError::NoInstance(_))
    ));
    assert!(matches!(
        lobby
            .request(&cluster("Trade"), 1u64, Multipart::from_frames(["x"]))
            .await,
        Err(RequestError::NotATarget(_))
    ));
    let silent = node_builder(instance("Battle", "battle-1"))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    within(
        "battle",
        lobby.wait_for_instances(&cluster("Battle"), 1, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let server = silent.clone();
    tokio::spawn(async move {
        // Takes requests and drops them: the requester gets an error reply, not a hang.
        while let Some(request) = server.next_request().await {
            drop(request);
        }
    });
    match lobby
        .request(&cluster("Battle"), 1u64, Multipart::from_frames(["x"]))
        .await
    {
        Err(RequestError::Remote { code, .. }) => {
            assert_eq!(code, dms_core::proto::control::codes::NO_HANDLER)
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        node_builder(instance("Battle", "battle-1"))
            .discovery(discovery.clone())
            .start()
            .await,
        Err(dms::StartError::AlreadyRegistered(_))
    ));
}

/// A request or notification beyond the wire limits fails at once with `TooLarge` (it was
/// certainly not sent), instead of being dropped at the link and leaving its caller to
/// time out; the link keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_fail_at_once_as_not_sent() {
    let discovery = MemoryDiscovery::new();
    let _battle = echo(&discovery, instance("Battle", "battle-1"), |b| b).await;
    let lobby = lobby(&discovery, &["Battle"]).await;
    let battles = cluster("Battle");
    within(
        "battle",
        lobby.wait_for_instances(&battles, 1, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let huge = Multipart::from_frames([vec![0u8; 5 << 20]]); // one frame over 4 MiB
    let many = Multipart::from_frames((0..64).map(|i| i.to_string())); // 65 with control
    for body in [huge, many] {
        // Far less than the 60 s request timeout: the error comes without waiting.
        let error = within(
            "an immediate refusal",
            lobby.request_timeout(&battles, 1u64, body.clone(), Duration::from_secs(60)),
        )
        .await
        .unwrap_err();
        assert!(matches!(error, RequestError::TooLarge(_)), "{error:?}");
        assert_eq!(error.outcome(), dms::Outcome::NotSent);
        let error = within("notify", lobby.notify(&battles, 1u64, body))
            .await
            .unwrap_err();
        assert!(matches!(error, RequestError::TooLarge(_)), "{error:?}");
    }
    let reply = lobby
        .request(&battles, 1u64, Multipart::from_frames(["still fine"]))
        .await
        .unwrap();
    assert_eq!(&reply.body[0][..], b"still fine");
}

/// A request sent right after start, before the target's instance is discovered and
/// probed, waits for it within its own timeout and is answered (as a new user writes it,
/// without `wait_for_instances`); a cluster that really has no instance fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_right_after_start_waits_for_the_first_ready_instance() {
    let discovery = MemoryDiscovery::new();
    let _battle = echo(&discovery, instance("Battle", "battle-1"), |b| b).await;
    let lobby = lobby(&discovery, &["Battle", "Club"]).await;
    let reply = within(
        "the first request",
        lobby.request(
            &cluster("Battle"),
            "player-42",
            Multipart::from_frames(["join"]),
        ),
    )
    .await
    .unwrap();
    assert_eq!(reply.from.instance(), "battle-1");
    // Club has no instance at all: no waiting out the 60 s timeout.
    let error = within(
        "a request to an empty cluster",
        lobby.request_timeout(
            &cluster("Club"),
            1u64,
            Multipart::from_frames(["x"]),
            Duration::from_secs(60),
        ),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, RequestError::NoInstance(_)), "{error:?}");
}

/// A node suspended (as a frozen process) while its handler holds a request: the
/// handler's reply does not leave it, although a handler writes its reply from its own
/// task while the request's session is open. The request ends when the requester's
/// heartbeats give the instance up, never with that reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_node_sends_no_reply_from_a_handler_holding_a_request() {
    let discovery = MemoryDiscovery::new();
    let battle = node_builder(instance("Battle", "battle-1"))
        .heartbeat(Duration::from_millis(100), 3)
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let lobby = lobby(&discovery, &["Battle"]).await;
    within(
        "battle-1 ready",
        lobby.wait_for_instances(&cluster("Battle"), 1, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let asked = tokio::spawn({
        let lobby = lobby.clone();
        async move {
            lobby
                .request_timeout(
                    &cluster("Battle"),
                    "player-1",
                    Multipart::from_frames(["join"]),
                    Duration::from_secs(20),
                )
                .await
        }
    });
    let request = within("the request", battle.next_request()).await.unwrap();
    battle.suspend().await;
    request
        .reply(Multipart::from_frames(["joined"]))
        .await
        .unwrap_or_else(|e| panic!("handing the reply over failed: {e}"));
    let outcome = within("the request's end", asked).await.unwrap();
    assert!(
        matches!(outcome, Err(RequestError::PeerLost(_))),
        "a frozen node answered: {outcome:?}"
    );
}

/// Lobby asks battle-1 (which holds every request it gets) under `policy`: a request
/// ends with `Timeout` at its own deadline, the reply that comes after it is counted
/// late, as is the reply to a request whose caller stopped waiting, and the session
/// still carries requests. Under the default policy (jump hash) a request to a cluster
/// whose instances are all linked is sent from the caller's task (`driver::direct`; the
/// node's task sends it while the view it picks from is being refreshed), under
/// least-pending always through the node's task: both must behave the same.
async fn late_replies_are_counted(policy: impl dms_core::dispatch::DispatchPolicy) {
    dms_test_support::metrics::recorder();
    let discovery = MemoryDiscovery::new();
    let battle = node_builder(instance("Battle", "battle-1"))
        .heartbeat(Duration::from_millis(100), 3)
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let lobby = node_builder(instance("Lobby", "lobby-1"))
        .heartbeat(Duration::from_millis(100), 3)
        .dispatch(policy)
        .target(cluster("Battle"))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    within(
        "battle-1 ready",
        lobby.wait_for_instances(&cluster("Battle"), 1, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let late = || support::counter("dms_late_replies_total", lobby.path(), &[]);
    let late_before = late();
    // The counter is copied to the recorder once a second: polled up to the deadline.
    let late_reaches = |n: u64, what: &'static str| {
        within(what, async move {
            while late() < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let ask = |timeout: Duration| {
        let lobby = lobby.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let result = lobby
                .request_timeout(
                    &cluster("Battle"),
                    "player-1",
                    Multipart::from_frames(["join"]),
                    timeout,
                )
                .await;
            (result, started.elapsed())
        })
    };
    // A first exchange, answered, so that what depends on the session is in place.
    let first = ask(Duration::from_secs(10));
    let request = within("the first request", battle.next_request())
        .await
        .unwrap();
    request.reply(Multipart::from_frames(["ok"])).await.unwrap();
    let (result, _) = within("the first reply", first).await.unwrap();
    assert_eq!(result.unwrap().body, Multipart::from_frames(["ok"]));

    // Timed out: it ends at its deadline, not later.
    let timeout = Duration::from_millis(300);
    let asked = ask(timeout);
    let held = within("the held request", battle.next_request())
        .await
        .unwrap();
    let (result, took) = within("the timeout", asked).await.unwrap();
    assert!(
        matches!(result, Err(RequestError::Timeout)),
        "not a timeout: {result:?}"
    );
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(2),
        "ended after {took:?}, its timeout is {timeout:?}"
    );
    held.reply(Multipart::from_frames(["too late"]))
        .await
        .unwrap();
    late_reaches(late_before + 1, "the late reply counted").await;

    // Abandoned: the caller's future is dropped while the request is held.
    let abandoned = ask(Duration::from_secs(10));
    let held = within("the abandoned request", battle.next_request())
        .await
        .unwrap();
    abandoned.abort();
    assert!(abandoned.await.unwrap_err().is_cancelled());
    held.reply(Multipart::from_frames(["nobody"]))
        .await
        .unwrap();
    late_reaches(late_before + 2, "the abandoned reply counted").await;

    // The session still carries requests, and neither late reply reached them.
    let again = ask(Duration::from_secs(10));
    let request = within("the next request", battle.next_request())
        .await
        .unwrap();
    request
        .reply(Multipart::from_frames(["again"]))
        .await
        .unwrap();
    let (result, _) = within("the next reply", again).await.unwrap();
    assert_eq!(result.unwrap().body, Multipart::from_frames(["again"]));
    assert_eq!(late(), late_before + 2);
}

#[tokio::test]
async fn a_request_ends_at_its_deadline_and_a_late_reply_is_counted_under_jump_hash() {
    late_replies_are_counted(dms_core::dispatch::JumpHash).await;
}

#[tokio::test]
async fn a_request_ends_at_its_deadline_and_a_late_reply_is_counted_under_least_pending() {
    late_replies_are_counted(dms_core::dispatch::LeastPending).await;
}
