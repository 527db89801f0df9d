//! [`RoutePolicy`]: how an instance picks the next hop, and the default, [`ShortestPath`].

use super::RoutingTable;
use crate::path::ServicePath;

/// How an instance picks the next hop towards a destination (the seed: "Dijkstra by
/// default, services can be customized").
///
/// A policy reads the table (its usable links through
/// [`neighbours`](RoutingTable::neighbours), which nodes forward through
/// [`is_transit`](RoutingTable::is_transit), or the table's own shortest paths) and may keep
/// state of its own across calls. [`ShortestPath`] is the default. A closure
/// `FnMut(&mut RoutingTable, &ServicePath, &ServicePath) -> Option<ServicePath>` is a
/// policy too (write the argument types on the closure so that it accepts any lifetimes).
///
/// A custom policy should keep the rules of the table: send only over usable links, pass
/// only through transit nodes, and break ties in a way that depends on the links only
/// (every instance then picks the same routes). A policy that does not follow shortest paths
/// by cost loses the loop freedom argument of the [module docs](crate::route); the hop limit
/// still ends any loop.
///
/// ```
/// use std::collections::{BTreeMap, VecDeque};
///
/// use dms_core::path::ServicePath;
/// use dms_core::route::{RoutePolicy, RoutingTable, ShortestPath};
///
/// /// Fewest links, whatever they cost; among routes as short, the smallest first hop.
/// struct FewestHops;
///
/// impl RoutePolicy for FewestHops {
///     fn next_hop(
///         &mut self,
///         table: &mut RoutingTable,
///         from: &ServicePath,
///         to: &ServicePath,
///     ) -> Option<ServicePath> {
///         // Breadth first from `from`, neighbours in node order, remembering the first hop
///         // each node was reached by.
///         let mut first: BTreeMap<ServicePath, ServicePath> = BTreeMap::new();
///         let mut queue = VecDeque::from([from.clone()]);
///         while let Some(at) = queue.pop_front() {
///             if &at == to {
///                 return first.get(to).cloned();
///             }
///             if &at != from && !table.is_transit(&at) {
///                 continue; // reached, but it does not forward
///             }
///             let mut next: Vec<ServicePath> = table.neighbours(&at).map(|(n, _)| n.clone()).collect();
///             next.sort();
///             for n in next {
///                 if &n != from && !first.contains_key(&n) {
///                     let hop = first.get(&at).cloned().unwrap_or_else(|| n.clone());
///                     first.insert(n.clone(), hop);
///                     queue.push_back(n);
///                 }
///             }
///         }
///         None
///     }
/// }
///
/// let node = |name: &str| ServicePath::new(&format!("/demo/cn/android/w1/g1/Lobby/{name}"));
/// let (a, b, c, d, z) = (node("a")?, node("b")?, node("c")?, node("d")?, node("z")?);
/// let mut table = RoutingTable::new();
/// // a - b - z costs 10 in 2 hops; a - c - d - z costs 3 in 3 hops.
/// for (x, y, cost) in [(&a, &b, 5), (&b, &z, 5), (&a, &c, 1), (&c, &d, 1), (&d, &z, 1)] {
///     table.insert_edge(x.clone(), y.clone(), cost)?;
///     table.insert_edge(y.clone(), x.clone(), cost)?;
/// }
/// let avoid = d.clone();
/// let mut policies: Vec<Box<dyn RoutePolicy>> = vec![
///     Box::new(ShortestPath),
///     Box::new(FewestHops),
///     // A closure: shortest paths, but never through d.
///     Box::new(move |t: &mut RoutingTable, from: &ServicePath, to: &ServicePath| {
///         let mut without = t.clone();
///         without.set_transit(avoid.clone(), false).ok()?;
///         without.next_hop(from, to).cloned()
///     }),
/// ];
/// let hops: Vec<_> = policies.iter_mut().map(|p| p.next_hop(&mut table, &a, &z)).collect();
/// assert_eq!(hops, [Some(c.clone()), Some(b.clone()), Some(b.clone())]);
/// // Every policy leaves b out once it stops forwarding; only d's route is left.
/// table.set_transit(b.clone(), false)?;
/// let hops: Vec<_> = policies.iter_mut().map(|p| p.next_hop(&mut table, &a, &z)).collect();
/// assert_eq!(hops, [Some(c.clone()), Some(c.clone()), None]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait RoutePolicy: Send + 'static {
    /// The neighbour of `from` to send a message for `to` to, or None when `to` is
    /// unreachable.
    fn next_hop(
        &mut self,
        table: &mut RoutingTable,
        from: &ServicePath,
        to: &ServicePath,
    ) -> Option<ServicePath>;
}

/// The default: shortest path by cost with the documented tie-break
/// ([`RoutingTable::next_hop`]).
///
/// ```
/// use dms_core::path::ServicePath;
/// use dms_core::route::{RoutePolicy, RoutingTable, ShortestPath};
///
/// let (a, b) = (ServicePath::new("/demo/cn/android/w1/g1/Lobby/a")?, ServicePath::new("/demo/cn/android/w1/g1/Lobby/b")?);
/// let mut table = RoutingTable::new();
/// table.insert_edge(a.clone(), b.clone(), 1)?;
/// table.insert_edge(b.clone(), a.clone(), 1)?;
/// assert_eq!(ShortestPath.next_hop(&mut table, &a, &b), Some(b.clone()));
/// assert_eq!(ShortestPath.next_hop(&mut table, &a, &a), None); // delivered, not forwarded
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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

impl<F> RoutePolicy for F
where
    F: FnMut(&mut RoutingTable, &ServicePath, &ServicePath) -> Option<ServicePath> + Send + 'static,
{
    fn next_hop(
        &mut self,
        table: &mut RoutingTable,
        from: &ServicePath,
        to: &ServicePath,
    ) -> Option<ServicePath> {
        self(table, from, to)
    }
}

/// Shortest paths, spread over every neighbour that starts one (equal-cost multipath):
/// the kernel's default.
///
/// The candidates are the neighbours `n` of `from` over a usable link that are `to` itself
/// or forward (transit), for which `cost(from, n) + distance(n, to) == distance(from, to)`.
/// Among them, in node order, the one at index `hash(from, to) mod count` is picked, with
/// `hash` the FNV-1a 64 of `from`'s path, a `\n` byte and `to`'s path. So one destination
/// always goes the same way from one instance (messages to it keep their order), while
/// different destinations, and different origins, spread over two brokers of equal cost
/// instead of all taking the one [`ShortestPath`] would. Every hop still moves strictly
/// closer to the destination (costs are at least 1), so the loop freedom of the [module
/// docs](crate::route) holds.
///
/// At most [`max_candidates`](Self::max_candidates) neighbours are considered (the first
/// in node order; 8 by default): each costs a shortest-path tree from that neighbour,
/// cached by the table like its own (raise
/// [`RouteConfig::max_cached_sources`](super::RouteConfig::max_cached_sources) with it).
///
/// ```
/// use dms_core::path::ServicePath;
/// use dms_core::route::{EqualCostMultipath, RoutePolicy, RoutingTable};
///
/// let node = |name: &str| ServicePath::new(&format!("/demo/cn/android/w1/g1/{name}"));
/// let lobby = node("Lobby/lobby-1")?;
/// let brokers = [node("Broker/broker-1")?, node("Broker/broker-2")?];
/// let trades: Vec<ServicePath> = (1..=8).map(|i| node(&format!("Trade/trade-{i}"))).collect::<Result<_, _>>()?;
/// let mut table = RoutingTable::new();
/// let mut link = |a: &ServicePath, b: &ServicePath| -> Result<(), Box<dyn std::error::Error>> {
///     table.insert_edge(a.clone(), b.clone(), 1)?;
///     table.insert_edge(b.clone(), a.clone(), 1)?;
///     Ok(())
/// };
/// for broker in &brokers {
///     link(&lobby, broker)?;
///     for trade in &trades {
///         link(broker, trade)?;
///     }
/// }
/// for trade in &trades {
///     table.set_transit(trade.clone(), false)?;
/// }
/// table.set_transit(lobby.clone(), false)?;
/// let mut policy = EqualCostMultipath::default();
/// let hops: Vec<ServicePath> = trades.iter().map(|t| policy.next_hop(&mut table, &lobby, t).unwrap()).collect();
/// // Both brokers carry some of the eight destinations, each always the same way.
/// assert!(brokers.iter().all(|b| hops.contains(b)));
/// assert_eq!(policy.next_hop(&mut table, &lobby, &trades[0]).as_ref(), Some(&hops[0]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct EqualCostMultipath {
    max_candidates: usize,
}

impl EqualCostMultipath {
    /// Default number of neighbours considered: 8.
    pub const DEFAULT_MAX_CANDIDATES: usize = 8;

    /// Considers at most `candidates` neighbours (at least 1).
    pub fn with_max_candidates(candidates: usize) -> Self {
        Self {
            max_candidates: candidates.max(1),
        }
    }

    /// Most neighbours considered.
    pub fn max_candidates(&self) -> usize {
        self.max_candidates
    }
}

impl Default for EqualCostMultipath {
    fn default() -> Self {
        Self::with_max_candidates(Self::DEFAULT_MAX_CANDIDATES)
    }
}

impl RoutePolicy for EqualCostMultipath {
    fn next_hop(
        &mut self,
        table: &mut RoutingTable,
        from: &ServicePath,
        to: &ServicePath,
    ) -> Option<ServicePath> {
        let best = table.distance(from, to)?;
        if best == 0 {
            return None;
        }
        let mut neighbours: Vec<(ServicePath, u32)> = table
            .neighbours(from)
            .filter(|(n, _)| *n == to || table.is_transit(n))
            .map(|(n, cost)| (n.clone(), cost))
            .collect();
        neighbours.sort();
        neighbours.truncate(self.max_candidates);
        let mut starts = Vec::with_capacity(neighbours.len());
        for (n, cost) in neighbours {
            let rest = if n == *to {
                0
            } else {
                match table.distance(&n, to) {
                    Some(rest) => rest,
                    None => continue,
                }
            };
            if u64::from(cost).saturating_add(rest) == best {
                starts.push(n);
            }
        }
        if starts.is_empty() {
            // Beyond the candidates considered: the table's own choice.
            return table.next_hop(from, to).cloned();
        }
        let mut key = Vec::with_capacity(from.as_str().len() + 1 + to.as_str().len());
        key.extend_from_slice(from.as_str().as_bytes());
        key.push(b'\n');
        key.extend_from_slice(to.as_str().as_bytes());
        let index = crate::path::hash64(&key) % starts.len() as u64;
        // The index is below `starts.len()`, so it fits and is in range.
        starts.into_iter().nth(usize::try_from(index).unwrap_or(0))
    }
}
