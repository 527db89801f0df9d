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
