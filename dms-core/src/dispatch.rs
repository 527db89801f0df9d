//! Picking one instance of a cluster for a message: jump consistent hash over a caller
//! key (the default), round robin, least pending, or a policy of your own.
//!
//! # Stable buckets
//!
//! Plain jump hash over "the list of live instances" breaks when an instance in the middle
//! of the list leaves: every instance after it shifts down one index and its keys move.
//! DMS gives every instance a **stable bucket number** instead (claimed in discovery with
//! create-if-absent, lowest free number first), and hashes over bucket numbers:
//!
//! - a key's *jump points* are the buckets jump hash moves it through as the bucket count
//!   grows (`jump(key, n)` is its highest jump point below `n`); the key goes to its
//!   **highest live jump point**, so while every bucket is live this is exactly
//!   `jump(key, highest bucket + 1)`;
//! - if none of its jump points is live, the key goes to the live instance with the highest
//!   `mix(key, bucket)` (rendezvous hashing);
//! - so an instance leaving moves only its own keys (each to its next lower live jump
//!   point, or by rendezvous), its keys come back when it returns, nothing depends on
//!   the highest bucket leaving, and every process with the same live set computes the
//!   same answer.
//!
//! ```
//! use dms_core::dispatch::{Candidate, DispatchPolicy, JumpHash};
//!
//! let live = [Candidate::new(0), Candidate::new(1), Candidate::new(2)];
//! let picked = JumpHash.pick(42, &live).unwrap();
//! let without_1 = [Candidate::new(0), Candidate::new(2)];
//! if picked != 1 {
//!     // Keys of other instances do not move when bucket 1 leaves.
//!     let again = JumpHash.pick(42, &without_1).unwrap();
//!     assert_eq!(without_1[again].bucket, live[picked].bucket);
//! }
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};

/// Jump consistent hash (Lamping & Veach, 2014): maps `key` to a bucket in `0..buckets`,
/// moving only `1/n` of the keys when the `n`-th bucket is added or removed at the end.
/// Returns 0 when `buckets` is 0.
///
/// ```
/// use dms_core::dispatch::jump_consistent_hash;
/// assert_eq!(jump_consistent_hash(0, 10), 0);
/// assert!(jump_consistent_hash(u64::MAX, 10) < 10);
/// ```
pub fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b.wrapping_add(1) as f64)
            * ((1u64 << 31) as f64 / ((key >> 33).wrapping_add(1) as f64))) as i64;
    }
    u32::try_from(b.max(0)).unwrap_or(0)
}

/// splitmix64's finaliser: spreads `key` mixed with `salt` over 64 bits.
pub fn mix(key: u64, salt: u64) -> u64 {
    let mut z = key ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A live instance as a policy sees it. Policies receive candidates sorted by bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The instance's stable bucket number.
    pub bucket: u32,
    /// Requests sent to it and not yet answered.
    pub pending: usize,
}

impl Candidate {
    /// A candidate with nothing pending.
    pub fn new(bucket: u32) -> Self {
        Self { bucket, pending: 0 }
    }
}

/// Picks one of `candidates` (live instances, sorted by bucket) for a message with `key`;
/// returns its index, or `None` if there is no candidate.
pub trait DispatchPolicy: Send + Sync + 'static {
    /// The index of the chosen candidate.
    fn pick(&self, key: u64, candidates: &[Candidate]) -> Option<usize>;

    /// Whether [`pick`](Self::pick) reads [`Candidate::pending`]. A policy that does not
    /// (it decides by key and bucket alone) says so, and the kernel may then pick from
    /// the caller's task, without an exact count of what is pending (every candidate's
    /// `pending` is then 0). The default, `true`, is always correct.
    fn reads_pending(&self) -> bool {
        true
    }
}

/// Jump consistent hash over stable buckets (see the [module docs](self)); the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct JumpHash;

impl DispatchPolicy for JumpHash {
    fn reads_pending(&self) -> bool {
        false
    }

    fn pick(&self, key: u64, candidates: &[Candidate]) -> Option<usize> {
        let buckets = i64::from(candidates.last()?.bucket) + 1;
        // Walk the key's jump points (the buckets jump hash moves it through as the bucket
        // count grows) up to the highest live bucket; the last live one owns the key.
        let mut owner = None;
        let (mut point, mut k) = (0i64, key);
        while point < buckets {
            if let Ok(index) = u32::try_from(point)
                .map(|p| candidates.binary_search_by_key(&p, |c| c.bucket))
                .unwrap_or(Err(0))
            {
                owner = Some(index);
            }
            k = k.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
            point = ((point.wrapping_add(1) as f64)
                * ((1u64 << 31) as f64 / ((k >> 33).wrapping_add(1) as f64)))
                as i64;
        }
        // None of its jump points is live: rendezvous among the live ones.
        owner.or_else(|| {
            candidates
                .iter()
                .enumerate()
                .max_by_key(|(_, c)| mix(key, u64::from(c.bucket)))
                .map(|(i, _)| i)
        })
    }
}

/// Each candidate in turn, ignoring the key.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl DispatchPolicy for RoundRobin {
    fn reads_pending(&self) -> bool {
        false
    }

    fn pick(&self, _key: u64, candidates: &[Candidate]) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        Some(self.next.fetch_add(1, Ordering::Relaxed) % candidates.len())
    }
}

/// The candidate with the fewest pending requests (lowest bucket on ties).
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastPending;

impl DispatchPolicy for LeastPending {
    fn pick(&self, _key: u64, candidates: &[Candidate]) -> Option<usize> {
        candidates
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| (c.pending, c.bucket))
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn buckets(ids: &[u32]) -> Vec<Candidate> {
        ids.iter().map(|&b| Candidate::new(b)).collect()
    }

    fn owner(key: u64, live: &[Candidate]) -> u32 {
        live[JumpHash.pick(key, live).unwrap()].bucket
    }

    #[test]
    fn reference_values() {
        // Values of the reference implementation (Lamping & Veach, figure 1).
        assert_eq!(jump_consistent_hash(1, 1), 0);
        assert_eq!(jump_consistent_hash(0xDEAD_BEEF, 1), 0);
        let spread: std::collections::HashSet<u32> = (0..1000u64)
            .map(|k| jump_consistent_hash(mix(k, 0), 8))
            .collect();
        assert_eq!(spread.len(), 8);
    }

    #[test]
    fn middle_instance_leaving_moves_only_its_keys_and_they_come_back() {
        let all = buckets(&[0, 1, 2, 3, 4]);
        let without_2 = buckets(&[0, 1, 3, 4]);
        let mut moved = 0;
        for key in 0..10_000u64 {
            let before = owner(key, &all);
            let during = owner(key, &without_2);
            if before == 2 {
                moved += 1;
                assert_ne!(during, 2);
            } else {
                assert_eq!(
                    before, during,
                    "key {key} moved although its instance stayed"
                );
            }
            assert_eq!(owner(key, &all), before, "keys come back");
        }
        assert!(moved > 1000 && moved < 3000, "bucket 2 held {moved} keys");
    }

    /// L11 of docs/RELIABILITY.md: 1,000,000 keys (integers as the kernel passes them, and
    /// hashed strings as `&str` keys become) over 10 instances: max/mean load ≤ 1.10;
    /// removing one instance (the first, a middle or the last) moves only its own keys, at most 1/10 + 2 % of them all;
    /// adding it back restores the original mapping.
    #[test]
    fn a_million_keys_spread_evenly_and_a_leaving_instance_moves_only_its_share() {
        const KEYS: u64 = 1_000_000;
        const NODES: u32 = 10;
        let all = buckets(&(0..NODES).collect::<Vec<_>>());
        for (kind, key_of) in [
            ("integer", (|k| k) as fn(u64) -> u64),
            ("string", |k| {
                crate::path::hash64(format!("player-{k}").as_bytes())
            }),
        ] {
            let owners: Vec<u32> = (0..KEYS).map(|k| owner(key_of(k), &all)).collect();
            let mut load = [0u64; NODES as usize];
            for &o in &owners {
                load[o as usize] += 1;
            }
            let mean = KEYS as f64 / f64::from(NODES);
            let max = *load.iter().max().unwrap() as f64;
            assert!(max / mean <= 1.10, "{kind} keys: load {load:?}");
            // The first, a middle and the last bucket.
            for gone in [0, NODES / 2, NODES - 1] {
                let rest = buckets(&(0..NODES).filter(|&b| b != gone).collect::<Vec<_>>());
                let mut moved = 0u64;
                for (k, &before) in (0..KEYS).zip(&owners) {
                    let during = owner(key_of(k), &rest);
                    if during != before {
                        assert_eq!(
                            before, gone,
                            "{kind} key {k} moved although its instance stayed"
                        );
                        moved += 1;
                    }
                }
                assert!(
                    moved as f64 / KEYS as f64 <= 0.1 + 0.02,
                    "{kind} keys: removing {gone} moved {moved}"
                );
            }
            // Back: the original mapping, key for key.
            assert!(
                (0..KEYS)
                    .zip(&owners)
                    .all(|(k, &o)| owner(key_of(k), &all) == o)
            );
        }
    }

    #[test]
    fn last_instance_leaving_moves_only_its_keys() {
        let all = buckets(&[0, 1, 2]);
        let shrunk = buckets(&[0, 1]);
        for key in 0..10_000u64 {
            let before = owner(key, &all);
            if before != 2 {
                assert_eq!(owner(key, &shrunk), before);
            }
        }
    }

    #[test]
    fn other_policies() {
        assert_eq!(JumpHash.pick(1, &[]), None);
        let rr = RoundRobin::default();
        let live = buckets(&[0, 5, 9]);
        let picks: Vec<_> = (0..6).map(|_| rr.pick(0, &live).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let loaded = [
            Candidate {
                bucket: 0,
                pending: 3,
            },
            Candidate {
                bucket: 1,
                pending: 1,
            },
            Candidate {
                bucket: 2,
                pending: 1,
            },
        ];
        assert_eq!(LeastPending.pick(0, &loaded), Some(1));
    }

    proptest! {
        #[test]
        fn removal_moves_only_the_removed_buckets_keys(
            key in any::<u64>(),
            present in prop::collection::btree_set(0u32..32, 2..20),
            removed_index in any::<prop::sample::Index>(),
        ) {
            let all: Vec<u32> = present.iter().copied().collect();
            let removed = all[removed_index.index(all.len())];
            let rest: Vec<u32> = all.iter().copied().filter(|&b| b != removed).collect();
            let before = owner(key, &buckets(&all));
            if before != removed {
                prop_assert_eq!(owner(key, &buckets(&rest)), before);
            }
        }
    }
}
