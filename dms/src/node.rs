//! [`Node`]: a running service instance, and [`NodeBuilder`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dms_core::acl::{AccessControl, AclPolicy, MAX_POLICY_LEN, Operations, Pattern, Rule};
use dms_core::dispatch::{DispatchPolicy, JumpHash};
use dms_core::path::{ClusterPath, ServicePath};
use dms_core::proto::{PingLimit, ProtoConfig, ProtoStats, Protocol, StatsHandle};
use dms_core::route::{EqualCostMultipath, RoutePolicy};
use dms_core::trace::TraceContext;
use dms_core::{Endpoint, Multipart, Role};
use dms_discovery::Discovery;
use dms_discovery::memory::MemoryDiscovery;
#[cfg(feature = "tcp")]
use dms_transport_tcp::TcpConfigBuilder;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{Instrument, debug_span};

use crate::driver::direct::DirectRequests;
use crate::driver::{Command, Destination, Driver, DriverState, watch_cluster};
use crate::registrar::{Registrant, keep_registered};
use crate::request_queue::{QueueReceiver, request_queue};
use crate::routing::{LinkRecord, Router, follow_table, table_key};
use crate::telemetry::NodeMetrics;
use crate::transport::{TransportSettings, Transports};
use crate::{AclFileError, IncomingRequest, RequestError, StartError};

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The instance that answered.
    pub from: ServicePath,
    /// Its payload frames.
    pub body: Multipart,
}

/// Options of one request: [`Node::request_with`], [`Node::request_instance_with`].
///
/// ```
/// use std::time::Duration;
/// use dms::{RequestOptions, TraceContext};
///
/// let trace: TraceContext = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?;
/// let options = RequestOptions::new()
///     .timeout(Duration::from_millis(300))
///     .trace(Some(trace));
/// assert_eq!(options.trace, Some(trace));
/// # Ok::<(), dms_core::trace::InvalidTraceparent>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestOptions {
    /// How long to wait for the reply; `None`: the node's default
    /// ([`NodeBuilder::request_timeout`]).
    pub timeout: Option<Duration>,
    /// The W3C trace context the REQ carries (docs/PROTOCOL.md §3.4), e.g. that of the
    /// request being handled ([`IncomingRequest::trace_context`]) or of the caller's own
    /// tracing system. Without the feature `otel` it goes on the wire as it is (`None`:
    /// no trace context, nothing more on the wire). With `otel` the caller's current span
    /// comes first: when it has an OpenTelemetry context, the request's `dms.request`
    /// span is its child and this is not used; otherwise this becomes the OpenTelemetry
    /// parent of `dms.request`. Either way the context of `dms.request` goes on the wire
    /// (this one, as it is, when no OpenTelemetry layer records the spans).
    pub trace: Option<TraceContext>,
}

impl RequestOptions {
    /// The defaults: the node's timeout, no explicit trace context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits at most `timeout` for the reply.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Carries the trace context `trace` (`None`: none given).
    pub fn trace(mut self, trace: Option<TraceContext>) -> Self {
        self.trace = trace;
        self
    }
}

/// A peer coming or going, or the routes changing, as the node sees it: the items of
/// [`Node::events`] (the [APP interface page](crate::app#peer-and-route-changes) has an
/// example).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A session completed its READY exchange: messages may go to the peer from now on.
    /// Comes for the instances of our targets we dialled ([`Role::Connector`]) and for
    /// the peers that dialled us ([`Role::Acceptor`]).
    PeerUp {
        /// The peer.
        path: ServicePath,
        /// Whether we dialled it ([`Role::Connector`]) or it dialled us
        /// ([`Role::Acceptor`]); the type is re-exported as [`crate::app::Role`].
        role: Role,
    },
    /// A session ended, or a link failed before its session was ready (a READY probe
    /// that timed out, a READY refused by an ACL): so it may come without a `PeerUp`
    /// before it. An instance of a target is redialled (with backoff) while it stays
    /// registered.
    PeerDown {
        /// The peer.
        path: ServicePath,
        /// Why, for people: heartbeat timeout, probe timeout, link down, DISCONNECT (with
        /// its code and detail), ACL refusal, protocol error.
        reason: String,
    },
    /// The routing table changed (a link record of another instance was written or went
    /// away): instances reached through brokers may have come or gone.
    RoutesChanged,
}

/// One instance of a target cluster, as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    /// Its path.
    pub path: ServicePath,
    /// Its dispatch bucket.
    pub bucket: u32,
    /// Its endpoints.
    pub endpoints: Vec<String>,
    /// Where our session with it stands.
    pub state: InstanceState,
}

impl InstanceStatus {
    /// Whether requests can go to it: it has a probed, live session with us, or the
    /// routing table reaches it through brokers.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, InstanceState::Ready | InstanceState::Routed)
    }
}

/// Our session with a registered instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InstanceState {
    /// Probed and live.
    Ready,
    /// Being dialled or probed.
    Connecting,
    /// The last dial or probe failed, or the session was lost; retried with backoff.
    Unreachable,
    /// It refused us (ACL).
    Denied,
    /// No session with it, but the routing table reaches it (through brokers): messages
    /// for it are forwarded.
    Routed,
}

/// A key that picks the same instance of a cluster for the same value in every process
/// (a player id, a guild id...). Text and bytes are hashed with FNV-1a 64
/// ([`dms_core::path::hash64`]); integers are used as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DispatchKey(pub u64);

impl From<u64> for DispatchKey {
    fn from(key: u64) -> Self {
        Self(key)
    }
}

impl From<&str> for DispatchKey {
    fn from(key: &str) -> Self {
        Self(dms_core::path::hash64(key.as_bytes()))
    }
}

impl From<&[u8]> for DispatchKey {
    fn from(key: &[u8]) -> Self {
        Self(dms_core::path::hash64(key))
    }
}

/// Configures and starts a [`Node`].
pub struct NodeBuilder<D: Discovery = MemoryDiscovery> {
    path: ServicePath,
    discovery: D,
    settings: Settings,
}

impl<D: Discovery> std::fmt::Debug for NodeBuilder<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.settings;
        f.debug_struct("NodeBuilder")
            .field("path", &self.path)
            .field("binds", &s.binds)
            .field("advertise", &s.advertise)
            .field("targets", &s.targets)
            .field("acl", &s.acl)
            .field("acl_file", &s.acl_file)
            .field("access_control", &s.access_control.is_some())
            .field("ping_interval", &s.ping_interval)
            .field("missed_pongs", &s.missed_pongs)
            .finish_non_exhaustive()
    }
}

/// Everything a builder sets besides the path and the discovery.
struct Settings {
    binds: Vec<Endpoint>,
    /// Published instead of the bound endpoints when not empty.
    advertise: Vec<Endpoint>,
    targets: Vec<ClusterPath>,
    /// Rules given in code (`allow`, `acl_policy`); `None` and no file: no policy.
    acl: Option<Vec<Rule>>,
    /// A policy file read at start (its rules come after those given in code).
    acl_file: Option<PathBuf>,
    /// The application's decision hook, asked besides the policy (both must allow).
    access_control: Option<Arc<dyn AccessControl>>,
    ping_limit: Option<PingLimit>,
    ping_interval: Duration,
    missed_pongs: u32,
    request_timeout: Duration,
    lease_ttl: Duration,
    incoming_queue: usize,
    incoming_per_peer: usize,
    reconnect: (Duration, Duration),
    policy: Arc<dyn DispatchPolicy>,
    transports: TransportSettings,
    routed_targets: Vec<ClusterPath>,
    broker: bool,
    link_cost: u32,
    route_policy: Option<Box<dyn RoutePolicy>>,
    hop_limit: u8,
}

impl NodeBuilder<MemoryDiscovery> {
    fn new(path: ServicePath) -> Self {
        Self {
            path,
            discovery: MemoryDiscovery::new(),
            settings: Settings {
                binds: Vec::new(),
                advertise: Vec::new(),
                targets: Vec::new(),
                acl: None,
                acl_file: None,
                access_control: None,
                ping_limit: None,
                ping_interval: Duration::from_secs(1),
                missed_pongs: 3,
                request_timeout: Duration::from_secs(5),
                lease_ttl: Duration::from_secs(10),
                incoming_queue: 1024,
                incoming_per_peer: 256,
                reconnect: (Duration::from_millis(100), Duration::from_secs(5)),
                policy: Arc::new(JumpHash),
                transports: TransportSettings::default(),
                routed_targets: Vec::new(),
                broker: false,
                link_cost: 1,
                route_policy: None,
                hop_limit: dms_core::proto::control::DEFAULT_HOP_LIMIT,
            },
        }
    }
}

impl<D: Discovery> NodeBuilder<D> {
    /// The discovery the node registers in and watches (default: a fresh in-memory one,
    /// which only this node sees; share one `MemoryDiscovery` between the nodes of a
    /// process, or use etcd across processes).
    pub fn discovery<D2: Discovery>(self, discovery: D2) -> NodeBuilder<D2> {
        NodeBuilder {
            path: self.path,
            discovery,
            settings: self.settings,
        }
    }

    /// An endpoint to accept links on; call it once per endpoint (several schemes may be
    /// bound at once: `tcp://` for libzmq peers, `quic://` across networks). Every bound
    /// endpoint is published in the registration. Default: `tcp://127.0.0.1:0` (or
    /// `quic://127.0.0.1:0` in a build without TCP).
    pub fn bind(mut self, endpoint: Endpoint) -> Self {
        self.settings.binds.push(endpoint);
        self
    }

    /// An endpoint to publish in the registration **instead of** the bound ones, for a
    /// node reached through a NAT, a load balancer or a proxy (peers dial what is
    /// published); call it once per endpoint. The node still binds what
    /// [`bind`](Self::bind) gives, and [`Node::endpoints`] still returns the bound
    /// endpoints. Default: none, the bound endpoints are published.
    ///
    /// ```
    /// # let path: dms::ServicePath = "/demo/cn/android/w1/g1/Battle/battle-1".parse().unwrap();
    /// let builder = dms::Node::builder(path)
    ///     .bind("tcp://0.0.0.0:7000".parse().unwrap())
    ///     .advertise("tcp://203.0.113.7:7000".parse().unwrap());
    /// ```
    pub fn advertise(mut self, endpoint: Endpoint) -> Self {
        self.settings.advertise.push(endpoint);
        self
    }

    /// Schemes this node dials, most preferred first (default
    /// [`DEFAULT_PREFERENCE`](crate::DEFAULT_PREFERENCE): `shm`, `quic`, `tcp+tls`,
    /// `tcp`). For each peer the first scheme it published and this node can dial is used;
    /// schemes not listed are never dialled.
    ///
    /// ```
    /// # let path: dms::ServicePath = "/demo/cn/android/w1/g1/Lobby/lobby-1".parse().unwrap();
    /// let builder = dms::Node::builder(path).prefer(["tcp"]); // TCP only, even to QUIC peers
    /// ```
    pub fn prefer<S: Into<String>>(mut self, schemes: impl IntoIterator<Item = S>) -> Self {
        self.settings.transports.prefer = schemes.into_iter().map(Into::into).collect();
        self
    }

    /// Settings of the TCP transport (queues, peer limit, wire limits). The node sets the
    /// identity (its service path) and turns the transport's own redial off: the kernel
    /// redials lost instances itself (see [`reconnect`](Self::reconnect)).
    ///
    /// ```
    /// use dms_transport_tcp::TcpConfig;
    /// # let path: dms::ServicePath = "/demo/cn/android/w1/g1/Lobby/lobby-1".parse().unwrap();
    /// let builder = dms::Node::builder(path).tcp(TcpConfig::builder().max_peers(256));
    /// ```
    #[cfg(feature = "tcp")]
    pub fn tcp(mut self, config: TcpConfigBuilder) -> Self {
        self.settings.transports.tcp = config;
        self
    }

    /// Settings of the shared-memory transport (ring sizes, the reader's spin, which
    /// uids may connect, link bounds). Shared memory needs no credentials: a build with
    /// the feature `shm` can always bind `shm://NAME` and dial a peer on the same host
    /// that published one (`shm://NAME?host=KEY`, preferred to sockets by default; a
    /// shared-memory endpoint of another host is never dialled). The node sets the
    /// identity.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dms::shm::ShmConfig;
    /// # let path: dms::ServicePath = "/demo/cn/android/w1/g1/Lobby/lobby-1".parse().unwrap();
    /// let builder = dms::Node::builder(path)
    ///     .shm(ShmConfig::builder().ring_bytes(4 << 20).spin(Duration::ZERO))
    ///     .bind("shm://lobby-1".parse().unwrap());
    /// ```
    #[cfg(feature = "shm")]
    pub fn shm(mut self, config: dms_transport_shm::ShmConfigBuilder) -> Self {
        self.settings.transports.shm = config;
        self
    }

    /// Turns QUIC on, with its TLS identity and bounds: the node can then bind
    /// `quic://` endpoints and dial peers that publish one. The certificate must be for
    /// this node's service path (checked at start); the node sets the announced identity
    /// and derives QUIC's idle timeout and keep-alive from its heartbeat (see
    /// [`QuicConfigBuilder::liveness`](dms_transport_quic::QuicConfigBuilder::liveness)).
    /// With the feature `tcp-tls` the same TLS identity also turns `tcp+tls://` on (the
    /// [`tcp`](Self::tcp) settings, mutual TLS 1.3 under ZMTP).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use dms::quic::QuicConfig;
    /// use dms::tls::TlsIdentity;
    /// let path: dms::ServicePath = "/demo/cn/android/w1/g1/Battle/battle-1".parse()?;
    /// let tls = TlsIdentity::from_pem_files(
    ///     "battle-1.pem".as_ref(), "battle-1.key".as_ref(), "ca.pem".as_ref())?;
    /// let node = dms::Node::builder(path)
    ///     .quic(QuicConfig::builder(tls))
    ///     .bind("quic://0.0.0.0:7000".parse()?)
    ///     .start()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "quic")]
    pub fn quic(mut self, config: dms_transport_quic::QuicConfigBuilder) -> Self {
        self.settings.transports.quic = Some(config);
        self
    }

    /// **Development only, never in production**: turns QUIC on with a certificate for
    /// this node's path, issued at start by a development CA kept in `dir` (created there
    /// if missing; see [`dms_tls::dev`]). Every node given the same `dir` trusts the
    /// others. [`quic`](Self::quic) takes precedence.
    #[cfg(feature = "quic")]
    pub fn quic_dev_certificates(mut self, dir: impl Into<PathBuf>) -> Self {
        self.settings.transports.quic_dev = Some(dir.into());
        self
    }

    /// A cluster this node sends to: watched, dialled and probed.
    pub fn target(mut self, cluster: ClusterPath) -> Self {
        self.settings.targets.push(cluster);
        self
    }

    /// A cluster this node sends to only through brokers: watched (its instances and
    /// their dispatch buckets are known), never dialled; requests, notifications and
    /// broadcasts to it go hop by hop along the routing table (see [`crate::routing`]).
    /// The node must reach a broker, usually by [`target`](Self::target)ing the broker
    /// cluster.
    pub fn routed_target(mut self, cluster: ClusterPath) -> Self {
        self.settings.routed_targets.push(cluster);
        self
    }

    /// Makes this node a broker: it forwards routed messages for others (READY announces
    /// it, its link record says so, and the routing table uses it as an intermediate
    /// hop). A node that is not a broker is only ever the first or last hop of a route.
    /// The ACL's `forward` operation says whose messages it forwards.
    pub fn broker(mut self) -> Self {
        self.settings.broker = true;
        self
    }

    /// What this node's links cost in the routing table (default 1; at least 1). A
    /// link is used at the larger of the costs its two ends publish; see
    /// [`Node::set_link_cost`] for one link.
    pub fn link_cost(mut self, cost: u32) -> Self {
        self.settings.link_cost = cost.max(1);
        self
    }

    /// The hop limit of the routed messages this node sends (default 16): the most links
    /// one may cross; a hop that would exceed it answers
    /// [`RouteFailure::HopLimitExceeded`](crate::RouteFailure::HopLimitExceeded).
    pub fn hop_limit(mut self, hops: u8) -> Self {
        self.settings.hop_limit = hops.max(1);
        self
    }

    /// How this node picks the next hop of a routed message (default:
    /// [`EqualCostMultipath`](dms_core::route::EqualCostMultipath): shortest paths by link
    /// cost, destinations spread over the brokers that start one;
    /// [`ShortestPath`](dms_core::route::ShortestPath) takes a single path).
    pub fn route_policy(mut self, policy: impl RoutePolicy) -> Self {
        self.settings.route_policy = Some(Box::new(policy));
        self
    }

    /// Allows the instances of `cluster` every operation on this node (`connect`,
    /// `request`, `notify`, `broadcast`, `forward`): the rule `allow * from CLUSTER`.
    /// Once any cluster is allowed (or any policy given), this node has an ACL, and what
    /// it does not allow is refused (see [`acl_policy`](Self::acl_policy)).
    pub fn allow(mut self, cluster: ClusterPath) -> Self {
        let rule = Rule::allow(Operations::ALL, Pattern::from(&cluster));
        self.settings.acl.get_or_insert_with(Vec::new).push(rule);
        self
    }

    /// The access-control policy of this node (see [`dms_core::acl`]): which peers may
    /// `connect` (checked at READY: refused peers get DISCONNECT `ACCESS_DENIED`),
    /// `request` (a refused request fails at its sender with
    /// [`RequestError::Denied`] within one round trip), `notify` and `broadcast` (a
    /// refused one is dropped and counted in [`Node::protocol_stats`]). Deny rules win;
    /// what no rule allows is denied. Without any policy (the default) every peer may do
    /// everything. Rules of several calls, of [`allow`](Self::allow) and of
    /// [`acl_file`](Self::acl_file) add up.
    ///
    /// ```
    /// use dms::acl::AclPolicy;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let policy: AclPolicy = "allow connect,request from /demo/cn/*/*/*/Lobby".parse()?;
    /// let builder = dms::Node::builder("/demo/cn/android/w1/g1/Battle/battle-1".parse()?)
    ///     .acl_policy(policy);
    /// # Ok(())
    /// # }
    /// ```
    pub fn acl_policy(mut self, policy: AclPolicy) -> Self {
        let rules = self.settings.acl.get_or_insert_with(Vec::new);
        rules.extend(policy.rules().iter().cloned());
        self
    }

    /// An access-control policy file in the text format of [`dms_core::acl`], read by
    /// [`start`](Self::start). Fails closed: a file that is missing, unreadable, larger
    /// than [`MAX_POLICY_LEN`] or that does not parse makes `start` fail with
    /// [`StartError::Acl`] (naming the line and the field); the node never runs without
    /// the policy it was given. An empty file denies everything.
    pub fn acl_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.acl_file = Some(path.into());
        self
    }

    /// An access-control decision hook of the application ([`AccessControl`]): asked at
    /// READY for `connect` and again on **every** incoming request, notification and
    /// broadcast (and for `forward` on routed ones), so its answers may change while the
    /// node runs and apply to the next message, in sessions already open too. Refusals
    /// are those of the policy: [`RequestError::Denied`] at the requester, dropped and
    /// counted notifications, DISCONNECT `ACCESS_DENIED` at READY.
    ///
    /// It composes with the policy ([`acl_policy`](Self::acl_policy),
    /// [`allow`](Self::allow), [`acl_file`](Self::acl_file)): when the node has both, an
    /// operation goes ahead only if **both** allow it (the hook narrows the policy, never
    /// widens it); with the hook alone, the hook decides. One hook per node: a second call
    /// replaces the first (compose several in your own type). The registration publishes
    /// the policy's `connect` principals when there is a policy, otherwise the hook's
    /// [`connect_principals`](AccessControl::connect_principals) (`*` by default).
    ///
    /// The hook runs on the node's task for every incoming REQ: keep it cheap and never
    /// block. Pass an `Arc` of it to keep a handle that changes its answers (see
    /// [`dms::app`](crate::app#access-control) for a ban list).
    ///
    /// ```
    /// use dms::acl::{AccessControl, Operation, Operations};
    /// use dms::ServicePath;
    ///
    /// /// Clubs may connect and request, but never broadcast to this node.
    /// struct NoClubBroadcasts;
    ///
    /// impl AccessControl for NoClubBroadcasts {
    ///     fn permitted(&self, principal: &ServicePath, _service: &ServicePath) -> Operations {
    ///         if principal.cluster().name() == "Club" {
    ///             Operations::ALL.without(Operation::Broadcast)
    ///         } else {
    ///             Operations::ALL
    ///         }
    ///     }
    /// }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let builder = dms::Node::builder("/demo/cn/android/w1/g1/Battle/battle-1".parse()?)
    ///     .access_control(NoClubBroadcasts);
    /// # Ok(())
    /// # }
    /// ```
    pub fn access_control(mut self, hook: impl AccessControl) -> Self {
        self.settings.access_control = Some(Arc::new(hook));
        self
    }

    /// The DMS PINGs each peer may send this node (default: [`PingLimit::default`], with
    /// its rate raised to twice this node's own PING rate when that is higher, so peers
    /// configured like this node are never throttled).
    pub fn ping_limit(mut self, limit: PingLimit) -> Self {
        self.settings.ping_limit = Some(limit);
        self
    }

    /// Heartbeats this node drives as requester: a PING every `interval`; a peer silent
    /// for `interval × missed` is dead (default 1 s × 3).
    pub fn heartbeat(mut self, interval: Duration, missed: u32) -> Self {
        self.settings.ping_interval = interval;
        self.settings.missed_pongs = missed.max(1);
        self
    }

    /// Default timeout of requests (5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout;
        self
    }

    /// Requests and notifications waiting for [`Node::next_request`], at most: `total`
    /// in all (default 1,024) and `per_peer` from one peer (default 256). Beyond, a
    /// request gets an `OVERLOADED` error reply and a notification is dropped (counted).
    pub fn incoming_queue(mut self, total: usize, per_peer: usize) -> Self {
        self.settings.incoming_queue = total.max(1);
        self.settings.incoming_per_peer = per_peer.clamp(1, total.max(1));
        self
    }

    /// Lease of the registration in discovery (10 s): how long a dead node stays listed
    /// when it cannot deregister itself.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.settings.lease_ttl = ttl;
        self
    }

    /// Dispatch policy for cluster requests (default: [`JumpHash`]).
    pub fn dispatch(mut self, policy: impl DispatchPolicy) -> Self {
        self.settings.policy = Arc::new(policy);
        self
    }

    /// Delay bounds of redialling lost instances (100 ms, 5 s).
    pub fn reconnect(mut self, initial: Duration, cap: Duration) -> Self {
        self.settings.reconnect = (initial, cap.max(initial));
        self
    }

    /// Binds, registers (ephemeral, with a dispatch bucket), reads its targets and starts
    /// the node's driver. Must run inside a tokio runtime.
    pub async fn start(self) -> Result<Node, StartError> {
        start(self.path, self.discovery, self.settings).await
    }
}

/// The policy made of the rules given in code and those of the file, if any.
fn acl_of(rules: Option<&[Rule]>, file: Option<&Path>) -> Result<Option<AclPolicy>, AclFileError> {
    let from_file = match file {
        None => None,
        Some(path) => Some(read_acl_file(path)?),
    };
    if rules.is_none() && from_file.is_none() {
        return Ok(None);
    }
    let in_code = rules.into_iter().flatten().cloned();
    let in_file = from_file.iter().flat_map(|p| p.rules().iter().cloned());
    Ok(Some(AclPolicy::new(in_code.chain(in_file))))
}

/// Reads and parses a policy file, reading at most one byte more than a policy may have.
fn read_acl_file(path: &Path) -> Result<AclPolicy, AclFileError> {
    use std::io::Read;
    let read = |source| AclFileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    AclPolicy::parse_bytes(&bytes).map_err(|source| AclFileError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// The default PING budget, its rate at least twice this node's own PING rate.
fn default_ping_limit(ping_interval: Duration) -> PingLimit {
    let mut limit = PingLimit::default();
    let own_rate = 1.0 / ping_interval.as_secs_f64().max(0.001);
    let wanted = (2.0 * own_rate).ceil().min(f64::from(u32::MAX / 2));
    // Truncation is fine: the value is bounded just above.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let wanted = wanted as u32;
    limit.per_second = limit.per_second.max(wanted);
    limit.burst = limit.burst.max(limit.per_second.saturating_mul(2));
    limit
}

/// Longest a start waits for each endpoint of a registration it finds under its own path.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

async fn start<D: Discovery>(
    path: ServicePath,
    discovery: D,
    settings: Settings,
) -> Result<Node, StartError> {
    // Before anything is bound or registered: a policy that cannot be read stops here.
    let acl = acl_of(settings.acl.as_deref(), settings.acl_file.as_deref())?;
    let transports = Transports::new(
        &path,
        settings.transports,
        settings.ping_interval,
        settings.missed_pongs,
    )?;
    let mut binds = settings.binds;
    if binds.is_empty() {
        binds.extend(transports.default_bind());
    }
    let mut endpoints = Vec::new();
    for endpoint in &binds {
        endpoints.push(transports.bind(endpoint).await?);
    }

    let published = if settings.advertise.is_empty() {
        &endpoints
    } else {
        &settings.advertise
    };
    let registrant = Registrant {
        path: path.clone(),
        endpoints: published.iter().map(ToString::to_string).collect(),
        targets: settings.targets.clone(),
        acl: match (&acl, &settings.access_control) {
            (Some(policy), _) => Some(policy.connect_principals(&path)),
            (None, Some(hook)) => Some(hook.connect_principals(&path)),
            (None, None) => None,
        },
        lease_ttl: settings.lease_ttl,
    };
    // A registration left by a crashed predecessor is taken over once its endpoints
    // prove it dead (see `Registrant::register`).
    let media = &transports;
    let (lease, bucket) = registrant
        .register(&discovery, |published| {
            let path = path.clone();
            async move { media.probe(&published, &path, PROBE_TIMEOUT).await }
        })
        .await?;
    let (registered, stop_registrar) = oneshot::channel();
    let (links_tx, links_rx) = watch::channel(LinkRecord::new(settings.broker, Vec::new()));
    if settings.broker {
        // A broker's record says it forwards before its first link comes up.
        links_tx.send_modify(|_| {});
    }
    let metrics = Arc::new(NodeMetrics::new(path.as_str()));
    tokio::spawn(keep_registered(
        discovery.clone(),
        registrant,
        lease,
        bucket,
        stop_registrar,
        links_rx,
        metrics.clone(),
    ));

    let mut proto = ProtoConfig::new(path.clone());
    proto.ping_interval = settings.ping_interval;
    proto.missed_pongs = settings.missed_pongs;
    proto.acl = acl;
    proto.access_control = settings.access_control;
    proto.forwards = settings.broker;
    proto.ping_limit = settings
        .ping_limit
        .unwrap_or_else(|| default_ping_limit(settings.ping_interval));
    let protocol = Protocol::new(proto);
    let proto_stats = protocol.stats_handle();
    let (command_tx, commands) = mpsc::channel(1024);
    let (incoming_tx, incoming_rx) =
        request_queue(settings.incoming_queue, settings.incoming_per_peer);
    let (events, _) = broadcast::channel(1024);
    let (watch_tx, watch) = mpsc::channel(1024);
    let mut targets = HashMap::new();
    let (routes_tx, routes) = mpsc::channel(1024);
    tokio::spawn(follow_table(
        discovery.clone(),
        table_key(&path)?,
        routes_tx,
        metrics.discovery_resyncs.clone(),
        metrics.discovery_rejected[1].clone(),
    ));
    for target in settings.targets.iter().chain(&settings.routed_targets) {
        targets.insert(target.clone(), HashMap::new());
        tokio::spawn(watch_cluster(
            discovery.clone(),
            target.clone(),
            watch_tx.clone(),
            metrics.discovery_resyncs.clone(),
            metrics.discovery_rejected[0].clone(),
        ));
    }
    let direct = Arc::new(DirectRequests::new(&settings.policy));
    let driver = Driver {
        direct: direct.clone(),
        metrics: metrics.clone(),
        proto: protocol,
        transports,
        registered: Some(registered),
        local: path.clone(),
        targets,
        policy: settings.policy,
        commands,
        command_tx: command_tx.downgrade(),
        incoming: incoming_tx,
        events: events.clone(),
        watch,
        reconnect: settings.reconnect,
        state: DriverState::default(),
        closed_tx: None,
        router: Router::new(
            path.clone(),
            settings.broker,
            settings.link_cost,
            settings
                .route_policy
                .unwrap_or_else(|| Box::new(EqualCostMultipath::default())),
            links_tx,
        ),
        routes,
        routed_targets: settings.routed_targets.iter().cloned().collect(),
        forward_timeout: settings.request_timeout,
        hop_limit: settings.hop_limit,
    };
    tokio::spawn(driver.run());
    Ok(Node {
        inner: Arc::new(Inner {
            path,
            proto_stats,
            endpoints,
            bucket,
            commands: command_tx,
            incoming: incoming_rx,
            events,
            request_timeout: settings.request_timeout,
            metrics,
            direct,
        }),
    })
}

#[derive(Debug)]
struct Inner {
    path: ServicePath,
    proto_stats: StatsHandle,
    endpoints: Vec<Endpoint>,
    bucket: u32,
    commands: mpsc::Sender<Command>,
    incoming: QueueReceiver,
    events: broadcast::Sender<NodeEvent>,
    request_timeout: Duration,
    metrics: Arc<NodeMetrics>,
    /// Requests this node's callers write to the links themselves.
    direct: Arc<DirectRequests>,
}

/// A running service instance: registered in discovery, linked to the live instances of
/// its targets, serving requests.
///
/// Cheap to clone. When every clone is dropped (or [`shutdown`](Self::shutdown) is
/// called) it says DISCONNECT to its peers, flushes its links and deregisters.
///
/// ```
/// use dms::{Node, MemoryDiscovery};
/// use dms_core::Multipart;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # // A build without TCP runs this over QUIC with development certificates.
/// # #[cfg(not(feature = "tcp"))]
/// # let dev = std::env::temp_dir().join(format!("dms-doc-node-{}", std::process::id()));
/// # let builder = |path| Node::builder(path);
/// # #[cfg(not(feature = "tcp"))]
/// # let builder = |path| Node::builder(path).quic_dev_certificates(&dev);
/// let discovery = MemoryDiscovery::new();
/// let battle = builder("/demo/cn/android/w1/g1/Battle/battle-1".parse()?)
///     .discovery(discovery.clone())
///     .start()
///     .await?;
/// let lobby = builder("/demo/cn/android/w1/g1/Lobby/lobby-1".parse()?)
///     .discovery(discovery.clone())
///     .target("/demo/cn/android/w1/g1/Battle".parse()?)
///     .start()
///     .await?;
/// tokio::spawn(async move {
///     while let Some(request) = battle.next_request().await {
///         let body = request.body().clone();
///         let _ = request.reply(body).await;
///     }
/// });
/// let battle_cluster = "/demo/cn/android/w1/g1/Battle".parse()?;
/// let reply = lobby
///     .wait_for_instances(&battle_cluster, 1, std::time::Duration::from_secs(5))
///     .await
///     .and(Ok(lobby.request(&battle_cluster, "player-7", Multipart::from_frames(["hi"])).await?))?;
/// assert_eq!(reply.from.instance(), "battle-1");
/// assert_eq!(&reply.body[0][..], b"hi");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl Node {
    /// Starts configuring the instance at `path`.
    pub fn builder(path: ServicePath) -> NodeBuilder {
        NodeBuilder::new(path)
    }

    /// Its service path.
    pub fn path(&self) -> &ServicePath {
        &self.inner.path
    }

    /// The endpoints it bound (ports resolved).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.inner.endpoints
    }

    /// Its dispatch bucket in its cluster.
    pub fn bucket(&self) -> u32 {
        self.inner.bucket
    }

    /// The protocol's counters: ACL refusals (`acl_denied`, by kind), PINGs over their
    /// peer's budget and PING floods disconnected, late replies.
    pub fn protocol_stats(&self) -> ProtoStats {
        self.inner.proto_stats.snapshot()
    }

    async fn submit<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, RequestError>>) -> Command,
    ) -> Result<T, RequestError> {
        let (done, result) = oneshot::channel();
        match self.inner.commands.send(command(done)).await {
            Ok(()) => result.await.unwrap_or(Err(RequestError::Closed)),
            Err(_) => Err(RequestError::Closed),
        }
    }

    /// Counts how a call of the public API that sends (a request, notification or
    /// broadcast, raw or typed) ended: once per call, with its final outcome.
    pub(crate) fn counted<T>(&self, result: Result<T, RequestError>) -> Result<T, RequestError> {
        self.inner.metrics.request_ended(&result);
        result
    }

    /// Sends a request to one live instance of `cluster`, picked by the dispatch policy
    /// with `key` (the same key reaches the same instance while the live set is the same),
    /// and waits for its reply or the default timeout.
    pub async fn request(
        &self,
        cluster: &ClusterPath,
        key: impl Into<DispatchKey>,
        body: Multipart,
    ) -> Result<Reply, RequestError> {
        self.request_timeout(cluster, key, body, self.inner.request_timeout)
            .await
    }

    /// As [`request`](Self::request), with its own timeout.
    pub async fn request_timeout(
        &self,
        cluster: &ClusterPath,
        key: impl Into<DispatchKey>,
        body: Multipart,
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        let to = Destination::Cluster(cluster.clone(), key.into().0);
        self.counted(self.send_request(to, body, timeout, None).await)
    }

    /// As [`request`](Self::request), with [`RequestOptions`]: a timeout, a trace
    /// context.
    ///
    /// ```no_run
    /// # async fn f(lobby: dms::Node) -> Result<(), Box<dyn std::error::Error>> {
    /// use dms::{Multipart, RequestOptions, TraceContext};
    ///
    /// let battle = "/demo/cn/android/w1/g1/Battle".parse()?;
    /// let trace: TraceContext = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?;
    /// let options = RequestOptions::new().trace(Some(trace));
    /// let reply = lobby
    ///     .request_with(&battle, "player-42", Multipart::from_frames(["join"]), options)
    ///     .await?;
    /// # let _ = reply;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn request_with(
        &self,
        cluster: &ClusterPath,
        key: impl Into<DispatchKey>,
        body: Multipart,
        options: RequestOptions,
    ) -> Result<Reply, RequestError> {
        let to = Destination::Cluster(cluster.clone(), key.into().0);
        let timeout = options.timeout.unwrap_or(self.inner.request_timeout);
        self.counted(self.send_request(to, body, timeout, options.trace).await)
    }

    /// As [`request`](Self::request), not counted (the typed API counts its own outcome).
    pub(crate) async fn request_uncounted(
        &self,
        cluster: &ClusterPath,
        key: impl Into<DispatchKey>,
        body: Multipart,
    ) -> Result<Reply, RequestError> {
        let to = Destination::Cluster(cluster.clone(), key.into().0);
        self.send_request(to, body, self.inner.request_timeout, None)
            .await
    }

    /// Sends a request to one given instance.
    pub async fn request_instance(
        &self,
        instance: &ServicePath,
        body: Multipart,
    ) -> Result<Reply, RequestError> {
        self.request_instance_timeout(instance, body, self.inner.request_timeout)
            .await
    }

    /// As [`request_instance`](Self::request_instance), with its own timeout.
    pub async fn request_instance_timeout(
        &self,
        instance: &ServicePath,
        body: Multipart,
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        let to = Destination::Instance(instance.clone());
        self.counted(self.send_request(to, body, timeout, None).await)
    }

    /// As [`request_instance`](Self::request_instance), with [`RequestOptions`].
    pub async fn request_instance_with(
        &self,
        instance: &ServicePath,
        body: Multipart,
        options: RequestOptions,
    ) -> Result<Reply, RequestError> {
        let to = Destination::Instance(instance.clone());
        let timeout = options.timeout.unwrap_or(self.inner.request_timeout);
        self.counted(self.send_request(to, body, timeout, options.trace).await)
    }

    /// Sends a request in its `dms.request` span (see [`crate::trace`]).
    async fn send_request(
        &self,
        to: Destination,
        body: Multipart,
        timeout: Duration,
        trace: Option<TraceContext>,
    ) -> Result<Reply, RequestError> {
        let span = match &to {
            Destination::Cluster(cluster, key) => debug_span!(
                target: crate::trace::TARGET,
                "dms.request",
                node = %self.inner.path,
                cluster = %cluster,
                key = *key,
                instance = tracing::field::Empty,
                request_id = tracing::field::Empty,
                traceparent = tracing::field::Empty,
            ),
            Destination::Instance(path) => debug_span!(
                target: crate::trace::TARGET,
                "dms.request",
                node = %self.inner.path,
                cluster = %path.cluster(),
                instance = %path,
                request_id = tracing::field::Empty,
                traceparent = tracing::field::Empty,
            ),
        };
        let trace = crate::trace::outgoing(&span, trace);
        let (done, reply) = oneshot::channel();
        // From this task when it can (see `driver::direct`), else through the driver.
        let (body, done) = match &to {
            Destination::Cluster(cluster, key) => {
                match self
                    .inner
                    .direct
                    .try_request(cluster, *key, body, trace, done)
                {
                    Ok(written) => {
                        span.record("instance", tracing::field::display(written.to()));
                        span.record("request_id", written.id().0);
                        let deadline = tokio::time::Instant::now().checked_add(timeout);
                        return written.outcome(reply, deadline).instrument(span).await;
                    }
                    Err(back) => back,
                }
            }
            Destination::Instance(_) => (body, done),
        };
        let request = Command::Request {
            to,
            body,
            timeout,
            done,
            trace,
            span: span.clone(),
        };
        async {
            match self.inner.commands.send(request).await {
                Ok(()) => reply.await.unwrap_or(Err(RequestError::Closed)),
                Err(_) => Err(RequestError::Closed),
            }
        }
        .instrument(span)
        .await
    }

    /// Sends a one-way message to one instance of `cluster` (picked as for `request`);
    /// returns the instance it went to.
    pub async fn notify(
        &self,
        cluster: &ClusterPath,
        key: impl Into<DispatchKey>,
        body: Multipart,
    ) -> Result<ServicePath, RequestError> {
        let to = Destination::Cluster(cluster.clone(), key.into().0);
        self.counted(self.submit(|done| Command::Notify { to, body, done }).await)
    }

    /// Sends `body` to every live instance of `cluster`; returns the instances reached.
    pub async fn broadcast(
        &self,
        cluster: &ClusterPath,
        body: Multipart,
    ) -> Result<Vec<ServicePath>, RequestError> {
        let cluster = cluster.clone();
        let sent = self
            .submit(|done| Command::Broadcast {
                cluster,
                body,
                done,
            })
            .await;
        self.counted(sent)
    }

    /// The next request or notification for this node; `None` once the node is shut
    /// down. Peers take turns: a peer with many requests waiting delays another peer's
    /// by one of its own at most. Several tasks may wait on it at once (each request
    /// goes to one of them). Cancel-safe.
    pub async fn next_request(&self) -> Option<IncomingRequest> {
        self.inner.incoming.recv().await
    }

    /// The node's [`NodeEvent`]s from now on: peers up and down, routing-table changes.
    ///
    /// Each call is a receiver of its own. It keeps the last 1,024 events for a slow
    /// reader: one that falls further behind gets `RecvError::Lagged(n)` and reads on
    /// from the oldest kept (re-read [`instances`](Self::instances) then, the state
    /// itself). Instances registered in discovery but not linked yet are not events (see
    /// [`instances`](Self::instances), [`wait_for_instances`](Self::wait_for_instances)).
    /// The [APP interface page](crate::app#peer-and-route-changes) has an example.
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// The instances of a target cluster as the node sees them.
    pub async fn instances(&self, cluster: &ClusterPath) -> Vec<InstanceStatus> {
        let (done, result) = oneshot::channel();
        let cluster = cluster.clone();
        if self
            .inner
            .commands
            .send(Command::Instances { cluster, done })
            .await
            .is_err()
        {
            return Vec::new();
        }
        result.await.unwrap_or_default()
    }

    /// Waits until at least `count` instances of `cluster` are live (probed), or `timeout`.
    pub async fn wait_for_instances(
        &self,
        cluster: &ClusterPath,
        count: usize,
        timeout: Duration,
    ) -> Result<(), RequestError> {
        let mut events = self.events();
        let wait = async {
            loop {
                let live = self
                    .instances(cluster)
                    .await
                    .iter()
                    .filter(|i| i.is_ready())
                    .count();
                if live >= count {
                    return Ok(());
                }
                match events.recv().await {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Err(RequestError::Closed),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| Err(RequestError::NoInstance(cluster.to_string())))
    }

    /// Waits until every registered instance of `cluster` is either ready or known to be
    /// unreachable or refusing (so that dispatch sees the whole live set), or `timeout`;
    /// returns the instances as they are then.
    pub async fn settle(&self, cluster: &ClusterPath, timeout: Duration) -> Vec<InstanceStatus> {
        let mut events = self.events();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let instances = self.instances(cluster).await;
            let settled = !instances.is_empty()
                && instances
                    .iter()
                    .all(|i| i.state != InstanceState::Connecting);
            if settled {
                return instances;
            }
            let tick = tokio::time::Instant::now() + Duration::from_millis(50);
            match tokio::time::timeout_at(deadline.min(tick), events.recv()).await {
                Err(_) if tokio::time::Instant::now() >= deadline => return instances,
                Ok(Err(broadcast::error::RecvError::Closed)) => return instances,
                _ => {}
            }
        }
    }

    /// Sets what this node's link to `peer` costs in the routing table (at least 1), now
    /// if it is up and whenever it comes up again; published at once.
    pub async fn set_link_cost(&self, peer: &ServicePath, cost: u32) {
        let _ = self
            .inner
            .commands
            .send(Command::SetLinkCost {
                peer: peer.clone(),
                cost,
            })
            .await;
    }

    /// Says DISCONNECT to every peer, flushes its links, deregisters and stops.
    pub async fn shutdown(&self) {
        self.command_and_wait(|done| Command::Shutdown { done })
            .await;
    }

    /// Sends the driver a command carrying a completion signal and waits for it (returns
    /// at once if the driver is gone).
    async fn command_and_wait(&self, command: impl FnOnce(oneshot::Sender<()>) -> Command) {
        let (done, finished) = oneshot::channel();
        if self.inner.commands.send(command(done)).await.is_ok() {
            let _ = finished.await;
        }
    }

    /// Fault injection: the node stops processing anything (no PONG, no reply) while its
    /// sockets and registration stay, as a SIGSTOPped process would. Peers must detect
    /// it by heartbeats. Returns once the node is suspended: from then on nothing leaves
    /// it, not even the replies of handlers still holding requests.
    #[cfg(feature = "fault-injection")]
    pub async fn suspend(&self) {
        self.command_and_wait(|done| Command::Suspend { done })
            .await;
    }

    /// Fault injection: a [suspended](Self::suspend) node takes up its work again, as a
    /// process after SIGCONT: it reads what its peers sent meanwhile (their heartbeats,
    /// the ends of links they gave up on, their new links) and its timers judge what
    /// they find. No effect on a node that is not suspended.
    #[cfg(feature = "fault-injection")]
    pub async fn resume(&self) {
        self.command_and_wait(|done| Command::Resume { done }).await;
    }

    /// Fault injection: the node dies at once, without DISCONNECT: sockets close and its
    /// lease is dropped (its registration vanishes), as a killed process's would. Returns
    /// once it is dead.
    #[cfg(feature = "fault-injection")]
    pub async fn kill(&self) {
        self.command_and_wait(|done| Command::Kill { done }).await;
    }
}
