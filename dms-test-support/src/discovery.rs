//! The [`Discovery`] conformance suite.
//!
//! Each check builds a fresh discovery handle through a [`DiscoveryFactory`] and works
//! under its own namespace (unique per check and per run), so checks are independent
//! even against a shared server. Revisions are only compared with each other, never with
//! absolute numbers. A backend crate runs all of them:
//!
//! ```ignore
//! dms_test_support::discovery_conformance_tests!(MemoryFactory);
//! ```

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dms_discovery::{
    Discovery, DiscoveryError, Entry, Key, KeyError, Lease, Node, Revision, WatchEvent, next_event,
};
use futures_core::Stream;

use crate::wait::within;

/// Makes discovery handles of one backend for the suite.
pub trait DiscoveryFactory {
    /// The backend.
    type D: Discovery;

    /// A new handle. Handles from one factory may share a store; every check works
    /// under its own namespace.
    fn create(&self) -> Self::D;

    /// Drops the event history of `d`'s store up to `revision` (memory: `compact`; etcd:
    /// the compaction RPC). Returns false if the backend cannot compact on demand; the
    /// [`compacted_is_reported`] check is then skipped.
    fn compact(&self, d: &Self::D, revision: Revision) -> impl Future<Output = bool> {
        let _ = (d, revision);
        async { false }
    }
}

/// A watch stream of the backend under test.
trait WatchStream: Stream<Item = Result<WatchEvent, DiscoveryError>> + Unpin {}

impl<W: Stream<Item = Result<WatchEvent, DiscoveryError>> + Unpin> WatchStream for W {}

fn key(text: &str) -> Key {
    Key::new(text).expect("valid key")
}

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// A key no other check, and no other run, uses: `/dms-conformance/<check>/<run>`.
fn namespace(check: &str) -> Key {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let run = format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    key("/dms-conformance")
        .child(check)
        .and_then(|k| k.child(&run))
        .expect("valid namespace")
}

fn child(parent: &Key, segment: &str) -> Key {
    parent.child(segment).expect("valid segment")
}

/// A key next to `k` whose name extends `k`'s last segment (`/x/ab` for `/x/a`): a
/// string prefix match but not a segment prefix match.
fn string_sibling(k: &Key, suffix: &str) -> Key {
    let parent = k.parent().expect("namespace has a parent");
    child(&parent, &format!("{}{suffix}", k.last_segment()))
}

async fn create<D: Discovery>(d: &D, k: &Key, value: &str, lease: Option<&D::Lease>) -> Revision {
    within("create", d.create(k, bytes(value), lease))
        .await
        .unwrap_or_else(|e| panic!("create {k}: {e}"))
}

async fn set<D: Discovery>(d: &D, k: &Key, value: &str, lease: Option<&D::Lease>) -> Revision {
    within("set", d.set(k, bytes(value), lease))
        .await
        .unwrap_or_else(|e| panic!("set {k}: {e}"))
}

async fn delete<D: Discovery>(d: &D, k: &Key) -> Option<Revision> {
    within("delete", d.delete(k))
        .await
        .unwrap_or_else(|e| panic!("delete {k}: {e}"))
}

async fn get<D: Discovery>(d: &D, k: &Key) -> Node {
    within("get", d.get(k))
        .await
        .unwrap_or_else(|e| panic!("get {k}: {e}"))
}

async fn watch<D: Discovery>(d: &D, prefix: &Key, from: Option<Revision>) -> D::Watch {
    within("watch", d.watch(prefix, from))
        .await
        .unwrap_or_else(|e| panic!("watch {prefix} from {from:?}: {e}"))
}

async fn lease<D: Discovery>(d: &D, ttl: Duration) -> D::Lease {
    within("lease", d.lease(ttl))
        .await
        .unwrap_or_else(|e| panic!("lease: {e}"))
}

/// The next event of `w`, failing on an error or the end of the stream.
async fn event(w: &mut impl WatchStream) -> WatchEvent {
    match within("a watch event", next_event(w)).await {
        Some(Ok(event)) => event,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

/// The next `n` events of `w`.
async fn events(w: &mut impl WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(event(w).await);
    }
    got
}

fn keys_of(events: &[WatchEvent]) -> Vec<&str> {
    events.iter().map(|e| e.key().as_str()).collect()
}

fn assert_increasing(events: &[WatchEvent]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].revision() < pair[1].revision(),
            "revisions out of order: {pair:?}"
        );
    }
}

fn put(k: &Key, value: &str, create_revision: Revision, mod_revision: Revision) -> WatchEvent {
    WatchEvent::Put(Entry {
        key: k.clone(),
        value: bytes(value),
        create_revision,
        mod_revision,
    })
}

/// `create` of an existing key fails with `AlreadyExists` and changes nothing; once the
/// key is deleted it can be created again, with a new create revision.
pub async fn create_conflict<F: DiscoveryFactory>(factory: &F) {
    let d = factory.create();
    let k = child(&namespace("create_conflict"), "k");
    let first = create(&d, &k, "one", None).await;
    match within("second create", d.create(&k, bytes("two"), None)).await {
        Err(DiscoveryError::AlreadyExists { key }) => assert_eq!(key, k),
        other => panic!("create of an existing key: {other:?}"),
    }
    let entry = get(&d, &k).await.entry.expect("key exists");
    assert_eq!(
        entry,
        Entry {
            key: k.clone(),
            value: bytes("one"),
            create_revision: first,
            mod_revision: first,
        },
        "a failed create changes nothing"
    );
    let deleted = delete(&d, &k).await.expect("key existed");
    assert!(deleted > first);
    let again = create(&d, &k, "three", None).await;
    assert!(again > deleted);
    let entry = get(&d, &k).await.entry.expect("recreated");
    assert_eq!(
        (entry.value, entry.create_revision, entry.mod_revision),
        (bytes("three"), again, again)
    );
}

/// `set` creates or overwrites; `get` returns the value with its create and mod revisions
/// and reads at a revision no older than the write. Values are opaque bytes (empty and
/// binary values survive). A key never written reads as absent.
pub async fn set_get_roundtrip<F: DiscoveryFactory>(factory: &F) {
    let d = factory.create();
    let ns = namespace("set_get_roundtrip");
    let k = child(&ns, "k");
    let missing = get(&d, &child(&ns, "missing")).await;
    assert_eq!((missing.entry, missing.children), (None, Vec::new()));

    let first = set(&d, &k, "v1", None).await;
    let node = get(&d, &k).await;
    assert_eq!(
        node.entry,
        Some(Entry {
            key: k.clone(),
            value: bytes("v1"),
            create_revision: first,
            mod_revision: first,
        })
    );
    assert!(node.revision >= first, "{node:?} read before write {first}");

    let second = set(&d, &k, "v2", None).await;
    assert!(second > first, "revisions increase: {first} then {second}");
    let entry = get(&d, &k).await.entry.expect("key exists");
    assert_eq!(
        (entry.value, entry.create_revision, entry.mod_revision),
        (bytes("v2"), first, second),
        "overwrite keeps the create revision"
    );

    let binary = Bytes::from_static(&[0, 255, 10, 0]);
    within("set binary", d.set(&k, binary.clone(), None))
        .await
        .expect("set");
    assert_eq!(get(&d, &k).await.entry.map(|e| e.value), Some(binary));
    within("set empty", d.set(&k, Bytes::new(), None))
        .await
        .expect("set");
    assert_eq!(get(&d, &k).await.entry.map(|e| e.value), Some(Bytes::new()));
}

/// `get` lists the direct children only (one more segment, sorted by key), never
/// grandchildren or string-prefix siblings; a key can have children without existing.
pub async fn get_returns_direct_children_only<F: DiscoveryFactory>(factory: &F) {
    let d = factory.create();
    let ns = namespace("get_returns_direct_children_only");
    let (a, b, c) = (child(&ns, "a"), child(&ns, "b"), child(&ns, "c"));
    let deep = child(&c, "deep");
    let deeper = child(&deep, "er");
    set(&d, &ns, "parent", None).await;
    set(&d, &b, "vb", None).await; // written before `a`: children come sorted anyway
    set(&d, &a, "va", None).await;
    set(&d, &child(&a, "grandchild"), "x", None).await;
    set(&d, &deeper, "x", None).await; // `c` and `c/deep` do not exist
    set(&d, &string_sibling(&ns, "x"), "x", None).await;
    let last = set(&d, &string_sibling(&a, "b"), "vab", None).await;

    let node = get(&d, &ns).await;
    assert_eq!(node.entry.map(|e| e.value), Some(bytes("parent")));
    let children: Vec<_> = node
        .children
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    assert_eq!(
        children,
        [
            (a.clone(), bytes("va")),
            (string_sibling(&a, "b"), bytes("vab")),
            (b, bytes("vb")),
        ]
    );
    assert!(node.revision >= last);

    let c_node = get(&d, &c).await;
    assert_eq!(
        (c_node.entry, c_node.children),
        (None, Vec::new()),
        "grandchildren are not children"
    );
    let deep_node = get(&d, &deep).await;
    assert_eq!(deep_node.entry, None);
    assert_eq!(
        deep_node
            .children
            .iter()
            .map(|e| &e.key)
            .collect::<Vec<_>>(),
        [&deeper]
    );
}

/// `list` returns every entry a prefix covers, at any depth, sorted by key, read at a
/// revision no older than the last write; never string-prefix siblings. A prefix with
/// nothing under it lists nothing.
pub async fn list_covers_every_depth<F: DiscoveryFactory>(factory: &F) {
    let d = factory.create();
    let ns = namespace("list_covers_every_depth");
    let a = child(&ns, "a");
    let deep = child(&child(&child(&ns, "b"), "c"), "d");
    let sibling = string_sibling(&a, "b"); // `…/ab`: under `ns`, not under `a`
    let mut inside = vec![ns.clone(), a.clone(), child(&a, "x"), sibling, deep];
    for k in &inside {
        set(&d, k, k.last_segment(), None).await;
    }
    set(&d, &string_sibling(&ns, "x"), "outside", None).await;
    let last = set(&d, &string_sibling(&ns, "!"), "outside", None).await;

    let (entries, revision) = within("list", d.list(&ns))
        .await
        .unwrap_or_else(|e| panic!("list {ns}: {e}"));
    inside.sort();
    assert_eq!(
        entries.iter().map(|e| &e.key).collect::<Vec<_>>(),
        inside.iter().collect::<Vec<_>>()
    );
    assert!(
        revision >= last,
        "list read at {revision}, before write {last}"
    );
    let own = get(&d, &a).await.entry.expect("a exists");
    assert_eq!(entries.iter().find(|e| e.key == a), Some(&own));

    let (under_a, _) = within("list", d.list(&a)).await.expect("list a");
    assert_eq!(
        under_a.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        [a.as_str(), child(&a, "x").as_str()]
    );
    let (nothing, _) = within("list", d.list(&child(&ns, "missing")))
        .await
        .expect("list missing");
    assert_eq!(nothing, []);
}

/// `delete` returns the revision of the deletion, removes the key (not its children) and
/// returns `None` for a key that does not exist.
pub async fn delete_reports_revision_and_absence<F: DiscoveryFactory>(factory: &F) {
    let d = factory.create();
    let ns = namespace("delete_reports_revision_and_absence");
    let k = child(&ns, "k");
    let below = child(&k, "child");
    set(&d, &k, "v", None).await;
    let written = set(&d, &below, "c", None).await;
    let deleted = delete(&d, &k).await.expect("key existed");
    assert!(deleted > written);
    let node = get(&d, &k).await;
    assert_eq!(node.entry, None);
    assert!(node.revision >= deleted);
    assert_eq!(
        node.children.iter().map(|e| &e.key).collect::<Vec<_>>(),
        [&below],
        "children survive their parent's deletion"
    );
    assert_eq!(delete(&d, &k).await, None, "second delete");
    assert_eq!(delete(&d, &child(&ns, "never")).await, None);
    let later = set(&d, &k, "again", None).await;
    assert!(later > deleted);
}

/// A watch from now sees puts (with their entries) and deletes under its prefix, in
/// revision order, with the revisions the writes returned; nothing outside the prefix.
pub async fn watch_sees_ordered_put_and_delete<F: DiscoveryFactory>(factory: &F) {
    let d = factory.create();
    let ns = namespace("watch_sees_ordered_put_and_delete");
    let a = child(&ns, "a");
    let mut w = watch(&d, &ns, None).await;
    let r1 = create(&d, &a, "v1", None).await;
    let r2 = set(&d, &a, "v2", None).await;
    set(&d, &string_sibling(&ns, "x"), "outside", None).await;
    let r3 = delete(&d, &a).await.expect("existed");
    let r4 = set(&d, &ns, "prefix itself", None).await;
    let got = events(&mut w, 4).await;
    assert_eq!(
        got,
        [
            put(&a, "v1", r1, r1),
            put(&a, "v2", r1, r2),
            WatchEvent::Delete {
                key: a.clone(),
                revision: r3,
            },
            put(&ns, "prefix itself", r4, r4),
        ]
    );
    assert_increasing(&got);
}

/// A watch from a past revision first replays, in order, exactly the events after it,
/// then continues with live events.
pub async fn watch_from_revision_replays_history<F: DiscoveryFactory>(factory: &F) {
    let d = factory.create();
    let ns = namespace("watch_from_revision_replays_history");
    let (a, b, c) = (child(&ns, "a"), child(&ns, "b"), child(&ns, "c"));
    let r1 = set(&d, &a, "1", None).await;
    let r2 = set(&d, &b, "2", None).await;
    set(&d, &string_sibling(&ns, "x"), "outside", None).await;
    let r3 = delete(&d, &a).await.expect("existed");

    let mut w = watch(&d, &ns, Some(r1)).await;
    let replayed = events(&mut w, 2).await;
    assert_eq!(
        replayed,
        [
            put(&b, "2", r2, r2),
            WatchEvent::Delete {
                key: a.clone(),
                revision: r3,
            },
        ]
    );
    let r4 = set(&d, &c, "live", None).await;
    assert_eq!(event(&mut w).await, put(&c, "live", r4, r4));

    // From just before the first write: that write too.
    let mut all = watch(&d, &ns, Some(r1 - 1)).await;
    let got = events(&mut all, 4).await;
    assert_eq!(
        keys_of(&got),
        [a.as_str(), b.as_str(), a.as_str(), c.as_str()]
    );
    assert_eq!(got[0], put(&a, "1", r1, r1));
    assert_increasing(&got);

    // From the latest revision: only what comes next.
    let mut fresh = watch(&d, &ns, Some(r4)).await;
    let r5 = set(&d, &a, "5", None).await;
    assert_eq!(event(&mut fresh).await, put(&a, "5", r5, r5));
}

/// The resync pattern: `get`, then `watch` from the revision `get` returned, sees every
/// later write exactly once, including one made between the two calls.
pub async fn snapshot_then_watch_has_no_gap<F: DiscoveryFactory>(factory: &F) {
    let d = factory.create();
    let ns = namespace("snapshot_then_watch_has_no_gap");
    let (a, b, c) = (child(&ns, "a"), child(&ns, "b"), child(&ns, "c"));
    set(&d, &a, "before", None).await;
    let snapshot = get(&d, &ns).await;
    assert_eq!(snapshot.children.len(), 1);
    let between = set(&d, &b, "between", None).await;
    let mut w = watch(&d, &ns, Some(snapshot.revision)).await;
    let after = set(&d, &c, "after", None).await;
    assert_eq!(
        events(&mut w, 2).await,
        [
            put(&b, "between", between, between),
            put(&c, "after", after, after)
        ]
    );
    let end = set(&d, &a, "end", None).await;
    assert_eq!(
        event(&mut w).await,
        put(&a, "end", snapshot.children[0].create_revision, end),
        "no duplicate of an event already seen"
    );
}

/// Prefixes are segment-aware: a watch on `/…/svc/a` sees `/…/svc/a` and everything below
/// it, never `/…/svc/ab`, `/…/svc/a.b` or `/…/svc`.
pub async fn watch_prefix_is_segment_aware<F: DiscoveryFactory>(factory: &F) {
    let d = factory.create();
    let svc = child(&namespace("watch_prefix_is_segment_aware"), "svc");
    let a = child(&svc, "a");
    let mut w = watch(&d, &a, None).await;
    let mut replay_from = None;
    let writes = [
        (string_sibling(&a, "b"), false),
        (a.clone(), true),
        (child(&string_sibling(&a, "bc"), "x"), false),
        (child(&a, "x"), true),
        (svc.clone(), false),
        (child(&child(&svc, "b"), "a"), false),
        (string_sibling(&a, ".b"), false),
        (child(&child(&a, "x"), "y"), true),
        (string_sibling(&a, "0"), false),
    ];
    let mut expected = Vec::new();
    for (k, seen) in &writes {
        let revision = set(&d, k, "v", None).await;
        replay_from.get_or_insert(revision - 1);
        if *seen {
            expected.push(k.as_str());
        }
    }
    delete(&d, &string_sibling(&a, "b")).await.expect("existed");
    let end = child(&a, "end");
    set(&d, &end, "marker", None).await;
    expected.push(end.as_str());
    let got = events(&mut w, expected.len()).await;
    assert_eq!(keys_of(&got), expected);
    // Replayed history is filtered the same way.
    let mut replayed = watch(&d, &a, replay_from).await;
    let got = events(&mut replayed, expected.len()).await;
    assert_eq!(keys_of(&got), expected);
}

/// Keys created or set with a lease live while it lives and are deleted when it is
/// dropped; watchers see a `Delete` for each. Keys of other leases and persistent keys
/// stay. Leases have distinct ids and at least the TTL asked for.
pub async fn ephemeral_vanishes_when_lease_dropped<F: DiscoveryFactory>(factory: &F) {
    let d = factory.create();
    let ns = namespace("ephemeral_vanishes_when_lease_dropped");
    let (x, y, z, other) = (
        child(&ns, "x"),
        child(&ns, "y"),
        child(&ns, "z"),
        child(&ns, "other"),
    );
    let ttl = Duration::from_secs(10);
    let mine = lease(&d, ttl).await;
    let theirs = lease(&d, ttl).await;
    assert_ne!(mine.id(), theirs.id());
    assert!(mine.ttl() >= ttl, "ttl {:?} < {ttl:?}", mine.ttl());
    create(&d, &x, "x", Some(&mine)).await;
    set(&d, &y, "y", Some(&mine)).await;
    set(&d, &z, "persistent", None).await;
    let written = create(&d, &other, "o", Some(&theirs)).await;
    assert_eq!(
        get(&d, &ns).await.children.len(),
        4,
        "keys live with their lease"
    );

    let mut w = watch(&d, &ns, None).await;
    drop(mine);
    let gone = events(&mut w, 2).await;
    let deleted: BTreeSet<_> = gone
        .iter()
        .map(|e| match e {
            WatchEvent::Delete { key, revision } => {
                assert!(*revision > written);
                key.clone()
            }
            WatchEvent::Put(entry) => panic!("unexpected put {entry:?}"),
        })
        .collect();
    assert_eq!(deleted, BTreeSet::from([x.clone(), y.clone()]));
    assert!(gone[0].revision() <= gone[1].revision());
    let node = get(&d, &ns).await;
    assert_eq!(
        node.children.iter().map(|e| &e.key).collect::<Vec<_>>(),
        [&other, &z]
    );

    drop(theirs);
    assert_eq!(
        event(&mut w).await.key(),
        &other,
        "the other lease's key goes with it"
    );
    let end = child(&ns, "end");
    set(&d, &end, "marker", None).await;
    assert_eq!(event(&mut w).await.key(), &end, "nothing else was deleted");
}

/// `set` without a lease detaches a key from its lease (as etcd's put): it survives the
/// lease. `set` with a lease attaches an existing persistent key to it.
pub async fn set_reassigns_lease<F: DiscoveryFactory>(factory: &F) {
    let d = factory.create();
    let ns = namespace("set_reassigns_lease");
    let (kept, taken) = (child(&ns, "kept"), child(&ns, "taken"));
    let owner = lease(&d, Duration::from_secs(10)).await;
    create(&d, &kept, "ephemeral", Some(&owner)).await;
    set(&d, &kept, "persistent now", None).await;
    set(&d, &taken, "persistent", None).await;
    set(&d, &taken, "ephemeral now", Some(&owner)).await;
    let mut w = watch(&d, &ns, None).await;
    drop(owner);
    match event(&mut w).await {
        WatchEvent::Delete { key, .. } => assert_eq!(key, taken),
        other => panic!("unexpected {other:?}"),
    }
    let node = get(&d, &ns).await;
    assert_eq!(
        node.children.iter().map(|e| &e.key).collect::<Vec<_>>(),
        [&kept]
    );
}

/// A watch from a revision whose history was compacted reports `Compacted` (from
/// `watch` itself or as the stream's first and last item) instead of skipping; a watch
/// from `oldest` works, and so does the resync (`get`, then watch from its revision).
/// Skipped if the factory cannot compact.
pub async fn compacted_is_reported<F: DiscoveryFactory>(factory: &F) {
    let d = factory.create();
    let ns = namespace("compacted_is_reported");
    let k = child(&ns, "k");
    let mut revisions = Vec::new();
    for n in 0..5 {
        revisions.push(set(&d, &k, &n.to_string(), None).await);
    }
    let early = revisions[0];
    if !factory.compact(&d, revisions[3]).await {
        eprintln!("compacted_is_reported: skipped, the factory cannot compact");
        return;
    }
    let (requested, oldest) = match within("watch", d.watch(&ns, Some(early))).await {
        Err(DiscoveryError::Compacted { requested, oldest }) => (requested, oldest),
        Err(other) => panic!("watch from a compacted revision: {other}"),
        Ok(mut w) => {
            let reported = match within("the compaction error", next_event(&mut w)).await {
                Some(Err(DiscoveryError::Compacted { requested, oldest })) => (requested, oldest),
                other => panic!("watch from a compacted revision yielded {other:?}"),
            };
            assert!(
                within("end of stream", next_event(&mut w)).await.is_none(),
                "the stream ends after the error"
            );
            reported
        }
    };
    assert_eq!(requested, early);
    assert!(
        oldest > requested && oldest <= revisions[4],
        "oldest {oldest}"
    );

    let mut resumed = watch(&d, &ns, Some(oldest)).await;
    let next = set(&d, &k, "next", None).await;
    let mut seen = Vec::new();
    loop {
        let e = event(&mut resumed).await;
        assert!(e.revision() > oldest);
        seen.push(e.revision());
        if e.revision() == next {
            break;
        }
    }
    let expected: Vec<_> = revisions
        .iter()
        .copied()
        .filter(|&r| r > oldest)
        .chain([next])
        .collect();
    assert_eq!(seen, expected, "everything after `oldest`, once");

    let node = get(&d, &ns).await;
    let mut synced = watch(&d, &ns, Some(node.revision)).await;
    let last = set(&d, &k, "last", None).await;
    assert_eq!(event(&mut synced).await.revision(), last);
}

/// Malformed keys are rejected with the error naming the broken rule, and convert into
/// `DiscoveryError::InvalidKey`.
pub async fn invalid_keys_rejected<F: DiscoveryFactory>(factory: &F) {
    let _ = factory;
    let long = format!("/{}", "x".repeat(Key::MAX_LEN));
    let cases = [
        ("", KeyError::Empty),
        ("svc/a", KeyError::NotAbsolute("svc/a".into())),
        ("/", KeyError::EmptySegment { index: 0 }),
        ("/svc//a", KeyError::EmptySegment { index: 1 }),
        ("/svc/a/", KeyError::TrailingSlash),
        (
            "/svc/a\0",
            KeyError::ControlCharacter {
                offset: 6,
                found: '\0',
            },
        ),
        (
            "/svc\n/a",
            KeyError::ControlCharacter {
                offset: 4,
                found: '\n',
            },
        ),
        (
            long.as_str(),
            KeyError::TooLong {
                len: Key::MAX_LEN + 1,
                max: Key::MAX_LEN,
            },
        ),
    ];
    for (text, error) in cases {
        assert_eq!(Key::new(text).as_ref(), Err(&error), "{text:?}");
        assert_eq!(text.parse::<Key>().as_ref(), Err(&error), "{text:?}");
    }
    let svc = key("/svc");
    assert_eq!(
        svc.child("a/b"),
        Err(KeyError::SlashInSegment("a/b".into()))
    );
    assert_eq!(svc.child(""), Err(KeyError::EmptySegment { index: 1 }));
    let converted: DiscoveryError = KeyError::TrailingSlash.into();
    assert_eq!(
        converted,
        DiscoveryError::InvalidKey(KeyError::TrailingSlash)
    );
}

/// Clones share the store: writes through one are read and watched through another, and
/// several watchers of one prefix each see every event; dropping one does not disturb
/// the others.
pub async fn clones_share_the_store<F: DiscoveryFactory>(factory: &F) {
    let d = factory.create();
    let other = d.clone();
    let ns = namespace("clones_share_the_store");
    let k = child(&ns, "k");
    let mut w1 = watch(&other, &ns, None).await;
    let mut w2 = watch(&d, &ns, None).await;
    let dropped = watch(&d, &ns, None).await;
    let r = set(&d, &k, "v", None).await;
    drop(dropped);
    assert_eq!(get(&other, &k).await.entry.map(|e| e.mod_revision), Some(r));
    let r2 = delete(&other, &k).await.expect("existed");
    for w in [&mut w1, &mut w2] {
        let got = events(w, 2).await;
        assert_eq!(
            got.iter().map(WatchEvent::revision).collect::<Vec<_>>(),
            [r, r2]
        );
    }
}

/// Many tasks racing to `create` one key: exactly one wins, the others get
/// `AlreadyExists`, and the stored value is the winner's.
pub async fn create_is_atomic_under_contention<F: DiscoveryFactory>(factory: &F) {
    const TASKS: usize = 16;
    let d = factory.create();
    let k = child(&namespace("create_is_atomic_under_contention"), "leader");
    let tasks: Vec<_> = (0..TASKS)
        .map(|n| {
            let (d, k) = (d.clone(), k.clone());
            tokio::spawn(async move { (n, d.create(&k, bytes(&n.to_string()), None).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match within("a racing create", task).await.expect("task") {
            (n, Ok(revision)) => winners.push((n, revision)),
            (_, Err(DiscoveryError::AlreadyExists { key })) => assert_eq!(key, k),
            (_, Err(other)) => panic!("racing create: {other}"),
        }
    }
    let [(winner, revision)] = winners[..] else {
        panic!("exactly one create wins: {winners:?}");
    };
    let entry = get(&d, &k).await.entry.expect("created");
    assert_eq!(
        (entry.value, entry.create_revision),
        (bytes(&winner.to_string()), revision)
    );
}

/// `replace` writes only over the revision it expects: a stale revision, or a key deleted
/// since, is a `Conflict` that changes nothing; racing replacers of one revision have
/// exactly one winner; the replacement takes the new lease (it outlives the old one).
pub async fn replace_is_compare_and_swap<F: DiscoveryFactory>(factory: &F) {
    const TASKS: usize = 8;
    let d = factory.create();
    let ns = namespace("replace_is_compare_and_swap");
    let k = child(&ns, "owner");
    let old_lease = within("lease", d.lease(Duration::from_secs(30)))
        .await
        .expect("lease");
    let first = within("create", d.create(&k, bytes("old"), Some(&old_lease)))
        .await
        .expect("create");
    let tasks: Vec<_> = (0..TASKS)
        .map(|n| {
            let (d, k) = (d.clone(), k.clone());
            tokio::spawn(async move {
                let lease = d.lease(Duration::from_secs(30)).await.expect("lease");
                let result = d
                    .replace(&k, first, bytes(&n.to_string()), Some(&lease))
                    .await;
                (n, result, lease)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut leases: Vec<(usize, _)> = Vec::new();
    for task in tasks {
        let (n, result, lease) = within("a racing replace", task).await.expect("task");
        match result {
            Ok(revision) => winners.push((n, revision)),
            Err(DiscoveryError::Conflict { key }) => assert_eq!(key, k),
            Err(other) => panic!("racing replace: {other}"),
        }
        leases.push((n, lease));
    }
    let [(winner, revision)] = winners[..] else {
        panic!("exactly one replace wins: {winners:?}");
    };
    assert!(revision > first);
    let entry = get(&d, &k).await.entry.expect("replaced");
    assert_eq!(
        (
            entry.value.clone(),
            entry.create_revision,
            entry.mod_revision
        ),
        (bytes(&winner.to_string()), first, revision),
        "the winner's value, same key life"
    );
    // The stale revision no longer matches.
    match within("stale replace", d.replace(&k, first, bytes("late"), None)).await {
        Err(DiscoveryError::Conflict { key }) => assert_eq!(key, k),
        other => panic!("replace over a stale revision: {other:?}"),
    }
    // The replacement hangs on the winner's lease: ending the old lease (seen through
    // the deletion of a sentinel key it also held) leaves it.
    let sentinel = child(&ns, "sentinel");
    create(&d, &sentinel, "s", Some(&old_lease)).await;
    let mut w = watch(&d, &ns, None).await;
    drop(old_lease);
    // The losers' leases hold nothing; the winner's is kept.
    let (kept, losers): (Vec<_>, Vec<_>) = leases.into_iter().partition(|(n, _)| *n == winner);
    drop(losers);
    match &events(&mut w, 1).await[..] {
        [WatchEvent::Delete { key, .. }] => assert_eq!(key, &sentinel),
        other => panic!("the old lease's end deletes only its sentinel: {other:?}"),
    }
    assert_eq!(
        get(&d, &k).await.entry.map(|e| e.value),
        Some(bytes(&winner.to_string())),
        "the old lease no longer owns the key"
    );
    // A deleted key cannot be replaced.
    let deleted = delete(&d, &k).await.expect("existed");
    drop(kept);
    match within(
        "replace of a deleted key",
        d.replace(&k, revision, bytes("x"), None),
    )
    .await
    {
        Err(DiscoveryError::Conflict { .. }) => {}
        other => panic!("replace after delete (at {deleted}): {other:?}"),
    }
    assert_eq!(get(&d, &k).await.entry, None);
}

/// Concurrent writers: a watcher sees every write exactly once, in strictly increasing
/// revision order, with each write's own revision.
pub async fn concurrent_writes_are_totally_ordered<F: DiscoveryFactory>(factory: &F) {
    const WRITERS: usize = 4;
    const EACH: usize = 50;
    let d = factory.create();
    let ns = namespace("concurrent_writes_are_totally_ordered");
    let mut w = watch(&d, &ns, None).await;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let d = d.clone();
            let k = child(&ns, &writer.to_string());
            tokio::spawn(async move {
                let mut revisions = Vec::with_capacity(EACH);
                for n in 0..EACH {
                    let r = d.set(&k, bytes(&n.to_string()), None).await.expect("set");
                    revisions.push((r, k.clone(), n));
                }
                revisions
            })
        })
        .collect();
    let got = events(&mut w, WRITERS * EACH).await;
    assert_increasing(&got);
    let mut written = Vec::new();
    for task in tasks {
        written.extend(within("a writer", task).await.expect("writer task"));
    }
    written.sort();
    let seen: Vec<_> = got
        .iter()
        .map(|e| match e {
            WatchEvent::Put(entry) => {
                let n = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .expect("a number");
                (entry.mod_revision, entry.key.clone(), n)
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(seen, written);
}

/// Runs every check of the discovery suite as its own `#[tokio::test]` for a factory
/// expression (a [`DiscoveryFactory`]).
#[macro_export]
macro_rules! discovery_conformance_tests {
    ($factory:expr) => {
        $crate::discovery_conformance_tests!(@each $factory;
            create_conflict, set_get_roundtrip, get_returns_direct_children_only,
            list_covers_every_depth, delete_reports_revision_and_absence,
            watch_sees_ordered_put_and_delete,
            watch_from_revision_replays_history, snapshot_then_watch_has_no_gap,
            watch_prefix_is_segment_aware, ephemeral_vanishes_when_lease_dropped,
            set_reassigns_lease, compacted_is_reported, invalid_keys_rejected,
            clones_share_the_store, create_is_atomic_under_contention,
            replace_is_compare_and_swap, concurrent_writes_are_totally_ordered);
    };
    (@each $factory:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::discovery::$check(&$factory).await;
            }
        )*
    };
}
