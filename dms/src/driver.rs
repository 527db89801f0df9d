//! The one task that owns a node's protocol state: it drains the protocol's outputs into
//! the middleware, feeds it inbound messages, discovery changes, application commands and
//! timers, and completes waiting requests.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dms_core::Backoff;
use dms_core::dispatch::{Candidate, DispatchPolicy};
use dms_core::path::{ClusterPath, ServicePath};
use dms_core::proto::control::{CommandCode, Control, Reason, Route, codes, flags};
use dms_core::proto::{Event, Initiator, LossReason, Protocol, RequestId, Routed};
use dms_core::trace::TraceContext;
use dms_core::{Incoming, Multipart, PeerId, SendError};
use dms_discovery::{Discovery, DiscoveryError, WatchEvent};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{Span, debug, debug_span, info, warn};

use crate::awaiting::{Awaiting, AwaitingRequest};
use crate::error::RouteFailure;
use crate::forwarding::Upstream;
use crate::incoming::{IncomingRequest, Kind, Responder};
use crate::registrar::Release;
use crate::registration::{Registration, cluster_key};
use crate::request_queue::QueueSender;
use crate::routing::{RouteItem, Router};
use crate::telemetry::{EXPORT_INTERVAL, NodeMetrics};
use crate::transport::Transports;
use crate::{InstanceState, InstanceStatus, NodeEvent, Reply, RequestError};

/// Messages waiting for room in one full link, at most (beyond, they are dropped and
/// their requests time out).
const MAX_PARKED_PER_PEER: usize = 1024;
/// Inbound items taken from the middleware per wake-up, at most.
const INBOX_BATCH: usize = 64;
/// How often parked messages are retried.
const PARKED_RETRY: Duration = Duration::from_millis(2);
/// Time a graceful shutdown spends flushing each link.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(1);

/// The clock: the kernel's only time source (tokio's, so paused-time tests drive it).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Where a request or notification goes.
#[derive(Debug, Clone)]
pub(crate) enum Destination {
    /// One instance of a cluster, picked by the dispatch policy with this key.
    Cluster(ClusterPath, u64),
    /// That instance.
    Instance(ServicePath),
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cluster(cluster, _) => write!(f, "{cluster}"),
            Self::Instance(path) => write!(f, "{path}"),
        }
    }
}

/// What the application asks of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    Request {
        to: Destination,
        body: Multipart,
        timeout: Duration,
        done: oneshot::Sender<Result<Reply, RequestError>>,
        /// What the REQ carries (docs/PROTOCOL.md §3.4).
        trace: Option<TraceContext>,
        /// `dms.request`: the driver records the instance and the request id in it.
        span: Span,
    },
    Notify {
        to: Destination,
        body: Multipart,
        done: oneshot::Sender<Result<ServicePath, RequestError>>,
    },
    Broadcast {
        cluster: ClusterPath,
        body: Multipart,
        done: oneshot::Sender<Result<Vec<ServicePath>, RequestError>>,
    },
    Reply {
        peer: PeerId,
        id: RequestId,
        result: Result<Multipart, Reason>,
    },
    Instances {
        cluster: ClusterPath,
        done: oneshot::Sender<Vec<InstanceStatus>>,
    },
    SetLinkCost {
        peer: ServicePath,
        cost: u32,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
    #[cfg(feature = "fault-injection")]
    Suspend,
    #[cfg(feature = "fault-injection")]
    Kill {
        done: oneshot::Sender<()>,
    },
}

/// A change of a target cluster seen in discovery.
#[derive(Debug)]
pub(crate) enum WatchItem {
    /// The whole cluster as read at one revision (start, or resync after compaction).
    Snapshot(ClusterPath, Vec<(ServicePath, Registration)>),
    Put(ServicePath, Registration),
    Delete(ServicePath),
}

/// The instance a message goes to and the adjacent peer it is handed to.
#[derive(Debug, Clone)]
struct Picked {
    /// The adjacent peer: `to` itself, or the next hop towards it.
    next: PeerId,
    to: ServicePath,
    /// Sent through the routing table (`next` is not `to`).
    routed: bool,
}

/// A request waiting for its reply.
struct Waiter {
    to: ServicePath,
    done: oneshot::Sender<Result<Reply, RequestError>>,
}

pub(crate) struct Driver {
    pub(crate) proto: Protocol,
    pub(crate) transports: Transports,
    /// Dropping it makes the registrar drop the lease: the registration vanishes.
    pub(crate) registered: Option<oneshot::Sender<Release>>,
    pub(crate) local: ServicePath,
    pub(crate) targets: HashMap<ClusterPath, HashMap<ServicePath, Registration>>,
    pub(crate) policy: Arc<dyn DispatchPolicy>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) command_tx: mpsc::WeakSender<Command>,
    pub(crate) incoming: QueueSender,
    pub(crate) metrics: Arc<NodeMetrics>,
    pub(crate) events: broadcast::Sender<NodeEvent>,
    pub(crate) watch: mpsc::Receiver<WatchItem>,
    pub(crate) reconnect: (Duration, Duration),
    pub(crate) state: DriverState,
    pub(crate) closed_tx: Option<mpsc::Sender<PeerId>>,
    /// The routing table and this node's links in it.
    pub(crate) router: Router,
    pub(crate) routes: mpsc::Receiver<RouteItem>,
    /// Target clusters reached only through the routing table: watched, never dialled.
    pub(crate) routed_targets: HashSet<ClusterPath>,
    /// How long a forwarded request waits for its next hop's reply.
    pub(crate) forward_timeout: Duration,
    /// Hop limit of the routed messages this node originates.
    pub(crate) hop_limit: u8,
}

/// The driver's bookkeeping besides the protocol.
#[derive(Default)]
pub(crate) struct DriverState {
    ready: HashMap<PeerId, ServicePath>,
    denied: HashMap<ServicePath, String>,
    connecting: HashSet<ServicePath>,
    /// Instances gone from discovery whose session is still live: used until the session
    /// ends (liveness is the heartbeat's call; a lease can lapse while etcd is away), never
    /// redialled after.
    deregistered: HashSet<ServicePath>,
    /// Links being closed; not redialled until closed.
    closing: HashSet<PeerId>,
    /// When an unreachable instance is dialled again.
    retry_at: HashMap<ServicePath, Instant>,
    /// Redial delays per instance, reset when it is probed successfully.
    backoff: HashMap<ServicePath, Backoff>,
    waiting: HashMap<RequestId, Waiter>,
    /// Requests waiting for a first ready instance of their destination.
    awaiting: Awaiting,
    /// Target clusters read from discovery at least once.
    synced: HashSet<ClusterPath>,
    /// Messages waiting for room, per peer: one full link never holds up the others.
    parked: HashMap<PeerId, VecDeque<Multipart>>,
    /// Peers whose links are not read: replies to their requests are parked (they send
    /// requests faster than they read the answers). Read again once the backlog is gone.
    throttled: HashSet<PeerId>,
    /// When the transports' and the protocol's counters are next copied to the recorder.
    next_export: Option<Instant>,
    /// Requests this node forwarded, by the id of the forwarded copy.
    pub(crate) forwarded: HashMap<RequestId, Upstream>,
}

/// Outcome of a connect attempt, reported back to the driver.
struct Connected {
    path: ServicePath,
    result: Result<PeerId, String>,
}

impl Driver {
    pub(crate) async fn run(mut self) {
        let (connected_tx, mut connected) = mpsc::channel::<Connected>(256);
        let (closed_tx, mut closed) = mpsc::channel::<PeerId>(256);
        let mut inbox = Vec::with_capacity(INBOX_BATCH);
        // The buffers of the other media (see `Transports::recv_many`), kept across batches.
        let mut spare: [Vec<Incoming>; 3] = Default::default();
        self.closed_tx = Some(closed_tx);
        let snapshot: Vec<_> = self.targets.keys().cloned().collect();
        for cluster in snapshot {
            self.connect_cluster(&cluster, &connected_tx);
        }
        loop {
            self.flush();
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { done }) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    #[cfg(feature = "fault-injection")]
                    Some(Command::Suspend) => {
                        if self.suspended().await {
                            return;
                        }
                    }
                    #[cfg(feature = "fault-injection")]
                    Some(Command::Kill { done }) => return self.die(done).await,
                    Some(command) => self.on_command(command),
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                taken = self.transports.recv_many(&mut inbox, &mut spare, INBOX_BATCH) => match taken {
                    Ok(medium) => {
                        for item in inbox.drain(..) {
                            if self.transports.observe(medium, &item) {
                                self.on_incoming(item);
                            }
                        }
                    }
                    Err(error) => {
                        warn!(%error, "middleware closed");
                        return;
                    }
                },
                Some(item) = self.watch.recv() => {
                    self.on_watch(item, &connected_tx);
                    self.retry_awaiting();
                }
                Some(item) = self.routes.recv() => {
                    self.router.on_item(item);
                    let _ = self.events.send(NodeEvent::RoutesChanged);
                    self.retry_awaiting();
                }
                Some(done) = connected.recv() => self.on_connected(done),
                Some(peer) = closed.recv() => self.on_closed(peer, &connected_tx),
                () = sleep_until(deadline) => self.on_timer(&connected_tx),
            }
        }
    }

    /// A suspended node processes nothing until killed (returns true) or resumed.
    #[cfg(feature = "fault-injection")]
    async fn suspended(&mut self) -> bool {
        info!(node = %self.local, "suspended");
        loop {
            match self.commands.recv().await {
                Some(Command::Kill { done }) => {
                    self.die(done).await;
                    return true;
                }
                None => return true,
                Some(Command::Shutdown { done }) => {
                    let _ = done.send(());
                    return true;
                }
                Some(_) => {}
            }
        }
    }

    /// Dies without a word: no DISCONNECT; sockets close, the lease goes (and with it the
    /// registration), then `done` is told.
    #[cfg(feature = "fault-injection")]
    async fn die(&mut self, done: oneshot::Sender<()>) {
        self.transports.close();
        self.deregister(false).await;
        let _ = done.send(());
    }

    /// Ends the registration (see [`Release`]) and waits until it is done.
    async fn deregister(&mut self, graceful: bool) {
        if let Some(registered) = self.registered.take() {
            let (done, gone) = oneshot::channel();
            if registered.send(Release { done, graceful }).is_ok() {
                let _ = gone.await;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut deadline = self.proto.poll_timeout();
        let mut earlier = |at: Instant| {
            deadline = Some(deadline.map_or(at, |d| d.min(at)));
        };
        if let Some(at) = self.state.retry_at.values().min().copied() {
            earlier(at);
        }
        if !self.state.parked.is_empty() {
            earlier(now() + PARKED_RETRY);
        }
        if let Some(at) = self.state.awaiting.next_deadline() {
            earlier(at);
        }
        earlier(self.state.next_export.unwrap_or_else(now));
        deadline
    }

    /// Drains the protocol's outputs until it has none.
    fn flush(&mut self) {
        self.retry_parked();
        loop {
            let mut idle = true;
            while let Some(transmit) = self.proto.poll_transmit() {
                idle = false;
                if transmit.urgent {
                    self.transmit_urgent(transmit.msg);
                } else {
                    self.transmit(transmit.msg);
                }
            }
            while let Some(event) = self.proto.poll_event() {
                idle = false;
                self.on_event(event);
            }
            if idle {
                return;
            }
        }
    }

    fn transmit(&mut self, msg: Multipart) {
        let peer = msg.first().and_then(|f| PeerId::new(f.clone()).ok());
        if let Some(peer) = peer.as_ref().filter(|p| self.state.parked.contains_key(*p)) {
            // Behind what is already waiting for that link, to keep its order.
            return self.park(peer.clone(), msg);
        }
        match self.transports.try_send(msg) {
            Ok(()) => {}
            Err(SendError::Full { peer, msg }) => self.park(peer, *msg),
            // Requests and notifications are checked before they are queued; what fails
            // here is the protocol's own traffic to a link that just went down.
            Err(error) => debug!(%error, "message not sent"),
        }
    }

    /// A heartbeat: ahead of data queued on the link and of messages parked for it. When
    /// even the urgent lane is full (the peer has not read 64 KiB of heartbeats), it is
    /// dropped rather than parked behind data: a late heartbeat proves nothing, and the
    /// missing PONG is what the liveness check should see.
    fn transmit_urgent(&mut self, msg: Multipart) {
        if let Err(error) = self.transports.try_send_urgent(msg) {
            debug!(%error, "heartbeat not sent");
        }
    }

    /// Parks `msg` behind what waits for `peer`'s full link, or drops it when that
    /// backlog is full. A parked reply throttles the peer: its link is not read until
    /// the backlog is gone, so a peer that does not read its replies stops costing us
    /// (its sends meet TCP's flow control) instead of crowding out other peers.
    fn park(&mut self, peer: PeerId, msg: Multipart) {
        let throttle = !self.state.throttled.contains(&peer)
            && msg
                .frames()
                .get(1)
                .and_then(|control| Control::peek_command(control))
                == Some(CommandCode::Rep);
        if throttle {
            debug!(node = %self.local, %peer, "replies cannot leave: link no longer read");
            self.transports.pause_reading(&peer, true);
            self.state.throttled.insert(peer.clone());
            self.metrics.throttled.increment(1);
        }
        let queue = self.state.parked.entry(peer).or_default();
        if queue.len() < MAX_PARKED_PER_PEER {
            queue.push_back(msg);
            self.metrics.parked.increment(1.0);
        } else {
            self.metrics.dropped_backlog_full.increment(1);
            debug!(
                "a peer's outbound backlog is full: message dropped (its request will time out)"
            );
        }
    }

    fn retry_parked(&mut self) {
        let transports = &self.transports;
        let throttled = &mut self.state.throttled;
        let metrics = &self.metrics;
        self.state.parked.retain(|peer, queue| {
            while let Some(msg) = queue.pop_front() {
                match transports.try_send(msg) {
                    Ok(()) => metrics.parked.decrement(1.0),
                    Err(SendError::Full { msg, .. }) => {
                        queue.push_front(*msg);
                        return true;
                    }
                    Err(error) => {
                        // The link is gone: what waited for it goes too (its requests fail
                        // with the session).
                        let dropped = queue.len() + 1;
                        debug!(%error, dropped, "parked messages not sent");
                        metrics.parked.decrement(dropped as f64);
                        metrics.dropped_peer_lost.increment(dropped as u64);
                        throttled.remove(peer);
                        return false;
                    }
                }
            }
            if throttled.remove(peer) {
                transports.pause_reading(peer, false);
            }
            false
        });
    }

    fn on_incoming(&mut self, item: Incoming) {
        let now = now();
        match item {
            Incoming::Message(msg) => {
                if let Some(peer) = msg.first().and_then(|f| PeerId::new(f.clone()).ok()) {
                    self.proto.handle_message(now, peer, msg);
                }
            }
            Incoming::LinkUp { peer, role, .. } => self.proto.handle_link_up(now, peer, role),
            Incoming::LinkDown { peer, .. } => {
                // A new link of the peer starts unthrottled.
                self.state.throttled.remove(&peer);
                self.proto.handle_link_down(now, &peer);
            }
            Incoming::Refused { endpoint, error } => {
                debug!(%endpoint, %error, "connection refused")
            }
            _ => {}
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::PeerReady { peer, path, role } => {
                debug!(node = %self.local, %path, ?role, "peer ready");
                self.state.retry_at.remove(&path);
                self.state.backoff.remove(&path);
                self.state.ready.insert(peer, path.clone());
                self.router.link_up(&path);
                self.metrics.peer_up(role, self.state.ready.len());
                let _ = self.events.send(NodeEvent::PeerUp { path, role });
                self.retry_awaiting();
            }
            Event::PeerLost { peer, path, reason } => self.on_peer_lost(peer, path, reason),
            Event::Forward { peer, id, message } => self.on_forward(peer, id, message),
            Event::Request {
                peer,
                from,
                id,
                body,
                trace,
            } => {
                let span = debug_span!(
                    target: crate::trace::TARGET,
                    parent: None,
                    "dms.handle",
                    node = %self.local,
                    from = %from,
                    request_id = id.0,
                    traceparent = tracing::field::Empty,
                );
                crate::trace::incoming(&span, trace);
                let request = IncomingRequest {
                    from,
                    body,
                    kind: Kind::Request(Responder {
                        peer: peer.clone(),
                        id,
                        commands: self.command_tx.upgrade().unwrap_or_else(closed_sender),
                        answered: false,
                        trace,
                        span,
                    }),
                };
                match self.incoming.try_push(&peer, request) {
                    Ok(()) => self.metrics.received(true, false),
                    Err(mut refused) => {
                        self.metrics.overloaded.increment(1);
                        // Answer here, not from the responder's drop.
                        if let Kind::Request(responder) = &mut refused.kind {
                            responder.answered = true;
                        }
                        let overloaded = Reason {
                            code: codes::OVERLOADED,
                            detail: format!(
                                "{} has too many requests waiting (from {peer} or in all)",
                                self.local
                            ),
                        };
                        let _ = self.proto.reply(&peer, id, Err(overloaded));
                    }
                }
            }
            Event::Notification {
                peer,
                from,
                broadcast,
                body,
            } => {
                let note = IncomingRequest {
                    from,
                    body,
                    kind: Kind::Notification { broadcast },
                };
                if self.incoming.try_push(&peer, note).is_ok() {
                    self.metrics.received(false, broadcast);
                } else {
                    self.metrics.dropped_incoming_full.increment(1);
                    warn!(node = %self.local, "incoming queue full: notification dropped");
                }
            }
            Event::Reply { id, result } => {
                let Some(result) = self.on_forwarded_reply(id, result) else {
                    return;
                };
                if let Some(waiter) = self.state.waiting.remove(&id) {
                    let result = match result {
                        Ok(body) => Ok(Reply {
                            from: waiter.to,
                            body,
                        }),
                        Err(dms_core::proto::RequestError::Timeout) => Err(RequestError::Timeout),
                        Err(dms_core::proto::RequestError::PeerLost(reason)) => {
                            Err(RequestError::PeerLost(reason.to_string()))
                        }
                        Err(dms_core::proto::RequestError::Remote(reason)) => {
                            match RouteFailure::from_code(reason.code) {
                                Some(failure) => Err(RequestError::Route {
                                    failure,
                                    detail: reason.detail,
                                }),
                                None => Err(RequestError::Remote {
                                    code: reason.code,
                                    detail: reason.detail,
                                }),
                            }
                        }
                        // The instance asked, also when a broker relayed its refusal.
                        Err(dms_core::proto::RequestError::Denied { op, .. }) => {
                            Err(RequestError::denied(waiter.to.clone(), op))
                        }
                        Err(other) => Err(RequestError::PeerLost(other.to_string())),
                    };
                    let _ = waiter.done.send(result);
                }
            }
            _ => {}
        }
    }

    fn on_peer_lost(&mut self, peer: PeerId, path: Option<ServicePath>, reason: LossReason) {
        if let Some(lost) = self.state.ready.remove(&peer) {
            self.router.link_down(&lost);
        }
        self.metrics.peer_lost(&reason, self.state.ready.len());
        let path = path.or_else(|| std::str::from_utf8(peer.as_bytes()).ok()?.parse().ok());
        info!(node = %self.local, peer = %peer, %reason, "peer lost");
        if let Some(path) = &path {
            let _ = self.events.send(NodeEvent::PeerDown {
                path: path.clone(),
                reason: reason.to_string(),
            });
            if let LossReason::Disconnected {
                initiator: Initiator::Remote,
                reason,
            } = &reason
            {
                if reason.code == codes::ACCESS_DENIED {
                    self.state
                        .denied
                        .insert(path.clone(), reason.detail.clone());
                }
            }
        }
        // The session is over but the link may be up (a silent peer): close it. The driver
        // redials the instance itself while it is registered (transports never redial).
        self.close_link(peer);
        if let Some(path) = path {
            if self.state.deregistered.contains(&path) {
                self.forget(&path);
            } else if self.registration(&path).is_some() && !self.state.denied.contains_key(&path) {
                self.schedule_retry(path);
            }
        }
        // A refusal may leave waiting requests with no instance that could come.
        self.retry_awaiting();
    }

    /// A link closed by [`close_link`](Self::close_link) is gone: dial the instance again
    /// if it is (still, or again) registered.
    fn on_closed(&mut self, peer: PeerId, connected_tx: &mpsc::Sender<Connected>) {
        self.state.closing.remove(&peer);
        let path = std::str::from_utf8(peer.as_bytes())
            .ok()
            .and_then(|p| p.parse::<ServicePath>().ok());
        if let Some(path) = path {
            if !self.state.retry_at.contains_key(&path) {
                self.maybe_connect(&path, connected_tx);
            }
        }
    }

    /// Closes the link to `peer` (flushing it) in the background; the peer is not dialled
    /// again until that is done.
    fn close_link(&mut self, peer: PeerId) {
        if !self.state.closing.insert(peer.clone()) {
            return;
        }
        let dialer = self.transports.dialer_of(&peer);
        let report = self.closed_tx.clone();
        tokio::spawn(async move {
            if let Some(dialer) = dialer {
                let _ = tokio::time::timeout(SHUTDOWN_FLUSH, dialer.disconnect(&peer)).await;
            }
            if let Some(report) = report {
                let _ = report.send(peer).await;
            }
        });
    }

    fn on_command(&mut self, command: Command) {
        let now = now();
        match command {
            Command::Request {
                to,
                body,
                timeout,
                done,
                trace,
                span,
            } => self.request(
                now,
                AwaitingRequest {
                    to,
                    body,
                    deadline: now + timeout,
                    done,
                    trace,
                    span,
                },
            ),
            Command::Notify { to, body, done } => {
                let result = self.pick(&to).and_then(|picked| {
                    self.check_size(&picked.next, &body)?;
                    self.send_one_way(&picked, body, false)
                        .map(|()| picked.to.clone())
                        .map_err(|e| not_sent(e, &picked.to))
                });
                let _ = done.send(result);
            }
            Command::Broadcast {
                cluster,
                body,
                done,
            } => {
                let result = match self.live_instances(&cluster) {
                    Err(error) => Err(error),
                    Ok(live) => {
                        // One copy per live instance, directly or through the routing
                        // table: each gets it exactly once.
                        let mut reached = Vec::new();
                        for (_, picked) in live {
                            if self.send_one_way(&picked, body.clone(), true).is_ok() {
                                reached.push(picked.to);
                            }
                        }
                        Ok(reached)
                    }
                };
                let _ = done.send(result);
            }
            Command::Reply { peer, id, result } => {
                // A reply over the link's limits would be dropped at the link and its
                // requester left to time out: it gets an error reply saying why instead.
                let result = match result {
                    Ok(body) => match self.transports.too_large(&peer, &body) {
                        Some(why) => {
                            warn!(%peer, %why, "reply over the link's limits: not sent");
                            self.metrics.replies_too_large.increment(1);
                            Err(Reason {
                                code: codes::REPLY_TOO_LARGE,
                                detail: format!("reply not sent: {why}"),
                            })
                        }
                        None => Ok(body),
                    },
                    Err(reason) => Err(reason),
                };
                let _ = self.proto.reply(&peer, id, result);
            }
            Command::Instances { cluster, done } => {
                let registered: Vec<(ServicePath, Registration)> = self
                    .targets
                    .get(&cluster)
                    .into_iter()
                    .flat_map(|instances| instances.iter())
                    .map(|(path, reg)| (path.clone(), reg.clone()))
                    .collect();
                let mut list: Vec<InstanceStatus> = registered
                    .iter()
                    .map(|(path, reg)| InstanceStatus {
                        path: path.clone(),
                        bucket: reg.bucket,
                        endpoints: reg.endpoints.clone(),
                        state: if self.state.ready.contains_key(&path.peer_id()) {
                            InstanceState::Ready
                        } else if self.routed_targets.contains(&cluster) {
                            if self.next_hop(path).is_some() {
                                InstanceState::Routed
                            } else {
                                InstanceState::Unreachable
                            }
                        } else if self.state.denied.contains_key(path) {
                            InstanceState::Denied
                        } else if self.state.retry_at.contains_key(path) {
                            InstanceState::Unreachable
                        } else {
                            InstanceState::Connecting
                        },
                    })
                    .collect();
                list.sort_by_key(|s| s.bucket);
                let _ = done.send(list);
            }
            Command::SetLinkCost { peer, cost } => self.router.set_cost(&peer, cost),
            Command::Shutdown { .. } => {}
            #[cfg(feature = "fault-injection")]
            Command::Suspend | Command::Kill { .. } => {}
        }
    }

    /// Sends a request to the instance its destination picks; waits (within its deadline)
    /// when none is ready yet but one may come (see [`crate::awaiting`]).
    fn request(&mut self, now: Instant, request: AwaitingRequest) {
        let Some(timeout) = request.left(now) else {
            let _ = request.done.send(Err(RequestError::NoInstance(format!(
                "{}: no instance became ready within the request's timeout",
                request.to
            ))));
            return;
        };
        let picked = self.pick(&request.to);
        if matches!(picked, Err(RequestError::NoInstance(_))) && self.may_come(&request.to) {
            self.state.awaiting.push(request);
            return;
        }
        let AwaitingRequest {
            body,
            done,
            trace,
            span,
            ..
        } = request;
        let result = picked.and_then(|picked| {
            self.check_size(&picked.next, &body)?;
            let sent = if picked.routed {
                self.metrics.routed.increment(1);
                let route = Route {
                    origin: self.local.clone(),
                    destination: picked.to.clone(),
                };
                self.proto
                    .forward(
                        now,
                        &picked.next,
                        Routed {
                            flags: flags::EXPECT_REPLY,
                            route,
                            hop_limit: self.hop_limit,
                            body,
                            trace,
                        },
                        timeout,
                    )
                    .map(|id| id.unwrap_or(RequestId(0)))
            } else {
                self.proto
                    .request_traced(now, &picked.next, body, timeout, trace)
            };
            sent.map(|id| (id, picked.to.clone()))
                .map_err(|e| not_sent(e, &picked.to))
        });
        match result {
            Ok((id, path)) => {
                span.record("instance", tracing::field::display(&path));
                span.record("request_id", id.0);
                self.state.waiting.insert(id, Waiter { to: path, done });
            }
            Err(error) => {
                let _ = done.send(Err(error));
            }
        }
    }

    /// Whether an instance of `to` may become ready: its cluster was not read from
    /// discovery yet, or it has registered instances that did not refuse us.
    fn may_come(&self, to: &Destination) -> bool {
        let (cluster, only) = match to {
            Destination::Cluster(cluster, _) => (cluster.clone(), None),
            Destination::Instance(path) => (path.cluster(), Some(path)),
        };
        let Some(instances) = self.targets.get(&cluster) else {
            return false;
        };
        if !self.state.synced.contains(&cluster) {
            return true;
        }
        instances.keys().any(|path| {
            only.is_none_or(|only| only == path) && !self.state.denied.contains_key(path)
        })
    }

    /// Tries the waiting requests again (an instance became ready, discovery changed, or
    /// a deadline passed).
    fn retry_awaiting(&mut self) {
        if self.state.awaiting.is_empty() {
            return;
        }
        let now = now();
        for request in self.state.awaiting.take_all() {
            self.request(now, request);
        }
    }

    /// `TooLarge` when `body` breaks the wire limits of `peer`'s link: refused before it
    /// is queued (it would be dropped at the link, its caller left to time out).
    fn check_size(&self, peer: &PeerId, body: &Multipart) -> Result<(), RequestError> {
        match self.transports.too_large(peer, body) {
            Some(why) => Err(RequestError::TooLarge(why)),
            None => Ok(()),
        }
    }

    fn registration(&self, path: &ServicePath) -> Option<&Registration> {
        self.targets.get(&path.cluster())?.get(path)
    }

    /// Live instances of a target cluster, sorted by bucket: those with a probed session,
    /// and those the routing table reaches.
    fn live_instances(
        &mut self,
        cluster: &ClusterPath,
    ) -> Result<Vec<(u32, Picked)>, RequestError> {
        let instances: Vec<(ServicePath, u32)> = self
            .targets
            .get(cluster)
            .ok_or_else(|| RequestError::NotATarget(cluster.clone()))?
            .iter()
            .map(|(path, reg)| (path.clone(), reg.bucket))
            .collect();
        let mut live: Vec<(u32, Picked)> = instances
            .into_iter()
            .filter_map(|(path, bucket)| Some((bucket, self.reach(&path)?)))
            .collect();
        live.sort_by(|a, b| (a.0, &a.1.to).cmp(&(b.0, &b.1.to)));
        Ok(live)
    }

    /// How to reach `to`: over its own session, or through the routing table when its
    /// cluster is a routed target.
    fn reach(&mut self, to: &ServicePath) -> Option<Picked> {
        let direct = to.peer_id();
        if self.state.ready.contains_key(&direct) {
            return Some(Picked {
                next: direct,
                to: to.clone(),
                routed: false,
            });
        }
        // A cluster targeted directly is reached over its own links only.
        if !self.routed_targets.contains(&to.cluster()) {
            return None;
        }
        let next = self.next_hop(to)?;
        Some(Picked {
            next,
            to: to.clone(),
            routed: true,
        })
    }

    /// The ready adjacent peer to send a message for `to` to: `to` itself when linked,
    /// else the routing table's next hop.
    pub(crate) fn next_hop(&mut self, to: &ServicePath) -> Option<PeerId> {
        let direct = to.peer_id();
        if self.state.ready.contains_key(&direct) {
            return Some(direct);
        }
        let next = self.router.next_hop(to)?.peer_id();
        self.state.ready.contains_key(&next).then_some(next)
    }

    /// A notification or one copy of a broadcast, directly or routed.
    fn send_one_way(
        &mut self,
        picked: &Picked,
        body: Multipart,
        broadcast: bool,
    ) -> Result<(), dms_core::proto::ProtoError> {
        if !picked.routed {
            return self.proto.notify(&picked.next, body, broadcast);
        }
        self.metrics.routed.increment(1);
        let route = Route {
            origin: self.local.clone(),
            destination: picked.to.clone(),
        };
        let flag = if broadcast { flags::BROADCAST } else { 0 };
        self.proto
            .forward(
                now(),
                &picked.next,
                Routed {
                    flags: flag,
                    route,
                    hop_limit: self.hop_limit,
                    body,
                    trace: None,
                },
                Duration::ZERO,
            )
            .map(|_| ())
    }

    fn pick(&mut self, to: &Destination) -> Result<Picked, RequestError> {
        match to {
            Destination::Instance(path) => {
                if let Some(picked) = self.reach(path) {
                    Ok(picked)
                } else if let Some(detail) = self.state.denied.get(path) {
                    Err(RequestError::connect_denied(path, detail))
                } else {
                    Err(RequestError::NoInstance(path.to_string()))
                }
            }
            Destination::Cluster(cluster, key) => {
                let live = self.live_instances(cluster)?;
                let candidates: Vec<Candidate> = live
                    .iter()
                    .map(|(bucket, picked)| Candidate {
                        bucket: *bucket,
                        pending: self.proto.pending_for(&picked.next),
                    })
                    .collect();
                match self
                    .policy
                    .pick(*key, &candidates)
                    .and_then(|i| live.get(i))
                {
                    Some((_, picked)) => Ok(picked.clone()),
                    None => {
                        let denied = self
                            .state
                            .denied
                            .iter()
                            .find(|(path, _)| cluster.contains(path));
                        match denied {
                            Some((path, detail)) => Err(RequestError::connect_denied(path, detail)),
                            None => Err(RequestError::NoInstance(cluster.to_string())),
                        }
                    }
                }
            }
        }
    }

    fn on_watch(&mut self, item: WatchItem, connected_tx: &mpsc::Sender<Connected>) {
        match item {
            WatchItem::Snapshot(cluster, instances) => {
                self.state.synced.insert(cluster.clone());
                let fresh: HashMap<_, _> = instances.into_iter().collect();
                let gone: Vec<ServicePath> = self
                    .targets
                    .get(&cluster)
                    .map(|old| {
                        old.keys()
                            .filter(|p| !fresh.contains_key(*p))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                for path in gone {
                    self.on_watch(WatchItem::Delete(path), connected_tx);
                }
                for (path, registration) in fresh {
                    self.on_watch(WatchItem::Put(path, registration), connected_tx);
                }
            }
            WatchItem::Put(path, registration) => {
                let cluster = path.cluster();
                let Some(instances) = self.targets.get_mut(&cluster) else {
                    return;
                };
                let fresh = instances.insert(path.clone(), registration).is_none();
                self.state.deregistered.remove(&path);
                if fresh {
                    info!(node = %self.local, instance = %path, "discovered");
                    self.state.denied.remove(&path);
                    self.state.retry_at.remove(&path);
                    self.state.backoff.remove(&path);
                }
                self.maybe_connect(&path, connected_tx);
            }
            WatchItem::Delete(path) => {
                let peer = path.peer_id();
                if self.state.ready.contains_key(&peer) {
                    if self.state.deregistered.insert(path.clone()) {
                        info!(node = %self.local, instance = %path, "deregistered but live: kept until its session ends");
                    }
                    return;
                }
                self.forget(&path);
                if self.proto.session_state(&peer).is_some() {
                    self.close_link(peer);
                }
            }
        }
    }

    /// Drops an instance from its cluster's view.
    fn forget(&mut self, path: &ServicePath) {
        if let Some(instances) = self.targets.get_mut(&path.cluster()) {
            if instances.remove(path).is_some() {
                info!(node = %self.local, instance = %path, "deregistered");
            }
        }
        self.state.deregistered.remove(path);
        self.state.retry_at.remove(path);
        self.state.backoff.remove(path);
        self.state.denied.remove(path);
    }

    fn connect_cluster(&mut self, cluster: &ClusterPath, connected_tx: &mpsc::Sender<Connected>) {
        let paths: Vec<ServicePath> = self
            .targets
            .get(cluster)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for path in paths {
            self.maybe_connect(&path, connected_tx);
        }
    }

    /// Dials a registered instance unless a session exists, a dial is under way, it
    /// refused us, or it will dial us (it targets our cluster and its path sorts first:
    /// two instances that target each other share one link).
    fn maybe_connect(&mut self, path: &ServicePath, connected_tx: &mpsc::Sender<Connected>) {
        if *path == self.local
            || self.routed_targets.contains(&path.cluster())
            || self.state.connecting.contains(path)
            || self
                .state
                .closing
                .contains(path.peer_id().as_bytes().as_ref())
            || self.state.denied.contains_key(path)
            || self.state.retry_at.contains_key(path)
            || self.proto.session_state(&path.peer_id()).is_some()
        {
            return;
        }
        let Some(registration) = self.registration(path) else {
            return;
        };
        if registration.targets(&self.local.cluster()) && *path < self.local {
            return;
        }
        let Some((endpoint, dialer)) = self.transports.dialable(&registration.endpoints) else {
            warn!(instance = %path, endpoints = ?registration.endpoints, "no endpoint in its registration that this node can dial");
            return;
        };
        self.state.connecting.insert(path.clone());
        let path = path.clone();
        let report = connected_tx.clone();
        tokio::spawn(async move {
            let result = dialer.connect(&endpoint).await.map_err(|e| e.to_string());
            let _ = report.send(Connected { path, result }).await;
        });
    }

    fn on_connected(&mut self, done: Connected) {
        self.state.connecting.remove(&done.path);
        match done.result {
            Ok(peer) if peer == done.path.peer_id() => {
                debug!(node = %self.local, instance = %done.path, "linked; probing");
            }
            Ok(other) => {
                warn!(instance = %done.path, answered = %other, "endpoint answered with another identity");
                self.close_link(other);
                self.schedule_retry(done.path);
            }
            Err(error) => {
                debug!(node = %self.local, instance = %done.path, %error, "connect failed");
                self.schedule_retry(done.path);
            }
        }
    }

    fn schedule_retry(&mut self, path: ServicePath) {
        let (initial, cap) = self.reconnect;
        let backoff = self
            .state
            .backoff
            .entry(path.clone())
            .or_insert_with(|| Backoff::new(initial, cap));
        let delay = backoff.next_delay().max(initial / 2);
        self.state.retry_at.insert(path, now() + delay);
        self.metrics.redials.increment(1);
    }

    fn on_timer(&mut self, connected_tx: &mpsc::Sender<Connected>) {
        let now = now();
        self.proto.handle_timeout(now);
        if self.state.next_export.is_none_or(|at| now >= at) {
            self.state.next_export = Some(now + EXPORT_INTERVAL);
            self.metrics
                .export(&self.transports.stats(), &self.proto.stats());
        }
        let due: Vec<ServicePath> = self
            .state
            .retry_at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(path, _)| path.clone())
            .collect();
        for path in due {
            self.state.retry_at.remove(&path);
            self.maybe_connect(&path, connected_tx);
        }
        self.retry_awaiting();
    }

    async fn shutdown(&mut self) {
        info!(node = %self.local, "shutting down");
        let peers: Vec<PeerId> = self.state.ready.keys().cloned().collect();
        for peer in &peers {
            self.proto.disconnect(
                peer,
                Reason {
                    code: codes::SHUTDOWN,
                    detail: format!("{} is shutting down", self.local),
                },
            );
        }
        self.flush();
        // Every link flushes at once: shutdown takes at most SHUTDOWN_FLUSH, whatever the
        // number of peers.
        let mut flushing = tokio::task::JoinSet::new();
        for (peer, dialer) in self.transports.peers() {
            flushing.spawn(async move { dialer.disconnect(&peer).await });
        }
        // `join_next`, not `join_all`: a task cancelled by a runtime shutting down (a
        // node dropped as `main` returns) is an error here, not a panic.
        let all_flushed = async { while flushing.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH, all_flushed).await;
        for (_, waiter) in self.state.waiting.drain() {
            let _ = waiter.done.send(Err(RequestError::Closed));
        }
        for request in self.state.awaiting.take_all() {
            let _ = request.done.send(Err(RequestError::Closed));
        }
        self.deregister(true).await;
        self.transports.close();
    }
}

/// A request or notification the protocol refused to queue (certainly not sent).
fn not_sent(error: dms_core::proto::ProtoError, path: &ServicePath) -> RequestError {
    match error {
        dms_core::proto::ProtoError::TooManyPending { .. } => RequestError::TooManyPending,
        dms_core::proto::ProtoError::NotReady(_) => RequestError::NoInstance(path.to_string()),
        other => RequestError::NoInstance(format!("{path}: {other}")),
    }
}

fn closed_sender() -> mpsc::Sender<Command> {
    mpsc::channel(1).0
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Follows one target cluster in discovery: a snapshot, then its changes; a new snapshot
/// whenever the history cannot be replayed (compaction) or the watch breaks. While
/// discovery is unreachable the node keeps its last view.
///
/// Ends as soon as the node is gone (`out` closed), whatever it is waiting for: a stopped
/// node leaves no task and no discovery watch behind (the L9 soak found one per target
/// cluster, kept until that cluster next changed).
pub(crate) async fn watch_cluster<D: Discovery>(
    discovery: D,
    cluster: ClusterPath,
    out: mpsc::Sender<WatchItem>,
) {
    let closed = out.clone();
    tokio::select! {
        () = follow_cluster(discovery, cluster, out) => {}
        () = closed.closed() => {}
    }
}

async fn follow_cluster<D: Discovery>(
    discovery: D,
    cluster: ClusterPath,
    out: mpsc::Sender<WatchItem>,
) {
    let Ok(key) = cluster_key(&cluster) else {
        return;
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let snapshot = match discovery.get(&key).await {
            Ok(node) => node,
            Err(error) => {
                warn!(%cluster, %error, "discovery unreachable; keeping the last view");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let instances = snapshot
            .children
            .iter()
            .filter_map(|entry| instance_of(&cluster, entry.key.as_str(), &entry.value))
            .collect();
        if out
            .send(WatchItem::Snapshot(cluster.clone(), instances))
            .await
            .is_err()
        {
            return;
        }
        let mut watch = match discovery.watch(&key, Some(snapshot.revision)).await {
            Ok(watch) => watch,
            Err(error) => {
                warn!(%cluster, %error, "watch failed; resyncing");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        loop {
            let item = match dms_discovery::next_event(&mut watch).await {
                Some(Ok(WatchEvent::Put(entry))) => {
                    match instance_of(&cluster, entry.key.as_str(), &entry.value) {
                        Some((path, reg)) => WatchItem::Put(path, reg),
                        None => continue,
                    }
                }
                Some(Ok(WatchEvent::Delete { key, .. })) => {
                    match key.as_str().parse::<ServicePath>() {
                        Ok(path) if path.cluster() == cluster => WatchItem::Delete(path),
                        _ => continue,
                    }
                }
                Some(Err(DiscoveryError::Compacted { .. })) | None => break,
                Some(Err(error)) => {
                    warn!(%cluster, %error, "watch error; resyncing");
                    break;
                }
            };
            if out.send(item).await.is_err() {
                return;
            }
        }
    }
}

/// An instance registration from a discovery entry; `None` (and a log line) for anything
/// that is not a well-formed instance of `cluster`.
fn instance_of(
    cluster: &ClusterPath,
    key: &str,
    value: &[u8],
) -> Option<(ServicePath, Registration)> {
    let path: ServicePath = key.parse().ok()?;
    if path.cluster() != *cluster {
        return None;
    }
    match Registration::decode(value) {
        Some(registration) => Some((path, registration)),
        None => {
            warn!(%path, "unreadable registration ignored");
            None
        }
    }
}
