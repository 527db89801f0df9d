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
//! # Which nodes forward
//!
//! Not every instance forwards messages for others: only brokers do. Every node has a
//! *transit* flag ([`set_transit`](RoutingTable::set_transit),
//! [`is_transit`](RoutingTable::is_transit)); a node never set is transit, so a table that
//! never sets a flag routes through every node. A shortest path may pass **through** a node
//! only if it is transit; a node that is not can still be the source or the destination of
//! a path (it sends its own messages and receives those for it, over any of its links).
//!
//! ```
//! use dms_core::path::ServicePath;
//! use dms_core::route::RoutingTable;
//!
//! let node = |name: &str| ServicePath::new(&format!("/demo/cn/android/w1/g1/Lobby/{name}"));
//! let (a, b, c, broker) = (node("a")?, node("b")?, node("c")?, node("broker")?);
//! let mut table = RoutingTable::new();
//! // a - b - c costs 2, a - broker - c costs 10.
//! for (x, y, cost) in [(&a, &b, 1), (&b, &c, 1), (&a, &broker, 5), (&broker, &c, 5)] {
//!     table.insert_edge(x.clone(), y.clone(), cost)?;
//!     table.insert_edge(y.clone(), x.clone(), cost)?;
//! }
//! assert_eq!(table.next_hop(&a, &c), Some(&b));
//! // b is a game instance, not a broker: it does not forward.
//! table.set_transit(b.clone(), false)?;
//! assert_eq!(table.next_hop(&a, &c), Some(&broker));
//! // b still sends and receives over its links.
//! assert_eq!(table.next_hop(&a, &b), Some(&b));
//! assert_eq!(table.next_hop(&b, &c), Some(&c));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The flag belongs to the node: it survives any change of the node's edges
//! ([`replace_edges_from`](RoutingTable::replace_edges_from) included) and is forgotten with
//! the node, when the last edge touching it goes. Setting a node that the table does not
//! hold non-transit adds it, without edges, so that the flag can come before the edges; it
//! counts against [`RouteConfig::max_nodes`] like any node, and is forgotten as any node is
//! (when an edge touching it goes and none is left, or by
//! [`remove_edges_from`](RoutingTable::remove_edges_from)).
//!
//! # Choosing the next hop
//!
//! [`RoutePolicy`] is how an instance picks the next hop: [`EqualCostMultipath`] (every
//! shortest path, destinations spread over the neighbours that start one: the DMS
//! kernel's default), [`ShortestPath`] (the table's own
//! [`next_hop`](RoutingTable::next_hop): one path per destination), or a service's own algorithm over the
//! table's read accessors ([`neighbours`](RoutingTable::neighbours),
//! [`is_transit`](RoutingTable::is_transit), [`usable_cost`](RoutingTable::usable_cost)).
//!
//! # Deterministic tie-break
//!
//! Among several shortest paths from `s` to `v`, the table picks the one whose last hop comes
//! from the **smallest** predecessor in the node order (`N`'s [`Ord`]; for
//! [`ServicePath`](crate::path::ServicePath), the order of the path strings) among those that
//! may forward (the source, or a transit node), and the path to that predecessor by the same
//! rule. The answer depends only on the usable edges and the transit flags, never on the
//! order in which they were set or on the history of the table, so every instance holding
//! the same edges and flags computes the same paths.
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
//! [`RouteError`] and leaves the table unchanged.
//!
//! # Cost of a change
//!
//! Shortest-path trees are computed lazily, on the first query from a source after a change
//! that affects its tree, and a bounded number of them is cached (one per source). A change
//! costs the update of the usable links of its two ends (no rebuild of the graph), and keeps
//! every cached tree that it provably cannot alter:
//!
//! - a link that got dearer or went away, and that the tree does not use;
//! - a link that got cheaper or appeared, and that does not reach its far end sooner than
//!   the tree does (nor as soon, from a smaller predecessor);
//! - a node that stopped forwarding and forwards nothing in the tree, or that started
//!   forwarding and none of whose links would shorten a path of the tree (or tie it from a
//!   smaller predecessor); a node the tree does not reach.
//!
//! The others are recomputed (Dijkstra from their source) on their next query. On 1,000
//! nodes and 10,000 published edges, a change followed by the next query takes about 90
//! microseconds when it moves the tree (one Dijkstra), under one when it does not
//! (`benches/route.rs`).

mod graph;
mod policy;
mod table;
#[cfg(test)]
mod tests;

pub use policy::{EqualCostMultipath, RoutePolicy, ShortestPath};
pub use table::RoutingTable;

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
    /// towards it exists, or, without edges, once it was set non-transit; see
    /// [`RoutingTable::set_transit`]).
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
