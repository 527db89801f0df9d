//! Routing table over 1,000 instances (service paths) joined by 5,000 links, each published
//! by both ends (10,000 published edges).
//!
//! "Route change applied" is one change followed by the next `next_hop` query from the
//! source, which is when the table recomputes what the change invalidated:
//!
//! - `change_cost_then_query`: the cost of a link on the source's shortest-path tree (its
//!   first hop towards the far node) alternates between its own cost and 1,000 (above every
//!   other cost), so every change moves the tree;
//! - `change_cost_off_tree_then_query`: a link that is on no shortest path alternates
//!   between 1,000 and 2,000 (the tree cannot change);
//! - `remove_link_then_query`: one end withdraws the tree link, then publishes it again;
//!
//! and cached lookups.
#![allow(missing_docs)]

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use dms_core::dispatch::mix;
use dms_core::path::ServicePath;
use dms_core::route::RoutingTable;

const NODES: u64 = 1_000;
const LINKS: usize = 5_000;

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
    assert_eq!(table.edge_count(), 2 * LINKS);
    (table, nodes)
}

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    let (mut table, nodes) = network();
    let (src, far) = (&nodes[0], &nodes[NODES as usize / 2]);
    let hop = table.next_hop(src, far).expect("reachable").clone();
    let tree_cost = table.published_cost(src, &hop).expect("published");

    let mut high = false;
    group.bench_function("change_cost_then_query_1000n_10000e", |bench| {
        bench.iter(|| {
            high = !high;
            let cost = if high { 1_000 } else { tree_cost };
            table
                .insert_edge(src.clone(), hop.clone(), cost)
                .expect("update");
            table.next_hop(src, far).is_some()
        });
    });
    table
        .insert_edge(src.clone(), hop.clone(), tree_cost)
        .expect("restore");
    assert_eq!(table.next_hop(src, far), Some(&hop));

    // A link between two far-away nodes priced above every path between them.
    let (a, b) = (nodes[400].clone(), nodes[401].clone());
    table
        .insert_edge(a.clone(), b.clone(), 1_000)
        .expect("raise");
    table
        .insert_edge(b.clone(), a.clone(), 1_000)
        .expect("raise");
    let mut high = false;
    group.bench_function("change_cost_off_tree_then_query_1000n_10000e", |bench| {
        bench.iter(|| {
            high = !high;
            let cost = if high { 2_000 } else { 1_000 };
            table
                .insert_edge(a.clone(), b.clone(), cost)
                .expect("update");
            table.next_hop(src, far).is_some()
        });
    });

    let mut removed = false;
    group.bench_function("remove_link_then_query_1000n_10000e", |bench| {
        bench.iter(|| {
            removed = !removed;
            if removed {
                table.remove_edge(src, &hop).expect("remove");
            } else {
                table
                    .insert_edge(src.clone(), hop.clone(), tree_cost)
                    .expect("re-add");
            }
            table.next_hop(src, far).is_some()
        });
    });
    if removed {
        table
            .insert_edge(src.clone(), hop.clone(), tree_cost)
            .expect("re-add");
    }
    assert_eq!(table.next_hop(src, far), Some(&hop));

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
