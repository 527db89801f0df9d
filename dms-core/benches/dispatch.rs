//! Dispatch policies picking one of 1,000 live instances, per pick: jump hash with every
//! instance live, with every 10th bucket down (keys move to a lower live jump point), and
//! with the lower half down (about half the keys have no live jump point and fall back to
//! rendezvous over all candidates); round robin and least pending for comparison.
#![allow(missing_docs)]

mod common;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dms_core::dispatch::{Candidate, DispatchPolicy, JumpHash, LeastPending, RoundRobin, mix};

const INSTANCES: u32 = 1_000;
/// Distinct keys cycled through, so a pick does not always walk the same jump points.
const KEYS: usize = 1 << 12;

fn candidates(live: impl Fn(u32) -> bool) -> Vec<Candidate> {
    (0..INSTANCES)
        .filter(|&b| live(b))
        .map(|bucket| Candidate {
            bucket,
            pending: (mix(u64::from(bucket), 7) % 64) as usize,
        })
        .collect()
}

fn bench_policy(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    case: &str,
    policy: &dyn DispatchPolicy,
    live: &[Candidate],
) {
    let keys: Vec<u64> = (0..KEYS as u64).map(|i| mix(i, 0x5eed)).collect();
    group.bench_with_input(
        BenchmarkId::new(name, format!("{case}_{}", live.len())),
        live,
        |b, live| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) % KEYS;
                policy
                    .pick(std::hint::black_box(keys[i]), live)
                    .expect("a candidate")
            });
        },
    );
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    let all = candidates(|_| true);
    let tenth_down = candidates(|b| b % 10 != 0);
    let low_half_down = candidates(|b| b >= INSTANCES / 2);
    bench_policy(&mut group, "jump_hash", "all_live", &JumpHash, &all);
    bench_policy(
        &mut group,
        "jump_hash",
        "10pct_down",
        &JumpHash,
        &tenth_down,
    );
    bench_policy(
        &mut group,
        "jump_hash",
        "low_half_down",
        &JumpHash,
        &low_half_down,
    );
    bench_policy(
        &mut group,
        "round_robin",
        "all_live",
        &RoundRobin::default(),
        &all,
    );
    bench_policy(&mut group, "least_pending", "all_live", &LeastPending, &all);
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = dispatch
}
criterion_main!(benches);
