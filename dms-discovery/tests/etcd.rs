//! The etcd backend against real etcd servers (`dms_test_support::etcd`, one per test):
//! the whole discovery conformance suite, then what only a real server shows: compaction,
//! leases that lapse or are revoked, watches that survive an etcd restart, and a
//! 3-member cluster losing its leader.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![cfg(feature = "etcd")]

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dms_discovery::etcd::{EtcdDiscovery, EtcdLease, EtcdOptions, EtcdWatch};
use dms_discovery::{Discovery, DiscoveryError, Key, Lease, Revision, WatchEvent, next_event};
use dms_test_support::discovery::DiscoveryFactory;
use dms_test_support::etcd::{EtcdCluster, EtcdServer};
use dms_test_support::wait::{DEADLINE, within};

/// A fresh etcd per check: compaction in one check must not reach another's history.
struct Etcd {
    server: EtcdServer,
}

impl Etcd {
    fn start() -> Self {
        logs();
        Self {
            server: EtcdServer::start(),
        }
    }
}

impl DiscoveryFactory for Etcd {
    type D = EtcdDiscovery;

    fn create(&self) -> EtcdDiscovery {
        // `create` is synchronous; the suite runs on a multi-threaded runtime.
        let endpoints = [self.server.endpoint()];
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current()
                .block_on(EtcdDiscovery::connect(&endpoints, EtcdOptions::default()))
        })
        .unwrap()
    }

    async fn compact(&self, d: &EtcdDiscovery, revision: Revision) -> bool {
        d.compact(revision).await.unwrap();
        true
    }
}

dms_test_support::discovery_conformance_tests!(Etcd::start());

/// Logs to the test's output (shown for failed tests) as `RUST_LOG` says, e.g.
/// `RUST_LOG=dms_discovery=debug`.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn key(k: &str) -> Key {
    Key::new(k).unwrap()
}

async fn connect(endpoints: &[String]) -> EtcdDiscovery {
    logs();
    within(
        "connect",
        EtcdDiscovery::connect(endpoints, EtcdOptions::default()),
    )
    .await
    .unwrap()
}

async fn next(w: &mut EtcdWatch) -> WatchEvent {
    match within("a watch event", next_event(w)).await {
        Some(Ok(event)) => event,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

/// Retries `op` until it succeeds (the cluster may be electing a leader, the client
/// reconnecting), failing the test after [`DEADLINE`].
async fn eventually<T, Fut>(what: &str, mut op: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Result<T, DiscoveryError>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        match op().await {
            Ok(value) => return value,
            Err(error) if Instant::now() < deadline => {
                eprintln!("{what}: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("{what}: still failing after {DEADLINE:?}: {error}"),
        }
    }
}

/// Creates `k` (value "v"), retrying until etcd answers; returns the create revision. A
/// create whose answer was lost may have been applied: `AlreadyExists` then means our own
/// earlier attempt. (Unlike `set`, a retried create never writes twice.)
async fn create_once(d: &EtcdDiscovery, k: &Key) -> Revision {
    eventually("create", || async {
        match d.create(k, "v".into(), None).await {
            Err(DiscoveryError::AlreadyExists { .. }) => {
                Ok(d.get(k).await?.entry.map_or(0, |e| e.create_revision))
            }
            other => other,
        }
    })
    .await
}

/// A raw etcd client, to act behind the backend's back.
async fn raw_client(endpoint: &str) -> etcd_client::Client {
    within(
        "raw connect",
        etcd_client::Client::connect([endpoint], None),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_nothing_fails_fast_and_says_where() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    let options = EtcdOptions {
        connect_timeout: Duration::from_secs(1),
        ..EtcdOptions::default()
    };
    let started = Instant::now();
    let error = within(
        "connect",
        EtcdDiscovery::connect(std::slice::from_ref(&endpoint), options),
    )
    .await
    .unwrap_err();
    let DiscoveryError::Unavailable(message) = &error else {
        panic!("expected Unavailable, got {error:?}");
    };
    assert!(message.contains(&endpoint), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(
        EtcdDiscovery::connect(&[], EtcdOptions::default()).await,
        Err(DiscoveryError::Unavailable(_))
    ));
    assert!(matches!(
        EtcdDiscovery::connect(&["https://127.0.0.1:1".into()], EtcdOptions::default()).await,
        Err(DiscoveryError::Unavailable(_))
    ));
}

/// Compaction through the raw client: a watch from before it reports `Compacted` with
/// etcd's compaction revision as `oldest`, then ends; watching from `oldest` works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_compacted_revision_reports_compacted() {
    let etcd = EtcdServer::start();
    let d = connect(&[etcd.endpoint()]).await;
    let k = key("/compaction/k");
    let mut revisions = Vec::new();
    for n in 0..4u8 {
        revisions.push(d.set(&k, Bytes::from(vec![n]), None).await.unwrap());
    }
    assert_eq!(d.revision().await.unwrap(), revisions[3]);
    let mut raw = raw_client(&etcd.endpoint()).await;
    raw.compact(i64::try_from(revisions[2]).unwrap(), None)
        .await
        .unwrap();
    // Compacting again, or less, is a no-op; beyond the current revision, an error.
    d.compact(revisions[2]).await.unwrap();
    d.compact(revisions[1]).await.unwrap();
    assert!(d.compact(revisions[3] + 100).await.is_err());
    let requested = revisions[0];
    let reported = match d.watch(&key("/compaction"), Some(requested)).await {
        Err(error) => error,
        Ok(mut w) => {
            let error = within("the error", next_event(&mut w)).await;
            assert!(within("the end", next_event(&mut w)).await.is_none());
            error.unwrap().unwrap_err()
        }
    };
    assert_eq!(
        reported,
        DiscoveryError::Compacted {
            requested,
            oldest: revisions[2]
        }
    );
    let mut w = d
        .watch(&key("/compaction"), Some(revisions[2]))
        .await
        .unwrap();
    assert_eq!(next(&mut w).await.revision(), revisions[3]);
}

/// The owner dies (its runtime, and with it the keep-alive task, is gone, without a
/// revoke): etcd expires the lease after its TTL, deletes the key, and the watcher sees
/// the `Delete`. The TTL is etcd's: 1 s asked, etcd's 2 s minimum granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_of_a_dead_owner_lapses() {
    let etcd = EtcdServer::start();
    let endpoint = etcd.endpoint();
    let d = connect(std::slice::from_ref(&endpoint)).await;
    let k = key("/lapse/owner");
    let mut w = d.watch(&key("/lapse"), None).await.unwrap();

    let owner = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (lease, created) = runtime.block_on(async {
            let d = EtcdDiscovery::connect(&[endpoint], EtcdOptions::default())
                .await
                .unwrap();
            let lease = d.lease(Duration::from_secs(1)).await.unwrap();
            let created = d
                .create(&key("/lapse/owner"), "me".into(), Some(&lease))
                .await;
            (lease, created.unwrap())
        });
        let ttl = lease.ttl();
        // The process "dies": its tasks stop without running another step...
        drop(runtime);
        // ... and a lease dropped without a runtime revokes nothing (and does not panic).
        drop(lease);
        (created, ttl)
    });
    let (created, ttl) = within("the owner", async { owner.join() }).await.unwrap();
    assert_eq!(ttl, Duration::from_secs(2), "etcd's minimum TTL");
    let died = Instant::now();

    match next(&mut w).await {
        WatchEvent::Put(entry) => assert_eq!((entry.key, entry.mod_revision), (k.clone(), created)),
        other => panic!("expected the owner's put, got {other:?}"),
    }
    match next(&mut w).await {
        WatchEvent::Delete { key, revision } => {
            assert_eq!(key, k);
            assert!(revision > created);
        }
        other => panic!("expected the expiry's delete, got {other:?}"),
    }
    // Not before the TTL (it was not revoked), well within the deadline.
    assert!(
        died.elapsed() >= ttl / 2,
        "deleted after {:?}",
        died.elapsed()
    );
    assert_eq!(d.get(&k).await.unwrap().entry, None);
}

/// While the owner holds the lease, keep-alives keep it (and its key) past several TTLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_holds_the_lease_past_its_ttl() {
    let etcd = EtcdServer::start();
    let d = connect(&[etcd.endpoint()]).await;
    let lease = d.lease(Duration::from_secs(2)).await.unwrap();
    let k = key("/kept/k");
    d.create(&k, "v".into(), Some(&lease)).await.unwrap();
    let mut w = d.watch(&key("/kept"), None).await.unwrap();
    // Waiting out three TTLs is the point here: nothing may happen meanwhile.
    let quiet = tokio::time::timeout(lease.ttl() * 3, next_event(&mut w)).await;
    assert!(quiet.is_err(), "unexpected {quiet:?}");
    assert!(!lease.is_expired());
    assert!(d.get(&k).await.unwrap().entry.is_some());
}

/// Dropping an `EtcdLease` revokes it at once: with a 60 s TTL, its keys are deleted well
/// before the test's deadline, which an expiry could not do. `revoke` waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_or_revoking_a_lease_deletes_its_keys_at_once() {
    let etcd = EtcdServer::start();
    let d = connect(&[etcd.endpoint()]).await;
    let ttl = Duration::from_secs(60);
    let ns = key("/revoke");
    let (a, b, c) = (
        ns.child("a").unwrap(),
        ns.child("b").unwrap(),
        ns.child("c").unwrap(),
    );
    let dropped = d.lease(ttl).await.unwrap();
    assert_eq!(dropped.ttl(), ttl);
    d.create(&a, "a".into(), Some(&dropped)).await.unwrap();
    d.set(&b, "b".into(), Some(&dropped)).await.unwrap();
    let mut w = d.watch(&ns, None).await.unwrap();
    drop(dropped);
    let mut deleted = [next(&mut w).await, next(&mut w).await];
    deleted.sort_by(|x, y| x.key().cmp(y.key()));
    assert!(
        matches!(&deleted[..], [WatchEvent::Delete { key: x, .. }, WatchEvent::Delete { key: y, .. }] if (x, y) == (&a, &b))
    );

    let revoked = d.lease(ttl).await.unwrap();
    d.create(&c, "c".into(), Some(&revoked)).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Put(_)));
    within("revoke", revoked.revoke()).await.unwrap();
    assert_eq!(
        d.get(&c).await.unwrap().entry,
        None,
        "deleted when revoke returns"
    );
    assert!(matches!(next(&mut w).await, WatchEvent::Delete { key, .. } if key == c));
}

/// The owner learns that its lease is lost: when somebody else revokes it (keep-alive
/// answers TTL 0), and when etcd stays unreachable for longer than the TTL. Writes with
/// a lost lease fail with `LeaseExpired`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_lease_is_reported_to_its_owner() {
    let mut etcd = EtcdServer::start();
    let d = connect(&[etcd.endpoint()]).await;

    let revoked = d.lease(Duration::from_secs(2)).await.unwrap();
    let mut raw = raw_client(&etcd.endpoint()).await;
    raw.lease_revoke(i64::try_from(revoked.id()).unwrap())
        .await
        .unwrap();
    within("the revoked lease to be reported", revoked.expired()).await;
    assert!(revoked.is_expired());
    assert_eq!(
        d.create(&key("/lost/x"), Bytes::new(), Some(&revoked))
            .await,
        Err(DiscoveryError::LeaseExpired)
    );

    let cut_off = d.lease(Duration::from_secs(2)).await.unwrap();
    let k = key("/lost/cut-off");
    d.create(&k, Bytes::new(), Some(&cut_off)).await.unwrap();
    assert!(!cut_off.is_expired());
    etcd.kill();
    let killed = Instant::now();
    within("the cut-off lease to be reported", cut_off.expired()).await;
    assert!(
        killed.elapsed() >= cut_off.ttl() / 2,
        "{:?}",
        killed.elapsed()
    );
    assert!(cut_off.is_expired());
    // etcd comes back with the lease, which nobody keeps alive any more: its key goes.
    etcd.restart();
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(node) = d.get(&k).await {
            if node.entry.is_none() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "{k} outlived its lost lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A watch survives an etcd restart: the same stream delivers, in order and once, what
/// was written before, and after the restart, including writes made before it had
/// reconnected. Meanwhile, operations fail with `Unavailable` instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_etcd_restart() {
    let mut etcd = EtcdServer::start();
    let d = connect(&[etcd.endpoint()]).await;
    let ns = key("/restart");
    let (a, b, c) = (
        ns.child("a").unwrap(),
        ns.child("b").unwrap(),
        ns.child("c").unwrap(),
    );
    let mut w = d.watch(&ns, None).await.unwrap();
    let ra = d.set(&a, "a".into(), None).await.unwrap();
    assert_eq!(next(&mut w).await.revision(), ra);

    etcd.kill();
    let down = within("a write while etcd is down", d.set(&b, "lost".into(), None)).await;
    assert!(
        matches!(down, Err(DiscoveryError::Unavailable(_))),
        "{down:?}"
    );

    etcd.restart();
    let rb = eventually("set b", || d.set(&b, "b".into(), None)).await;
    let rc = d.set(&c, "c".into(), None).await.unwrap();
    let got = [next(&mut w).await, next(&mut w).await];
    assert_eq!(
        got.iter()
            .map(|e| (e.key().clone(), e.revision()))
            .collect::<Vec<_>>(),
        [(b, rb), (c, rc)]
    );
    // Nothing else is pending: the next event is the next write.
    let rd = d.delete(&a).await.unwrap().unwrap();
    assert_eq!(
        next(&mut w).await,
        WatchEvent::Delete {
            key: a,
            revision: rd
        }
    );
}

/// A 3-member cluster loses its leader: a client given all three endpoints still
/// creates, reads and watches (the watch resumes if it was on the killed member), and its
/// lease survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keeps_serving_when_the_leader_dies() {
    let mut cluster = EtcdCluster::start(3);
    let d = connect(&cluster.endpoints()).await;
    let ns = key("/cluster");
    let (before, after) = (ns.child("before").unwrap(), ns.child("after").unwrap());
    let lease: EtcdLease = d.lease(Duration::from_secs(5)).await.unwrap();
    let r1 = d.create(&before, "1".into(), Some(&lease)).await.unwrap();
    let mut w = d.watch(&ns, Some(r1 - 1)).await.unwrap();
    assert_eq!(next(&mut w).await.revision(), r1);

    let leader = cluster.wait_for_leader();
    cluster.kill_member(leader);
    let new_leader = cluster.wait_for_leader();
    assert_ne!(new_leader, leader);

    let r2 = create_once(&d, &after).await;
    let node = eventually("get", || d.get(&ns)).await;
    assert_eq!(
        node.children.iter().map(|e| &e.key).collect::<Vec<_>>(),
        [&after, &before]
    );
    match next(&mut w).await {
        WatchEvent::Put(entry) => assert_eq!((entry.key, entry.mod_revision), (after, r2)),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!lease.is_expired());
    // A new watch works too.
    let mut fresh = eventually("watch", || d.watch(&ns, None)).await;
    let r3 = eventually("delete", || d.delete(&before)).await;
    assert_eq!(next(&mut fresh).await.revision(), r3.unwrap());
    assert_eq!(next(&mut w).await.revision(), r3.unwrap());
}

/// Every member of a 3-member cluster is killed and restarted in turn, so whichever
/// member the watch's stream is on dies at some point: the watch resumes on another and
/// delivers every write exactly once, in order; the lease is kept alive throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_lease_survive_a_rolling_restart() {
    let mut cluster = EtcdCluster::start(3);
    let d = connect(&cluster.endpoints()).await;
    let ns = key("/rolling");
    let lease = d.lease(Duration::from_secs(5)).await.unwrap();
    let owned = ns.child("owned").unwrap();
    d.create(&owned, "mine".into(), Some(&lease)).await.unwrap();
    let mut w = d.watch(&ns, None).await.unwrap();
    let mut written = Vec::new();
    for member in 0..cluster.size() {
        cluster.kill_member(member);
        let down = ns.child(&format!("{member}-down")).unwrap();
        written.push((down.clone(), create_once(&d, &down).await));
        cluster.restart_member(member);
        let up = ns.child(&format!("{member}-up")).unwrap();
        written.push((up.clone(), create_once(&d, &up).await));
    }
    let mut seen = Vec::new();
    for _ in 0..written.len() {
        let event = next(&mut w).await;
        seen.push((event.key().clone(), event.revision()));
    }
    assert_eq!(seen, written);
    assert!(!lease.is_expired());
    assert!(eventually("get", || d.get(&owned)).await.entry.is_some());
}

/// How long an operation may take right after the leader died: enough to wait out the
/// election (1 to 2 s with etcd's default 1 s election timeout) and one more attempt, and
/// less than half of the request timeout of [`patient`] options, which an operation stuck
/// on a dead or leaderless member would use up.
const PROMPTLY: Duration = Duration::from_secs(4);

/// Options whose request timeout is well above [`PROMPTLY`].
fn patient() -> EtcdOptions {
    EtcdOptions {
        request_timeout: Duration::from_secs(10),
        ..EtcdOptions::default()
    }
}

/// Awaits `fut`, failing the test with `what` if it takes longer than [`PROMPTLY`].
async fn promptly<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PROMPTLY, fut).await {
        Ok(value) => value,
        Err(_) => panic!("{what} took longer than {PROMPTLY:?}"),
    }
}

/// A 3-member cluster whose leader was killed (and not yet replaced) BEFORE the client
/// was created, with the dead member's endpoint first or last in the client's list:
/// connecting, granting a lease, creating, reading, watching and revoking all work
/// promptly, and the lease is kept alive for 3 TTLs. A client connected before the kill,
/// with its watch and lease keep-alive streams on the (then) leader, keeps both.
async fn fresh_client_after_the_leader_died(dead_first: bool) {
    logs();
    let mut cluster = EtcdCluster::start(3);
    let leader = cluster.wait_for_leader();
    let endpoints = cluster.endpoints();
    let dead = endpoints[leader].clone();
    let alive: Vec<String> = endpoints.iter().filter(|e| **e != dead).cloned().collect();
    let ns = key("/fresh");

    // The endpoints, with the leader's first or last.
    let with_dead = |first: bool| -> Vec<String> {
        let (mut list, dead) = (alive.clone(), dead.clone());
        if first {
            list.insert(0, dead);
        } else {
            list.push(dead);
        }
        list
    };
    // Connected before the kill, with the leader first: its streams are on the leader.
    let early = connect(&with_dead(true)).await;
    let early_lease = early.lease(Duration::from_secs(5)).await.unwrap();
    let early_key = ns.child("early").unwrap();
    early
        .create(&early_key, "early".into(), Some(&early_lease))
        .await
        .unwrap();
    let mut early_watch = early.watch(&ns, None).await.unwrap();
    // Let a keep-alive go through first, so that its stream is open, on the leader: the
    // remaining TTL etcd reports (whole seconds) goes back up.
    let mut raw = raw_client(&dead).await;
    let id = i64::try_from(early_lease.id()).unwrap();
    within("a keep-alive of the early lease", async {
        let mut lowest = i64::MAX;
        loop {
            let ttl = raw.lease_time_to_live(id, None).await.unwrap().ttl();
            if ttl > lowest {
                break;
            }
            lowest = lowest.min(ttl);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    // No waiting for a new leader: the client must cope with the election too.
    cluster.kill_member(leader);

    let d = promptly(
        "connect",
        EtcdDiscovery::connect(&with_dead(dead_first), patient()),
    )
    .await
    .unwrap();
    let lease = promptly("lease grant", d.lease(Duration::from_secs(2)))
        .await
        .unwrap();
    let mut w = promptly("watch", d.watch(&ns, None)).await.unwrap();
    let k = ns.child("fresh").unwrap();
    let created = promptly("create", d.create(&k, "v".into(), Some(&lease)))
        .await
        .unwrap();
    let node = promptly("get", d.get(&k)).await.unwrap();
    assert_eq!(
        node.entry.map(|e| (e.key, e.create_revision)),
        Some((k.clone(), created))
    );
    for (name, watch) in [("fresh", &mut w), ("early", &mut early_watch)] {
        match promptly(name, next_event(watch)).await {
            Some(Ok(WatchEvent::Put(entry))) => {
                assert_eq!((&entry.key, entry.mod_revision), (&k, created), "{name}");
            }
            other => panic!("{name} watch: expected the put, got {other:?}"),
        }
    }

    // Both leases are kept alive (the early one's keep-alive stream was on the dead
    // member): nothing happens for three TTLs of the longer one.
    let quiet = early_lease.ttl().max(lease.ttl()) * 3;
    let events = tokio::time::timeout(quiet, async {
        tokio::select! {
            event = next_event(&mut w) => ("fresh", event),
            event = next_event(&mut early_watch) => ("early", event),
        }
    })
    .await;
    assert!(events.is_err(), "unexpected {events:?}");
    assert!(!lease.is_expired());
    assert!(!early_lease.is_expired());
    let node = promptly("get", d.get(&ns)).await.unwrap();
    assert_eq!(
        node.children.iter().map(|e| &e.key).collect::<Vec<_>>(),
        [&early_key, &k]
    );

    promptly("revoke", lease.revoke()).await.unwrap();
    match promptly("the revoke's delete", next_event(&mut w)).await {
        Some(Ok(WatchEvent::Delete { key, .. })) => assert_eq!(key, k),
        other => panic!("expected the delete, got {other:?}"),
    }
    assert_eq!(promptly("get", d.get(&k)).await.unwrap().entry, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_client_works_with_the_dead_leader_first_in_its_endpoints() {
    fresh_client_after_the_leader_died(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_client_works_with_the_dead_leader_last_in_its_endpoints() {
    fresh_client_after_the_leader_died(false).await;
}
