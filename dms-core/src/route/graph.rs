//! The usable graph (adjacency kept up to date edge by edge, transit flags, node order), the
//! shortest-path tree of one source, and Dijkstra over them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{NONE, UNREACHED};

/// The usable links, indexed by slot. Kept up to date by every change (no rebuild).
#[derive(Debug, Clone, Default)]
pub(super) struct Graph {
    /// Usable arcs out of each slot: (target slot, cost), in no particular order (the
    /// tie-break does not depend on it).
    pub(super) adj: Vec<Vec<(u32, u32)>>,
    /// Whether each slot forwards (see the module docs, "Which nodes forward").
    pub(super) transit: Vec<bool>,
    /// Rank of each slot in the node order (`NONE` for a free slot); only read by Dijkstra,
    /// refreshed before it when the node set changed.
    pub(super) rank: Vec<u32>,
}

impl Graph {
    /// Makes room for `slot` and resets it to a node without links that forwards.
    pub(super) fn reset_slot(&mut self, slot: u32) {
        let s = slot as usize;
        if self.adj.len() <= s {
            self.adj.resize_with(s + 1, Vec::new);
            self.transit.resize(s + 1, true);
            self.rank.resize(s + 1, NONE);
        }
        if let Some(row) = self.adj.get_mut(s) {
            row.clear();
        }
        if let Some(t) = self.transit.get_mut(s) {
            *t = true;
        }
    }

    /// Whether `slot` forwards.
    pub(super) fn transit(&self, slot: u32) -> bool {
        self.transit.get(slot as usize).copied().unwrap_or(true)
    }

    /// The usable arcs out of `slot`.
    pub(super) fn arcs(&self, slot: u32) -> &[(u32, u32)] {
        self.adj.get(slot as usize).map_or(&[], Vec::as_slice)
    }

    /// The cost of the usable arc `u -> v`.
    pub(super) fn arc(&self, u: u32, v: u32) -> Option<u32> {
        self.arcs(u).iter().find(|&&(t, _)| t == v).map(|&(_, c)| c)
    }

    /// Sets the arc `u -> v` to `cost` (`None`: no arc); returns the cost it had.
    pub(super) fn set_arc(&mut self, u: u32, v: u32, cost: Option<u32>) -> Option<u32> {
        let row = self.adj.get_mut(u as usize)?;
        let at = row.iter().position(|&(t, _)| t == v);
        match (at, cost) {
            (Some(i), Some(cost)) => row
                .get_mut(i)
                .map(|arc| std::mem::replace(&mut arc.1, cost)),
            (Some(i), None) => Some(row.swap_remove(i).1),
            (None, Some(cost)) => {
                row.push((v, cost));
                None
            }
            (None, None) => None,
        }
    }
}

/// The shortest-path tree of one source, indexed by slot. Slots past the end of the vectors
/// (nodes added after the tree was computed) are not reached.
#[derive(Debug, Clone, Default)]
pub(super) struct Tree {
    pub(super) source: u32,
    pub(super) dist: Vec<u64>,
    pub(super) pred: Vec<u32>,
    /// The source's neighbour on the path to each node.
    pub(super) first: Vec<u32>,
    pub(super) hops: Vec<u32>,
}

impl Tree {
    /// Distance of `slot` (`UNREACHED` if not reached).
    pub(super) fn dist(&self, slot: u32) -> u64 {
        self.dist.get(slot as usize).copied().unwrap_or(UNREACHED)
    }

    /// Predecessor of `slot` on its path (`NONE` for the source and nodes not reached).
    pub(super) fn pred(&self, slot: u32) -> u32 {
        self.pred.get(slot as usize).copied().unwrap_or(NONE)
    }
}

/// Dijkstra from `source` over `graph` into `tree`, breaking ties towards the predecessor
/// of smallest rank (see the module docs) and relaxing the arcs of the source and of transit
/// nodes only. With costs of at least 1 every shortest-path predecessor of a node is settled
/// before it, so the rule sees all of them; the tree therefore is: `dist` the shortest
/// distances over paths whose inner nodes are transit, and `pred[v]` the smallest (by rank)
/// of the nodes `u` that are the source or transit with `dist[u] + cost(u, v) == dist[v]`.
/// The tests of which trees a change leaves valid rely on exactly that characterisation.
pub(super) fn dijkstra(
    graph: &Graph,
    source: u32,
    tree: &mut Tree,
    heap: &mut BinaryHeap<Reverse<(u64, u32)>>,
) {
    let n = graph.adj.len();
    tree.source = source;
    for v in [&mut tree.pred, &mut tree.first] {
        v.clear();
        v.resize(n, NONE);
    }
    tree.dist.clear();
    tree.dist.resize(n, UNREACHED);
    tree.hops.clear();
    tree.hops.resize(n, 0);
    heap.clear();
    let Some(d0) = tree.dist.get_mut(source as usize) else {
        return;
    };
    *d0 = 0;
    heap.push(Reverse((0, source)));
    while let Some(Reverse((d, u))) = heap.pop() {
        let ui = u as usize;
        // A node enters the heap only when its distance drops, so an entry above the
        // node's distance is stale and the one equal to it settles the node.
        if tree.dist.get(ui).is_none_or(|&du| d > du) {
            continue;
        }
        if u != source {
            let p = tree.pred(u);
            let (first, hops) = if p == source {
                (u, 1)
            } else {
                let pi = p as usize;
                (
                    tree.first.get(pi).copied().unwrap_or(NONE),
                    tree.hops.get(pi).map_or(0, |h| h.saturating_add(1)),
                )
            };
            if let (Some(f), Some(h)) = (tree.first.get_mut(ui), tree.hops.get_mut(ui)) {
                *f = first;
                *h = hops;
            }
            if !graph.transit(u) {
                // Reached, but forwards nothing.
                continue;
            }
        }
        let rank = graph.rank.get(ui).copied().unwrap_or(NONE);
        for &(v, cost) in graph.arcs(u) {
            let vi = v as usize;
            let (Some(dv), Some(pv)) = (tree.dist.get_mut(vi), tree.pred.get_mut(vi)) else {
                continue;
            };
            // Costs are at least 1, so a settled node (distance at most `d`) is never
            // improved, and a tie only moves the predecessor of a node not settled yet.
            let reached = d.saturating_add(u64::from(cost));
            if reached < *dv {
                *dv = reached;
                *pv = u;
                heap.push(Reverse((reached, v)));
            } else if reached == *dv
                && graph
                    .rank
                    .get(*pv as usize)
                    .is_some_and(|&other| rank < other)
            {
                *pv = u;
            }
        }
    }
}
