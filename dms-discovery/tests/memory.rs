//! Behaviour specific to the in-memory backend: absolute revisions, bounded history and
//! watch queues, explicit compaction, lease ownership and the store going away.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use bytes::Bytes;
use dms_discovery::memory::{MemoryConfig, MemoryDiscovery};
use dms_discovery::{Discovery, DiscoveryError, Key, Lease, Revision, WatchEvent, next_event};
use dms_test_support::wait::within;

fn key(k: &str) -> Key {
    Key::new(k).unwrap()
}

async fn next(
    w: &mut <MemoryDiscovery as Discovery>::Watch,
) -> Option<Result<WatchEvent, DiscoveryError>> {
    within("a watch item", next_event(w)).await
}

async fn revision_of_next(w: &mut <MemoryDiscovery as Discovery>::Watch) -> Revision {
    next(w).await.unwrap().unwrap().revision()
}

#[tokio::test]
async fn revisions_start_at_one_and_count_every_write() {
    let d = MemoryDiscovery::new();
    assert_eq!(d.revision(), 0);
    assert_eq!(d.get(&key("/a")).await.unwrap().revision, 0);
    assert_eq!(d.create(&key("/a"), Bytes::new(), None).await, Ok(1));
    assert_eq!(d.set(&key("/a"), Bytes::new(), None).await, Ok(2));
    assert!(d.create(&key("/a"), Bytes::new(), None).await.is_err());
    assert_eq!(
        d.delete(&key("/b")).await,
        Ok(None),
        "no write, no revision"
    );
    assert_eq!(d.delete(&key("/a")).await, Ok(Some(3)));
    let lease = d.lease(Duration::from_secs(1)).await.unwrap();
    assert_eq!(d.revision(), 3, "taking a lease is not a write");
    d.create(&key("/l/y"), Bytes::new(), Some(&lease))
        .await
        .unwrap();
    d.create(&key("/l/x"), Bytes::new(), Some(&lease))
        .await
        .unwrap();
    let mut w = d.watch(&key("/l"), None).await.unwrap();
    lease.revoke().await;
    assert_eq!(
        d.revision(),
        7,
        "one revision per key deleted by a revocation"
    );
    // In key order.
    assert_eq!(
        next(&mut w).await,
        Some(Ok(WatchEvent::Delete {
            key: key("/l/x"),
            revision: 6
        }))
    );
    assert_eq!(
        next(&mut w).await,
        Some(Ok(WatchEvent::Delete {
            key: key("/l/y"),
            revision: 7
        }))
    );
}

#[tokio::test]
async fn overflowing_watcher_gets_an_error_then_ends() {
    let d = MemoryDiscovery::with_config(MemoryConfig {
        watch_queue: 4,
        ..MemoryConfig::default()
    });
    let a = key("/a");
    let mut slow = d.watch(&a, None).await.unwrap();
    let mut other = d.watch(&a, None).await.unwrap();
    for n in 0..3u8 {
        d.set(&a, Bytes::from(vec![n]), None).await.unwrap();
        // `other` keeps up.
        assert_eq!(revision_of_next(&mut other).await, u64::from(n) + 1);
    }
    for n in 3..10u8 {
        d.set(&a, Bytes::from(vec![n]), None).await.unwrap();
        assert_eq!(revision_of_next(&mut other).await, u64::from(n) + 1);
    }
    // The slow watcher gets what fitted, then the error (never a silent gap), then the end.
    for revision in 1..=4 {
        assert_eq!(revision_of_next(&mut slow).await, revision);
    }
    assert_eq!(
        next(&mut slow).await,
        Some(Err(DiscoveryError::Compacted {
            requested: 4,
            oldest: 0
        }))
    );
    assert_eq!(next(&mut slow).await, None);
    assert_eq!(next(&mut slow).await, None);
    // `requested >= oldest`: the history still holds what it missed, so it can resume.
    let mut resumed = d.watch(&a, Some(4)).await.unwrap();
    for revision in 5..=10 {
        assert_eq!(revision_of_next(&mut resumed).await, revision);
    }
}

#[tokio::test]
async fn replayed_history_does_not_count_against_the_queue() {
    let d = MemoryDiscovery::with_config(MemoryConfig {
        watch_queue: 2,
        ..MemoryConfig::default()
    });
    for _ in 0..20 {
        d.set(&key("/a"), Bytes::new(), None).await.unwrap();
    }
    let mut w = d.watch(&key("/a"), Some(0)).await.unwrap();
    for revision in 1..=20 {
        assert_eq!(revision_of_next(&mut w).await, revision);
    }
    d.set(&key("/a"), Bytes::new(), None).await.unwrap();
    assert_eq!(revision_of_next(&mut w).await, 21);
}

#[tokio::test]
async fn bounded_history_reports_compacted() {
    let d = MemoryDiscovery::with_config(MemoryConfig {
        history: 4,
        ..MemoryConfig::default()
    });
    for _ in 0..10 {
        d.set(&key("/a"), Bytes::new(), None).await.unwrap();
    }
    // Revisions 7..=10 are kept: a watch can resume from 6 onwards.
    assert_eq!(
        d.watch(&key("/a"), Some(5)).await.err(),
        Some(DiscoveryError::Compacted {
            requested: 5,
            oldest: 6
        })
    );
    let mut w = d.watch(&key("/a"), Some(6)).await.unwrap();
    for revision in 7..=10 {
        assert_eq!(revision_of_next(&mut w).await, revision);
    }
}

#[tokio::test]
async fn compact_drops_history_up_to_a_revision() {
    let d = MemoryDiscovery::new();
    for _ in 0..5 {
        d.set(&key("/a"), Bytes::new(), None).await.unwrap();
    }
    let mut live = d.watch(&key("/a"), None).await.unwrap();
    d.compact(3);
    d.compact(2); // never goes back
    assert_eq!(
        d.watch(&key("/a"), Some(2)).await.err(),
        Some(DiscoveryError::Compacted {
            requested: 2,
            oldest: 3
        })
    );
    let mut w = d.watch(&key("/a"), Some(3)).await.unwrap();
    assert_eq!(revision_of_next(&mut w).await, 4);
    assert_eq!(revision_of_next(&mut w).await, 5);
    // Capped at the current revision; live watchers are unaffected.
    d.compact(1000);
    assert!(matches!(
        d.watch(&key("/a"), Some(4)).await,
        Err(DiscoveryError::Compacted {
            requested: 4,
            oldest: 5
        })
    ));
    d.set(&key("/a"), Bytes::new(), None).await.unwrap();
    assert_eq!(revision_of_next(&mut live).await, 6);
    assert_eq!(revision_of_next(&mut w).await, 6);
    let mut from_now = d.watch(&key("/a"), Some(5)).await.unwrap();
    assert_eq!(revision_of_next(&mut from_now).await, 6);
}

#[tokio::test]
async fn without_history_only_live_watches_work() {
    let d = MemoryDiscovery::with_config(MemoryConfig {
        history: 0,
        watch_queue: 0, // treated as 1
    });
    assert_eq!(d.config().watch_queue, 1);
    let mut w = d.watch(&key("/a"), Some(0)).await.unwrap();
    d.set(&key("/a"), Bytes::new(), None).await.unwrap();
    assert_eq!(revision_of_next(&mut w).await, 1);
    assert!(matches!(
        d.watch(&key("/a"), Some(0)).await,
        Err(DiscoveryError::Compacted {
            requested: 0,
            oldest: 1
        })
    ));
    let mut current = d.watch(&key("/a"), Some(1)).await.unwrap();
    d.set(&key("/a"), Bytes::new(), None).await.unwrap();
    assert_eq!(revision_of_next(&mut current).await, 2);
}

#[tokio::test]
async fn watch_from_a_future_revision_waits_for_it() {
    let d = MemoryDiscovery::new();
    let mut w = d.watch(&key("/a"), Some(2)).await.unwrap();
    for _ in 0..3 {
        d.set(&key("/a"), Bytes::new(), None).await.unwrap();
    }
    assert_eq!(revision_of_next(&mut w).await, 3);
}

#[tokio::test]
async fn lease_of_another_store_is_rejected() {
    let d = MemoryDiscovery::new();
    let elsewhere = MemoryDiscovery::new();
    let foreign = elsewhere.lease(Duration::from_secs(3)).await.unwrap();
    assert_eq!(foreign.ttl(), Duration::from_secs(3));
    let _own = d.lease(Duration::from_secs(3)).await.unwrap(); // same id in `d`
    for result in [
        d.create(&key("/a"), Bytes::new(), Some(&foreign)).await,
        d.set(&key("/a"), Bytes::new(), Some(&foreign)).await,
    ] {
        assert_eq!(result, Err(DiscoveryError::LeaseExpired));
    }
    assert_eq!(d.revision(), 0, "nothing written");
}

#[tokio::test]
async fn zero_ttl_lease_lives_until_dropped() {
    let d = MemoryDiscovery::new();
    let lease = d.lease(Duration::ZERO).await.unwrap();
    d.create(&key("/a"), Bytes::new(), Some(&lease))
        .await
        .unwrap();
    assert!(d.get(&key("/a")).await.unwrap().entry.is_some());
    drop(lease);
    assert!(d.get(&key("/a")).await.unwrap().entry.is_none());
}

#[tokio::test]
async fn lease_dropped_on_another_task_revokes() {
    let d = MemoryDiscovery::new();
    let lease = d.lease(Duration::from_secs(1)).await.unwrap();
    d.create(&key("/a/x"), Bytes::new(), Some(&lease))
        .await
        .unwrap();
    let mut w = d.watch(&key("/a"), None).await.unwrap();
    within("owner task", tokio::spawn(async move { drop(lease) }))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut w).await,
        Some(Ok(WatchEvent::Delete { .. }))
    ));
}

#[tokio::test]
async fn watch_reports_closed_when_the_store_is_gone() {
    let d = MemoryDiscovery::new();
    let mut w = d.watch(&key("/a"), None).await.unwrap();
    d.set(&key("/a"), Bytes::new(), None).await.unwrap();
    let lease = d.lease(Duration::from_secs(1)).await.unwrap();
    drop(d);
    // A live lease keeps the store alive.
    assert_eq!(revision_of_next(&mut w).await, 1);
    drop(lease);
    assert_eq!(next(&mut w).await, Some(Err(DiscoveryError::Closed)));
    assert_eq!(next(&mut w).await, None);
}
