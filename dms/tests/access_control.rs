//! The ACL decision hook (`NodeBuilder::access_control`) over real loopback links (TCP;
//! QUIC with development certificates in a build without TCP) on the in-memory
//! discovery: a ban list changed while the node runs refuses the banned principal's next
//! request with `Denied` and drops its notifications, in the session already open; the
//! others are untouched; lifting the ban lets it back; a banned principal that connects
//! is refused at READY; with a policy too, both must allow; the registration publishes
//! what the builder documents.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dms::acl::{AccessControl, Operations};
use dms::registration::{Registration, instance_key};
use dms::{Discovery, MemoryDiscovery, Multipart, Node, Operation, RequestError, ServicePath};
use dms_test_support::wait::within;
use support::{cluster, instance};
use tokio::sync::mpsc;

/// The medium of this build ([`support::node_builder`]), heartbeats of 100 ms × 3 over TCP.
fn node_builder(path: ServicePath) -> dms::NodeBuilder {
    let builder = support::node_builder(path);
    #[cfg(feature = "tcp")]
    let builder = builder.heartbeat(Duration::from_millis(100), 3);
    builder
}

/// Everyone may do everything but the banned, who may do nothing. Counts its calls.
#[derive(Default)]
struct BanList {
    banned: Mutex<HashSet<ServicePath>>,
    asked: AtomicU64,
}

impl BanList {
    fn ban(&self, who: &ServicePath) {
        self.banned.lock().unwrap().insert(who.clone());
    }

    fn lift(&self, who: &ServicePath) {
        self.banned.lock().unwrap().remove(who);
    }
}

impl AccessControl for BanList {
    fn permitted(&self, principal: &ServicePath, _service: &ServicePath) -> Operations {
        self.asked.fetch_add(1, Ordering::Relaxed);
        if self.banned.lock().unwrap().contains(principal) {
            Operations::NONE
        } else {
            Operations::ALL
        }
    }
}

/// A Battle instance: echoes requests, reports notifications as "INSTANCE BODY".
async fn battle(
    discovery: &MemoryDiscovery,
    builder: dms::NodeBuilder,
) -> (Node, mpsc::Receiver<String>) {
    let node = builder.discovery(discovery.clone()).start().await.unwrap();
    let (notes_tx, notes) = mpsc::channel(64);
    let server = node.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next_request().await {
            if request.expects_reply() {
                let body = request.body().clone();
                let _ = request.reply(body).await;
            } else {
                let body = String::from_utf8_lossy(&request.body()[0]).into_owned();
                let _ = notes_tx
                    .send(format!("{} {body}", request.from().instance()))
                    .await;
            }
        }
    });
    (node, notes)
}

/// A Lobby instance targeting Battle, once it has a ready Battle instance.
async fn lobby(discovery: &MemoryDiscovery, name: &str) -> Node {
    let lobby = node_builder(instance("Lobby", name))
        .target(cluster("Battle"))
        .request_timeout(Duration::from_secs(10))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    within(
        "battle ready",
        lobby.wait_for_instances(&cluster("Battle"), 1, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    lobby
}

async fn ask(lobby: &Node, text: &'static str) -> Result<dms::Reply, RequestError> {
    lobby
        .request(&cluster("Battle"), "p", Multipart::from_frames([text]))
        .await
}

/// The ACL principal patterns `path` published in its registration.
async fn published_acl(discovery: &MemoryDiscovery, path: &ServicePath) -> Option<Vec<String>> {
    let node = discovery.get(&instance_key(path).unwrap()).await.unwrap();
    Registration::decode(&node.entry.unwrap().value)
        .unwrap()
        .acl
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_made_while_the_node_runs_refuses_the_next_request_of_an_open_session() {
    let discovery = MemoryDiscovery::new();
    let bans = Arc::new(BanList::default());
    let (battle, mut notes) = battle(
        &discovery,
        node_builder(instance("Battle", "battle-1")).access_control(bans.clone()),
    )
    .await;
    let good = lobby(&discovery, "lobby-1").await;
    let cheater = lobby(&discovery, "lobby-2").await;
    let cheater_path = instance("Lobby", "lobby-2");

    // Before the ban both are served.
    assert_eq!(&ask(&good, "a").await.unwrap().body[0][..], b"a");
    assert_eq!(&ask(&cheater, "b").await.unwrap().body[0][..], b"b");
    let asked_before = bans.asked.load(Ordering::Relaxed);

    // The ban: the next request of the open session is refused at once, typed.
    bans.ban(&cheater_path);
    let started = Instant::now();
    let denied = ask(&cheater, "c").await;
    let took = started.elapsed();
    match &denied {
        Err(RequestError::Denied { service, op, .. }) => {
            assert_eq!(service, &instance("Battle", "battle-1"));
            assert_eq!(*op, Operation::Request);
        }
        other => panic!("{other:?}"),
    }
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(denied.unwrap_err().outcome(), dms::Outcome::NotSent);
    assert!(
        bans.asked.load(Ordering::Relaxed) > asked_before,
        "the hook is asked per request"
    );
    assert_eq!(battle.protocol_stats().acl_denied_requests, 1);

    // Its notification is dropped and counted; the other lobby is untouched.
    cheater
        .notify(&cluster("Battle"), "p", Multipart::from_frames(["sneaky"]))
        .await
        .unwrap();
    within("counted", async {
        while battle.protocol_stats().acl_denied_notifications < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(&ask(&good, "d").await.unwrap().body[0][..], b"d");
    good.notify(&cluster("Battle"), "p", Multipart::from_frames(["fine"]))
        .await
        .unwrap();
    assert_eq!(
        within("delivered", notes.recv()).await.unwrap(),
        "lobby-1 fine"
    );
    assert!(notes.try_recv().is_err(), "the banned notification arrived");
    // The refused session stays up: refusals are per message.
    let status = cheater.instances(&cluster("Battle")).await;
    assert!(
        status.iter().all(|s| s.state == dms::InstanceState::Ready),
        "{status:?}"
    );

    // Lifting the ban lets the same session back in.
    bans.lift(&cheater_path);
    assert_eq!(&ask(&cheater, "e").await.unwrap().body[0][..], b"e");
    assert_eq!(battle.protocol_stats().acl_denied_requests, 1);

    // A hook alone publishes its connect principals (the default: anyone).
    assert_eq!(
        published_acl(&discovery, battle.path()).await,
        Some(vec!["*".to_owned()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_principal_is_refused_at_ready() {
    let discovery = MemoryDiscovery::new();
    let bans = Arc::new(BanList::default());
    bans.ban(&instance("Club", "club-1"));
    let (battle, _notes) = battle(
        &discovery,
        node_builder(instance("Battle", "battle-1")).access_control(bans.clone()),
    )
    .await;
    let club = node_builder(instance("Club", "club-1"))
        .target(cluster("Battle"))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let denied = within("refusal", async {
        loop {
            match club
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
    assert!(
        matches!(
            &denied,
            Err(RequestError::Denied {
                op: Operation::Connect,
                ..
            })
        ),
        "{denied:?}"
    );
    assert_eq!(battle.protocol_stats().acl_denied_connects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_policy_and_a_hook_both_must_allow() {
    let discovery = MemoryDiscovery::new();
    let bans = Arc::new(BanList::default());
    // The policy lets every Lobby do everything (and nobody else anything); the hook
    // lets everyone do everything until it bans someone.
    let (battle, _notes) = battle(
        &discovery,
        node_builder(instance("Battle", "battle-1"))
            .allow(cluster("Lobby"))
            .access_control(bans.clone()),
    )
    .await;
    let good = lobby(&discovery, "lobby-1").await;
    let cheater = lobby(&discovery, "lobby-2").await;
    assert_eq!(&ask(&good, "a").await.unwrap().body[0][..], b"a");
    assert_eq!(&ask(&cheater, "b").await.unwrap().body[0][..], b"b");

    // The hook narrows the policy ...
    bans.ban(&instance("Lobby", "lobby-2"));
    assert!(matches!(
        ask(&cheater, "c").await,
        Err(RequestError::Denied {
            op: Operation::Request,
            ..
        })
    ));
    assert_eq!(&ask(&good, "d").await.unwrap().body[0][..], b"d");

    // ... and never widens it: a Club, allowed everything by the hook, is refused by the
    // policy at READY.
    let club = node_builder(instance("Club", "club-1"))
        .target(cluster("Battle"))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let denied = within("refusal", async {
        loop {
            match club
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
    assert!(
        matches!(
            &denied,
            Err(RequestError::Denied {
                op: Operation::Connect,
                ..
            })
        ),
        "{denied:?}"
    );

    // With a policy, the registration publishes the policy's connect principals.
    assert_eq!(
        published_acl(&discovery, battle.path()).await,
        Some(vec![cluster("Lobby").to_string()])
    );
}

/// Through a broker, the hook judges the origin: banning lobby-2 while it runs refuses
/// its next routed request at the destination, and lobby-1's requests through the same
/// broker still pass.
#[cfg(feature = "tcp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_broker_the_hook_judges_the_origin() {
    let discovery = MemoryDiscovery::new();
    let broker = node_builder(instance("Broker", "broker-1"))
        .broker()
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let bans = Arc::new(BanList::default());
    let (trade, _notes) = battle(
        &discovery,
        node_builder(instance("Trade", "trade-1"))
            .target(cluster("Broker"))
            .access_control(bans.clone()),
    )
    .await;
    let mut lobbies = Vec::new();
    for name in ["lobby-1", "lobby-2"] {
        let node = node_builder(instance("Lobby", name))
            .target(cluster("Broker"))
            .routed_target(cluster("Trade"))
            .request_timeout(Duration::from_secs(10))
            .discovery(discovery.clone())
            .start()
            .await
            .unwrap();
        within(
            "trade reachable",
            node.wait_for_instances(&cluster("Trade"), 1, Duration::from_secs(10)),
        )
        .await
        .unwrap();
        lobbies.push(node);
    }
    let trade_ask = |node: &Node| {
        let node = node.clone();
        async move {
            node.request(&cluster("Trade"), "k", Multipart::from_frames(["t"]))
                .await
        }
    };
    assert_eq!(trade_ask(&lobbies[1]).await.unwrap().from, *trade.path());
    bans.ban(&instance("Lobby", "lobby-2"));
    match trade_ask(&lobbies[1]).await {
        Err(RequestError::Denied { service, op, .. }) => {
            assert_eq!(&service, trade.path());
            assert_eq!(op, Operation::Request);
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    assert_eq!(trade_ask(&lobbies[0]).await.unwrap().from, *trade.path());
    assert_eq!(trade.protocol_stats().acl_denied_requests, 1);
    drop(broker);
}
