//! [`RoutingTable`]: the published edges, the usable graph derived from them edge by edge,
//! the transit flags, and the cache of shortest-path trees with the rules that keep a tree
//! across a change.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};

use super::graph::{Graph, Tree, dijkstra};
use super::{EdgeRule, NONE, RouteConfig, RouteError, UNREACHED};
use crate::path::ServicePath;

/// A node and the edges it published.
#[derive(Debug, Clone)]
struct Slot<N> {
    node: N,
    /// Edges this node published: target slot -> cost.
    out: BTreeMap<u32, u32>,
    /// Number of edges other nodes published towards this one.
    published_in: usize,
}

/// Published edges and the shortest paths over the usable ones; see the
/// [module docs](crate::route).
///
/// `N` is the node identity: by default the instance's [`ServicePath`], the identity DMS
/// instances know each other by. Any `Ord + Clone` type works; its order is the tie-break.
///
/// Queries take `&mut self` because they compute and cache shortest-path trees lazily.
#[derive(Clone)]
pub struct RoutingTable<N = ServicePath> {
    config: RouteConfig,
    index: BTreeMap<N, u32>,
    slots: Vec<Option<Slot<N>>>,
    free: Vec<u32>,
    edges: usize,
    /// The usable links and transit flags, always up to date.
    graph: Graph,
    /// The node set changed since `graph.rank` was computed.
    ranks_dirty: bool,
    /// Cached trees, each valid for the current graph, most recently used last.
    cache: Vec<Tree>,
    /// Buffers of dropped trees, reused by the next computations.
    spare: Vec<Tree>,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
}

impl<N: std::fmt::Debug> std::fmt::Debug for RoutingTable<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingTable")
            .field("config", &self.config)
            .field("nodes", &self.index.len())
            .field("edges", &self.edges)
            .field("cached_trees", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl<N: Ord + Clone> Default for RoutingTable<N> {
    fn default() -> Self {
        Self::with_config(RouteConfig::default())
    }
}

impl<N: Ord + Clone> RoutingTable<N> {
    /// An empty table with the default configuration (both directions required, 65,536
    /// nodes and edges at most).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table with `config`.
    pub fn with_config(config: RouteConfig) -> Self {
        Self {
            config,
            index: BTreeMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            edges: 0,
            graph: Graph::default(),
            ranks_dirty: false,
            cache: Vec::new(),
            spare: Vec::new(),
            heap: BinaryHeap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RouteConfig {
        &self.config
    }

    /// Number of nodes: those that published an edge or that an edge points to, and those
    /// without edges that were set non-transit ([`set_transit`](Self::set_transit)).
    pub fn node_count(&self) -> usize {
        self.index.len()
    }

    /// Number of published edges, usable or not.
    pub fn edge_count(&self) -> usize {
        self.edges
    }

    /// Whether the table holds `node`: it published an edge, an edge points to it, or it was
    /// set non-transit ([`set_transit`](Self::set_transit)).
    pub fn contains_node(&self, node: &N) -> bool {
        self.index.contains_key(node)
    }

    /// The nodes, in node order.
    pub fn nodes(&self) -> impl Iterator<Item = &N> + '_ {
        self.index.keys()
    }

    /// Every published edge `(from, to, cost)`, in no particular order.
    pub fn edges(&self) -> impl Iterator<Item = (&N, &N, u32)> + '_ {
        self.slots.iter().flatten().flat_map(move |slot| {
            slot.out
                .iter()
                .filter_map(move |(&to, &cost)| Some((&slot.node, &self.slot(to)?.node, cost)))
        })
    }

    /// The cost `from` published for its edge to `to`, if it did.
    pub fn published_cost(&self, from: &N, to: &N) -> Option<u32> {
        let from = self.slot(*self.index.get(from)?)?;
        from.out.get(self.index.get(to)?).copied()
    }

    /// The cost routing uses for the link `from -> to`, or `None` if the link is not usable
    /// under the table's [`EdgeRule`].
    pub fn usable_cost(&self, from: &N, to: &N) -> Option<u32> {
        self.graph.arc(*self.index.get(from)?, *self.index.get(to)?)
    }

    /// Records that `from` published a link to `to` costing `cost`, replacing the cost it
    /// published before (returned). Fails, leaving the table unchanged, on a self-loop, a
    /// cost of 0, or when a new edge or node would exceed the caps; changing the cost of an
    /// existing edge never exceeds them.
    pub fn insert_edge(&mut self, from: N, to: N, cost: u32) -> Result<Option<u32>, RouteError> {
        if from == to {
            return Err(RouteError::SelfLoop);
        }
        if cost == 0 {
            return Err(RouteError::ZeroCost);
        }
        let from_slot = self.index.get(&from).copied();
        let to_slot = self.index.get(&to).copied();
        if let (Some(f), Some(t)) = (from_slot, to_slot) {
            if let Some(old) = self.slot_mut(f).and_then(|s| s.out.get_mut(&t)) {
                let old = std::mem::replace(old, cost);
                if old != cost {
                    self.refresh_link(f, t);
                }
                return Ok(Some(old));
            }
        }
        if self.edges >= self.config.max_edges {
            return Err(RouteError::TooManyEdges {
                max: self.config.max_edges,
            });
        }
        let new_nodes = usize::from(from_slot.is_none()) + usize::from(to_slot.is_none());
        if self.index.len() + new_nodes > self.config.max_nodes {
            return Err(RouteError::TooManyNodes {
                max: self.config.max_nodes,
            });
        }
        let f = match from_slot {
            Some(f) => f,
            None => self.intern(from)?,
        };
        let t = match to_slot {
            Some(t) => t,
            None => self.intern(to)?,
        };
        self.link(f, t, cost);
        Ok(None)
    }

    /// Forgets the edge `from` published to `to`; returns its cost if there was one. Nodes
    /// left without any edge are forgotten too (their transit flag with them).
    pub fn remove_edge(&mut self, from: &N, to: &N) -> Option<u32> {
        let f = *self.index.get(from)?;
        let t = *self.index.get(to)?;
        let cost = self.unlink(f, t)?;
        self.collect(f);
        self.collect(t);
        Some(cost)
    }

    /// Replaces every edge `from` published with `links` (`(to, cost)` pairs; a repeated
    /// `to` keeps its last cost): what an instance's discovery value says after a change.
    /// All or nothing: on an error (a self-loop, a cost of 0, or caps exceeded by the result)
    /// the table is unchanged. The transit flag of `from` is kept (unless `links` is empty and
    /// no edge points to `from`: then `from` is forgotten, as [`remove_edges_from`] does).
    ///
    /// [`remove_edges_from`]: Self::remove_edges_from
    pub fn replace_edges_from(
        &mut self,
        from: N,
        links: impl IntoIterator<Item = (N, u32)>,
    ) -> Result<(), RouteError> {
        let mut wanted = BTreeMap::new();
        for (to, cost) in links {
            if to == from {
                return Err(RouteError::SelfLoop);
            }
            if cost == 0 {
                return Err(RouteError::ZeroCost);
            }
            wanted.insert(to, cost);
            if wanted.len() > self.config.max_edges {
                return Err(RouteError::TooManyEdges {
                    max: self.config.max_edges,
                });
            }
        }
        let from_slot = self.index.get(&from).copied();
        let old: Vec<u32> = from_slot
            .and_then(|f| self.slot(f))
            .map(|s| s.out.keys().copied().collect())
            .unwrap_or_default();
        // Check the caps against the result before changing anything.
        if self.edges - old.len() + wanted.len() > self.config.max_edges {
            return Err(RouteError::TooManyEdges {
                max: self.config.max_edges,
            });
        }
        let mut added = wanted
            .keys()
            .filter(|to| !self.index.contains_key(to))
            .count();
        let mut dropped = 0;
        for &t in &old {
            if let Some(slot) = self.slot(t) {
                if !wanted.contains_key(&slot.node) && slot.out.is_empty() && slot.published_in == 1
                {
                    dropped += 1;
                }
            }
        }
        match from_slot.and_then(|f| self.slot(f)) {
            None if !wanted.is_empty() => added += 1,
            Some(slot) if wanted.is_empty() && slot.published_in == 0 => dropped += 1,
            _ => {}
        }
        if self.index.len() + added - dropped > self.config.max_nodes {
            return Err(RouteError::TooManyNodes {
                max: self.config.max_nodes,
            });
        }
        // Apply: the caps hold for the result and every intermediate state is smaller.
        for t in old {
            let keep = self.slot(t).is_some_and(|s| wanted.contains_key(&s.node));
            if !keep {
                if let Some(f) = from_slot {
                    self.unlink(f, t);
                    self.collect(t);
                }
            }
        }
        if let (Some(f), true) = (from_slot, wanted.is_empty()) {
            self.collect(f);
        }
        for (to, cost) in wanted {
            self.insert_edge(from.clone(), to, cost)?;
        }
        Ok(())
    }

    /// Forgets every edge `from` published (its discovery value is gone); returns how many.
    /// `from` itself is forgotten, its transit flag with it, when no edge points to it.
    pub fn remove_edges_from(&mut self, from: &N) -> usize {
        let Some(&f) = self.index.get(from) else {
            return 0;
        };
        let targets: Vec<u32> = self
            .slot(f)
            .map(|s| s.out.keys().copied().collect())
            .unwrap_or_default();
        for &t in &targets {
            self.unlink(f, t);
            self.collect(t);
        }
        self.collect(f);
        targets.len()
    }

    /// The neighbour of `from` to send to so that a message reaches `to` along a shortest
    /// path. `None` when `to` cannot be reached from `from` (either is unknown, or no path of
    /// usable links joins them), and when `to == from`: a message for the local node is
    /// delivered, not forwarded ([`distance`](Self::distance) tells the two apart).
    /// The usable links out of `node`: each neighbour and the cost routing uses for the link
    /// (as [`usable_cost`](Self::usable_cost)), in no particular order (a policy that needs
    /// a deterministic answer breaks ties by node order). Empty for a node the table does
    /// not hold. Whether a neighbour forwards is [`is_transit`](Self::is_transit).
    ///
    /// ```
    /// use dms_core::route::RoutingTable;
    ///
    /// let mut t = RoutingTable::<&str>::new();
    /// for (a, b, cost) in [("a", "b", 2), ("b", "a", 3), ("a", "c", 1), ("c", "a", 1)] {
    ///     t.insert_edge(a, b, cost)?;
    /// }
    /// t.insert_edge("a", "d", 1)?; // d never confirmed: not usable
    /// let mut links: Vec<_> = t.neighbours(&"a").map(|(n, cost)| (*n, cost)).collect();
    /// links.sort();
    /// assert_eq!(links, [("b", 3), ("c", 1)]);
    /// assert_eq!(t.neighbours(&"nowhere").count(), 0);
    /// # Ok::<(), dms_core::route::RouteError>(())
    /// ```
    pub fn neighbours<'a>(&'a self, node: &N) -> impl Iterator<Item = (&'a N, u32)> + use<'a, N> {
        let arcs = self
            .index
            .get(node)
            .map(|&slot| self.graph.arcs(slot))
            .unwrap_or_default();
        arcs.iter()
            .filter_map(move |&(v, cost)| Some((&self.slot(v)?.node, cost)))
    }

    /// Whether `node` forwards messages for others; see the
    /// [module docs](crate::route#which-nodes-forward). `true` for a node never set, and for
    /// a node the table does not hold.
    pub fn is_transit(&self, node: &N) -> bool {
        self.index
            .get(node)
            .is_none_or(|&slot| self.graph.transit(slot))
    }

    /// Sets whether `node` forwards messages for others; see the
    /// [module docs](crate::route#which-nodes-forward). Shortest paths pass through `node`
    /// only while it is transit; it stays a possible source and destination either way.
    ///
    /// The flag is kept while the table holds `node`, whatever happens to its edges, and
    /// forgotten with it. Setting a node the table does not hold to transit changes nothing
    /// (that is the default); setting it non-transit adds it, without edges, and fails with
    /// [`RouteError::TooManyNodes`] (the table unchanged) when the table is full.
    ///
    /// ```
    /// use dms_core::route::RoutingTable;
    ///
    /// let mut t = RoutingTable::<&str>::new();
    /// t.set_transit("gate", false)?; // before its edges arrive
    /// for (a, b) in [("a", "gate"), ("gate", "b")] {
    ///     t.insert_edge(a, b, 1)?;
    ///     t.insert_edge(b, a, 1)?;
    /// }
    /// assert!(!t.is_transit(&"gate"));
    /// assert_eq!(t.next_hop(&"a", &"b"), None); // only through gate, which does not forward
    /// assert_eq!(t.next_hop(&"a", &"gate"), Some(&"gate"));
    /// t.replace_edges_from("gate", [("a", 1), ("b", 1)])?;
    /// assert!(!t.is_transit(&"gate")); // the flag survives a change of the node's edges
    /// t.set_transit("gate", true)?;
    /// assert_eq!(t.next_hop(&"a", &"b"), Some(&"gate"));
    /// # Ok::<(), dms_core::route::RouteError>(())
    /// ```
    pub fn set_transit(&mut self, node: N, transit: bool) -> Result<(), RouteError> {
        let slot = match self.index.get(&node) {
            Some(&slot) => slot,
            None if transit => return Ok(()),
            None => {
                if self.index.len() >= self.config.max_nodes {
                    return Err(RouteError::TooManyNodes {
                        max: self.config.max_nodes,
                    });
                }
                // A node without links: no tree reaches it, so none changes.
                self.intern(node)?
            }
        };
        if self.graph.transit(slot) == transit {
            return Ok(());
        }
        if let Some(flag) = self.graph.transit.get_mut(slot as usize) {
            *flag = transit;
        }
        self.retain_trees(|table, tree| table.keeps_tree_on_transit(tree, slot, transit));
        Ok(())
    }

    /// The neighbour of `from` to send to so that a message reaches `to` along a shortest
    /// path. `None` when `to` cannot be reached from `from` (either is unknown, or no path of
    /// usable links through transit nodes joins them), and when `to == from`: a message for
    /// the local node is delivered, not forwarded ([`distance`](Self::distance) tells the two
    /// apart).
    pub fn next_hop(&mut self, from: &N, to: &N) -> Option<&N> {
        if from == to {
            return None;
        }
        let (f, t) = (*self.index.get(from)?, *self.index.get(to)?);
        let at = self.tree(f);
        let hop = *self.cache.get(at)?.first.get(t as usize)?;
        self.slot(hop).map(|s| &s.node)
    }

    /// The shortest path from `from` to `to`, both included; `Some(vec![from])` when
    /// `to == from`, `None` when `to` cannot be reached.
    pub fn path(&mut self, from: &N, to: &N) -> Option<Vec<N>> {
        if from == to {
            return Some(vec![from.clone()]);
        }
        let (f, t) = (*self.index.get(from)?, *self.index.get(to)?);
        let at = self.tree(f);
        let tree = self.cache.get(at)?;
        let hops = *tree.hops.get(t as usize)?;
        if tree.dist(t) == UNREACHED {
            return None;
        }
        let mut path = Vec::with_capacity(hops as usize + 1);
        let mut at = t;
        while at != f && path.len() <= hops as usize {
            path.push(self.slot(at)?.node.clone());
            at = tree.pred(at);
        }
        path.push(from.clone());
        path.reverse();
        Some(path)
    }

    /// The cost of the shortest path from `from` to `to` (0 when `to == from`), or `None`
    /// when `to` cannot be reached.
    pub fn distance(&mut self, from: &N, to: &N) -> Option<u64> {
        self.lookup(from, to, |tree, t| tree.dist.get(t).copied())
    }

    /// The number of links on the path [`path`](Self::path) returns (0 when `to == from`),
    /// or `None` when `to` cannot be reached; compare it with the hop limit
    /// ([`forward_hop_limit`](super::forward_hop_limit)).
    pub fn hops(&mut self, from: &N, to: &N) -> Option<u32> {
        self.lookup(from, to, |tree, t| tree.hops.get(t).copied())
    }

    /// Answers from the tree of `from` for a reachable `to` (0 for `to == from`).
    fn lookup<T: Default>(
        &mut self,
        from: &N,
        to: &N,
        read: impl Fn(&Tree, usize) -> Option<T>,
    ) -> Option<T> {
        if from == to {
            return Some(T::default());
        }
        let (f, t) = (*self.index.get(from)?, *self.index.get(to)?);
        let at = self.tree(f);
        let tree = self.cache.get(at)?;
        if tree.dist(t) == UNREACHED {
            return None;
        }
        read(tree, t as usize)
    }

    /// Cached trees and spare tree buffers.
    #[cfg(test)]
    pub(super) fn trees_held(&self) -> (usize, usize) {
        (self.cache.len(), self.spare.len())
    }

    fn slot(&self, slot: u32) -> Option<&Slot<N>> {
        self.slots.get(slot as usize)?.as_ref()
    }

    fn slot_mut(&mut self, slot: u32) -> Option<&mut Slot<N>> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// Adds `node` (known absent) in a free slot, without edges, transit.
    fn intern(&mut self, node: N) -> Result<u32, RouteError> {
        let slot = Slot {
            node: node.clone(),
            out: BTreeMap::new(),
            published_in: 0,
        };
        let index = match self.free.pop() {
            Some(index) => {
                if let Some(free) = self.slots.get_mut(index as usize) {
                    *free = Some(slot);
                }
                index
            }
            None => {
                let index = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&i| i != NONE)
                    .ok_or(RouteError::TooManyNodes {
                        max: self.config.max_nodes,
                    })?;
                self.slots.push(Some(slot));
                index
            }
        };
        self.index.insert(node, index);
        // Cached trees stay valid: they do not reach a node without links (a reused slot was
        // free, so unreached, in every one of them).
        self.graph.reset_slot(index);
        self.ranks_dirty = true;
        Ok(index)
    }

    /// Adds the published edge `f -> t` (known absent).
    fn link(&mut self, f: u32, t: u32, cost: u32) {
        if let Some(from) = self.slot_mut(f) {
            from.out.insert(t, cost);
        }
        if let Some(to) = self.slot_mut(t) {
            to.published_in += 1;
        }
        self.edges += 1;
        self.refresh_link(f, t);
    }

    /// Removes the published edge `f -> t`; returns its cost.
    fn unlink(&mut self, f: u32, t: u32) -> Option<u32> {
        let cost = self.slot_mut(f)?.out.remove(&t)?;
        if let Some(to) = self.slot_mut(t) {
            to.published_in = to.published_in.saturating_sub(1);
        }
        self.edges = self.edges.saturating_sub(1);
        self.refresh_link(f, t);
        Some(cost)
    }

    /// Forgets slot `s` if no edge touches it any more.
    fn collect(&mut self, s: u32) {
        let orphan = self
            .slot(s)
            .is_some_and(|slot| slot.out.is_empty() && slot.published_in == 0);
        if !orphan {
            return;
        }
        if let Some(slot) = self.slots.get_mut(s as usize).and_then(Option::take) {
            self.index.remove(&slot.node);
            self.free.push(s);
            // No link touches it, so no other tree reaches it; its own tree goes, as the slot
            // may hold another node next.
            self.retain_trees(|_, tree| tree.source != s);
            self.graph.reset_slot(s);
            self.ranks_dirty = true;
        }
    }

    /// The published cost of `f -> t`.
    fn published(&self, f: u32, t: u32) -> Option<u32> {
        self.slot(f)?.out.get(&t).copied()
    }

    /// Brings the usable link(s) between `f` and `t` in line with the published edges after
    /// a change of the edge `f -> t`.
    fn refresh_link(&mut self, f: u32, t: u32) {
        let forward = self.published(f, t);
        match self.config.edge_rule {
            EdgeRule::Directed => self.set_arc(f, t, forward),
            EdgeRule::Bidirectional => {
                // Symmetric: both arcs cost the larger published cost, or do not exist.
                let cost = forward.zip(self.published(t, f)).map(|(a, b)| a.max(b));
                self.set_arc(f, t, cost);
                self.set_arc(t, f, cost);
            }
        }
    }

    /// Sets the usable arc `u -> v` and drops the cached trees it may alter.
    fn set_arc(&mut self, u: u32, v: u32, cost: Option<u32>) {
        let old = self.graph.set_arc(u, v, cost);
        if old != cost {
            self.retain_trees(|table, tree| table.keeps_tree_on_arc(tree, u, v, old, cost));
        }
    }

    /// Moves the cached trees for which `keep` is false to the spare buffers.
    fn retain_trees(&mut self, keep: impl Fn(&Self, &Tree) -> bool) {
        let mut i = 0;
        while let Some(tree) = self.cache.get(i) {
            if keep(self, tree) {
                i += 1;
            } else {
                let tree = self.cache.remove(i);
                self.spare.push(tree);
            }
        }
    }

    /// Whether `tree` is still the tree of its source after the arc `u -> v` went from `old`
    /// to `new` (both `None`: no arc); see [`dijkstra`] for what the tree is.
    fn keeps_tree_on_arc(
        &self,
        tree: &Tree,
        u: u32,
        v: u32,
        old: Option<u32>,
        new: Option<u32>,
    ) -> bool {
        match new {
            _ if old == new => true,
            // Cheaper or new: it may shorten a path or win a tie.
            Some(cost) if old.is_none_or(|old| cost < old) => !self.improves(tree, u, v, cost),
            // Dearer or gone: no distance depends on an arc the tree does not use, and `v`'s
            // predecessor was the smallest of the others, which remain.
            _ => tree.pred(v) != u,
        }
    }

    /// Whether `tree` is still the tree of its source after the transit flag of `x` became
    /// `transit`.
    fn keeps_tree_on_transit(&self, tree: &Tree, x: u32, transit: bool) -> bool {
        // The source always sends; a node not reached forwards nothing either way.
        if x == tree.source || tree.dist(x) == UNREACHED {
            return true;
        }
        let arcs = self.graph.arcs(x);
        if transit {
            // As if every arc out of `x` had just appeared.
            arcs.iter()
                .all(|&(v, cost)| !self.improves(tree, x, v, cost))
        } else {
            // Its arcs go: harmless unless the tree used one.
            arcs.iter().all(|&(v, _)| tree.pred(v) != x)
        }
    }

    /// Whether an arc `u -> v` costing `cost` that `tree` did not take into account (new,
    /// cheaper, or out of a node that just started forwarding) alters it: it reaches `v`
    /// sooner, or as soon from a predecessor smaller than `v`'s.
    fn improves(&self, tree: &Tree, u: u32, v: u32, cost: u32) -> bool {
        if u != tree.source && !self.graph.transit(u) {
            return false;
        }
        let du = tree.dist(u);
        if du == UNREACHED {
            return false;
        }
        match du.saturating_add(u64::from(cost)).cmp(&tree.dist(v)) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => {
                let p = tree.pred(v);
                p != u
                    && match (self.slot(u), self.slot(p)) {
                        (Some(u), Some(p)) => u.node < p.node,
                        // Not expected for a tree of the current graph: recompute.
                        _ => true,
                    }
            }
        }
    }

    /// The position in `cache` (the last one) of the shortest-path tree of `source`,
    /// computed if needed.
    fn tree(&mut self, source: u32) -> usize {
        if self.ranks_dirty {
            self.graph.rank.clear();
            self.graph.rank.resize(self.slots.len(), NONE);
            for (rank, &slot) in self.index.values().enumerate() {
                if let Some(r) = self.graph.rank.get_mut(slot as usize) {
                    *r = rank as u32;
                }
            }
            self.ranks_dirty = false;
        }
        if let Some(i) = self.cache.iter().position(|t| t.source == source) {
            let tree = self.cache.remove(i);
            self.cache.push(tree);
        } else {
            let mut tree = match self.spare.pop() {
                Some(tree) => tree,
                None if !self.cache.is_empty()
                    && self.cache.len() >= self.config.max_cached_sources =>
                {
                    self.cache.remove(0)
                }
                None => Tree::default(),
            };
            dijkstra(&self.graph, source, &mut tree, &mut self.heap);
            self.cache.push(tree);
        }
        self.cache.len() - 1
    }
}
