//! The routing table of multi-hop forwarding: the links every instance publishes, and the
//! shortest paths over them (Dijkstra).
//!
//! Every instance writes its live links into discovery as edges `(from, to, cost)`; every
//! instance watches them and feeds them to its own [`RoutingTable`], which answers "to reach
//! `to` from `from`, which neighbour do I send to?" ([`next_hop`](RoutingTable::next_hop)),
//! and the whole [`path`](RoutingTable::path), its [`distance`](RoutingTable::distance) and
//! its number of [`hops`](RoutingTable::hops). The table is sans-IO: it holds no socket,
//! reads no clock and is fed by the caller.
//!
//! ```
//! use dms_core::path::ServicePath;
//! use dms_core::route::RoutingTable;
//!
//! let node = |name: &str| ServicePath::new(&format!("/demo/cn/android/w1/g1/Lobby/{name}"));
//! let (a, b, c, d) = (node("a")?, node("b")?, node("c")?, node("d")?);
//!
//! let mut table = RoutingTable::new();
//! // a - b - c, each link published by both of its ends.
//! for (x, y) in [(&a, &b), (&b, &c)] {
//!     table.insert_edge(x.clone(), y.clone(), 1)?;
//!     table.insert_edge(y.clone(), x.clone(), 1)?;
//! }
//! // c claims a link to d, but d never confirmed it: not usable.
//! table.insert_edge(c.clone(), d.clone(), 1)?;
//!
//! assert_eq!(table.next_hop(&a, &c), Some(&b));
//! assert_eq!(table.path(&a, &c), Some(vec![a.clone(), b.clone(), c.clone()]));
//! assert_eq!(table.distance(&a, &c), Some(2));
//! assert_eq!(table.next_hop(&a, &d), None);
//! // A node reaches itself without forwarding.
//! assert_eq!(table.next_hop(&a, &a), None);
//! assert_eq!(table.distance(&a, &a), Some(0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Which edges count
//!
//! An edge is *published* by its `from` end. Under the default [`EdgeRule::Bidirectional`] a
//! link is *usable* (in both directions) only when **both** ends published it, and it costs
//! the **larger** of the two published costs. This is the safe choice for edges that come
//! from discovery, which any instance can write to:
//!
//! - a link only one end believes in (the other end has not seen it come up yet, has seen it
//!   go down, or never heard of the publisher) is not used, so a stale or forged edge cannot
//!   pull traffic towards a link that does not exist;
//! - a node cannot make a link look cheaper than its other end says it is;
//! - replies take the reverse of the request's path at the same cost.
//!
//! [`EdgeRule::Directed`] uses every published edge as it is (`A -> B` is usable when `A`
//! published it, at `A`'s cost), for deployments where the publishers are trusted and links
//! are really one-way.
//!
//! # Deterministic tie-break
//!
//! Among several shortest paths from `s` to `v`, the table picks the one whose last hop comes
//! from the **smallest** predecessor in the node order (`N`'s [`Ord`]; for [`ServicePath`],
//! the order of the path strings), and the path to that predecessor by the same rule. The
//! answer depends only on the usable edges, never on the order in which edges were inserted
//! or on the history of the table, so every instance holding the same edges computes the
//! same paths.
//!
//! # Loop freedom and the hop limit
//!
//! Costs are at least 1 (an edge of cost 0 is refused). So when every instance holds the
//! same edges and forwards to its own next hop, the remaining distance to the destination
//! strictly decreases at every hop and a message cannot loop, even where two instances break
//! a tie differently. While views differ (an edge change still propagating through
//! discovery) a loop is possible for a moment; the hop limit of the control frame ends it:
//! see [`forward_hop_limit`] and [`RoutingTable::hops`].
//!
//! # Bounded size
//!
//! Edges come from discovery, that is from other processes, so the table caps the number of
//! nodes and of published edges ([`RouteConfig`]); an insertion beyond a cap fails with a
//! [`RouteError`] and leaves the table unchanged. Shortest-path trees are computed lazily,
//! on the first query from a source after a change, and a bounded number of them is cached
//! (one per source; a change that alters the usable graph drops them all).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::path::ServicePath;

/// How published edges become usable links; see the [module docs](self#which-edges-count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EdgeRule {
    /// A link is usable, both ways, only when both ends published it; it costs the larger of
    /// the two published costs. The default.
    #[default]
    Bidirectional,
    /// `A -> B` is usable when `A` published it, at `A`'s cost.
    Directed,
}

/// Why the table refused an edge. The table is unchanged after any of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The table already holds [`RouteConfig::max_edges`] published edges.
    #[error("routing table holds its maximum of {max} edges")]
    TooManyEdges {
        /// The cap.
        max: usize,
    },
    /// The edge would add a node beyond [`RouteConfig::max_nodes`].
    #[error("routing table holds its maximum of {max} nodes")]
    TooManyNodes {
        /// The cap.
        max: usize,
    },
    /// An edge from a node to itself is not a link.
    #[error("an edge from a node to itself is not a link")]
    SelfLoop,
    /// Costs are at least 1 (with cost 0, hop-by-hop forwarding could loop).
    #[error("edge cost 0: costs are at least 1")]
    ZeroCost,
}

/// Caps and the edge rule of a [`RoutingTable`].
///
/// ```
/// use dms_core::route::{EdgeRule, RouteConfig};
///
/// let config = RouteConfig::builder().max_edges(1024).edge_rule(EdgeRule::Directed).build();
/// assert_eq!(config.max_edges(), 1024);
/// assert_eq!(config.max_nodes(), RouteConfig::DEFAULT_MAX_NODES);
/// assert_eq!(config.edge_rule(), EdgeRule::Directed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteConfig {
    edge_rule: EdgeRule,
    max_nodes: usize,
    max_edges: usize,
    max_cached_sources: usize,
}

impl RouteConfig {
    /// Default cap on nodes: 65,536.
    pub const DEFAULT_MAX_NODES: usize = 65_536;
    /// Default cap on published edges: 65,536.
    pub const DEFAULT_MAX_EDGES: usize = 65_536;
    /// Default number of shortest-path trees kept (one per source): 8. An instance mostly
    /// asks for routes from itself, which needs one.
    pub const DEFAULT_MAX_CACHED_SOURCES: usize = 8;

    /// A builder starting from the defaults.
    pub fn builder() -> RouteConfigBuilder {
        RouteConfigBuilder(Self::default())
    }

    /// How published edges become usable links.
    pub fn edge_rule(&self) -> EdgeRule {
        self.edge_rule
    }

    /// Most nodes the table holds (a node exists while an edge it published or an edge
    /// towards it exists).
    pub fn max_nodes(&self) -> usize {
        self.max_nodes
    }

    /// Most published edges the table holds (usable or not).
    pub fn max_edges(&self) -> usize {
        self.max_edges
    }

    /// Most shortest-path trees cached at once (each costs about 20 bytes per node).
    pub fn max_cached_sources(&self) -> usize {
        self.max_cached_sources
    }
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            edge_rule: EdgeRule::default(),
            max_nodes: Self::DEFAULT_MAX_NODES,
            max_edges: Self::DEFAULT_MAX_EDGES,
            max_cached_sources: Self::DEFAULT_MAX_CACHED_SOURCES,
        }
    }
}

/// Builds a [`RouteConfig`]; see [`RouteConfig::builder`]. Caps are raised to their smallest
/// useful value (2 nodes, 1 edge, 1 cached tree), and nodes are capped below `u32::MAX`.
#[derive(Debug, Clone, Copy)]
pub struct RouteConfigBuilder(RouteConfig);

impl RouteConfigBuilder {
    /// How published edges become usable links.
    pub fn edge_rule(mut self, rule: EdgeRule) -> Self {
        self.0.edge_rule = rule;
        self
    }

    /// Most nodes.
    pub fn max_nodes(mut self, nodes: usize) -> Self {
        self.0.max_nodes = nodes.clamp(2, MAX_SLOTS);
        self
    }

    /// Most published edges.
    pub fn max_edges(mut self, edges: usize) -> Self {
        self.0.max_edges = edges.max(1);
        self
    }

    /// Most cached shortest-path trees.
    pub fn max_cached_sources(mut self, trees: usize) -> Self {
        self.0.max_cached_sources = trees.max(1);
        self
    }

    /// The configuration.
    pub fn build(self) -> RouteConfig {
        self.0
    }
}

/// What a forwarder writes into the hop limit of a message it forwards, or `None` when it
/// must drop the message instead.
///
/// The hop limit counts links, as IP's TTL does: the origin sends with
/// [`DEFAULT_HOP_LIMIT`](crate::proto::control::DEFAULT_HOP_LIMIT) (16), and every instance
/// that forwards a message it did not originate decrements it, dropping the message when
/// nothing would be left. A message therefore crosses at most `hop_limit` links, and a route
/// of [`hops`](RoutingTable::hops) `h` can be used when `h <= hop_limit`. (Version 1 of the
/// control frame carries the field and does not check it; this is the rule forwarding
/// applies.)
///
/// ```
/// use dms_core::route::forward_hop_limit;
///
/// assert_eq!(forward_hop_limit(16), Some(15));
/// assert_eq!(forward_hop_limit(2), Some(1));
/// assert_eq!(forward_hop_limit(1), None); // it may reach the next node, not go beyond
/// assert_eq!(forward_hop_limit(0), None);
/// ```
pub fn forward_hop_limit(hop_limit: u8) -> Option<u8> {
    hop_limit.checked_sub(1).filter(|&left| left > 0)
}

/// Largest slot count; `NONE` is never a slot.
const MAX_SLOTS: usize = u32::MAX as usize - 1;
/// No slot / no predecessor.
const NONE: u32 = u32::MAX;
/// Distance of a node not reached.
const UNREACHED: u64 = u64::MAX;

/// A node and the edges it published.
#[derive(Debug, Clone)]
struct Slot<N> {
    node: N,
    /// Edges this node published: target slot -> cost.
    out: BTreeMap<u32, u32>,
    /// Number of edges other nodes published towards this one.
    published_in: usize,
}

/// The usable graph in compressed rows, indexed by slot, and the node order.
#[derive(Debug, Clone, Default)]
struct Graph {
    /// Arcs of slot `s`: `arcs[start[s]..start[s + 1]]`.
    start: Vec<usize>,
    /// (target slot, cost).
    arcs: Vec<(u32, u32)>,
    /// Rank of each slot in the node order (`NONE` for a free slot).
    rank: Vec<u32>,
    /// Slot of each rank.
    by_rank: Vec<u32>,
    /// Every published edge, in rows as `start`/`arcs` (scratch of the rebuild).
    published_start: Vec<usize>,
    published: Vec<(u32, u32)>,
}

/// The shortest-path tree of one source, indexed by slot.
#[derive(Debug, Clone, Default)]
struct Tree {
    source: u32,
    dist: Vec<u64>,
    pred: Vec<u32>,
    /// The source's neighbour on the path to each node.
    first: Vec<u32>,
    hops: Vec<u32>,
}

/// Published edges and the shortest paths over the usable ones; see the [module docs](self).
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
    /// The usable graph changed since `graph` was built: rebuild it and drop cached trees.
    dirty: bool,
    graph: Graph,
    /// Cached trees, most recently used last.
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
            dirty: false,
            graph: Graph::default(),
            cache: Vec::new(),
            spare: Vec::new(),
            heap: BinaryHeap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RouteConfig {
        &self.config
    }

    /// Number of nodes: those that published an edge or that an edge points to.
    pub fn node_count(&self) -> usize {
        self.index.len()
    }

    /// Number of published edges, usable or not.
    pub fn edge_count(&self) -> usize {
        self.edges
    }

    /// Whether `node` published an edge or an edge points to it.
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
        let forward = self.published_cost(from, to)?;
        match self.config.edge_rule {
            EdgeRule::Directed => Some(forward),
            EdgeRule::Bidirectional => Some(forward.max(self.published_cost(to, from)?)),
        }
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
                if old != cost && self.affects_usable(f, t) {
                    self.dirty = true;
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
    /// left without any edge are forgotten too.
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
    /// the table is unchanged.
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
    pub fn next_hop(&mut self, from: &N, to: &N) -> Option<&N> {
        if from == to {
            return None;
        }
        let (f, t) = (*self.index.get(from)?, *self.index.get(to)?);
        let at = self.tree(f);
        let tree = &self.cache[at];
        let hop = *tree.first.get(t as usize)?;
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
        let tree = &self.cache[at];
        let hops = *tree.hops.get(t as usize)?;
        if *tree.dist.get(t as usize)? == UNREACHED {
            return None;
        }
        let mut path = Vec::with_capacity(hops as usize + 1);
        let mut at = t;
        while at != f && path.len() <= hops as usize {
            path.push(self.slot(at)?.node.clone());
            at = *tree.pred.get(at as usize)?;
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
    /// ([`forward_hop_limit`]).
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
        let tree = &self.cache[at];
        if *tree.dist.get(t as usize)? == UNREACHED {
            return None;
        }
        read(tree, t as usize)
    }

    fn slot(&self, slot: u32) -> Option<&Slot<N>> {
        self.slots.get(slot as usize)?.as_ref()
    }

    fn slot_mut(&mut self, slot: u32) -> Option<&mut Slot<N>> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// Whether the published edge `f -> t` is, or with its reverse would be, a usable link.
    fn affects_usable(&self, f: u32, t: u32) -> bool {
        match self.config.edge_rule {
            EdgeRule::Directed => true,
            EdgeRule::Bidirectional => self.slot(t).is_some_and(|s| s.out.contains_key(&f)),
        }
    }

    /// Adds `node` (known absent) in a free slot.
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
        self.dirty = true;
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
        if self.affects_usable(f, t) {
            self.dirty = true;
        }
    }

    /// Removes the published edge `f -> t`; returns its cost.
    fn unlink(&mut self, f: u32, t: u32) -> Option<u32> {
        let cost = self.slot_mut(f)?.out.remove(&t)?;
        if let Some(to) = self.slot_mut(t) {
            to.published_in = to.published_in.saturating_sub(1);
        }
        self.edges = self.edges.saturating_sub(1);
        if self.affects_usable(f, t) {
            self.dirty = true;
        }
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
            self.dirty = true;
        }
    }

    /// The position in `cache` (the last one) of the shortest-path tree of `source`,
    /// computed if needed.
    fn tree(&mut self, source: u32) -> usize {
        if self.dirty {
            self.rebuild();
        }
        if let Some(i) = self.cache.iter().position(|t| t.source == source) {
            let tree = self.cache.remove(i);
            self.cache.push(tree);
        } else {
            let mut tree = match self.spare.pop() {
                Some(tree) => tree,
                None if self.cache.len() >= self.config.max_cached_sources => self.cache.remove(0),
                None => Tree::default(),
            };
            dijkstra(&self.graph, source, &mut tree, &mut self.heap);
            self.cache.push(tree);
        }
        self.cache.len() - 1
    }

    /// Rebuilds the usable graph and the node order, and drops the cached trees.
    fn rebuild(&mut self) {
        let graph = &mut self.graph;
        // Every published edge in compressed rows, each row sorted by target (the order of
        // the `out` maps), so that the reverse of an edge is found by binary search.
        let (start, arcs) = match self.config.edge_rule {
            EdgeRule::Directed => (&mut graph.start, &mut graph.arcs),
            EdgeRule::Bidirectional => (&mut graph.published_start, &mut graph.published),
        };
        start.clear();
        arcs.clear();
        for slot in &self.slots {
            start.push(arcs.len());
            if let Some(slot) = slot {
                arcs.extend(slot.out.iter().map(|(&t, &cost)| (t, cost)));
            }
        }
        start.push(arcs.len());
        if self.config.edge_rule == EdgeRule::Bidirectional {
            let row = |s: usize| {
                let (lo, hi) = (graph.published_start[s], graph.published_start[s + 1]);
                &graph.published[lo..hi]
            };
            graph.start.clear();
            graph.arcs.clear();
            for s in 0..self.slots.len() {
                graph.start.push(graph.arcs.len());
                for &(t, cost) in row(s) {
                    let back = row(t as usize);
                    if let Ok(i) = back.binary_search_by_key(&(s as u32), |&(to, _)| to) {
                        graph.arcs.push((t, cost.max(back[i].1)));
                    }
                }
            }
            graph.start.push(graph.arcs.len());
        }
        graph.rank.clear();
        graph.rank.resize(self.slots.len(), NONE);
        graph.by_rank.clear();
        for (rank, &slot) in self.index.values().enumerate() {
            if let Some(r) = graph.rank.get_mut(slot as usize) {
                *r = rank as u32;
            }
            graph.by_rank.push(slot);
        }
        self.spare.append(&mut self.cache);
        self.dirty = false;
    }
}

/// Dijkstra from `source` over `graph` into `tree`, breaking ties towards the predecessor
/// of smallest rank (see the module docs). With costs of at least 1 every shortest-path
/// predecessor of a node is settled before it, so the rule sees all of them.
fn dijkstra(
    graph: &Graph,
    source: u32,
    tree: &mut Tree,
    heap: &mut BinaryHeap<Reverse<(u64, u32)>>,
) {
    let n = graph.rank.len();
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
    let Some(&source_rank) = graph.rank.get(source as usize) else {
        return;
    };
    tree.dist[source as usize] = 0;
    heap.push(Reverse((0, source_rank)));
    while let Some(Reverse((d, rank))) = heap.pop() {
        let Some(&u) = graph.by_rank.get(rank as usize) else {
            continue;
        };
        let ui = u as usize;
        // A node enters the heap only when its distance drops, so an entry above the
        // node's distance is stale and the one equal to it settles the node.
        if d > tree.dist[ui] {
            continue;
        }
        if u != source {
            let p = tree.pred[ui];
            tree.first[ui] = if p == source {
                u
            } else {
                tree.first[p as usize]
            };
            tree.hops[ui] = tree.hops[p as usize] + 1;
        }
        let (Some(&lo), Some(&hi)) = (graph.start.get(ui), graph.start.get(ui + 1)) else {
            continue;
        };
        for &(v, cost) in graph.arcs.get(lo..hi).unwrap_or_default() {
            let vi = v as usize;
            // Costs are at least 1, so a settled node (distance at most `d`) is never
            // improved; a tie only moves the predecessor of a node not settled yet (its
            // `first` is still unset).
            let reached = d.saturating_add(u64::from(cost));
            if reached < tree.dist[vi] {
                tree.dist[vi] = reached;
                tree.pred[vi] = u;
                heap.push(Reverse((reached, graph.rank[vi])));
            } else if reached == tree.dist[vi]
                && tree.first[vi] == NONE
                && rank < graph.rank[tree.pred[vi] as usize]
            {
                tree.pred[vi] = u;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Table = RoutingTable<&'static str>;

    /// A link published by both ends.
    fn link(table: &mut Table, a: &'static str, b: &'static str, cost: u32) {
        table.insert_edge(a, b, cost).unwrap();
        table.insert_edge(b, a, cost).unwrap();
    }

    #[test]
    fn line_graph() {
        let mut t = Table::new();
        link(&mut t, "a", "b", 1);
        link(&mut t, "b", "c", 2);
        link(&mut t, "c", "d", 3);
        assert_eq!(t.next_hop(&"a", &"d"), Some(&"b"));
        assert_eq!(t.next_hop(&"b", &"d"), Some(&"c"));
        assert_eq!(t.next_hop(&"c", &"d"), Some(&"d"));
        assert_eq!(t.next_hop(&"d", &"a"), Some(&"c"));
        assert_eq!(t.path(&"a", &"d"), Some(vec!["a", "b", "c", "d"]));
        assert_eq!(t.path(&"d", &"a"), Some(vec!["d", "c", "b", "a"]));
        assert_eq!(t.distance(&"a", &"d"), Some(6));
        assert_eq!(t.hops(&"a", &"d"), Some(3));
        assert_eq!(t.node_count(), 4);
        assert_eq!(t.edge_count(), 6);
        assert_eq!(t.nodes().copied().collect::<Vec<_>>(), ["a", "b", "c", "d"]);
    }

    #[test]
    fn diamond_ties_break_towards_the_smallest_node_whatever_the_insertion_order() {
        // s - {x, m, z} - t: three paths of cost 2; m is the smallest middle node.
        let links = [
            ("s", "x", 1),
            ("x", "t", 1),
            ("s", "m", 1),
            ("m", "t", 1),
            ("s", "z", 1),
            ("z", "t", 1),
        ];
        let mut answers = std::collections::BTreeSet::new();
        for rotation in 0..links.len() {
            for reversed in [false, true] {
                let mut order = links.to_vec();
                order.rotate_left(rotation);
                if reversed {
                    order.reverse();
                }
                let mut t = Table::new();
                for (a, b, c) in order {
                    link(&mut t, a, b, c);
                }
                answers.insert((
                    t.next_hop(&"s", &"t").copied(),
                    t.next_hop(&"t", &"s").copied(),
                    t.path(&"s", &"t"),
                ));
            }
        }
        assert_eq!(
            answers.into_iter().collect::<Vec<_>>(),
            [(Some("m"), Some("m"), Some(vec!["s", "m", "t"]))]
        );
    }

    #[test]
    fn tie_break_survives_slot_reuse() {
        // Same usable graph, reached through different histories (slots reused in another
        // order): same answer.
        let mut fresh = Table::new();
        link(&mut fresh, "s", "b", 1);
        link(&mut fresh, "b", "t", 1);
        link(&mut fresh, "s", "a", 1);
        link(&mut fresh, "a", "t", 1);
        let mut churned = Table::new();
        link(&mut churned, "s", "q", 1);
        link(&mut churned, "s", "r", 1);
        churned.remove_edges_from(&"q");
        churned.remove_edges_from(&"r");
        churned.remove_edges_from(&"s");
        assert_eq!(churned.node_count(), 0);
        link(&mut churned, "a", "t", 1);
        link(&mut churned, "s", "a", 1);
        link(&mut churned, "b", "t", 1);
        link(&mut churned, "s", "b", 1);
        assert_eq!(fresh.next_hop(&"s", &"t"), Some(&"a"));
        assert_eq!(churned.next_hop(&"s", &"t"), Some(&"a"));
    }

    #[test]
    fn removal_reroutes_and_insertion_restores() {
        let mut t = Table::new();
        link(&mut t, "a", "b", 1);
        link(&mut t, "b", "d", 1);
        link(&mut t, "a", "c", 5);
        link(&mut t, "c", "d", 5);
        assert_eq!(t.next_hop(&"a", &"d"), Some(&"b"));
        // One end withdrawing the link is enough to stop using it.
        assert_eq!(t.remove_edge(&"b", &"d"), Some(1));
        assert_eq!(t.next_hop(&"a", &"d"), Some(&"c"));
        assert_eq!(t.distance(&"a", &"d"), Some(10));
        t.insert_edge("b", "d", 1).unwrap();
        assert_eq!(t.next_hop(&"a", &"d"), Some(&"b"));
        // A cost change reroutes too.
        assert_eq!(t.insert_edge("a", "b", 20), Ok(Some(1)));
        assert_eq!(t.next_hop(&"a", &"d"), Some(&"c"));
        // An instance's whole link set changes at once.
        t.replace_edges_from("a", [("b", 1)]).unwrap();
        assert_eq!(t.next_hop(&"a", &"d"), Some(&"b"));
        assert_eq!(t.published_cost(&"a", &"c"), None);
        assert_eq!(t.remove_edges_from(&"c"), 2);
        assert!(t.contains_node(&"c"), "d still points to c");
        assert_eq!(t.remove_edge(&"c", &"d"), None);
        assert_eq!(t.remove_edge(&"d", &"c"), Some(5));
        assert!(!t.contains_node(&"c"), "c has no edge left");
        assert_eq!(t.node_count(), 3);
    }

    #[test]
    fn unreachable_and_unknown() {
        let mut t = Table::new();
        link(&mut t, "a", "b", 1);
        link(&mut t, "c", "d", 1);
        assert_eq!(t.next_hop(&"a", &"d"), None);
        assert_eq!(t.path(&"a", &"d"), None);
        assert_eq!(t.distance(&"a", &"d"), None);
        assert_eq!(t.hops(&"a", &"d"), None);
        assert_eq!(t.next_hop(&"a", &"nowhere"), None);
        assert_eq!(t.next_hop(&"nowhere", &"a"), None);
        assert_eq!(t.path(&"nowhere", &"a"), None);
        assert_eq!(Table::new().next_hop(&"a", &"b"), None);
    }

    #[test]
    fn self_route() {
        let mut t = Table::new();
        link(&mut t, "a", "b", 1);
        for node in ["a", "unknown"] {
            assert_eq!(t.next_hop(&node, &node), None);
            assert_eq!(t.path(&node, &node), Some(vec![node]));
            assert_eq!(t.distance(&node, &node), Some(0));
            assert_eq!(t.hops(&node, &node), Some(0));
        }
    }

    #[test]
    fn caps_and_bad_edges_are_typed_and_change_nothing() {
        let config = RouteConfig::builder().max_edges(3).build();
        let mut t = Table::with_config(config);
        link(&mut t, "a", "b", 1);
        t.insert_edge("b", "c", 1).unwrap();
        assert_eq!(
            t.insert_edge("c", "b", 1),
            Err(RouteError::TooManyEdges { max: 3 })
        );
        // Changing a cost is always possible.
        assert_eq!(t.insert_edge("b", "c", 4), Ok(Some(1)));
        let before: Vec<_> = t.edges().map(|(a, b, c)| (*a, *b, c)).collect();
        assert_eq!(
            t.replace_edges_from("a", [("b", 1), ("c", 1), ("d", 1)]),
            Err(RouteError::TooManyEdges { max: 3 })
        );
        assert_eq!(t.insert_edge("a", "a", 1), Err(RouteError::SelfLoop));
        assert_eq!(t.insert_edge("a", "c", 0), Err(RouteError::ZeroCost));
        assert_eq!(
            t.replace_edges_from("a", [("b", 1), ("a", 1)]),
            Err(RouteError::SelfLoop)
        );
        assert_eq!(
            t.replace_edges_from("a", [("b", 1), ("c", 0)]),
            Err(RouteError::ZeroCost)
        );
        let after: Vec<_> = t.edges().map(|(a, b, c)| (*a, *b, c)).collect();
        assert_eq!(before, after);
        assert_eq!(t.edge_count(), 3);
        // Replacing within the cap works: a's edge to b becomes an edge to c.
        t.replace_edges_from("a", [("c", 2)]).unwrap();
        assert_eq!(t.published_cost(&"a", &"c"), Some(2));
        assert_eq!(t.edge_count(), 3);
    }

    #[test]
    fn node_cap() {
        let config = RouteConfig::builder().max_nodes(3).build();
        let mut t = Table::with_config(config);
        link(&mut t, "a", "b", 1);
        link(&mut t, "b", "c", 1);
        assert_eq!(
            t.insert_edge("c", "d", 1),
            Err(RouteError::TooManyNodes { max: 3 })
        );
        assert_eq!(
            t.replace_edges_from("d", [("a", 1)]),
            Err(RouteError::TooManyNodes { max: 3 })
        );
        // Replacing c's links frees nothing (b still points to c) and adds d: refused.
        assert_eq!(
            t.replace_edges_from("c", [("d", 1)]),
            Err(RouteError::TooManyNodes { max: 3 })
        );
        assert_eq!(t.node_count(), 3);
        // Once a publishes nothing and nothing points to it, it is gone and d fits.
        t.remove_edge(&"b", &"a");
        assert_eq!(t.replace_edges_from("a", []), Ok(()));
        assert!(!t.contains_node(&"a"));
        link(&mut t, "c", "d", 1);
        assert_eq!(t.next_hop(&"b", &"d"), Some(&"c"));
        assert_eq!(t.node_count(), 3);
        // d trading its edge to c for one to a new node frees nothing (c has other
        // edges): refused.
        assert_eq!(
            t.replace_edges_from("d", [("e", 1)]),
            Err(RouteError::TooManyNodes { max: 3 })
        );
    }

    #[test]
    fn node_cap_counts_the_nodes_a_replacement_frees() {
        let config = RouteConfig::builder().max_nodes(3).build();
        let mut t = Table::with_config(config);
        link(&mut t, "a", "b", 1);
        t.insert_edge("a", "c", 1).unwrap(); // c exists only through this edge
        assert_eq!(t.node_count(), 3);
        t.replace_edges_from("a", [("b", 1), ("d", 1)]).unwrap();
        assert!(!t.contains_node(&"c"));
        assert_eq!(t.nodes().copied().collect::<Vec<_>>(), ["a", "b", "d"]);
        assert_eq!(t.edge_count(), 3);
    }

    #[test]
    fn one_sided_edges_are_ignored_by_default() {
        let mut t = Table::new();
        t.insert_edge("a", "b", 1).unwrap();
        assert_eq!(t.usable_cost(&"a", &"b"), None);
        assert_eq!(t.next_hop(&"a", &"b"), None);
        assert_eq!(t.next_hop(&"b", &"a"), None);
        // Once b confirms, the link is usable both ways at the larger cost.
        t.insert_edge("b", "a", 7).unwrap();
        assert_eq!(t.usable_cost(&"a", &"b"), Some(7));
        assert_eq!(t.usable_cost(&"b", &"a"), Some(7));
        assert_eq!(t.next_hop(&"a", &"b"), Some(&"b"));
        assert_eq!(t.distance(&"a", &"b"), Some(7));

        let directed = RouteConfig::builder().edge_rule(EdgeRule::Directed).build();
        let mut t = Table::with_config(directed);
        t.insert_edge("a", "b", 1).unwrap();
        assert_eq!(t.next_hop(&"a", &"b"), Some(&"b"));
        assert_eq!(t.next_hop(&"b", &"a"), None);
    }

    #[test]
    fn cache_is_bounded() {
        let config = RouteConfig::builder().max_cached_sources(2).build();
        let mut t = Table::with_config(config);
        link(&mut t, "a", "b", 1);
        link(&mut t, "b", "c", 1);
        for from in ["a", "b", "c", "a", "c"] {
            assert!(t.distance(&from, &"b").is_some());
            assert!(t.cache.len() + t.spare.len() <= 2);
        }
        link(&mut t, "c", "d", 1);
        assert_eq!(t.next_hop(&"a", &"d"), Some(&"b"));
        assert!(t.cache.len() + t.spare.len() <= 2);
    }

    #[test]
    fn hop_limit() {
        let mut t = Table::new();
        link(&mut t, "a", "b", 1);
        link(&mut t, "b", "c", 1);
        // a -> b -> c crosses 2 links: a sends with hop limit 2, b forwards with 1.
        assert_eq!(t.hops(&"a", &"c"), Some(2));
        assert_eq!(forward_hop_limit(2), Some(1));
        // Sent with hop limit 1, it would reach b, which must drop it.
        assert_eq!(forward_hop_limit(1), None);
    }

    /// Floyd–Warshall over the usable links, and the path the tie-break rule defines.
    struct Reference {
        dist: Vec<Vec<Option<u64>>>,
        cost: BTreeMap<(u8, u8), u64>,
    }

    impl Reference {
        fn new(n: u8, published: &BTreeMap<(u8, u8), u32>, rule: EdgeRule) -> Self {
            let mut cost = BTreeMap::new();
            for (&(a, b), &c) in published {
                let usable = match rule {
                    EdgeRule::Directed => Some(c),
                    EdgeRule::Bidirectional => published.get(&(b, a)).map(|&back| c.max(back)),
                };
                if let Some(c) = usable {
                    cost.insert((a, b), u64::from(c));
                }
            }
            let n = usize::from(n);
            let mut dist = vec![vec![None; n]; n];
            for (i, row) in dist.iter_mut().enumerate() {
                row[i] = Some(0);
            }
            for (&(a, b), &c) in &cost {
                dist[usize::from(a)][usize::from(b)] = Some(c);
            }
            for k in 0..n {
                for i in 0..n {
                    for j in 0..n {
                        if let (Some(ik), Some(kj)) = (dist[i][k], dist[k][j]) {
                            if dist[i][j].is_none_or(|ij| ik + kj < ij) {
                                dist[i][j] = Some(ik + kj);
                            }
                        }
                    }
                }
            }
            Self { dist, cost }
        }

        /// The smallest predecessor on a shortest path, recursively.
        fn path(&self, s: u8, t: u8) -> Option<Vec<u8>> {
            let d = |a: u8, b: u8| self.dist[usize::from(a)][usize::from(b)];
            d(s, t)?;
            let mut path = vec![t];
            let mut at = t;
            while at != s {
                at = self
                    .cost
                    .iter()
                    .filter(|&(&(u, v), &c)| {
                        v == at && d(s, u).is_some_and(|du| Some(du + c) == d(s, at))
                    })
                    .map(|(&(u, _), _)| u)
                    .min()?;
                path.push(at);
            }
            path.reverse();
            Some(path)
        }
    }

    fn check(
        table: &mut RoutingTable<u8>,
        published: &BTreeMap<(u8, u8), u32>,
        n: u8,
        rule: EdgeRule,
    ) -> Result<(), TestCaseError> {
        let reference = Reference::new(n, published, rule);
        for s in 0..n {
            for t in 0..n {
                let expected = reference.path(s, t);
                let dist = reference.dist[usize::from(s)][usize::from(t)];
                prop_assert_eq!(table.distance(&s, &t), dist, "{} -> {}", s, t);
                prop_assert_eq!(table.path(&s, &t), expected.clone(), "{} -> {}", s, t);
                let hops = expected.as_ref().map(|p| p.len() as u32 - 1);
                prop_assert_eq!(table.hops(&s, &t), hops);
                let next = expected.as_ref().and_then(|p| p.get(1).copied());
                prop_assert_eq!(table.next_hop(&s, &t).copied(), next);
            }
        }
        Ok(())
    }

    fn rule() -> impl Strategy<Value = EdgeRule> {
        prop_oneof![Just(EdgeRule::Bidirectional), Just(EdgeRule::Directed)]
    }

    proptest! {
        #[test]
        fn dijkstra_matches_floyd_warshall(
            n in 2u8..9,
            raw in prop::collection::vec((0u8..9, 0u8..9, 1u32..6), 0..40),
            removals in prop::collection::vec((0u8..9, 0u8..9), 0..10),
            rule in rule(),
            seed in any::<u64>(),
        ) {
            let config = RouteConfig::builder().edge_rule(rule).build();
            let mut table = RoutingTable::<u8>::with_config(config);
            let mut published = BTreeMap::new();
            for &(a, b, c) in &raw {
                let (a, b) = (a % n, b % n);
                if a == b {
                    prop_assert_eq!(table.insert_edge(a, b, c), Err(RouteError::SelfLoop));
                    continue;
                }
                prop_assert_eq!(table.insert_edge(a, b, c).unwrap(), published.insert((a, b), c));
            }
            check(&mut table, &published, n, rule)?;

            // Incremental removals invalidate the cached trees.
            for &(a, b) in &removals {
                let (a, b) = (a % n, b % n);
                prop_assert_eq!(table.remove_edge(&a, &b), published.remove(&(a, b)));
            }
            check(&mut table, &published, n, rule)?;
            prop_assert_eq!(table.edge_count(), published.len());

            // The same edges inserted in another order give the same answers.
            let mut shuffled: Vec<_> = published.iter().map(|(&(a, b), &c)| (a, b, c)).collect();
            let mut state = seed;
            for i in (1..shuffled.len()).rev() {
                state = crate::dispatch::mix(state, i as u64);
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut other = RoutingTable::<u8>::with_config(config);
            for (a, b, c) in shuffled {
                other.insert_edge(a, b, c).unwrap();
            }
            check(&mut other, &published, n, rule)?;
        }
    }
}

// TEMPORARY shim until the transit/policy work lands (replaced on merge).
/// How an instance picks the next hop towards a destination.
pub trait RoutePolicy: Send + 'static {
    /// The neighbour of `from` to send a message for `to` to.
    fn next_hop(
        &mut self,
        table: &mut RoutingTable,
        from: &ServicePath,
        to: &ServicePath,
    ) -> Option<ServicePath>;
}
/// The default: shortest path.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShortestPath;
impl RoutePolicy for ShortestPath {
    fn next_hop(
        &mut self,
        table: &mut RoutingTable,
        from: &ServicePath,
        to: &ServicePath,
    ) -> Option<ServicePath> {
        table.next_hop(from, to).cloned()
    }
}
impl<N: Ord + Clone> RoutingTable<N> {
    /// Shim.
    pub fn set_transit(&mut self, _node: N, _transit: bool) {}
}
