//! The one task that owns a node's protocol state: it drains the protocol's outputs into
//! the middleware, feeds it inbound messages, discovery changes, application commands and
//! timers, and completes waiting requests.
//!
//! The kernel's components, one file each around this event loop: the [`targets`] (what
//! discovery says of the clusters this node sends to), the [`connections`] manager
//! (Prober and Sentinel), the [`dispatch`]er, the [`outbox`], the session [`gates`] (replies
//! written by handlers themselves), [`direct`] requests (written by callers themselves),
//! and [`forwarding`] (the
//! Router's half; the routing table itself is [`crate::routing`]). Registration (Self)
//! is [`crate::registrar`]; the ACL is checked in the protocol.

mod connections;
pub(crate) mod direct;
mod dispatch;
mod forwarding;
pub(crate) mod gates;
mod outbox;
mod serving;
mod targets;

pub(crate) use targets::{WatchItem, watch_cluster};

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
use foldhash::fast::RandomState;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{Span, debug, debug_span, info, warn};

use crate::awaiting::{Awaiting, AwaitingRequest};
use crate::error::RouteFailure;
use crate::incoming::{IncomingRequest, Kind, Responder};
use crate::registrar::Release;
use crate::registration::{Registration, cluster_key};
use crate::request_queue::QueueSender;
use crate::routing::{RouteItem, Router};
use crate::telemetry::{EXPORT_INTERVAL, NodeMetrics};
use crate::transport::{Medium, Transports};
use crate::{InstanceState, InstanceStatus, NodeEvent, Reply, RequestError};
use connections::Connected;
use dispatch::Waiter;
use forwarding::Upstream;
use outbox::PARKED_RETRY;

/// Inbound items taken from the middleware per wake-up, at most.
const INBOX_BATCH: usize = 64;
/// How late a timer tick may come before the driver takes it as a pause (SIGSTOP, a VM
/// pause, a starved runtime) and reads what came meanwhile before judging silences.
const LATE_TICK: Duration = Duration::from_millis(20);
/// Batches of input taken after a late tick, at most.
const LATE_TICK_BATCHES: usize = 16;
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
    Suspend {
        done: oneshot::Sender<()>,
    },
    #[cfg(feature = "fault-injection")]
    Resume {
        done: oneshot::Sender<()>,
    },
    #[cfg(feature = "fault-injection")]
    Kill {
        done: oneshot::Sender<()>,
    },
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
    /// What callers' tasks send requests on themselves (see [`direct`]).
    pub(crate) direct: Arc<direct::DirectRequests>,
}

/// The driver's bookkeeping besides the protocol.
#[derive(Default)]
pub(crate) struct DriverState {
    // The maps read per message hash with foldhash (seeded per process), not SipHash.
    ready: HashMap<PeerId, ServicePath, RandomState>,
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
    waiting: HashMap<RequestId, Waiter, RandomState>,
    /// Requests waiting for a first ready instance of their destination.
    awaiting: Awaiting,
    /// Target clusters read from discovery at least once.
    synced: HashSet<ClusterPath>,
    /// Messages waiting for room, per peer: one full link never holds up the others.
    parked: HashMap<PeerId, VecDeque<Multipart>, RandomState>,
    /// Peers whose links are not read: replies to their requests are parked (they send
    /// requests faster than they read the answers). Read again once the backlog is gone.
    throttled: HashSet<PeerId>,
    /// When the transports' and the protocol's counters are next copied to the recorder.
    next_export: Option<Instant>,
    /// Requests this node forwarded, by the id of the forwarded copy.
    pub(crate) forwarded: HashMap<RequestId, Upstream, RandomState>,
    /// The gate of every ready session (see [`gates`]).
    gates: HashMap<PeerId, Arc<gates::SessionGate>, RandomState>,
    /// Live instances per target cluster (see `live_instances`).
    live: HashMap<ClusterPath, Arc<[(u32, dispatch::Picked)]>, RandomState>,
    /// The dispatch policy's candidates, a buffer kept between requests.
    candidates: Vec<Candidate>,
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
        // One timer for the whole loop, moved only when the next deadline moves (most
        // turns leave it where it is: a new request's deadline is rarely the earliest), so
        // a turn costs no timer-wheel insertion and removal.
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            self.flush();
            self.router.publish();
            let deadline = self.next_deadline();
            if deadline != armed {
                if let Some(at) = deadline {
                    timer.as_mut().reset(tokio::time::Instant::from_std(at));
                }
                armed = deadline;
            }
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { done }) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    #[cfg(feature = "fault-injection")]
                    Some(Command::Suspend { done }) => {
                        if self.suspended(done).await {
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
                    Ok(medium) => self.on_batch(medium, &mut inbox),
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
                    self.reachability_changed();
                    if self.router.on_item(item) {
                        let _ = self.events.send(NodeEvent::RoutesChanged);
                    }
                    self.retry_awaiting();
                }
                Some(done) = connected.recv() => self.on_connected(done),
                Some(peer) = closed.recv() => self.on_closed(peer, &connected_tx),
                () = &mut timer, if armed.is_some() => {
                    // Fired: armed again at the next turn, even for the same instant.
                    let due = armed.take();
                    if due.is_some_and(|due| now().saturating_duration_since(due) > LATE_TICK) {
                        self.take_what_came(&mut inbox, &mut spare).await;
                    }
                    self.on_timer(&connected_tx);
                }
            }
        }
    }

    /// After a late tick: what peers sent while this process was not running may wait
    /// unread in the sockets (a DISCONNECT among it, or the messages that prove a peer
    /// alive). Lets the link tasks run once (tokio runs a yielding task again after its
    /// I/O driver was polled), then takes the input that is ready, so that the timers
    /// judge silences on what was sent, not on what was read: a resumed node neither
    /// condemns a live peer nor tears down the fresh link of a peer that reconnected
    /// meanwhile with the stale verdict of its old session.
    async fn take_what_came(&mut self, inbox: &mut Vec<Incoming>, spare: &mut [Vec<Incoming>; 3]) {
        tokio::task::yield_now().await;
        for _ in 0..LATE_TICK_BATCHES {
            tokio::select! {
                biased;
                taken = self.transports.recv_many(inbox, spare, INBOX_BATCH) => match taken {
                    Ok(medium) => self.on_batch(medium, inbox),
                    Err(_) => return,
                },
                () = std::future::ready(()) => return,
            }
        }
    }

    /// Handles a batch of input `medium` gave.
    fn on_batch(&mut self, medium: Medium, inbox: &mut Vec<Incoming>) {
        for item in inbox.drain(..) {
            if matches!(item, Incoming::LinkUp { .. } | Incoming::LinkDown { .. }) {
                // What the protocol answered so far goes onto the links as they were
                // when it answered: a PONG to the last PING of a link that is going down
                // must not be written to the peer's next link, the one coming up next.
                self.flush();
            }
            if self.transports.observe(medium, &item) {
                self.on_incoming(item);
            }
        }
    }

    /// A suspended node processes nothing until killed (returns true) or resumed
    /// (returns false: it takes up what came meanwhile, as a process after SIGCONT).
    #[cfg(feature = "fault-injection")]
    async fn suspended(&mut self, done: oneshot::Sender<()>) -> bool {
        info!(node = %self.local, "suspended");
        // Frozen: the requests written through the gates wait until their deadlines.
        self.close_gates(None);
        let _ = done.send(());
        loop {
            match self.commands.recv().await {
                Some(Command::Resume { done }) => {
                    info!(node = %self.local, "resumed");
                    // The sessions still ready take requests from their callers' tasks
                    // again (those that ended meanwhile are ended by what came).
                    let ready: Vec<_> = self
                        .state
                        .ready
                        .iter()
                        .map(|(peer, path)| (peer.clone(), path.clone()))
                        .collect();
                    for (peer, path) in ready {
                        self.open_gate(&peer, &path);
                    }
                    let _ = done.send(());
                    return false;
                }
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
        self.close_gates(Some(RequestError::Closed));
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
                self.open_gate(&peer, &path);
                self.state.ready.insert(peer, path.clone());
                self.reachability_changed();
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
            } => self.on_request(peer, from, id, body, trace),
            Event::Notification {
                peer,
                from,
                broadcast,
                body,
            } => self.on_notification(peer, from, broadcast, body),
            Event::Reply { id, result } => self.on_reply(id, result),
            Event::ExternalReply { peer, id, result } => self.on_external_reply(&peer, id, result),
            _ => {}
        }
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
            // Handed to the links before the caller hears of it: a reply it writes itself
            // next (see `gates`) cannot overtake it.
            Command::Notify { to, body, done } => {
                let result = self.notify(&to, body);
                self.flush();
                let _ = done.send(result);
            }
            Command::Broadcast {
                cluster,
                body,
                done,
            } => {
                let result = self.broadcast(&cluster, body);
                self.flush();
                let _ = done.send(result);
            }
            Command::Reply { peer, id, result } => self.answer(&peer, id, result),
            Command::Instances { cluster, done } => {
                let _ = done.send(self.instances(&cluster));
            }
            Command::SetLinkCost { peer, cost } => {
                self.router.set_cost(&peer, cost);
                self.reachability_changed();
            }
            Command::Shutdown { .. } => {}
            #[cfg(feature = "fault-injection")]
            Command::Suspend { .. } | Command::Kill { .. } => {}
            // Not suspended: nothing to resume.
            #[cfg(feature = "fault-injection")]
            Command::Resume { done } => {
                let _ = done.send(());
            }
        }
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
        self.close_gates(Some(RequestError::Closed));
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

fn closed_sender() -> mpsc::Sender<Command> {
    mpsc::channel(1).0
}
