//! Routing table over 1,000 instances (service paths) joined by 4,000 links, each published
//! by both ends (8,000 published edges): a full recompute (an edge cost changes, then a
//! query rebuilds the usable graph and runs Dijkstra from the source) and cached lookups.
#![allow(missing_docs)]

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use dms_core::dispatch::mix;
use dms_core::path::ServicePath;
use dms_core::route::RoutingTable;

const NODES: u64 = 1_000;
const LINKS: usize = 4_000;

fn node(i: u64) -> ServicePath {
    ServicePath::new(&format!("/bench/cn/linux/w1/g1/Node/node-{i:04}")).expect("valid path")
}

/// A ring (so everything is reachable) plus random chords, costs 1..=100.
fn network() -> (RoutingTable, Vec<ServicePath>) {
    let nodes: Vec<ServicePath> = (0..NODES).map(node).collect();
    let mut table = RoutingTable::new();
    let mut links = std::collections::BTreeSet::new();
    let mut seed = 0u64;
    while links.len() < LINKS {
        let (a, b) = if links.len() < NODES as usize {
            let a = links.len() as u64;
            (a, (a + 1) % NODES)
        } else {
            seed += 1;
            (mix(seed, 1) % NODES, mix(seed, 2) % NODES)
        };
        if a != b {
            links.insert((a.min(b), a.max(b)));
        }
    }
    for &(a, b) in &links {
        let cost = (mix(a, b) % 100) as u32 + 1;
        let (a, b) = (&nodes[a as usize], &nodes[b as usize]);
        table
            .insert_edge(a.clone(), b.clone(), cost)
            .expect("insert");
        table
            .insert_edge(b.clone(), a.clone(), cost)
            .expect("insert");
    }
    (table, nodes)
}

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    let (mut table, nodes) = network();
    let (src, far) = (&nodes[0], &nodes[NODES as usize / 2]);
    assert!(table.next_hop(src, far).is_some());

    // Alternating a cost above every other one changes the usable graph each time.
    let (a, b) = (nodes[10].clone(), nodes[11].clone());
    let mut high = false;
    group.bench_function("recompute_1000n_4000l", |bench| {
        bench.iter(|| {
            high = !high;
            let cost = if high { 1_000 } else { 2_000 };
            table
                .insert_edge(a.clone(), b.clone(), cost)
                .expect("update");
            table.next_hop(src, far).is_some()
        });
    });

    let mut i = 0usize;
    group.bench_function("next_hop_cached_1000n", |bench| {
        bench.iter(|| {
            i = (i + 1) % nodes.len();
            table
                .next_hop(src, std::hint::black_box(&nodes[i]))
                .is_some()
        });
    });

    let mut i = 0usize;
    group.bench_function("path_cached_1000n", |bench| {
        bench.iter(|| {
            i = (i + 1) % nodes.len();
            table
                .path(src, std::hint::black_box(&nodes[i]))
                .map(|p| p.len())
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick().sample_size(30);
    targets = route
}
criterion_main!(benches);
