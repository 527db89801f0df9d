//! The driver's view of the routing table: its own links (the Updater's input), everyone
//! else's records (the Calculator's), and the next hop towards an instance.

use std::collections::{BTreeMap, HashMap};

use dms_core::path::ServicePath;
use dms_core::route::{EqualCostMultipath, RouteConfig, RoutePolicy, RoutingTable};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::follow::RouteItem;
use super::record::{Link, LinkRecord, MAX_LINKS_PER_RECORD};

/// Owns the routing table of one node.
pub(crate) struct Router {
    local: ServicePath,
    forwards: bool,
    table: RoutingTable,
    policy: Box<dyn RoutePolicy>,
    /// Live links of this node: peer -> cost.
    links: BTreeMap<ServicePath, u32>,
    /// Costs set for particular peers (`Node::set_link_cost`).
    costs: BTreeMap<ServicePath, u32>,
    default_cost: u32,
    /// This node's record, for the registrar to write into discovery.
    publish: watch::Sender<LinkRecord>,
    /// The table was read from discovery at least once.
    synced: bool,
    /// Next hops asked since the table last changed, by destination (`None`:
    /// unreachable): a broker decides once per destination, not once per message.
    next_hops: HashMap<ServicePath, Option<ServicePath>>,
    /// The warning that links go unpublished was logged.
    over_cap_logged: bool,
    /// This node's links changed since its record was last handed to the registrar.
    unpublished: bool,
}

/// Next hops remembered at most (one per destination).
const MAX_REMEMBERED_HOPS: usize = 4096;

/// Shortest-path trees a node's table keeps: its own and one per neighbour
/// [`EqualCostMultipath`] considers, with room to spare.
const CACHED_TREES: usize = 2 * EqualCostMultipath::DEFAULT_MAX_CANDIDATES;

impl Router {
    pub(crate) fn new(
        local: ServicePath,
        forwards: bool,
        default_cost: u32,
        policy: Box<dyn RoutePolicy>,
        publish: watch::Sender<LinkRecord>,
    ) -> Self {
        let mut table = RoutingTable::with_config(
            RouteConfig::builder()
                .max_cached_sources(CACHED_TREES)
                .build(),
        );
        // A fresh table has room for one node.
        let _ = table.set_transit(local.clone(), forwards);
        Self {
            local,
            forwards,
            table,
            policy,
            links: BTreeMap::new(),
            costs: BTreeMap::new(),
            default_cost: default_cost.max(1),
            publish,
            synced: false,
            next_hops: HashMap::new(),
            over_cap_logged: false,
            unpublished: false,
        }
    }

    /// A session with `peer` completed its READY exchange: the link is published.
    pub(crate) fn link_up(&mut self, peer: &ServicePath) {
        let cost = self.costs.get(peer).copied().unwrap_or(self.default_cost);
        if self.links.insert(peer.clone(), cost) != Some(cost) {
            self.own_edge(peer, Some(cost));
        }
    }

    /// The session with `peer` ended: the link is withdrawn.
    pub(crate) fn link_down(&mut self, peer: &ServicePath) {
        if self.links.remove(peer).is_some() {
            self.own_edge(peer, None);
        }
    }

    /// Sets what the link to `peer` costs (now, if it is up, and whenever it comes up).
    pub(crate) fn set_cost(&mut self, peer: &ServicePath, cost: u32) {
        let cost = cost.max(1);
        self.costs.insert(peer.clone(), cost);
        if let Some(current) = self.links.get_mut(peer) {
            if *current != cost {
                *current = cost;
                self.own_edge(peer, Some(cost));
            }
        }
    }

    /// A change of the table in discovery; returns whether it changed anything another
    /// instance could be reached by. This node's own record is its own business: what
    /// discovery says of it (possibly written by someone else) is ignored.
    pub(crate) fn on_item(&mut self, item: RouteItem) -> bool {
        self.next_hops.clear();
        let changed = match &item {
            RouteItem::Snapshot(records) => {
                !(records.is_empty() && self.table.nodes().all(|n| *n == self.local))
            }
            RouteItem::Put(path, _) | RouteItem::Delete(path) => *path != self.local,
        };
        match item {
            RouteItem::Snapshot(records) => {
                self.synced = true;
                let fresh: BTreeMap<ServicePath, LinkRecord> = records.into_iter().collect();
                let gone: Vec<ServicePath> = self
                    .table
                    .nodes()
                    .filter(|node| **node != self.local && !fresh.contains_key(*node))
                    .cloned()
                    .collect();
                for node in gone {
                    self.table.remove_edges_from(&node);
                }
                for (path, record) in fresh {
                    self.put(path, &record);
                }
            }
            RouteItem::Put(path, record) => self.put(path, &record),
            RouteItem::Delete(path) => {
                if path != self.local {
                    self.table.remove_edges_from(&path);
                }
            }
        }
        changed
    }

    fn put(&mut self, path: ServicePath, record: &LinkRecord) {
        if path == self.local {
            return;
        }
        let transit = self.table.set_transit(path.clone(), record.forwards);
        let edges = self.table.replace_edges_from(path.clone(), record.peers());
        if let Err(error) = transit.and(edges) {
            warn!(instance = %path, %error, "link record not taken into the routing table");
        }
    }

    /// The adjacent instance to send a message for `to` to, or `None` when `to` cannot
    /// be reached through the table.
    pub(crate) fn next_hop(&mut self, to: &ServicePath) -> Option<ServicePath> {
        let next = match self.next_hops.get(to) {
            Some(known) => known.clone(),
            None => {
                let next = self.policy.next_hop(&mut self.table, &self.local, to);
                // Destinations come from peers: the memo is bounded (and starts over).
                if self.next_hops.len() >= MAX_REMEMBERED_HOPS {
                    self.next_hops.clear();
                }
                self.next_hops.insert(to.clone(), next.clone());
                next
            }
        }?;
        // Only over one of our own live links, whatever the table says.
        self.links.contains_key(&next).then_some(next)
    }

    /// Whether the table was read from discovery at least once.
    pub(crate) fn synced(&self) -> bool {
        self.synced
    }

    /// This node's own link to `peer` is now `cost` (`None`: gone): into its table at once;
    /// into its record at the next [`publish`](Self::publish).
    fn own_edge(&mut self, peer: &ServicePath, cost: Option<u32>) {
        self.next_hops.clear();
        self.unpublished = true;
        let result = match cost {
            Some(cost) => self
                .table
                .insert_edge(self.local.clone(), peer.clone(), cost)
                .map(|_| ()),
            None => {
                self.table.remove_edge(&self.local, peer);
                Ok(())
            }
        };
        if let Err(error) = result {
            warn!(%error, %peer, "own link not taken into the routing table");
        }
    }

    /// Hands this node's record to the registrar if its links changed since the last
    /// call: once per turn of the driver's loop, however many links came or went in it.
    pub(crate) fn publish(&mut self) {
        if !std::mem::take(&mut self.unpublished) {
            return;
        }
        // Readers refuse a record of more links than MAX_LINKS_PER_RECORD (all of this
        // node's links would then be ignored): the first ones in path order are published,
        // the others are still used by this node itself.
        if self.links.len() > MAX_LINKS_PER_RECORD && !self.over_cap_logged {
            self.over_cap_logged = true;
            warn!(
                node = %self.local,
                links = self.links.len(),
                published = MAX_LINKS_PER_RECORD,
                "more links than a link record may list: the rest are not published"
            );
        }
        let record = LinkRecord::new(
            self.forwards,
            self.links
                .iter()
                .take(MAX_LINKS_PER_RECORD)
                .map(|(to, cost)| Link {
                    to: to.to_string(),
                    cost: *cost,
                })
                .collect(),
        );
        debug!(node = %self.local, links = record.links.len(), "links changed");
        self.publish.send_replace(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(i: usize) -> ServicePath {
        format!("/demo/cn/android/w1/g1/Trade/t-{i:05}")
            .parse()
            .unwrap()
    }

    #[test]
    fn a_record_never_lists_more_links_than_readers_accept() {
        let (publish, record) = watch::channel(LinkRecord::new(true, Vec::new()));
        let local: ServicePath = "/demo/cn/android/w1/g1/Broker/b-1".parse().unwrap();
        let mut router = Router::new(
            local,
            true,
            1,
            Box::new(EqualCostMultipath::default()),
            publish,
        );
        for i in 0..MAX_LINKS_PER_RECORD + 10 {
            router.link_up(&path(i));
        }
        router.publish();
        let published = record.borrow().clone();
        assert_eq!(published.links.len(), MAX_LINKS_PER_RECORD);
        assert_eq!(published.links[0].to, path(0).to_string());
        // What readers make of it: accepted.
        assert!(LinkRecord::decode(&published.encode()).is_ok());
        // The node itself still reaches every peer it is linked to.
        assert_eq!(
            router.next_hop(&path(MAX_LINKS_PER_RECORD + 5)),
            None,
            "no table record: not usable"
        );
        router.link_down(&path(0));
        router.publish();
        assert_eq!(record.borrow().links.len(), MAX_LINKS_PER_RECORD);
        assert_eq!(record.borrow().links[0].to, path(1).to_string());
    }
}
