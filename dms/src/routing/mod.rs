//! Multi-hop routing: every instance publishes the links it holds into discovery (the
//! *routing table*), follows everyone else's, and forwards a message for an instance it
//! has no link to along the shortest path (docs/PROTOCOL.md §3.5 and §8.7).
//!
//! - **Updater**: after a session's READY exchange, the link to that peer is written into
//!   this instance's [`LinkRecord`] under [`links_key`], attached to its lease; a lost
//!   session withdraws it. [`NodeBuilder::link_cost`](crate::NodeBuilder::link_cost) and
//!   [`Node::set_link_cost`](crate::Node::set_link_cost) set a link's cost.
//! - **Calculator**: the records of the whole table feed a
//!   [`RoutingTable`](dms_core::route::RoutingTable) (a link is used only when both ends
//!   list it, at the larger cost; only instances that [`forward`](LinkRecord::forwards)
//!   are intermediate hops); the next hop comes from a
//!   [`RoutePolicy`](dms_core::route::RoutePolicy): by default
//!   [`EqualCostMultipath`](dms_core::route::EqualCostMultipath), shortest paths with
//!   destinations spread over brokers of equal cost; the choice is remembered per
//!   destination until the table changes.
//! - **Tools**: [`read_table`] reads the whole table (`dms ls --routes`, `dms route`).

mod follow;
mod record;
mod router;

pub use record::{
    Link, LinkRecord, LinkRecordError, MAX_LINKS_PER_RECORD, MAX_LINKS_RECORD_LEN, ROUTING_TABLE,
    instance_of_links_key, links_key, table_key,
};

pub(crate) use follow::{RouteItem, follow_table};
pub(crate) use router::Router;

use dms_core::path::ServicePath;
use dms_discovery::{Discovery, DiscoveryError, Key};

/// Every link record under the routing table `table` (see [`table_key`]), read at one
/// revision: the instances with a readable record, sorted by path, and the records that
/// were refused (key and why).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use dms::routing::{Link, LinkRecord, links_key, read_table, table_key};
/// use dms_discovery::Discovery;
///
/// let discovery = dms::MemoryDiscovery::new();
/// let lobby: dms::ServicePath = "/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?;
/// let record = LinkRecord::new(false, vec![Link { to: "/demo/cn/android/w1/g1/Broker/b-1".into(), cost: 1 }]);
/// discovery.set(&links_key(&lobby)?, record.encode(), None).await?;
/// let table = read_table(&discovery, &table_key(&lobby)?).await?;
/// assert_eq!(table.records, vec![(lobby, record)]);
/// # Ok(())
/// # }
/// ```
pub async fn read_table<D: Discovery>(
    discovery: &D,
    table: &Key,
) -> Result<TableSnapshot, DiscoveryError> {
    let (entries, revision) = discovery.list(table).await?;
    let mut snapshot = TableSnapshot {
        revision,
        records: Vec::new(),
        refused: Vec::new(),
    };
    for entry in entries {
        let Some(path) = instance_of_links_key(table, &entry.key) else {
            continue;
        };
        match LinkRecord::decode(&entry.value) {
            Ok(record) => snapshot.records.push((path, record)),
            Err(error) => snapshot.refused.push((entry.key, error)),
        }
    }
    snapshot.records.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(snapshot)
}

/// The routing table as [`read_table`] found it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TableSnapshot {
    /// The revision it was read at.
    pub revision: dms_discovery::Revision,
    /// Each instance's readable record, sorted by path.
    pub records: Vec<(ServicePath, LinkRecord)>,
    /// Records that were refused, with why (their instances' links are ignored).
    pub refused: Vec<(Key, LinkRecordError)>,
}

impl TableSnapshot {
    /// The routing table these records make, for path queries (`dms route`): each
    /// instance's links as its published edges, and its transit flag.
    pub fn to_table(&self) -> dms_core::route::RoutingTable {
        let mut table = dms_core::route::RoutingTable::new();
        for (path, record) in &self.records {
            // Beyond the table's caps a record is left out, as the kernel leaves it out.
            let _ = table.set_transit(path.clone(), record.forwards);
            let _ = table.replace_edges_from(path.clone(), record.peers());
        }
        table
    }
}

/// One link of a route: its ends and what routing counts for it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Hop {
    /// The instance that sends.
    pub from: ServicePath,
    /// The instance it sends to.
    pub to: ServicePath,
    /// The link's cost (the larger of what its two ends publish).
    pub cost: u32,
}

/// The way a message from `from` to `to` goes when every hop uses the kernel's default
/// policy ([`EqualCostMultipath`](dms_core::route::EqualCostMultipath)) over `table`:
/// its links in order, or `None` when `to` cannot be reached (an empty route when `from`
/// is `to`). For tools (`dms route`); each node follows its own view of the table.
///
/// ```
/// use dms::routing::{Link, LinkRecord, links_key, read_table, route, table_key};
/// use dms_discovery::Discovery;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let discovery = dms::MemoryDiscovery::new();
/// let [lobby, broker, trade]: [dms::ServicePath; 3] = [
///     "/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?,
///     "/demo/cn/android/w1/g1/Broker/broker-1".parse()?,
///     "/demo/cn/android/w1/g1/Trade/trade-1".parse()?,
/// ];
/// let link = |to: &dms::ServicePath| Link { to: to.to_string(), cost: 1 };
/// for (who, forwards, peers) in [(&lobby, false, vec![&broker]), (&broker, true, vec![&lobby, &trade]), (&trade, false, vec![&broker])] {
///     let record = LinkRecord::new(forwards, peers.into_iter().map(link).collect());
///     discovery.set(&links_key(who)?, record.encode(), None).await?;
/// }
/// let mut table = read_table(&discovery, &table_key(&lobby)?).await?.to_table();
/// let hops = route(&mut table, &lobby, &trade).expect("reachable");
/// assert_eq!(hops.iter().map(|h| h.to.instance()).collect::<Vec<_>>(), ["broker-1", "trade-1"]);
/// # Ok(())
/// # }
/// ```
pub fn route(
    table: &mut dms_core::route::RoutingTable,
    from: &ServicePath,
    to: &ServicePath,
) -> Option<Vec<Hop>> {
    use dms_core::route::RoutePolicy;
    table.distance(from, to)?;
    let mut policy = dms_core::route::EqualCostMultipath::default();
    let mut hops = Vec::new();
    let mut at = from.clone();
    while at != *to {
        let next = policy.next_hop(table, &at, to)?;
        let cost = table.usable_cost(&at, &next)?;
        hops.push(Hop {
            from: at,
            to: next.clone(),
            cost,
        });
        at = next;
        if hops.len() > table.node_count() {
            return None; // cannot happen with costs of at least 1: every hop is nearer
        }
    }
    Some(hops)
}
