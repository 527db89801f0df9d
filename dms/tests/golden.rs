//! The golden vectors of `docs/PROTOCOL.md` §8 (discovery record, keys, dispatch hash) are
//! what the code produces, byte for byte, and a node writes discovery as §8 says. Each
//! vector is a constant here and must appear in the document as written here, so that
//! neither the code nor the document can change alone.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use dms::registration::{Registration, bucket_key, cluster_key, instance_key};
use dms::{ClusterPath, DispatchKey, ServicePath};
use dms_core::dispatch::{Candidate, DispatchPolicy, JumpHash, jump_consistent_hash, mix};
// What only the tests of a running node (TCP) use.
#[cfg(feature = "tcp")]
use {
    bytes::Bytes,
    dms::{Discovery, MemoryDiscovery, Node},
    dms_discovery::Key,
    std::time::Duration,
};

const BATTLE_1: &str = "/demo/cn/android/w1/g1/Battle/battle-1";
const BATTLE: &str = "/demo/cn/android/w1/g1/Battle";
const LOBBY: &str = "/demo/cn/android/w1/g1/Lobby";

/// Record A: two endpoints, bucket 300 (a two-byte varint), one target, an ACL.
const RECORD_A: &str = "01 02 15 74 63 70 3a 2f 2f 31 32 37 2e 30 2e 30 2e 31 3a 34 31 32 33 35 \
14 71 75 69 63 3a 2f 2f 31 30 2e 30 2e 30 2e 37 3a 37 30 30 30 ac 02 01 1c 2f 64 65 6d 6f 2f \
63 6e 2f 61 6e 64 72 6f 69 64 2f 77 31 2f 67 31 2f 4c 6f 62 62 79 01 01 1c 2f 64 65 6d 6f 2f \
63 6e 2f 61 6e 64 72 6f 69 64 2f 77 31 2f 67 31 2f 4c 6f 62 62 79";
/// Record B: one endpoint, bucket 0, no target, no ACL.
const RECORD_B: &str =
    "01 01 15 74 63 70 3a 2f 2f 31 32 37 2e 30 2e 30 2e 31 3a 34 31 32 33 35 00 00 00";
/// The bucket key of bucket 300 of Battle.
const BUCKET_KEY_300: &str = "2f 40 64 6d 73 2f 62 75 63 6b 65 74 73 2f 64 65 6d 6f 2f 63 6e 2f \
61 6e 64 72 6f 69 64 2f 77 31 2f 67 31 2f 42 61 74 74 6c 65 2f 33 30 30";
/// The value of a bucket key of battle-1: its path.
const BUCKET_VALUE: &str = "2f 64 65 6d 6f 2f 63 6e 2f 61 6e 64 72 6f 69 64 2f 77 31 2f 67 31 \
2f 42 61 74 74 6c 65 2f 62 61 74 74 6c 65 2d 31";

/// The dispatch key `"player-42"`: its bytes and their FNV-1a 64.
const KEY_TEXT: &str = "player-42";
const KEY_BYTES: &str = "70 6c 61 79 65 72 2d 34 32";
const KEY: u64 = 0x63ef_3200_f264_5191;

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn unhex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn record_a() -> Registration {
    let lobby: ClusterPath = LOBBY.parse().unwrap();
    Registration::new(
        vec![
            "tcp://127.0.0.1:41235".into(),
            "quic://10.0.0.7:7000".into(),
        ],
        300,
        std::slice::from_ref(&lobby),
        Some(&[LOBBY.to_owned()]),
    )
}

fn record_b() -> Registration {
    Registration::new(vec!["tcp://127.0.0.1:41235".into()], 0, &[], None)
}

#[test]
fn the_document_holds_the_vectors_of_this_file() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md"))
        .unwrap();
    let section = doc
        .split("## 8. ")
        .nth(1)
        .and_then(|rest| rest.split("\n## 9. ").next())
        .expect("PROTOCOL.md has §8");
    let mut vectors = vec![
        RECORD_A.to_owned(),
        RECORD_B.to_owned(),
        BUCKET_KEY_300.to_owned(),
        BUCKET_VALUE.to_owned(),
        KEY_BYTES.to_owned(),
        format!("{KEY:#018x}"),
    ];
    vectors
        .extend((0..8u64).map(|bucket| format!("mix(K, {bucket}) = {:#018x}", mix(KEY, bucket))));
    for n in [1u32, 2, 3, 5, 10, 1000, 4096] {
        vectors.push(format!("jump(K, {n}) = {}", jump_consistent_hash(KEY, n)));
    }
    for vector in vectors {
        assert!(section.contains(&vector), "§8 lacks {vector:?}");
    }
}

#[test]
fn registration_records_are_the_documented_bytes() {
    for (record, golden) in [(record_a(), RECORD_A), (record_b(), RECORD_B)] {
        let golden = unhex(golden);
        assert_eq!(hex(&record.encode()), hex(&golden));
        assert_eq!(Registration::decode(&golden), Some(record));
    }
}

#[test]
fn what_a_record_reader_accepts() {
    let b = unhex(RECORD_B);
    // Bytes after the record are ignored.
    let mut trailing = b.clone();
    trailing.extend_from_slice(&[0xff, 0x00]);
    assert_eq!(Registration::decode(&trailing), Some(record_b()));
    // A varint need not be the shortest form: bucket 0 as `80 00`.
    let mut long_zero = b[..b.len() - 3].to_vec();
    long_zero.extend_from_slice(&[0x80, 0x00, 0x00, 0x00]);
    assert_eq!(Registration::decode(&long_zero), Some(record_b()));
    // A u32 varint is at most 5 bytes, its 5th byte at most 0x0f.
    let mut max = b[..b.len() - 3].to_vec();
    max.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00]);
    assert_eq!(Registration::decode(&max).map(|r| r.bucket), Some(u32::MAX));
    let refused = |bytes: &[u8]| assert_eq!(Registration::decode(bytes), None, "{bytes:02x?}");
    let mut overflow = b[..b.len() - 3].to_vec();
    overflow.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x10, 0x00, 0x00]);
    refused(&overflow);
    // Another version, an option tag other than 0 or 1, a cut record, bad UTF-8, too big.
    let mut version_2 = b.clone();
    version_2[0] = 2;
    refused(&version_2);
    let mut tag_2 = b.clone();
    *tag_2.last_mut().unwrap() = 2;
    refused(&tag_2);
    refused(&b[..b.len() - 1]);
    let mut not_utf8 = b.clone();
    not_utf8[3] = 0xff;
    refused(&not_utf8);
    let mut huge = b.clone();
    huge.resize(64 * 1024 + 1, 0);
    refused(&huge);
    let mut at_limit = b;
    at_limit.resize(64 * 1024, 0);
    assert_eq!(Registration::decode(&at_limit), Some(record_b()));
}

#[test]
fn discovery_keys_are_the_documented_strings() {
    let path: ServicePath = BATTLE_1.parse().unwrap();
    let cluster: ClusterPath = BATTLE.parse().unwrap();
    assert_eq!(instance_key(&path).unwrap().as_str(), BATTLE_1);
    assert_eq!(cluster_key(&cluster).unwrap().as_str(), BATTLE);
    assert_eq!(
        bucket_key(&cluster, 0).unwrap().as_str(),
        "/@dms/buckets/demo/cn/android/w1/g1/Battle/0"
    );
    let key = bucket_key(&cluster, 300).unwrap();
    assert_eq!(
        key.as_str(),
        "/@dms/buckets/demo/cn/android/w1/g1/Battle/300"
    );
    assert_eq!(hex(key.as_str().as_bytes()), BUCKET_KEY_300);
    assert_eq!(hex(BATTLE_1.as_bytes()), BUCKET_VALUE);
}

#[test]
fn dispatch_keys_and_jump_hash_are_the_documented_numbers() {
    assert_eq!(hex(KEY_TEXT.as_bytes()), KEY_BYTES);
    assert_eq!(DispatchKey::from(KEY_TEXT).0, KEY);
    assert_eq!(DispatchKey::from(KEY_TEXT.as_bytes()).0, KEY);
    assert_eq!(DispatchKey::from(42u64).0, 42);

    let jumps: Vec<u32> = [1, 2, 3, 5, 10, 1000, 4096]
        .iter()
        .map(|&n| jump_consistent_hash(KEY, n))
        .collect();
    assert_eq!(jumps, [0, 1, 1, 4, 4, 616, 3085]);
    // Integer keys are used as they are.
    assert_eq!(jump_consistent_hash(0, 1000), 0);
    assert_eq!(jump_consistent_hash(1, 10), 6);
    assert_eq!(jump_consistent_hash(42, 10), 2);
    assert_eq!(jump_consistent_hash(u64::MAX, 10), 9);
    assert_eq!(jump_consistent_hash(KEY, 0), 0);

    // The jump points of K below 4096: where jump(K, n) changes as n grows.
    let points: Vec<u32> =
        (1..=4096u32)
            .map(|n| jump_consistent_hash(KEY, n))
            .fold(Vec::new(), |mut seen, b| {
                if seen.last() != Some(&b) {
                    seen.push(b);
                }
                seen
            });
    assert_eq!(points, [0, 1, 4, 616, 1079, 1356, 3001, 3085]);

    let mixes: Vec<u64> = (0..8).map(|bucket| mix(KEY, bucket)).collect();
    assert_eq!(
        mixes,
        [
            0x11b7_242a_7433_a830,
            0x62bc_00d0_2ff9_3e38,
            0xcbec_8bb4_6b7c_3a7d,
            0x1969_3d3a_d045_cc80,
            0xe050_b205_0689_ce49,
            0x027e_2577_253f_e5ff,
            0x2a08_a2a8_c610_fbd5,
            0x1708_f06e_8e51_efb9,
        ]
    );

    // Live buckets → the bucket that gets K.
    let owner = |live: &[u32]| {
        let candidates: Vec<Candidate> = live.iter().map(|&b| Candidate::new(b)).collect();
        live[JumpHash.pick(KEY, &candidates).unwrap()]
    };
    assert_eq!(owner(&[0, 1, 2, 3, 4]), 4); // all live: jump(K, 5)
    assert_eq!(owner(&[0, 1, 2, 3]), 1); // all live: jump(K, 4)
    assert_eq!(owner(&[0, 1, 3, 4]), 4); // 2 gone: K was not 2's
    assert_eq!(owner(&[0, 1, 2, 3, 5]), 1); // 4 gone: next lower live jump point
    assert_eq!(owner(&[0, 2, 3]), 0);
    assert_eq!(owner(&[2, 3]), 2); // no live jump point: highest mix (2: 0xcbec...)
    assert_eq!(owner(&[5, 6, 7]), 6); // no live jump point: highest mix (6: 0x2a08...)
    assert_eq!(owner(&[0, 700, 3085]), 3085);
    assert_eq!(owner(&[0, 1, 700, 3000]), 1);
}

#[cfg(feature = "tcp")]
async fn get(discovery: &MemoryDiscovery, key: &str) -> Option<Bytes> {
    let key = Key::new(key).unwrap();
    discovery.get(&key).await.unwrap().entry.map(|e| e.value)
}

/// A node writes its record under exactly its path and claims the lowest free bucket
/// with a key whose value is its path, both on its lease; a shutdown deletes both, a
/// crash (the lease dropped) too.
#[cfg(feature = "tcp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_registers_as_documented() {
    let discovery = MemoryDiscovery::new();
    let cluster: ClusterPath = BATTLE.parse().unwrap();
    let other = format!("{BATTLE}/battle-0");
    let taken = bucket_key(&cluster, 0).unwrap();
    discovery
        .create(&taken, Bytes::from(other.clone()), None)
        .await
        .unwrap();

    let node = Node::builder(BATTLE_1.parse().unwrap())
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let record = Registration::decode(&get(&discovery, BATTLE_1).await.unwrap()).unwrap();
    let endpoints: Vec<String> = node.endpoints().iter().map(ToString::to_string).collect();
    assert_eq!(record, Registration::new(endpoints, 1, &[], None));
    let claim = bucket_key(&cluster, 1).unwrap();
    assert_eq!(
        get(&discovery, claim.as_str()).await.as_deref(),
        Some(BATTLE_1.as_bytes())
    );
    let listed = discovery
        .get(&cluster_key(&cluster).unwrap())
        .await
        .unwrap();
    let children: Vec<&str> = listed.children.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        children,
        [BATTLE_1],
        "bucket claims are not under the cluster"
    );

    node.shutdown().await;
    assert_eq!(get(&discovery, BATTLE_1).await, None);
    assert_eq!(get(&discovery, claim.as_str()).await, None);
    assert_eq!(
        get(&discovery, taken.as_str()).await.as_deref(),
        Some(other.as_bytes())
    );

    // A crash: nothing is deleted, the lease goes, and with it both keys.
    let node = Node::builder(BATTLE_1.parse().unwrap())
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    assert!(get(&discovery, claim.as_str()).await.is_some());
    node.kill().await;
    dms_test_support::wait::within("the lease's keys to go", async {
        while get(&discovery, BATTLE_1).await.is_some()
            || get(&discovery, claim.as_str()).await.is_some()
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A start that finds its path registered by a dead process (its endpoints refuse
/// connections) takes the record over and keeps the bucket its claim names.
#[cfg(feature = "tcp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_its_previous_bucket() {
    let discovery = MemoryDiscovery::new();
    let cluster: ClusterPath = BATTLE.parse().unwrap();
    let refusing = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("tcp://{}", listener.local_addr().unwrap())
    };
    let old_lease = discovery.lease(Duration::from_secs(10)).await.unwrap();
    let old = Registration::new(vec![refusing], 5, &[], None);
    let key = instance_key(&BATTLE_1.parse().unwrap()).unwrap();
    let claim = bucket_key(&cluster, 5).unwrap();
    discovery
        .create(&key, old.encode(), Some(&old_lease))
        .await
        .unwrap();
    discovery
        .create(&claim, Bytes::from(BATTLE_1), Some(&old_lease))
        .await
        .unwrap();

    let node = Node::builder(BATTLE_1.parse().unwrap())
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let record = Registration::decode(&get(&discovery, BATTLE_1).await.unwrap()).unwrap();
    assert_eq!(record.bucket, 5);
    assert_eq!(
        record.endpoints,
        node.endpoints()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    // Both keys moved to the new lease: the old one's end deletes neither.
    drop(old_lease);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(get(&discovery, BATTLE_1).await.is_some());
    assert_eq!(
        get(&discovery, claim.as_str()).await.as_deref(),
        Some(BATTLE_1.as_bytes())
    );
    node.shutdown().await;
}
