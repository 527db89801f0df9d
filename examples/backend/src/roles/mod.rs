//! The roles a `backend` process runs, and what they share.

pub(crate) mod battle;
pub(crate) mod broker;
pub(crate) mod club;
pub(crate) mod driver;
pub(crate) mod lobby;
pub(crate) mod trade;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use dms::routing::{read_table, table_key};
use dms::{Node, NodeBuilder, ServicePath};
use dms_discovery::etcd::EtcdDiscovery;
use dms_example_backend::clusters::{BATTLE, BROKER, TRADE};
use dms_example_backend::counters::Counters;
use dms_example_backend::{
    Accept, AwaitReady, DEFAULT_READY_TIMEOUT, GameError, Offer, ServiceView, TradeReceipt, ask,
    cluster,
};

use crate::print_line;

/// How many requests a service handles at once (the Lobby holds every queued player's).
pub(crate) const CONCURRENCY: usize = 1024;

/// What every role starts from.
pub(crate) struct Setup {
    /// The instance's path.
    pub(crate) path: ServicePath,
    /// etcd.
    pub(crate) discovery: EtcdDiscovery,
    /// The node's request timeout.
    pub(crate) request_timeout: Duration,
}

impl Setup {
    /// A node builder for the instance, on etcd, with the request timeout.
    pub(crate) fn builder(&self) -> NodeBuilder<EtcdDiscovery> {
        Node::builder(self.path.clone())
            .discovery(self.discovery.clone())
            .request_timeout(self.request_timeout)
    }
}

/// Starts `builder`, says so (`ready PATH ENDPOINT...`), or says why not.
pub(crate) async fn start(builder: NodeBuilder<EtcdDiscovery>) -> Result<Node, String> {
    let node = builder
        .start()
        .await
        .map_err(|e| format!("cannot start: {e}"))?;
    let endpoints: Vec<String> = node.endpoints().iter().map(ToString::to_string).collect();
    print_line(&format!("ready {} {}", node.path(), endpoints.join(" ")));
    Ok(node)
}

/// Waits for SIGINT or SIGTERM.
pub(crate) async fn until_stopped() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

/// Says `line` as instance `node` and shuts it down (it deregisters, tells its peers).
pub(crate) async fn stop(node: &Node, line: &str) {
    print_line(&format!("{}: {line}", node.path().instance()));
    node.shutdown().await;
}

/// A poisoned lock is used as it is: the state a panicking handler left is still the
/// state.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Hands `offer.item` from `offer.from` to `offer.to` through Trade: the offer, then its
/// accept, both dispatched by the offer id (so both reach the Trade instance that holds
/// it), both through the brokers.
pub(crate) async fn trade(node: &Node, offer: Offer) -> Result<TradeReceipt, GameError> {
    let trades = cluster(TRADE);
    let offer_id = offer.offer_id.clone();
    let player = offer.to.clone();
    let offered = ask(node, &trades, offer_id.as_str(), offer)
        .await
        .map_err(|f| f.upstream(TRADE))?;
    let accept = Accept {
        offer_id: offer_id.clone(),
        player,
    };
    let accepted = ask(node, &trades, offer_id.as_str(), accept)
        .await
        .map_err(|f| f.upstream(TRADE))?;
    Ok(TradeReceipt {
        offer_id,
        offered_on: offered.trade,
        accepted_on: accepted.trade,
        item: accepted.item,
    })
}

/// Waits until `node` sees what `ready` asks (each count of live instances), then
/// answers its view of `targets`.
pub(crate) async fn await_ready(
    node: &Node,
    discovery: &EtcdDiscovery,
    counters: &Counters,
    ready: &AwaitReady,
    targets: &[&str],
) -> Result<ServiceView, GameError> {
    let timeout = match ready.timeout_ms {
        0 => DEFAULT_READY_TIMEOUT,
        ms => Duration::from_millis(ms),
    };
    for (name, count) in [
        (BATTLE, ready.battles),
        (BROKER, ready.brokers),
        (TRADE, ready.trades),
    ] {
        if count == 0 {
            continue;
        }
        node.wait_for_instances(&cluster(name), count as usize, timeout)
            .await
            .map_err(|e| GameError::NotReady {
                detail: format!("{} sees fewer than {count} {name}: {e}", node.path()),
            })?;
    }
    Ok(view(node, discovery, counters, targets).await)
}

/// `node`'s view of its `targets`, and its routes to Trade.
async fn view(
    node: &Node,
    discovery: &EtcdDiscovery,
    counters: &Counters,
    targets: &[&str],
) -> ServiceView {
    let mut view = ServiceView {
        instance: node.path().instance().to_owned(),
        targets: Vec::new(),
        routes: Vec::new(),
        routed: counters.routed(),
    };
    let mut trades = Vec::new();
    for name in targets {
        for status in node.instances(&cluster(name)).await {
            view.targets.push((
                (*name).to_owned(),
                status.path.instance().to_owned(),
                format!("{:?}", status.state),
            ));
            if *name == TRADE {
                trades.push(status.path);
            }
        }
    }
    let snapshot = match table_key(node.path()) {
        Ok(key) => read_table(discovery, &key).await.ok(),
        Err(_) => None,
    };
    if let Some(snapshot) = snapshot {
        let mut table = snapshot.to_table();
        for trade in &trades {
            // The way the kernel's default policy takes, hop by hop.
            let route = match dms::routing::route(&mut table, node.path(), trade) {
                Some(hops) => std::iter::once(view.instance.as_str())
                    .chain(hops.iter().map(|hop| hop.to.instance()))
                    .collect::<Vec<_>>()
                    .join(" > "),
                None => format!("{} > (no route) > {}", view.instance, trade.instance()),
            };
            view.routes.push(route);
        }
    }
    view
}
